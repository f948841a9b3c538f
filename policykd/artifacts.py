"""Atomic file writes, content hashes and provenance (package versions) for every artefact."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)
TRACKED_PACKAGES = ("policykd", "torch", "numpy", "gymnasium", "stable-baselines3", "sb3-contrib", "pybullet")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    A symbolic link stays a link: the file it names is replaced. An existing path that is not a regular file (a
    device, a pipe: --json /dev/stdout) is written through, never replaced."""
    path = Path(path)
    if path.is_dir():  # os.replace would name the temporary file in its error
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if path.exists() and not path.is_file():
        with open(path, "wb") as f:
            f.write(data)
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


WRITTEN_BY = "written_by"      # the key that marks a JSON file as an output policykd wrote (so a later run may replace it)
IMAGE_MARK = "policykd"        # what policykd.plots.save writes into an image's metadata, for the same reason


def write_output_json(path: str | os.PathLike, record: dict[str, Any], command: str) -> None:
    """Write an output record (a --json file, a run's eval.json) with its mark, {"written_by": "policykd COMMAND"}, and
    the package versions it was measured with. A value that is not defined (a ratio of returns of opposite signs, the
    interval of one episode: NaN) is written as null, so the file is strict JSON that every parser reads."""
    record = {WRITTEN_BY: f"policykd {command}", **record, "versions": record.get("versions") or package_versions()}
    text = json.dumps(json.loads(json.dumps(record, default=_json_default), parse_constant=lambda _: None), indent=2,
                      allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def check_replaceable_output(path: str | os.PathLike, kind: str) -> None:
    """Refuse, before any work, to replace an existing file that is not an output policykd wrote: kind "json" (a record
    with WRITTEN_BY) or "image" (a figure with IMAGE_MARK in its metadata). A student card, weights, a checkpoint or the
    user's own figure given as an output path stays as it is."""
    from policykd.errors import PolicyKDError

    path = Path(path)
    if not path.is_file():
        return
    if kind == "json":
        try:
            record = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            record = None
        ours = isinstance(record, dict) and str(record.get(WRITTEN_BY, "")).startswith("policykd")
    else:
        ours = IMAGE_MARK.encode() in path.read_bytes()
    if not ours:
        raise PolicyKDError(f"{path} exists and is not {'a record' if kind == 'json' else 'a figure'} policykd wrote (or one "
                            "written before policykd marked its outputs); give another path or move it away (nothing was written)")


def read_json(path: str | os.PathLike, *, fix: str) -> Any:
    """The JSON document at `path`, or a one-line PolicyKDError naming the file and `fix` (what to do)."""
    from policykd.errors import PolicyKDError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise PolicyKDError(f"{path} does not exist; {fix}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise PolicyKDError(f"{path} is corrupt ({e.__class__.__name__}); {fix}") from e


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine an artefact's behaviour, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
