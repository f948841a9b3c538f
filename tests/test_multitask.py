"""Multi-task students: spaces that differ per task, one shared trunk, smaller than the single-task students."""

import re

import numpy as np
import pytest
import torch

from policykd.config import DistillConfig
from policykd.errors import PolicyKDError
from policykd.multitask import distill_multitask, evaluate_multitask, load_multitask, single_task_parameter_counts
from policykd.teachers import load_teacher


@pytest.fixture(scope="module")
def two_teachers(tiny_teachers):
    return [load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1"), load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")]


def test_multitask_distillation_acts_per_task_saves_and_is_smaller(two_teachers, tmp_path):
    config = DistillConfig(teacher="unused", labelled_steps=600, rounds=2, epochs_per_round=3, hidden=[32, 32], seed=1)
    result = distill_multitask(two_teachers, config, tmp_path)
    student = result.student
    pendulum_obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    cartpole_obs = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    continuous, discrete = student.view(0).act(pendulum_obs), student.view(1).act(cartpole_obs)
    assert continuous.shape == (5, 1) and np.all(np.abs(continuous) <= 2.0)  # Pendulum's bounds
    assert discrete.shape == (5,) and discrete.dtype == np.int64 and set(discrete) <= {0, 1}
    loaded = load_multitask(tmp_path / "student")
    np.testing.assert_array_equal(loaded.view(0).act(pendulum_obs), continuous)
    np.testing.assert_array_equal(loaded.view(1).act(cartpole_obs), discrete)
    assert loaded.view(np.int64(1)).act(cartpole_obs).shape == (5,)
    for task in (-1, 2, "0", 1.5, None, True):  # -1 picked the last task; the others met IndexError / TypeError
        with pytest.raises(PolicyKDError, match=rf"task {re.escape(repr(task))} is not a task number .*give 0 to 1"):
            loaded.view(task)
    singles = single_task_parameter_counts(two_teachers, (32, 32), "relu")
    assert student.parameter_count() < sum(singles)
    assert [h["round"] for h in result.history] == [0, 1] and all("kl" in h for h in result.history)
    again = distill_multitask(two_teachers, config, tmp_path / "again")  # seeded
    for k, v in student.state_dict().items():
        torch.testing.assert_close(v, again.student.state_dict()[k], rtol=0, atol=0)
    rows = evaluate_multitask(student, two_teachers, episodes=2, n_envs=1)
    assert [r["env"] for r in rows] == ["Pendulum-v1", "CartPole-v1"] and all(np.isfinite(r["ratio"]) for r in rows)
    from policykd.students import load_student  # single-task commands name a multi-task student as one

    with pytest.raises(PolicyKDError, match="is a multi-task student .*load_multitask"):
        load_student(tmp_path / "student")


def test_multitask_refuses_one_teacher_and_damaged_folders(two_teachers, tmp_path):
    with pytest.raises(PolicyKDError, match="needs at least two teachers"):
        distill_multitask(two_teachers[:1], DistillConfig(teacher="x"), tmp_path)
    with pytest.raises(PolicyKDError, match="one teacher per env, and Pendulum-v1 has more than one.*`ensemble` key"):
        distill_multitask([two_teachers[0], two_teachers[1], two_teachers[0]], DistillConfig(teacher="x"), tmp_path / "twice")
    assert not (tmp_path / "twice").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "multitask.json").write_text("{}")
    with pytest.raises(PolicyKDError, match="is not a loadable multi-task student"):
        load_multitask(tmp_path / "bad")


