"""On-disk buffer of visited states with the teacher's labels: a self-describing directory.

Layout (readable with numpy alone, no policykd needed)::

    BUFFER/metadata.json          format version, spaces, family, teacher identity + hash, normaliser,
                                  fields, and the list of committed chunks {file, rows, sha256}
    BUFFER/chunk_000000.npz       np.savez arrays, all with the same first dimension n (rows):
        obs          float32 [n, obs_dim]   raw env observation (before normalisation)
        dist_<name>  float32 [n, ...]       teacher distribution parameters (see distributions.PARAM_NAMES)
        value        float32 [n]            teacher value of obs
        reward       float32 [n]            reward of the step taken from obs
        terminated   bool    [n]            that step ended the episode (terminal state)
        truncated    bool    [n]            that step hit the time limit
        episode_id   int64   [n]            unique per episode within the buffer
        actor        int8    [n]            who acted from obs: 0 = teacher, 1 = student
        round        int32   [n]            collection round (DAgger iteration)
    and, in buffers written by policykd collect / distill since 0.x (TRANSITION_FIELDS, listed in "fields"):
        action       float32 [n, A] or [n]  the env action taken from obs (the index for discrete actions)
        next_obs     float32 [n, obs_dim]   the observation that step led to (the terminal one at episode ends)
    and, when the student sees another view of the env than the teacher (policykd.views; metadata
    "student_view" and "student_observation_space"):
        student_obs  float32 [n, ...]       what the student saw at obs

Appends write the chunk under a temporary name, fsync, rename, then rewrite metadata.json the same way.
A chunk is part of the buffer only once metadata.json lists it; on load every listed chunk's sha256
is checked, so a torn or modified file is reported, never silently used.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions, sha256_bytes, sha256_file
from policykd.distributions import PARAM_NAMES
from policykd.errors import PolicyKDError
from policykd.run_dir import LOCK_FILE

FORMAT = "policykd-buffer"
_CHUNK_NAME = re.compile(r"chunk_[0-9]{6,}\.npz")
FORMAT_VERSION = 1
BASE_FIELDS = ("obs", "value", "reward", "terminated", "truncated", "episode_id", "actor", "round")
TRANSITION_FIELDS = ("action", "next_obs")  # full transitions, so a buffer exports as a dataset (policykd.minari_io)
FIELD_DTYPES = {
    "obs": np.float32, "value": np.float32, "reward": np.float32, "terminated": np.bool_, "truncated": np.bool_,
    "episode_id": np.int64, "actor": np.int8, "round": np.int32,
}


def space_to_json(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": np.asarray(space.low).tolist(), "high": np.asarray(space.high).tolist()}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise PolicyKDError(f"space {space} cannot be stored; policykd handles Box and Discrete spaces")


def _metadata_problem(metadata: dict[str, Any]) -> str | None:
    """What is wrong with the chunks, family or fields of a buffer's metadata.json, or None."""
    chunks, family, fields = metadata.get("chunks"), metadata.get("family"), metadata.get("fields")
    if not isinstance(chunks, list) or not all(
            isinstance(c, dict) and isinstance(c.get("file"), str) and isinstance(c.get("sha256"), str)
            and type(c.get("rows")) is int and c["rows"] > 0 for c in chunks):
        return "chunks must be a list of {file, rows, sha256}"
    if not isinstance(family, str) or family not in PARAM_NAMES:
        return f"unknown family {str(family)[:40]!r}"
    needed = [*BASE_FIELDS, *(f"dist_{n}" for n in PARAM_NAMES[family])]
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields) or not set(needed) <= set(fields):
        return f"fields must list {', '.join(needed)}"
    for key in ("teacher", "config"):
        if not isinstance(metadata.get(key), dict):
            return f"{key} must be a mapping"
    if "normalizer" not in metadata or not isinstance(metadata["normalizer"], (dict, type(None))):
        return "normalizer must be a mapping or null"
    for key in ("observation_space", "action_space"):
        problem = _space_problem(metadata.get(key))
        if problem:
            return f"{key} {problem}"
    return None


