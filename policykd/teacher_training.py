"""Train a large SB3 teacher from a YAML recipe and write it as a policykd agent folder with a model card.

Agent folder::

    agents/NAME/model.zip          the SB3 checkpoint (no replay buffer)
    agents/NAME/model_card.json    algo, env spec, normaliser (JSON, not pickle), training config, seed, steps,
                                   wall time, measured return over seeded episodes, package versions
    agents/NAME/README.md          the same card for people
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions, sha256_file
from policykd.config import MAX_ENVS, MAX_EVAL_EPISODES, is_plain_folder_name
from policykd.env_factory import EnvSpec, parse_wrappers
from policykd.errors import PolicyKDError
from policykd.evaluate import ReturnStats
from policykd.normalization import ObsNormalizer
from policykd.rollout import run_episodes
from policykd.teachers import ALGOS, MODEL_CARD, algo_class, load_teacher
from policykd.tracking import Tracker
from policykd.yaml_files import read_yaml_mapping


@dataclass
class TeacherTrainConfig:
    algo: str
    env_id: str
    n_timesteps: int
    name: str = ""
    seed: int = 0
    n_envs: int = 1
    normalize: bool = False
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_wrapper: Any = None
    policy: str = "MlpPolicy"
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, Any] = field(default_factory=dict)
    eval_episodes: int = 20
    eval_seed: int = 1_000_000


# field -> (type, minimum or None); a bool is not an int here
_FIELD_RULES: dict[str, tuple[type, int | None]] = {
    "algo": (str, None), "env_id": (str, None), "n_timesteps": (int, 1), "name": (str, None), "seed": (int, 0),
    "n_envs": (int, 1), "normalize": (bool, None), "env_kwargs": (dict, None), "policy": (str, None),
    "policy_kwargs": (dict, None), "hyperparams": (dict, None), "eval_episodes": (int, 1), "eval_seed": (int, 0),
}
# beyond these a run would never end (10 billion steps) or exhaust memory; as for distillation recipes
_FIELD_MAXIMUM = {"n_timesteps": 10**10, "n_envs": MAX_ENVS, "eval_episodes": MAX_EVAL_EPISODES}
ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU}
_SET_BY_POLICYKD = {"self", "policy", "env", "seed", "device", "verbose", "policy_kwargs", "_init_setup_model"}


def _whole(value: Any) -> Any:
    """1e6 (read as a float) -> 1000000: what `n_timesteps: 1e6` means."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_fields(values: dict[str, Any], path: Path) -> None:
    """Unknown, missing or mistyped keys of a teacher recipe, as one line naming the key (whole-valued floats of
    integer keys are made ints in `values`)."""
    known = [f.name for f in fields(TeacherTrainConfig)]
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        raise PolicyKDError(f"unknown keys {unknown} in teacher config {path}; valid keys: {', '.join(known)}")
    missing = [name for name in ("algo", "env_id", "n_timesteps") if name not in values]
    if missing:
        raise PolicyKDError(f"teacher config {path} lacks {', '.join(missing)}; see configs/teachers/ for examples")
    for name, value in values.items():
        if name not in _FIELD_RULES:
            continue  # env_wrapper: checked by parse_wrappers
        kind, minimum = _FIELD_RULES[name]
        if kind is int:
            value = values[name] = _whole(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise PolicyKDError(f"key {name} in teacher config {path} must be a {kind.__name__}, got {value!r}")
        if minimum is not None and value < minimum:
            raise PolicyKDError(f"key {name} in teacher config {path} must be >= {minimum}, got {value}")
        if name in _FIELD_MAXIMUM and value > _FIELD_MAXIMUM[name]:
            raise PolicyKDError(f"key {name} in teacher config {path} must be <= {_FIELD_MAXIMUM[name]:,}, got {value:,}")


def _all_finite(value: Any) -> bool:
    """No NaN or infinity in a hyperparameter value (numbers, or lists and mappings of them: train_freq [1, step])."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return True


def _check_hyperparams(config: TeacherTrainConfig, path: Path) -> None:
    """hyperparams must be keyword arguments of the algorithm's constructor that policykd does not set itself; a
    whole-valued float given for an integer argument (buffer_size: 1e6) is made an int."""
    accepted = set(inspect.signature(algo_class(config.algo).__init__).parameters) - _SET_BY_POLICYKD
    if "policy_kwargs" in config.hyperparams:
        raise PolicyKDError(f"teacher config {path}: move policy_kwargs from hyperparams to the top level")
    unknown = sorted(set(config.hyperparams) - accepted, key=str)
    if unknown:
        raise PolicyKDError(f"hyperparams {unknown} in teacher config {path} are not {config.algo.upper()} arguments; "
                            f"valid: {', '.join(sorted(accepted))}")
    for name, value in config.hyperparams.items():
        if not _all_finite(value):
            raise PolicyKDError(f"hyperparams.{name} in teacher config {path} must hold finite numbers, got {value!r}")
    defaults = {name: p.default for name, p in inspect.signature(algo_class(config.algo).__init__).parameters.items()}
    for name, value in config.hyperparams.items():  # buffer_size: 1e6 is an int argument
        if isinstance(defaults.get(name), int) and not isinstance(defaults[name], bool):
            config.hyperparams[name] = _whole(value)
    learning_starts = config.hyperparams.get("learning_starts", defaults.get("learning_starts"))
    if isinstance(learning_starts, int) and config.n_timesteps <= learning_starts:  # off-policy: no update before it
        raise PolicyKDError(f"teacher config {path}: n_timesteps {config.n_timesteps} is not past {config.algo.upper()}'s "
                            f"learning_starts {learning_starts}, so the policy would never be trained; raise n_timesteps "
                            "or lower hyperparams.learning_starts")
    activation = config.policy_kwargs.get("activation_fn")
    if isinstance(activation, str) and activation.lower() not in ACTIVATIONS:
        raise PolicyKDError(f"policy_kwargs activation_fn in teacher config {path} must be one of {', '.join(ACTIVATIONS)}, "
                            f"got {activation!r}")


def load_train_config(path: str | Path, overrides: dict[str, Any]) -> TeacherTrainConfig:
    """A checked teacher recipe: the YAML file's keys, then the flags (None values ignored)."""
    path = Path(path)
    values = read_yaml_mapping(path, what="teacher config", examples="configs/teachers/")
    values.update({k: v for k, v in overrides.items() if v is not None})
    _check_fields(values, path)
    config = TeacherTrainConfig(**values)
    if config.algo not in ALGOS:
        raise PolicyKDError(f"unknown algorithm {config.algo!r} in {path}; policykd trains {', '.join(ALGOS)}")
    _check_hyperparams(config, path)
    config.name = config.name or f"{config.algo}-{config.env_id.replace('/', '-')}"
    if not is_plain_folder_name(config.name):
        raise PolicyKDError(f"name {config.name!r} in teacher config {path} must be a plain folder name (no '/', no '..')")
    return config


def _policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(raw)
    if isinstance(kwargs.get("activation_fn"), str):
        kwargs["activation_fn"] = ACTIVATIONS[kwargs["activation_fn"].lower()]
    return kwargs


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
                                        policy_kwargs=_policy_kwargs(config.policy_kwargs), **config.hyperparams)
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
