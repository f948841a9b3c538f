"""Compact student policies: raw env observation in, env-scaled action out, everything needed inside.

A Student holds, as buffers saved with its weights: the teacher's observation normaliser (mean, std, clip),
the action bounds, and the value target scale. Saved as `student.safetensors` + `student.json` (the card:
architecture, spaces, normaliser, action scaling, teacher provenance, metrics); loading never unpickles.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from policykd.actions import to_env_action
from policykd.artifacts import atomic_write_json, package_versions
from policykd.distributions import LOG_STD_MAX, LOG_STD_MIN, DistParams
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer

WEIGHTS_FILE = "student.safetensors"
CARD_FILE = "student.json"
CARD_FORMAT = "policykd-student"
CARD_VERSION = 1
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


@dataclass(frozen=True)
class StudentSpec:
    """Architecture and interface of a student. action_dim: A for Box actions, N for Discrete."""

    obs_dim: int
    action_dim: int
    family: str
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    normalizer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise PolicyKDError(f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise PolicyKDError(f"student hidden sizes must be positive integers, got {list(self.hidden)}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))


class Student(nn.Module):
    """MLP trunk -> heads: action mean/logits [B, A], log_std [B, A] (Gaussian families), value [B]."""

    def __init__(self, spec: StudentSpec) -> None:
        super().__init__()
        self.spec = spec
        normalizer = ObsNormalizer.from_json(spec.normalizer) if spec.normalizer else ObsNormalizer.identity(spec.obs_dim)
        self.register_buffer("obs_mean", torch.as_tensor(normalizer.mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(normalizer.std, dtype=torch.float32))
        clip = normalizer.clip if normalizer.clip is not None else float("inf")
        self.register_buffer("obs_clip", torch.tensor(clip, dtype=torch.float32))
        self.register_buffer("action_low", torch.as_tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(spec.action_high, dtype=torch.float32))
        self.register_buffer("value_mean", torch.zeros(()))
        self.register_buffer("value_std", torch.ones(()))
        layers: list[nn.Module] = []
        width = spec.obs_dim
        for h in spec.hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[spec.activation]()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.action_head = nn.Linear(width, spec.action_dim)
        self.log_std_head = nn.Linear(width, spec.action_dim) if spec.family in ("gaussian", "squashed_gaussian") else None
        self.value_head = nn.Linear(width, 1)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp((obs - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip)

    def forward(self, obs: torch.Tensor) -> tuple[DistParams, torch.Tensor]:
        """raw obs [B, obs_dim] -> (distribution of batch B, value [B] in the teacher's value units)."""
        hidden = self.trunk(self.normalize(obs))
        out = self.action_head(hidden)
        family = self.spec.family
        if family == "categorical":
            dist = DistParams(family, {"logits": out})
        elif family == "deterministic":
            dist = DistParams(family, {"action": torch.tanh(out)})
        else:
            log_std = self.log_std_head(hidden).clamp(LOG_STD_MIN, LOG_STD_MAX)
            dist = DistParams(family, {"mean": out, "log_std": log_std})
        value = self.value_head(hidden).squeeze(-1) * self.value_std + self.value_mean
        return dist, value

    def policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """raw obs [B, obs_dim] -> deterministic action in policy space."""
        return self.forward(obs)[0].mode()

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """raw obs [B, obs_dim] -> deterministic env action [B, A] (or [B] long for discrete)."""
        return to_env_action(self.policy_action(obs), self.spec.family, self.action_low, self.action_high)

    @torch.no_grad()
    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-style predict, so `stable_baselines3.common.evaluation.evaluate_policy` accepts a Student."""
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        action = self.act(torch.as_tensor(obs.reshape(-1, self.spec.obs_dim))).numpy()
        return (action[0] if single else action), None

    def parameter_count(self, *, actor_only: bool = True) -> int:
        """Trainable parameters; actor_only excludes the value head (not needed to act)."""
        return sum(p.numel() for n, p in self.named_parameters() if not (actor_only and n.startswith("value_head")))

    def save(self, directory: str | Path, *, card_extra: dict[str, Any] | None = None) -> Path:
        """Write student.safetensors + student.json into `directory` (atomically, weights first)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{WEIGHTS_FILE}.tmp"
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        os.chmod(tmp, 0o644)
        tmp.replace(directory / WEIGHTS_FILE)
        card = {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "spec": asdict(self.spec),
            "parameters": self.parameter_count(),
            "versions": package_versions(),
            **(card_extra or {}),
        }
        atomic_write_json(directory / CARD_FILE, card)
        return directory


def load_student(directory: str | Path) -> Student:
    """Load a student from safetensors + JSON. Never unpickles."""
    directory = Path(directory)
    card_path, weights_path = directory / CARD_FILE, directory / WEIGHTS_FILE
    if not card_path.exists() or not weights_path.exists():
        raise PolicyKDError(f"{directory} is not a student (needs {CARD_FILE} and {WEIGHTS_FILE}); pass a folder written by `policykd distill`")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise PolicyKDError(f"{card_path} is corrupt ({e}); re-export the student") from e
    if card.get("format") != CARD_FORMAT:
        raise PolicyKDError(f"{card_path} is not a policykd student card")
    spec_dict = dict(card["spec"])
    spec_dict["hidden"] = tuple(spec_dict["hidden"])
    spec_dict["action_low"] = tuple(spec_dict["action_low"])
    spec_dict["action_high"] = tuple(spec_dict["action_high"])
    student = Student(StudentSpec(**spec_dict))
    try:
        state = load_file(str(weights_path))
    except Exception as e:  # safetensors raises its own error types
        raise PolicyKDError(f"{weights_path} is not a readable safetensors file ({e}); re-export the student") from e
    try:
        student.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PolicyKDError(f"{weights_path} does not match the architecture in {CARD_FILE}: {str(e).splitlines()[0]}") from e
    student.card = card
    return student.eval()


def student_spec_for(teacher, *, hidden: tuple[int, ...], activation: str) -> StudentSpec:
    """A student spec that mirrors the teacher's interface (spaces, normaliser, family)."""
    low, high = (), ()
    if teacher.family != "categorical":
        low = tuple(float(x) for x in np.asarray(teacher.action_space.low).reshape(-1))
        high = tuple(float(x) for x in np.asarray(teacher.action_space.high).reshape(-1))
    return StudentSpec(
        obs_dim=teacher.obs_dim, action_dim=teacher.action_dim, family=teacher.family, hidden=hidden,
        activation=activation, action_low=low, action_high=high, normalizer=teacher.normalizer.to_json(),
    )
