"""Batch-1 inference latency: one thread, pinned to one core, warm-up first, percentiles in microseconds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


@contextmanager
def single_thread_pinned(core: int | None = None) -> Iterator[None]:
    """Run the block with one torch thread on one CPU core (the last allowed one by default)."""
    threads = torch.get_num_threads()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    torch.set_num_threads(1)
    if affinity:
        os.sched_setaffinity(0, {core if core is not None else max(affinity)})
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if affinity:
            os.sched_setaffinity(0, affinity)


def measure_latency(fn: Callable[[], object], *, calls: int = 10_000, warmup: int | None = None) -> dict[str, float]:
    """p50 / p99 / max / mean wall time of fn() in microseconds over `calls` timed calls."""
    warmup = warmup if warmup is not None else max(calls // 10, 10)
    samples = np.empty(calls)
    with single_thread_pinned():
        for _ in range(warmup):
            fn()
        clock = time.perf_counter_ns
        for i in range(calls):
            start = clock()
            fn()
            samples[i] = clock() - start
    samples /= 1_000.0
    return {"p50": float(np.percentile(samples, 50)), "p99": float(np.percentile(samples, 99)),
            "max": float(samples.max()), "mean": float(samples.mean()), "calls": calls}


BACKENDS = ("torch", "numpy", "onnx", "c")


def backend_latencies(student_dir: Path, backends: tuple[str, ...], *, teacher=None, calls: int = 10_000,
                      work_dir: Path | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """Batch-1 latency of the student on each backend, plus the teacher (torch) and SB3 predict() when a teacher
    is given, all in one run on the same observation. Observations: the normaliser mean plus unit noise."""
    import tempfile

    import policykd.runtime as runtime
    from policykd.export import export_student
    from policykd.students import load_student

    unknown = set(backends) - set(BACKENDS)
    if unknown:
        from policykd.errors import PolicyKDError

        raise PolicyKDError(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    student = load_student(student_dir)
    rng = np.random.default_rng(seed)
    obs = (student.obs_mean.numpy() + rng.normal(size=student.spec.obs_dim) * student.obs_std.numpy()).astype(np.float32)
    obs_batch = obs[None]
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="policykd-bench-"))
    results: dict[str, dict[str, float]] = {}
    if teacher is not None:
        results["teacher_torch"] = measure_latency(lambda: teacher.act(obs_batch), calls=calls)
        results["sb3_predict"] = measure_latency(lambda: teacher.sb3_predict(obs_batch), calls=calls)
    for backend in backends:
        if backend == "torch":
            obs_t = torch.as_tensor(obs_batch)

            def call() -> object:
                with torch.no_grad():
                    return student.act(obs_t)
        elif backend == "numpy":
            call = lambda policy=runtime.load(student_dir): policy(obs)  # noqa: E731
        elif backend == "onnx":
            import onnxruntime as ort

            (path,) = export_student(student_dir, work_dir / "onnx", "onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            call = lambda: session.run(None, {"obs": obs_batch})  # noqa: E731
        else:
            export_student(student_dir, work_dir / "c", "c")
            call = lambda policy=runtime.load_c(student_dir, work_dir / "c"): policy(obs)  # noqa: E731
        results[backend] = measure_latency(call, calls=calls)
    return results
