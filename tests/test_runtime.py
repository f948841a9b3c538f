import subprocess
import sys

import numpy as np
import pytest
import torch

import policykd.runtime
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.students import Student, StudentSpec


def _student(family, activation="relu", seed=0):
    torch.manual_seed(seed)
    discrete = family == "categorical"
    norm = ObsNormalizer(np.linspace(-1, 1, 5), np.linspace(0.5, 2, 5), clip=4.0)
    spec = StudentSpec(obs_dim=5, action_dim=3, family=family, activation=activation,
                       action_low=() if discrete else (-1.0, -2.0, 0.0), action_high=() if discrete else (1.0, 2.0, 0.5),
                       normalizer=norm.to_json())
    return Student(spec).eval()


@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "deterministic", "categorical"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_numpy_runtime_matches_torch_student(tmp_path, family, activation):
    student = _student(family, activation)
    student.save(tmp_path / "s")
    policy = policykd.runtime.load(tmp_path / "s")
    obs = np.random.default_rng(0).normal(scale=3.0, size=(1000, 5)).astype(np.float32)
    with torch.no_grad():
        expected = student.act(torch.as_tensor(obs)).numpy()
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
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_runtime_rejects_a_non_student_folder(tmp_path):
    with pytest.raises(PolicyKDError, match="not a student folder"):
        policykd.runtime.load(tmp_path)


def test_runtime_names_a_wrong_observation_shape(tmp_path):
    _student("gaussian").save(tmp_path / "s")
    policy = policykd.runtime.load(tmp_path / "s")
    with pytest.raises(ValueError, match=r"shape \(6,\), this student takes \(5,\)"):
        policy(np.zeros(6, dtype=np.float32))
    first = policy(np.ones(5, dtype=np.float32))
    assert policy(np.ones(5, dtype=np.float32)) is not first  # each call returns its own array
    np.testing.assert_array_equal(first, policy(np.ones(5, dtype=np.float32)))
