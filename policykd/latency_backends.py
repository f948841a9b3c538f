"""Batch-1 latency of a student on every inference backend (torch, numpy runtime, ONNX Runtime, C from C, C through
ctypes), beside the teacher and SB3 predict(): `policykd bench`, `policykd eval --latency`, benchmarks/deploy.py.
The timing itself is policykd/latency.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

import policykd.runtime as runtime
from policykd.errors import PolicyKDError
from policykd.export import export_student
from policykd.latency import summarize_samples, timed_samples
from policykd.students import load_student
from policykd.tools import run_tool

BACKENDS = ("torch", "numpy", "onnx", "c", "c-ctypes")


_C_TIMER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "policykd_student.h"

static const float OBS[POLICYKD_OBS_DIM] = { %(obs)s };

static int compare(const void *a, const void *b)
{
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

int main(void)
{
  enum { CALLS = %(calls)d, WARMUP = %(warmup)d, INNER = 16 };
  static long samples[CALLS];
  float action[POLICYKD_ACTION_DIM];
  volatile float sink = 0.0f;
  struct timespec t0, t1;
  int i, k;
  for (i = 0; i < WARMUP; ++i) { policykd_act(OBS, action); sink += action[0]; }
  for (i = 0; i < CALLS; ++i) {
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (k = 0; k < INNER; ++k) { policykd_act(OBS, action); sink += action[0]; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    samples[i] = (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
  }
  qsort(samples, CALLS, sizeof samples[0], compare);
  printf("%%f %%f %%f\n", samples[CALLS / 2] / 1000.0 / INNER, samples[(CALLS * 99) / 100] / 1000.0 / INNER,
         samples[CALLS - 1] / 1000.0 / INNER);
  for (i = 0; i < CALLS; ++i) printf("%%f\n", samples[i] / 1000.0 / INNER);
  return (int)(sink * 0.0f);
}
"""


def c_native_latency(export_dir: Path, obs: np.ndarray, *, calls: int = 10_000, samples_out: list | None = None) -> dict[str, float]:
    """Latency of the C export called from C (no Python in the loop), pinned to one core. Each sample times
    16 back-to-back calls (a single call is shorter than the clock's resolution) and is divided by 16."""
    source = export_dir / "policykd_latency.c"
    source.write_text(_C_TIMER % {"obs": ", ".join(f"{float(v)!r}f" for v in obs), "calls": calls, "warmup": max(calls // 10, 10)})
    binary = export_dir / "policykd_latency"
    run_tool(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source),
                 str(export_dir / "policykd_student.c"), "-lm"], what="compiling the C latency timer")
    pin: list[str] = []
    if hasattr(os, "sched_getaffinity") and shutil.which("taskset"):
        pin = ["taskset", "-c", str(max(os.sched_getaffinity(0)))]
    output = run_tool([*pin, str(binary)], what="running the C latency timer").stdout
    first, *rest = output.splitlines() or [""]
    try:
        p50, p99, worst = (float(x) for x in first.split())
    except ValueError:
        raise PolicyKDError(f"the C latency timer printed {output[:200]!r}, not three latencies") from None
    if samples_out is not None:
        samples_out.append(np.array([float(x) for x in rest]))
    return {"p50": p50, "p99": p99, "max": worst, "calls": calls, "batched_per_sample": 16}


def backend_latencies(student_dir: Path, backends: tuple[str, ...], *, teacher=None, calls: int = 10_000,
                      work_dir: Path | None = None, seed: int = 0,
                      samples: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Batch-1 latency of the student on each backend, plus the teacher (torch) and SB3 predict() when a teacher
    is given, all in one run on the same observation. Observations: the normaliser mean plus unit noise.
    samples: if given, filled with each path's raw per-call times in microseconds (for histograms)."""
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise PolicyKDError(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    student = load_student(student_dir)
    rng = np.random.default_rng(seed)
    obs = (student.obs_mean.numpy() + rng.normal(size=student.spec.obs_dim) * student.obs_std.numpy()).astype(np.float32)
    obs_batch = obs[None]
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="policykd-bench-"))
    results: dict[str, dict[str, float]] = {}
    raw: dict[str, np.ndarray] = {}
    if teacher is not None:
        raw["teacher_torch"] = timed_samples(lambda: teacher.act(obs_batch), calls=calls)
        raw["sb3_predict"] = timed_samples(lambda: teacher.sb3_predict(obs_batch), calls=calls)
    for backend in backends:
        if backend == "torch":
            def call(obs_t: torch.Tensor = torch.as_tensor(obs_batch)) -> object:
                with torch.no_grad():
                    return student.act_torch(obs_t)
        elif backend == "numpy":
            call = lambda policy=runtime.load(student_dir): policy(obs)  # noqa: E731
        elif backend == "onnx":
            import onnxruntime as ort

            (path,) = export_student(student_dir, work_dir / "onnx", "onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feeds = {"obs": obs_batch}
            if student.recurrent:  # one step from a zero state: the step's cost does not depend on the state
                feeds["state"] = np.zeros((1, student.spec.gru), dtype=np.float32)
            call = lambda session=session, feeds=feeds: session.run(None, feeds)  # noqa: E731
        elif backend == "c":
            export_student(student_dir, work_dir / "c", "c")
            native: list = []
            results[backend] = c_native_latency(work_dir / "c", obs, calls=calls, samples_out=native)
            raw[backend] = native[0]
            continue
        else:
            export_student(student_dir, work_dir / "c", "c")
            call = lambda policy=runtime.load_c(student_dir, work_dir / "c"): policy(obs)  # noqa: E731
        raw[backend] = timed_samples(call, calls=calls)
    for name, values in raw.items():
        results.setdefault(name, summarize_samples(values))
    ordered = {name: results[name] for name in raw}
    if samples is not None:
        samples.update(raw)
    return ordered
