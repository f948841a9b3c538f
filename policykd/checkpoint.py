"""Resumable distillation state: student weights, Adam state and progress, without pickle.

RUN_DIR/checkpoint/                       the latest complete round
    student.safetensors, student.json     the student (students.py format)
    optimizer.safetensors                 Adam tensors, keyed "state.<param index>.<name>"
    progress.json                         rounds done, buffer chunks committed, metrics history, optimizer groups
    transfer.safetensors                  with hints: the hint regressor and its Adam state (policykd/transfer.py)
A new checkpoint is written to a temporary folder and renamed over the old one, so an interruption at
any moment leaves the previous complete checkpoint in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from policykd.artifacts import atomic_write_json
from policykd.errors import PolicyKDError
from policykd.progress import Progress
from policykd.students import Student, load_student
from policykd.tracking import HISTORY_FILE
from policykd.transfer import Transfer


def save_checkpoint(run_dir: Path, student: Student, optimizer: torch.optim.Optimizer, progress: Progress,
                    card_extra: dict[str, Any], transfer: Transfer | None = None) -> None:
    final = run_dir / "checkpoint"
    tmp = run_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    student.save(tmp, card_extra=card_extra)
    if transfer is not None:
        transfer.save(tmp)
    state = optimizer.state_dict()
    tensors = {f"state.{idx}.{name}": value.detach().clone().reshape(value.shape) for idx, entry in state["state"].items()
               for name, value in entry.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    atomic_write_json(tmp / "progress.json", {**progress.to_json(), "optimizer_param_groups": state["param_groups"]})
    old = run_dir / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_config(run_dir: Path) -> dict[str, Any] | None:
    """The config the run's latest checkpoint was trained with (its student card's "config"), None without one."""
    for folder in ("checkpoint", "checkpoint.old"):  # .old: interrupted between the two renames
        card_path = run_dir / folder / "student.json"
        if (run_dir / folder / "progress.json").exists() and card_path.exists():
            try:
                config = json.loads(card_path.read_text()).get("config")
            except (OSError, ValueError, AttributeError) as e:
                raise PolicyKDError(f"{card_path} is corrupt ({e.__class__.__name__}); this run cannot be resumed, "
                                    "start a new one with another --run-name") from e
            if not isinstance(config, dict):
                raise PolicyKDError(f"{card_path} records no config; this run cannot be resumed, start a new one with another --run-name")
            return config
    return None


def load_checkpoint(run_dir: Path, optimizer_factory) -> tuple[Student, torch.optim.Optimizer, Progress] | None:
    """(student, optimizer, progress) from RUN_DIR/checkpoint, or None when there is none yet."""
    final = run_dir / "checkpoint"
    if not final.exists() and (run_dir / "checkpoint.old").exists():
        (run_dir / "checkpoint.old").rename(final)  # interrupted between the two renames
    if final.exists() and not final.is_dir():
        raise PolicyKDError(f"{final} is a file, not the run's checkpoint folder; this run cannot be resumed, start a new one "
                            "with another --run-name")
    if not (final / "progress.json").exists():
        history = run_dir / HISTORY_FILE
        if history.is_file() and '"distill/round"' in history.read_text(errors="replace"):
            raise PolicyKDError(f"{run_dir} finished rounds before (per its history.jsonl) but its checkpoint is missing; this run "
                                "cannot be resumed, start a new one with another --run-name")
        return None
    try:
        student = load_student(final).train()
    except PolicyKDError as e:  # its advice is for a student folder (re-export it); this one is the run's checkpoint
        raise PolicyKDError(f"the checkpoint of {run_dir} is damaged ({str(e)[:200]}); this run cannot be resumed, start a new "
                            "one with another --run-name") from e
    progress_path, optimizer_path = final / "progress.json", final / "optimizer.safetensors"
    try:
        record = json.loads(progress_path.read_text())
        if not isinstance(record, dict):
            raise TypeError(f"a JSON {type(record).__name__}, not the record of a run's progress")
        groups = record.pop("optimizer_param_groups")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PolicyKDError(f"{progress_path} is corrupt ({e.__class__.__name__}: {e}); this run cannot be resumed, "
                            "start a new one with another --run-name") from e
    progress = Progress.from_json(record, source=str(progress_path))
    optimizer = optimizer_factory(student)
    try:
        tensors = load_file(str(optimizer_path))
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except Exception as e:  # safetensors and torch raise their own error types for a damaged state
        raise PolicyKDError(f"{optimizer_path} is corrupt or does not match the student ({str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__}); "
                            "this run cannot be resumed, start a new one with another --run-name") from e
    return student, optimizer, progress
