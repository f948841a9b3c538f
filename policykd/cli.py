"""The `policykd` command line: teacher train|eval, collect, distill, eval.

Every command prints one line, not a traceback, for a problem with its input (PolicyKDError), and one line naming
an unexpected error as a bug (the traceback with POLICYKD_TRACEBACK=1).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from policykd.config import MAX_ENVS, MAX_EVAL_EPISODES, MAX_LATENCY_CALLS, MAX_SEED, DistillConfig
from policykd.errors import PolicyKDError
from policykd.evaluate import Comparison, ReturnStats
from policykd.tracking import Tracker, make_console

app = typer.Typer(help="Distil large stable-baselines3 teachers into compact, verified student policies.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
teacher_app = typer.Typer(help="Train or evaluate teacher policies.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
buffer_app = typer.Typer(help="Work with teacher-labelled buffers (export to Minari).", no_args_is_help=True)
app.add_typer(buffer_app, name="buffer")
out = make_console()


def _print_version(value: bool) -> None:
    if value:
        from policykd import __version__
        from policykd.artifacts import package_versions

        versions = package_versions()
        out.print(f"policykd {__version__} ({', '.join(f'{name} {v}' for name, v in versions.items() if name != 'policykd')})",
                  highlight=False)
        raise typer.Exit()


@app.callback()
def _main_options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                               help="Print policykd's version and those of the packages it runs on.")) -> None:
    """Distil large stable-baselines3 teachers into compact, verified student policies."""

ALGO_HELP = "Algorithm of the checkpoint (ppo, a2c, trpo, sac, tqc, crossq, td3, ddpg, dqn, qrdqn, ars); inferred when absent."
TRUST_PICKLE_HELP = ("Unpickle teacher files (SB3 zip, vecnormalize.pkl) without the allowlist. Can run code from the file: "
                     "only for files you trust.")
TEACHER_HELP = "An SB3 .zip (with --env), an rl-zoo run folder (e.g. $POLICYKD_TEACHERS/rl-zoo/ppo/HopperBulletEnv-v0_1), or an agents/ folder (e.g. agents/sac-Pendulum-v1)."


def _fail_line(message: str) -> None:
    """`error: MESSAGE` on stderr, on one line whatever the message holds (a path with a newline shows it as \\n)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    make_console(stderr=True).print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)


def _fail(error: Exception) -> None:
    _fail_line(str(error))
    raise typer.Exit(code=2)


