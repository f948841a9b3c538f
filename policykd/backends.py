"""A saved student run on each deployment backend, as an act function, and judged in closed loop (`policykd eval
--backend NAME`): the exported artefact (ONNX fp32 / int8, TorchScript, C float / int16) drives the simulator on the
evaluation seeds of the float student, so a quantised export is judged by its return, not only by its action error.

    act = act_function("runs/NAME/student", "c-int16", work_dir)   # raw obs [B, obs_dim] -> env actions [B, A]
    results = closed_loop(teacher.env_spec, "runs/NAME/student", ["c-int16", "onnx-int8"], seeds, ...)

Exports are written with policykd.export.export_with_parity: a float export must pass its parity check against the
torch student (PolicyKDError otherwise); a quantised one is run whatever its action error, which closed_loop reports
beside its return (judging it in closed loop is the point).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policykd import student_format as fmt
from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd.rollout import ActFn, run_episodes

BACKENDS = ("torch", "numpy", "onnx", "onnx-int8", "torchscript", "c", "c-int16", "c-int8")
QUANTISED = ("onnx-int8", "c-int16", "c-int8")
# An episode's return "differs" from the float student's on the same seed beyond this relative tolerance (of
# max(1, |float return|)): float backends differ from torch only in the last bits of the actions.
RETURN_RTOL = 1e-6
NO_CC = "`cc` not found on PATH; install a C compiler as cc (gcc or clang)"


def check_backends(backends: Sequence[str]) -> None:
    """Raise PolicyKDError (one line, listing the choices) for a name that is not in BACKENDS."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise PolicyKDError(f"unknown backend{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                            f"choose from {', '.join(BACKENDS)}")


def check_backend_tools(backends: Sequence[str]) -> None:
    """Refuse, before any work, a backend whose runtime is missing here: the C ones need `cc`, the ONNX ones
    onnxruntime (`c-ctypes`, a latency path, is the C export through ctypes)."""
    import importlib.util

    for backend in backends:
        if backend in ("c", "c-int16", "c-int8", "c-ctypes") and shutil.which("cc") is None:
            raise PolicyKDError(f"backend {backend}: {NO_CC}")
        if backend in ("onnx", "onnx-int8") and importlib.util.find_spec("onnxruntime") is None:
            raise PolicyKDError(f"backend {backend} needs onnxruntime; pip install onnxruntime")


def act_function(student_dir: str | Path, backend: str, work_dir: str | Path) -> ActFn:
    """The student in student_dir on `backend`: raw observations [B, obs_dim] -> env actions float32 [B, A], or int64
    [B] action indices for discrete students (as Student.act). Exports are written into work_dir/BACKEND.

    Raises PolicyKDError for an unknown backend, a missing C compiler (c, c-int16, c-int8), a missing onnxruntime (onnx,
    onnx-int8) or a float export that fails its parity check (a quantised one's is recorded in its export-FORMAT.json)."""
    check_backends([backend])
    check_backend_tools([backend])
    student_dir, out_dir = Path(student_dir), Path(work_dir) / backend
    spec = fmt.read_card(student_dir)["spec"]
    if fmt.recurrent_size(spec):
        raise PolicyKDError(f"{student_dir} is a recurrent student: --backend runs feed-forward students only; its float "
                            "exports are checked over a whole episode when written (`policykd export`)")
    obs_dim = spec["obs_dim"]
    from policykd.distributions import family_strategy

    discrete = family_strategy(spec["family"]).discrete

    def finish(actions: np.ndarray) -> np.ndarray:
        return np.asarray(actions).astype(np.int64) if discrete else np.asarray(actions, dtype=np.float32)

    if backend == "torch":
        from policykd.students import load_student

        return load_student(student_dir).act
    if backend == "numpy":
        import policykd.runtime

        return policykd.runtime.load(student_dir).batch
    if backend in ("c", "c-int16", "c-int8"):
        import policykd.runtime

        _export(student_dir, out_dir, backend)
        policy = policykd.runtime.load_c(student_dir, out_dir)

        def act_c(obs: np.ndarray) -> np.ndarray:
            obs = fmt.check_observations(obs, obs_dim)
            if discrete:
                return np.array([policy(o) for o in obs], dtype=np.int64)
            return np.stack([policy(o) for o in obs]) if len(obs) else np.zeros((0, spec["action_dim"]), np.float32)

        return act_c
    if backend in ("onnx", "onnx-int8"):
        import onnxruntime as ort

        (path,) = _export(student_dir, out_dir, backend)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def act_onnx(obs: np.ndarray) -> np.ndarray:
            return finish(session.run(["action"], {"obs": fmt.check_observations(obs, obs_dim)})[0])

        return act_onnx
    import torch  # torchscript

    (path,) = _export(student_dir, out_dir, backend)
    module = torch.jit.load(str(path))

    def act_torchscript(obs: np.ndarray) -> np.ndarray:
        checked = np.require(fmt.check_observations(obs, obs_dim), requirements=["C", "W"])
        with torch.no_grad():
            return finish(module(torch.from_numpy(checked)).numpy())

    return act_torchscript


