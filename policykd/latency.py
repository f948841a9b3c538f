"""Batch-1 inference latency: one thread, pinned to one core, warm-up first, percentiles in microseconds.

Only the timing helpers (no exporter or runtime imports, so evaluation stays light); the per-backend benchmark
(torch, numpy, ONNX, C) is policykd/latency_backends.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


def timed_samples(fn: Callable[[], object], *, calls: int = 10_000, warmup: int | None = None) -> np.ndarray:
    """Wall time of each of `calls` calls of fn() in microseconds [calls], after a warm-up, pinned, one thread."""
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
    return samples / 1_000.0


def summarize_samples(samples: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(samples, 50)), "p99": float(np.percentile(samples, 99)),
            "max": float(samples.max()), "mean": float(samples.mean()), "calls": int(len(samples))}


def measure_latency(fn: Callable[[], object], *, calls: int = 10_000, warmup: int | None = None) -> dict[str, float]:
    """p50 / p99 / max / mean wall time of fn() in microseconds over `calls` timed calls."""
    return summarize_samples(timed_samples(fn, calls=calls, warmup=warmup))
