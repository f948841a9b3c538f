"""Figures policykd writes (matplotlib, PNG): the distillation curve, the latency per inference path, latency
histograms and the Pareto plots of a sweep.

Each `*_figure` function builds and returns the matplotlib Figure (no pyplot state, nothing to close); the
function of the same name without the suffix saves it as a PNG and returns the path. Every axis gets a few
(3 to 8) labelled ticks: log axes at 1-2-5 steps (decades over a wide range, evenly spaced round values over a
narrow one), counts as 10k / 1.5M; a run without per-round evaluation gets training panels only, with a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker as mticker  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from policykd.artifacts import IMAGE_MARK  # noqa: E402
from policykd.errors import PolicyKDError  # noqa: E402

DPI = 110
STEPS_LABEL = "teacher-labelled env steps"


def short_number(value: float, _pos: Any = None) -> str:
    """12000 -> 12k, 1500000 -> 1.5M, 0.05 -> 0.05 (tick labels that stay short)."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.4g}M"
    if magnitude >= 1e3:
        return f"{value / 1e3:.4g}k"
    return f"{value:.4g}"


def log_ticks(low: float, high: float, *, min_ticks: int = 3, max_ticks: int = 8) -> list[float]:
    """Round tick values for a log axis showing [low, high] (both > 0), at least min_ticks and at most max_ticks of
    them: 1-2-5 steps (1, 2, 5, 10, 20, ...) covering the range; decades, thinned, for a wide range; evenly spaced
    round values (0.03, 0.035, 0.04) for a range too narrow to hold two 1-2-5 ticks. May not reach low or high."""
    if not (low > 0 and high > 0):
        raise ValueError(f"log ticks need positive bounds, got {low}, {high}")
    low, high = min(low, high), max(low, high)
    if high < low * 1.05:  # (nearly) one value: a window around it
        low, high = low / 1.25, high * 1.25

    def covering(subs: Sequence[int]) -> list[float]:
        first, last = math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1
        candidates = sorted(float(f"{s}e{k}") for k in range(first, last + 1) for s in subs)
        below = max(c for c in candidates if c <= low * (1 + 1e-9))
        above = min(c for c in candidates if c >= high * (1 - 1e-9))
        return [c for c in candidates if below <= c <= above]

    one_two_five = covering((1, 2, 5))
    if len(one_two_five) > max_ticks:
        decades = covering((1,))
        return decades[:: math.ceil(len(decades) / max_ticks)]
    if len(one_two_five) >= min_ticks and sum(low <= t <= high for t in one_two_five) >= 2:
        return one_two_five
    locator = mticker.MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10], min_n_ticks=min_ticks)
    return [float(f"{t:.12g}") for t in locator.tick_values(low, high) if t > 0]


def set_log_axis(axis: Axis, low: float, high: float, *, pad: float = 0.04, min_ticks: int = 3) -> list[float]:
    """Log scale on `axis` showing the data range [low, high] with round, labelled ticks (log_ticks); the limits
    reach the outer ticks (or the data, if further out) plus `pad` (a fraction of the log range) on each side."""
    ticks = log_ticks(low, high, min_ticks=min_ticks)
    first, last = min(ticks[0], low), max(ticks[-1], high)
    span = last / first
    limits = (first / span**pad, last * span**pad)
    if axis.axis_name == "x":
        axis.axes.set_xscale("log")
        axis.axes.set_xlim(*limits)
    else:
        axis.axes.set_yscale("log")
        axis.axes.set_ylim(*limits)
    axis.set_major_locator(mticker.FixedLocator(ticks))
    axis.set_major_formatter(mticker.FuncFormatter(short_number))
    axis.set_minor_locator(mticker.LogLocator(base=10, subs="auto"))
    axis.set_minor_formatter(mticker.NullFormatter())
    return ticks


def set_count_axis(axis: Axis, *, nbins: int = 5) -> None:
    """A linear axis of counts (env steps, parameters): 3 to ~6 ticks on round integers, labelled 10k / 1.5M."""
    axis.set_major_locator(mticker.MaxNLocator(nbins=nbins, integer=True, min_n_ticks=3))
    axis.set_major_formatter(mticker.FuncFormatter(short_number))


