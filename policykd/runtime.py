"""Torch-free inference for a saved student: numpy only (plus the safetensors reader), for the robot's computer.

    policy = policykd.runtime.load("runs/NAME/student")
    env = policykd.runtime.make_env("runs/NAME/student")   # the env as the teacher was trained (wrappers included)
    action = policy(obs)            # obs [obs_dim] -> action [A] (or an int for discrete actions)
    actions = policy.batch(obs)     # obs [B, obs_dim] -> actions [B, A] (policy.act is the same, as Student.act)
    policy.reset()                  # a recurrent student (card spec "gru"): zero its state at every episode start

The computation is the student's deterministic action: normalise and clip the raw observation, (for a CNN student
the convolutions of its image, see student_format), the MLP trunk, the action head, then the family's output
mapping (clip to bounds; tanh then scale; or argmax).

Loading checks the card against the weights (policykd/student_format.py: names, shapes, finite values) and raises
PolicyKDError in one line. Observations are checked on every call: a wrong shape (a scalar, another length, a batch
given to policy(obs)) is never broadcast, and NaN/inf entries are refused; both raise errors.InvalidObservation
(a PolicyKDError and a ValueError). The C export returns -1 for NaN/inf entries, which CPolicy raises as well.
This module must not import torch (a test checks it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policykd import student_format as fmt
from policykd.artifacts import atomic_write_json, sha256_file
from policykd.distributions import family_strategy
from policykd.errors import InvalidObservation, PolicyKDError

_BATCH_HINT = " (a batch: use policy.batch(obs))"


class NumpyPolicy:
    """A student's deterministic policy as float32 numpy arrays.

    The single-observation path keeps preallocated buffers and [W | b] matrices (each layer is one matrix-vector
    product into a buffer whose last entry is 1), so a call is about ten numpy operations and allocates only
    the returned action. It is therefore not reentrant: use one instance per control loop (thread).
    """

    def __init__(self, card: dict, weights: dict[str, np.ndarray]) -> None:
        fmt.validate_card(card, None)
        spec = card["spec"]
        fmt.validate_weights(spec, weights)
        self.card = card
        self.family: str = spec["family"]
        self.strategy = family_strategy(self.family)
        self.obs_dim: int = spec["obs_dim"]
        self._obs_shape = (self.obs_dim,)
        self._activation = fmt.ACTIVATIONS[spec["activation"]]
        f32 = lambda name: np.ascontiguousarray(weights[name], dtype=np.float32)  # noqa: E731
        self.obs_mean, self.obs_std, self.obs_clip = f32(fmt.OBS_MEAN), f32(fmt.OBS_STD), fmt.effective_clip(weights[fmt.OBS_CLIP])
        self.low, self.high = f32(fmt.ACTION_LOW), f32(fmt.ACTION_HIGH)
        *self.layers, self.head = [(f32(w), f32(b)) for w, b in fmt.layer_names(spec)]
        self._inv_std = (1.0 / self.obs_std).astype(np.float32)
        self._augmented = [np.ascontiguousarray(np.hstack([w, b[:, None]]), dtype=np.float32) for w, b in [*self.layers, self.head]]
        self._buffers = [np.ones(self.obs_dim + 1, dtype=np.float32)] + [np.ones(w.shape[0] + 1, dtype=np.float32) for w, _ in self.layers]
        self._head_out = np.empty(self.head[0].shape[0], dtype=np.float32)
        self._one_action = self.strategy.numpy_one_action(self.low, self.high)
        self._gru = [f32(name) for name in fmt.GRU_WEIGHTS] if fmt.recurrent_size(spec) else None  # W_ih, W_hh, b_ih, b_hh
        self._state: np.ndarray | None = None  # a recurrent student's state [B, G]: zeros after reset()
        self._conv = spec.get("conv")
        self._convs = [(f32(fmt.encoder_weight_name(i)), f32(fmt.encoder_bias_name(i)), stride)
                       for i, (_, _, stride) in enumerate(self._conv["layers"])] if self._conv else []

    def _encode(self, z: np.ndarray) -> np.ndarray:
        """Normalised obs [B, obs_dim] -> the trunk's input [B, in_0]: z itself, or for a CNN student its image's
        convolution features, flattened channel-first, followed by its vector entries."""
        if not self._conv:
            return z
        height, width, channels = self._conv["image_shape"]
        pixels = height * width * channels
        x = z[:, :pixels].reshape(len(z), height, width, channels)  # [B, H, W, C]
        for weight, bias, stride in self._convs:  # weight [O, C, k, k]
            kernel = weight.shape[-1]
            windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
            x = self._activation(np.tensordot(windows, weight, axes=([3, 4, 5], [1, 2, 3])) + bias)  # [B, h, w, O]
        return np.concatenate([x.transpose(0, 3, 1, 2).reshape(len(z), -1), z[:, pixels:]], axis=1)

    def __call__(self, obs: np.ndarray) -> np.ndarray | int:
        """obs [obs_dim] -> env action [A] (float32), or the action index for discrete actions.

        Raises errors.InvalidObservation for any other shape (never broadcast), non-numbers and NaN/inf entries."""
        if type(obs) is not np.ndarray or obs.shape != self._obs_shape:
            obs = fmt.check_observation(obs, self.obs_dim, batch_hint=_BATCH_HINT)
        if self._conv or self._gru:  # the convolutions dominate, or a recurrent state: the batch path, on a batch of one
            action = self.batch(obs[None])[0]
            return int(action) if self.strategy.discrete else action
        x = self._buffers[0]
        body = x[:-1]
        try:
            np.subtract(obs, self.obs_mean, out=body, dtype=np.float32)  # float32 first, as Student.act and batch
        except TypeError as e:  # strings, objects, complex numbers
            raise InvalidObservation(f"observation must be an array of numbers, got dtype {obs.dtype}") from e
        if not math.isfinite(np.add.reduce(body)):  # NaN/inf entries, or (harmless) float32 overflow of the sum
            fmt.check_observation(obs, self.obs_dim)  # raises for NaN/inf entries
        np.multiply(body, self._inv_std, out=body)
        np.minimum(body, self.obs_clip, out=body)  # two ufuncs: np.clip's Python wrapper costs more than both
        np.maximum(body, -self.obs_clip, out=body)
        for matrix, out in zip(self._augmented, self._buffers[1:]):
            hidden = out[:-1]
            np.dot(matrix, x, out=hidden)
            self._activation(hidden)  # in place
            x = out
        head = self._head_out
        np.dot(self._augmented[-1], x, out=head)
        return self._one_action(head)

    def batch(self, obs: np.ndarray) -> np.ndarray:
        """obs [B, obs_dim] -> env actions float32 [B, A] (or int64 [B] indices); checked as __call__."""
        obs = fmt.check_observations(obs, self.obs_dim)
        x = self._encode(np.clip((obs - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip))
        for weight, bias in self.layers:
            x = self._activation(x @ weight.T + bias)
        if self._gru is not None:
            x = self._recurrent_step(x)
        return self.strategy.numpy_env_action(x @ self.head[0].T + self.head[1], self.low, self.high)

    def _recurrent_step(self, x: np.ndarray) -> np.ndarray:
        """The GRU cell on the last hidden layer's output x [B, hidden[-1]]: updates and returns the state [B, G]
        (see student_format; sigmoid(v) computed as (1 + tanh(v / 2)) / 2, which never overflows)."""
        w_ih, w_hh, b_ih, b_hh = self._gru
        size = w_hh.shape[1]
        if self._state is None:
            self._state = np.zeros((len(x), size), dtype=np.float32)
        elif len(self._state) != len(x):
            raise InvalidObservation(f"this recurrent policy's state holds {len(self._state)} episodes, the batch has {len(x)}; "
                                     "call reset() at the start of every episode (batch)")
        h = self._state
        gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        r = 0.5 * (1.0 + np.tanh(0.5 * (gi[:, :size] + gh[:, :size])))
        z = 0.5 * (1.0 + np.tanh(0.5 * (gi[:, size:2 * size] + gh[:, size:2 * size])))
        n = np.tanh(gi[:, 2 * size:] + r * gh[:, 2 * size:])
        self._state = ((1.0 - z) * n + z * h).astype(np.float32)
        return self._state

    def reset(self) -> None:
        """Start a new episode: a recurrent policy's state back to zeros (no-op for a feed-forward one)."""
        self._state = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The same as batch (and as Student.act): obs [B, obs_dim] -> env actions [B, A] (int64 [B] if discrete)."""
        return self.batch(obs)

    def make_env(self, render_mode: str | None = None, *, max_episode_steps: int | None = None):
        """The env this student acts in, rebuilt from its card (see make_env)."""
        return make_env(self.card, render_mode=render_mode, max_episode_steps=max_episode_steps)


def load(directory: str | Path) -> NumpyPolicy:
    """Load a student folder (student.json + student.safetensors) without torch and without unpickling; the card is
    checked against the weights exactly as students.load_student does (student_format.read_student)."""
    card, weights = fmt.read_student(directory)
    return NumpyPolicy(card, weights)


def make_env(student: str | Path | Mapping[str, Any], render_mode: str | None = None, *,
             max_episode_steps: int | None = None):
    """The gymnasium env a student acts in, from its card's teacher env record: the env id, kwargs and wrappers
    (e.g. TimeFeatureWrapper) as the teacher was trained, and, for a student of a sensor-only view (the card's
    student_view), that view as the observation. student: a student folder, its student.json, or a card.

    Does not import torch (unless a wrapper does). Raises PolicyKDError in one line when the card has no env record
    or the env's observations do not have the student's shape [obs_dim]."""
    if isinstance(student, Mapping):
        card, source = student, "the student's card"
        fmt.validate_card(card, None)
    else:
        card = fmt.read_card(student)
        source = str(Path(student) / fmt.CARD_FILE if Path(student).is_dir() else student)
    record = fmt.env_record(card, source)
    from policykd.env_factory import EnvSpec  # gymnasium only

    try:
        spec = EnvSpec.from_json(record)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise PolicyKDError(f"{source}: the teacher env record {record} is malformed ({type(e).__name__}: {e})") from e
    view = fmt.view_name(card, source, resolving=True)
    env = spec.make(render_mode=render_mode, max_episode_steps=max_episode_steps)
    if view:  # a sensor-only student: its observations are its view of the env (policykd.views)
        from policykd.views import StudentViewObservation

        env = StudentViewObservation(env, view)
    shape, obs_dim = getattr(env.observation_space, "shape", None), card["spec"]["obs_dim"]
    if shape is None or tuple(shape) != (obs_dim,):
        env.close()
        raise PolicyKDError(f"{spec.env_id} with wrappers {[w.path for w in spec.wrappers]} gives observations of shape "
                            f"{shape}, the student takes ({obs_dim},); the card's env record does not match the student")
    return env


class CPolicy:
    """The C99 export (policykd export --format c), compiled to a shared library and called through ctypes.

    Observations are checked as NumpyPolicy checks them; NaN/inf entries are refused by the C code itself
    (policykd_act returns -1), raised here as errors.InvalidObservation. checks_finite=False (an export from
    before that check) makes the check here instead."""

    ERROR_NON_FINITE_OBS = -1

    def __init__(self, library: str | Path, obs_dim: int, action_dim: int, family: str, *, checks_finite: bool = True) -> None:
        import ctypes

        self._lib = ctypes.CDLL(str(library))
        self._fn = self._lib.policykd_act
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.obs_dim, self.family, self.checks_finite = obs_dim, family, checks_finite
        self.discrete = family_strategy(family).discrete
        self._obs_shape = (obs_dim,)
        self._obs = np.zeros(obs_dim, dtype=np.float32)
        self._action = np.zeros(1 if self.discrete else action_dim, dtype=np.float32)
        self._obs_ptr, self._action_ptr = self._obs.ctypes.data, self._action.ctypes.data
        self._reset = getattr(self._lib, "policykd_reset", None)  # recurrent exports only

    def reset(self) -> None:
        """Start a new episode: the C export's recurrent state back to zeros (policykd_reset; no-op without one)."""
        if self._reset is not None:
            self._reset()

    def __call__(self, obs: np.ndarray) -> np.ndarray | int:
        """obs [obs_dim] -> env action [A] (a copy), or the action index for discrete actions.

        Raises errors.InvalidObservation for any other shape (never broadcast), non-numbers and NaN/inf entries."""
        if type(obs) is not np.ndarray or obs.shape != self._obs_shape or obs.dtype.kind not in "fiub":
            obs = fmt.check_observation(obs, self.obs_dim, batch_hint=" (one observation per call)", finite=False)
        try:
            self._obs[:] = obs
        except (TypeError, ValueError) as e:
            raise InvalidObservation(f"observation must be an array of numbers, got dtype {obs.dtype}") from e
        if not self.checks_finite and not math.isfinite(np.add.reduce(self._obs, dtype=np.float64)):
            raise fmt.non_finite_error(self._obs)
        code = self._fn(self._obs_ptr, self._action_ptr)
        if code < 0:
            fmt.check_observation(obs, self.obs_dim)  # float64 beyond float32's range: refused as the other runtimes do
            if code == self.ERROR_NON_FINITE_OBS and not np.isfinite(self._obs).all():
                raise fmt.non_finite_error(self._obs)
            raise InvalidObservation(f"the C policy refused the observation (policykd_act returned {code})")
        return code if self.discrete else self._action.copy()


