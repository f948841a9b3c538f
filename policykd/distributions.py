"""Action distribution families, their parameters as tensors, and closed-form KL with explicit reductions.

Families (parameters per state, B = batch, A = action dims, N = discrete actions):
- ``gaussian``:           mean [B, A], log_std [B, A]; actions are clipped to the action bounds (SB3 PPO/A2C/TRPO,
                          gSDE included: its per-state std is exact for the marginal of the current state).
- ``squashed_gaussian``:  mean [B, A], log_std [B, A] of the pre-tanh Gaussian; actions tanh-squashed into [-1, 1]
                          then scaled to the bounds (SAC/TQC). tanh is a bijection, so KL is computed pre-tanh.
- ``categorical``:        logits [B, N] (PPO/A2C discrete; DQN/QR-DQN as Q/tau).
- ``deterministic``:      action [B, A] in [-1, 1], scaled to the bounds (TD3/DDPG). KL does not exist here:
                          the distillation loss uses the squared error of the actions instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FAMILIES = ("gaussian", "squashed_gaussian", "categorical", "deterministic")
PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "gaussian": ("mean", "log_std"),
    "squashed_gaussian": ("mean", "log_std"),
    "categorical": ("logits",),
    "deterministic": ("action",),
}
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass
class DistParams:
    """A batch of action distributions of one family; `params` maps PARAM_NAMES[family] to [B, ...] tensors."""

    family: str
    params: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown distribution family {self.family!r}; expected one of {FAMILIES}")
        missing = set(PARAM_NAMES[self.family]) - set(self.params)
        if missing:
            raise ValueError(f"{self.family} distribution lacks parameters {sorted(missing)}")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.params[name]

    def detach(self) -> DistParams:
        return DistParams(self.family, {k: v.detach() for k, v in self.params.items()})

    def mode(self) -> torch.Tensor:
        """The deterministic action in policy space: [B, A] float, or [B] long for categorical."""
        if self.family == "categorical":
            return self["logits"].argmax(dim=-1)
        if self.family == "gaussian":
            return self["mean"]
        if self.family == "squashed_gaussian":
            return torch.tanh(self["mean"])
        return self["action"]

    def sample(self, generator: torch.Generator | None = None, *, noise_scale: float = 1.0) -> torch.Tensor:
        """One action per state in policy space, drawn with `generator`.

        noise_scale multiplies the Gaussian std (exploration wider than the policy's own, as in DART); the
        deterministic family gets N(0, (0.1 * noise_scale)^2) noise, clipped to [-1, 1]; categorical ignores it.
        """
        if self.family == "categorical":
            probs = torch.softmax(self["logits"], dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        if self.family == "deterministic":
            noise = torch.randn(self["action"].shape, generator=generator, dtype=self["action"].dtype)
            return (self["action"] + 0.1 * noise_scale * noise).clamp(-1.0, 1.0)
        noise = torch.randn(self["mean"].shape, generator=generator, dtype=self["mean"].dtype)
        pre_tanh = self["mean"] + noise * self["log_std"].exp() * noise_scale
        return torch.tanh(pre_tanh) if self.family == "squashed_gaussian" else pre_tanh


def _reduce(per_state: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_state.mean()
    if reduction == "sum":
        return per_state.sum()
    if reduction == "none":
        return per_state
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'")


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) between diagonal Gaussians, summed over the action dimension: [B, A] -> [B]."""
    var_p = (2 * log_std_p).exp()
    var_q = (2 * log_std_q).exp()
    per_dim = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5
    return per_dim.sum(dim=-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) between categoricals given logits: [B, N] -> [B]."""
    log_p = torch.log_softmax(logits_p, dim=-1)
    log_q = torch.log_softmax(logits_q, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def kl_divergence(p: DistParams, q: DistParams, *, reduction: str = "mean") -> torch.Tensor:
    """KL(p || q) per state, summed over action dimensions, then reduced over the batch.

    For the deterministic family there is no KL; this returns the squared action error summed over
    dimensions (a Gaussian KL with equal fixed std, up to a constant factor).
    """
    if p.family != q.family:
        raise ValueError(f"cannot compare a {p.family} distribution with a {q.family} one")
    if p.family in ("gaussian", "squashed_gaussian"):
        per_state = gaussian_kl(p["mean"], p["log_std"], q["mean"], q["log_std"])
    elif p.family == "categorical":
        per_state = categorical_kl(p["logits"], q["logits"])
    else:
        per_state = ((p["action"] - q["action"]) ** 2).sum(dim=-1)
    return _reduce(per_state, reduction)


def with_temperature(dist: DistParams, tau: float) -> DistParams:
    """Soften a categorical target: logits / tau. Other families are returned unchanged."""
    if dist.family != "categorical" or tau == 1.0:
        return dist
    if tau <= 0 or not math.isfinite(tau):
        raise ValueError(f"temperature tau must be a positive finite number, got {tau}")
    return DistParams("categorical", {"logits": dist["logits"] / tau})
