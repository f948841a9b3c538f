"""`policykd collect`: teacher-labelled rollouts committed to a buffer chunk by chunk, resumable.

Each chunk of `chunk_steps` rows is committed (buffer.py: write, fsync, rename, then metadata) as soon as it
fills, so an interruption loses at most the chunk being filled. `resume=True` continues a buffer written by
the same teacher file with the same settings: collection restarts from fresh episodes, seeded by
(seed, number of committed chunks), so a resumed buffer is reproducible from where it was interrupted, and
the episode cut by the interruption simply ends at its last committed row.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from policykd.buffer import Buffer
from policykd.errors import PolicyKDError
from policykd.rollout import iter_collect
from policykd.students import Student
from policykd.teachers import Teacher


def check_student_fits(student: Student, teacher: Teacher, where: str = "--student") -> None:
    """The student must take the teacher's observations and act in its action space and family."""
    spec = student.spec
    if (spec.obs_dim, spec.action_dim, spec.family) != (teacher.obs_dim, teacher.action_dim, teacher.family):
        raise PolicyKDError(f"{where} takes {spec.obs_dim} observations and gives {spec.action_dim} {spec.family} actions, "
                            f"but the teacher's env has {teacher.obs_dim} and {teacher.action_dim} {teacher.family}; "
                            "pass a student distilled from this teacher")


def collect_to_buffer(teacher: Teacher, out_dir: Path, settings: dict[str, Any], *, student: Student | None,
                      chunk_steps: int, resume: bool, progress) -> Buffer:
    """Collect settings["steps"] labelled rows (settings: steps, beta, seed, n_envs, deterministic, student) into
    the buffer at out_dir; progress(label, total) is a Tracker.progress context."""
    if student is not None:
        check_student_fits(student, teacher)
    identity = teacher.identity()
    if resume:
        buffer = Buffer.open(out_dir)
        if (buffer.metadata.get("teacher") or {}).get("sha256") != identity["sha256"]:
            raise PolicyKDError(f"{out_dir} was collected from another teacher file than {teacher.source.path}; "
                                "resume with the original teacher or collect into a new --out")
        if buffer.metadata.get("config") != settings:
            changed = sorted(k for k in settings if (buffer.metadata.get("config") or {}).get(k) != settings[k])
            raise PolicyKDError(f"--resume with other settings than {out_dir} was started with ({', '.join(changed)}); "
                                "resume with the same options")
        episode_offset = int(buffer.load()["episode_id"].max()) + 1 if buffer.rows else 0
    else:
        buffer = Buffer.create(out_dir, observation_space=teacher.observation_space, action_space=teacher.action_space,
                               family=teacher.family, teacher=identity, normalizer=teacher.normalizer.to_json(),
                               config=settings, transitions=True)
        episode_offset = 0
    remaining = settings["steps"] - buffer.rows
    if remaining <= 0:
        return buffer
    part = len(buffer.metadata["chunks"])
    seed = settings["seed"] if part == 0 else int(np.random.SeedSequence([settings["seed"], part]).generate_state(1)[0])
    with progress("collecting", settings["steps"]) as advance:
        advance(buffer.rows)
        chunks = iter_collect(teacher, steps=remaining, chunk_rows=chunk_steps, beta=settings["beta"], seed=seed,
                              n_envs=settings["n_envs"], student=student, episode_offset=episode_offset,
                              sample_actions=not settings["deterministic"], on_progress=advance)
        with contextlib.closing(chunks):  # interrupted while a chunk is written: the workers stop at once
            for chunk in chunks:
                buffer.append(chunk)
    return buffer
