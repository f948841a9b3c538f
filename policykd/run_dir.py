"""A run folder: where it may be, what makes it a policykd run, and the lock that keeps one process in it.

RUN_DIR/config.json records the run's identity: {"format": "policykd-run", "config", "teacher", "versions"}.
`--resume` acts only on a folder whose config.json says it is a policykd run of the same recipe, teacher
(sha256) and env; anything else is refused before a file is touched. RUN_DIR/.lock is held (fcntl.flock,
released by the OS when the process ends, even on kill -9) while a process works in the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from policykd.errors import PolicyKDError

RUN_FORMAT = "policykd-run"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


def resolve_run_dir(out_dir: str | Path, run_name: str) -> Path:
    """OUT_DIR/RUN_NAME, refusing a name that would leave OUT_DIR (the config already refuses '/' and '..')."""
    out = Path(out_dir).resolve()
    run_dir = (out / run_name).resolve()
    if run_dir.parent != out:
        raise PolicyKDError(f"run name {run_name!r} would leave --out-dir {out_dir}; use a plain folder name")
    return Path(out_dir) / run_name


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/config.json of a policykd run, or a one-line error saying the folder is not one."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise PolicyKDError(f"{run_dir} is not a policykd run (no {CONFIG_FILE}); nothing was changed. "
                            "Resume only a folder written by `policykd distill`, or drop --resume to start a new run")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PolicyKDError(f"{path} is corrupt ({e.__class__.__name__}); nothing was changed. Start a new run with another --run-name") from e
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or not isinstance(record.get("teacher"), dict) \
            or record.get("format", RUN_FORMAT) != RUN_FORMAT:
        raise PolicyKDError(f"{path} is not a policykd run record; nothing was changed. Drop --resume or choose another --run-name")
    return record


def same_label_scale(saved: dict[str, Any], teacher_identity: dict[str, Any]) -> bool:
    """Whether labels recorded with teacher record `saved` are at the scale this teacher labels now: an argmax teacher
    labelled with its raw outputs before policykd divided them by its logit scale (teachers.argmax_logit_scale)."""
    return ("logit_scale" in saved) == ("logit_scale" in teacher_identity)


def check_label_scale(where: Path, saved: dict[str, Any], teacher_identity: dict[str, Any], *, fix: str) -> None:
    """Refuse to add labels to rows labelled at another scale (same_label_scale): the labels would mix two scales."""
    if not same_label_scale(saved, teacher_identity):
        raise PolicyKDError(f"{where} was labelled with this teacher's raw outputs (before policykd scaled an argmax "
                            f"teacher's logits); its labels would mix two scales, so {fix}")


def check_same_teacher(run_dir: Path, record: dict[str, Any], teacher_identity: dict[str, Any]) -> None:
    """Refuse to resume with a teacher file or env other than the one the run was started with."""
    saved = record["teacher"]
    if saved.get("sha256") != teacher_identity["sha256"]:
        raise PolicyKDError(f"the teacher {teacher_identity['path']} is not the file {run_dir} was started with "
                            f"(sha256 {str(saved.get('sha256'))[:12]}..., now {teacher_identity['sha256'][:12]}...); "
                            "resume with the original teacher or start a new run")
    check_label_scale(run_dir, saved, teacher_identity, fix="start a new run")
    saved_env = (saved.get("env") or {}).get("env_id")
    if saved_env != teacher_identity["env"]["env_id"]:
        raise PolicyKDError(f"{run_dir} was started on {saved_env}, not {teacher_identity['env']['env_id']}; "
                            "resume with the same --env or start a new run")


_HELD: dict[Path, tuple[IO[str], int]] = {}  # locks this process holds: path -> (open file, depth)


class RunLock:
    """An exclusive, non-blocking lock on a run folder, reentrant within one process (the pipeline holds it
    around distillation and evaluation; distill() takes it again inside)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = (run_dir / LOCK_FILE).resolve()

    def acquire(self) -> RunLock:
        if self.path in _HELD:
            handle, depth = _HELD[self.path]
            _HELD[self.path] = (handle, depth + 1)
            return self
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            handle.close()
            raise PolicyKDError(f"another policykd process is working in {self.path.parent}; wait for it to finish "
                                "(or stop it), then run the command again") from e
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD[self.path] = (handle, 1)
        return self

    def release(self) -> None:
        if self.path not in _HELD:
            return
        handle, depth = _HELD[self.path]
        if depth > 1:
            _HELD[self.path] = (handle, depth - 1)
            return
        del _HELD[self.path]
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_in_progress(run_dir: Path) -> bool:
    """Whether another process holds run_dir's RunLock now (reads the lock without creating or changing a file)."""
    path = run_dir / LOCK_FILE
    if not path.is_file():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False
