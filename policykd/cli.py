"""The `policykd` command line: teacher train|eval, collect, distill, eval.

Every command prints one line, not a traceback, for a problem with its input (PolicyKDError).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from policykd.errors import PolicyKDError

app = typer.Typer(help="Distil large stable-baselines3 teachers into compact, verified student policies.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
teacher_app = typer.Typer(help="Train or evaluate teacher policies.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
out = Console()

TEACHER_HELP = "An SB3 .zip (with --env), an rl-zoo run folder (e.g. ../shared/teachers/rl-zoo/ppo/HopperBulletEnv-v0_1), or an agents/ folder."


def _fail(error: Exception) -> None:
    Console(stderr=True).print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _run(fn):
    """Run fn(), turning a PolicyKDError into one line on stderr and exit code 2."""
    try:
        return fn()
    except PolicyKDError as e:
        _fail(e)


def _returns_table(title: str, rows: list[tuple[str, dict]]) -> Table:
    table = Table(title=title)
    for col in ("policy", "mean", "std", "IQM", "95% CI", "episodes"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name, s in rows:
        table.add_row(name, f"{s['mean']:.1f}", f"{s['std']:.1f}", f"{s['iqm']:.1f}", f"[{s['ci95_low']:.1f}, {s['ci95_high']:.1f}]", str(s["episodes"]))
    return table


def print_comparison(report: dict) -> None:
    """Teacher vs student: returns, ratio, agreement, latency, size."""
    out.print(_returns_table(f"{report['env']}: teacher vs student on the same {len(report['seeds'])} seeds",
                             [("teacher", report["teacher"]), ("student", report["student"])]))
    out.print(f"return ratio (1 = teacher parity, lower = worse): [bold]{report['ratio']:.3f}[/bold]")
    if "success_rate" in report["teacher"]:
        out.print(f"success rate (the env's final info['is_success']; laps completed for the racecar): "
                  f"teacher {report['teacher']['success_rate']:.0%}, student {report['student']['success_rate']:.0%}")
    agreement = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report["agreement"].items())
    out.print(f"agreement on held-out teacher states: {agreement}")
    if "teacher_noise_floor" in report:
        other, noisy = report["teacher_noise_floor"]["other_batch"], report["teacher_noise_floor"]["student_error"]
        out.print(f"teacher's noise floor on these seeds (its ratio to itself): {other['ratio']:.3f} stepped "
                  f"{'one env' if other['n_envs'] == 1 else str(other['n_envs']) + ' envs'} at a time, "
                  f"{noisy['ratio']:.3f} with the student's error "
                  f"({noisy['kind']} {noisy['error']:.3g})")
    table = Table(title="batch-1 latency, one thread (us)")
    for col in ("path", "p50", "p99", "max"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for name, lat in report["latency_us"].items():
        table.add_row(name, f"{lat['p50']:.1f}", f"{lat['p99']:.1f}", f"{lat['max']:.1f}")
    out.print(table)
    out.print(f"parameters: teacher actor {report['teacher']['actor_params']:,}, student {report['student']['params']:,} "
              f"({report['student']['params'] / report['teacher']['actor_params']:.1%})")


def film_side_by_side(teacher, student, run_dir: Path, *, seed: int, steps: int) -> Path:
    """Teacher and student on the same seeded episode: RUN_DIR/rollout.png (strip) and rollout.gif."""
    import torch

    from policykd.filmstrip import record_episode, write_side_by_side

    def student_act(obs):
        with torch.no_grad():
            return student.act(torch.as_tensor(obs)).numpy()

    with out.status(f"filming teacher and student on seed {seed} ({steps} steps each)"):
        frames = [record_episode(act, teacher.env_spec, seed, max_steps=steps)
                  for act in (lambda o: teacher.act(o, deterministic=True), student_act)]
        png, gif = run_dir / "rollout.png", run_dir / "rollout.gif"
        write_side_by_side(*frames, png, gif)
    out.print(f"rollout, teacher above student: {png} and {gif}")
    return png


def print_latency(results: dict[str, dict], calls: int) -> None:
    table = Table(title=f"batch-1 latency, one thread, pinned, {calls:,} calls (us)")
    for col in ("path", "p50", "p99", "max", "p50 vs SB3 predict"):
        table.add_column(col, justify="right" if col != "path" else "left")
    base = results.get("sb3_predict", {}).get("p50")
    for name, lat in results.items():
        ratio = f"{base / lat['p50']:.1f}x faster" if base and name != "sb3_predict" else ""
        table.add_row(name, f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", f"{lat['max']:.1f}", ratio)
    out.print(table)


def embedded_report(student: Path, targets: list[str], *, rate: float, observations: int = 32,
                    export_format: str | None = None) -> list[dict]:
    """Run the student on each embedded target, print a table, return the results (with fit to `rate` Hz)."""
    import tempfile

    import numpy as np

    from policykd.embedded import load_target, run_on_target
    from policykd.students import load_student

    s = load_student(student)
    rng = np.random.default_rng(0)
    obs = (s.obs_mean.numpy() + rng.normal(size=(observations, s.spec.obs_dim)) * s.obs_std.numpy()).astype(np.float32)
    results = []
    table = Table(title=f"{student} on embedded targets")
    for col in ("target", "export", "flash", "RAM", "instr/inference", "est. time", f"fits {rate:g} Hz", "output = host"):
        table.add_column(col, justify="right" if col != "target" else "left")
    for name in targets:
        with tempfile.TemporaryDirectory() as work:
            r = run_on_target(student, load_target(name), obs, work, export_format=export_format)
        us = r.get("us_per_inference")
        r["control_rate_hz"] = rate
        r["budget_fraction"] = None if us is None else us * 1e-6 * rate
        r["fits_rate"] = None if us is None else bool(r["budget_fraction"] < 1.0)
        results.append(r)
        table.add_row(r["target"], r["export_format"], f"{r['flash_bytes'] / 1024:.1f} KiB", f"{r['ram_bytes'] / 1024:.1f} KiB",
                      f"{r['instructions_per_inference']:,.0f}" if us else "-", f"{us:.1f} us" if us else "- (user-mode qemu)",
                      "-" if us is None else f"{'yes' if r['fits_rate'] else 'NO'} ({r['budget_fraction']:.0%} of the period)",
                      "yes" if r["outputs_equal_host"] else f"max diff {r['max_abs_diff_vs_host']:.2g}")
    out.print(table)
    return results


def log_evaluation(tracker, report: dict) -> None:
    """The teacher-vs-student comparison and latency as summary values and tables."""
    summary = {"eval/ratio": report["ratio"]}
    for who in ("teacher", "student"):
        summary.update({f"eval/{who}_return_{k}": report[who][k] for k in ("mean", "std", "iqm", "ci95_low", "ci95_high")})
    summary.update({f"eval/agreement_{k}": v for k, v in report["agreement"].items()})
    summary.update({f"latency/{path}_p50_us": lat["p50"] for path, lat in report["latency_us"].items()})
    summary.update({"eval/student_params": report["student"]["params"], "eval/teacher_actor_params": report["teacher"]["actor_params"]})
    tracker.summary(summary)
    tracker.table("eval/comparison", ["policy", "mean", "std", "iqm", "ci95_low", "ci95_high", "episodes"],
                  [[who] + [report[who][k] for k in ("mean", "std", "iqm", "ci95_low", "ci95_high", "episodes")] for who in ("teacher", "student")])
    tracker.table("latency/batch1_us", ["path", "p50", "p99", "max"],
                  [[path, lat["p50"], lat["p99"], lat["max"]] for path, lat in report["latency_us"].items()])


@teacher_app.command("train")
def teacher_train(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/teachers/sac_pendulum.yaml."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Agent folder to write (default agents/NAME)."),
    timesteps: Optional[int] = typer.Option(None, help="Override n_timesteps."),
    seed: Optional[int] = typer.Option(None, help="Override the seed."),
) -> None:
    """Train a large SB3 teacher from a YAML recipe; writes model.zip + model card into agents/."""
    from policykd.teacher_training import load_train_config, train_teacher

    def go():
        cfg = load_train_config(config, {"n_timesteps": timesteps, "seed": seed})
        path = train_teacher(cfg, out_dir or Path("agents") / cfg.name)
        card = json.loads((path / "model_card.json").read_text())
        ev = card["evaluation"]
        out.print(f"wrote {path}: return {ev['mean']:.1f} +- {ev['std']:.1f} over {ev['episodes']} seeded episodes, "
                  f"{card['training']['wall_s']:.0f} s of training")

    _run(go)


@teacher_app.command("eval")
def teacher_eval(
    teacher: Path = typer.Argument(..., help=TEACHER_HELP),
    episodes: int = typer.Option(10, min=1, help="Episodes, on seeds seed..seed+episodes-1."),
    seed: int = typer.Option(1_000_000, help="First evaluation seed."),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None, help="Algorithm (inferred when absent)."),
    n_envs: int = typer.Option(2, min=1, help="Worker processes."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON here."),
) -> None:
    """Run a teacher deterministically on seeded episodes and report its return."""
    from policykd.artifacts import atomic_write_json
    from policykd.evaluate import run_episodes, summarize_returns
    from policykd.teachers import load_teacher
    from policykd.tracking import Tracker

    def go():
        t = load_teacher(teacher, algo=algo, env_id=env)
        seeds = [seed + i for i in range(episodes)]
        with Tracker().progress(f"evaluating {t.env_spec.env_id}", episodes) as advance:
            eps = run_episodes(lambda o: t.act(o), t.env_spec, seeds, n_envs=n_envs, progress=advance)
        stats = summarize_returns(eps.returns)
        out.print(_returns_table(f"{t.algo} teacher on {t.env_spec.env_id}", [(str(teacher), stats)]))
        if json_out:
            atomic_write_json(json_out, {"teacher": t.identity(), "seeds": seeds, **stats, "returns": eps.returns.tolist(),
                                         "lengths": eps.lengths.tolist()})

    _run(go)


@app.command()
def collect(
    teacher: Path = typer.Argument(..., help=TEACHER_HELP),
    out_dir: Path = typer.Option(..., "--out", help="Buffer directory to create."),
    steps: int = typer.Option(10_000, min=1, help="Teacher-labelled env steps to collect."),
    beta: float = typer.Option(1.0, min=0.0, max=1.0, help="Probability the teacher acts at each step (else the student)."),
    student: Optional[Path] = typer.Option(None, help="Student folder; needed when beta < 1."),
    seed: int = typer.Option(0),
    n_envs: int = typer.Option(2, min=1, help="Worker processes."),
    deterministic: bool = typer.Option(False, help="Acting policy takes its mode instead of sampling."),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None),
) -> None:
    """Roll out teacher / student / beta-mixture and write every state with the teacher's labels to a buffer."""
    from policykd.buffer import Buffer
    from policykd.rollout import collect as collect_states
    from policykd.students import load_student
    from policykd.teachers import load_teacher
    from policykd.tracking import Tracker

    def go():
        if beta < 1.0 and student is None:
            raise PolicyKDError("--beta below 1 lets the student act; pass --student STUDENT_DIR")
        t = load_teacher(teacher, algo=algo, env_id=env)
        s = load_student(student) if student else None
        buffer = Buffer.create(out_dir, observation_space=t.observation_space, action_space=t.action_space, family=t.family,
                               teacher=t.identity(), normalizer=t.normalizer.to_json(),
                               config={"steps": steps, "beta": beta, "seed": seed, "n_envs": n_envs, "student": str(student) if student else None})
        with Tracker().progress("collecting", steps) as advance:
            rows = collect_states(t, steps=steps, beta=beta, seed=seed, n_envs=n_envs, student=s,
                                  sample_actions=not deterministic, on_progress=advance)
        buffer.append(rows)
        out.print(f"wrote {buffer.rows} labelled states ({int(rows['episode_id'].max()) + 1} episodes) to {out_dir}")

    _run(go)