def _positive(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _training_panel(ax, steps: list[int], values: list[float], *, ylabel: str, title: str, color: str) -> None:
    ax.plot(steps, values, marker="o", color=color)
    positive = _positive(values)
    if positive and len(positive) == len(values):
        set_log_axis(ax.yaxis, min(positive), max(positive))
        ylabel += " (log scale)"
    else:
        ax.yaxis.set_major_locator(mticker.MaxNLocator(nbins=5, min_n_ticks=3))
    ax.set(xlabel=STEPS_LABEL, ylabel=ylabel, title=title)
    set_count_axis(ax.xaxis)
    if len(set(steps)) == 1:  # one round: a readable window around its single x
        ax.set_xlim(0, 2 * steps[0])
    ax.grid(alpha=0.3)


def distillation_curve_figure(history: list[dict], teacher: dict, *, title: str, student: dict | None = None) -> Figure:
    """The figure of distillation_curve()."""
    if not history:
        raise ValueError("no rounds in the history: nothing to plot")
    steps = [h["distill/labelled_steps"] for h in history]
    evaluated = all(_finite(h.get("eval/student_return_mean")) for h in history)
    training = [("distill/kl", "KL(teacher || student), nats per state", "KL on the training data (last epoch)", "tab:red")]
    if all(_finite(h.get("distill/value_mse")) for h in history):
        training.append(("distill/value_mse", "value MSE (normalised)", "value-head MSE (last epoch)", "tab:purple"))
    if evaluated:
        training = training[:1]
    panels = len(training) + (1 if evaluated else 0)
    fig = Figure(figsize=(5 * panels, 4.2), layout="constrained")
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if evaluated:
        ax_return = axes.pop(0)
        if _finite(teacher.get("ci95_low")) and _finite(teacher.get("ci95_high")):
            ax_return.axhspan(teacher["ci95_low"], teacher["ci95_high"], color="tab:gray", alpha=0.25, label="teacher 95% CI")
        if _finite(teacher.get("mean")):
            ax_return.axhline(teacher["mean"], color="tab:gray", lw=1.5, label=f"teacher mean ({teacher['mean']:.1f})")
        means = [h["eval/student_return_mean"] for h in history]
        stds = [h.get("eval/student_return_std", 0.0) for h in history]
        ax_return.errorbar(steps, means, yerr=stds, marker="o", capsize=3, color="tab:blue", label="student (mean +- std)")
        ax_return.set(xlabel=STEPS_LABEL, ylabel="episode return", title="return (per-round evaluation)")
        set_count_axis(ax_return.xaxis)
        ax_return.yaxis.set_major_locator(mticker.MaxNLocator(nbins=6, min_n_ticks=3))
        if len(set(steps)) == 1:
            ax_return.set_xlim(0, 2 * steps[0])
        ax_return.grid(alpha=0.3)
        ax_return.legend(loc="best", fontsize=8)
    for ax, (key, ylabel, panel_title, color) in zip(axes, training):
        _training_panel(ax, steps, [h[key] for h in history], ylabel=ylabel, title=panel_title, color=color)
    if not evaluated:
        note = "no per-round evaluation (eval_every_round: 0), so no return curve"
        if student and _finite(student.get("mean")) and _finite(teacher.get("mean")):
            note += (f"; final evaluation: student return {student['mean']:.1f} vs teacher {teacher['mean']:.1f}"
                     + (f" (ratio {student['ratio']:.3f})" if _finite(student.get("ratio")) else ""))
        fig.supxlabel(note, fontsize=8, color="dimgray")
    fig.suptitle(title)
    return fig


def distillation_curve(history: list[dict], teacher: dict, path: Path, *, title: str, student: dict | None = None) -> Path:
    """Student return (per-round evaluation, when the run made one) and the training metrics (KL, plus the value
    MSE when there is no return panel) vs teacher-labelled env steps.

    history: per-round metrics (distill/labelled_steps, distill/kl, distill/value_mse, optionally
    eval/student_return_mean/std); teacher: the teacher's returns on the same seeds from eval.json (mean, ci95_low,
    ci95_high; NaN when not evaluated); student: the final evaluation (mean, optionally ratio), quoted in the note
    of a run without per-round evaluation.
    """
    return save(distillation_curve_figure(history, teacher, title=title, student=student), path)


def latency_chart_figure(latency_us: dict[str, dict], *, title: str) -> Figure:
    """The figure of latency_chart()."""
    names = list(latency_us)
    p50 = [latency_us[n]["p50"] for n in names]
    p99 = [max(latency_us[n]["p99"], latency_us[n]["p50"]) for n in names]
    fig = Figure(figsize=(8, 0.5 * len(names) + 1.8), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, p50, color="tab:blue", label="p50")
    ax.errorbar(p99, names, xerr=[[v - m for v, m in zip(p99, p50)], [0] * len(names)], fmt="|", color="black", label="p99")
    for y, (value, high) in enumerate(zip(p50, p99)):
        ax.text(high * 1.08, y, f"p50 {value:.1f} / p99 {high:.1f}", va="center", fontsize=8)
    set_log_axis(ax.xaxis, min(p50) / 2, max(p99) * 8, pad=0.0)  # room on the right for the text
    ax.set(xlabel="batch-1 latency per call (us, log scale)", title=title)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def latency_chart(latency_us: dict[str, dict], path: Path, *, title: str) -> Path:
    """Horizontal bars: p50 per inference path, with a whisker up to p99; log scale in microseconds."""
    return save(latency_chart_figure(latency_us, title=title), path)


def latency_histograms_figure(samples: dict, *, title: str) -> Figure:
    """The figure of latency_histograms()."""
    import numpy as np

    names = list(samples)
    fig = Figure(figsize=(8, 1.5 * len(names) + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(names), 1, sharex=True))
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
        ax.yaxis.set_major_locator(mticker.MaxNLocator(nbins=3, integer=True))
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(short_number))
        ax.set_title(f"{name}: p50 {p50:.2f} us, p99 {p99:.2f} us", fontsize=9, loc="left")
    set_log_axis(axes[-1].xaxis, float(bins[0]), float(bins[-1]), pad=0.0)
    axes[-1].set_xlabel("batch-1 latency per call (us, log scale; black p50, red p99)")
    fig.suptitle(title)
    return fig


