"""Feature (hint) and attention transfer: the terms are what policykd/transfer.py says, they train, and they resume."""

import json

import numpy as np
import pytest
import torch

import policykd.distill as distill_module
from policykd.config import DistillConfig
from policykd.distill import distill
from policykd.errors import PolicyKDError
from policykd.students import Student, StudentSpec
from policykd.teachers import load_teacher
from policykd.tracking import Tracker
from policykd.transfer import Transfer, saliency, student_hidden, student_saliency, teacher_saliency


def _config(tiny_teachers, tmp_path, algo="sac", **kw):
    base = dict(teacher=str(tiny_teachers[algo]), env_id=tiny_teachers[f"{algo}_env"], labelled_steps=600, rounds=3,
                epochs_per_round=2, out_dir=str(tmp_path), run_name="run", seed=3, hidden=[16, 16])
    base.update(kw)
    return DistillConfig(**base)


def test_saliency_of_a_linear_map_is_its_normalised_column_sums():
    """For out = z W^T the saliency is sum_a |W[a]| at every state, divided by its L2 norm."""
    w = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.5, 0.0]])
    z = torch.randn(4, 3, requires_grad=True)
    s = saliency(lambda x: x @ w.T, z, create_graph=False)
    expected = torch.tensor([4.0, 2.5, 0.0]) / torch.tensor([4.0, 2.5, 0.0]).norm()
    torch.testing.assert_close(s, expected.expand(4, 3))


def test_student_saliency_matches_finite_differences_and_is_differentiable():
    student = Student(StudentSpec(obs_dim=5, action_dim=2, family="gaussian", hidden=(8,), activation="tanh",
                                  action_low=(-1.0,) * 2, action_high=(1.0,) * 2)).double()
    obs = torch.randn(3, 5, dtype=torch.float64)
    s = student_saliency(student, obs)
    z = student.normalize(obs).detach()
    numeric = torch.zeros_like(z)
    for j in range(5):
        step = torch.zeros_like(z)
        step[:, j] = 1e-6
        diff = (student.action_head(student.trunk(z + step)) - student.action_head(student.trunk(z - step))) / 2e-6
        numeric[:, j] = diff.abs().sum(dim=1)
    torch.testing.assert_close(s, numeric / numeric.norm(dim=1, keepdim=True), atol=1e-6, rtol=1e-5)
    s.sum().backward()  # the attention term trains the student's weights (double backward)
    assert student.trunk[0].weight.grad is not None and student.trunk[0].weight.grad.abs().sum() > 0


def test_teacher_saliency_and_hint_layers_of_a_real_teacher(tiny_teachers):
    teacher = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    obs = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    s = teacher_saliency(teacher, obs)
    assert s.shape == (6, 3) and not s.requires_grad
    torch.testing.assert_close(s.norm(dim=1), torch.ones(6))
    student = Student(StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", hidden=(16, 16),
                                  action_low=(-2.0,), action_high=(2.0,)))
    assert [h.shape for h in student_hidden(student, torch.as_tensor(obs))] == [(6, 16), (6, 16)]
    config = DistillConfig(teacher="x", hint_weight=1.0, hint_teacher_layer="nope", hidden=[16, 16])
    with pytest.raises(PolicyKDError, match="hint_teacher_layer 'nope' is not a layer of this teacher; choose one of"):
        Transfer(config, teacher, student)


def test_hints_and_attention_train_resume_identically_and_are_logged(tiny_teachers, tmp_path, monkeypatch):
    kw = dict(hint_weight=0.5, attention_weight=0.5)
    whole = distill(_config(tiny_teachers, tmp_path / "whole", **kw), tracker=Tracker(None, quiet=True))
    for metrics in whole.history:
        assert metrics.hint_loss is not None and metrics.attention_loss is not None
    first, last = whole.history[0], whole.history[-1]
    assert last.hint_loss < first.hint_loss  # the regressor and the student learn the teacher's features
    assert (whole.run_dir / "checkpoint" / "transfer.safetensors").exists()
    plain = distill(_config(tiny_teachers, tmp_path / "plain"), tracker=Tracker(None, quiet=True))
    assert not all(torch.equal(v, plain.student.state_dict()[k]) for k, v in whole.student.state_dict().items())
    assert set(json.loads((whole.run_dir / "student" / "student.json").read_text())["spec"]) == \
        set(json.loads((plain.run_dir / "student" / "student.json").read_text())["spec"])  # the student format is unchanged

    original = distill_module.train_round
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(distill_module, "train_round", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill(_config(tiny_teachers, tmp_path / "resumed", **kw), tracker=Tracker(None, quiet=True))
    monkeypatch.setattr(distill_module, "train_round", original)
    resumed = distill(_config(tiny_teachers, tmp_path / "resumed", **kw), resume=True, tracker=Tracker(None, quiet=True))
    for k, v in whole.student.state_dict().items():
        torch.testing.assert_close(v, resumed.student.state_dict()[k], rtol=0, atol=0)


def test_bad_hint_student_layer_is_one_line(tiny_teachers, tmp_path):
    with pytest.raises(PolicyKDError, match=r"hint_student_layer must index the student's 2 hidden layers \(-2 to 1\), got 2"):
        _config(tiny_teachers, tmp_path, hint_weight=1.0, hint_student_layer=2)
