"""`policykd report RUN_DIR`: a markdown report of a distillation run (tables, plots, config, versions, seeds)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from policykd.artifacts import atomic_write_bytes, check_replaceable_output, read_json
from policykd.errors import PolicyKDError
from policykd.plots import distillation_curve, latency_chart
from policykd.run_dir import run_in_progress


def _ratio_text(ratio: float) -> str:
    """The return ratio in the report; n/a when undefined (mean returns of opposite signs, or zero)."""
    return f"{ratio:.3f}" if math.isfinite(ratio) else "n/a (the mean returns have opposite signs or one is zero)"


def _table(columns: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def read_evaluation(run_dir: Path, env_id: str | None = None) -> dict | None:
    """RUN_DIR/eval.json (policykd.evaluate.Comparison.to_json), None when the run was not evaluated; a file of another
    shape, or (env_id: the run's env) of another env's evaluation, is refused in one line rather than read as no
    evaluation, failing on a missing key or quoting another run's numbers."""
    eval_path = run_dir / "eval.json"
    if not eval_path.exists():
        return None
    fix = (f"move it away and evaluate again: `policykd eval TEACHER {run_dir / 'student'} --json {eval_path}`")
    report = read_json(eval_path, fix=fix)
    stats = ("mean", "std", "iqm", "ci95_low", "ci95_high")
    problem = None
    if isinstance(report, dict):  # undefined values are written as null (artifacts.write_output_json): NaN, as measured
        report = _undefined_as_nan(report)
    if not isinstance(report, dict):
        problem = f"a JSON {'null' if report is None else type(report).__name__}, not a record"
    elif not (isinstance(report.get("seeds"), list) and report["seeds"]):
        problem = "no list of seeds"
    elif any(not (isinstance(report.get(who), dict) and all(isinstance(report[who].get(k), (int, float)) for k in stats))
             for who in ("teacher", "student")):
        problem = f"teacher and student need {', '.join(stats)}"
    elif not isinstance(report.get("ratio"), (int, float)) or not isinstance(report.get("agreement"), dict):
        problem = "no ratio or agreement"
    elif not (isinstance(report.get("latency_us"), dict)
              and all(isinstance(v, dict) and all(isinstance(v.get(k), (int, float)) for k in ("p50", "p99", "max"))
                      for v in report["latency_us"].values())):
        problem = "latency_us needs p50, p99 and max per path"
    elif env_id is not None and report.get("env") != env_id:
        problem = f"it evaluates on {report.get('env')!r}, this run's teacher acts on {env_id!r}"
    if problem:
        raise PolicyKDError(f"{eval_path} is not this run's evaluation record ({problem}); {fix}")
    return report


def _card_env_id(card: Any) -> str | None:
    """The run's env id from its student card, None where a hand-edited card lacks it (_card_fields then says so)."""
    try:
        return str(card["teacher"]["env"]["env_id"])
    except (KeyError, TypeError):
        return None


@contextmanager
def _card_fields(card_path: Path) -> Iterator[None]:
    """Turn a field the report reads that a hand-edited student card lacks or mistypes into a one-line error."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise PolicyKDError(f"{card_path} lacks or mistypes a field the report reads ({e.__class__.__name__}: {e}); report a "
                            "run whose student.json is as `policykd distill` wrote it") from e


def _undefined_as_nan(report: dict) -> dict:
    """eval.json's null ratio and return statistics (undefined: opposite signs, one episode) as NaN."""
    nan = float("nan")
    report = {**report, "ratio": nan if report.get("ratio", 0) is None else report.get("ratio")}
    for who in ("teacher", "student"):
        if isinstance(report.get(who), dict):
            report[who] = {k: nan if v is None else v for k, v in report[who].items()}
    return report


def _plot_paths(run_dir: Path, report: dict | None) -> list[Path]:
    """The figures of a run: the distillation curve, and latency when it was evaluated."""
    return [run_dir / "plots" / "distillation_curve.png", *([run_dir / "plots" / "latency.png"] if report else [])]


def make_plots(run_dir: Path, *, replace_only_own: bool = False) -> list[Path]:
    """PNG figures of the run in RUN_DIR/plots: the distillation curve (the return panel only when the run evaluated
    the student every round; the final evaluation is quoted otherwise), and latency when evaluated. replace_only_own:
    first refuse (in one line, before drawing any) to replace a figure there that policykd did not draw."""
    card = read_json(run_dir / "student" / "student.json", fix="pass a run folder written by `policykd distill`")
    report = read_evaluation(run_dir, _card_env_id(card))
    paths = _plot_paths(run_dir, report)
    plots = run_dir / "plots"
    if replace_only_own:
        for path in paths:
            check_replaceable_output(path, "image")
    plots.mkdir(exist_ok=True)
    teacher = report["teacher"] if report else {"mean": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan")}
    student = {"mean": report["student"]["mean"], "ratio": report["ratio"]} if report else None
    with _card_fields(run_dir / "student" / "student.json"):
        env = card["teacher"]["env"]["env_id"]
        if not card["history"]:
            raise ValueError("history is empty")
        distillation_curve(card["history"], teacher, paths[0], title=f"{env}: {run_dir.name}", student=student)
    if report:
        latency_chart(report["latency_us"], paths[1], title=f"{env}: batch-1 latency")
    return paths


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "student" / "student.json").exists():
        if (run_dir / "student" / "multitask.json").exists():  # policykd.multitask's CARD
            raise PolicyKDError(f"{run_dir} is a multi-task run (`policykd distill-multi`), whose per-task comparison is its "
                                f"eval.json; report writes single-teacher runs only")
        if (run_dir / "config.json").exists() and run_in_progress(run_dir):
            raise PolicyKDError(f"{run_dir} is being distilled now by another policykd process; report it when that finishes")
        if (run_dir / "config.json").exists():  # a run folder whose distillation stopped before its student was written
            raise PolicyKDError(f"{run_dir} is a distillation run that did not finish (no student/student.json yet); continue it "
                                f"with `policykd distill TEACHER --out-dir {run_dir.parent} --run-name {run_dir.name} --resume` "
                                "(the same recipe), then report")
        raise PolicyKDError(f"{run_dir} is not a finished distillation run (no student/student.json); run `policykd distill` first")
    card = read_json(run_dir / "student" / "student.json", fix="pass a run folder written by `policykd distill`")
    report = read_evaluation(run_dir, _card_env_id(card))
    check_replaceable(run_dir / "report.md")
    with _card_fields(run_dir / "student" / "student.json"):
        lines = _report_lines(run_dir, card, report, _plot_paths(run_dir, report))
    make_plots(run_dir, replace_only_own=True)
    path = run_dir / "report.md"
    body = "\n".join(lines).encode()
    atomic_write_bytes(path, _MARK.format(sha256=hashlib.sha256(body).hexdigest()).encode() + b"\n" + body)
    return path


def _report_lines(run_dir: Path, card: dict, report: dict | None, plots: list[Path]) -> list[str]:
    """report.md's lines, from the student card, the evaluation record (or None) and the plots."""
    config, teacher = card["config"], card["teacher"]
    lines = [f"# Distillation report: {run_dir.name}", "",
             f"Teacher: `{teacher['path']}` ({teacher['algo']}, {teacher['actor_params']:,} actor parameters, sha256 "
             f"`{teacher['sha256'][:16]}`) on `{teacher['env']['env_id']}`. Student: {config['hidden']} {config['activation']} MLP, "
             f"{card['parameters']:,} parameters. Data: {config['data_mode']}, {config['labelled_steps']:,} teacher-labelled env steps "
             f"in {config['rounds']} rounds; distillation seed {config['seed']}; {card['wall_s']:.1f} s of collection + training.", ""]
    if report:
        lines += ["## Teacher vs student", "",
                  f"Same {len(report['seeds'])} seeds ({report['seeds'][0]}-{report['seeds'][-1]}), deterministic actions. "
                  f"Return ratio: **{_ratio_text(report['ratio'])}**.", "",
                  _table(["policy", "mean", "std", "IQM", "95% CI low", "95% CI high"],
                         [[who, report[who]["mean"], report[who]["std"], report[who]["iqm"], report[who]["ci95_low"], report[who]["ci95_high"]]
                          for who in ("teacher", "student")]), "",
                  "Agreement on held-out teacher states: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                                      for k, v in report["agreement"].items()), "",
                  _table(["path", "p50 us", "p99 us", "max us"], [[k, v["p50"], v["p99"], v["max"]] for k, v in report["latency_us"].items()]), ""]
    lines += ["## Per round", "",
              _table(["round", "labelled steps", "beta", "student acted", "KL", "value MSE", "student return", "wall s"],
                     [[h["distill/round"], h["distill/labelled_steps"], h["distill/beta"], h["distill/student_acted"], h["distill/kl"],
                       h["distill/value_mse"], h.get("eval/student_return_mean", "-"), h["distill/wall_s"]] for h in card["history"]]), "",
              "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + ["",
              "## Config", "", "```json", json.dumps(config, indent=2), "```", "",
              "## Versions", "", ", ".join(f"{k} {v}" for k, v in card["versions"].items()), ""]
    return lines


_MARK = "<!-- written by policykd report, sha256 of what follows {sha256}: rewritten by the next report unless edited -->"


def check_replaceable(path: Path) -> None:
    """Refuse to replace a report.md that `policykd report` did not write, or that was edited since (its first line
    holds the sha256 of the rest)."""
    if not path.exists():
        return
    first, _, body = path.read_bytes().partition(b"\n")
    if first.decode(errors="replace") != _MARK.format(sha256=hashlib.sha256(body).hexdigest()):
        raise PolicyKDError(f"{path} was not written by `policykd report` or was edited since; move it away to write a new report")
