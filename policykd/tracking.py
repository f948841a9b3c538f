"""Where run metrics go: the console (rich), a JSONL history in the run dir, and optionally Weights & Biases
and TensorBoard. Metric names are namespaced (`distill/kl`, `eval/return_mean`) against one step counter:
teacher-labelled env steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def wandb_has_api_key() -> bool:
    """An API key in WANDB_API_KEY or in ~/.netrc (where `wandb login` puts it)."""
    return bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _read(Path.home() / ".netrc")


class WandbSink:
    """A W&B run; offline (with instructions to sync) when no API key is configured or WANDB_MODE=offline."""

    def __init__(self, run_dir: Path, *, project: str, name: str, config: dict[str, Any]) -> None:
        import wandb

        mode = "offline" if os.environ.get("WANDB_MODE") == "offline" or not wandb_has_api_key() else "online"
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


class Tracker:
    """Console + JSONL history, fanned out to optional sinks (WandbSink, TensorBoardSink)."""

    def __init__(self, history_path: Path | None = None, *, quiet: bool = False, sinks: list | None = None) -> None:
        self.history_path = history_path
        self.quiet = quiet
        self.sinks = list(sinks or [])

    def log(self, metrics: dict[str, Any], *, step: int) -> None:
        if self.history_path is not None:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.history_path, "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        for sink in self.sinks:
            sink.log(metrics, step)
        if not self.quiet:
            shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            console.print(f"[dim]step {step}[/dim]  {shown}")

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
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar; yields advance(n)."""
        if self.quiet:
            yield lambda n: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
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
    return Tracker(run_dir / "history.jsonl", quiet=quiet, sinks=sinks)
