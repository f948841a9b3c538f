"""What a distillation run records: one RoundMetrics per round and the Progress a checkpoint resumes from.

Both are frozen; the loop makes a new Progress after every round (`Progress.after_round`). Their JSON forms are
what `history.jsonl`, the student card's "history" and `checkpoint/progress.json` hold, metric names namespaced
(`distill/kl`, `eval/student_return_mean`) against one step counter, the labelled steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from policykd.errors import PolicyKDError


@dataclass(frozen=True)
class RoundMetrics:
    """One round: training losses (means over its last epoch), data and time. eval_* only with eval_every_round."""

    round: int
    beta: float                 # probability that the teacher acted at a step
    labelled_steps: int         # rows in the buffer after this round
    loss: float
    kl: float
    value_mse: float
    student_acted: float        # fraction of this round's steps driven by the student
    collect_steps_per_s: float
    wall_s: float               # collection + training so far, this run
    eval_return_mean: float | None = None
    eval_return_std: float | None = None
    val_kl: float | None = None          # with validation_fraction: KL(T || S) on held-out episodes, kept epoch
    epochs: int | None = None            # epochs trained this round (fewer with early stopping)
    best_epoch: int | None = None        # the epoch whose weights were kept (model selection on val_kl)
    hint_loss: float | None = None       # with hint_weight: the hint term (policykd.transfer), unweighted
    attention_loss: float | None = None  # with attention_weight: the attention term, unweighted
    worker_failures: int | None = None   # backend ray: rollout actors replaced this round (their shares redone)

    def to_json(self) -> dict[str, Any]:
        out = {f"distill/{k}": v for k, v in (("loss", self.loss), ("kl", self.kl), ("value_mse", self.value_mse),
                                             ("round", self.round), ("beta", self.beta),
                                             ("labelled_steps", self.labelled_steps), ("student_acted", self.student_acted),
                                             ("collect_steps_per_s", self.collect_steps_per_s), ("wall_s", self.wall_s))}
        if self.eval_return_mean is not None:
            out["eval/student_return_mean"] = self.eval_return_mean
            out["eval/student_return_std"] = self.eval_return_std
        if self.val_kl is not None:
            out.update({"distill/val_kl": self.val_kl, "distill/epochs": self.epochs, "distill/best_epoch": self.best_epoch})
        for name in ("hint_loss", "attention_loss", "worker_failures"):
            if getattr(self, name) is not None:
                out[f"distill/{name}"] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoundMetrics:
        return cls(**{k: d[f"distill/{k}"] for k in ("round", "beta", "labelled_steps", "loss", "kl", "value_mse",
                                                    "student_acted", "collect_steps_per_s", "wall_s")},
                   eval_return_mean=d.get("eval/student_return_mean"), eval_return_std=d.get("eval/student_return_std"),
                   val_kl=d.get("distill/val_kl"), epochs=d.get("distill/epochs"), best_epoch=d.get("distill/best_epoch"),
                   hint_loss=d.get("distill/hint_loss"), attention_loss=d.get("distill/attention_loss"),
                   worker_failures=d.get("distill/worker_failures"))


@dataclass(frozen=True)
class Progress:
    """How far a run got: the state a checkpoint resumes from."""

    rounds_done: int = 0
    buffer_chunks: int = 0      # buffer chunks the checkpoint's student was trained on
    episodes: int = 0           # episode ids used so far (the next round's ids start here)
    gradient_steps: int = 0     # for the learning-rate schedule
    wall_s: float = 0.0
    history: tuple[RoundMetrics, ...] = field(default_factory=tuple)

    def after_round(self, metrics: RoundMetrics, *, buffer_chunks: int, episodes: int, gradient_steps: int) -> Progress:
        return replace(self, rounds_done=metrics.round + 1, buffer_chunks=buffer_chunks, episodes=episodes,
                       gradient_steps=self.gradient_steps + gradient_steps, wall_s=metrics.wall_s,
                       history=(*self.history, metrics))

    def to_json(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done, "buffer_chunks": self.buffer_chunks, "episodes": self.episodes,
                "gradient_steps": self.gradient_steps, "wall_s": self.wall_s, "history": [m.to_json() for m in self.history]}

    @classmethod
    def from_json(cls, d: dict[str, Any], *, source: str) -> Progress:
        """The progress in a checkpoint's progress.json; one line naming `source` if it is damaged."""
        try:
            progress = cls(rounds_done=int(d["rounds_done"]), buffer_chunks=int(d["buffer_chunks"]), episodes=int(d["episodes"]),
                           gradient_steps=int(d["gradient_steps"]), wall_s=float(d["wall_s"]),
                           history=tuple(RoundMetrics.from_json(m) for m in d["history"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PolicyKDError(f"{source} is corrupt ({e.__class__.__name__}: {e}); this run cannot be resumed, "
                                "start a new one with another --run-name") from e
        if min(progress.rounds_done, progress.buffer_chunks, progress.episodes, progress.gradient_steps) < 0 \
                or len(progress.history) != progress.rounds_done:
            raise PolicyKDError(f"{source} is corrupt (inconsistent counts); this run cannot be resumed, "
                                "start a new one with another --run-name")
        return progress
