"""Torch-free inference for a saved student: numpy only (plus the safetensors reader), for the robot's computer.

    policy = policykd.runtime.load("runs/NAME/student")
    action = policy(obs)            # obs [obs_dim] -> action [A] (or an int for discrete actions)
    actions = policy.batch(obs)     # obs [B, obs_dim] -> actions [B, A]

The computation is the student's deterministic action: normalise and clip the raw observation, the MLP trunk,
the action head, then the family's output mapping (clip to bounds; tanh then scale; or argmax).
This module must not import torch (a test checks it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from policykd.errors import PolicyKDError

_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "tanh": lambda x: np.tanh(x, out=x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))).astype(np.float32),
}


class NumpyPolicy:
    """A student's deterministic policy as float32 numpy arrays.

    The single-observation path keeps preallocated buffers and [W | b] matrices (each layer is one matrix-vector
    product into a buffer whose last entry is 1), so a call is about ten numpy operations and allocates only
    the returned action. It is therefore not reentrant: use one instance per control loop (thread).
    """

    def __init__(self, card: dict, weights: dict[str, np.ndarray]) -> None:
        spec = card["spec"]
        self.card = card
        self.family: str = spec["family"]
        self.obs_dim: int = spec["obs_dim"]
        self._activation = _ACTIVATIONS[spec["activation"]]
        f32 = lambda name: np.ascontiguousarray(weights[name], dtype=np.float32)  # noqa: E731
        self.obs_mean, self.obs_std, self.obs_clip = f32("obs_mean"), f32("obs_std"), float(weights["obs_clip"])
        self.low, self.high = f32("action_low"), f32("action_high")
        self.layers = [(f32(f"trunk.{2 * i}.weight"), f32(f"trunk.{2 * i}.bias")) for i in range(len(spec["hidden"]))]
        self.head = (f32("action_head.weight"), f32("action_head.bias"))
        self._inv_std = (1.0 / self.obs_std).astype(np.float32)
        self._augmented = [np.ascontiguousarray(np.hstack([w, b[:, None]]), dtype=np.float32) for w, b in [*self.layers, self.head]]
        self._buffers = [np.ones(self.obs_dim + 1, dtype=np.float32)] + [np.ones(w.shape[0] + 1, dtype=np.float32) for w, _ in self.layers]
        self._head_out = np.empty(self.head[0].shape[0], dtype=np.float32)
        self._in_place = spec["activation"] in ("relu", "tanh")
        self._half_range = (0.5 * (self.high - self.low)).astype(np.float32)
        self._mid = (self.low + self._half_range).astype(np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray | int:
        """obs [obs_dim] -> env action [A] (float32), or the action index for discrete actions."""
        x = self._buffers[0]
        body = x[:-1]
        try:
            np.subtract(obs, self.obs_mean, out=body)
        except ValueError as e:
            raise ValueError(f"observation has shape {np.shape(obs)}, this student takes ({self.obs_dim},)") from e
        np.multiply(body, self._inv_std, out=body)
        np.minimum(body, self.obs_clip, out=body)  # two ufuncs: np.clip's Python wrapper costs more than both
        np.maximum(body, -self.obs_clip, out=body)
        for matrix, out in zip(self._augmented, self._buffers[1:]):
            hidden = out[:-1]
            np.dot(matrix, x, out=hidden)
            if self._in_place:
                self._activation(hidden)
            else:
                hidden[:] = self._activation(hidden)
            x = out
        head = self._head_out
        np.dot(self._augmented[-1], x, out=head)
        if self.family == "categorical":
            return int(np.argmax(head))
        if self.family == "gaussian":
            return np.minimum(np.maximum(head, self.low, out=head), self.high)
        np.tanh(head, out=head)  # squashed_gaussian / deterministic: low + (tanh + 1) / 2 * (high - low)
        np.multiply(head, self._half_range, out=head)
        return np.add(head, self._mid)

    def batch(self, obs: np.ndarray) -> np.ndarray:
        """obs [B, obs_dim] -> env actions [B, A] (or [B] indices)."""
        x = np.clip((np.asarray(obs, dtype=np.float32) - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip)
        for weight, bias in self.layers:
            x = self._activation(x @ weight.T + bias)
        return self._output(x @ self.head[0].T + self.head[1])

    def _output(self, out: np.ndarray) -> np.ndarray | int:
        if self.family == "categorical":
            index = np.argmax(out, axis=-1)
            return int(index) if index.ndim == 0 else index
        if self.family == "gaussian":
            return np.minimum(np.maximum(out, self.low), self.high)
        # squashed_gaussian: tanh(mean); deterministic: the student's action is tanh(head) too
        return self.low + 0.5 * (np.tanh(out) + 1.0) * (self.high - self.low)


def load(directory: str | Path) -> NumpyPolicy:
    """Load a student folder (student.json + student.safetensors) without torch and without unpickling."""
    directory = Path(directory)
    card_path, weights_path = directory / "student.json", directory / "student.safetensors"
    if not card_path.exists() or not weights_path.exists():
        raise PolicyKDError(f"{directory} is not a student folder (needs student.json and student.safetensors)")
    card = json.loads(card_path.read_text())
    return NumpyPolicy(card, load_file(str(weights_path)))


class CPolicy:
    """The C99 export (policykd export --format c), compiled to a shared library and called through ctypes."""

    def __init__(self, library: str | Path, obs_dim: int, action_dim: int, family: str) -> None:
        import ctypes

        self._lib = ctypes.CDLL(str(library))
        self._fn = self._lib.policykd_act
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.obs_dim, self.family = obs_dim, family
        self._obs = np.zeros(obs_dim, dtype=np.float32)
        self._action = np.zeros(1 if family == "categorical" else action_dim, dtype=np.float32)
        self._obs_ptr, self._action_ptr = self._obs.ctypes.data, self._action.ctypes.data

    def __call__(self, obs: np.ndarray) -> np.ndarray | int:
        """obs [obs_dim] -> env action [A] (a copy), or the action index for discrete actions."""
        self._obs[:] = obs
        index = self._fn(self._obs_ptr, self._action_ptr)
        return index if self.family == "categorical" else self._action.copy()


def compile_c_export(export_dir: str | Path, *, compiler: str = "cc") -> Path:
    """Build libpolicykd_student.so from policykd_student.c in export_dir (C99, -O2, warnings are errors)."""
    import subprocess

    export_dir = Path(export_dir)
    source, library = export_dir / "policykd_student.c", export_dir / "libpolicykd_student.so"
    if not source.exists():
        raise PolicyKDError(f"{export_dir} holds no policykd_student.c; run `policykd export STUDENT --format c` first")
    command = [compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(library), str(source), "-lm"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PolicyKDError(f"compiling {source} failed: {result.stderr.strip().splitlines()[0] if result.stderr else result.returncode}")
    return library


def load_c(student_dir: str | Path, export_dir: str | Path) -> CPolicy:
    """The compiled C export of the student in student_dir (compiled on first use)."""
    card = json.loads((Path(student_dir) / "student.json").read_text())
    library = Path(export_dir) / "libpolicykd_student.so"
    if not library.exists() or library.stat().st_mtime < (Path(export_dir) / "policykd_student.c").stat().st_mtime:
        library = compile_c_export(export_dir)
    spec = card["spec"]
    return CPolicy(library, spec["obs_dim"], spec["action_dim"], spec["family"])
