"""The main job, end to end: distil -> evaluate -> film -> plots -> upload, in one locked run folder.

`distill_and_evaluate(config)` is what `policykd distill` runs. It owns the tracker's whole lifetime (opened
here, finished here, also on failure) and holds the run folder's lock from the first check to the last file,
so a second process on the same run is refused instead of interleaving with this one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policykd.artifacts import write_output_json
from policykd.config import DistillConfig
from policykd.distill import DistillResult, distill_in_run_dir, load_run_state, prepare_run_dir
from policykd.ensemble import load_teacher_for
from policykd.evaluate import Comparison, compare
from policykd.progress import RoundMetrics
from policykd.rollout import Episodes
from policykd.run_dir import RunLock
from policykd.students import Student
from policykd.teachers import Teacher
from policykd.tracking import Tracker, make_tracker


@dataclass(frozen=True)
class PipelineResult:
    """What one `policykd distill` produced; report is the teacher-vs-student comparison (None without --eval)."""

    run_dir: Path
    student_dir: Path
    distillation: DistillResult
    report: Comparison | None
    rollout_png: Path | None
    plots: tuple[Path, ...]


def distill_and_evaluate(config: DistillConfig, *, resume: bool = False, evaluate: bool = True,
                         teacher: Teacher | None = None, on_report: Callable[[Comparison], None] | None = None,
                         on_run_dir: Callable[[Path], None] | None = None, teacher_episodes: Episodes | None = None,
                         quiet: bool = False, on_round: Callable[[RoundMetrics], None] | None = None) -> PipelineResult:
    """Distil a student for `config`, then (evaluate) compare it with the teacher on config.eval_episodes seeds,
    write eval.json, film both (config.rollout_steps > 0), draw the plots and log all of it to the tracker.
    on_report(report) is called as soon as the comparison exists (the CLI prints it there); on_run_dir(run_dir) as
    soon as the run folder is known (the CLI names it when interrupted). Sweeps and benchmarks that evaluate many
    students against one teacher pass its teacher_episodes on the same seeds (run once), and quiet (no console)."""
    from policykd.report import make_plots

    teacher = teacher or load_teacher_for(config)
    run_dir = prepare_run_dir(config, teacher, resume=resume)
    if on_run_dir is not None:
        on_run_dir(run_dir)
    with RunLock(run_dir):
        state = load_run_state(config, teacher, run_dir, resume=resume)
        tracker = make_tracker(run_dir, config.to_dict(), wandb=config.wandb, tensorboard=config.tensorboard,
                               project=config.wandb_project, quiet=quiet)
        try:
            result = distill_in_run_dir(config, teacher, run_dir, state, tracker, on_round=on_round)
            report = None
            if evaluate:
                report = compare(teacher, result.student, episodes=config.eval_episodes, eval_seed=config.eval_seed,
                                 n_envs=config.n_envs, latency_calls=config.latency_calls, progress_factory=tracker.progress,
                                 teacher_episodes=teacher_episodes, student_view=config.student_view)
                write_output_json(run_dir / "eval.json", report.to_json(), "distill")
                log_evaluation(tracker, report)
                if on_report is not None:
                    on_report(report)
            rollout_png = None
            if config.rollout_steps > 0:
                rollout_png = film_side_by_side(teacher, result.student, run_dir, seed=config.eval_seed,
                                                steps=config.rollout_steps, tracker=tracker, student_view=config.student_view)
                tracker.image("plots/rollout", rollout_png)
            plots = tuple(make_plots(run_dir))
            for plot in plots:
                tracker.image(f"plots/{plot.stem}", plot)
            tracker.artifact(run_dir / "student", name=f"student-{run_dir.name}", kind="student")
        finally:
            tracker.finish()
    return PipelineResult(run_dir=run_dir, student_dir=run_dir / "student", distillation=result, report=report,
                          rollout_png=rollout_png, plots=plots)


def film_side_by_side(teacher: Teacher, student: Student, run_dir: Path, *, seed: int, steps: int,
                      tracker: Tracker, student_view: str = "") -> Path:
    """Teacher and student on the same seeded episode: RUN_DIR/rollout.png (strip, teacher above) and rollout.gif."""
    from policykd.filmstrip import record_episode, write_side_by_side

    frames = []
    with tracker.progress(f"filming teacher and student on seed {seed} ({steps} steps each)", 2) as advance:
        for act, view in ((lambda o: teacher.act(o, deterministic=True), ""), (student.act, student_view)):
            student.reset()  # a recurrent student starts the episode from a zero state
            frames.append(record_episode(act, teacher.env_spec, seed, max_steps=steps, view=view))
            advance(1)
    png, gif = run_dir / "rollout.png", run_dir / "rollout.gif"
    write_side_by_side(*frames, png, gif)
    return png


def log_evaluation(tracker: Tracker, report: Comparison) -> None:
    """The teacher-vs-student comparison and latency as summary values and tables."""
    stats = ("mean", "std", "iqm", "ci95_low", "ci95_high")
    summary: dict[str, Any] = {"eval/ratio": report.ratio, "eval/ratio_ci95_low": report.ratio_ci95[0],
                               "eval/ratio_ci95_high": report.ratio_ci95[1], "eval/teacher_failures": report.teacher.failures,
                               "eval/student_failures": report.student.failures}
    for who, returns in (("teacher", report.teacher), ("student", report.student)):
        summary.update({f"eval/{who}_return_{k}": getattr(returns, k) for k in stats})
    summary.update({f"eval/agreement_{k}": v for k, v in report.agreement.items()})
    summary.update({f"latency/{path}_p50_us": lat["p50"] for path, lat in report.latency_us.items()})
    summary.update({"eval/student_params": report.student_params, "eval/teacher_actor_params": report.teacher_actor_params})
    tracker.summary(summary)
    tracker.table("eval/comparison", ["policy", *stats, "episodes"],
                  [[who] + [getattr(returns, k) for k in (*stats, "episodes")]
                   for who, returns in (("teacher", report.teacher), ("student", report.student))])
    tracker.table("latency/batch1_us", ["path", "p50", "p99", "max"],
                  [[path, lat["p50"], lat["p99"], lat["max"]] for path, lat in report.latency_us.items()])
