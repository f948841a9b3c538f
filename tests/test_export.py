"""Every export loads in its own runtime and reproduces the torch student's deterministic action."""

import shutil
import subprocess

import gymnasium as gym
import numpy as np
import pytest
import torch

import policykd.runtime
from policykd.errors import PolicyKDError
from policykd.export import export_student
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
        expected = load_student(directory).act(torch.as_tensor(obs)).numpy().astype(np.float32)
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
    import onnxruntime as ort

    directory, obs, expected, family = student_case
    (path,) = export_student(directory, tmp_path, "onnx-int8")
    actual = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"obs": obs})[0]
    if family == "categorical":
        assert np.mean(actual.reshape(-1) == expected) >= 0.97
    else:
        span = float(np.max(np.abs(expected))) or 1.0
        assert np.max(np.abs(actual - expected)) <= 0.05 * span  # dynamic int8 weights: a few percent of the action range


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
