"""Every export loads in its own runtime and reproduces the torch student's deterministic action."""

import json
import shutil
import subprocess

import gymnasium as gym
import numpy as np
import pytest
import torch

import policykd.export
import policykd.runtime
from policykd.errors import InvalidObservation, PolicyKDError
from policykd.export import describe_parity, export_student, export_with_parity
from policykd.normalization import ObsNormalizer
from policykd.students import Student, StudentSpec, load_student


def _real_and_random_obs(env_id, n=1000):
    env = gym.make(env_id)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    real = []
    for _ in range(n):
        real.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    real = np.array(real, dtype=np.float32)
    random = np.random.default_rng(1).normal(scale=3.0, size=real.shape).astype(np.float32)
    return np.concatenate([real, random])


@pytest.fixture(scope="module", params=[("Pendulum-v1", "squashed_gaussian", "relu"), ("Pendulum-v1", "gaussian", "tanh"),
                                        ("CartPole-v1", "categorical", "relu")])
def student_case(request, tmp_path_factory):
    env_id, family, activation = request.param
    env = gym.make(env_id)
    discrete = family == "categorical"
    obs_dim = env.observation_space.shape[0]
    torch.manual_seed(0)
    spec = StudentSpec(obs_dim=obs_dim, action_dim=int(env.action_space.n) if discrete else env.action_space.shape[0],
                       family=family, activation=activation,
                       action_low=() if discrete else tuple(env.action_space.low.tolist()),
                       action_high=() if discrete else tuple(env.action_space.high.tolist()),
                       normalizer=ObsNormalizer(np.full(obs_dim, 0.1), np.full(obs_dim, 0.5), clip=5.0).to_json())
    student = Student(spec).eval()
    directory = tmp_path_factory.mktemp("student")
    student.save(directory)
    obs = _real_and_random_obs(env_id)
    with torch.no_grad():
        expected = load_student(directory).act_torch(torch.as_tensor(obs)).numpy().astype(np.float32)
    return directory, obs, expected, family


def _check(actual, expected, family, atol=1e-5):
    if family == "categorical":
        np.testing.assert_array_equal(np.asarray(actual).reshape(-1).astype(np.int64), expected.reshape(-1))
    else:
        np.testing.assert_allclose(np.asarray(actual).reshape(expected.shape), expected, atol=atol)


def test_onnx_export_matches(student_case, tmp_path):
    import onnxruntime as ort

    directory, obs, expected, family = student_case
    (path,) = export_student(directory, tmp_path, "onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check(session.run(None, {"obs": obs})[0], expected, family)


def test_onnx_int8_export_within_documented_tolerance(student_case, tmp_path):
    import onnx
    import onnxruntime as ort

    directory, obs, expected, family = student_case
    (path,) = export_student(directory, tmp_path, "onnx-int8")
    actual = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"obs": obs})[0]
    if family == "categorical":
        assert actual.shape == expected.shape
        assert np.mean(actual.reshape(-1) == expected) >= 0.97
    else:
        student = load_student(directory)
        action_range = float(torch.min(student.action_high - student.action_low))
        error = np.max(np.abs(actual - expected))
        assert error <= 0.05 * action_range  # the documented tolerance
        span = float(np.max(np.abs(expected))) or 1.0
        assert error <= 0.05 * span  # stricter for these small untrained students: their actions stay near 0
    # genuinely int8: every weight matrix is an INT8 initializer, and the file is well under the fp32 export's size
    model = onnx.load(str(path))
    matrices = [t for t in model.graph.initializer if len(t.dims) == 2]
    assert len(matrices) == 3 and all(t.data_type == onnx.TensorProto.INT8 for t in matrices)
    (fp32,) = export_student(directory, tmp_path / "fp32", "onnx")
    assert path.stat().st_size < 0.5 * fp32.stat().st_size


def _wrong_sign_3_levels(weight):  # in place of _quantise_rows: far outside the int8 tolerance
    scale = np.abs(weight).max(axis=1).astype(np.float32)
    scale[scale == 0] = 1.0
    return -np.rint(weight / scale[:, None]).astype(np.int8), scale


def test_onnx_int8_parity_check_can_fail(student_case, tmp_path, monkeypatch):
    directory, _, _, family = student_case

    monkeypatch.setattr(policykd.export, "_quantise_rows", _wrong_sign_3_levels)
    with pytest.raises(PolicyKDError, match="failed its parity"):
        export_student(directory, tmp_path, "onnx-int8")
    assert not (tmp_path / "student.int8.onnx").exists() and not (tmp_path / "export-onnx-int8.json").exists()
    with pytest.raises(PolicyKDError, match="failed its parity"):  # into folders it would create: none is left behind
        export_student(directory, tmp_path / "new" / "deep" / "out", "onnx-int8")
    assert not (tmp_path / "new").exists()


