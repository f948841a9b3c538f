"""README figures of the camera student (issue 14): the privileged SAC teacher and the camera-only CNN student on
the same seeded track, side by side (docs/images/racecar_camera_rollout.png and .gif), and the camera frames the
student saw on that drive (docs/images/racecar_camera_frames.png, evenly spaced, upscaled 3x, with the step).

The student is the one benchmarks/privileged_racecar.py kept (runs/privileged_racecar/students/...), or --student.

    python benchmarks/racecar_camera_film.py
    python benchmarks/racecar_camera_film.py --student runs/camera/student --seed 1000000 --steps 300
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from policykd import runtime
from policykd.artifacts import atomic_write_bytes
from policykd.filmstrip import record_episode, write_side_by_side
from policykd.teachers import load_teacher

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDENT = ROOT / "runs" / "privileged_racecar" / "students" / "RacecarTrack-v0__camera-cnn__20000__0"
IMAGES = ROOT / "docs" / "images"


def camera_frames(student_dir: Path, seed: int, steps: int, columns: int = 8) -> np.ndarray:
    """The student's camera images [H, W, 3] at `columns` evenly spaced steps of its drive, in one labelled row."""
    from PIL import Image, ImageDraw

    env, policy = runtime.make_env(student_dir), runtime.load(student_dir)
    height, width, _ = policy.card["spec"]["conv"]["image_shape"]
    seen = []
    try:
        obs, _ = env.reset(seed=seed)
        policy.reset()
        for _ in range(steps):
            seen.append(obs)
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            if terminated or truncated:
                break
    finally:
        env.close()
    picks = np.linspace(0, len(seen) - 1, columns).round().astype(int)
    tiles = []
    for step in picks:
        image = (seen[step][: height * width * 3].reshape(height, width, 3) * 255).clip(0, 255).astype(np.uint8)
        tile = Image.fromarray(image).resize((width * 3, height * 3), Image.NEAREST)
        ImageDraw.Draw(tile).text((4, 2), f"step {step}", fill=(0, 0, 0))
        tiles.append(np.asarray(tile))
    return np.concatenate([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=255) for t in tiles], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=DEFAULT_STUDENT)
    parser.add_argument("--teacher", type=Path, default=ROOT / "agents" / "sac-RacecarTrack-v0")
    parser.add_argument("--seed", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    from PIL import Image

    teacher, policy = load_teacher(args.teacher), runtime.load(args.student)
    view = policy.card["student_view"]["name"]
    teacher_frames = record_episode(lambda o: teacher.act(o, deterministic=True), teacher.env_spec, args.seed, max_steps=args.steps)
    policy.reset()
    student_frames = record_episode(policy.batch, teacher.env_spec, args.seed, max_steps=args.steps, view=view)
    write_side_by_side(teacher_frames, student_frames, IMAGES / "racecar_camera_rollout.png", IMAGES / "racecar_camera_rollout.gif")
    buffer = io.BytesIO()
    Image.fromarray(camera_frames(args.student, args.seed, args.steps)).save(buffer, format="PNG")
    atomic_write_bytes(IMAGES / "racecar_camera_frames.png", buffer.getvalue())
    print(f"wrote {IMAGES / 'racecar_camera_rollout.png'}, .gif and {IMAGES / 'racecar_camera_frames.png'}")


if __name__ == "__main__":
    main()
