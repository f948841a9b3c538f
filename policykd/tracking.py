"""Where run metrics go: the console (rich), a JSONL history in the run dir, and optionally Weights & Biases
and TensorBoard. Metric names are namespaced (`distill/kl`, `eval/return_mean`) against one step counter:
teacher-labelled env steps.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

PROGRESS_INTERVAL_S = 10.0  # at most this long between two plain progress lines (output not a terminal)
PIPED_WIDTH = 160  # the least width of tables written to a file or a pipe (rich would assume 80 columns)


def is_tty(stream: IO | None) -> bool:
    """Whether `stream` is a terminal (its own isatty(); FORCE_COLOR and the like do not count)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or not a real file
        return False


class _Console(Console):
    """A rich Console that never hard-wraps printed text when its output is not a terminal (a file, a pipe, `tee`),
    so that paths and commands survive intact in logs, and lays tables out at least PIPED_WIDTH wide there (cells
    wrap only beyond that); on a terminal it behaves as usual."""

    auto_soft_wrap = True

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:
        if (soft_wrap is None and self.auto_soft_wrap and not is_tty(self.file)
                and all(isinstance(o, (str, Text)) for o in objects)):
            soft_wrap = True  # text only: tables and other renderables keep their layout (centred titles)
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not is_tty(self.file):
            return ConsoleDimensions(max(size.width, PIPED_WIDTH), size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


def make_console(stderr: bool = False, **kwargs: Any) -> Console:
    """The rich Console for policykd's output (stdout, or stderr with stderr=True): as usual on a terminal; when
    redirected to a file or a pipe, lines are never hard-wrapped (paths stay whole) and tables get PIPED_WIDTH
    columns. The stream is looked up at each print (sys.stdout / sys.stderr then), so a console made at import
    time follows later redirection (and typer's CliRunner). Markup is off: printed strings carry paths, env ids and
    error messages ("policykd[ray]", "runs/[/x]") that rich would read as style tags; style with rich.text.Text.
    kwargs go to rich's Console (width=N fixes the width)."""
    console = _Console(stderr=stderr, **{"markup": False, **kwargs})
    console.auto_soft_wrap = "soft_wrap" not in kwargs  # else the caller's choice, as with rich's Console
    return console


console = make_console(stderr=True)


def wandb_has_api_key() -> bool:
    """An API key in WANDB_API_KEY or in ~/.netrc (where `wandb login` puts it)."""
    return bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _read(Path.home() / ".netrc")


class WandbSink:
    """A W&B run; offline (with instructions to sync) when no API key is configured or WANDB_MODE=offline."""

    def __init__(self, run_dir: Path, *, project: str, name: str, config: dict[str, Any]) -> None:
        import wandb

        mode = "offline" if os.environ.get("WANDB_MODE") == "offline" or not wandb_has_api_key() else "online"
        try:
            self.run = wandb.init(project=project, name=name, config=config, dir=str(run_dir), mode=mode,
                                  settings=wandb.Settings(silent=True))
        except (wandb.errors.CommError, wandb.errors.AuthenticationError) as e:  # no network, or the key was refused
            if mode != "online":
                raise
            reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
            console.print(f"W&B could not be reached or refused the API key ({reason}); logging this run offline instead",
                          highlight=False)
            mode = "offline"
            self.run = wandb.init(project=project, name=name, config=config, dir=str(run_dir), mode=mode,
                                  settings=wandb.Settings(silent=True))
        self.offline = mode == "offline"
        if self.offline:
            console.print(f"W&B run saved offline in {Path(self.run.dir).parent}; upload it with: "
                          f"wandb sync {Path(self.run.dir).parent}", highlight=False)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        import wandb

        self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def artifact(self, path: Path, name: str, kind: str) -> None:
        import wandb

        artifact = wandb.Artifact(name=name, type=kind)
        artifact.add_dir(str(path))
        self.run.log_artifact(artifact)

    def image(self, name: str, path: Path) -> None:
        import wandb

        self.run.log({name: wandb.Image(str(path))})

    def finish(self) -> None:
        self.run.finish()


class TensorBoardSink:
    """Scalars into RUN_DIR/tensorboard (numeric metrics only)."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def summary(self, values: dict[str, Any]) -> None:
        self.log(values, step=0)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        self.writer.add_text(name, header + "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows))

    def artifact(self, path: Path, name: str, kind: str) -> None:
        self.writer.add_text(f"artifacts/{kind}", f"{name}: {path}")

    def image(self, name: str, path: Path) -> None:
        self.writer.add_text(name, str(path))

    def finish(self) -> None:
        self.writer.close()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def format_duration(seconds: float) -> str:
    """0.4 s, 7 s, 3 min 05 s, 2 h 04 min."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _format_rate(rate: float, unit: str) -> str:
    """812 steps/s, 2.5 episodes/s; below one per second the time each takes: 25 s/episode, 2 min 05 s/episode."""
    if rate >= 1:
        return (f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}") + (f" {unit}/s" if unit else "/s")
    each = unit.removesuffix("s") if unit else "each"
    seconds = 1 / rate
    return (f"{seconds:.3g} s" if seconds < 60 else format_duration(seconds)) + ("/" if unit else " ") + each


def progress_unit(label: str) -> str:
    """What a progress label counts, from its wording: collecting -> steps, evaluating -> episodes, training -> epochs."""
    lowered = label.lower()
    for word, unit in (("collect", "steps"), ("evaluat", "episodes"), ("train", "epochs")):
        if word in lowered:
            return unit
    return ""


def format_progress(label: str, done: int, total: int, elapsed_s: float, *, unit: str = "", final: bool = False) -> str:
    """One plain progress line, e.g.
    `round 2/5: collecting (beta=0.50): 4,000/10,000 steps (40%), 812 steps/s, elapsed 4.9 s, ETA 7.4 s`;
    below one per second the rate reads `25 s/episode`; final: `..., done in 12 s` in place of elapsed and ETA."""
    percent = 100 if total <= 0 else int(100 * min(done, total) / total)
    line = f"{label}: {done:,}/{total:,}{' ' + unit if unit else ''} ({percent}%)"
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if final:
        return f"{line}, {_format_rate(rate, unit) + ', ' if rate > 0 else ''}done in {format_duration(elapsed_s)}"
    if done <= 0 or rate <= 0:
        return f"{line}, elapsed {format_duration(elapsed_s)}, ETA unknown (none done yet)"
    eta = format_duration(max(total - done, 0) / rate)
    return f"{line}, {_format_rate(rate, unit)}, elapsed {format_duration(elapsed_s)}, ETA {eta}"


class PlainProgress:
    """Progress as plain lines, for output that is not a terminal (CI, a log file, `| tee`): a line every `interval_s`
    while the block runs, from a background (daemon) thread, so one comes even when nothing advanced (an evaluation
    advances only when episodes end), then a final line. Nothing is written once the block has exited.

        with PlainProgress("collecting", 10_000, unit="steps", write=print) as advance:
            advance(n)
    """

    def __init__(self, label: str, total: int, *, write: Callable[[str], None], unit: str = "",
                 interval_s: float = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.label, self.total, self.unit = label, int(total), unit
        self.write, self.interval_s, self.clock = write, interval_s, clock
        self.done = 0
        self._start = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += int(n)

    def line(self, *, final: bool = False) -> str:
        return format_progress(self.label, self.done, self.total, self.clock() - self._start, unit=self.unit, final=final)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                if self._closed:
                    return
                self.write(self.line())

    def __enter__(self) -> Callable[[int], None]:
        self._start = self.clock()
        self._thread = threading.Thread(target=self._tick, name=f"progress: {self.label}", daemon=True)
        self._thread.start()
        return self.advance

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        with self._lock:  # after this, the thread writes nothing more (it checks _closed under the same lock)
            self._closed = True
            if exc_type is None:
                self.write(self.line(final=True))
            else:
                self.write(f"{self.line()} (stopped: {exc_type.__name__})")
        if self._thread is not None:
            self._thread.join(timeout=1.0)


HISTORY_FILE = "history.jsonl"  # a run's JSONL log: one record per Tracker.log call


def drop_torn_line(path: Path) -> None:
    """Cut a JSONL file back to its last complete line (a run killed while writing one leaves half a record), so the
    next record starts a line of its own."""
    try:
        with open(path, "rb+") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            f.truncate(f.read().rfind(b"\n") + 1)
    except FileNotFoundError:
        return


class Tracker:
    """Console + JSONL history, fanned out to optional sinks (WandbSink, TensorBoardSink).

    Progress: a rich bar when the console writes to a terminal, else plain lines (PlainProgress) at least every
    progress_interval_s. plain_progress forces one or the other; clock is the time source of the plain lines."""

    def __init__(self, history_path: Path | None = None, *, quiet: bool = False, sinks: list | None = None,
                 console: Console | None = None, plain_progress: bool | None = None,
                 progress_interval_s: float = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.history_path = history_path
        self.quiet = quiet
        self.sinks = list(sinks or [])
        self._console = console
        self.plain_progress = plain_progress
        self.progress_interval_s = progress_interval_s
        self.clock = clock

    @property
    def console(self) -> Console:
        return self._console if self._console is not None else console

    def log(self, metrics: dict[str, Any], *, step: int) -> None:
        if self.history_path is not None:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            drop_torn_line(self.history_path)
            with open(self.history_path, "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        for sink in self.sinks:
            sink.log(metrics, step)
        if not self.quiet:
            shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            self.console.print(Text.assemble((f"step {step}", "dim"), f"  {shown}"))

    def summary(self, values: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.summary(values)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        for sink in self.sinks:
            sink.table(name, columns, rows)

    def artifact(self, path: Path, *, name: str, kind: str) -> None:
        for sink in self.sinks:
            sink.artifact(path, name, kind)

    def image(self, name: str, path: Path) -> None:
        for sink in self.sinks:
            sink.image(name, path)

    def finish(self) -> None:
        for sink in self.sinks:
            sink.finish()

    @contextmanager
    def progress(self, description: str, total: int, *, unit: str | None = None) -> Iterator[Callable[[int], None]]:
        """Progress of a long step; yields advance(n). On a terminal a rich bar; otherwise a plain line (label,
        done/total unit, rate, ETA) every progress_interval_s, and a last one when the block ends.
        unit: what is counted (steps, episodes, epochs); by default guessed from the description (progress_unit)."""
        if self.quiet:
            yield lambda n: None
            return
        target = self.console
        plain = self.plain_progress if self.plain_progress is not None else not is_tty(target.file)
        if plain:
            write = lambda text: target.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
            with PlainProgress(description, total, write=write, unit=progress_unit(description) if unit is None else unit,
                               interval_s=self.progress_interval_s, clock=self.clock) as advance:
                yield advance
            return
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=target, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def make_tracker(run_dir: Path, config: dict[str, Any], *, wandb: bool = False, tensorboard: bool = False,
                 project: str = "policykd", quiet: bool = False) -> Tracker:
    """The tracker of a distillation run: history.jsonl in run_dir, plus W&B / TensorBoard when asked."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sinks: list = []
    if wandb:
        sinks.append(WandbSink(run_dir, project=project, name=run_dir.name, config=config))
    if tensorboard:
        sinks.append(TensorBoardSink(run_dir))
    return Tracker(run_dir / HISTORY_FILE, quiet=quiet, sinks=sinks)
