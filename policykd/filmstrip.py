"""Teacher and student driving the same seeded episode, side by side: a PNG strip and an animated GIF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from policykd.artifacts import atomic_write_bytes
from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd.views import INFO_KEY

ActFn = Callable[[np.ndarray], np.ndarray]  # obs [1, obs_dim] -> actions [1, act_dim]


def record_episode(act: ActFn, spec: EnvSpec, seed: int, *, max_steps: int, view: str = "") -> list[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of one deterministic episode on `seed`, the reset frame first. view: `act` sees
    that student view of the env (policykd.views) instead of its observation."""
    env = spec.with_view(view).make(render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=seed)
        try:
            frames = [env.render()]
        except Exception as e:  # e.g. gymnasium's DependencyNotInstalled for pygame-drawn envs
            raise PolicyKDError(f"{spec.env_id} does not render rgb_array frames here ({e}); "
                                "set rollout_steps: 0 to skip the rollout strip") from e
        if frames[0] is None:
            raise PolicyKDError(f"{spec.env_id} does not render rgb_array frames; set rollout_steps: 0 to skip the strip")
        for _ in range(max_steps):
            seen = info[INFO_KEY] if view else obs
            obs, _, terminated, truncated, info = env.step(act(seen[None].astype(np.float32))[0])
            frames.append(env.render())
            if terminated or truncated:
                break
    finally:
        env.close()
    return frames


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    ImageDraw.Draw(image).text((6, 4), text, fill=(0, 0, 0))
    return np.asarray(image)


def _pick(frames: list[np.ndarray], index: int) -> np.ndarray:
    """Frame `index`, or the last frame held once an episode has ended (so both rows stay aligned in time)."""
    return frames[min(index, len(frames) - 1)]


def write_side_by_side(teacher: list[np.ndarray], student: list[np.ndarray], png: Path, gif: Path, *,
                       columns: int = 6, fps: int = 10, frame_stride: int = 2) -> None:
    """PNG: a grid, teacher on the top row and student below, `columns` evenly spaced moments of the episode.
    GIF: both views next to each other, every `frame_stride`-th step."""
    try:
        from PIL import Image
    except ImportError as e:
        raise PolicyKDError("rollout strips need Pillow; pip install 'policykd[track]'") from e
    n = max(len(teacher), len(student))
    moments = np.linspace(0, n - 1, columns).round().astype(int)
    rows = [np.concatenate([_label(_pick(frames, i), f"{name} step {i}") for i in moments], axis=1)
            for name, frames in (("teacher", teacher), ("student", student))]
    buffer = _encode(Image.fromarray(np.concatenate(rows, axis=0)), "PNG")
    atomic_write_bytes(png, buffer)
    pairs = [Image.fromarray(np.concatenate([_label(_pick(teacher, i), "teacher"), _label(_pick(student, i), "student")],
                                            axis=1)) for i in range(0, n, frame_stride)]
    atomic_write_bytes(gif, _encode(pairs[0], "GIF", save_all=True, append_images=pairs[1:],
                                    duration=int(1000 * frame_stride / fps), loop=0))


def _encode(image, fmt: str, **kwargs) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()