@pytest.mark.parametrize("keys", [{"conv": [[4, 3, 2]]}, {"gru": 8, "label_every": 1}])
def test_a_multitask_recipe_with_a_cnn_or_a_gru_is_refused_in_one_line(two_teachers, tmp_path, keys):
    config = DistillConfig(teacher="unused", labelled_steps=600, rounds=2, hidden=[32, 32], **keys)
    with pytest.raises(PolicyKDError, match="a multi-task student is an MLP: conv and gru are for single-task students"):
        distill_multitask(two_teachers, config, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("keys,named", [({"ensemble": ["x.zip"]}, "ensemble"), ({"backend": "ray"}, "backend"),
                                        ({"quantise_aware_rounds": 1, "hint_weight": 0.5}, "hint_weight, quantise_aware_rounds"),
                                        ({"wandb": True}, "wandb")])
def test_a_multitask_recipe_with_single_task_keys_is_refused_naming_them(two_teachers, tmp_path, keys, named):
    config = DistillConfig(teacher="unused", labelled_steps=600, rounds=2, hidden=[32, 32], **keys)
    with pytest.raises(PolicyKDError, match=rf"distill-multi does not use recipe keys? {named} \(single-task") as e:
        distill_multitask(two_teachers, config, tmp_path)
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_a_bc_multitask_student_is_selected_by_its_bc_loss_and_reports_kl(two_teachers, tmp_path, monkeypatch):
    import policykd.multitask as multitask

    calls = []

    def recording(*args, loss="kl", **kwargs):
        calls.append(loss if isinstance(loss, str) else loss.loss)  # a name, or the recipe's LossConfig
        return original(*args, loss=loss, **kwargs)

    original = multitask.validation_loss
    monkeypatch.setattr(multitask, "validation_loss", recording)
    config = DistillConfig(teacher="unused", labelled_steps=600, rounds=1, epochs_per_round=3, hidden=[16, 16], seed=0, loss="bc")
    result = distill_multitask(two_teachers, config, tmp_path)
    tasks_held_out = calls.count("kl")
    # 3 epochs judged by the bc loss on each task's held-out rows, then the selected student's KL for the record
    assert tasks_held_out >= 1 and calls == ["bc"] * 3 * tasks_held_out + ["kl"] * tasks_held_out
    assert np.isfinite(result.history[-1]["val_kl"])


def test_multitask_data_that_memory_cannot_hold_is_refused_before_collection(two_teachers, tmp_path, monkeypatch):
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1000}  # a 4 MB machine
    monkeypatch.setattr("os.sysconf", lambda name: pages[name])
    with pytest.raises(PolicyKDError, match=r"labelled_steps \(per task\) 100,000 needs about .* of memory .* 4\.1 MB; lower it"):
        distill_multitask(two_teachers, DistillConfig(teacher="x", labelled_steps=100_000), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_diverging_multitask_training_stops_before_a_student_is_saved(two_teachers, tmp_path):
    config = DistillConfig(teacher="x", labelled_steps=200, rounds=1, epochs_per_round=2, hidden=[8, 8], lr=1e30)
    with pytest.raises(PolicyKDError, match=r"training diverged in round 1, epoch 1: the loss became NaN or inf"):
        distill_multitask(two_teachers, config, tmp_path / "run")
    assert not (tmp_path / "run" / "student").exists()


def test_cli_takes_an_env_per_teacher_for_bare_zips(tiny_teachers, tmp_path):
    """Bare SB3 zips record no env: `--env` once per teacher, in order, names them ('-' would keep a recorded one)."""
    from typer.testing import CliRunner

    from policykd.cli import app

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("rounds: 2\nepochs_per_round: 2\nhidden: [16, 16]\n")
    argv = ["distill-multi", str(tiny_teachers["sac"]), str(tiny_teachers["dqn"]), "--env", "Pendulum-v1", "--env", "CartPole-v1",
            "-c", str(recipe), "--steps", "400", "--episodes", "2", "--out-dir", str(tmp_path / "runs"), "--run-name", "two"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "task 0 Pendulum-v1" in result.output and "task 1 CartPole-v1" in result.output
    assert load_multitask(tmp_path / "runs" / "two" / "student").view(1).act(np.zeros((1, 4), np.float32)).shape == (1,)
