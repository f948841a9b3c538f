"""A teacher recipe (YAML) read and checked: its fields, the algorithm's hyperparameters against the types its SB3
constructor declares and their ranges, policy_kwargs (net_arch widths, activation_fn by name). Every problem is one
PolicyKDError line naming the file and the key, before any env is made or step trained (policykd.teacher_training)."""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from policykd.config import MAX_ENVS, MAX_EVAL_EPISODES, is_plain_folder_name
from policykd.errors import PolicyKDError
from policykd.teacher_sources import ALGO_NAMES, SQUASHED
from policykd.teachers import ALGOS, algo_class
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


# (low, low inclusive, high or None) of numeric hyperparameters: outside, SB3 trains nothing, never stops or fails later
_HYPERPARAM_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "learning_rate": (0, False, None), "gamma": (0, True, 1), "gae_lambda": (0, True, 1), "tau": (0, False, 1),
    "n_steps": (1, True, None), "batch_size": (1, True, None), "n_epochs": (1, True, None), "buffer_size": (1, True, None),
    "learning_starts": (0, True, None), "train_freq": (1, True, None), "target_update_interval": (1, True, None),
    "policy_delay": (1, True, None), "clip_range": (0, False, None), "clip_range_vf": (0, False, None),
    "ent_coef": (0, True, None), "vf_coef": (0, True, None), "max_grad_norm": (0, False, None), "target_kl": (0, False, None),
    "exploration_fraction": (0, False, 1), "exploration_initial_eps": (0, True, 1), "exploration_final_eps": (0, True, 1),
    "sde_sample_freq": (-1, True, None), "n_critic_updates": (1, True, None), "cg_max_steps": (1, True, None),
    "cg_damping": (0, True, None), "line_search_shrinking_factor": (0, False, 1), "line_search_max_iter": (1, True, None),
    "sub_sampling_factor": (1, True, None), "rms_prop_eps": (0, False, None), "target_policy_noise": (0, True, None),
    "target_noise_clip": (0, True, None), "top_quantiles_to_drop_per_net": (0, True, None), "n_delta": (1, True, None),
    "n_top": (1, True, None), "delta_std": (0, False, None), "n_eval_episodes": (1, True, None),
}
_TYPE_NAMES = {type(None): "null", bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _union_parts(annotation: Any) -> list[Any]:
    """int | tuple[int, str] -> [int, tuple[int, str]]; anything else -> [it]."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [part for arg in typing.get_args(annotation) for part in _union_parts(arg)]
    return [annotation]


def _fits(part: Any, value: Any) -> bool | None:
    """Whether a YAML value fits one part of a constructor argument's annotation; None where policykd cannot tell (a
    string annotation, typing.Any): SB3 judges those."""
    origin = typing.get_origin(part) or part
    if part is type(None):
        return value is None
    if part is bool:
        return isinstance(value, bool)
    if part is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if part is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if part is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict)
    if origin is tuple:
        args = typing.get_args(part)
        if not args or Ellipsis in args:
            return isinstance(value, (list, tuple))
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(_fits(a, v) for a, v in zip(args, value))
    if origin in (collections.abc.Callable, type):
        return False  # a schedule or a class: no YAML value is one
    if isinstance(part, type):
        return isinstance(value, part)  # e.g. an ActionNoise: only null can be written in a recipe
    return None


def _expected(parts: list[Any]) -> str:
    """What a recipe may write for an argument of these annotation parts, in words."""
    words = []
    for part in parts:
        if part in _TYPE_NAMES:
            words.append(_TYPE_NAMES[part])
        elif typing.get_origin(part) is dict:
            words.append("a mapping")
        elif typing.get_origin(part) is tuple:
            words.append("a list [" + ", ".join(_TYPE_NAMES.get(a, "?").removeprefix("a ") for a in typing.get_args(part)) + "]")
    return " or ".join(dict.fromkeys(words)) or "null"


def _auto_form(name: str, value: str) -> bool:
    """The strings SAC, TQC and CrossQ take for ent_coef (auto, or auto_INIT with INIT > 0) and target_entropy (auto)."""
    if value == "auto":
        return True
    head, _, init = value.partition("_")
    try:
        return name == "ent_coef" and head == "auto" and 0 < float(init) < math.inf
    except ValueError:
        return False


def _in_range(name: str, value: Any) -> str | None:
    """None, or the bound a numeric hyperparameter breaks ('must be > 0')."""
    if name == "train_freq" and isinstance(value, tuple):
        if value[1] not in ("step", "episode"):
            return "[N, step] or [N, episode]"
        value = value[0]
    if name == "gradient_steps" and isinstance(value, int) and not isinstance(value, bool):
        return None if value == -1 or value >= 1 else ">= 1, or -1 (as many as the env steps of each rollout)"
    if name not in _HYPERPARAM_RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, inclusive, high = _HYPERPARAM_RANGES[name]
    if value < low or (value == low and not inclusive) or (high is not None and value > high):
        if high is None:
            return f"{'>=' if inclusive else '>'} {low:g}"
        return f"in {'[' if inclusive else '('}{low:g}, {high:g}]"
    return None


def _check_hyperparam_values(config: TeacherTrainConfig, path: Path) -> None:
    """Each hyperparameter against the type its constructor argument declares (no YAML value is a schedule, a class
    or an ActionNoise: those take null only) and, for the common numeric ones, its range; whole-valued floats of
    integer arguments become ints and lists of tuple arguments tuples (train_freq: [1, episode])."""
    parameters = inspect.signature(algo_class(config.algo).__init__).parameters
    algo = config.algo.upper()
    for name, value in list(config.hyperparams.items()):
        annotation = parameters[name].annotation
        parts = _union_parts(annotation) if annotation is not inspect.Parameter.empty and not isinstance(annotation, str) else []
        default = parameters[name].default
        if (int in parts and float not in parts) or (isinstance(default, int) and not isinstance(default, bool)):
            value = _whole(value)  # buffer_size: 1e6 is an int argument
        fits = [_fits(part, value) for part in parts]
        if parts and None not in fits and not any(fits):
            hint = ""
            if isinstance(value, str) and name in ("ent_coef", "target_entropy") and config.algo not in SQUASHED:
                hint = f" ('auto' is for {', '.join(ALGO_NAMES.get(a, a.upper()) for a in SQUASHED)})"
            elif any((typing.get_origin(p) or p) is collections.abc.Callable for p in parts):
                hint = " (a constant: a recipe cannot give a schedule, such as rl-zoo's lin_3e-4)"
            raise PolicyKDError(f"hyperparams.{name} in teacher config {path} must be {_expected(parts)} for {algo}, "
                                f"got {value!r}{hint}")
        if isinstance(value, list) and any(typing.get_origin(p) is tuple and _fits(p, value) for p in parts):
            value = tuple(value)  # SB3 reads train_freq (1, "episode") only as a tuple
        if isinstance(value, str) and name in ("ent_coef", "target_entropy") and not _auto_form(name, value):
            forms = "auto, auto_INIT (INIT > 0, the initial coefficient) or a number" if name == "ent_coef" else "auto or a number"
            raise PolicyKDError(f"hyperparams.{name} in teacher config {path} must be {forms} for {algo}, got {value!r}")
        bound = _in_range(name, value)
        if bound is not None:
            raise PolicyKDError(f"hyperparams.{name} in teacher config {path} must be {bound}, got {value!r}")
        config.hyperparams[name] = value


def _check_net_arch(config: TeacherTrainConfig, path: Path) -> None:
    """policy_kwargs net_arch: hidden layer widths of at least 1 (a width 0 layer trains a policy that ignores its
    observation), as a list or a mapping of lists ({pi: [...], vf: [...]} or qf); whole floats become ints."""
    net_arch = config.policy_kwargs.get("net_arch")
    if net_arch is None:
        return
    layers = list(net_arch.values()) if isinstance(net_arch, dict) else [net_arch]
    if not all(isinstance(widths, list) and all(isinstance(_whole(w), int) and not isinstance(w, bool) and _whole(w) >= 1
                                                 for w in widths) for widths in layers):
        raise PolicyKDError(f"policy_kwargs net_arch in teacher config {path} must be hidden layer widths of at least 1, "
                            f"e.g. [256, 256] (or {{pi: [64, 64], vf: [64, 64]}}), got {net_arch!r}")
    whole = {key: [_whole(w) for w in widths] for key, widths in net_arch.items()} if isinstance(net_arch, dict) else [_whole(w) for w in net_arch]
    config.policy_kwargs = {**config.policy_kwargs, "net_arch": whole}


def _check_hyperparams(config: TeacherTrainConfig, path: Path) -> None:
    """hyperparams must be keyword arguments of the algorithm's constructor that policykd does not set itself, of the
    type it declares and (the common numeric ones) in range; policy_kwargs' net_arch and activation_fn are checked."""
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
    _check_hyperparam_values(config, path)
    defaults = {name: p.default for name, p in inspect.signature(algo_class(config.algo).__init__).parameters.items()}
    learning_starts = config.hyperparams.get("learning_starts", defaults.get("learning_starts"))
    if isinstance(learning_starts, int) and config.n_timesteps <= learning_starts:  # off-policy: no update before it
        raise PolicyKDError(f"teacher config {path}: n_timesteps {config.n_timesteps} is not past {config.algo.upper()}'s "
                            f"learning_starts {learning_starts}, so the policy would never be trained; raise n_timesteps "
                            "or lower hyperparams.learning_starts")
    _check_net_arch(config, path)
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


def sb3_policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """policy_kwargs as SB3 takes them: activation_fn named in the recipe (relu, tanh, elu) as its torch class."""
    kwargs = dict(raw)
    if isinstance(kwargs.get("activation_fn"), str):
        kwargs["activation_fn"] = ACTIVATIONS[kwargs["activation_fn"].lower()]
    return kwargs
