import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import numpy as safetensors_numpy

import policykd.runtime
from policykd.c_codegen import generate_c
from policykd.errors import InvalidObservation, PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.students import Student, StudentSpec, load_student


def _student(family, activation="relu", seed=0):
    torch.manual_seed(seed)
    discrete = family == "categorical"
    norm = ObsNormalizer(np.linspace(-1, 1, 5), np.linspace(0.5, 2, 5), clip=4.0)
    spec = StudentSpec(obs_dim=5, action_dim=3, family=family, activation=activation,
                       action_low=() if discrete else (-1.0, -2.0, 0.0), action_high=() if discrete else (1.0, 2.0, 0.5),
                       normalizer=norm.to_json())
    return Student(spec).eval()


def _run_prints_ok(code: str) -> None:
    """Run `code` in a fresh interpreter (so sys.modules shows what it imported); it must print ok."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "deterministic", "categorical"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_numpy_runtime_matches_torch_student(tmp_path, family, activation):
    student = _student(family, activation)
    student.save(tmp_path / "s")
    policy = policykd.runtime.load(tmp_path / "s")
    obs = np.random.default_rng(0).normal(scale=3.0, size=(1000, 5)).astype(np.float32)
    expected = student.act(obs)
    batched = policy.batch(obs)
    single = np.array([policy(o) for o in obs[:100]])
    if family == "categorical":
        np.testing.assert_array_equal(batched, expected)
        np.testing.assert_array_equal(single, expected[:100])
    else:
        np.testing.assert_allclose(batched, expected, atol=1e-5)
        np.testing.assert_allclose(single, expected[:100], atol=1e-5)


def test_runtime_never_imports_torch(tmp_path):
    _student("gaussian").save(tmp_path / "s")
    code = (
        "import sys, numpy as np, policykd.runtime as r\n"
        f"p = r.load({str(tmp_path / 's')!r})\n"
        "a = p(np.zeros(5, dtype=np.float32))\n"
        "assert a.shape == (3,)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    _run_prints_ok(code)


def test_runtime_rejects_a_non_student_folder(tmp_path):
    with pytest.raises(PolicyKDError, match="not a student folder"):
        policykd.runtime.load(tmp_path)


def test_runtime_names_a_wrong_observation_shape(tmp_path):
    _student("gaussian").save(tmp_path / "s")
    policy = policykd.runtime.load(tmp_path / "s")
    with pytest.raises(InvalidObservation, match=r"shape \(6,\), this student takes \(5,\)"):
        policy(np.zeros(6, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(6,\), this student takes \(5,\)"):  # still a ValueError too
        policy(np.zeros(6, dtype=np.float32))
    first = policy(np.ones(5, dtype=np.float32))
    assert policy(np.ones(5, dtype=np.float32)) is not first  # each call returns its own array
    np.testing.assert_array_equal(first, policy(np.ones(5, dtype=np.float32)))


# Every Python path refuses the same odd observations with the same kind of one-line error.
_ODD_SINGLE = [
    (np.float32(1.0), r"shape \(\), this student takes \(5,\)"),  # a scalar is never broadcast
    (np.zeros(10, dtype=np.float32), r"shape \(10,\), this student takes \(5,\)"),  # twice the length
    (np.zeros(4, dtype=np.float32), r"shape \(4,\), this student takes \(5,\)"),
    (np.zeros((3, 5), dtype=np.float32), r"shape \(3, 5\), this student takes \(5,\) \(a batch"),
    (np.zeros((1, 5), dtype=np.float32), r"shape \(1, 5\), this student takes \(5,\)"),
    ([0.0] * 6, r"shape \(6,\), this student takes \(5,\)"),
    (np.array(["a"] * 5), "must be an array of numbers"),
    (np.zeros(5, dtype=np.complex64), "must be an array of numbers"),
]


@pytest.mark.parametrize("obs, message", _ODD_SINGLE)
def test_numpy_runtime_call_refuses_odd_shapes(tmp_path, obs, message):
    _student("gaussian").save(tmp_path / "s")
    policy = policykd.runtime.load(tmp_path / "s")
    with pytest.raises(InvalidObservation, match=message) as info:
        policy(obs)
    assert "\n" not in str(info.value)
    np.testing.assert_allclose(policy([0.1, 0.2, 0.3, 0.4, 0.5]), policy(np.array([0.1, 0.2, 0.3, 0.4, 0.5])))  # lists work


@pytest.mark.parametrize("obs, message", [
    (np.float32(1.0), r"observations have shape \(\), this student takes \[B, 5\]"),
    (np.zeros(5), r"shape \(5,\), this student takes \[B, 5\] \(one observation: pass obs\[None\]\)"),
    (np.zeros((2, 10)), r"shape \(2, 10\), this student takes \[B, 5\]"),
    (np.zeros((2, 1)), r"shape \(2, 1\), this student takes \[B, 5\]"),
])
def test_numpy_runtime_batch_refuses_odd_shapes(tmp_path, obs, message):
    _student("categorical").save(tmp_path / "s")
    policy = policykd.runtime.load(tmp_path / "s")
    with pytest.raises(InvalidObservation, match=message):
        policy.batch(obs)
    with pytest.raises(InvalidObservation, match=message):
        policy.act(obs)


@pytest.mark.parametrize("family", ["squashed_gaussian", "categorical"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_observations_raise_in_numpy_and_torch(tmp_path, family, bad):
    student = _student(family)
    student.save(tmp_path / "s")
    policy = policykd.runtime.load(tmp_path / "s")
    obs = np.zeros((3, 5), dtype=np.float32)
    obs[1, 3] = bad
    for call, where in ((lambda: policy(obs[1]), "3"), (lambda: policy(obs[1].astype(np.float64)), "3"),
                        (lambda: policy.batch(obs), r"\[1, 3\]"), (lambda: student.act(obs), r"\[1, 3\]"),
                        (lambda: student.predict(obs[1]), "3")):
        with pytest.raises(InvalidObservation, match=rf"observation entry {where} is .*; NaN/inf observations are refused"):
            call()
    with pytest.raises(InvalidObservation, match="beyond float32's range"), np.errstate(over="ignore"):
        policy(np.full(5, 1e300))  # finite as float64, inf as float32
    huge = np.full(5, 3e38, dtype=np.float32)  # finite: clipped, not refused (the fast path's sum overflows)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(np.asarray(policy(huge)).reshape(-1), policy.batch(huge[None]).reshape(-1), atol=1e-6)


def _card_and_weights(directory):
    return json.loads((directory / "student.json").read_text()), safetensors_numpy.load_file(str(directory / "student.safetensors"))


def _break_card(directory, change):
    card = json.loads((directory / "student.json").read_text())
    change(card)
    (directory / "student.json").write_text(json.dumps(card))


def _set(path, value):
    def change(card):
        *parents, last = path
        for key in parents:
            card = card[key]
        if value is _DELETE:
            del card[last]
        else:
            card[last] = value
    return change


def _consistent_obs_dim(obs_dim):
    def change(card):
        card["spec"]["obs_dim"] = obs_dim
        card["spec"]["normalizer"]["mean"] = [0.0] * obs_dim
        card["spec"]["normalizer"]["var"] = [1.0] * obs_dim
    return change


def _consistent_action_dim(action_dim):
    def change(card):
        card["spec"]["action_dim"] = action_dim
        card["spec"]["action_low"] = card["spec"]["action_low"][:action_dim]
        card["spec"]["action_high"] = card["spec"]["action_high"][:action_dim]
    return change


_DELETE = object()
_BROKEN_CARDS = [
    (_set(("spec", "obs_dim"), 6), "student.json: spec.normalizer.mean must be 6 numbers"),
    (_consistent_obs_dim(6), r"student.safetensors does not match the architecture in student.json: obs_mean has shape \(5,\), the card's spec needs \(6,\)"),
    (_set(("spec", "action_dim"), 2), "spec.action_low has 3 entries, it must be 2 numbers"),
    (_consistent_action_dim(2), r"student.safetensors does not match the architecture in student.json: action_low has shape \(3,\), the card's spec needs \(2,\)"),
    (_set(("spec", "hidden"), [64, 32]), r"trunk.2.weight has shape \(64, 64\), the card's spec needs \(32, 64\)"),
    (_set(("spec", "hidden"), [64]), "unexpected trunk.2.bias, trunk.2.weight"),
    (_set(("spec", "family"), "categorical"), "spec.action_low has 3 entries, it must be empty"),
    (_set(("spec", "hidden"), "64"), "hidden sizes must be positive integers"),
    (_set(("spec", "obs_dim"), 5.0), "spec.obs_dim must be a positive integer, got 5.0"),
    (_set(("spec", "obs_dim"), True), "spec.obs_dim must be a positive integer, got True"),
    (_set(("spec", "activation"), "swish"), "unknown activation 'swish'"),
    (_set(("spec", "obs_dim"), _DELETE), "spec lacks obs_dim"),
    (_set(("spec",), _DELETE), "lacks its spec"),
    (_set(("spec", "normalizer", "mean"), [0.0]), "spec.normalizer.mean must be 5 numbers"),
    (_set(("spec", "bogus"), 1), "unknown keys bogus"),
    (_set(("format",), "something-else"), "is not a policykd student card"),
    (_set(("format_version",), 99), "card format version 99 is newer"),
    (_set(("format_version",), "1"), "format_version must be a positive integer"),
]


@pytest.mark.parametrize("loader", [policykd.runtime.load, load_student], ids=["runtime.load", "load_student"])
@pytest.mark.parametrize("change, message", _BROKEN_CARDS)
def test_a_card_that_does_not_match_its_weights_is_one_line(tmp_path, loader, change, message):
    _student("gaussian").save(tmp_path / "s")
    _break_card(tmp_path / "s", change)
    with pytest.raises(PolicyKDError, match=message) as info:
        loader(tmp_path / "s")
    assert "\n" not in str(info.value) and "student" in str(info.value)


@pytest.mark.parametrize("loader", [policykd.runtime.load, load_student], ids=["runtime.load", "load_student"])
def test_corrupt_or_truncated_files_are_one_line(tmp_path, loader):
    _student("gaussian").save(tmp_path / "s")
    card_path = tmp_path / "s" / "student.json"
    text = card_path.read_text()
    for broken, message in ((text[: len(text) // 2], "student.json is corrupt"), ("[1, 2]", "is not a policykd student card"),
                            ("", "student.json is corrupt"), ("\xff\xfe", "student.json is corrupt")):
        card_path.write_text(broken)
        with pytest.raises(PolicyKDError, match=message) as info:
            loader(tmp_path / "s")
        assert "\n" not in str(info.value)
    card_path.write_text(text)
    weights = tmp_path / "s" / "student.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(PolicyKDError, match="student.safetensors is not a readable safetensors file") as info:
        loader(tmp_path / "s")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("loader", [policykd.runtime.load, load_student], ids=["runtime.load", "load_student"])
@pytest.mark.parametrize("name", ["trunk.0.weight", "action_head.bias", "obs_mean", "action_high", "obs_std"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(tmp_path, loader, name, value):
    _student("gaussian").save(tmp_path / "s")
    card, weights = _card_and_weights(tmp_path / "s")
    weights[name].reshape(-1)[-1] = value
    safetensors_numpy.save_file(weights, str(tmp_path / "s" / "student.safetensors"))
    with pytest.raises(PolicyKDError, match=f"holds non-finite weights: {name} has 1 NaN/inf entries") as info:
        loader(tmp_path / "s")
    assert "\n" not in str(info.value)
    with pytest.raises(PolicyKDError, match="non-finite"):
        policykd.runtime.NumpyPolicy(card, weights)  # also when built from arrays


def test_runtime_make_env_needs_no_torch(tmp_path):
    from policykd.env_factory import EnvSpec

    spec = StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", action_low=(-2.0,), action_high=(2.0,))
    Student(spec).save(tmp_path / "s", card_extra={"teacher": {"env": EnvSpec("Pendulum-v1").to_json()}})
    code = (
        "import sys, numpy as np, policykd.runtime as r\n"
        f"env = r.make_env({str(tmp_path / 's')!r})\n"
        "p = r.load(" f"{str(tmp_path / 's')!r})\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert env.observation_space.shape == (3,) and p(obs).shape == (1,)\n"
        "assert p.make_env().observation_space.shape == (3,)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    _run_prints_ok(code)
    card = json.loads((tmp_path / "s" / "student.json").read_text())
    assert policykd.runtime.make_env(card).observation_space.shape == (3,)
    del card["teacher"]
    with pytest.raises(PolicyKDError, match="has no teacher env record"):
        policykd.runtime.make_env(card)


# The C export: strict C99, same action as torch (also for ELU), and -1 (raised by CPolicy) for NaN/inf observations.
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
_STRICT = ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def _c_export(student_dir, export_dir, arithmetic="float"):
    card, weights = _card_and_weights(student_dir)
    header, source = generate_c(card, weights, arithmetic=arithmetic)
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / "policykd_student.h").write_text(header)
    (export_dir / "policykd_student.c").write_text(source)
    assert "malloc" not in source
    subprocess.run([*_STRICT, "-c", str(export_dir / "policykd_student.c"), "-o", str(export_dir / "s.o")], check=True)
    _vouch_for(student_dir, export_dir)
    return policykd.runtime.load_c(student_dir, export_dir)


def _vouch_for(student_dir, export_dir):
    """The export record `policykd export` writes beside the C files (load_c refuses C files no record vouches for)."""
    from policykd.artifacts import sha256_file
    from policykd.student_format import WEIGHTS_FILE

    files = {name: sha256_file(export_dir / name) for name in ("policykd_student.h", "policykd_student.c")}
    (export_dir / "export-c.json").write_text(json.dumps({"format": "c", "files": files,
                                                          "student_sha256": sha256_file(student_dir / WEIGHTS_FILE)}))


@needs_cc
@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "deterministic", "categorical"])
@pytest.mark.parametrize("activation", ["elu", "tanh", "relu"])
def test_c_export_matches_torch_for_every_activation(tmp_path, family, activation):
    student = _student(family, activation)
    student.save(tmp_path / "s")
    policy = _c_export(tmp_path / "s", tmp_path / "c")
    obs = np.random.default_rng(0).normal(scale=3.0, size=(500, 5)).astype(np.float32)
    expected = student.act(obs)
    actual = np.array([policy(o) for o in obs])
    if family == "categorical":
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, atol=1e-5)
    _c_export(tmp_path / "s", tmp_path / "c16", arithmetic="int16")  # compiles strictly too
    _c_export(tmp_path / "s", tmp_path / "c8", arithmetic="int8")


@needs_cc
@pytest.mark.parametrize("family", ["squashed_gaussian", "gaussian", "categorical"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("arithmetic", ["float", "int16", "int8"])
def test_c_export_returns_an_error_for_non_finite_observations(tmp_path, family, bad, arithmetic):
    import ctypes

    student = _student(family)
    student.save(tmp_path / "s")
    policy = _c_export(tmp_path / "s", tmp_path / "c", arithmetic)
    obs = np.zeros(5, dtype=np.float32)
    obs[4] = bad
    with pytest.raises(InvalidObservation, match="observation entry 4 is .*NaN/inf observations are refused"):
        policy(obs)
    # The C function itself: -1, and no plausible action (NAN) written.
    built = json.loads((tmp_path / "c" / policykd.runtime.BUILD_RECORD).read_text())["library"]
    library = ctypes.CDLL(str(tmp_path / "c" / built))
    action = np.zeros(1 if family == "categorical" else 3, dtype=np.float32)
    assert library.policykd_act(obs.ctypes.data_as(ctypes.c_void_p), action.ctypes.data_as(ctypes.c_void_p)) == -1
    assert np.isnan(action).all()
    assert "POLICYKD_ERR_NON_FINITE_OBS (-1)" in (tmp_path / "c" / "policykd_student.h").read_text()
    obs[4] = 0.5  # and a finite observation still acts
    assert np.all(np.isfinite(policy(obs)))


@needs_cc
@pytest.mark.parametrize("obs, message", _ODD_SINGLE[:6])
def test_c_policy_refuses_odd_shapes(tmp_path, obs, message):
    _student("gaussian").save(tmp_path / "s")
    policy = _c_export(tmp_path / "s", tmp_path / "c")
    with pytest.raises(InvalidObservation, match=message.replace(r" \(a batch", "")):
        policy(obs)


@needs_cc
def test_load_c_refuses_the_export_of_another_student(tmp_path):
    _student("gaussian").save(tmp_path / "s")
    _c_export(tmp_path / "s", tmp_path / "c")
    other = StudentSpec(obs_dim=7, action_dim=3, family="gaussian", action_low=(-1.0,) * 3, action_high=(1.0,) * 3)
    Student(other).save(tmp_path / "other")
    with pytest.raises(PolicyKDError, match="needs {'POLICYKD_OBS_DIM': 7"):
        policykd.runtime.load_c(tmp_path / "other", tmp_path / "c")


@needs_cc
def test_load_c_refuses_an_export_recorded_for_other_weights_of_the_same_shape(tmp_path):
    """Two students of one env: `policykd export` of the first, loaded with the second, would act as the first."""
    from policykd.export import export_with_parity

    _student("gaussian", seed=0).save(tmp_path / "first")
    _student("gaussian", seed=1).save(tmp_path / "second")
    export_with_parity(tmp_path / "first", tmp_path / "c", "c")
    with pytest.raises(PolicyKDError, match=r"was exported from .*first, not from the student in .*second.*re-export"):
        policykd.runtime.load_c(tmp_path / "second", tmp_path / "c")
    obs = np.random.default_rng(0).normal(size=5).astype(np.float32)
    np.testing.assert_allclose(policykd.runtime.load_c(tmp_path / "first", tmp_path / "c")(obs),
                               load_student(tmp_path / "first").act(obs[None])[0], atol=1e-5)


@needs_cc
def test_load_c_never_calls_a_library_built_from_another_source(tmp_path):
    """Two exports of one shape: the first's compiled library copied over the second's (newer, so an mtime check
    would keep it) is rebuilt from the second's source; a source swapped under an export record is refused; a
    complex observation is refused, not cast to its real part."""
    from policykd.export import export_with_parity

    _student("gaussian", seed=0).save(tmp_path / "first")
    _student("gaussian", seed=1).save(tmp_path / "second")
    export_with_parity(tmp_path / "first", tmp_path / "c1", "c")
    first_library = policykd.runtime.compile_c_export(tmp_path / "c1")
    card, weights = _card_and_weights(tmp_path / "second")
    header, source = generate_c(card, weights)
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "policykd_student.h").write_text(header)
    (tmp_path / "c2" / "policykd_student.c").write_text(source)  # hand-made export, no export record: refused
    with pytest.raises(PolicyKDError, match=r"c2 has no intact export record .*re-export: policykd export"):
        policykd.runtime.load_c(tmp_path / "second", tmp_path / "c2")
    _vouch_for(tmp_path / "second", tmp_path / "c2")
    second_library = policykd.runtime.compile_c_export(tmp_path / "c2")
    second_library.unlink()
    shutil.copy(first_library, second_library)  # the other policy's build under this one's name
    obs = np.random.default_rng(0).normal(size=5).astype(np.float32)
    np.testing.assert_allclose(policykd.runtime.load_c(tmp_path / "second", tmp_path / "c2")(obs),
                               load_student(tmp_path / "second").act(obs[None])[0], atol=1e-5)
    shutil.copy(tmp_path / "c2" / "policykd_student.c", tmp_path / "c1" / "policykd_student.c")
    with pytest.raises(PolicyKDError, match=r"policykd_student.c is not the one `policykd export` wrote .*export-c.json.*re-export"):
        policykd.runtime.load_c(tmp_path / "first", tmp_path / "c1")
    with pytest.raises(InvalidObservation, match="array of numbers, got dtype complex128"):
        policykd.runtime.load_c(tmp_path / "second", tmp_path / "c2")(obs.astype(np.complex128) + 1j)
    assert sorted(p.name for p in (tmp_path / "c2").iterdir()) == sorted(  # the rebuild replaced the bad one, no partial builds
        ["policykd_student.h", "policykd_student.c", "export-c.json", "libpolicykd_student.build.json", second_library.name])


def _int8_reference(card, weights, obs: np.ndarray) -> np.ndarray:
    """numpy emulation of the c-int8 scheme (c_codegen's docstring): int8 rows with one scale each, each layer input
    rounded to int8 on its largest magnitude, exact integer sums. obs [N, obs_dim] -> last layer's outputs [N, out]."""
    from policykd import student_format as fmt

    spec = card["spec"]
    z = (obs.astype(np.float64) - weights[fmt.OBS_MEAN]) / weights[fmt.OBS_STD]
    clip = float(weights[fmt.OBS_CLIP])
    x = np.clip(z, -clip, clip)
    layers = fmt.layer_names(spec)
    for index, (w_name, b_name) in enumerate(layers):
        w = weights[w_name].astype(np.float64)
        scale = np.abs(w).max(axis=1) / 127.0
        wq = np.rint(w / scale[:, None])
        m = np.abs(x).max(axis=1, keepdims=True)
        xq = np.trunc(x * (127.0 / m) + np.where(x >= 0, 0.5, -0.5))
        y = (xq @ wq.T) * (m / 127.0) * scale + weights[b_name]
        x = np.maximum(y, 0.0) if index < len(layers) - 1 else y
    return x


@needs_cc
def test_c_int8_computes_the_documented_quantisation(tmp_path):
    """The int8 C export is the scheme its docstring states (per-row int8 weights, rounded int8 inputs per layer,
    exact int32 sums through SXTB16/SMLAD), up to float32 rounding, and no closer to the float student than that."""
    student = _student("gaussian", "relu")
    student.save(tmp_path / "s")
    policy = _c_export(tmp_path / "s", tmp_path / "c8", arithmetic="int8")
    obs = np.random.default_rng(0).normal(scale=3.0, size=(300, 5)).astype(np.float32)
    card, weights = _card_and_weights(tmp_path / "s")
    low, high = weights["action_low"], weights["action_high"]
    expected = np.clip(_int8_reference(card, weights, obs), low, high)
    actual = np.array([policy(o) for o in obs])
    np.testing.assert_allclose(actual, expected, atol=2e-4)
    assert np.abs(actual - student.act(obs)).max() > 1e-4  # really quantised, not the float student


@needs_cc
@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "categorical"])
def test_quantisation_aware_forward_is_what_c_int8_computes(tmp_path, family):
    """Quantisation-aware distillation trains exactly the arithmetic of the c-int8 export (up to float rounding)."""
    student = _student(family, "relu")
    student.save(tmp_path / "s")
    policy = _c_export(tmp_path / "s", tmp_path / "c8", arithmetic="int8")
    obs = np.random.default_rng(1).normal(scale=3.0, size=(300, 5)).astype(np.float32)
    exported = np.array([policy(o) for o in obs])
    float_actions = student.act(obs)
    student.quantise_int8 = True
    fake_quantised = student.act(obs)
    if family == "categorical":
        assert np.mean(fake_quantised == exported) >= 0.99  # argmax ties aside
    else:
        np.testing.assert_allclose(fake_quantised, exported, atol=2e-4)
        assert np.abs(float_actions - exported).max() > 1e-3  # the float student differs: this is not trivial