def test_a_failed_export_leaves_an_earlier_export_in_the_folder_as_it_was(student_case, tmp_path, monkeypatch):
    """Re-exporting into a folder: a failed parity check must not remove the good export already there."""
    directory = student_case[0]
    (good,) = export_student(directory, tmp_path, "onnx-int8")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(policykd.export, "_quantise_rows", _wrong_sign_3_levels)
    with pytest.raises(PolicyKDError, match="failed its parity.*nothing was written to"):
        export_student(directory, tmp_path, "onnx-int8")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_export_replaces_only_files_its_records_vouch_for(student_case, tmp_path):
    directory = student_case[0]
    (tmp_path / "student.onnx").write_text("the user's own file")
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(PolicyKDError, match=r"student\.onnx exists and was not written by `policykd export`.*another --out"):
        export_student(directory, tmp_path, "onnx")
    assert (tmp_path / "student.onnx").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md", "student.onnx"]  # no staging folder left behind
    (tmp_path / "student.onnx").unlink()
    export_student(directory, tmp_path, "onnx")
    export_student(directory, tmp_path, "onnx")  # its own earlier export: replaced
    with pytest.raises(PolicyKDError, match=r"is a student folder and the export would replace its student\.safetensors; pass another --out"):
        export_student(directory, directory, "safetensors")  # onto the student itself


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_a_c_export_over_another_c_format_removes_the_record_it_made_stale(student_case, tmp_path):
    directory = student_case[0]
    export_student(directory, tmp_path, "c")
    export_student(directory, tmp_path, "c-int16")
    assert not (tmp_path / "export-c.json").exists() and (tmp_path / "export-c-int16.json").exists()
    record = json.loads((tmp_path / "export-c-int16.json").read_text())
    assert record["files"]["policykd_student.c"] == policykd.export.sha256_file(tmp_path / "policykd_student.c")


@pytest.mark.parametrize("fmt", ["safetensors", "onnx", "onnx-int8", "torchscript"])
def test_export_records_parity(student_case, tmp_path, fmt):
    directory, _, _, family = student_case
    files, parity = export_with_parity(directory, tmp_path, fmt)
    assert [f.name for f in files] == [f.name for f in export_student(directory, tmp_path / "again", fmt)]
    record = json.loads((tmp_path / f"export-{fmt}.json").read_text())
    assert record["parity"] == parity and parity["passed"] is True and parity["observations"] == 1000
    line = describe_parity(parity)
    assert line.startswith("parity vs torch student on 1000 observations: ")
    if family == "categorical":
        assert parity["argmax_agreement"] >= (0.97 if fmt == "onnx-int8" else 0.99) and "argmax agreement" in line
    else:
        assert parity["max_abs_diff"] <= parity["tolerance"] and "max |diff|" in line
        assert parity["tolerance"] == (pytest.approx(0.05 * 4.0) if fmt == "onnx-int8" else pytest.approx(2e-5))


def test_c_export_parity_skipped_without_compiler(student_case, tmp_path, monkeypatch):
    monkeypatch.setattr(policykd.export.shutil, "which", lambda name: None)
    files, parity = export_with_parity(student_case[0], tmp_path, "c")
    assert parity["passed"] is None and "cc" in parity["skipped"] and "not checked" in describe_parity(parity)
    assert [f.name for f in files] == ["policykd_student.h", "policykd_student.c"]


def test_torchscript_export_matches(student_case, tmp_path):
    directory, obs, expected, family = student_case
    (path,) = export_student(directory, tmp_path, "torchscript")
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        _check(loaded(torch.as_tensor(obs)).numpy(), expected, family)


def test_safetensors_export_loads_in_numpy_runtime(student_case, tmp_path):
    directory, obs, expected, family = student_case
    export_student(directory, tmp_path, "safetensors")
    _check(policykd.runtime.load(tmp_path).batch(obs), expected, family)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_c_export_compiles_strictly_and_matches(student_case, tmp_path):
    directory, obs, expected, family = student_case
    header, source = export_student(directory, tmp_path, "c")
    assert "malloc" not in source.read_text()
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", str(source), "-o", str(tmp_path / "s.o")], check=True)
    policy = policykd.runtime.load_c(directory, tmp_path)
    _check(np.array([policy(o) for o in obs]), expected, family)