@app.command()
def distill(
    teacher: Optional[str] = typer.Argument(None, help=TEACHER_HELP + " Overrides the config's `teacher`."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (configs/distill/*.yaml); flags override it."),
    steps: Optional[int] = typer.Option(None, help="Budget of teacher-labelled env steps."),
    mode: Optional[str] = typer.Option(None, help="teacher (teacher-driven) or dagger (beta-mixture per round)."),
    rounds: Optional[int] = typer.Option(None, help="Collection/training rounds."),
    hidden: Optional[str] = typer.Option(None, help="Student hidden sizes, e.g. 64,64."),
    seed: Optional[int] = typer.Option(None),
    out_dir: Optional[str] = typer.Option(None, help="Where run folders go (default runs/)."),
    run_name: Optional[str] = typer.Option(None, help="Run folder name (needed with --resume)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate teacher and student afterwards."),
    wandb: Optional[bool] = typer.Option(None, "--wandb/--no-wandb", help="Log to Weights & Biases (offline without an API key)."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Write TensorBoard scalars to RUN_DIR/tensorboard."),
    episodes: Optional[int] = typer.Option(None, help="Evaluation episodes (default 20)."),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None),
) -> None:
    """Distil a compact student from a teacher (KL on actions + value matching), then compare both."""
    from policykd.artifacts import atomic_write_json
    from policykd.config import load_config
    from policykd.distill import distill as run_distill
    from policykd.evaluate import compare

    def go():
        if resume and run_name is None:
            raise PolicyKDError("--resume needs --run-name NAME of the run to continue")
        overrides = {"teacher": teacher, "labelled_steps": steps, "data_mode": mode, "rounds": rounds, "seed": seed,
                     "out_dir": out_dir, "run_name": run_name, "eval_episodes": episodes, "env_id": env, "algo": algo,
                     "hidden": [int(h) for h in hidden.split(",")] if hidden else None, "wandb": wandb,
                     "tensorboard": tensorboard}
        cfg = load_config(config, overrides)
        if not cfg.teacher:
            raise PolicyKDError("no teacher given; pass TEACHER or a --config with a `teacher:` key")
        result = run_distill(cfg, resume=resume)
        out.print(f"student written to {result.run_dir / 'student'} ({result.wall_s:.1f} s collection + training)")
        tracker = result.tracker
        if evaluate:
            report = compare(result.teacher, result.student, episodes=cfg.eval_episodes, eval_seed=cfg.eval_seed,
                             n_envs=cfg.n_envs, latency_calls=cfg.latency_calls, progress_factory=tracker.progress)
            atomic_write_json(result.run_dir / "eval.json", report)
            print_comparison(report)
            log_evaluation(tracker, report)
            out.print(f"report: {result.run_dir / 'eval.json'}")
        if cfg.rollout_steps > 0:
            png = film_side_by_side(result.teacher, result.student, result.run_dir, seed=cfg.eval_seed,
                                    steps=cfg.rollout_steps)
            tracker.image("plots/rollout", png)
        from policykd.report import make_plots

        for plot in make_plots(result.run_dir):
            tracker.image(f"plots/{plot.stem}", plot)
        tracker.artifact(result.run_dir / "student", name=f"student-{result.run_dir.name}", kind="student")
        tracker.finish()

    _run(go)


@app.command("eval")
def eval_command(
    teacher: Path = typer.Argument(..., help=TEACHER_HELP),
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors)."),
    episodes: int = typer.Option(20, min=1),
    seed: int = typer.Option(1_000_000, help="First evaluation seed; episode i uses seed + i for both policies."),
    n_envs: int = typer.Option(2, min=1),
    latency_calls: int = typer.Option(2_000, min=10, help="Timed batch-1 calls per latency path."),
    noise_floor: bool = typer.Option(False, "--noise-floor", help="Also run the teacher twice more on the same seeds: "
                                     "one env at a time, and with the student's action error added. A student ratio "
                                     "within that spread is at the teacher's own noise floor (chaotic envs: Hopper)."),
    latency: bool = typer.Option(False, "--latency", help="Also time every backend (torch, numpy, onnx, C) and the embedded targets."),
    rate: float = typer.Option(1000.0, help="With --latency: control rate in Hz the student must fit on each target."),
    target: list[str] = typer.Option(["cortex-m4", "aarch64"], help="With --latency: embedded targets (repeatable)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    env: Optional[str] = typer.Option(None),
    algo: Optional[str] = typer.Option(None),
) -> None:
    """Compare teacher and student: returns on the same seeds, agreement, latency, parameter counts."""
    from policykd.artifacts import atomic_write_json
    from policykd.evaluate import compare
    from policykd.students import load_student
    from policykd.teachers import load_teacher
    from policykd.tracking import Tracker

    def go():
        t = load_teacher(teacher, algo=algo, env_id=env)
        s = load_student(student)
        if s.spec.obs_dim != t.obs_dim or s.spec.family != t.family:
            raise PolicyKDError(f"student ({s.spec.family}, obs {s.spec.obs_dim}) does not fit teacher ({t.family}, obs {t.obs_dim})")
        report = compare(t, s, episodes=episodes, eval_seed=seed, n_envs=n_envs, latency_calls=latency_calls,
                         noise_floor=noise_floor, progress_factory=Tracker().progress)
        print_comparison(report)
        if latency:
            from policykd.latency import BACKENDS, backend_latencies

            report["backends_latency_us"] = backend_latencies(student, BACKENDS, teacher=t, calls=latency_calls)
            print_latency(report["backends_latency_us"], latency_calls)
            report["embedded"] = [{k: v for k, v in r.items() if not k.endswith("_outputs")}
                                  for r in embedded_report(student, target, rate=rate)]
        if json_out:
            atomic_write_json(json_out, report)

    _run(go)


@app.command()
def sweep(
    teacher: Optional[str] = typer.Argument(None, help=TEACHER_HELP + " Overrides the config's `teacher`."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Base YAML recipe; every combination overrides it."),
    grid: list[str] = typer.Option(..., "--grid", help="KEY=V1|V2 (values in YAML), repeatable; the sweep is their product."),
    out_dir: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep folder (results.json, results.md, pareto.png, runs/)."),
    seed: Optional[int] = typer.Option(None),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    wandb_sweep: bool = typer.Option(False, "--wandb-sweep", help="Run the grid as a W&B sweep (needs `wandb login` and network)."),
    project: str = typer.Option("policykd", help="W&B project of the sweep."),
) -> None:
    """A grid sweep (student size, loss variants, data mode, ...) with a table and a Pareto plot; locally, or as a
    W&B sweep whose agent runs here."""
    from policykd.sweep import parse_grid, run_sweep, run_wandb_sweep

    def go():
        overrides = {"teacher": teacher, "seed": seed, "env_id": env}
        if wandb_sweep:
            results = run_wandb_sweep(config, overrides, parse_grid(grid), out_dir, project=project)
        else:
            results = run_sweep(config, overrides, parse_grid(grid), out_dir)
        out.print((out_dir / "results.md").read_text())
        out.print(f"{len(results)} runs; table {out_dir / 'results.md'}, plot {out_dir / 'pareto.png'}")

    _run(go)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by `policykd distill` (runs/NAME).")) -> None:
    """Write RUN_DIR/report.md: teacher vs student, latency, per-round metrics, plots, config and versions."""
    from policykd.report import write_report

    _run(lambda: out.print(f"wrote {write_report(run_dir)}"))


@app.command()
def export(
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="safetensors, onnx, onnx-int8, torchscript or c."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default STUDENT/../export-FORMAT)."),
) -> None:
    """Export a student; every artefact has normalisation and action scaling inside."""
    from policykd.export import export_student

    def go():
        files = export_student(student, out_dir or student.parent / f"export-{fmt}", fmt)
        for f in files:
            out.print(f"wrote {f} ({f.stat().st_size:,} bytes)")

    _run(go)


@app.command()
def bench(
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors)."),
    backends: str = typer.Option("torch,numpy,onnx,c", help="Comma-separated: torch, numpy, onnx, c."),
    teacher: Optional[Path] = typer.Option(None, help="Teacher to time beside (default: the one in the student card; 'none' to skip)."),
    calls: int = typer.Option(10_000, min=100, help="Timed batch-1 calls per backend (after a warm-up)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the table as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write latency histograms per backend to this PNG."),
) -> None:
    """Batch-1, one-thread, pinned latency of the student per backend, the teacher and SB3 predict() beside it."""
    from policykd.artifacts import atomic_write_json, package_versions
    from policykd.latency import backend_latencies
    from policykd.students import load_student
    from policykd.teachers import load_teacher

    def go():
        card = load_student(student).card
        teacher_path = teacher or (card.get("teacher") or {}).get("path")
        t = None
        if teacher_path and str(teacher_path) != "none":
            env_id = (card.get("teacher") or {}).get("env", {}).get("env_id")
            t = load_teacher(teacher_path, algo=(card.get("teacher") or {}).get("algo"), env_id=env_id)
        samples: dict = {}
        results = backend_latencies(student, tuple(b.strip() for b in backends.split(",") if b.strip()), teacher=t,
                                    calls=calls, samples=samples)
        print_latency(results, calls)
        if plot:
            from policykd.plots import latency_histograms

            latency_histograms(samples, plot, title=f"{student}: batch-1 latency, {calls:,} calls per path")
            out.print(f"wrote {plot}")
        if json_out:
            atomic_write_json(json_out, {"student": str(student), "calls": calls, "latency_us": results, "versions": package_versions()})

    _run(go)


@app.command()
def embedded(
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors)."),
    target: list[str] = typer.Option(["cortex-m4", "aarch64"], help="Target name in configs/targets/ or a YAML path (repeatable)."),
    rate: float = typer.Option(1000.0, help="Control rate in Hz to check the student against."),
    observations: int = typer.Option(32, min=1, help="Random test observations compared with the host build."),
    fmt: Optional[str] = typer.Option(None, "--format", help="c (float) or c-int16 (fixed point); default: the target's."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
) -> None:
    """Cross-compile the C export, run it under qemu, report flash/RAM, instructions, time and output parity."""
    from policykd.artifacts import atomic_write_json, package_versions

    def go():
        results = embedded_report(student, target, rate=rate, observations=observations, export_format=fmt)
        if json_out:
            atomic_write_json(json_out, {"student": str(student), "results": results, "versions": package_versions()})

    _run(go)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
