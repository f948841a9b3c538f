"""Safe mode: teacher zips and vecnormalize.pkl build only allowlisted types; --trust-pickle restores plain pickle."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tests.conftest as conftest
from policykd.errors import PolicyKDError
from policykd.safe_pickle import UnsafePickleError, is_allowed, safe_loads
from policykd.teachers import load_teacher
from policykd.zoo import load_vecnormalize_stats

REPO = Path(__file__).resolve().parents[1]
TEACHERS = Path(getattr(conftest, "TEACHERS", None) or os.environ.get("POLICYKD_TEACHERS") or REPO.parent / "shared" / "teachers")
AGENTS = sorted(p for p in (REPO / "agents").glob("*") if (p / "model_card.json").exists())
ZOO_RUNS = sorted(p for p in (TEACHERS / "rl-zoo").glob("*/*_1") if p.is_dir())


# -- payloads that would write a marker file when unpickled -----------------------------------------

class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _System(_Exec):
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _WriteText(_Exec):
    def __reduce__(self):
        return Path.write_text, (self.marker, "pwned")


PAYLOADS = {"exec": (_Exec, "builtins.exec"), "os.system": (_System, f"{os.system.__module__}.system"),
            "Path.write_text": (_WriteText, "Path.write_text")}


def _serialized(obj) -> dict:
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(obj, protocol=4)).decode()}


def _crafted_zip(src: Path, dst: Path, **entries) -> Path:
    """A copy of the SB3 zip `src` whose "data" JSON has `entries` replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(raw)
                data.update(entries)
                raw = json.dumps(data).encode()
            zout.writestr(item, raw)
    return dst


