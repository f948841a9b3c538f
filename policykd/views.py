"""Student views: what a sensor-only student sees of an env whose teacher sees more (privileged state).

A recipe names the student's view (`student_view: rays`). The env provides its views: its unwrapped class maps
names to view objects in `student_views` (policykd_envs.racecar has `rays`). A view can also be an import path
`package.module:NAME` to an object of your own, which you vouch for by naming it. A view object has

    space(env) -> gymnasium.spaces.Box                          the student's observation space
    observe(env, obs, last_action) -> np.ndarray               the student's observation after a reset or step,
                                                                from the unwrapped env, the teacher's observation
                                                                and the last action (zeros after a reset)

A view whose observations start with an image also has `image_shape` (height, width, channels; the image flattened
row by row, channels last), which a CNN student (recipe key `conv`) reads.

Memory: `NAME*k` (e.g. `rays*3`) stacks the view's last k observations, oldest first (after a reset, the first
one k times), for a student that needs history: speeds from ranges, turning from frames.

`StudentViewWrapper` puts it in info["student_obs"] after every reset and step, so the teacher keeps its own
observation and vector envs batch the student's beside it. `EnvSpec.with_view(name)` adds the wrapper to an env
description; collection stores both views per step (buffer field `student_obs`), the student trains and acts on
its own, and evaluation runs the student on it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policykd.env_factory import import_object
from policykd.errors import PolicyKDError

INFO_KEY = "student_obs"


def resolve_view(env: gym.Env, name: str) -> Any:
    """The view object `name` of env (see the module docstring), or a one-line error naming the views it has."""
    views = getattr(env.unwrapped, "student_views", {}) or {}
    if name in views:
        return views[name]
    if ":" in name:
        view = import_object(name)
        if not (callable(getattr(view, "space", None)) and callable(getattr(view, "observe", None))):
            raise PolicyKDError(f"student view {name!r} must have space(env) and observe(env, obs, last_action) methods")
        return view
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    offered = ", ".join(sorted(views)) or "none"
    raise PolicyKDError(f"env {env_id} has no student view {name!r} (it offers: {offered}); "
                        "choose one of those or give an import path package.module:VIEW")


def parse_view(view: str) -> tuple[str, int]:
    """`NAME` or `NAME*k` -> (NAME, frames k >= 1), or a one-line error."""
    name, star, frames = view.rpartition("*")
    if not star:
        return view, 1
    if not (name and frames.isdigit() and 1 <= int(frames) <= 64):
        raise PolicyKDError(f"student view {view!r}: write NAME or NAME*k with k frames from 1 to 64, e.g. rays*3")
    return name, int(frames)


class StudentViewWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds info["student_obs"], the student's view (its last k frames for NAME*k), after every reset and step;
    observations stay the teacher's."""

    def __init__(self, env: gym.Env, view: str) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, view=view)
        gym.Wrapper.__init__(self, env)
        self.view_name = view
        name, self.frames = parse_view(view)
        self.view = resolve_view(env, name)
        one = self._call("space", env.unwrapped)
        self._frame_shape = one.shape
        self.student_observation_space = one if self.frames == 1 else gym.spaces.Box(
            np.tile(one.low.reshape(-1), self.frames), np.tile(one.high.reshape(-1), self.frames), dtype=np.float32)
        self._history: list[np.ndarray] = []
        self._action_shape = env.action_space.shape or ()
        self._last_action = np.zeros(self._action_shape, dtype=np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._last_action = np.zeros(self._action_shape, dtype=np.float32)
        self._history = [self._observe(obs)] * self.frames
        return obs, {**info, INFO_KEY: self._seen()}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_action = np.asarray(action, dtype=np.float32).reshape(self._action_shape)
        self._history = [*self._history[1:], self._observe(obs)]
        return obs, reward, terminated, truncated, {**info, INFO_KEY: self._seen()}

    def _call(self, method: str, *args):
        """The view's space() or observe(): an error inside it (a view written for another env reads attributes
        this one lacks) is one line naming the view and the env."""
        try:
            return getattr(self.view, method)(*args)
        except PolicyKDError:
            raise
        except Exception as e:
            env_id = self.env.spec.id if self.env.spec is not None else type(self.env.unwrapped).__name__
            raise PolicyKDError(f"student view {self.view_name!r} failed in its {method}() on {env_id} "
                                f"({type(e).__name__}: {e}); use a view written for this env, or fix the view") from e

    def _seen(self) -> np.ndarray:
        return self._history[0] if self.frames == 1 else np.concatenate([f.reshape(-1) for f in self._history])

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        seen = np.asarray(self._call("observe", self.env.unwrapped, obs, self._last_action), dtype=np.float32)
        if seen.shape != self._frame_shape:
            raise PolicyKDError(f"student view {self.view_name!r} returned shape {seen.shape}, but its space has "
                                f"{self._frame_shape}; fix the view's observe() or space()")
        return seen


def student_observation_space(spec, view: str) -> gym.spaces.Box:
    """The observation space of `view` on the env that EnvSpec `spec` builds (a one-line error if it has none)."""
    env = spec.make()
    try:
        return StudentViewWrapper(env, view).student_observation_space
    finally:
        env.close()


def view_image_shape(spec, view: str) -> tuple[int, int, int] | None:
    """(height, width, channels) of the image that starts `view`'s observations (a view object's `image_shape`,
    e.g. the racecar's camera), or None when the view has none or stacks frames (NAME*k: one image per frame)."""
    name, frames = parse_view(view)
    env = spec.make()
    try:
        shape = getattr(resolve_view(env, name), "image_shape", None)
    finally:
        env.close()
    return tuple(int(v) for v in shape) if shape is not None and frames == 1 else None


class StudentViewObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The env as a sensor-only student sees it: observations are the view (what runs on the robot; passes
    gymnasium's check_env). policykd.runtime.make_env builds it for a student whose card names a view."""

    def __init__(self, env: gym.Env, view: str) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, view=view)
        viewed = StudentViewWrapper(env, view)
        gym.ObservationWrapper.__init__(self, viewed)
        self.observation_space = viewed.student_observation_space

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return info[INFO_KEY], info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return info[INFO_KEY], reward, terminated, truncated, info

    def observation(self, observation: np.ndarray) -> np.ndarray:  # unused: reset and step return the view
        return observation
