"""Student views: what a sensor-only student sees of an env whose teacher sees more (privileged state).

A recipe names the student's view (`student_view: rays`). The env provides its views: its unwrapped class maps
names to view objects in `student_views` (policykd_envs.racecar has `rays`). A view can also be an import path
`package.module:NAME` to an object of your own, which you vouch for by naming it. A view object has

    space(env) -> gymnasium.spaces.Box                          the student's observation space
    observe(env, obs, last_action) -> np.ndarray               the student's observation after a reset or step,
                                                                from the unwrapped env, the teacher's observation
                                                                and the last action (zeros after a reset)

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


class StudentViewWrapper(gym.Wrapper):
    """Adds info["student_obs"], the student's view, after every reset and step; observations stay the teacher's."""

    def __init__(self, env: gym.Env, view: str) -> None:
        super().__init__(env)
        self.view_name = view
        self.view = resolve_view(env, view)
        self.student_observation_space = self.view.space(env.unwrapped)
        self._action_shape = env.action_space.shape or ()
        self._last_action = np.zeros(self._action_shape, dtype=np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._last_action = np.zeros(self._action_shape, dtype=np.float32)
        return obs, {**info, INFO_KEY: self._observe(obs)}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_action = np.asarray(action, dtype=np.float32).reshape(self._action_shape)
        return obs, reward, terminated, truncated, {**info, INFO_KEY: self._observe(obs)}

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        seen = np.asarray(self.view.observe(self.env.unwrapped, obs, self._last_action), dtype=np.float32)
        if seen.shape != self.student_observation_space.shape:
            raise PolicyKDError(f"student view {self.view_name!r} returned shape {seen.shape}, but its space has "
                                f"{self.student_observation_space.shape}; fix the view's observe() or space()")
        return seen


def student_observation_space(spec, view: str) -> gym.spaces.Box:
    """The observation space of `view` on the env that EnvSpec `spec` builds (a one-line error if it has none)."""
    env = spec.make()
    try:
        return StudentViewWrapper(env, view).student_observation_space
    finally:
        env.close()
