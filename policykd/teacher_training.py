"""Train a large SB3 teacher from a YAML recipe and write it as a policykd agent folder with a model card.

Agent folder::

    agents/NAME/model.zip          the SB3 checkpoint (no replay buffer)
    agents/NAME/model_card.json    algo, env spec, normaliser (JSON, not pickle), training config, seed, steps,
                                   wall time, measured return over seeded episodes, package versions
    agents/NAME/README.md          the same card for people
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions, sha256_file
from policykd.env_factory import EnvSpec, parse_wrappers
from policykd.errors import PolicyKDError
from policykd.evaluate import ReturnStats
from policykd.normalization import ObsNormalizer
from policykd.rollout import run_episodes
from policykd.teacher_recipe import TeacherTrainConfig, sb3_policy_kwargs
from policykd.teachers import MODEL_CARD, algo_class, load_teacher
from policykd.tracking import Tracker


def train_teacher(config: TeacherTrainConfig, out_dir: str | Path, *, tracker: Tracker | None = None) -> Path:
    """Train, evaluate on seeded episodes, and write the agent folder atomically (rename at the end). Training
    progress goes to `tracker` (a bar on a terminal, a plain line every few seconds otherwise; default: the console)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    class AdvanceProgress(BaseCallback):
        """Advances the progress by the env steps of each vectorised step."""

        def __init__(self, advance) -> None:
            super().__init__()
            self.advance = advance

        def _on_step(self) -> bool:
            self.advance(self.training_env.num_envs)
            return True

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise PolicyKDError(f"{out_dir} already exists; remove it or pass another --out")
    spec = EnvSpec(config.env_id, config.env_kwargs, parse_wrappers(config.env_wrapper), trusted=True)  # the user's own recipe
    spec.make().close()  # fail early on an unknown id or bad kwargs
    torch.set_num_threads(1)
    venv = make_vec_env(lambda: spec.make(), n_envs=config.n_envs, seed=config.seed)
    if config.normalize:
        venv = VecNormalize(venv, gamma=config.hyperparams.get("gamma", 0.99))
    try:
        model = algo_class(config.algo)(config.policy, venv, seed=config.seed, device="cpu", verbose=0,
                                        policy_kwargs=sb3_policy_kwargs(config.policy_kwargs), **config.hyperparams)
    except (TypeError, ValueError, KeyError, AssertionError) as e:  # SB3 checks values with asserts too
        venv.close()
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise PolicyKDError(f"{config.algo.upper()} rejected the teacher config's policy, policy_kwargs or hyperparams: "
                            f"{detail}") from e
    start = time.perf_counter()
    with (tracker or Tracker()).progress(f"training {config.algo.upper()} on {config.env_id}", config.n_timesteps,
                                         unit="env steps") as advance:
        model.learn(total_timesteps=config.n_timesteps, callback=AdvanceProgress(advance))
    wall_s = time.perf_counter() - start

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))  # ours alone
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the agent from other users
    try:
        _write_agent_folder(model, venv, config, spec, tmp, wall_s)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        venv.close()
    if not out_dir.exists():
        with contextlib.suppress(OSError):
            tmp.rename(out_dir)
    if tmp.exists():  # out_dir appeared while training: keep the trained teacher, replace nothing
        raise PolicyKDError(f"{out_dir} appeared while the teacher trained; the trained teacher is kept in {tmp}: rename it "
                            "to the folder you want")
    return out_dir


def _write_agent_folder(model, venv, config: TeacherTrainConfig, spec: EnvSpec, tmp: Path, wall_s: float) -> None:
    """model.zip (weights only), model card with the seeded evaluation, README.md, into the empty folder tmp."""
    _drop_optimizer_state(model)
    model.save(tmp / "model.zip")
    normalizer = None
    if config.normalize:
        rms = venv.obs_rms
        normalizer = ObsNormalizer(rms.mean, rms.var, clip=float(venv.clip_obs), epsilon=float(venv.epsilon)).to_json()
    card: dict[str, Any] = {
        "format": "policykd-agent", "format_version": 1, "name": config.name, "algo": config.algo,
        "model_file": "model.zip", "env": spec.to_json(), "normalizer": normalizer,
        "training": {"config": config.__dict__, "command": " ".join(["policykd", *sys.argv[1:]]) or "policykd teacher train",
                     "seed": config.seed, "n_timesteps": config.n_timesteps, "wall_s": wall_s},
        "versions": package_versions(), "optimizer_state": "dropped",
    }
    atomic_write_json(tmp / MODEL_CARD, card)
    teacher = load_teacher(tmp)
    seeds = [config.eval_seed + i for i in range(config.eval_episodes)]
    episodes = run_episodes(lambda o: teacher.act(o), spec, seeds, n_envs=1)
    card["evaluation"] = {**ReturnStats.of_episodes(episodes).to_json(), "seeds": seeds, "deterministic": True}
    card["sha256"] = sha256_file(tmp / "model.zip")
    card["actor_params"] = teacher.actor_parameter_count()
    atomic_write_json(tmp / MODEL_CARD, card)
    atomic_write_bytes(tmp / "README.md", model_card_markdown(card).encode())


def _drop_optimizer_state(model) -> None:
    """Empty every optimizer's per-parameter state (Adam moments) so the zip carries weights only.

    SB3 still loads the file (the optimizers keep their hyperparameters); fine-tuning restarts Adam's moments.
    """
    from stable_baselines3.common.save_util import recursive_getattr

    for name in model._get_torch_save_params()[0]:
        if name.endswith("optimizer"):
            recursive_getattr(model, name).state.clear()


def model_card_markdown(card: dict[str, Any]) -> str:
    ev, tr = card["evaluation"], card["training"]
    return "\n".join([
        f"# {card['name']}",
        "",
        f"{card['algo'].upper()} teacher for `{card['env']['env_id']}`, trained by policykd.",
        "",
        "| field | value |", "|---|---|",
        f"| command | `{tr['command']}` |",
        f"| seed | {tr['seed']} |",
        f"| env steps | {tr['n_timesteps']} |",
        f"| wall time | {tr['wall_s']:.0f} s |",
        f"| policy | {tr['config']['policy_kwargs']} |",
        f"| actor parameters | {card['actor_params']} |",
        f"| return ({ev['episodes']} seeded episodes, deterministic) | {ev['mean']:.1f} +- {ev['std']:.1f} (IQM {ev['iqm']:.1f}) |",
        *([f"| success rate (final info['is_success']) | {ev['success_rate']:.2f} |"] if "success_rate" in ev else []),
        "| optimizer state | dropped (weights only; fine-tuning restarts Adam) |",
        f"| versions | {', '.join(f'{k} {v}' for k, v in card['versions'].items())} |",
        "",
    ])