def _space_problem(record: Any) -> str | None:
    """What is wrong with a space record ({type: Discrete, n} or {type: Box, low, high, dtype}), or None."""
    if not isinstance(record, dict) or record.get("type") not in ("Discrete", "Box"):
        return "must be a Discrete {n} or a Box {low, high, dtype}"
    if record["type"] == "Discrete":
        return None if type(record.get("n")) is int and record["n"] > 0 else "must have a positive whole n"
    try:
        low, high = np.asarray(record["low"], dtype=np.float64), np.asarray(record["high"], dtype=np.float64)
        np.dtype(record["dtype"])
    except (KeyError, TypeError, ValueError):
        return "must have numeric low and high and a numpy dtype"
    return None if low.shape == high.shape else "must have low and high of one shape"


# Float fields in the order a NaN spreads (a bad observation makes bad labels), each with what it is and what to check.
_FINITE_FIELDS = {
    "obs": ("an observation the env returned", "check the env and its wrappers"),
    "next_obs": ("an observation the env returned", "check the env and its wrappers"),
    "student_obs": ("an observation of the student view", "check the view and the env"),
    "reward": ("a reward the env returned", "check the env"),
    "action": ("an action the acting policy took", "check the student or teacher that acted"),
    "value": ("the teacher's value of a finite observation", "check the teacher's weights and observation normaliser"),
}


def _check_finite(arrays: dict[str, np.ndarray], fields: tuple[str, ...], env_id: str | None) -> None:
    """One-line PolicyKDError for the first float field of a chunk holding NaN or inf (obs [n, ...] ... dist_* [n, ...]):
    a buffer holds only finite rows, so no student trains on NaN. env_id names the env in the message."""
    for name in [*_FINITE_FIELDS, *(f for f in fields if f.startswith("dist_"))]:
        if name not in fields:
            continue
        values = np.asarray(arrays[name], dtype=np.float64).reshape(len(arrays[name]), -1)
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            what, fix = _FINITE_FIELDS.get(name, ("the teacher's action distribution on a finite observation",
                                                  "check the teacher's weights and observation normaliser"))
            episode = f", episode {int(arrays['episode_id'][row])}" if "episode_id" in arrays else ""
            where = f" on {env_id}" if env_id else ""
            raise PolicyKDError(f"{what}{where} is NaN or inf ({name}, row {row}{episode}, {int(bad.sum())} rows in all); {fix}; "
                                "nothing of it was written to the buffer")


def _floats(space: gym.Space | None) -> int:
    """Values per row a field of `space` takes (an index for Discrete), 0 for no space."""
    if space is None:
        return 0
    return 1 if isinstance(space, gym.spaces.Discrete) else int(np.prod(space.shape or (1,)))


def row_bytes(observation_space: gym.Space, action_space: gym.Space, family: str, *, transitions: bool,
              student_observation_space: gym.Space | None = None) -> int:
    """Bytes one buffer row takes on disk and in memory (chunks are uncompressed npz), from the spaces and family."""
    scalars = sum(np.dtype(t).itemsize for f, t in FIELD_DTYPES.items() if f != "obs")  # obs is counted with the floats
    action_values = int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else _floats(action_space)
    floats = (_floats(observation_space) + len(PARAM_NAMES[family]) * action_values + _floats(student_observation_space)
              + (_floats(action_space) + _floats(observation_space) if transitions else 0))
    return scalars + 4 * floats


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:,.0f} {unit}" if unit == "bytes" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def check_room(folder: Path, rows: int, bytes_per_row: int, *, held_in_memory: bool, what: str) -> None:
    """Refuse, before anything is collected, `rows` buffer rows that cannot fit: on the disk holding `folder`, or
    (held_in_memory: distillation trains on the whole buffer at once) in this machine's memory (check_memory). `what`
    names the setting to lower."""
    need = rows * bytes_per_row
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    usage = shutil.disk_usage(existing)
    free = usage.free
    if usage.total > 0 and need > free:  # total 0: a pseudo filesystem (/proc) that reports no sizes; mkdir will say
        raise PolicyKDError(f"{what} {rows:,} needs about {_size(need)} of buffer on disk, more than the {_size(free)} free "
                            f"under {existing}; lower it, or write to a larger disk")
    if held_in_memory:
        check_memory(need, rows=rows, what=what)


