"""Safe unpickling of teacher checkpoints: only an allowlist of known types is ever constructed.

SB3 stores some hyperparameters of a model zip as base64 cloudpickle streams (":serialized:" entries of the
zip's "data" JSON) and rl-zoo stores VecNormalize statistics as a pickle. Unpickling runs whatever callable
the stream names, so a crafted file can run code. `RestrictedUnpickler` resolves a global only when its
module and name are on the allowlist below (numpy arrays/dtypes/random state, gymnasium spaces, SB3 policy,
feature-extractor and running-statistics classes, torch activation and optimizer classes, a few builtins);
anything else raises `UnsafePickleError`, one line naming the file, the refused global and --trust-pickle.

Modules are imported only after their name passed the allowlist, so a refused global imports nothing.
Schedules (learning_rate, lr_schedule, clip_range, ...) are cloudpickled *functions*; inference does not
need them, so `safe_sb3_objects` never unpickles them and substitutes constants instead.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from policykd.errors import PolicyKDError

TRUST_HINT = "rerun with --trust-pickle (trust_pickle=True) only if you trust this file"

# 2021-era pickles name the old `gym` package; its spaces are gymnasium's.
GYM_TO_GYMNASIUM = {
    "gym": "gymnasium",
    "gym.spaces": "gymnasium.spaces",
    "gym.spaces.box": "gymnasium.spaces.box",
    "gym.spaces.discrete": "gymnasium.spaces.discrete",
    "gym.spaces.multi_discrete": "gymnasium.spaces.multi_discrete",
    "gym.spaces.multi_binary": "gymnasium.spaces.multi_binary",
    "gym.spaces.dict": "gymnasium.spaces.dict",
    "gym.spaces.tuple": "gymnasium.spaces.tuple",
    "gym.spaces.space": "gymnasium.spaces.space",
}

# module -> names allowed in it. Module names are canonical: numpy 2's `numpy._core` is written `numpy.core`.
ALLOWED_NAMES: dict[str, frozenset[str]] = {
    "builtins": frozenset({"set", "frozenset", "complex", "slice", "range", "bytearray", "bytes", "tuple", "list",
                           "dict", "float", "int", "bool", "str"}),
    "collections": frozenset({"OrderedDict", "deque"}),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy.random._pickle": frozenset({"__randomstate_ctor", "__generator_ctor", "__bit_generator_ctor"}),
    "numpy.random.bit_generator": frozenset({"SeedSequence", "__pyx_unpickle_SeedSequence"}),
    "numpy.random._mt19937": frozenset({"MT19937"}),
    "numpy.random._pcg64": frozenset({"PCG64", "PCG64DXSM"}),
    "numpy.random._philox": frozenset({"Philox"}),
    "numpy.random._sfc64": frozenset({"SFC64"}),
    "numpy.random.mtrand": frozenset({"RandomState"}),
    "numpy.random._generator": frozenset({"Generator"}),
    "stable_baselines3.common.running_mean_std": frozenset({"RunningMeanStd"}),
    "stable_baselines3.common.type_aliases": frozenset({"TrainFreq", "TrainFrequencyUnit"}),
}

_POLICY_MODULES = (
    "stable_baselines3.common.policies",
    "stable_baselines3.a2c.policies", "stable_baselines3.ppo.policies", "stable_baselines3.sac.policies",
    "stable_baselines3.td3.policies", "stable_baselines3.ddpg.policies", "stable_baselines3.dqn.policies",
    "sb3_contrib.tqc.policies", "sb3_contrib.qrdqn.policies", "sb3_contrib.trpo.policies",
    "sb3_contrib.crossq.policies", "sb3_contrib.ars.policies", "sb3_contrib.ppo_mask.policies",
    "sb3_contrib.ppo_recurrent.policies", "sb3_contrib.common.maskable.policies", "sb3_contrib.common.recurrent.policies",
)
_OPTIMIZER_MODULES = tuple(f"torch.optim.{m}" for m in (
    "adam", "adamw", "adamax", "adagrad", "adadelta", "nadam", "radam", "rmsprop", "sgd", "asgd", "rprop"))
_SPACE_MODULES = tuple(f"gymnasium.spaces.{m}" for m in ("box", "discrete", "multi_discrete", "multi_binary", "dict", "tuple"))

# module -> "module:BaseClass": any class of that module subclassing the base (e.g. every SB3 policy class,
# MlpPolicy aliases included since they pickle as the class they alias; every torch activation module).
ALLOWED_SUBCLASSES: dict[str, str] = {
    **{m: "stable_baselines3.common.policies:BasePolicy" for m in _POLICY_MODULES},
    "stable_baselines3.common.torch_layers": "stable_baselines3.common.torch_layers:BaseFeaturesExtractor",
    "torch.nn.modules.activation": "torch.nn:Module",
    **{m: "torch.optim:Optimizer" for m in _OPTIMIZER_MODULES},
    "stable_baselines3.common.sb2_compat.rmsprop_tf_like": "torch.optim:Optimizer",  # rl-zoo's A2C (Atari) recipes
    **{m: "gymnasium.spaces:Space" for m in _SPACE_MODULES},
    "numpy.dtypes": "numpy:dtype",
}


class UnsafePickleError(PolicyKDError):
    """A pickle named a global outside the allowlist (or held an unexpected object); nothing was run."""

    def __init__(self, source: str | Path, refused: str, where: str = "") -> None:
        self.source, self.refused = str(source), refused
        where = f" in {where!r}" if where else ""
        shown = refused if refused.isprintable() else repr(refused)  # a damaged name may hold a newline
        super().__init__(
            f"{source}: refused to unpickle {shown}{where}: safe mode only constructs known numpy, gymnasium, "
            f"torch and SB3 types; {TRUST_HINT}"
        )


class _VecNormalizeState:
    """Stands in for VecNormalize while unpickling: keeps the pickled attributes, runs no VecNormalize code."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


