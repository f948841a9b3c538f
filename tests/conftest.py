"""Shared fixtures: the rl-zoo teachers (in $POLICYKD_TEACHERS/rl-zoo, by default ../shared/teachers/rl-zoo beside
the checkout; tests that need one are skipped when it is absent) and tiny teachers trained here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from policykd.zoo import default_teachers_dir

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)

CHECKOUT = Path(__file__).resolve().parents[1]


def teachers_dir() -> Path:
    """Where the pretrained teachers are: the folder holding `rl-zoo/`. $POLICYKD_TEACHERS when set, else
    ../shared/teachers beside the checkout (policykd.zoo.default_teachers_dir)."""
    return default_teachers_dir()


TEACHERS = teachers_dir()
ZOO = TEACHERS / "rl-zoo"


def zoo_run(algo: str, env_id: str) -> Path:
    path = ZOO / algo / f"{env_id}_1"
    if not path.exists():
        where = "POLICYKD_TEACHERS" if os.environ.get("POLICYKD_TEACHERS", "").strip() else "the default; set POLICYKD_TEACHERS to the folder holding rl-zoo/"
        pytest.skip(f"rl-zoo teacher {algo}/{env_id} not found under {ZOO} ({where})")
    return path


@pytest.fixture(scope="session")
def tiny_teachers(tmp_path_factory) -> dict[str, Path]:
    """SAC, TD3, TQC, CrossQ (Pendulum-v1) and QR-DQN, DQN (CartPole-v1) checkpoints, trained for a few hundred steps; and
    gSDE teachers as rl-zoo trains its Bullet ones: SAC and TQC with use_sde (log_std_init -3), PPO with use_sde and
    squash_output (keys sac_sde, tqc_sde, ppo_squashed); A2C with SB2's RMSprop as rl-zoo's Atari recipes use it; ARS
    with a linear policy (ars: unsquashed, clipped; ars_discrete) and an MLP one (ars_mlp: tanh-squashed)."""
    import sb3_contrib
    import stable_baselines3 as sb3
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    root = tmp_path_factory.mktemp("tiny_teachers")
    off_policy = {"learning_starts": 100, "buffer_size": 1000}
    gsde = {"use_sde": True, "policy_kwargs": {"net_arch": [32, 32], "log_std_init": -3}}
    specs = {
        "sac": (sb3.SAC, "Pendulum-v1", off_policy),
        "td3": (sb3.TD3, "Pendulum-v1", off_policy),
        "tqc": (sb3_contrib.TQC, "Pendulum-v1", off_policy),
        "crossq": (sb3_contrib.CrossQ, "Pendulum-v1", off_policy),
        "qrdqn": (sb3_contrib.QRDQN, "CartPole-v1", off_policy),
        "dqn": (sb3.DQN, "CartPole-v1", off_policy),
        "sac_sde": (sb3.SAC, "Pendulum-v1", {**off_policy, **gsde}),
        "tqc_sde": (sb3_contrib.TQC, "Pendulum-v1", {**off_policy, **gsde}),
        "ppo_squashed": (sb3.PPO, "Pendulum-v1", {"n_steps": 100, "batch_size": 50, "use_sde": True,
                                                 "policy_kwargs": {"net_arch": [32, 32], "squash_output": True}}),
        "ars": (sb3_contrib.ARS, "Pendulum-v1", {"policy": "LinearPolicy", "n_delta": 2}),
        "ars_mlp": (sb3_contrib.ARS, "Pendulum-v1", {"n_delta": 2, "policy_kwargs": {"net_arch": [16]}}),
        "ars_discrete": (sb3_contrib.ARS, "CartPole-v1", {"policy": "LinearPolicy", "n_delta": 2}),
        "a2c_tf_rmsprop": (sb3.A2C, "Pendulum-v1", {"policy_kwargs": {"net_arch": [32, 32], "optimizer_class": RMSpropTFLike,
                                                                    "optimizer_kwargs": {"eps": 1e-5}}}),
    }
    paths = {}
    for algo, (cls, env_id, kwargs) in specs.items():
        kwargs = {"policy": "MlpPolicy", **({} if cls is sb3_contrib.ARS else {"policy_kwargs": {"net_arch": [32, 32]}}), **kwargs}
        model = cls(env=env_id, seed=0, device="cpu", **kwargs)
        model.learn(300)
        paths[algo] = root / f"{algo}.zip"
        model.save(paths[algo])
        paths[f"{algo}_env"] = env_id
    return paths