def check_memory(data_bytes: int, *, rows: int, what: str) -> None:
    """Refuse training data of data_bytes that this machine's memory cannot hold about twice over (the data and its
    train/validation split)."""
    if not hasattr(os, "sysconf"):
        return
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 2 * data_bytes > memory:
        raise PolicyKDError(f"{what} {rows:,} needs about {_size(2 * data_bytes)} of memory to train on (the whole buffer is "
                            f"held in memory), more than this machine's {_size(memory)}; lower it")


class Buffer:
    """A directory of committed chunks plus metadata; use `Buffer.create` or `Buffer.open`."""

    def __init__(self, root: Path, metadata: dict[str, Any]) -> None:
        self.root = root
        self.metadata = metadata

    @property
    def family(self) -> str:
        return self.metadata["family"]

    @property
    def rows(self) -> int:
        return sum(c["rows"] for c in self.metadata["chunks"])

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.metadata["fields"])

    @staticmethod
    def check_creatable(root: Path) -> None:
        """A new buffer may go in `root`: absent, or a folder holding nothing but chunk files (chunk_NNNNNN.npz, an
        interrupted collection's) and our lock file; a user's own .npz files make it a foreign folder."""
        if (root / "metadata.json").exists():
            raise PolicyKDError(f"{root} already holds a buffer; continue it with --resume or choose a new --out")
        if root.exists() and (not root.is_dir() or any(not (_CHUNK_NAME.fullmatch(p.name) or p.name == LOCK_FILE) for p in root.iterdir())):
            raise PolicyKDError(f"{root} exists and is not an empty folder; choose a new --out for the buffer")

    @classmethod
    def create(cls, root: str | Path, *, observation_space: gym.Space, action_space: gym.Space, family: str,
               teacher: dict[str, Any], normalizer: dict[str, Any] | None, config: dict[str, Any] | None = None,
               transitions: bool = False, student_view: str = "", student_observation_space: gym.Space | None = None) -> Buffer:
        """A new, empty buffer in `root` (an absent or empty folder). transitions: also store TRANSITION_FIELDS;
        student_view (with its space): also store what the student saw (`student_obs`)."""
        root = Path(root)
        cls.check_creatable(root)
        root.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "observation_space": space_to_json(observation_space),
            "action_space": space_to_json(action_space),
            "family": family,
            "fields": list(BASE_FIELDS) + [f"dist_{n}" for n in PARAM_NAMES[family]] + list(TRANSITION_FIELDS if transitions else ())
                      + (["student_obs"] if student_view else []),
            "teacher": teacher,
            "normalizer": normalizer,
            "config": config or {},
            "versions": package_versions(),
            "chunks": [],
        }
        if student_view:
            metadata["student_view"] = student_view
            metadata["student_observation_space"] = space_to_json(student_observation_space)
        atomic_write_json(root / "metadata.json", metadata)
        return cls(root, metadata)

    @classmethod
    def open(cls, root: str | Path) -> Buffer:
        root = Path(root)
        try:
            metadata = json.loads((root / "metadata.json").read_text())
        except FileNotFoundError as e:
            raise PolicyKDError(f"{root} is not a policykd buffer (no metadata.json); collect one with `policykd collect`") from e
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise PolicyKDError(f"{root}/metadata.json is corrupt ({e.__class__.__name__}); the buffer cannot be trusted, collect it again") from e
        except OSError as e:
            raise PolicyKDError(f"cannot read {root}/metadata.json ({e.__class__.__name__}); check the path and its permissions") from e
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
            found = (metadata.get("format"), metadata.get("format_version")) if isinstance(metadata, dict) else ("?", "?")
            raise PolicyKDError(f"{root} has format {found[0]} v{found[1]}; this policykd reads {FORMAT} v{FORMAT_VERSION}")
        problem = _metadata_problem(metadata)
        if problem:
            raise PolicyKDError(f"{root}/metadata.json is corrupt ({problem}); the buffer cannot be trusted, collect it again")
        listed = {c["file"] for c in metadata["chunks"]}
        if any(Path(name).name != name or not name.startswith("chunk_") for name in listed):
            raise PolicyKDError(f"{root}/metadata.json lists chunk files outside the buffer; the buffer cannot be trusted, collect it again")
        strays = sorted(p.name for p in root.glob("chunk_*.npz") if p.name not in listed)
        if strays:
            warnings.warn(f"{root}: ignoring chunks not committed to metadata.json (interrupted append?): {strays}", stacklevel=2)
        return cls(root, metadata)

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """Commit one chunk atomically. arrays: every field in self.fields, same first dimension."""
        missing = set(self.fields) - set(arrays)
        if missing:
            raise ValueError(f"chunk lacks fields {sorted(missing)}")
        rows = {len(arrays[f]) for f in self.fields}
        if len(rows) != 1:
            raise ValueError(f"chunk fields have different lengths {rows}")
        (n,) = rows
        if n == 0:
            return
        _check_finite(arrays, self.fields, ((self.metadata.get("teacher") or {}).get("env") or {}).get("env_id"))
        payload = io.BytesIO()
        np.savez(payload, **{f: np.ascontiguousarray(arrays[f], dtype=FIELD_DTYPES.get(f, np.float32)) for f in self.fields})
        data = payload.getvalue()
        index = len(self.metadata["chunks"])
        while (self.root / f"chunk_{index:06d}.npz").exists():  # an orphan of an interrupted append: keep it
            index += 1
        name = f"chunk_{index:06d}.npz"
        atomic_write_bytes(self.root / name, data)
        metadata = dict(self.metadata)
        metadata["chunks"] = [*self.metadata["chunks"], {"file": name, "rows": n, "sha256": sha256_bytes(data)}]
        atomic_write_json(self.root / "metadata.json", metadata)
        self.metadata = metadata

    def truncate(self, n_chunks: int) -> None:
        """Keep only the first n_chunks committed chunks (used when resuming from a checkpoint)."""
        dropped = self.metadata["chunks"][n_chunks:]
        if not dropped:
            return
        metadata = dict(self.metadata)
        metadata["chunks"] = self.metadata["chunks"][:n_chunks]
        atomic_write_json(self.root / "metadata.json", metadata)
        self.metadata = metadata
        for chunk in dropped:
            (self.root / chunk["file"]).unlink(missing_ok=True)

    def load(self, *, n_chunks: int | None = None) -> dict[str, np.ndarray]:
        """All committed rows (of the first n_chunks chunks when given), each field concatenated over chunks;
        verifies every chunk's sha256."""
        parts: dict[str, list[np.ndarray]] = {f: [] for f in self.fields}
        chunks = self.metadata["chunks"][:n_chunks] if n_chunks is not None else self.metadata["chunks"]
        for chunk in chunks:
            path = self.root / chunk["file"]
            if not path.exists():
                raise PolicyKDError(f"{path} is listed in metadata.json but missing; the buffer is incomplete, collect it again")
            if sha256_file(path) != chunk["sha256"]:
                raise PolicyKDError(f"{path} does not match its sha256 in metadata.json (torn write or modified file); collect it again")
            try:
                with np.load(path) as data:
                    arrays = {f: data[f] for f in self.fields}
            except Exception as e:  # numpy's zip and .npy header parsing raise many types (BadZipFile, SyntaxError, ...)
                raise PolicyKDError(f"{path} cannot be read ({e.__class__.__name__}); the buffer cannot be trusted, collect it again") from e
            for f, array in arrays.items():
                dtype = np.dtype(FIELD_DTYPES.get(f, np.float32))
                if not isinstance(array, np.ndarray) or array.ndim == 0 or len(array) != chunk["rows"] or array.dtype != dtype:
                    found = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
                    raise PolicyKDError(f"{path}: {f} is {found}, metadata.json says {chunk['rows']} rows of {dtype}; "
                                        f"the buffer cannot be trusted, collect it again")
                parts[f].append(array)
        if not chunks:
            raise PolicyKDError(f"{self.root} holds no committed rows yet; collect some first")
        try:
            return {f: np.concatenate(v) for f, v in parts.items()}
        except ValueError as e:
            raise PolicyKDError(f"{self.root}: chunks disagree on the shape of a field ({e}); the buffer cannot be trusted, collect it again") from e