VECNORMALIZE = ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize")


def _canonical_module(module: str) -> str:
    module = GYM_TO_GYMNASIUM.get(module, module)
    if module == "numpy._core" or module.startswith("numpy._core."):
        module = "numpy.core" + module[len("numpy._core"):]
    return module


def _import(module: str) -> Any:
    """Import a canonical module name; numpy 2 keeps `numpy.core.*` under `numpy._core.*`."""
    if module.startswith("numpy.core"):
        try:
            return importlib.import_module("numpy._core" + module[len("numpy.core"):])
        except ImportError:
            pass
    return importlib.import_module(module)


def _resolve(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def is_allowed(module: str, name: str) -> bool:
    """Whether `module.name` is on the allowlist (imports the module only when its name is listed)."""
    module = _canonical_module(module)
    if "." in name:  # dotted qualnames (getattr chains) are never needed by the allowlisted types
        return False
    if name in ALLOWED_NAMES.get(module, ()):
        return True
    if module in ALLOWED_SUBCLASSES:
        try:
            obj = getattr(_import(module), name, None)
            base = _resolve(ALLOWED_SUBCLASSES[module])
        except ImportError:
            return False
        return isinstance(obj, type) and issubclass(obj, base)
    return False


def _check_dtype_state(dtype: Any, state: Any) -> None:
    """numpy crashes the interpreter on some malformed dtype states (e.g. an int where the subarray belongs), so a
    pickled dtype must carry a plain numeric dtype's state: (3 or 4, byte order, None, None, None, -1, -1, its flags
    [, None])."""
    if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4) and state[1] in ("<", ">", "|", "=")
            and all(v is None for v in state[2:5]) and state[5] == state[6] == -1 and state[7] == dtype.flags
            and all(v is None for v in state[8:])):
        raise ValueError(f"malformed state of numpy dtype {dtype}: {str(state)[:80]}")


class RestrictedUnpickler(pickle._Unpickler):
    """A pickle unpickler whose find_class resolves only allowlisted globals (see the module docstring).

    The pure-Python unpickler, so that BUILD checks a numpy dtype's state before numpy sees it (_check_dtype_state).
    `substitutes` maps (module, name) to a class built instead (e.g. VecNormalize -> a plain attribute holder)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self) -> None:
        if isinstance(self.stack[-2], np.dtype):  # the stack ends [..., instance, state]
            _check_dtype_state(self.stack[-2], self.stack[-1])
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def __init__(self, file: BinaryIO, *, source: str | Path, where: str = "",
                 substitutes: dict[tuple[str, str], type] | None = None) -> None:
        super().__init__(file)
        self.source, self.where = source, where
        self.substitutes = substitutes or {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.substitutes:
            return self.substitutes[(module, name)]
        if not is_allowed(module, name):
            raise UnsafePickleError(self.source, f"{module}.{name}", self.where)
        return getattr(_import(_canonical_module(module)), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self.source, f"persistent id {str(pid)[:40]!r}", self.where)


def _check_stream(data: bytes) -> None:
    """Walk the opcodes without building anything: ValueError for an unknown opcode or a truncated argument (a
    damaged BYTEARRAY8 length would otherwise make the unpickler allocate and zero that many bytes first)."""
    for _ in pickletools.genops(data):
        pass


def safe_load(file: BinaryIO, *, source: str | Path, where: str = "",
              substitutes: dict[tuple[str, str], type] | None = None) -> Any:
    """Unpickle the one object of `file` (read whole) in safe mode; UnsafePickleError for a refused global,
    PolicyKDError for a corrupt stream."""
    data = file.read()
    try:
        _check_stream(data)
        return RestrictedUnpickler(io.BytesIO(data), source=source, where=where, substitutes=substitutes).load()
    except PolicyKDError:
        raise
    except Exception as e:  # a damaged stream makes pickle and the allowlisted constructors raise any type (MemoryError
        # for a huge declared length, RecursionError, OverflowError, ...): all mean the file is corrupt
        where = f" ({where})" if where else ""
        detail = str(e).splitlines()[0][:160] if str(e) else e.__class__.__name__
        raise PolicyKDError(f"cannot unpickle {source}{where}: {detail}; the file is corrupt or truncated") from e


def safe_loads(data: bytes, *, source: str | Path, where: str = "",
               substitutes: dict[tuple[str, str], type] | None = None) -> Any:
    return safe_load(io.BytesIO(data), source=source, where=where, substitutes=substitutes)


def load_vecnormalize_pickle(path: Path) -> Any:
    """A vecnormalize.pkl as a plain object holding VecNormalize's pickled attributes (obs_rms, clip_obs, ...)."""
    with open(path, "rb") as f:
        obj = safe_load(f, source=path, substitutes={VECNORMALIZE: _VecNormalizeState})
    if not isinstance(obj, _VecNormalizeState):
        raise UnsafePickleError(path, f"an object of type {type(obj).__name__} where VecNormalize was expected")
    return obj


