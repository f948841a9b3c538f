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
                      chunk_steps: int, resume: bool, progress, collector=None) -> Buffer:
    """Collect settings["steps"] labelled rows (settings: steps, beta, seed, n_envs, deterministic, student, and
    backend and num_workers for Ray) into the buffer at out_dir; progress(label, total) is a Tracker.progress
    context. collector: a policykd.ray_backend.RayCollector to collect on, or None for this machine."""
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
    with progress("collecting", settings["steps"]) as advance:
        advance(buffer.rows)
        if collector is not None:
            _collect_on_ray(collector, buffer, settings, student=student, chunk_steps=chunk_steps,
                            episode_offset=episode_offset, advance=advance)
            return buffer
        seed = _part_seed(settings["seed"], len(buffer.metadata["chunks"]))
        chunks = iter_collect(teacher, steps=remaining, chunk_rows=chunk_steps, beta=settings["beta"], seed=seed,
                              n_envs=settings["n_envs"], student=student, episode_offset=episode_offset,
                              sample_actions=not settings["deterministic"], on_progress=advance)
        with contextlib.closing(chunks):  # interrupted while a chunk is written: the workers stop at once
            for chunk in chunks:
                buffer.append(chunk)
    return buffer


def _part_seed(seed: int, part: int) -> int:
    """The seed collection restarts from at chunk `part`: the run's seed itself for the first."""
    return seed if part == 0 else int(np.random.SeedSequence([seed, part]).generate_state(1)[0])


def _collect_on_ray(collector, buffer: Buffer, settings: dict[str, Any], *, student: Student | None, chunk_steps: int,
                    episode_offset: int, advance) -> None:
    """Fill `buffer` to settings["steps"] rows, one chunk per Ray round: chunk k is collected by all workers from
    seed _part_seed(seed, k) and committed before the next starts, so an interrupted collection resumes at a chunk
    boundary and the same --seed and worker count give the same buffer."""
    while buffer.rows < settings["steps"]:
        rows, _ = collector.collect_round(steps=min(chunk_steps, settings["steps"] - buffer.rows), beta=settings["beta"],
                                          seed=_part_seed(settings["seed"], len(buffer.metadata["chunks"])), round_index=0,
                                          episode_offset=episode_offset, student=student, on_progress=advance)
        buffer.append(rows)
        episode_offset = int(rows["episode_id"].max()) + 1
