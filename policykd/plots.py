"""Figures of a distillation run (matplotlib, PNG): the distillation curve and the latency per inference path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def distillation_curve(history: list[dict], teacher: dict, path: Path, *, title: str) -> Path:
    """Student return (per-round evaluation) and KL on the training data vs teacher-labelled env steps.

    history: per-round metrics (distill/labelled_steps, distill/kl, optionally eval/student_return_mean/std);
    teacher: summarize_returns() of the teacher on the same seeds (mean, ci95_low, ci95_high).
    """
    steps = [h["distill/labelled_steps"] for h in history]
    fig, (ax_return, ax_kl) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_return.axhspan(teacher["ci95_low"], teacher["ci95_high"], color="tab:gray", alpha=0.25, label="teacher 95% CI")
    ax_return.axhline(teacher["mean"], color="tab:gray", lw=1.5, label=f"teacher mean ({teacher['mean']:.1f})")
    if all("eval/student_return_mean" in h for h in history):
        means = [h["eval/student_return_mean"] for h in history]
        stds = [h["eval/student_return_std"] for h in history]
        ax_return.errorbar(steps, means, yerr=stds, marker="o", capsize=3, color="tab:blue", label="student (mean +- std)")
    ax_return.set(xlabel="teacher-labelled env steps", ylabel="episode return", title="return")
    ax_return.legend(loc="lower right", fontsize=8)
    ax_kl.plot(steps, [h["distill/kl"] for h in history], marker="o", color="tab:red")
    ax_kl.set(xlabel="teacher-labelled env steps", ylabel="KL(teacher || student), nats per state", yscale="log",
              title="KL on the training data (last epoch)")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_chart(latency_us: dict[str, dict], path: Path, *, title: str) -> Path:
    """Horizontal bars: p50 per inference path, with a whisker up to p99; log scale in microseconds."""
    names = list(latency_us)
    p50 = [latency_us[n]["p50"] for n in names]
    p99 = [latency_us[n]["p99"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5), constrained_layout=True)
    ax.barh(names, p50, color="tab:blue", label="p50")
    ax.errorbar(p99, names, xerr=[[v - m for v, m in zip(p99, p50)], [0] * len(names)], fmt="|", color="black", label="p99")
    for y, (value, high) in enumerate(zip(p50, p99)):
        ax.text(high * 1.08, y, f"p50 {value:.1f} / p99 {high:.1f}", va="center", fontsize=8)
    ax.set(xscale="log", xlabel="batch-1 latency per call (us, log scale)", title=title)
    ax.set_xlim(min(p50) / 4, max(p99) * 6)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_histograms(samples: dict, path: Path, *, title: str) -> Path:
    """One histogram per inference path of its per-call latency (us, log-spaced bins), p50 and p99 marked."""
    import numpy as np

    names = list(samples)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.5 * len(names) + 1), sharex=True, constrained_layout=True)
    axes = np.atleast_1d(axes)
    low = min(float(np.percentile(v, 0.1)) for v in samples.values())
    high = max(float(np.percentile(v, 99.9)) for v in samples.values())
    bins = np.geomspace(max(low * 0.8, 1e-3), high * 1.2, 80)
    for ax, name in zip(axes, names):
        values = np.asarray(samples[name])
        ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, color="tab:blue")
        p50, p99 = np.percentile(values, [50, 99])
        ax.axvline(p50, color="black", lw=1)
        ax.axvline(p99, color="tab:red", lw=1, ls="--")
        ax.set_ylabel("calls", fontsize=8)
        ax.set_title(f"{name}: p50 {p50:.2f} us, p99 {p99:.2f} us", fontsize=9, loc="left")
    axes[-1].set(xscale="log", xlabel="batch-1 latency per call (us, log scale; black p50, red p99)")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