# -- SB3 model zips --------------------------------------------------------------------------------

def _zero_schedule(_progress: float) -> float:
    return 0.0


# Schedules are cloudpickled functions (and may not even unpickle across SB3 versions); inference does not
# need them, so they are replaced by constants in both modes (rl-zoo's enjoy script does the same).
SCHEDULE_OBJECTS: dict[str, Any] = {
    "learning_rate": 0.0,
    "lr_schedule": _zero_schedule,
    "clip_range": _zero_schedule,
    "clip_range_vf": None,
    "exploration_schedule": _zero_schedule,
    "delta_std_schedule": _zero_schedule,
}
# Training state that inference does not use: replaced by None (SB3 rebuilds its defaults) when pickled.
TRAINING_STATE_KEYS = frozenset({
    "_last_obs", "_last_original_obs", "_last_episode_starts", "_last_dones", "ep_info_buffer",
    "ep_success_buffer", "action_noise", "replay_buffer_class", "rollout_buffer_class",
    "weights",  # ARS's flat copy of its policy's parameters (a pickled tensor; the policy's state dict holds them)
})


def _check_decoded(source: str | Path, key: str, value: Any) -> None:
    """Even allowlisted types must sit where SB3 expects them (a class for policy_class, spaces for spaces)."""
    import gymnasium as gym
    from stable_baselines3.common.policies import BasePolicy

    ok = {
        "policy_class": lambda v: isinstance(v, type) and issubclass(v, BasePolicy),
        "observation_space": lambda v: isinstance(v, gym.spaces.Space),
        "action_space": lambda v: isinstance(v, gym.spaces.Space),
        "policy_kwargs": lambda v: isinstance(v, dict),
    }.get(key, lambda v: True)
    if not ok(value):
        raise UnsafePickleError(source, f"an object of type {type(value).__module__}.{type(value).__qualname__}", key)
    if key in ("observation_space", "action_space") and not _whole_space(value):
        raise PolicyKDError(f"cannot unpickle {source} ({key}): the space is damaged; the file is corrupt or truncated")


def _whole_space(space: Any) -> bool:
    """Whether an unpickled Box or Discrete is whole: a damaged pickle can drop or garble attributes, which the
    spaces' __setstate__ does not check, so the space rebuilt from its parts must equal it."""
    import gymnasium as gym

    try:
        if isinstance(space, gym.spaces.Box):
            with warnings.catch_warnings():  # old pickles hold float64 bounds of float32 boxes
                warnings.simplefilter("ignore")
                return bool(gym.spaces.Box(space.low, space.high, space.shape, space.dtype) == space)
        if isinstance(space, gym.spaces.Discrete):
            return bool(gym.spaces.Discrete(space.n, start=space.start) == space)
    except Exception:  # gymnasium's constructors raise assorted types on garbled parts
        return False
    return True


def sb3_custom_objects(data: dict[str, Any], *, source: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """`custom_objects` for `BaseAlgorithm.load` given the zip's parsed "data" JSON.

    Safe mode: every ":serialized:" entry is either replaced (schedules, training state) or decoded here by
    the restricted unpickler, so SB3's json_to_data never calls cloudpickle.loads. trust_pickle: only the
    schedules are replaced and SB3 unpickles the rest itself (the old behaviour)."""
    objects = dict(SCHEDULE_OBJECTS)
    if trust_pickle:
        return objects
    for key, item in data.items():
        if key in objects or not (isinstance(item, dict) and ":serialized:" in item):
            continue
        if key in TRAINING_STATE_KEYS:
            objects[key] = None
            continue
        try:
            raw = base64.b64decode(str(item[":serialized:"]).encode(), validate=False)
        except (binascii.Error, ValueError) as e:
            raise PolicyKDError(f"cannot decode {key!r} in {source}: {e}; the file is corrupt") from e
        value = safe_loads(raw, source=source, where=key)
        _check_decoded(source, key, value)
        objects[key] = value
    return objects
