"""`policykd teacher train`: a real (tiny) SAC run on one of our envs, written as an agent folder with a card."""

import json
import zipfile

import numpy as np
import torch
from typer.testing import CliRunner

from policykd.cli import app
from policykd.teachers import load_teacher


def test_teacher_train_writes_a_loadable_agent_with_its_card(tmp_path):
    recipe = tmp_path / "sac_kuka.yaml"
    recipe.write_text("name: tiny-kuka\nalgo: sac\nenv_id: PolicyKD/KukaReach-v0\nn_timesteps: 300\nseed: 3\n"
                      "policy_kwargs:\n  net_arch: [16, 16]\nhyperparams:\n  learning_starts: 100\n  batch_size: 32\n"
                      "eval_episodes: 2\n")
    out = tmp_path / "agent"
    result = CliRunner().invoke(app, ["teacher", "train", str(recipe), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "training SAC on PolicyKD/KukaReach-v0: 300/300 env steps (100%)" in result.output  # plain progress: not a tty
    card = json.loads((out / "model_card.json").read_text())
    assert card["algo"] == "sac" and card["env"]["env_id"] == "PolicyKD/KukaReach-v0"
    assert card["training"]["seed"] == 3 and card["training"]["n_timesteps"] == 300 and card["training"]["wall_s"] > 0
    assert card["evaluation"]["episodes"] == 2 and len(card["evaluation"]["returns"]) == 2
    assert 0.0 <= card["evaluation"]["success_rate"] <= 1.0
    assert {"torch", "stable-baselines3", "gymnasium"} <= set(card["versions"])
    with zipfile.ZipFile(out / "model.zip") as z:
        optimizer = torch.load(z.open("actor.optimizer.pth"), weights_only=True)
        assert optimizer["state"] == {}  # Adam moments dropped: weights only
        assert "replay_buffer" not in z.namelist()
    teacher = load_teacher(out)
    assert teacher.actor_parameter_count() == card["actor_params"]
    obs = np.zeros((4, 23), dtype=np.float32)
    assert teacher.act(obs).shape == (4, 3)
    assert "tiny-kuka" in (out / "README.md").read_text()
    again = CliRunner().invoke(app, ["teacher", "train", str(recipe), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def _recipe(tmp_path):
    recipe = tmp_path / "ppo_pendulum.yaml"
    recipe.write_text("algo: ppo\nenv_id: Pendulum-v1\nn_timesteps: 64\npolicy_kwargs:\n  net_arch: [8]\n"
                      "hyperparams:\n  n_steps: 32\n  batch_size: 32\neval_episodes: 1\n")
    return recipe


def test_teacher_train_touches_no_folder_it_did_not_create(tmp_path):
    """A user's `.agent.tmp` beside --out survives, no staging folder is left behind, the agent follows the umask."""
    mine = tmp_path / ".agent.tmp"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["teacher", "train", str(_recipe(tmp_path)), "--out", str(tmp_path / "agent")])
    assert result.exit_code == 0, result.output
    assert (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".agent.tmp", "agent", "ppo_pendulum.yaml"]
    assert (tmp_path / "agent").stat().st_mode & 0o777 == 0o777 & ~_umask()


def test_an_out_folder_that_appears_while_training_is_not_replaced(tmp_path, monkeypatch):
    import policykd.teacher_training as training

    out = tmp_path / "agent"
    write = training._write_agent_folder

    def write_then_another_process_takes_out(*args, **kwargs):
        write(*args, **kwargs)
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")

    monkeypatch.setattr(training, "_write_agent_folder", write_then_another_process_takes_out)
    result = CliRunner().invoke(app, ["teacher", "train", str(_recipe(tmp_path)), "--out", str(out)])
    assert result.exit_code == 2 and "appeared while the teacher trained; the trained teacher is kept in" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    (kept,) = tmp_path.glob(".agent.*.tmp")
    assert load_teacher(kept).algo == "ppo"


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_teacher_recipe_in_scientific_notation_gives_int_arguments(tmp_path):
    from policykd.teacher_training import load_train_config

    recipe = tmp_path / "sac.yaml"
    recipe.write_text("algo: sac\nenv_id: Pendulum-v1\nn_timesteps: 1e6\nhyperparams:\n  learning_rate: 3e-4\n"
                      "  buffer_size: 1e6\n  tau: 5e-3\n")
    config = load_train_config(recipe, {})
    assert config.n_timesteps == 1_000_000 and isinstance(config.n_timesteps, int)
    assert config.hyperparams == {"learning_rate": 3e-4, "buffer_size": 1_000_000, "tau": 5e-3}
    assert isinstance(config.hyperparams["buffer_size"], int) and isinstance(config.hyperparams["tau"], float)