BUILD_RECORD = "libpolicykd_student.build.json"


def compile_c_export(export_dir: str | Path, *, compiler: str = "cc") -> Path:
    """Build libpolicykd_student-SHA.so from policykd_student.c in export_dir (C99, -O2, warnings are errors; SHA:
    the source's sha256, so a process that loaded an earlier build never gets it back for a new source, as dlopen
    would for the same path) and record both sha256 in libpolicykd_student.build.json. The previous build recorded
    there is removed."""
    import os
    import subprocess
    import tempfile

    export_dir = Path(export_dir)
    source = export_dir / "policykd_student.c"
    if not source.exists():
        raise PolicyKDError(f"{export_dir} holds no policykd_student.c; run `policykd export STUDENT --format c` first")
    source_sha256 = sha256_file(source)
    library = export_dir / f"libpolicykd_student-{source_sha256[:16]}.so"
    previous = _build_record(export_dir).get("library")
    try:
        fd, partial = tempfile.mkstemp(prefix=".libpolicykd_student-", suffix=".so", dir=export_dir)
    except OSError as e:  # a read-only file system on the robot: the library is built beside the source
        raise PolicyKDError(f"cannot build the C library in {export_dir} ({e.strerror}); load the export once where the folder "
                            "is writable (that build is kept and reused), or copy the export to a writable folder") from e
    os.close(fd)
    command = [compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", partial, str(source), "-lm"]
    try:
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:
            raise PolicyKDError(f"compiling {source} failed: `{compiler}` not found on PATH; install a C compiler as cc (gcc or clang)") from None
        if result.returncode != 0:
            raise PolicyKDError(f"compiling {source} failed: {result.stderr.strip().splitlines()[0] if result.stderr else result.returncode}")
        os.replace(partial, library)  # a new file: a process that has the old one loaded keeps it intact
    finally:
        Path(partial).unlink(missing_ok=True)
    atomic_write_json(export_dir / BUILD_RECORD, {"library": library.name, "source_sha256": source_sha256,
                                                  "library_sha256": sha256_file(library), "compiler": compiler})
    if isinstance(previous, str) and previous != library.name and previous.startswith("libpolicykd_student-"):
        (export_dir / Path(previous).name).unlink(missing_ok=True)  # ours, named in our record
    return library


def _build_record(export_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((export_dir / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _built_library(export_dir: Path) -> Path:
    """export_dir's compiled library when its build record vouches for it and for today's policykd_student.c (same
    sha256 as when it was built), else a fresh build: a library from another source is never called."""
    record = _build_record(export_dir)
    library = export_dir / Path(str(record.get("library", ""))).name
    if (library.name.startswith("libpolicykd_student-") and library.is_file()
            and record.get("source_sha256") == sha256_file(export_dir / "policykd_student.c")
            and record.get("library_sha256") == sha256_file(library)):
        return library
    return compile_c_export(export_dir)


def _check_exported_from(student_dir: Path, export_dir: Path, header: Path) -> None:
    """Refuse an export whose record (export-FORMAT.json, written by `policykd export`) says it was made from other
    weights than student_dir's: same dimensions, another policy; and one that no intact record vouches for (no record, a
    corrupt one, or none whose header sha256 matches: the C source could be anything)."""
    header_digest = sha256_file(header)
    for record_path in sorted(export_dir.glob("export-*.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or (record.get("files") or {}).get(header.name) != header_digest:
            continue
        source = export_dir / "policykd_student.c"
        if record["files"].get(source.name) not in (None, sha256_file(source)):
            raise PolicyKDError(f"{source} is not the one `policykd export` wrote with {header.name} (its sha256 differs from "
                                f"{record_path.name}: edited, or from another export); re-export: policykd export {student_dir} "
                                f"--format {record.get('format', 'c')} --out {export_dir}")
        if record.get("student_sha256") != sha256_file(student_dir / fmt.WEIGHTS_FILE):
            raise PolicyKDError(f"{export_dir} was exported from {record.get('student')}, not from the student in {student_dir} "
                                f"(other weights, per {record_path.name}); re-export: policykd export {student_dir} --format "
                                f"{record.get('format', 'c')} --out {export_dir}")
        return
    raise PolicyKDError(f"{export_dir} has no intact export record (export-FORMAT.json, written by `policykd export`) for its "
                        f"{header.name}: missing, corrupt, or the header was edited, so nothing vouches for the C source it "
                        f"would compile and run; re-export: policykd export {student_dir} --format c --out {export_dir}")


def load_c(student_dir: str | Path, export_dir: str | Path) -> CPolicy:
    """The compiled C export of the student in student_dir (compiled on first use); the export's dimensions are
    checked against the student's card, and its export record (when there is one) against the student's weights."""
    export_dir = Path(export_dir)
    spec = fmt.read_card(student_dir)["spec"]
    header, source = export_dir / "policykd_student.h", export_dir / "policykd_student.c"
    if not header.exists() or not source.exists():
        raise PolicyKDError(f"{export_dir} holds no policykd_student.h/.c; run `policykd export STUDENT --format c` first")
    text = header.read_text()
    dims = {k: int(v) for k, v in re.findall(r"#define (POLICYKD_OBS_DIM|POLICYKD_ACTION_DIM) (\d+)", text)}
    expected = {"POLICYKD_OBS_DIM": spec["obs_dim"], "POLICYKD_ACTION_DIM": 1 if family_strategy(spec["family"]).discrete else spec["action_dim"]}
    if dims != expected:
        raise PolicyKDError(f"{header} has {dims}, but the student in {student_dir} needs {expected}; re-export it")
    _check_exported_from(Path(student_dir), export_dir, header)
    return CPolicy(_built_library(export_dir), spec["obs_dim"], spec["action_dim"], spec["family"],
                   checks_finite="POLICYKD_ERR_NON_FINITE_OBS" in text)
