"""Observation normalisation as SB3's VecNormalize applies it: clip((obs - mean) / sqrt(var + eps), -clip, clip)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ObsNormalizer:
    """Frozen observation statistics. mean, var: float64 arrays of shape [obs_dim]."""

    mean: np.ndarray
    var: np.ndarray
    clip: float | None = 10.0
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        var = np.asarray(self.var, dtype=np.float64).reshape(-1)
        if mean.shape != var.shape:
            raise ValueError(f"normaliser mean {mean.shape} and var {var.shape} differ in shape")
        if not (np.isfinite(mean).all() and np.isfinite(var).all() and np.isfinite(self.epsilon) and self.epsilon >= 0
                and (var + self.epsilon > 0).all()):
            raise ValueError("normaliser mean, var and epsilon must be finite with var + epsilon > 0 (other statistics "
                             "make NaN or infinite observations)")
        if self.clip is not None and not self.clip > 0:  # NaN fails too; inf clips nothing
            raise ValueError(f"normaliser clip must be > 0, got {self.clip}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var)

    @classmethod
    def identity(cls, obs_dim: int) -> ObsNormalizer:
        return cls(mean=np.zeros(obs_dim), var=np.ones(obs_dim) - 1e-8, clip=None, epsilon=1e-8)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + self.epsilon)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """obs: [..., obs_dim] -> normalised float32 [..., obs_dim]."""
        normalised = (obs - self.mean) / self.std
        if self.clip is not None:
            normalised = np.clip(normalised, -self.clip, self.clip)
        return normalised.astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "clip": self.clip, "epsilon": self.epsilon}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObsNormalizer:
        return cls(mean=np.array(d["mean"]), var=np.array(d["var"]), clip=None if d["clip"] is None else float(d["clip"]), epsilon=float(d["epsilon"]))
