"""From a policy's action space to the env's: clipping (Gaussian) or [-1, 1] -> [low, high] scaling (squashed)."""

from __future__ import annotations

import numpy as np
import torch


def to_env_action(policy_action: torch.Tensor, family: str, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """policy_action: [B, A] (or [B] long for categorical) -> env action of the same shape.

    gaussian: clipped to [low, high] (as SB3 does for unsquashed policies);
    squashed_gaussian / deterministic: policy actions live in [-1, 1] and are scaled to [low, high].
    """
    if family == "categorical":
        return policy_action
    if family == "gaussian":
        return torch.maximum(torch.minimum(policy_action, high), low)
    return low + 0.5 * (policy_action.clamp(-1.0, 1.0) + 1.0) * (high - low)


def box_bounds(space) -> tuple[np.ndarray, np.ndarray]:
    """float32 (low, high) of a Box action space, shape [A] each."""
    return np.asarray(space.low, dtype=np.float32).reshape(-1), np.asarray(space.high, dtype=np.float32).reshape(-1)
