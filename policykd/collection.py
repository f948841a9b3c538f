"""`policykd collect`: teacher-labelled rollouts committed to a buffer chunk by chunk, resumable.

Each chunk of `chunk_steps` rows is one collector round (policykd.collectors: worker processes here, or Ray
actors), from fresh episodes seeded by (seed, chunk index), and is committed (buffer.py: write, fsync, rename,
then metadata) before the next starts, so an interruption loses at most the chunk being collected.
`resume=True` continues a buffer written by the same teacher file with the same settings from its next chunk:
a resumed buffer has exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policykd.buffer import Buffer, check_room, row_bytes
from policykd.errors import PolicyKDError
from policykd.run_dir import RunLock, check_label_scale
from policykd.student_format import view_name
from policykd.students import Student
from policykd.teachers import Teacher
from policykd.views import student_observation_space


def student_view_of(student: Student) -> str:
    """The student view (policykd.views) a student was distilled on, from its card; "" for the teacher's own."""
    return view_name(student.card or {}, None, resolving=True)


def check_student_fits(student: Student, teacher: Teacher, where: str = "--student") -> str:
    """The student must take the teacher's observations (or its card's view of the teacher's env) and act in its
    action space and family; returns the student's view name ("" for the teacher's observation)."""
    spec = student.spec
    view = student_view_of(student)
    obs_dim = int(np.prod(student_observation_space(teacher.env_spec, view).shape)) if view else teacher.obs_dim
    seen = f"its {view!r} view of the teacher's env has" if view else "the teacher's env has"
    if (spec.obs_dim, spec.action_dim, spec.family) != (obs_dim, teacher.action_dim, teacher.family):
        raise PolicyKDError(f"{where} takes {spec.obs_dim} observations and gives {spec.action_dim} {spec.family} actions, "
                            f"but {seen} {obs_dim} and {teacher.action_dim} {teacher.family}; "
                            "pass a student distilled from this teacher")
    return view


def collect_to_buffer(teacher: Teacher, out_dir: Path, settings: dict[str, Any], *, student: Student | None,
                      chunk_steps: int, resume: bool, progress, collector) -> Buffer:
    """Collect settings["steps"] labelled rows (settings: steps, beta, seed, n_envs, deterministic, student, and
    backend and num_workers for Ray) into the buffer at out_dir, one collector round per chunk; progress(label,
    total) is a Tracker.progress context; collector: from policykd.collectors.round_collector."""
    if collector.config.label_every != 1:
        raise ValueError("policykd collect labels every state: give it a collector with label_every 1")
    if student is not None and settings["beta"] >= 1.0 and not resume:  # a resume keeps the options it was started with
        raise PolicyKDError("--student acts only when --beta < 1 (the probability that the teacher acts); at --beta 1 the "
                            "teacher drives every step and the buffer would name a student that never acted: pass "
                            "--beta below 1 (e.g. 0.5) or drop --student")
    if student is not None and check_student_fits(student, teacher):
        raise PolicyKDError("--student sees a student view of the env (policykd.views); `policykd collect` collects "
                            "with the teacher's observation only: distil sensor-only students with `policykd distill`")
    if resume:  # checked before the lock file goes in: a folder that is not a buffer stays as it was
        buffer = Buffer.open(out_dir)
        if "labelled_steps" in (buffer.metadata.get("config") or {}):  # a DistillConfig: a `policykd distill` run's buffer
            raise PolicyKDError(f"{out_dir} is the buffer of a distillation run, which `policykd collect` does not extend; resume "
                                "that run with `policykd distill ... --resume`, or collect into a new --out")
        collected = buffer.rows
    else:
        Buffer.check_creatable(out_dir)
        collected = 0
    check_room(out_dir, settings["steps"] - collected,
               row_bytes(teacher.observation_space, teacher.action_space, teacher.family, transitions=True),
               held_in_memory=False, what="--steps")
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir):  # one process per buffer: two appending at once would write the same chunk
        return _collect_locked(teacher, out_dir, settings, student=student, chunk_steps=chunk_steps, resume=resume,
                               progress=progress, collector=collector)


# the student's weights (a folder at the same path may hold another student by now) and the chunk size (it decides
# each chunk's seed): recorded since 2026-12-02
SETTINGS_ADDED_LATER = ("student_sha256", "chunk_steps")


def _collect_locked(teacher: Teacher, out_dir: Path, settings: dict[str, Any], *, student: Student | None,
                    chunk_steps: int, resume: bool, progress, collector) -> Buffer:
    identity = teacher.identity()
    if resume:
        buffer = Buffer.open(out_dir)
        if (buffer.metadata.get("teacher") or {}).get("sha256") != identity["sha256"]:
            raise PolicyKDError(f"{out_dir} was collected from another teacher file than {teacher.source.path}; "
                                "resume with the original teacher or collect into a new --out")
        check_label_scale(out_dir, buffer.metadata.get("teacher") or {}, identity, fix="collect into a new --out")
        recorded = buffer.metadata.get("config") or {}
        # settings recorded since a later version are compared only where the buffer has them (older buffers resume)
        changed = sorted(k for k in settings if (k in recorded or k not in SETTINGS_ADDED_LATER) and recorded.get(k) != settings[k])
        if changed:
            raise PolicyKDError(f"--resume with other settings than {out_dir} was started with ({', '.join(changed)}); "
                                "resume with the same options"
                                + (" and the same student (its weights' sha256 is recorded)" if "student_sha256" in changed else ""))
        settings = {k: v for k, v in settings.items() if k in recorded or k not in SETTINGS_ADDED_LATER}
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
        while buffer.rows < settings["steps"]:
            rows, _ = collector.collect_round(steps=min(chunk_steps, settings["steps"] - buffer.rows), beta=settings["beta"],
                                              seed=_chunk_seed(settings["seed"], len(buffer.metadata["chunks"])),
                                              round_index=0, episode_offset=episode_offset, student=student,
                                              on_progress=advance)
            buffer.append(rows)
            episode_offset = int(rows["episode_id"].max()) + 1
    return buffer


def _chunk_seed(seed: int, chunk: int) -> int:
    """The seed chunk `chunk` is collected from: the run's seed itself for the first."""
    return seed if chunk == 0 else int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])
