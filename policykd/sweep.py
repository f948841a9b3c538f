"""Local grid sweeps over distillation settings: every combination is distilled, evaluated on the same seeds,
timed on the numpy runtime, and tabulated with a Pareto plot (return ratio vs parameters and vs latency).

    policykd sweep TEACHER -c configs/distill/bench_10k.yaml --grid 'hidden=[32,32]|[64,64]' --grid 'data_mode=teacher|dagger'
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions  # noqa: E402
from policykd.config import DistillConfig, load_config  # noqa: E402
from policykd.errors import PolicyKDError  # noqa: E402

SWEPT_COLUMNS = ("ratio", "student_return", "teacher_return", "student_params", "numpy_p50_us", "kl", "wall_s")


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """['hidden=[32,32]|[64,64]', 'tau=0.5|1'] -> {'hidden': [[32, 32], [64, 64]], 'tau': [0.5, 1]} (values as YAML)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise PolicyKDError(f"--grid {item!r} must look like KEY=V1|V2 (values in YAML, e.g. hidden=[32,32]|[64,64])")
        grid[key.strip()] = [yaml.safe_load(v) for v in values.split("|")]
    return grid


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower cost x, higher value y) by any other point."""
    return [i for i, (x, y) in enumerate(points)
            if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)]


def run_sweep(base_config: Path | None, overrides: dict[str, Any], grid: dict[str, list[Any]], out_dir: Path,
              *, latency_calls: int = 2_000) -> list[dict[str, Any]]:
    """Distil and evaluate every grid combination; results.json is rewritten after each (resumable: done ones are kept)."""
    import policykd.runtime as runtime
    from policykd.distill import distill
    from policykd.evaluate import compare, run_episodes
    from policykd.latency import measure_latency
    from policykd.teachers import load_teacher
    from policykd.tracking import Tracker

    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text())["runs"] if results_path.exists() else []
    base = load_config(base_config, overrides)
    teacher = load_teacher(base.teacher, algo=base.algo, env_id=base.env_id)
    seeds = [base.eval_seed + i for i in range(base.eval_episodes)]
    teacher_episodes = run_episodes(teacher.act, teacher.env_spec, seeds, n_envs=base.n_envs)
    for index, combo in enumerate(combinations(grid)):
        name = f"sweep{index:03d}__" + "__".join(f"{k}={json.dumps(v, separators=(',', ''))}" for k, v in combo.items())
        if any(r["name"] == name for r in results):
            continue
        config = DistillConfig(**{**base.to_dict(), **combo, "out_dir": str(out_dir / "runs"), "run_name": name})
        result = distill(config, teacher=teacher, tracker=Tracker(out_dir / "runs" / name / "history.jsonl", quiet=True))
        report = compare(teacher, result.student, episodes=config.eval_episodes, eval_seed=config.eval_seed,
                         n_envs=config.n_envs, teacher_episodes=teacher_episodes, latency_calls=100)
        policy = runtime.load(result.run_dir / "student")
        probe = teacher_episodes.states[0]
        results.append({
            "name": name, **{f"param/{k}": v for k, v in combo.items()}, "ratio": report["ratio"],
            "student_return": report["student"]["mean"], "teacher_return": report["teacher"]["mean"],
            "student_params": report["student"]["params"], "teacher_actor_params": report["teacher"]["actor_params"],
            "numpy_p50_us": measure_latency(lambda: policy(probe), calls=latency_calls)["p50"],
            "kl": report["agreement"]["kl"], "wall_s": result.wall_s, "labelled_steps": config.labelled_steps, "seed": config.seed,
        })
        atomic_write_json(results_path, {"teacher": teacher.identity(), "base_config": base.to_dict(), "grid": grid,
                                         "eval_seeds": seeds, "runs": results, "versions": package_versions()})
    write_outputs(out_dir, results, env_id=teacher.env_spec.env_id)
    return results


def write_outputs(out_dir: Path, results: list[dict[str, Any]], *, env_id: str) -> None:
    """results.md (a table, Pareto-optimal rows marked) and pareto.png."""
    params_front = set(pareto_front([(r["student_params"], r["ratio"]) for r in results]))
    latency_front = set(pareto_front([(r["numpy_p50_us"], r["ratio"]) for r in results]))
    swept = sorted({k for r in results for k in r if k.startswith("param/")})
    varied = [k for k in swept if len({json.dumps(r[k]) for r in results}) > 1] or swept
    columns = [k.removeprefix("param/") for k in swept] + list(SWEPT_COLUMNS) + ["Pareto"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, r in enumerate(results):
        marks = ("params " if i in params_front else "") + ("latency" if i in latency_front else "")
        cells = [json.dumps(r[k]) for k in swept] + [f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in SWEPT_COLUMNS]
        lines.append("| " + " | ".join(cells + [marks.strip() or "-"]) + " |")
    atomic_write_bytes(out_dir / "results.md", ("\n".join(lines) + "\n").encode())

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, front, label in ((axes[0], "student_params", params_front, "student parameters (log scale)"),
                                  (axes[1], "numpy_p50_us", latency_front, "numpy runtime p50 latency, batch 1 (us, log scale)")):
        xs = np.array([r[key] for r in results], dtype=float)
        ys = np.array([r["ratio"] for r in results], dtype=float)
        ax.scatter(xs, ys, color="tab:blue", zorder=3)
        order = sorted(front, key=lambda i: xs[i])
        ax.plot(xs[order], ys[order], color="tab:red", lw=1.5, label="Pareto front", zorder=2)
        for i, r in enumerate(results):
            ax.annotate(", ".join(f"{r[k]}" for k in varied), (xs[i], ys[i]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        ax.axhline(1.0, color="tab:gray", ls="--", lw=1, label="teacher parity")
        ax.set(xscale="log", xlabel=label, ylabel="student / teacher return (same seeds)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.margins(x=0.15)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{env_id}: sweep over {', '.join(k.removeprefix('param/') for k in varied)}")
    fig.savefig(out_dir / "pareto.png", dpi=110)
    plt.close(fig)