def latency_histograms(samples: dict, path: Path, *, title: str) -> Path:
    """One histogram per inference path of its per-call latency (us, log-spaced bins), p50 and p99 marked."""
    return save(latency_histograms_figure(samples, title=title), path)


PARETO_AXES = (("student_params", "student parameters (log scale)"),
               ("numpy_p50_us", "numpy runtime p50 latency, batch 1 (us, log scale)"))


def pareto_figure(results: list[dict[str, Any]], fronts: Sequence[set[int]], varied: list[str], *, env_id: str) -> Figure:
    """The figure of pareto_chart()."""
    import numpy as np

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, len(PARETO_AXES))
    ys = np.array([r["ratio"] for r in results], dtype=float)
    for ax, (key, label), front in zip(axes, PARETO_AXES, fronts):
        xs = np.array([r[key] for r in results], dtype=float)
        ax.scatter(xs, ys, color="tab:blue", zorder=3)
        order = sorted(front, key=lambda i: xs[i])
        ax.plot(xs[order], ys[order], color="tab:red", lw=1.5, label="Pareto front", zorder=2)
        ax.axhline(1.0, color="tab:gray", ls="--", lw=1, label="teacher parity")
        positive = _positive(xs)
        if positive:
            low, high = min(positive), max(positive)
            set_log_axis(ax.xaxis, low, high, pad=0.08)
            log_low, log_high = (math.log10(v) for v in ax.get_xlim())
        else:
            log_low = log_high = 0.0
        points: dict[tuple[float, float], list[str]] = {}  # runs at the same point share one label
        for i, r in enumerate(results):
            points.setdefault((xs[i], ys[i]), []).append(", ".join(f"{r[k]}" for k in varied))
        for (x, y), texts in points.items():
            # labels of points in the right third go to their left, so that they stay inside the axes
            right = x > 0 and log_high > log_low and (math.log10(x) - log_low) / (log_high - log_low) > 0.66
            ax.annotate("; ".join(texts), (x, y), fontsize=7, textcoords="offset points", xytext=(-4, 4) if right else (4, 4),
                        ha="right" if right else "left")
        ax.yaxis.set_major_locator(mticker.MaxNLocator(nbins=6, min_n_ticks=3))
        ax.set(xlabel=label, ylabel="student / teacher return (same seeds)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{env_id}: sweep over {', '.join(k.removeprefix('param/') for k in varied)}")
    for ax in axes:
        _separate_labels(fig, ax)
    return fig


def _separate_labels(fig: Figure, ax, *, tries: int = 12) -> None:
    """Move point labels (annotations) of ax up or down, a line at a time, until none overlaps an earlier one."""
    if not ax.texts:
        return
    FigureCanvasAgg(fig).draw()  # lay the figure out, so that the text extents are final
    renderer = fig.canvas.get_renderer()
    placed = []
    for text in sorted(ax.texts, key=lambda t: t.xy[1]):
        dx, dy = text.xyann
        for attempt in range(tries):
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            step = (attempt // 2 + 1) * (text.get_fontsize() + 1) * (1 if attempt % 2 == 0 else -1)
            text.xyann = (dx, dy + step)
        placed.append(text.get_window_extent(renderer))


def pareto_chart(results: list[dict[str, Any]], path: Path, *, fronts: Sequence[set[int]], varied: list[str],
                 env_id: str) -> Path:
    """A sweep's return ratio vs student parameters and vs numpy p50 latency (log x), each with its Pareto front.

    fronts: the indices of the Pareto-optimal results for each of PARETO_AXES (sweep.pareto_front);
    varied: the swept keys (param/...) whose values label the points."""
    return save(pareto_figure(results, fronts, varied, env_id=env_id), path)


def check_image_path(path: Path) -> None:
    """Refuse, before any work, an image path whose suffix matplotlib cannot write (e.g. --plot out.txt)."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise PolicyKDError(f"cannot draw a plot into {path}: the name must end in an image format such as .png, .svg or .pdf "
                            f"(one of {', '.join(sorted(formats))})")


def save(fig: Figure, path: Path) -> Path:
    """Write fig (format from the suffix, PNG for policykd's own names) at policykd's resolution, making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower()
    # the mark that lets a later run replace this figure (policykd.artifacts.check_replaceable_output); formats
    # without text metadata carry none, and are then never replaced
    metadata = {"png": {"Software": IMAGE_MARK}, "svg": {"Creator": IMAGE_MARK}, "pdf": {"Creator": IMAGE_MARK},
                "ps": {"Creator": IMAGE_MARK}, "eps": {"Creator": IMAGE_MARK}}.get(fmt)
    fig.savefig(path, dpi=DPI, **({"metadata": metadata} if metadata else {}))
    return path
