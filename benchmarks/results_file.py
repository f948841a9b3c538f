"""A benchmark's results JSON ({"teachers": {...}, "runs": [...]}) that several benchmark processes can append to:
each change re-reads the file under an exclusive lock (RESULTS.lock beside it) and writes it atomically, so two
processes with different work (e.g. `--losses kl` and `--losses bc`) never drop each other's records."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from policykd.artifacts import atomic_write_json


@contextmanager
def _locked(path: Path) -> Iterator[dict]:
    """The file's current content (or an empty one), written back atomically on exit, under an exclusive lock."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {"teachers": {}, "runs": []}
        yield results
        atomic_write_json(path, results)


def read(path: Path) -> dict:
    """The results as they are now (an empty document when the file does not exist yet)."""
    return json.loads(path.read_text()) if path.exists() else {"teachers": {}, "runs": []}


def set_teacher(path: Path, name: str, entry: dict) -> None:
    with _locked(path) as results:
        results["teachers"][name] = entry


def append_run(path: Path, record: dict) -> None:
    with _locked(path) as results:
        results["runs"].append(record)