def _no_plain_unpickling(monkeypatch) -> list[dict]:
    """Make cloudpickle/pickle loads fail and record torch.load calls: safe mode must use none of them unsafely."""
    import cloudpickle
    import torch

    def refuse(*_a, **_k):
        raise AssertionError("plain (cloud)pickle used in safe mode")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(cloudpickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    calls: list[dict] = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    return calls


# -- every teacher we ship or use loads in safe mode --------------------------------------------------

def _check_loads_safely(monkeypatch, path, **kwargs):
    calls = _no_plain_unpickling(monkeypatch)
    teacher = load_teacher(path, **kwargs)
    assert calls and all(c.get("weights_only") is True for c in calls), calls
    monkeypatch.undo()
    return teacher


@pytest.mark.parametrize("agent", AGENTS, ids=lambda p: p.name)
def test_project_agents_load_in_safe_mode(monkeypatch, agent):
    teacher = _check_loads_safely(monkeypatch, agent)
    trusted = load_teacher(agent, trust_pickle=True)
    env = teacher.make_env()
    obs = np.stack([env.observation_space.sample() for _ in range(4)]).clip(-5, 5)
    env.close()
    np.testing.assert_allclose(teacher.act(obs), trusted.act(obs), atol=1e-6)


@pytest.mark.parametrize("run", ZOO_RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rl_zoo_teachers_load_in_safe_mode(monkeypatch, run):
    teacher = _check_loads_safely(monkeypatch, run)
    trusted = load_teacher(run, trust_pickle=True)
    np.testing.assert_array_equal(teacher.normalizer.mean, trusted.normalizer.mean)
    np.testing.assert_array_equal(teacher.normalizer.var, trusted.normalizer.var)
    assert teacher.normalizer.clip == trusted.normalizer.clip
    obs = np.random.default_rng(0).normal(size=(4, teacher.obs_dim))
    np.testing.assert_allclose(teacher.act(obs), trusted.act(obs), atol=1e-6)


def test_teacher_folders_exist_or_skip():
    if not ZOO_RUNS:
        pytest.skip(f"no rl-zoo teachers under {TEACHERS}")
    assert len(ZOO_RUNS) >= 1


@pytest.mark.parametrize("name", ["sac", "td3", "tqc", "crossq", "dqn", "qrdqn", "sac_sde", "tqc_sde", "ppo_squashed", "a2c_tf_rmsprop",
                                  "ars", "ars_discrete"])
def test_tiny_teachers_load_in_safe_mode(monkeypatch, tiny_teachers, name):
    teacher = _check_loads_safely(monkeypatch, tiny_teachers[name], env_id=tiny_teachers[f"{name}_env"])
    assert teacher.algo == name.split("_")[0]


def test_fresh_vecnormalize_pickle_loads_in_safe_mode(tmp_path):
    """A VecNormalize saved by the installed SB3 / numpy 2 (numpy._core names, gymnasium spaces)."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), clip_obs=7.0)
    venv.reset()
    for _ in range(20):
        venv.step(np.array([venv.action_space.sample()]))
    venv.save(tmp_path / "vecnormalize.pkl")
    stats = load_vecnormalize_stats(tmp_path / "vecnormalize.pkl")
    np.testing.assert_allclose(stats.mean, venv.obs_rms.mean)
    np.testing.assert_allclose(stats.var, venv.obs_rms.var)
    assert stats.clip == 7.0


# -- crafted files --------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("key", ["observation_space", "policy_kwargs", "evil_extra_key"])
def test_crafted_zip_is_refused_and_runs_nothing(tmp_path, tiny_teachers, payload, key):
    cls, refused = PAYLOADS[payload]
    marker = tmp_path / "marker"
    value = cls(marker) if key != "policy_kwargs" else {"net_arch": [32, 32], "activation_fn": cls(marker)}
    bad = _crafted_zip(tiny_teachers["dqn"], tmp_path / "bad.zip", **{key: _serialized(value)})
    with pytest.raises(PolicyKDError) as info:
        load_teacher(bad, env_id="CartPole-v1")
    message = str(info.value)
    assert "\n" not in message and "--trust-pickle" in message and str(bad) in message and refused in message
    assert not marker.exists()


def test_crafted_zip_runs_its_code_with_trust_pickle(tmp_path, tiny_teachers):
    """The same file with trust_pickle=True does run the payload: the safe-mode test above can fail."""
    marker = tmp_path / "marker"
    bad = _crafted_zip(tiny_teachers["dqn"], tmp_path / "bad.zip", evil_extra_key=_serialized(_Exec(marker)))
    load_teacher(bad, env_id="CartPole-v1", trust_pickle=True)
    assert marker.read_text() == "pwned"


def test_schedules_are_never_unpickled(tmp_path, tiny_teachers):
    """lr_schedule & co. are replaced without being decoded, in both modes: a payload there never runs."""
    marker = tmp_path / "marker"
    bad = _crafted_zip(tiny_teachers["sac"], tmp_path / "bad.zip", lr_schedule=_serialized(_Exec(marker)),
                       learning_rate=_serialized(_System(marker)))
    for trust in (False, True):
        teacher = load_teacher(bad, env_id="Pendulum-v1", trust_pickle=trust)
        assert teacher.algo == "sac"
    assert not marker.exists()


def test_a_non_class_policy_class_is_refused(tmp_path, tiny_teachers):
    bad = _crafted_zip(tiny_teachers["dqn"], tmp_path / "bad.zip", policy_class=_serialized({"not": "a class"}))
    with pytest.raises(PolicyKDError, match="policy_class.*--trust-pickle"):
        load_teacher(bad, env_id="CartPole-v1")


def _zoo_folder_with_vecnormalize(tmp_path: Path, tiny_teachers, pickled: bytes) -> Path:
    run = tmp_path / "dqn" / "CartPole-v1_1"
    (run / "CartPole-v1").mkdir(parents=True)
    shutil.copy(tiny_teachers["dqn"], run / "CartPole-v1.zip")
    (run / "CartPole-v1" / "config.yml").write_text("normalize: true\n")
    (run / "CartPole-v1" / "vecnormalize.pkl").write_bytes(pickled)
    return run


@pytest.mark.parametrize("payload", PAYLOADS)
def test_crafted_vecnormalize_is_refused_and_runs_nothing(tmp_path, tiny_teachers, payload):
    cls, refused = PAYLOADS[payload]
    marker = tmp_path / "marker"
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    # looks like VecNormalize state, with the payload tucked into one attribute
    state = {"obs_rms": RunningMeanStd(shape=(4,)), "clip_obs": 10.0, "epsilon": 1e-8, "norm_obs": True, "x": cls(marker)}
    run = _zoo_folder_with_vecnormalize(tmp_path, tiny_teachers, pickle.dumps(state))
    with pytest.raises(PolicyKDError) as info:
        load_teacher(run)
    message = str(info.value)
    assert "\n" not in message and "--trust-pickle" in message and refused in message and "vecnormalize.pkl" in message
    assert not marker.exists()
    with pytest.raises(PolicyKDError, match="--trust-pickle"):
        load_vecnormalize_stats(run / "CartPole-v1" / "vecnormalize.pkl")
    assert not marker.exists()


def test_crafted_vecnormalize_runs_its_code_with_trust_pickle(tmp_path, tiny_teachers):
    marker = tmp_path / "marker"
    run = _zoo_folder_with_vecnormalize(tmp_path, tiny_teachers, pickle.dumps(_Exec(marker)))
    with pytest.raises(PolicyKDError, match="does not hold VecNormalize statistics"):  # the payload returned None
        load_teacher(run, trust_pickle=True)
    assert marker.read_text() == "pwned"


def test_vecnormalize_of_the_wrong_type_is_refused(tmp_path):
    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(pickle.dumps({"obs_rms": None}))
    with pytest.raises(PolicyKDError, match="VecNormalize was expected.*--trust-pickle"):
        load_vecnormalize_stats(path)


# -- the allowlist itself -------------------------------------------------------------------------

@pytest.mark.parametrize("module,name", [
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
    ("numpy", "dtype"), ("numpy._core.numeric", "_frombuffer"), ("gym.spaces.box", "Box"),
    ("gymnasium.spaces.discrete", "Discrete"), ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.activation", "Tanh"), ("torch.optim.rmsprop", "RMSprop"),
    ("stable_baselines3.common.sb2_compat.rmsprop_tf_like", "RMSpropTFLike"),
    ("stable_baselines3.common.policies", "ActorCriticPolicy"), ("stable_baselines3.sac.policies", "SACPolicy"),
    ("stable_baselines3.dqn.policies", "DQNPolicy"), ("sb3_contrib.tqc.policies", "TQCPolicy"),
    ("sb3_contrib.qrdqn.policies", "QRDQNPolicy"), ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("collections", "OrderedDict"), ("builtins", "set"),
])
def test_allowlist_accepts_known_types(module, name):
    assert is_allowed(module, name)


@pytest.mark.parametrize("module,name", [
    ("builtins", "exec"), ("builtins", "eval"), ("builtins", "getattr"), ("builtins", "open"), ("os", "system"),
    ("posix", "system"), ("subprocess", "Popen"), ("pathlib", "Path"), ("cloudpickle.cloudpickle", "_make_function"),
    ("cloudpickle.cloudpickle_fast", "_function_setstate"), ("torch.storage", "_load_from_bytes"),
    ("stable_baselines3.common.utils", "FloatSchedule"), ("stable_baselines3.common.policies", "th"),
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"), ("numpy", "load"),
    ("torch.nn.modules.activation", "F"), ("collections", "namedtuple"), ("gym.spaces.box", "Box.__init__"),
])
def test_allowlist_refuses_everything_else(module, name):
    assert not is_allowed(module, name)


def test_refused_module_is_not_even_imported():
    sys.modules.pop("this", None)  # `import this` prints the Zen of Python: a visible side effect
    data = b"cthis\ns\n."  # protocol 0: GLOBAL this.s
    with pytest.raises(UnsafePickleError, match=r"this\.s"):
        safe_loads(data, source="x.pkl")
    assert "this" not in sys.modules


def test_corrupt_pickle_is_a_one_line_error():
    with pytest.raises(PolicyKDError, match="corrupt or truncated"):
        safe_loads(pickle.dumps({"a": np.zeros(3)})[:-5], source="x.pkl")
