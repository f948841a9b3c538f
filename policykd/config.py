"""Distillation recipes: a dataclass of every knob, read from YAML in configs/ and overridden by CLI flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policykd.errors import PolicyKDError

DATA_MODES = ("teacher", "dagger")


@dataclass
class DistillConfig:
    teacher: str = ""
    env_id: str | None = None           # needed only for a bare SB3 zip
    algo: str | None = None             # inferred when absent
    seed: int = 0
    out_dir: str = "runs"
    run_name: str | None = None         # default: {env}__{data_mode}__{seed}__{time}
    # data
    data_mode: str = "dagger"           # teacher: the teacher always acts; dagger: beta-mixture per round
    labelled_steps: int = 50_000        # budget: teacher-labelled env steps, over all rounds
    rounds: int = 5
    beta0: float = 1.0                  # round r uses beta = beta0 * beta_decay**r (dagger); 1 (teacher)
    beta_decay: float = 0.5
    n_envs: int = 2
    sample_actions: bool = True         # acting policy samples its distribution (broader state coverage)
    noise_scale: float = 1.0            # multiplies the acting policy's std when sampling
    collect_max_episode_steps: int = 0  # > 0: truncate collection episodes after this many steps (more distinct
                                        # starts per labelled step; for envs that reach a goal then hold, e.g. Reacher)
    # student
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    # optimisation
    epochs_per_round: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "cosine"         # cosine: annealed to 0 over all gradient steps of the run; or constant
    kl_direction: str = "forward"
    tau: float = 1.0
    lambda_v: float = 0.5
    bounded_means: bool = False         # Gaussian teachers: compare means beyond the action bounds as the bound itself
    torch_threads: int = 1
    # tracking
    wandb: bool = False                 # log to Weights & Biases (offline when no API key is configured)
    wandb_project: str = "policykd"
    tensorboard: bool = False           # scalars into RUN_DIR/tensorboard
    # evaluation after distillation
    eval_episodes: int = 20
    eval_every_round: int = 0           # > 0: also evaluate the student on this many seeds after each round (curve)
    eval_seed: int = 1_000_000
    latency_calls: int = 2_000
    rollout_steps: int = 0              # > 0: film teacher and student on eval_seed for this many steps (PNG + GIF)

    def __post_init__(self) -> None:
        if self.data_mode not in DATA_MODES:
            raise PolicyKDError(f"data_mode must be one of {DATA_MODES}, got {self.data_mode!r}")
        for name in ("labelled_steps", "rounds", "n_envs", "epochs_per_round", "batch_size", "torch_threads"):
            if int(getattr(self, name)) <= 0:
                raise PolicyKDError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if int(self.collect_max_episode_steps) < 0:
            raise PolicyKDError(f"collect_max_episode_steps must be >= 0 (0: the env's own time limit), got {self.collect_max_episode_steps}")
        if self.labelled_steps < self.rounds:
            raise PolicyKDError(f"labelled_steps ({self.labelled_steps}) must be at least rounds ({self.rounds})")
        if not 0.0 <= self.beta0 <= 1.0 or not 0.0 <= self.beta_decay <= 1.0:
            raise PolicyKDError("beta0 and beta_decay must lie in [0, 1]")
        if self.lr_schedule not in ("constant", "cosine"):
            raise PolicyKDError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.lr <= 0:
            raise PolicyKDError(f"lr must be positive, got {self.lr}")

    def beta(self, round_index: int) -> float:
        """Probability that the teacher acts at a step of round `round_index`."""
        if self.data_mode == "teacher":
            return 1.0
        return self.beta0 * self.beta_decay**round_index

    def round_steps(self, round_index: int) -> int:
        """Labelled steps collected in round `round_index` (the budget split evenly, remainder last)."""
        base = self.labelled_steps // self.rounds
        return base + (self.labelled_steps - base * self.rounds if round_index == self.rounds - 1 else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> DistillConfig:
    """Defaults <- YAML file <- overrides (None values in overrides are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise PolicyKDError(f"config {path} does not exist; see configs/distill/ for examples")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise PolicyKDError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from e
        if not isinstance(values, dict):
            raise PolicyKDError(f"config {path} must be a mapping of option: value")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PolicyKDError(f"unknown config keys {unknown}; valid keys: {', '.join(sorted(known))}")
    return DistillConfig(**values)
