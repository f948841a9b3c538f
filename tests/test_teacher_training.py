"""`policykd teacher train`: a real (tiny) SAC run on one of our envs, written as an agent folder with a card."""

import json
import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from policykd.cli import app
from policykd.errors import PolicyKDError
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
    from policykd.teacher_recipe import load_train_config

    recipe = tmp_path / "sac.yaml"
    recipe.write_text("algo: sac\nenv_id: Pendulum-v1\nn_timesteps: 1e6\nhyperparams:\n  learning_rate: 3e-4\n"
                      "  buffer_size: 1e6\n  tau: 5e-3\n")
    config = load_train_config(recipe, {})
    assert config.n_timesteps == 1_000_000 and isinstance(config.n_timesteps, int)
    assert config.hyperparams == {"learning_rate": 3e-4, "buffer_size": 1_000_000, "tau": 5e-3}
    assert isinstance(config.hyperparams["buffer_size"], int) and isinstance(config.hyperparams["tau"], float)


def _write(tmp_path, text):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    return recipe


PPO = "algo: ppo\nenv_id: Pendulum-v1\nn_timesteps: 64\npolicy_kwargs:\n  net_arch: [8]\nhyperparams:\n  n_steps: 32\n"
SAC = "algo: sac\nenv_id: Pendulum-v1\nn_timesteps: 300\nhyperparams:\n  learning_starts: 100\n"


@pytest.mark.parametrize("recipe, message", [
    # mistyped: each passed the checks, then crashed inside SB3's training as "unexpected TypeError ... policykd bug"
    (PPO + "  gamma: [0.9]\n", r"hyperparams\.gamma in teacher config .* must be a number for PPO, got \[0\.9\]"),
    (PPO + "  ent_coef: auto\n", r"hyperparams\.ent_coef .* must be a number for PPO, got 'auto' \('auto' is for SAC, TQC, CrossQ\)"),
    (PPO + "  learning_rate: fast\n", r"hyperparams\.learning_rate .* must be a number for PPO, got 'fast' \(a constant: a recipe cannot give a schedule"),
    (PPO + "  batch_size: 2.5\n", r"hyperparams\.batch_size .* must be a whole number for PPO, got 2\.5"),
    (PPO + "  normalize_advantage: 1\n", r"hyperparams\.normalize_advantage .* must be true or false for PPO, got 1"),
    (SAC + "  ent_coef: fast\n", r"hyperparams\.ent_coef .* must be auto, auto_INIT .* or a number for SAC, got 'fast'"),
    (SAC + "  action_noise: normal\n", r"hyperparams\.action_noise .* must be null for SAC, got 'normal'"),
    (SAC + "  train_freq: [1, epoch]\n", r"hyperparams\.train_freq .* must be \[N, step\] or \[N, episode\]"),
    # out of range: trained silently (gamma 1.5, a zero learning rate, gradient_steps 0: nothing learnt)
    (PPO + "  gamma: 1.5\n", r"hyperparams\.gamma .* must be in \[0, 1\], got 1\.5"),
    (PPO + "  learning_rate: 0\n", r"hyperparams\.learning_rate .* must be > 0, got 0"),
    (PPO + "  batch_size: 0\n", r"hyperparams\.batch_size .* must be >= 1, got 0"),
    (SAC + "  gradient_steps: 0\n", r"hyperparams\.gradient_steps .* must be >= 1, or -1"),
    (SAC + "  tau: 0\n", r"hyperparams\.tau .* must be in \(0, 1\], got 0"),
    # a zero-width hidden layer trained a policy that ignores its observation
    (PPO.replace("[8]", "[0]"), r"policy_kwargs net_arch in teacher config .* must be hidden layer widths of at least 1.*got \[0\]"),
    (PPO.replace("[8]", "{pi: [8], vf: [0]}"), r"net_arch .* at least 1.*got \{'pi': \[8\], 'vf': \[0\]\}"),
], ids=["gamma-list", "ppo-ent_coef-auto", "learning_rate-string", "batch_size-fraction", "bool-as-int", "sac-ent_coef-string",
        "action_noise-string", "train_freq-unit", "gamma-above-1", "learning_rate-0", "batch_size-0", "gradient_steps-0", "tau-0",
        "net_arch-0", "net_arch-dict-0"])
def test_mistyped_or_out_of_range_hyperparameters_are_refused_when_the_recipe_is_read(tmp_path, recipe, message):
    from policykd.teacher_recipe import load_train_config

    with pytest.raises(PolicyKDError, match=message):
        load_train_config(_write(tmp_path, recipe), {})


def test_well_formed_hyperparameters_are_kept_and_normalised(tmp_path):
    from policykd.teacher_recipe import load_train_config

    config = load_train_config(_write(tmp_path, SAC + "  ent_coef: auto_0.1\n  train_freq: [1, episode]\n  gradient_steps: -1\n"
                                                 "  gamma: 1\n  replay_buffer_kwargs: null\npolicy_kwargs:\n  net_arch: {pi: [8], qf: [6.4e1]}\n"), {})
    assert config.hyperparams["train_freq"] == (1, "episode")  # SB3 reads [N, unit] only as a tuple
    assert config.hyperparams["ent_coef"] == "auto_0.1" and config.hyperparams["gradient_steps"] == -1
    assert config.policy_kwargs["net_arch"] == {"pi": [8], "qf": [64]}
    config = load_train_config(_write(tmp_path, PPO + "  clip_range_vf: null\n  target_kl: 0.02\n  gamma: 0\n  n_epochs: 1e1\n"), {})
    assert config.hyperparams["n_epochs"] == 10 and isinstance(config.hyperparams["n_epochs"], int)


def test_a_sac_recipe_with_train_freq_as_a_list_trains(tmp_path):
    """train_freq: [1, episode] (rl-zoo's spelling) was refused by SB3 as 'must be an integer'; it is a tuple to SB3."""
    recipe = _write(tmp_path, "algo: sac\nenv_id: Pendulum-v1\nn_timesteps: 250\npolicy_kwargs:\n  net_arch: [8]\nhyperparams:\n"
                              "  learning_starts: 200\n  batch_size: 16\n  train_freq: [1, episode]\neval_episodes: 1\n")
    result = CliRunner().invoke(app, ["teacher", "train", str(recipe), "--out", str(tmp_path / "agent")])
    assert result.exit_code == 0, result.output
