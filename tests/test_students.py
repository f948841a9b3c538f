import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy

from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.students import Student, StudentSpec, load_student


def _spec(family="gaussian", activation="tanh"):
    norm = ObsNormalizer(np.array([1.0, -1.0, 0.0]), np.array([4.0, 1.0, 0.25]), clip=3.0)
    return StudentSpec(obs_dim=3, action_dim=2 if family != "categorical" else 3, family=family, activation=activation,
                       action_low=(-2.0, 0.0) if family != "categorical" else (), action_high=(2.0, 1.0) if family != "categorical" else (),
                       normalizer=norm.to_json())


@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "categorical", "deterministic"])
def test_save_load_roundtrip_gives_identical_outputs(tmp_path, family):
    torch.manual_seed(0)
    student = Student(_spec(family))
    student.value_std.fill_(3.0)
    student.save(tmp_path / "s", card_extra={"teacher": {"sha256": "x"}})
    loaded = load_student(tmp_path / "s")
    obs = torch.randn(10, 3) * 5
    d1, v1 = student(obs)
    d2, v2 = loaded(obs)
    for k in d1.params:
        torch.testing.assert_close(d1[k], d2[k])
    torch.testing.assert_close(v1, v2)
    assert loaded.card["teacher"]["sha256"] == "x" and loaded.card["spec"]["family"] == family


def test_loading_never_unpickles(tmp_path, monkeypatch):
    Student(_spec()).save(tmp_path / "s")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_student(tmp_path / "s")


def test_normalisation_and_action_scaling_live_inside():
    torch.manual_seed(0)
    student = Student(_spec("squashed_gaussian"))
    raw = torch.tensor([[3.0, -1.0, 10.0]])
    expected_input = torch.tensor([[1.0, 0.0, 3.0]])  # (3-1)/2, (-1+1)/1, clip(10/0.5, 3)
    torch.testing.assert_close(student.normalize(raw), expected_input, atol=1e-5, rtol=1e-5)
    action = student.act(torch.randn(100, 3) * 10)
    assert (action[:, 0] >= -2).all() and (action[:, 0] <= 2).all()
    assert (action[:, 1] >= 0).all() and (action[:, 1] <= 1).all()


def test_gaussian_actions_are_clipped_to_bounds():
    student = Student(_spec("gaussian"))
    with torch.no_grad():
        student.action_head.bias.copy_(torch.tensor([10.0, -10.0]))
    action = student.act(torch.zeros(1, 3))
    torch.testing.assert_close(action, torch.tensor([[2.0, 0.0]]))


def test_predict_works_with_sb3_evaluate_policy():
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make("CartPole-v1"))
    spec = StudentSpec(obs_dim=4, action_dim=2, family="categorical")
    student = Student(spec)
    with torch.no_grad():
        student.action_head.weight.zero_()
        student.action_head.bias.copy_(torch.tensor([0.0, 1.0]))  # always push right
    mean, _ = evaluate_policy(student, env, n_eval_episodes=2)
    assert 5 <= mean < 60  # always-right falls quickly
    single, _ = student.predict(np.zeros(4, dtype=np.float32))
    assert single.shape == () and int(single) == 1


def test_bad_student_dirs_give_clear_errors(tmp_path):
    with pytest.raises(PolicyKDError, match="is not a student"):
        load_student(tmp_path)
    Student(_spec()).save(tmp_path / "s")
    (tmp_path / "s" / "student.safetensors").write_bytes(b"garbage")
    with pytest.raises(PolicyKDError, match="safetensors"):
        load_student(tmp_path / "s")
    with pytest.raises(PolicyKDError, match="activation"):
        _spec(activation="swish")