def _on_sigterm(signum: int, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _os_error_line(e: OSError) -> str:
    """One line for an OSError: the file the user named (not policykd's temporary sibling of it), and what to do."""
    path = Path(e.filename) if e.filename else None
    if path is not None:
        staged = re.fullmatch(r"\.(.+)\.\w{8}\.tmp", path.name)  # artifacts.atomic_write_bytes' temporary file
        path = path.parent / staged.group(1) if staged else path
    where = f" {path}" if path is not None else ""
    if e.errno == errno.ENOSPC:
        return (f"the disk is full{' writing' + where if where else ''}; free space, then run the command again (with "
                "--resume where it offers one: earlier results are untouched)")
    if e.errno == errno.EEXIST and path is not None and path.is_file():
        return f"{path} is a file where a folder is needed; choose another path (nothing was changed)"
    return f"cannot use{where}: {e.strerror or e}; choose another location (earlier results are untouched)"


def _run(fn, *, on_interrupt: str | Callable[[], str] = "nothing was lost: every file written so far is complete"):
    """Run fn(), turning a PolicyKDError or an OSError (unwritable, full or impossible paths) into one line on
    stderr and exit code 2, and SIGINT / SIGTERM into one line (how to resume) and exit code 130."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        return fn()
    except PolicyKDError as e:
        _fail(e)
    except OSError as e:
        _fail(PolicyKDError(_os_error_line(e)))
    except KeyboardInterrupt:
        message = on_interrupt() if callable(on_interrupt) else on_interrupt
        make_console(stderr=True).print(Text.assemble(("interrupted:", "bold yellow"), f" {message}"), highlight=False,
                                        soft_wrap=True)
        raise typer.Exit(code=130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _path(value: str | Path) -> Path:
    """A path argument or option: refused when empty (pathlib reads "" as ".", the current folder). Defaults come as Paths."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("is an empty path; give a file or folder name")
    return Path(value)


def _output_file(value: str | Path) -> Path:
    """An output file option (--json, --plot): a path as _path reads it, refused when it ends with a separator, which
    names a folder (pathlib drops the trailing "/", so "out.png/" would be written as the file out.png)."""
    path = _path(value)
    if isinstance(value, str) and value.rstrip().endswith(("/", os.sep)):
        raise typer.BadParameter(f"{value!r} ends with a separator, which names a folder; give a file path (no trailing separator)")
    return path


def _positive_hz(value: float) -> float:
    """A control rate option: a positive, finite number of Hz."""
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive number of Hz, e.g. 1000, got {value:g}")
    return value


def check_output_files(json_out: Path | None, plot: Path | None = None) -> None:
    """Refuse, before any long work, an output file (--json, --plot) that cannot be one: a folder, under a file, or an
    existing file that policykd did not write as such an output (a student card, a checkpoint, the user's figure)."""
    from policykd.artifacts import check_replaceable_output

    for path, kind in ((json_out, "json"), (plot, "image")):
        if path is None:
            continue
        check_replaceable_output(path, kind)
        if path.is_dir():
            raise PolicyKDError(f"{path} is a folder; give a file path for the output, e.g. {path / 'result.json'}")
        blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
        if blocking is not None:
            raise PolicyKDError(f"cannot write {path}: {blocking} is a file, not a folder; choose another location")


def _returns_table(title: str, rows: list[tuple[str, ReturnStats]]) -> Table:
    table = Table(title=title)
    for col in ("policy", "mean", "std", "IQM", "95% CI", "episodes"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name, s in rows:
        interval = f"[{_return_text(s.ci95_low)}, {_return_text(s.ci95_high)}]" if math.isfinite(s.ci95_low) else "n/a"
        table.add_row(name, *(_return_text(x) for x in (s.mean, s.std, s.iqm)), interval, str(s.episodes))
    return table


def _return_text(value: float) -> str:
    """A return in the tables: one decimal from 100 up, else 4 significant digits (a return of -0.0073 read -0.0)."""
    return f"{value:.1f}" if abs(value) >= 100 or value == 0 else f"{value:.4g}"


def print_comparison(report: Comparison) -> None:
    """Teacher vs student: returns, ratio, agreement, latency, size."""
    out.print(_returns_table(f"{report.env}: same {len(report.seeds)} seeds",
                             [("teacher", report.teacher), ("student", report.student)]))
    low, high = report.ratio_ci95
    if not math.isfinite(report.ratio):
        out.print(f"return ratio: none, the mean returns are {report.student.mean:.4g} (student) and {report.teacher.mean:.4g} "
                  "(teacher): a 0 or opposite signs make no fraction; compare the means", highlight=False)
    else:
        if math.isfinite(low):
            interval = f" (95% CI [{low:.3f}, {high:.3f}], seeds resampled in pairs)"
        elif len(report.seeds) < 2:
            interval = " (no 95% CI from one episode: evaluate 2 or more, --episodes or the recipe key eval_episodes)"
        else:
            interval = " (no 95% CI: resampled means of 0 or of opposite signs make no ratio)"
        out.print(Text.assemble("return ratio (1 = teacher parity, lower = worse): ", (f"{report.ratio:.3f}", "bold"), interval))
    n = len(report.seeds)
    out.print(f"failed episodes (missed targets, or ended early: falls, crashes): teacher {report.teacher.failures}/{n}, "
              f"student {report.student.failures}/{n}")
    if report.teacher.success_rate is not None:
        out.print(f"success rate (the env's final info['is_success']; laps completed for the racecar): "
                  f"teacher {report.teacher.success_rate:.0%}, student {report.student.success_rate:.0%}")
    agreement = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.agreement.items())
    out.print(f"agreement on held-out teacher states: {agreement}")
    if report.teacher_noise_floor is not None:
        other, noisy = report.teacher_noise_floor["other_batch"], report.teacher_noise_floor["student_error"]
        out.print(f"teacher's noise floor on these seeds (its ratio to itself): {other['ratio']:.3f} stepped "
                  f"{'one env' if other['n_envs'] == 1 else str(other['n_envs']) + ' envs'} at a time, "
                  f"{noisy['ratio']:.3f} with the student's error "
                  f"({noisy['kind']} {noisy['error']:.3g})")
    table = Table(title="batch-1 latency, one thread (us)")
    for col in ("path", "p50", "p99", "max"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for name, lat in report.latency_us.items():
        table.add_row(name, f"{lat['p50']:.1f}", f"{lat['p99']:.1f}", f"{lat['max']:.1f}")
    out.print(table)
    out.print(f"parameters: teacher actor {report.teacher_actor_params:,}, student {report.student_params:,} "
              f"({report.student_params / report.teacher_actor_params:.1%})")


def _parity_cell(parity: dict | None) -> str:
    """An export's parity in the closed-loop table: its action error against the tolerance, FAILED when beyond."""
    if not parity or parity.get("passed") is None:
        return ""
    if "argmax_agreement" in parity:
        text = f"argmax {parity['argmax_agreement']:.1%}"
    else:
        text = f"{parity['max_abs_diff']:.2g} (tol {parity['tolerance']:.2g})"
    return text + ("" if parity["passed"] else " FAILED")


def print_backends_closed_loop(results: dict[str, dict], float_mean: float, teacher_mean: float) -> None:
    """The student's exports in closed loop (policykd.backends.closed_loop), beside the float (torch) student."""
    table = Table(title="closed loop per backend (same seeds)")
    for col in ("backend", "mean return", "ratio vs teacher", "ratio vs float student", "episodes differing", "parity vs torch"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    from policykd.evaluate import return_ratio

    table.add_row("torch (float student)", f"{float_mean:.1f}", f"{return_ratio(float_mean, teacher_mean):.3f}", "1.0000", "", "")
    for name, r in results.items():
        table.add_row(name, f"{r['return_mean']:.1f}", f"{r['ratio_vs_teacher']:.3f}", f"{r['ratio_vs_float_student']:.4f}",
                      f"{r['episodes_differing_from_float']}/{r['episodes']}", _parity_cell(r.get("parity")))
    out.print(table)


def check_card_teacher(record: dict, student: Path) -> None:
    """Refuse a teacher named by a student card unless its checkpoint still has the sha256 the card records."""
    from policykd.artifacts import sha256_file
    from policykd.zoo import find_zoo_run

    path = Path(record["path"])
    if path.is_dir() and (path / "model_card.json").exists():
        model_file = json.loads((path / "model_card.json").read_text()).get("model_file", "model.zip")
        model_zip = path / Path(str(model_file)).name
    elif path.is_dir():
        model_zip = find_zoo_run(path).model_zip
    else:
        model_zip = path
    if not model_zip.is_file():
        raise PolicyKDError(f"the teacher {path} named in {student}/student.json is not there; pass --teacher PATH or --teacher none")
    if sha256_file(model_zip) != record.get("sha256"):
        raise PolicyKDError(f"{model_zip} does not have the sha256 recorded in {student}/student.json, so it is not loaded; "
                            "pass --teacher PATH for a teacher you trust, or --teacher none")


def print_latency(results: dict[str, dict], calls: int) -> None:
    table = Table(title=f"batch-1 latency, one thread, pinned, {calls:,} calls (us)")
    for col in ("path", "p50", "p99", "max", "p50 vs SB3 predict"):
        table.add_column(col, justify="right" if col != "path" else "left")
    base = results.get("sb3_predict", {}).get("p50")
    for name, lat in results.items():
        ratio = f"{base / lat['p50']:.1f}x faster" if base and name != "sb3_predict" else ""
        table.add_row(name, f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", f"{lat['max']:.1f}", ratio)
    out.print(table)


def _memory_cell(used: int, fits: bool | None, fraction: float | None) -> str:
    """'12.3 KiB', or with 'NO' and the share of the target's memory when it does not fit."""
    return f"{used / 1024:.1f} KiB" + ("" if fits is not False else f" NO ({fraction:.0%} of the target's)")


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
    runs = []
    targets = list(dict.fromkeys(targets))  # a target given twice runs once
    with Tracker().progress("cross-compiling and emulating the student", len(targets), unit="targets") as advance:
        for name in targets:
            with tempfile.TemporaryDirectory() as work:
                runs.append(run_on_target(student, load_target(name), obs, work, export_format=export_format))
            advance(1)
    for r in runs:
        us = r.get("us_per_inference")
        r["control_rate_hz"] = rate
        r["budget_fraction"] = None if us is None else us * 1e-6 * rate
        r["fits_rate"] = None if us is None else bool(r["budget_fraction"] < 1.0)
        r["fits_flash"] = None if r.get("flash_fraction") is None else bool(r["flash_fraction"] <= 1.0)
        r["fits_ram"] = bool(r["ram_fraction"] <= 1.0)
        results.append(r)
        table.add_row(r["target"], r["export_format"], _memory_cell(r["flash_bytes"], r["fits_flash"], r.get("flash_fraction")),
                      _memory_cell(r["ram_bytes"], r["fits_ram"], r["ram_fraction"]),
                      f"{r['instructions_per_inference']:,.0f}" if us else "-", f"{us:.1f} us" if us else "- (user-mode qemu)",
                      "-" if us is None else f"{'yes' if r['fits_rate'] else 'NO'} ({r['budget_fraction']:.0%} of the period)",
                      "yes" if r["outputs_equal_host"] else f"max diff {r['max_abs_diff_vs_host']:.2g}")
    out.print(table)
    return results


@teacher_app.command("train")
def teacher_train(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/teachers/sac_pendulum.yaml.", parser=_path),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Agent folder to write (default agents/NAME).", parser=_path),
    timesteps: Optional[int] = typer.Option(None, min=1, help="Override n_timesteps."),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Override the seed."),
) -> None:
    """Train a large SB3 teacher from a YAML recipe; writes model.zip + model card into agents/."""
    from policykd.teacher_recipe import load_train_config
    from policykd.teacher_training import train_teacher

    def go():
        cfg = load_train_config(config, {"n_timesteps": timesteps, "seed": seed})
        path = train_teacher(cfg, out_dir or Path("agents") / cfg.name)
        card = json.loads((path / "model_card.json").read_text())
        ev = card["evaluation"]
        out.print(f"wrote {path}: return {ev['mean']:.1f} +- {ev['std']:.1f} over {ev['episodes']} seeded episodes, "
                  f"{card['training']['wall_s']:.0f} s of training")

    _run(go, on_interrupt="no agent folder was written (teacher training does not resume: run it again to start over)")


@teacher_app.command("eval")
def teacher_eval(
    teacher: Path = typer.Argument(..., help=TEACHER_HELP, parser=_path),
    episodes: int = typer.Option(10, min=1, max=MAX_EVAL_EPISODES, help="Episodes, on seeds seed..seed+episodes-1."),
    seed: int = typer.Option(1_000_000, min=0, max=MAX_SEED, help="First evaluation seed."),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None, help=ALGO_HELP),
    n_envs: int = typer.Option(2, min=1, max=MAX_ENVS, help="Worker processes."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON here.", parser=_output_file),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
) -> None:
    """Run a teacher deterministically on seeded episodes and report its return."""
    from policykd.artifacts import write_output_json
    from policykd.rollout import run_episodes
    from policykd.teachers import load_teacher
    from policykd.tracking import Tracker

    def go():
        check_output_files(json_out)
        t = load_teacher(teacher, algo=algo, env_id=env, trust_pickle=trust_pickle)
        seeds = [seed + i for i in range(episodes)]
        with Tracker().progress(f"evaluating {t.env_spec.env_id}", episodes) as advance:
            eps = run_episodes(lambda o: t.act(o), t.env_spec, seeds, n_envs=n_envs, progress=advance)
        stats = ReturnStats.of_episodes(eps)
        out.print(_returns_table(f"{t.algo} teacher on {t.env_spec.env_id}", [(str(teacher), stats)]))
        if json_out:
            write_output_json(json_out, {"teacher": t.identity(), "seeds": seeds, **stats.to_json(), "lengths": eps.lengths.tolist()}, "teacher eval")

    _run(go)


ROLLOUT_OPTIONS = ("steps", "beta", "student", "seed", "n_envs", "deterministic", "chunk_steps", "resume", "backend",
                   "num_workers", "address")  # collect's options that --from-minari does not use


@app.command()
def collect(
    ctx: typer.Context,
    teacher: Path = typer.Argument(..., help=TEACHER_HELP, parser=_path),
    out_dir: Path = typer.Option(..., "--out", help="Buffer directory to create (or to continue, with --resume).", parser=_path),
    steps: int = typer.Option(10_000, min=1, help="Teacher-labelled env steps to collect."),
    beta: float = typer.Option(1.0, min=0.0, max=1.0, help="Probability the teacher acts at each step (else the student)."),
    student: Optional[Path] = typer.Option(None, help="Student folder; needed when beta < 1.", parser=_path),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of the envs and of the acting policy's sampling."),
    n_envs: int = typer.Option(2, min=1, max=MAX_ENVS, help="Worker processes."),
    deterministic: bool = typer.Option(False, help="Acting policy takes its mode instead of sampling."),
    chunk_steps: int = typer.Option(5_000, min=1, help="Rows per chunk: each is committed to disk as soon as it fills."),
    resume: bool = typer.Option(False, help="Continue an interrupted collection in --out (same teacher and settings)."),
    from_minari: Optional[str] = typer.Option(None, "--from-minari", help="Build the buffer from this local Minari dataset id "
                                              "instead of rolling out: its labels if policykd exported it from this teacher, "
                                              "else the teacher labels its observations."),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None, help=ALGO_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
    backend: str = typer.Option("local", help="local (this machine) or ray (rollout workers as Ray actors, one chunk per "
                                'round; pip install "policykd\\[ray]").'),
    num_workers: int = typer.Option(2, "--num-workers", min=1, help="With --backend ray: rollout actors, --n-envs envs each."),
    address: Optional[str] = typer.Option(None, "--address", help="With --backend ray: the Ray cluster to join (default: a local one)."),
) -> None:
    """Roll out teacher / student / beta-mixture and write every state with the teacher's labels to a buffer.

    Chunks are committed as they fill: an interrupted collection keeps them and continues with --resume."""
    from policykd.artifacts import sha256_file
    from policykd.collection import collect_to_buffer
    from policykd.collectors import round_collector
    from policykd.config import load_config
    from policykd.student_format import WEIGHTS_FILE
    from policykd.students import load_student
    from policykd.teachers import load_teacher
    from policykd.tracking import Tracker

    def go():
        if from_minari is not None:
            rollout = [f"--{name.replace('_', '-')}" for name in ROLLOUT_OPTIONS
                       if ctx.get_parameter_source(name) is not _CLICK_CORE.ParameterSource.DEFAULT]
            if rollout:
                raise PolicyKDError(f"--from-minari builds the buffer from the dataset's rows: {', '.join(rollout)} "
                                    f"(rollout option{'s' if len(rollout) > 1 else ''}) would be ignored; drop "
                                    f"{'them' if len(rollout) > 1 else 'it'} or collect without --from-minari")
        if beta < 1.0 and student is None:
            raise PolicyKDError("--beta below 1 lets the student act; pass --student STUDENT_DIR")
        t = load_teacher(teacher, algo=algo, env_id=env, trust_pickle=trust_pickle)
        if from_minari is not None:
            from policykd.minari_io import buffer_from_minari

            if Path(out_dir).exists() and any(Path(out_dir).iterdir()):  # no --resume here: the buffer is built in one go
                raise PolicyKDError(f"{out_dir} already exists and is not empty; --from-minari writes a new buffer: choose a new --out")
            buffer = buffer_from_minari(from_minari, out_dir, t)
            out.print(f"{buffer.rows} labelled states ({buffer.metadata['config']['labels']} labels) from Minari dataset "
                      f"{from_minari}: {out_dir}")
            return
        s = load_student(student) if student else None
        settings = {"steps": steps, "beta": beta, "seed": seed, "n_envs": n_envs, "deterministic": deterministic,
                    "student": str(student) if student else None,
                    "student_sha256": sha256_file(student / WEIGHTS_FILE) if student else None, "chunk_steps": chunk_steps}
        workers = load_config(None, {"teacher": str(teacher), "env_id": env, "algo": algo, "trust_pickle": trust_pickle,
                                     "n_envs": n_envs, "sample_actions": not deterministic, "backend": backend,
                                     "num_workers": num_workers, "ray_address": address,
                                     "label_every": 1})  # a buffer of consecutive transitions: every state labelled
        if backend == "ray":  # the buffer records where its rows came from: a resume must use the same workers
            settings.update(backend="ray", num_workers=num_workers)
        with round_collector(workers, t) as collector:
            buffer = collect_to_buffer(t, out_dir, settings, student=s, chunk_steps=chunk_steps, resume=resume,
                                       progress=Tracker().progress, collector=collector)
        out.print(f"{buffer.rows} labelled states in {len(buffer.metadata['chunks'])} chunks: {out_dir}")

    _run(go, on_interrupt=(f"every chunk committed so far is kept in {out_dir}; continue with the same command and --resume"
                           if from_minari is None else
                           f"a buffer from a Minari dataset is written once the whole dataset is labelled; run the command "
                           f"again (into a new --out if {out_dir} was written)"))


@buffer_app.command("export")
def buffer_export(
    buffer: Path = typer.Argument(..., help="A buffer folder (policykd collect --out, or runs/NAME/buffer).", parser=_path),
    fmt: str = typer.Option("minari", "--format", help="minari (the only format so far)."),
    dataset_id: str = typer.Option(..., "--dataset-id", help="Minari dataset id, e.g. policykd/hopper/dagger-v0; written under "
                                   "$MINARI_DATASETS_PATH (default ~/.minari/datasets)."),
) -> None:
    """Write a buffer as a dataset other tools read: observations, actions, rewards, with the teacher's action
    distribution and value as per-step infos (teacher_*)."""
    from policykd.minari_io import export_minari

    def go():
        if fmt != "minari":
            raise PolicyKDError(f"unknown buffer export format {fmt!r}; choose minari")
        dataset = export_minari(buffer, dataset_id)
        out.print(f"Minari dataset {dataset_id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps")

    _run(go, on_interrupt="the dataset may be incomplete; remove it with `minari delete` and export again")


_DEFAULTS = DistillConfig()


def _resume_hint(run_dir: Path | None) -> str:
    """The command line that continues an interrupted `policykd distill`."""
    if run_dir is None:
        return "nothing was written yet"
    args = [a for a in sys.argv[1:] if a != "--resume"]
    if "--run-name" not in args and not any(a.startswith("--run-name=") for a in args):
        args += ["--run-name", run_dir.name]
    return f"the last finished round is kept in {run_dir}; continue with: policykd {shlex.join(args)} --resume"


@app.command()
def distill(
    teacher: Optional[str] = typer.Argument(None, help=TEACHER_HELP + " Overrides the config's `teacher`."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (configs/distill/*.yaml); flags override it.", parser=_path),
    steps: Optional[int] = typer.Option(None, min=1, help=f"Budget of teacher-labelled env steps \\[default: {_DEFAULTS.labelled_steps}]."),
    mode: Optional[str] = typer.Option(None, help=f"teacher (teacher-driven) or dagger (beta-mixture per round) \\[default: {_DEFAULTS.data_mode}]."),
    rounds: Optional[int] = typer.Option(None, help=f"Collection/training rounds \\[default: {_DEFAULTS.rounds}]."),
    hidden: Optional[str] = typer.Option(None, help=f"Student hidden sizes, e.g. 64,64 \\[default: {','.join(map(str, _DEFAULTS.hidden))}]."),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help=f"Seed of collection, initialisation and minibatches \\[default: {_DEFAULTS.seed}]."),
    out_dir: Optional[str] = typer.Option(None, help=f"Where run folders go \\[default: {_DEFAULTS.out_dir}]."),
    run_name: Optional[str] = typer.Option(None, help="Run folder name inside --out-dir (needed with --resume) \\[default: ENV__MODE__SEED__TIME]."),
    resume: bool = typer.Option(False, help="Continue an interrupted run (same recipe, teacher and env) from its last finished round."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate teacher and student afterwards."),
    wandb: Optional[bool] = typer.Option(None, "--wandb/--no-wandb", help=f"Log to Weights & Biases (offline without an API key) \\[default: {'--wandb' if _DEFAULTS.wandb else '--no-wandb'}]."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Write TensorBoard scalars to RUN_DIR/tensorboard \\[default: --no-tensorboard]."),
    episodes: Optional[int] = typer.Option(None, help=f"Evaluation episodes \\[default: {_DEFAULTS.eval_episodes}]."),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None, help=ALGO_HELP),
    trust_pickle: Optional[bool] = typer.Option(None, "--trust-pickle", help=TRUST_PICKLE_HELP),
    backend: Optional[str] = typer.Option(None, help="local (this machine) or ray (rollout workers as Ray actors; "
                                          'pip install "policykd\\[ray]") \\[default: local].'),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help=f"Ray rollout actors \\[default: {_DEFAULTS.num_workers}]."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (default: start a local one)."),
    student_view: Optional[str] = typer.Option(None, "--student-view", help="The student's own view of the env when it "
                                               "sees less than the teacher, e.g. rays on the racecar (policykd.views)."),
) -> None:
    """Distil a compact student from a teacher (KL on actions + value matching), then compare both."""
    from policykd.config import load_config
    from policykd.pipeline import distill_and_evaluate

    started: dict[str, Path] = {}

    def go():
        if resume and run_name is None:
            raise PolicyKDError("--resume needs --run-name NAME of the run to continue")
        overrides = {"teacher": teacher, "labelled_steps": steps, "data_mode": mode, "rounds": rounds, "seed": seed,
                     "out_dir": out_dir, "run_name": run_name, "eval_episodes": episodes, "env_id": env, "algo": algo,
                     "hidden": _parse_hidden(hidden), "wandb": wandb, "tensorboard": tensorboard, "trust_pickle": trust_pickle,
                     "backend": backend, "num_workers": num_workers, "ray_address": address, "student_view": student_view}
        cfg = load_config(config, overrides)
        if not cfg.teacher:
            raise PolicyKDError("no teacher given; pass TEACHER or a --config with a `teacher:` key")
        ensemble = None
        if cfg.ensemble:  # recipe key `ensemble`: several teachers, one student (policykd.ensemble)
            from policykd.ensemble import load_teacher_for

            ensemble = load_teacher_for(cfg)
            out.print(ensemble.describe())
        result = distill_and_evaluate(cfg, resume=resume, evaluate=evaluate, on_report=print_comparison, teacher=ensemble,
                                      on_run_dir=lambda d: started.setdefault("run_dir", d))
        out.print(f"student: {result.student_dir} ({result.distillation.wall_s:.1f} s collection + training)")
        if result.report is not None:
            out.print(f"report: {result.run_dir / 'eval.json'}")
        if result.rollout_png is not None:
            out.print(f"rollout, teacher above student: {result.rollout_png} and {result.rollout_png.with_suffix('.gif')}")

    _run(go, on_interrupt=lambda: _resume_hint(started.get("run_dir")))


def _parse_hidden(hidden: str | None) -> list[int] | None:
    if hidden is None:
        return None
    try:
        return [int(h) for h in hidden.split(",")]
    except ValueError:
        raise PolicyKDError(f"--hidden {hidden!r} must be comma-separated layer widths, e.g. 64,64") from None


@app.command("distill-multi")
def distill_multi(
    teachers: list[str] = typer.Argument(..., help="Two or more teachers (as for distill), one per task; their envs may differ."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe; its `teacher` is ignored.", parser=_path),
    steps: Optional[int] = typer.Option(None, min=1, help=f"Labelled env steps per task \\[default: {_DEFAULTS.labelled_steps}]."),
    hidden: Optional[str] = typer.Option(None, help="Hidden sizes, at least two: the first per task, the rest shared \\[default: 64,64]."),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help=f"Seed \\[default: {_DEFAULTS.seed}]."),
    out_dir: Optional[str] = typer.Option(None, help=f"Where run folders go \\[default: {_DEFAULTS.out_dir}]."),
    run_name: Optional[str] = typer.Option(None, help="Run folder name inside --out-dir \\[default: multitask__SEED__TIME]."),
    episodes: Optional[int] = typer.Option(None, help=f"Evaluation episodes per task \\[default: {_DEFAULTS.eval_episodes}]."),
    env: Optional[list[str]] = typer.Option(None, "--env", help="Env id of each teacher, in the teachers' order: once per "
                                            "teacher, '-' for one that records its env (needed for bare SB3 zips)."),
    trust_pickle: Optional[bool] = typer.Option(None, "--trust-pickle", help=TRUST_PICKLE_HELP),
) -> None:
    """Distil several teachers (one per task) into one multi-task student, then compare it with each teacher."""
    import time as time_module

    from policykd.artifacts import write_output_json
    from policykd.config import check_run_name, load_config
    from policykd.multitask import check_multitask_keys, distill_multitask, evaluate_multitask, single_task_parameter_counts
    from policykd.run_dir import RunLock
    from policykd.teachers import load_teacher

    def go():
        overrides = {"teacher": teachers[0], "labelled_steps": steps, "seed": seed, "out_dir": out_dir, "run_name": run_name,
                     "eval_episodes": episodes, "hidden": _parse_hidden(hidden), "trust_pickle": trust_pickle}
        cfg = load_config(config, overrides)
        if len(teachers) < 2:
            raise PolicyKDError("distill-multi needs at least two teachers; use `policykd distill` for one")
        if len(cfg.hidden) < 2:
            raise PolicyKDError(f"--hidden needs at least two layers for a multi-task student (the first is per task), got {cfg.hidden}")
        check_multitask_keys(cfg)
        if env and len(env) != len(teachers):
            raise PolicyKDError(f"--env was given {len(env)} times for {len(teachers)} teachers; give it once per teacher, "
                                "in their order, with '-' for a teacher that records its env")
        env_ids = [None if e == "-" else e for e in env] if env else [None] * len(teachers)
        loaded = [load_teacher(t, env_id=e, trust_pickle=cfg.trust_pickle) for t, e in zip(teachers, env_ids)]
        name = cfg.run_name or f"multitask__{cfg.seed}__{int(time_module.time())}"
        check_run_name(name)
        run_dir = Path(cfg.out_dir) / name
        try:  # created now, not when the student is saved: a second run of this name is refused, never overwrites it
            run_dir.mkdir(parents=True)
        except FileExistsError:
            raise PolicyKDError(f"{run_dir} already exists; choose another --run-name (nothing was changed)") from None
        except OSError as e:
            raise PolicyKDError(f"cannot create the run folder {run_dir}: {e.strerror}; choose another --out-dir") from e
        with RunLock(run_dir):
            result = distill_multitask(loaded, cfg, run_dir, progress=out.print)
            rows = evaluate_multitask(result.student, loaded, episodes=cfg.eval_episodes, eval_seed=cfg.eval_seed, n_envs=cfg.n_envs)
            singles = single_task_parameter_counts(loaded, tuple(cfg.hidden), cfg.activation)
            for row, single in zip(rows, singles):
                out.print(f"task {row['task']} {row['env']}: teacher {row['teacher_return']:.1f}, student {row['student_return']:.1f}, "
                          f"ratio {row['ratio']:.3f} [{row['ratio_ci95'][0]:.3f}, {row['ratio_ci95'][1]:.3f}], "
                          f"single-task student {single:,} parameters")
            total = result.student.parameter_count()
            out.print(f"multi-task student: {total:,} parameters, against {sum(singles):,} for the {len(singles)} single-task "
                      f"students ({total / sum(singles):.2f}x); {result.wall_s:.1f} s collection + training: {run_dir / 'student'}")
            write_output_json(run_dir / "eval.json", {"tasks": rows, "parameters": total, "single_task_parameters": singles,
                                                      "wall_s": result.wall_s}, "distill-multi")

    _run(go, on_interrupt="distill-multi does not resume: what it wrote stays in its run folder; run it again with "
                          "another --run-name")


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    teacher: Path = typer.Argument(..., help=TEACHER_HELP, parser=_path),
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors).", parser=_path),
    episodes: int = typer.Option(20, min=1, max=MAX_EVAL_EPISODES),
    seed: int = typer.Option(1_000_000, min=0, max=MAX_SEED, help="First evaluation seed; episode i uses seed + i for both policies."),
    n_envs: int = typer.Option(2, min=1, max=MAX_ENVS, help="Worker processes."),
    latency_calls: int = typer.Option(2_000, min=10, max=MAX_LATENCY_CALLS, help="Timed batch-1 calls per latency path."),
    noise_floor: bool = typer.Option(False, "--noise-floor", help="Also run the teacher twice more on the same seeds: "
                                     "one env at a time, and with the student's action error added. A student ratio "
                                     "within that spread is at the teacher's own noise floor (chaotic envs: Hopper)."),
    latency: bool = typer.Option(False, "--latency", help="Also time every backend (torch, numpy, onnx, C) and the embedded targets."),
    rate: float = typer.Option(1000.0, callback=_positive_hz, help="With --latency: control rate in Hz the student must fit on each target."),
    target: list[str] = typer.Option(["cortex-m4", "aarch64"], help="With --latency: embedded targets (repeatable)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here.", parser=_output_file),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None, help=ALGO_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
    backend: Optional[list[str]] = typer.Option(None, "--backend", help="Also run the student's export on this backend "
                                                "(numpy, onnx, onnx-int8, torchscript, c, c-int16, c-int8; repeatable) in the env "
                                                "on the same seeds: return ratio vs the teacher and vs the float student."),
) -> None:
    """Compare teacher and student: returns on the same seeds, agreement, latency, parameter counts."""
    from policykd.artifacts import write_output_json
    from policykd.collection import check_student_fits
    from policykd.evaluate import compare
    from policykd.students import load_student
    from policykd.teachers import load_teacher
    from policykd.tracking import Tracker

    def go():
        from policykd.backends import check_backend_tools, check_backends, closed_loop
        from policykd.embedded import check_target_tools, load_target, missing_tools

        check_output_files(json_out)
        check_backends(backend or [])
        check_backend_tools(backend or [])
        given = [f"--{name}" for name in ("target", "rate") if ctx.get_parameter_source(name) is not _CLICK_CORE.ParameterSource.DEFAULT]
        if given and not latency:
            raise PolicyKDError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for the embedded targets of "
                                f"--latency, which is not given: add --latency or drop {'it' if len(given) == 1 else 'them'}")
        targets = list(target)
        if latency:  # everything --latency needs is checked before the evaluation, not after it
            from policykd.latency_backends import BACKENDS

            check_backend_tools(BACKENDS)
            loaded = [load_target(name) for name in target]  # an unknown or malformed target is refused
            if "--target" in given:
                for t in loaded:
                    check_target_tools(t)
            else:  # the default targets: those whose toolchain is installed, and a line for the others
                targets = [t["name"] for t in loaded if not missing_tools(t)]
                for t in loaded:
                    if missing_tools(t):
                        out.print(f"note: skipping target {t['name']} (needs {', '.join(missing_tools(t))}; "
                                  "scripts/install-toolchains.sh installs them)", highlight=False)
        s = load_student(student)
        t = load_teacher(teacher, algo=algo, env_id=env, trust_pickle=trust_pickle)
        view = check_student_fits(s, t, where=str(student))
        distilled_on = (((s.card or {}).get("teacher") or {}).get("env") or {}).get("env_id")
        if distilled_on and distilled_on != t.env_spec.env_id:  # same shapes, another task: legal, but say so
            out.print(f"note: {student} was distilled on {distilled_on}; evaluating it on {t.env_spec.env_id}", highlight=False)
        record = (s.card or {}).get("teacher") or {}
        distilled_from = {m.get("sha256") for m in record.get("members") or [] if isinstance(m, dict)} | {record.get("sha256")}
        if record.get("sha256") and t.identity()["sha256"] not in distilled_from:  # legal (a peer teacher), but say so
            out.print(f"note: {student} was distilled from another teacher ({record.get('path')}, sha256 "
                      f"{str(record['sha256'])[:12]}); the ratio compares it with {teacher}", highlight=False)
        if view and [b for b in backend or [] if b != "torch"]:
            raise PolicyKDError(f"--backend runs exports on the teacher's observation; {student} sees the {view!r} view")
        report = compare(t, s, episodes=episodes, eval_seed=seed, n_envs=n_envs, latency_calls=latency_calls,
                         noise_floor=noise_floor, progress_factory=Tracker().progress, student_view=view)
        print_comparison(report)
        record = report.to_json()
        if [b for b in backend or [] if b != "torch"]:
            record["backends_closed_loop"] = closed_loop(
                t.env_spec, student, backend, list(report.seeds), n_envs=n_envs, float_returns=report.student.returns,
                teacher_mean=report.teacher.mean, progress_factory=Tracker().progress)
            print_backends_closed_loop(record["backends_closed_loop"], report.student.mean, report.teacher.mean)
        if latency:
            from policykd.latency_backends import BACKENDS, backend_latencies

            record["backends_latency_us"] = backend_latencies(student, BACKENDS, teacher=t, calls=latency_calls)
            print_latency(record["backends_latency_us"], latency_calls)
            record["embedded"] = [{k: v for k, v in r.items() if not k.endswith("_outputs")}
                                  for r in embedded_report(student, targets, rate=rate)] if targets else []
        if json_out:
            write_output_json(json_out, record, "eval")

    _run(go)


@app.command()
def sweep(
    ctx: typer.Context,
    teacher: Optional[str] = typer.Argument(None, help=TEACHER_HELP + " Overrides the config's `teacher`."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Base YAML recipe; every combination overrides it.", parser=_path),
    grid: list[str] = typer.Option(..., "--grid", help="KEY=V1|V2 (values in YAML), repeatable; the sweep is their product."),
    out_dir: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep folder (results.json, results.md, pareto.png, runs/).", parser=_path),
    seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Seed of every combination (default: the recipe's, else 0)."),
    env: Optional[str] = typer.Option(None, help="Env id (needed for a bare SB3 zip)."),
    algo: Optional[str] = typer.Option(None, help=ALGO_HELP),
    wandb_sweep: bool = typer.Option(False, "--wandb-sweep", help="Run the grid as a W&B sweep (needs `wandb login` and network)."),
    project: str = typer.Option("policykd", help="W&B project of the sweep."),
    trust_pickle: Optional[bool] = typer.Option(None, "--trust-pickle", help=TRUST_PICKLE_HELP),
    backend: str = typer.Option("local", help="local, or ray: the grid as Ray Tune trials (resumable; pip install \"policykd\\[ray]\")."),
    search: str = typer.Option("grid", help="With --backend ray: grid (every combination) or random (--num-samples draws)."),
    num_samples: int = typer.Option(4, "--num-samples", min=1, help="With --search random: trials to draw."),
    asha: bool = typer.Option(False, "--asha", help="With --backend ray: ASHA early stopping on the per-round evaluation."),
    wandb: bool = typer.Option(False, "--wandb", help="With --backend ray: log through Ray Tune's W&B integration (offline without a key)."),
    address: Optional[str] = typer.Option(None, "--address", help="With --backend ray: the Ray cluster to join."),
) -> None:
    """Sweep a grid of recipe settings and tabulate every student with a Pareto plot.

    Every combination of the --grid options (student size, loss variants, data mode, ...) is distilled and evaluated
    on the same seeds, locally or as a W&B sweep whose agent runs here. Every combination is validated first."""
    from policykd.sweep import MAX_COMBINATIONS, parse_grid, run_sweep, run_wandb_sweep

    def go():
        overrides = {"teacher": teacher, "seed": seed, "env_id": env, "algo": algo, "trust_pickle": trust_pickle}
        if backend not in ("local", "ray"):
            raise PolicyKDError(f"--backend must be local or ray, got {backend!r}")
        given = [f"--{name.replace('_', '-')}" for name in ("search", "num_samples", "asha", "wandb", "address")
                 if ctx.get_parameter_source(name) is not _CLICK_CORE.ParameterSource.DEFAULT]
        if given and backend != "ray":
            raise PolicyKDError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for Ray Tune sweeps; add --backend ray "
                                f"or drop {'it' if len(given) == 1 else 'them'}")
        if "--num-samples" in given and search != "random":
            raise PolicyKDError("--num-samples draws trials for --search random; a grid search runs every combination once: "
                                "add --search random or drop --num-samples")
        if num_samples > MAX_COMBINATIONS:
            raise PolicyKDError(f"--num-samples {num_samples:,} is more than {MAX_COMBINATIONS:,} trials, each a full distillation "
                                "and evaluation; draw fewer")
        if wandb_sweep:
            results = run_wandb_sweep(config, overrides, parse_grid(grid), out_dir, project=project)
        elif backend == "ray":
            from policykd.config import DistillConfig
            from policykd.ray_backend import check_ray_target
            from policykd.tune_sweep import run_tune_sweep

            check_ray_target(DistillConfig(backend="ray", ray_address=address))
            if teacher and Path(teacher).exists():
                overrides["teacher"] = str(Path(teacher).resolve())
            # trials run in folders of Ray's: the recipe's path must not depend on this one
            results = run_tune_sweep(config.resolve() if config else None, overrides, parse_grid(grid), out_dir, search=search, num_samples=num_samples,
                                     asha=asha, wandb=wandb, address=address)
        else:
            results = run_sweep(config, overrides, parse_grid(grid), out_dir)
        out.print((out_dir / "results.md").read_text())
        out.print(f"{len(results)} runs; table {out_dir / 'results.md'}, plot {out_dir / 'pareto.png'}")

    _run(go, on_interrupt=f"finished combinations are kept in {out_dir / 'results.json'}, the interrupted one's finished "
                          "rounds in its run folder; continue with the same command")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by `policykd distill` (runs/NAME).", parser=_path)) -> None:
    """Write RUN_DIR/report.md: teacher vs student, latency, per-round metrics, plots, config and versions."""
    from policykd.report import write_report

    _run(lambda: out.print(f"wrote {write_report(run_dir)}"))


@app.command()
def export(
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors).", parser=_path),
    fmt: str = typer.Option("onnx", "--format", "-f", help="safetensors, onnx, onnx-int8, torchscript, c, c-int16 or c-int8 (fixed point, for microcontrollers)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default STUDENT/../export-FORMAT).", parser=_path),
) -> None:
    """Export a student, with normalisation and action scaling inside, checked against the torch student.

    The parity on 1,000 observations is printed and recorded in export-FORMAT.json; a failed check removes the files."""
    from policykd.export import describe_parity, export_with_parity

    def go():
        files, parity = export_with_parity(student, out_dir or student.parent / f"export-{fmt}", fmt)
        for f in files:
            out.print(f"wrote {f} ({f.stat().st_size:,} bytes)")
        out.print(describe_parity(parity))

    _run(go)


@app.command()
def bench(
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors).", parser=_path),
    backends: str = typer.Option("torch,numpy,onnx,c", help="Comma-separated: torch, numpy, onnx, c (a compiled C timer), "
                                 "c-ctypes (the C export called from Python through ctypes)."),
    teacher: Optional[Path] = typer.Option(None, help="Teacher to time beside (default: the one in the student card; 'none' to skip).", parser=_path),
    calls: int = typer.Option(10_000, min=100, max=MAX_LATENCY_CALLS, help="Timed batch-1 calls per backend (after a warm-up)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the table as JSON here.", parser=_output_file),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write latency histograms per backend to this PNG.", parser=_output_file),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
) -> None:
    """Batch-1, one-thread, pinned latency of the student per backend, the teacher and SB3 predict() beside it.

    The teacher named in the student card is loaded only if its file still has the card's sha256."""
    from policykd.artifacts import package_versions, write_output_json
    from policykd.collection import check_student_fits
    from policykd.latency_backends import backend_latencies
    from policykd.students import load_student
    from policykd.teachers import load_teacher

    def go():
        check_output_files(json_out, plot)
        if plot is not None:
            from policykd.plots import check_image_path

            check_image_path(plot)
        chosen = tuple(dict.fromkeys(b.strip() for b in backends.split(",") if b.strip()))  # each once, in the given order
        if not chosen:
            raise PolicyKDError(f"--backends {backends!r} names no backend; give some of torch, numpy, onnx, c, c-ctypes")
        loaded_student = load_student(student)
        card = loaded_student.card
        record = card.get("teacher") or {}
        t = None
        if teacher is not None and str(teacher) != "none":  # its own algo and env; a bare SB3 zip records no env
            bare_zip = teacher.suffix == ".zip" and teacher.is_file() and not (teacher.parent / "config.yml").exists()
            t = load_teacher(teacher, env_id=(record.get("env") or {}).get("env_id") if bare_zip else None, trust_pickle=trust_pickle)
            check_student_fits(loaded_student, t, where=str(student))
        elif teacher is None and record.get("path"):
            if record.get("members"):
                raise PolicyKDError(f"{student} was distilled from an ensemble of teachers; pass --teacher PATH (one of them) or --teacher none")
            check_card_teacher(record, student)
            t = load_teacher(record["path"], algo=record.get("algo"), env_id=(record.get("env") or {}).get("env_id"),
                             trust_pickle=trust_pickle)
        samples: dict = {}
        results = backend_latencies(student, chosen, teacher=t,
                                    calls=calls, samples=samples)
        print_latency(results, calls)
        if plot:
            from policykd.plots import latency_histograms

            latency_histograms(samples, plot, title=f"{student}: batch-1 latency, {calls:,} calls per path")
            out.print(f"wrote {plot}")
        if json_out:
            write_output_json(json_out, {"student": str(student), "calls": calls, "latency_us": results, "versions": package_versions()}, "bench")

    _run(go)


@app.command()
def embedded(
    student: Path = typer.Argument(..., help="Student folder (student.json + student.safetensors).", parser=_path),
    target: list[str] = typer.Option(["cortex-m4", "aarch64"], help="Built-in target (policykd/targets/: cortex-m4, aarch64) or a YAML path (repeatable)."),
    rate: float = typer.Option(1000.0, callback=_positive_hz, help="Control rate in Hz to check the student against."),
    observations: int = typer.Option(32, min=1, max=10_000, help="Random test observations compared with the host build."),
    fmt: Optional[str] = typer.Option(None, "--format", help="c (float), c-int16 or c-int8 (fixed point); default: the target's."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here.", parser=_output_file),
) -> None:
    """Cross-compile the C export, run it under qemu, report flash/RAM, instructions, time and output parity."""
    from policykd.artifacts import package_versions, write_output_json

    def go():
        check_output_files(json_out)
        if fmt is not None:
            from policykd.embedded import check_embedded_format

            check_embedded_format(fmt)
        results = embedded_report(student, target, rate=rate, observations=observations, export_format=fmt)
        if json_out:
            write_output_json(json_out, {"student": str(student), "results": results, "versions": package_versions()}, "embedded")

    _run(go)


TRACEBACK_ENV = "POLICYKD_TRACEBACK"  # set to 1 to see the traceback of an unexpected error
# Click's exceptions as the installed typer raises them (typer >= 0.26 vendors click; older ones use click itself).
_CLICK_EXCEPTIONS = sys.modules[typer.BadParameter.__module__]
_CLICK_CORE = sys.modules[typer.Context.__mro__[1].__module__]  # click.core (ParameterSource), vendored or not


def _policykd_warnings_as_notes(show):
    """A warnings.showwarning that prints policykd's own warnings as one `note:` line each, once per message (not
    Python's two lines with the source line, repeated per call site); other packages' warnings go to `show`."""
    shown: set[str] = set()

    def note(message, category, filename, lineno, file=None, line=None):
        if f"{os.sep}policykd{os.sep}" not in str(filename):
            return show(message, category, filename, lineno, file, line)
        if str(message) not in shown:
            shown.add(str(message))
            make_console(stderr=True).print(f"note: {message}", highlight=False, soft_wrap=True)

    return note


def main(argv: list[str] | None = None) -> None:
    """The `policykd` command: the app, with usage errors (a flag value of the wrong type, an unknown option, a
    missing argument) as one `error:` line and exit code 2, like every other bad input, instead of click's box."""
    errors = _CLICK_EXCEPTIONS
    warnings.showwarning = _policykd_warnings_as_notes(warnings.showwarning)
    try:
        code = app(args=argv, prog_name="policykd", standalone_mode=False)
    except getattr(errors, "NoArgsIsHelpError", ()) as e:  # click >= 8.2: a bare command shows its help
        e.show()
        sys.exit(e.exit_code)
    except errors.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "policykd"
        _fail_line(f"{e.format_message().rstrip('.')}; see `{where} --help`")
        sys.exit(2)
    except errors.ClickException as e:  # click's other input errors (e.g. an unreadable file argument)
        _fail_line(e.format_message())
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C outside a command's own handling (while starting up); typer 0.29's vendored click has no Abort
        make_console(stderr=True).print(Text.assemble(("interrupted", "bold yellow")), highlight=False)
        sys.exit(130)
    except Exception as e:  # a case no check foresaw: one line that says so, the traceback on request
        if os.environ.get(TRACEBACK_ENV):
            raise
        frame = traceback.extract_tb(e.__traceback__)[-1]
        what = (str(e).strip() or repr(e)).splitlines()[0]  # the first line: a tensor dump below it is for the traceback
        _fail_line(f"unexpected {type(e).__name__}: {what} (at {Path(frame.filename).name}:{frame.lineno}); "
                   f"this is a policykd bug: rerun with {TRACEBACK_ENV}=1 and report the traceback")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