def _export(student_dir: Path, out_dir: Path, backend: str) -> list[Path]:
    """The backend's export files in out_dir; a quantised export is kept whatever its parity (closed_loop reports it)."""
    from policykd.export import export_with_parity

    return export_with_parity(student_dir, out_dir, backend, keep_failed_parity=backend in QUANTISED)[0]


def export_parity(out_dir: Path, backend: str) -> dict[str, Any] | None:
    """The parity record of the backend's export in out_dir (None for torch and numpy, which export nothing)."""
    record = out_dir / f"export-{backend}.json"
    return json.loads(record.read_text())["parity"] if record.is_file() else None


def returns_differ(returns: np.ndarray, reference: np.ndarray, *, rtol: float = RETURN_RTOL) -> np.ndarray:
    """Per episode: does the return differ from the reference return on the same seed (beyond rtol x max(1, |ref|))."""
    returns, reference = np.asarray(returns, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return ~(np.abs(returns - reference) <= rtol * np.maximum(1.0, np.abs(reference)))


def closed_loop(env_spec: EnvSpec, student_dir: str | Path, backends: Sequence[str], seeds: Sequence[int], *,
                n_envs: int, float_returns: Sequence[float], teacher_mean: float,
                progress_factory: Callable[[str, int], Any] | None = None,
                work_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Run the student on each backend (except "torch": the float student, whose per-seed returns are float_returns)
    on `seeds` (one episode each, n_envs at a time, as the float student was run), and compare with the teacher's
    mean return and with the float student seed by seed.

    Returns {backend: {"return_mean", "returns", "ratio_vs_teacher", "ratio_vs_float_student",
    "episodes_differing_from_float", "failures", "episodes", "differ_rtol"}} (ratios: evaluate.return_ratio).
    progress_factory(label, total): a context manager yielding advance(n), e.g. Tracker().progress.
    work_dir: where the exports are written (a temporary folder, removed afterwards, when None)."""
    from policykd.evaluate import return_ratio

    check_backends(backends)
    seeds, float_returns = [int(s) for s in seeds], np.asarray(float_returns, dtype=np.float64)
    if len(float_returns) != len(seeds):
        raise PolicyKDError(f"{len(float_returns)} float-student returns for {len(seeds)} seeds; they must match one to one")
    float_mean = float(float_returns.mean())
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="policykd-backends-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        for backend in dict.fromkeys(backends):  # each once, in the order given
            if backend == "torch":
                continue
            act = act_function(student_dir, backend, root)
            parity = export_parity(root / backend, backend)
            label = f"evaluating {backend} student"
            if progress_factory is None:
                episodes = run_episodes(act, env_spec, seeds, n_envs=n_envs)
            else:
                with progress_factory(label, len(seeds)) as advance:
                    episodes = run_episodes(act, env_spec, seeds, n_envs=n_envs, progress=advance)
            mean = float(episodes.returns.mean())
            results[backend] = {
                "return_mean": mean,
                "returns": [float(r) for r in episodes.returns],
                "ratio_vs_teacher": return_ratio(mean, teacher_mean),
                "ratio_vs_float_student": return_ratio(mean, float_mean),
                "episodes_differing_from_float": int(returns_differ(episodes.returns, float_returns).sum()),
                "failures": int(episodes.failures().sum()),
                "episodes": len(seeds),
                "differ_rtol": RETURN_RTOL,
                "quantised": backend in QUANTISED,
                "parity": parity,
            }
    return results
