"""Pieces shared by the pybullet envs: a private DIRECT physics server per env, action checks, a camera."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient


@contextlib.contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """pybullet prints 'argv[0]=' from C when a server starts; keep it off the user's terminal."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def connect_direct() -> BulletClient:
    """A new headless (DIRECT) physics server owned by one env; never a GUI window."""
    with _c_stdout_silenced():
        client = BulletClient(connection_mode=pybullet.DIRECT)
    client.setAdditionalSearchPath(pybullet_data.getDataPath())
    return client


def checked_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Validate an action and clip it into [low, high] (clipping is documented in each env).

    NaN or infinite entries, or a wrong shape, raise ValueError: pybullet would otherwise fly the body away.
    """
    a = np.asarray(action, dtype=np.float64)
    if a.shape != low.shape:
        raise ValueError(f"action has shape {a.shape}, expected {low.shape}; pass one action per step")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action {a.tolist()} contains NaN or inf; check the policy's output before stepping")
    return np.clip(a, low, high)


def camera_image(client: BulletClient, *, eye: np.ndarray, target: np.ndarray, width: int, height: int,
                 fov_deg: float = 60.0) -> np.ndarray:
    """An RGB frame (height, width, 3) uint8 from pybullet's CPU renderer (works without a display)."""
    view = client.computeViewMatrix(cameraEyePosition=list(eye), cameraTargetPosition=list(target),
                                    cameraUpVector=[0, 0, 1])
    projection = client.computeProjectionMatrixFOV(fov=fov_deg, aspect=width / height, nearVal=0.05, farVal=60.0)
    _, _, rgba, _, _ = client.getCameraImage(width, height, view, projection, renderer=pybullet.ER_TINY_RENDERER)
    return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()


class BulletEnv(gym.Env):
    """A gymnasium env owning one private DIRECT pybullet server, disconnected on close() or garbage collection."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode: str | None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use None or 'rgb_array'")
        self.render_mode = render_mode
        self._p = connect_direct()

    def close(self) -> None:
        if getattr(self, "_p", None) is not None:  # also when __init__ failed before connecting
            self._p.disconnect()
            self._p = None

    def __del__(self):
        self.close()