def test_a_student_folder_that_is_not_a_path_is_one_clear_error():
    from policykd.errors import PolicyKDError
    from policykd.runtime import load
    from policykd.students import load_student

    for bad in (None, 3, b"runs/x/student"):
        for loader in (load, load_student):
            with pytest.raises(PolicyKDError, match=f"a student folder is a path .*, got {type(bad).__name__}"):
                loader(bad)


def test_observations_beyond_float32_or_masked_are_refused_by_name(tmp_path):
    """1e300 used to read 'entry 0 is inf' (after the cast), and a masked array's hidden values were used silently."""
    from policykd.errors import InvalidObservation
    from policykd.runtime import load

    _student("gaussian").save(tmp_path / "s")
    policy = load(tmp_path / "s")
    obs = np.zeros(policy.obs_dim)
    obs[1] = 1e300
    with pytest.raises(InvalidObservation, match=r"entry 1 is 1e\+300, beyond float32's range"):
        policy(obs)
    masked = np.ma.masked_array(np.zeros(policy.obs_dim), mask=[True] + [False] * (policy.obs_dim - 1))
    with pytest.raises(InvalidObservation, match="masked array with masked entries"):
        policy(masked)
    policy(np.ma.masked_array(np.zeros(policy.obs_dim)))  # nothing masked: an ordinary array


