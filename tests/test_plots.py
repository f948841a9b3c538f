"""Every figure policykd writes is readable: no empty panel, at least 3 labelled ticks per numeric axis, tick labels
that do not run into each other, point labels inside their axes. Checked on the matplotlib Figure objects."""

import hashlib
import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from policykd.plots import (
    distillation_curve,
    distillation_curve_figure,
    latency_chart_figure,
    latency_histograms_figure,
    log_ticks,
    pareto_figure,
    short_number,
)

NAN_TEACHER = {"mean": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan")}
TEACHER = {"mean": 2933.1, "ci95_low": 2900.0, "ci95_high": 2960.0}


def _history(steps=(10_000, 15_000, 20_000, 25_000, 30_000), *, evaluated=False):
    rows = []
    for i, s in enumerate(steps):
        row = {"distill/labelled_steps": s, "distill/kl": 0.9 / (i + 1), "distill/value_mse": 0.2 / (1 + 0.3 * i)}
        if evaluated:
            row.update({"eval/student_return_mean": 2000.0 + 200 * i, "eval/student_return_std": 80.0})
        rows.append(row)
    return rows


def _drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def _tick_labels(axis):
    """The visible, non-empty major tick labels of a drawn axis, within its view limits."""
    low, high = sorted(axis.get_view_interval())
    span = high - low
    ticks = [t for t in axis.get_major_ticks() if low - 1e-9 * span <= t.get_loc() <= high + 1e-9 * span]
    return [t.label1 for t in ticks if t.label1.get_visible() and t.label1.get_text().strip()]


def _check_ticks(axis, renderer, *, at_least=3):
    labels = _tick_labels(axis)
    texts = [t.get_text() for t in labels]
    assert len(labels) >= at_least, f"{axis.axis_name} axis labels {texts}"
    boxes = [t.get_window_extent(renderer) for t in labels]
    for (a, ta), (b, tb) in itertools.combinations(zip(boxes, texts), 2):
        assert not a.overlaps(b), f"tick labels {ta!r} and {tb!r} overlap on the {axis.axis_name} axis: {texts}"
    return texts


def _has_data(ax):
    """Something drawn from data in ax: a line in data coordinates with a finite point, scatter points, bars."""
    for line in ax.get_lines():
        if line.get_transform() == ax.transData:
            try:
                x, y = (np.asarray(v, dtype=float) for v in line.get_data())
            except ValueError:  # categorical (names): drawn if not empty
                return len(line.get_xdata()) > 0
            if np.isfinite(x).any() and np.isfinite(y).any():
                return True
    if any(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")):
        return True
    return any(p.get_data_transform() == ax.transData and p.get_height() > 0 and p.get_width() > 0
               for p in ax.patches if hasattr(p, "get_height"))  # bars and histograms, not a teacher band


def _check_figure(fig, *, axes, numeric_axes=("x", "y")):
    renderer = _drawn(fig)
    assert len(fig.axes) == axes, [ax.get_title() for ax in fig.axes]
    for ax in fig.axes:
        assert _has_data(ax), f"empty panel {ax.get_title()!r}"
        for name in numeric_axes:
            axis = ax.xaxis if name == "x" else ax.yaxis
            if not _tick_labels(axis) and axis is ax.xaxis and ax.get_shared_x_axes().get_siblings(ax) != [ax]:
                continue  # an inner panel of a shared-x column: labelled on the bottom panel
            _check_ticks(axis, renderer)
    return renderer


def test_log_ticks_are_round_and_enough():
    for low, high in [(58, 354), (0.03, 0.045), (9.6, 10.3), (6737, 6737), (0.125, 1800), (1e-4, 1e4), (2348, 36870)]:
        ticks = log_ticks(low, high)
        assert 3 <= len(ticks) <= 8, (low, high, ticks)
        assert ticks == sorted(ticks) and all(t > 0 for t in ticks)
        assert sum(min(low, high) * 0.8 <= t <= max(low, high) * 1.25 for t in ticks) >= 2 or low == high, (low, high, ticks)
    assert log_ticks(58, 354) == [50, 100, 200, 500]
    assert log_ticks(0.03, 0.045) == [0.03, 0.035, 0.04, 0.045]
    with pytest.raises(ValueError):
        log_ticks(0, 1)
    assert [short_number(v) for v in (0, 0.05, 950, 10_000, 15_000, 1_500_000)] == ["0", "0.05", "950", "10k", "15k", "1.5M"]


def test_curve_without_per_round_evaluation_has_only_training_panels():
    """eval_every_round: 0 (the default): no return panel (it would be a lone teacher band), a note instead."""
    fig = distillation_curve_figure(_history(), TEACHER, title="HalfCheetahBulletEnv-v0: run",
                                    student={"mean": 2672.7, "ratio": 0.911})
    _check_figure(fig, axes=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert not any("return" in t for t in titles) and "KL" in titles[0]
    kl_axis = fig.axes[0]
    assert kl_axis.get_yscale() == "log"
    assert [t.get_text() for t in _tick_labels(kl_axis.xaxis)] == ["10k", "15k", "20k", "25k", "30k"]
    note = fig.get_supxlabel()
    assert "eval_every_round: 0" in note and "2672.7" in note and "0.911" in note


def test_curve_with_per_round_evaluation_has_a_return_panel():
    fig = distillation_curve_figure(_history(evaluated=True), TEACHER, title="t")
    _check_figure(fig, axes=2)
    assert "return" in fig.axes[0].get_title() and "KL" in fig.axes[1].get_title()
    assert fig.get_supxlabel() == ""


@pytest.mark.parametrize("steps", [(100,), (100, 200, 300), (1_000_000, 2_000_000)])
def test_curve_of_short_and_long_runs_keeps_readable_ticks(steps):
    _check_figure(distillation_curve_figure(_history(steps), NAN_TEACHER, title="CartPole-v1: r"), axes=2)


def test_curve_of_constant_kl_still_has_labelled_ticks():
    history = [dict(h, **{"distill/kl": 0.031}) for h in _history()]
    _check_figure(distillation_curve_figure(history, NAN_TEACHER, title="t"), axes=2)


def test_curve_is_written_as_png(tmp_path):
    path = distillation_curve(_history(), NAN_TEACHER, tmp_path / "curve.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_chart_and_histograms():
    latency = {"teacher_torch": {"p50": 95.0, "p99": 140.0}, "teacher_sb3_predict": {"p50": 160.0, "p99": 260.0},
               "student_torch": {"p50": 35.0, "p99": 60.0}}
    fig = latency_chart_figure(latency, title="batch-1 latency")
    _check_figure(fig, axes=1, numeric_axes=("x",))
    assert fig.axes[0].get_xscale() == "log"
    rng = np.random.default_rng(0)
    samples = {"torch": rng.lognormal(np.log(30), 0.2, 500), "numpy": rng.lognormal(np.log(8), 0.2, 500),
               "c": rng.lognormal(np.log(0.8), 0.1, 500)}
    fig = latency_histograms_figure(samples, title="latency")
    _check_figure(fig, axes=3, numeric_axes=("x",))


def _sweep_rows(params, latency, ratios):
    return [{"name": f"run{i}", "param/hidden": [h, h], "param/data_mode": mode, "student_params": p, "numpy_p50_us": us,
             "ratio": r} for i, ((h, mode), p, us, r) in
            enumerate(zip(itertools.product((32, 64, 128), ("teacher", "dagger")), params, latency, ratios))]


RATIOS = [0.91, 0.97, 0.88, 0.99, 1.001, 0.994]


@pytest.mark.parametrize("params, latency, ratios", [
    ([2348, 2348, 6732, 6732, 22_022, 22_022], [9.6, 9.6, 9.9, 9.9, 10.7, 10.8], RATIOS),  # a narrow latency range
    ([6737] * 6, [9.8] * 6, RATIOS),                                                       # one size, one latency
    ([58, 58, 354, 354, 3000, 3000], [0.5, 0.6, 2.0, 2.1, 40.0, 41.0], RATIOS),            # a wide range
    ([58, 58, 354, 354, 3000, 3000], [12.7, 25.0, 15.0, 31.0, 40.0, 41.0], [1.0] * 6),    # runs on the same point
])
def test_pareto_plots_have_labelled_log_axes_and_labels_inside(params, latency, ratios):
    from policykd.sweep import pareto_front

    rows = _sweep_rows(params, latency, ratios)
    fronts = [set(pareto_front([(r[key], r["ratio"]) for r in rows])) for key in ("student_params", "numpy_p50_us")]
    fig = pareto_figure(rows, fronts, ["param/data_mode", "param/hidden"], env_id="HalfCheetahBulletEnv-v0")
    renderer = _check_figure(fig, axes=2)
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        box = ax.get_window_extent(renderer)
        extents = []
        for text in ax.texts:  # the point labels (data_mode, hidden)
            extent = text.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, f"{text.get_text()!r} leaves its axes"
            extents.append((text.get_text(), extent))
        for (a, box_a), (b, box_b) in itertools.combinations(extents, 2):
            assert not box_a.overlaps(box_b), f"point labels {a!r} and {b!r} overlap"
    labels = " | ".join(t.get_text() for t in fig.axes[0].texts)
    assert all(f"{mode}, [{h}, {h}]" in labels for h in (32, 64, 128) for mode in ("teacher", "dagger")), labels


def test_sweep_writes_its_pareto_plot_through_plots(tmp_path):
    from policykd.sweep import write_outputs

    rows = [dict(r, teacher_return=100.0, student_return=100.0 * r["ratio"], kl=0.1, wall_s=1.0)
            for r in _sweep_rows([58, 58, 354, 354, 3000, 3000], [0.5, 0.6, 2.0, 2.1, 40.0, 41.0],
                                 [0.91, 0.97, 0.88, 0.99, 1.001, 0.994])]
    recorded = {}
    write_outputs(tmp_path, rows, env_id="CartPole-v1", record=recorded.update)
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert recorded == {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("results.md", "pareto.png")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png", "results.md"]  # no temporary files left
    assert (tmp_path / "results.md").read_text().count("\n") == 2 + len(rows)
