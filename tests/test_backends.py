"""policykd.backends: the student's exports as act functions, and judged in closed loop (`policykd eval --backend`)."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from policykd.backends import BACKENDS, QUANTISED, act_function, closed_loop
from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd.rollout import run_episodes
from policykd.students import Student, StudentSpec

HAS_CC = shutil.which("cc") is not None
RANGE = 4.0  # action_high - action_low of the Pendulum student
SEEDS = [7, 8]


def _backend_params():
    return [pytest.param(b, marks=pytest.mark.skipif(b.startswith("c") and not HAS_CC, reason="no C compiler (cc)"))
            for b in BACKENDS]


@pytest.fixture(scope="module")
def pendulum_student(tmp_path_factory):
    """A small untrained Pendulum-v1 student (obs 3, one action in [-2, 2]) with its env record; non-zero biases and
    a normaliser, so normalisation, biases and the tanh scaling are all exercised."""
    torch.manual_seed(0)
    spec = StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", hidden=(16, 16), activation="relu",
                       action_low=(-2.0,), action_high=(2.0,),
                       normalizer={"mean": [0.1, -0.2, 0.3], "var": [0.8, 1.2, 16.0], "clip": 10.0, "epsilon": 1e-8})
    student = Student(spec)
    with torch.no_grad():
        student.action_head.weight.mul_(4.0)  # actions spread over the range, not all near 0
    directory = tmp_path_factory.mktemp("backends") / "student"
    student.save(directory, card_extra={"teacher": {"env": EnvSpec("Pendulum-v1").to_json()}})
    return directory


@pytest.fixture(scope="module")
def cartpole_student(tmp_path_factory):
    torch.manual_seed(1)
    spec = StudentSpec(obs_dim=4, action_dim=2, family="categorical", hidden=(8,), activation="tanh")
    directory = tmp_path_factory.mktemp("backends_discrete") / "student"
    Student(spec).save(directory, card_extra={"teacher": {"env": EnvSpec("CartPole-v1").to_json()}})
    return directory


@pytest.mark.parametrize("backend", _backend_params())
def test_act_function_matches_the_torch_student(backend, pendulum_student, tmp_path):
    obs = np.random.default_rng(0).normal(0.0, 2.0, size=(257, 3)).astype(np.float32)
    expected = act_function(pendulum_student, "torch", tmp_path)(obs)
    actual = act_function(pendulum_student, backend, tmp_path)(obs)
    assert actual.shape == expected.shape == (257, 1) and actual.dtype == np.float32
    tolerance = 0.05 * RANGE if backend in QUANTISED else 1e-5
    assert np.abs(actual - expected).max() <= tolerance
    assert np.ptp(expected) > 0.5  # the comparison is not between near-constant actions
    if backend in QUANTISED:  # a real quantised export, not the float one under another name
        assert np.abs(actual - expected).max() > 1e-6


@pytest.mark.parametrize("backend", _backend_params())
def test_discrete_backends_give_int64_indices(backend, cartpole_student, tmp_path):
    obs = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    expected = act_function(cartpole_student, "torch", tmp_path)(obs)
    actual = act_function(cartpole_student, backend, tmp_path)(obs)
    assert actual.shape == expected.shape == (64,) and actual.dtype == np.int64
    assert np.mean(actual == expected) >= (0.97 if backend in QUANTISED else 1.0)


def test_unknown_backend_is_one_line_listing_the_choices(pendulum_student, tmp_path):
    with pytest.raises(PolicyKDError, match="unknown backend 'tflite'; choose from torch, numpy, onnx") as info:
        act_function(pendulum_student, "tflite", tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(PolicyKDError, match="unknown backend"):
        closed_loop(EnvSpec("Pendulum-v1"), pendulum_student, ["numpy", "onnx-int4"], SEEDS, n_envs=2,
                    float_returns=[0.0, 0.0], teacher_mean=-1.0)


def test_c_backend_without_a_compiler_is_one_line(pendulum_student, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PolicyKDError, match="`cc` not found on PATH"):
        act_function(pendulum_student, "c-int16", tmp_path)


def test_closed_loop_on_pendulum(pendulum_student, tmp_path):
    spec = EnvSpec("Pendulum-v1")
    torch_returns = run_episodes(act_function(pendulum_student, "torch", tmp_path), spec, SEEDS, n_envs=2).returns
    backends = [b for b in BACKENDS if HAS_CC or not b.startswith("c")]
    advanced: dict[str, int] = {}

    class Progress:
        def __init__(self, label, total):
            self.label, self.total = label, total

        def __enter__(self):
            advanced[self.label] = 0
            return lambda n: advanced.__setitem__(self.label, advanced[self.label] + n)

        def __exit__(self, *exc):
            return False

    results = closed_loop(spec, pendulum_student, backends, SEEDS, n_envs=2, float_returns=torch_returns,
                          teacher_mean=-150.0, progress_factory=Progress, work_dir=tmp_path / "work")
    assert list(results) == [b for b in backends if b != "torch"]  # torch is the float student itself: not rerun
    assert advanced == {f"evaluating {b} student": len(SEEDS) for b in results}
    for backend, r in results.items():
        returns = np.array(r["returns"])
        assert len(returns) == r["episodes"] == 2 and np.isfinite(returns).all()
        assert r["return_mean"] == pytest.approx(returns.mean())
        assert r["ratio_vs_teacher"] == pytest.approx(-150.0 / returns.mean())  # negative returns: teacher / student
        assert r["ratio_vs_float_student"] == pytest.approx(torch_returns.mean() / returns.mean())
        if backend in QUANTISED:
            assert r["quantised"] and 0.9 < r["ratio_vs_float_student"] < 1.1
        else:
            np.testing.assert_allclose(returns, torch_returns, rtol=1e-3)
            assert r["episodes_differing_from_float"] == 0 and not r["quantised"]
    json.dumps(results, allow_nan=False)  # JSON-ready as it is


def test_closed_loop_counts_episodes_differing_from_the_float_student(pendulum_student, tmp_path):
    shifted = [-1.0, -2.0]  # not the numpy student's returns on these seeds
    results = closed_loop(EnvSpec("Pendulum-v1"), pendulum_student, ["numpy"], SEEDS, n_envs=2,
                          float_returns=shifted, teacher_mean=-150.0)
    assert results["numpy"]["episodes_differing_from_float"] == 2
    with pytest.raises(PolicyKDError, match="must match one to one"):
        closed_loop(EnvSpec("Pendulum-v1"), pendulum_student, ["numpy"], SEEDS, n_envs=2, float_returns=[-1.0],
                    teacher_mean=-150.0)


def test_a_quantised_export_that_fails_parity_is_still_judged_in_closed_loop(pendulum_student, tmp_path, monkeypatch):
    """eval --backend judges quantised exports by their return: a parity failure is reported beside it, not an abort."""
    import policykd.export
    from tests.test_export import _wrong_sign_3_levels

    monkeypatch.setattr(policykd.export, "_quantise_rows", _wrong_sign_3_levels)
    results = closed_loop(EnvSpec("Pendulum-v1"), pendulum_student, ["onnx-int8", "onnx"], SEEDS, n_envs=2,
                          float_returns=[-1.0, -2.0], teacher_mean=-150.0)
    assert results["onnx-int8"]["parity"]["passed"] is False and len(results["onnx-int8"]["returns"]) == 2
    assert results["onnx"]["parity"]["passed"] is True
    with pytest.raises(PolicyKDError, match="failed its parity"):  # `policykd export` still refuses to write it
        policykd.export.export_student(pendulum_student, tmp_path / "x", "onnx-int8")


def test_eval_command_reports_backends_in_closed_loop(pendulum_student, tiny_teachers, tmp_path):
    from policykd.cli import app

    result = CliRunner().invoke(app, [str(a) for a in (
        "eval", tiny_teachers["sac"], pendulum_student, "--env", "Pendulum-v1", "--episodes", 2, "--latency-calls", 10,
        "--backend", "numpy", "--backend", "onnx-int8", "--json", tmp_path / "e.json")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "closed loop per backend (same seeds)" in result.output
    assert "onnx-int8" in result.output and "ratio vs float student" in result.output
    report = json.loads((tmp_path / "e.json").read_text())
    loop = report["backends_closed_loop"]
    assert list(loop) == ["numpy", "onnx-int8"]
    for r in loop.values():
        assert isinstance(r["ratio_vs_teacher"], float) and np.isfinite(r["ratio_vs_teacher"])
        assert isinstance(r["ratio_vs_float_student"], float) and np.isfinite(r["ratio_vs_float_student"])
    assert loop["numpy"]["returns"] == pytest.approx(report["student"]["returns"], rel=1e-3)
    assert loop["numpy"]["ratio_vs_teacher"] == pytest.approx(report["ratio"], rel=1e-3)


def test_eval_command_refuses_an_unknown_backend_before_evaluating(pendulum_student, tmp_path):
    from policykd.cli import app

    result = CliRunner().invoke(app, ["eval", str(tmp_path / "missing.zip"), str(pendulum_student), "--backend", "tpu"])
    assert result.exit_code == 2
    assert "unknown backend 'tpu'" in result.output and "Traceback" not in result.output
