"""Rebuild a gymnasium env exactly as a teacher was trained: id, kwargs and wrappers, described as data."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym

from policykd.errors import PolicyKDError

# Packages that register envs on import, tried in order when an id is not yet registered.
_REGISTERING_PACKAGES = ("pybullet_envs_gymnasium",)
# Namespaces whose package name differs from the lower-cased namespace.
_NAMESPACE_PACKAGES = {"PolicyKD": "policykd_envs"}


def ensure_registered(env_id: str, packages: tuple[str, ...] = ()) -> None:
    """Import the package that registers `env_id` (first those the teacher names, rl-zoo's gym_packages), or fail
    with the closest known ids."""
    if env_id in gym.registry:
        return
    namespace = env_id.split("/")[0] if "/" in env_id else None
    candidates = packages + ((_NAMESPACE_PACKAGES.get(namespace, namespace.lower()),) if namespace else ()) + _REGISTERING_PACKAGES
    for package in candidates:
        if not _installed_outside_cwd(package):
            continue
        try:
            with native_stdout_silenced((1, 2)):
                importlib.import_module(package)
        except ImportError:
            continue
        if env_id in gym.registry:
            return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f" (close matches: {', '.join(close)})" if close else ""
    if packages:
        missing = [p for p in packages if not _installed_outside_cwd(p)]
        named = (f"; the teacher's args.yml lists gym_packages {list(packages)}, and "
                 + (f"{', '.join(missing)} is not installed here: install it into this environment" if missing
                    else "none of them registers it: check the env id"))
        raise PolicyKDError(f"unknown env id {env_id!r}{hint}{named}")
    raise PolicyKDError(f"unknown env id {env_id!r}{hint}; check the spelling or install the package that registers it")


def _installed_outside_cwd(package: str) -> bool:
    """Whether `package` is imported from elsewhere than the current folder. An env id comes from files (a student
    card, a teacher's config): its namespace must not import a module that happens to lie in the folder policykd
    runs in (`Pwn/X-v0` -> ./pwn.py, on sys.path as '' in Python sessions), which nobody vouched for. Import such
    a package yourself to use its envs."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    cwd = Path.cwd().resolve()
    here = importlib.machinery.PathFinder.find_spec(package, [str(cwd)])  # the copy the current folder holds, if any
    return here is None or (here.origin, here.submodule_search_locations) != (spec.origin, spec.submodule_search_locations)


@contextlib.contextmanager
def native_stdout_silenced(fds: tuple[int, ...] = (1,)) -> Iterator[None]:
    """Send the file descriptors (default: stdout) to /dev/null for the block: pybullet prints banners from C
    ('argv[0]=' on stdout when connecting, 'pybullet build time' on stderr when imported)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(devnull, fd)
    try:
        yield
    finally:
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


class QuietReset(gym.Wrapper):
    """Keeps pybullet's C-level connection banner, printed on the first reset, off the user's terminal."""

    def reset(self, **kwargs):
        with native_stdout_silenced():
            return self.env.reset(**kwargs)


def import_object(path: str) -> Any:
    """`package.module.Name` or `package.module:Name` -> the object."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError) as e:
        raise PolicyKDError(f"cannot import {path!r} ({e}); install the package that provides it") from e
    if not hasattr(module, attr):
        raise PolicyKDError(f"cannot import {path!r}: module {module_name} has no {attr!r}; check the name")
    return getattr(module, attr)


# Modules whose wrappers a file (rl-zoo's config.yml, a model card, a student card) may name without the user's
# trust: importing and calling anything else would run code the user did not vouch for.
SAFE_WRAPPER_MODULES = ("gymnasium.wrappers", "sb3_contrib.common.wrappers", "stable_baselines3.common.atari_wrappers",
                        "rl_zoo3.wrappers", "policykd")


def wrapper_class(path: str, *, trusted: bool = False) -> type[gym.Wrapper]:
    """The gymnasium wrapper class a spec names by import path; one-line PolicyKDError for a path outside
    SAFE_WRAPPER_MODULES (unless trusted) or for anything that is not a gymnasium.Wrapper subclass."""
    module = path.replace(":", ".").rpartition(".")[0]
    if not trusted and not any(module == m or module.startswith(m + ".") for m in SAFE_WRAPPER_MODULES):
        raise PolicyKDError(f"env wrapper {path!r} is outside the packages policykd imports wrappers from "
                            f"({', '.join(SAFE_WRAPPER_MODULES)}); rerun with --trust-pickle (trust_pickle=True) only "
                            f"if you trust the teacher folder that names it")
    wrapper = import_object(path)
    if not (isinstance(wrapper, type) and issubclass(wrapper, gym.Wrapper)):
        raise PolicyKDError(f"env wrapper {path!r} is not a gymnasium.Wrapper class; restore the file that names it")
    return wrapper


@dataclass(frozen=True)
class WrapperSpec:
    """A gymnasium wrapper by import path, with its keyword arguments."""

    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)


# Where older rl-zoo configs name a wrapper that moved: rl-zoo's own `utils.wrappers` (before it became the rl_zoo3
# package) and `rl_zoo3.wrappers` import TimeFeatureWrapper from sb3_contrib (rl_zoo3/wrappers.py re-exports it).
MOVED_WRAPPERS = {
    "utils.wrappers.TimeFeatureWrapper": "sb3_contrib.common.wrappers.TimeFeatureWrapper",
    "rl_zoo3.wrappers.TimeFeatureWrapper": "sb3_contrib.common.wrappers.TimeFeatureWrapper",
}


def parse_wrappers(raw: Any) -> tuple[WrapperSpec, ...]:
    """rl-zoo's `env_wrapper` (a path, a {path: kwargs} dict, or a list of either) -> WrapperSpecs, with the paths of
    MOVED_WRAPPERS replaced by where the class lives now."""
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    specs = []
    for item in items:
        if isinstance(item, str):
            specs.append(WrapperSpec(MOVED_WRAPPERS.get(item, item)))
        elif isinstance(item, dict):
            specs.extend(WrapperSpec(MOVED_WRAPPERS.get(path, path), dict(kwargs or {})) for path, kwargs in item.items())
        else:
            raise PolicyKDError(f"env_wrapper entry {item!r} is neither an import path nor a {{path: kwargs}} mapping")
    return tuple(specs)


def refuse_running_statistics(wrapper: gym.Env, path: str) -> None:
    """Fail in one line for a wrapper that updates running statistics as it steps (a RunningMeanStd attribute, as
    gymnasium's NormalizeObservation / NormalizeReward keep): a checkpoint does not save them, so a rebuilt env
    would normalise what the teacher sees, or what its return is scored on, unlike its training, and drift."""
    running = next((name for name, value in vars(wrapper).items() if type(value).__name__ == "RunningMeanStd"), None)
    if running is not None:
        raise PolicyKDError(f"wrapper {path} keeps running statistics ({running}) that no checkpoint file saves, so the "
                            "rebuilt env would normalise unlike the teacher's training; train the teacher with rl-zoo's "
                            "`normalize: true` (VecNormalize, saved beside it) instead of this wrapper")


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to rebuild the teacher's training env (observation normalisation excluded)."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    wrappers: tuple[WrapperSpec, ...] = ()
    trusted: bool = field(default=False, compare=False)  # wrappers from any module (wrapper_class); not serialised
    packages: tuple[str, ...] = ()  # imported to register env_id when it is not yet (rl-zoo's gym_packages)

    def check_wrappers(self) -> None:
        """Fail in one line now, not at the first make(), for a wrapper that wrapper_class refuses."""
        for wrapper in self.wrappers:
            wrapper_class(wrapper.path, trusted=self.trusted)

    def make(self, *, render_mode: str | None = None, max_episode_steps: int | None = None,
             episode_cap: int | None = None) -> gym.Env:
        """The env; max_episode_steps (when given) replaces the registered time limit, also for wrappers that read
        it (TimeFeatureWrapper then runs its time feature from 1 to 0 over the shorter episode). episode_cap (when
        given) truncates episodes outside every wrapper, so what the wrappers see stays as in training."""
        ensure_registered(self.env_id, self.packages)
        kwargs = dict(self.env_kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        kwargs_limit = kwargs.pop("max_episode_steps", None)  # rl-zoo's env_kwargs may set it: gym.make's own argument
        try:
            with native_stdout_silenced((1, 2)):  # Python exceptions still propagate
                env = gym.make(self.env_id, max_episode_steps=max_episode_steps or kwargs_limit, **kwargs)
        except TypeError as e:
            raise PolicyKDError(f"env {self.env_id!r} rejected its kwargs {kwargs}: {e}") from e
        except (gym.error.DependencyNotInstalled, ImportError) as e:  # e.g. LunarLander without Box2D, Ant without MuJoCo
            raise PolicyKDError(f"env {self.env_id!r} needs a package that is not installed: {str(e).rstrip('.')}; "
                                "install it into this environment and run again") from e
        if "pybullet" in str(gym.spec(self.env_id).entry_point):
            env = QuietReset(env)
        for wrapper in self.wrappers:
            try:
                with warnings.catch_warnings():  # RescaleAction's float64 bounds on a float32 Box: the env acts as in training
                    warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32", category=UserWarning)
                    env = wrapper_class(wrapper.path, trusted=self.trusted)(env, **wrapper.kwargs)
            except TypeError as e:
                raise PolicyKDError(f"wrapper {wrapper.path} rejected its kwargs {wrapper.kwargs}: {e}; fix env_wrapper "
                                    "in the teacher's config") from e
            refuse_running_statistics(env, wrapper.path)
        return env if episode_cap is None else gym.wrappers.TimeLimit(env, episode_cap)

    def time_limit(self) -> int | None:
        """The registered max_episode_steps (or the env_kwargs' one); None for an env whose episodes may never end."""
        ensure_registered(self.env_id, self.packages)
        limits = [w.kwargs.get("max_episode_steps") for w in self.wrappers
                  if issubclass(wrapper_class(w.path, trusted=self.trusted), gym.wrappers.TimeLimit)]
        return self.env_kwargs.get("max_episode_steps") or gym.spec(self.env_id).max_episode_steps or next(
            (limit for limit in limits if limit), None)

    def with_view(self, view: str) -> EnvSpec:
        """This env with a student view (policykd.views): info["student_obs"] after every reset and step."""
        if not view:
            return self
        return replace(self, wrappers=(*self.wrappers, WrapperSpec("policykd.views:StudentViewWrapper", {"view": view})))

    def to_json(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "wrappers": [{"path": w.path, "kwargs": w.kwargs} for w in self.wrappers],
            **({"packages": list(self.packages)} if self.packages else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], *, trusted: bool = False) -> EnvSpec:
        wrappers = tuple(WrapperSpec(w["path"], dict(w.get("kwargs") or {})) for w in d.get("wrappers", []))
        return cls(env_id=d["env_id"], env_kwargs=dict(d.get("env_kwargs") or {}), wrappers=wrappers, trusted=trusted,
                   packages=tuple(d.get("packages") or ()))