@pytest.mark.parametrize("options,message", [
    (["--rate", "0"], r"argument --rate: must be a positive number, got 0"),
    (["--seconds", "-1"], r"argument --seconds: must be a positive number, got -1"),
    (["--rate", "nan"], r"argument --rate: must be a positive number, got nan"),
    (["--rate", "1e9", "--seconds", "0.5"], r"gives 5e\+08 ticks; give between 1 and 10,000,000"),
    (["--rate", "1e-300"], r"gives 5e-300 ticks; give between 1 and 10,000,000"),
    (["--c-dir", "export-c"], r"--c-dir is for --backend c"),
])
def test_the_control_loop_example_refuses_rates_it_cannot_keep(options, message):
    """--rate 0 met ZeroDivisionError, a negative one 'negative dimensions', 1e9 Hz looped without end."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "control_loop.py"
    result = subprocess.run([sys.executable, str(script), "no-student", *options], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, result.stderr), result.stderr


def test_load_c_on_a_read_only_export_without_a_build_is_one_line(tmp_path, monkeypatch):
    """On a read-only file system (as root, permissions do not stop writes: the error is simulated where it arises)."""
    import errno
    import tempfile

    from policykd.export import export_with_parity

    _student("gaussian", seed=0).save(tmp_path / "s")
    export_with_parity(tmp_path / "s", tmp_path / "c", "c")
    for built in (tmp_path / "c").glob("libpolicykd_student-*.so"):
        built.unlink()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(PolicyKDError, match=r"cannot build the C library in .*c \(Read-only file system\); load the export once "
                                            r"where the folder is writable"):
        policykd.runtime.load_c(tmp_path / "s", tmp_path / "c")
