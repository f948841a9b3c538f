"""Where run metrics go: the console (rich progress bars and lines), and a JSONL history in the run dir."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class Tracker:
    """Logs namespaced metrics (`distill/kl`, `eval/return_mean`) against one step counter."""

    def __init__(self, history_path: Path | None = None, *, quiet: bool = False) -> None:
        self.history_path = history_path
        self.quiet = quiet

    def log(self, metrics: dict[str, Any], *, step: int) -> None:
        if self.history_path is not None:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.history_path, "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        if not self.quiet:
            shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            console.print(f"[dim]step {step}[/dim]  {shown}")

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