def test_unknown_export_format(student_case, tmp_path):
    with pytest.raises(PolicyKDError, match="unknown export format"):
        export_student(student_case[0], tmp_path, "tflite")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_c_int16_export_stays_within_documented_tolerance(student_case, tmp_path):
    directory, obs, expected, family = student_case
    _, source = export_student(directory, tmp_path, "c-int16")
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", str(source), "-o", str(tmp_path / "s.o")], check=True)
    policy = policykd.runtime.load_c(directory, tmp_path)
    actual = np.array([policy(o) for o in obs])
    if family == "categorical":
        assert np.mean(actual.reshape(-1) == expected.reshape(-1)) >= 0.97
    else:
        span = float(np.max(expected) - np.min(expected)) or 1.0
        assert np.max(np.abs(actual - expected)) <= 0.01 * span  # 12-bit weights, 14-bit activations


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_observations_near_the_float32_limit_give_one_finite_action_in_every_runtime(tmp_path):
    """A student without an observation clip (a teacher without VecNormalize) fed a driver's FLT_MAX: the normalised
    observation is bounded (student_format.NORMALISED_LIMIT), so the first layer cannot overflow into a NaN action."""
    import onnxruntime as ort

    torch.manual_seed(0)
    Student(StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", hidden=(16, 16), action_low=(-2.0,),
                        action_high=(2.0,))).save(tmp_path / "s")
    obs = np.array([[3.0e38, -3.0e38, 3.0e38], [3.0e38, 3.0e38, 3.0e38], [0.1, -3.0e38, 0.2]], dtype=np.float32)
    expected = load_student(tmp_path / "s").act(obs)
    assert np.isfinite(expected).all()
    _check(policykd.runtime.load(tmp_path / "s").batch(obs), expected, "squashed_gaussian")
    (onnx_path,) = export_student(tmp_path / "s", tmp_path / "onnx", "onnx")
    _check(ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"obs": obs})[0], expected, "squashed_gaussian")
    export_student(tmp_path / "s", tmp_path / "c", "c")
    c_policy = policykd.runtime.load_c(tmp_path / "s", tmp_path / "c")
    _check(np.array([c_policy(o) for o in obs]), expected, "squashed_gaussian")
    beyond = np.array([1e300, -1e300, 0.5])  # float64 beyond float32's range: refused alike by every runtime
    for act in (lambda o: load_student(tmp_path / "s").act(o[None]), policykd.runtime.load(tmp_path / "s"), c_policy):
        with pytest.raises(InvalidObservation, match=r"entry .*is 1e\+300, beyond float32's range"), np.errstate(over="ignore"):
            act(beyond)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_quantised_parity_holds_each_action_dimension_to_its_own_range(tmp_path):
    """A 4 cm gripper beside two +-1 joints: each dimension's error against a fraction of its own range (before, the
    gripper's 4 cm set the tolerance of the joints too, and these exports were refused)."""
    torch.manual_seed(0)
    Student(StudentSpec(obs_dim=10, action_dim=3, family="gaussian", hidden=(64, 64), activation="tanh",
                        action_low=(-1.0, -1.0, 0.0), action_high=(1.0, 1.0, 0.04),
                        normalizer=ObsNormalizer(np.zeros(10), np.ones(10), clip=10.0).to_json())).save(tmp_path / "s")
    for fmt in ("onnx-int8", "c-int8"):
        _, parity = export_with_parity(tmp_path / "s", tmp_path / fmt, fmt)
        assert parity["passed"] and parity["max_abs_diff"] <= parity["tolerance"]
        assert "each action dimension's range" in parity["tolerance_basis"]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_a_layer_wider_than_int16_sums_hold_is_refused_in_one_line_and_int8_takes_it(tmp_path):
    torch.manual_seed(0)
    Student(StudentSpec(obs_dim=300, action_dim=2, family="gaussian", hidden=(32,), action_low=(-1.0, -1.0),
                        action_high=(1.0, 1.0))).save(tmp_path / "s")
    with pytest.raises(PolicyKDError, match=r"c-int16 export .* at most 128; this student's widest is 300: export it with "
                                            r"--format c-int8 or --format c") as info:
        export_with_parity(tmp_path / "s", tmp_path / "int16", "c-int16")
    assert "\n" not in str(info.value) and not (tmp_path / "int16").exists()
    assert export_with_parity(tmp_path / "s", tmp_path / "int8", "c-int8")[1]["passed"]
