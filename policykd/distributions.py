"""Action distribution families, their parameters as tensors, and closed-form KL with explicit reductions.

Families (parameters per state, B = batch, A = action dims, N = discrete actions):
- ``gaussian``:           mean [B, A], log_std [B, A]; actions are clipped to the action bounds (SB3 PPO/A2C/TRPO,
                          gSDE included: its per-state std is exact for the marginal of the current state).
- ``squashed_gaussian``:  mean [B, A], log_std [B, A] of the pre-tanh Gaussian; actions tanh-squashed into [-1, 1]
                          then scaled to the bounds (SAC/TQC). tanh is a bijection, so KL is computed pre-tanh.
- ``categorical``:        logits [B, N] (PPO/A2C discrete; DQN/QR-DQN as Q/tau).
- ``deterministic``:      action [B, A] in [-1, 1], scaled to the bounds (TD3/DDPG). KL does not exist here:
                          the distillation loss uses the squared error of the actions instead.

Everything specific to a family is its strategy, one Family subclass each (FAMILIES, family_strategy(name)):
parameter names, the student's heads, mode, sampling, KL, temperature, and the mapping to env actions in torch
(to_env_action) and in numpy (numpy_env_action, numpy_one_action: the numpy runtime). The C and ONNX int8 exports
write the same mappings as code, choosing by `discrete` and `clips_to_bounds`.

Importing this module does not import torch (policykd.runtime uses the numpy mappings on machines without it):
the torch methods take tensors and call their methods.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from policykd.errors import UnknownFamily

if TYPE_CHECKING:
    import torch

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def _standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) noise of like's shape and dtype, drawn with generator."""
    import torch  # here, not at the top: see the module docstring

    return torch.randn(like.shape, generator=generator, dtype=like.dtype)


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) between diagonal Gaussians, summed over the action dimension: [B, A] -> [B]."""
    var_p = (2 * log_std_p).exp()
    var_q = (2 * log_std_q).exp()
    per_dim = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5
    return per_dim.sum(dim=-1)


def gaussian_kl_mean_scaled(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor,
                            mean_var: torch.Tensor) -> torch.Tensor:
    """gaussian_kl with the mean term's 1 / var_q(s) replaced by 1 / mean_var ([B, A] or [1, A]); the std terms are
    the KL's own, so q's std still matches p's state by state. Equals gaussian_kl where mean_var is var_q.
    [B, A] -> [B]."""
    var_p = (2 * log_std_p).exp()
    var_q = (2 * log_std_q).exp()
    per_dim = log_std_q - log_std_p + var_p / (2 * var_q) - 0.5 + (mean_p - mean_q) ** 2 / (2 * mean_var)
    return per_dim.sum(dim=-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) between categoricals given logits: [B, N] -> [B]."""
    log_p = logits_p.log_softmax(dim=-1)
    log_q = logits_q.log_softmax(dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _shared(log_std: torch.Tensor) -> torch.Tensor:
    """log_std [B, A] -> [1, A]: one log std per action dimension, the batch mean (gradients reach every row)."""
    return log_std.mean(dim=0, keepdim=True)


def shared_std(dist: DistParams) -> DistParams:
    """A Gaussian batch with its log_std [B, A] replaced by one per action dimension, the batch mean (_shared)."""
    return DistParams(dist.family, {**dist.params, "log_std": _shared(dist["log_std"]).expand_as(dist["log_std"])})


class Family(ABC):
    """One distribution family's strategy. Policy actions are what mode() and sample() return; env actions what
    the env takes. The numpy mappings start from the action head's raw output (the runtime has no DistParams)."""

    name: str
    param_names: tuple[str, ...]
    discrete = False  # actions are indices into N logits (Discrete env), not float vectors [A] (Box env)
    has_log_std = False  # the student has a log_std head
    clips_to_bounds = False  # env action: the policy action clipped to the bounds (else an index, or scaled from [-1, 1])

    @abstractmethod
    def params_from_head(self, out: torch.Tensor, log_std: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The student's parameters from its action head's output [B, out] (and clamped log_std head, if it has one)."""

    @abstractmethod
    def mode(self, dist: DistParams) -> torch.Tensor:
        """The deterministic action in policy space: [B, A] float, or [B] long for categorical."""

    @abstractmethod
    def sample(self, dist: DistParams, generator: torch.Generator | None, noise_scale: float) -> torch.Tensor:
        """One action per state in policy space, drawn with generator (see DistParams.sample)."""

    @abstractmethod
    def kl(self, p: DistParams, q: DistParams) -> torch.Tensor:
        """KL(p || q) per state [B], summed over action dimensions."""

    scales_student_temperature = False  # Hinton et al.: student logits / tau too, and the loss times tau^2

    @abstractmethod
    def with_temperature(self, dist: DistParams, tau: float) -> DistParams:
        """dist softened by temperature tau != 1 (ValueError where a temperature has no meaning)."""

    @abstractmethod
    def hard_label_nll(self, teacher: DistParams, student: DistParams) -> torch.Tensor:
        """Behaviour cloning on hard labels: -log p_student(teacher's mode) per state [B] (as `imitation` does)."""

    @abstractmethod
    def hard_label_entropy(self, student: DistParams) -> torch.Tensor:
        """The student's entropy per state [B] as hard_label_nll sees its distribution (imitation's BC adds
        1e-3 times it as a bonus: losses.BC_ENTROPY_WEIGHT)."""

    @abstractmethod
    def mean_squared_error(self, teacher: DistParams, student: DistParams) -> torch.Tensor:
        """Squared error between the two policies' action means per state [B], summed over action dimensions."""

    @abstractmethod
    def to_env_action(self, policy_action: torch.Tensor, low: torch.Tensor | None, high: torch.Tensor | None) -> torch.Tensor:
        """policy_action [B, A] (or [B] long) -> env action of the same shape, for action bounds low, high [A]."""

    @abstractmethod
    def numpy_env_action(self, head_out: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """The action head's output [B, out] -> env actions float32 [B, A] (or int64 [B] indices), in numpy."""

    @abstractmethod
    def numpy_one_action(self, low: np.ndarray, high: np.ndarray) -> Callable[[np.ndarray], np.ndarray | int]:
        """A function head_out [out] -> env action [A] (or an int index) for one state, which may overwrite
        head_out: the numpy runtime's fast path, with what it can computed once here."""


class GaussianFamily(Family):
    """Diagonal Gaussian; the env clips its actions to the bounds."""

    name, param_names = "gaussian", ("mean", "log_std")
    has_log_std = True
    clips_to_bounds = True

    def params_from_head(self, out, log_std):
        return {"mean": out, "log_std": log_std}

    def mode(self, dist):
        return dist["mean"]

    def sample(self, dist, generator, noise_scale):
        return dist["mean"] + _standard_normal(dist["mean"], generator) * dist["log_std"].exp() * noise_scale

    def kl(self, p, q):
        return gaussian_kl(p["mean"], p["log_std"], q["mean"], q["log_std"])

    def with_temperature(self, dist, tau):  # the std scaled by tau (pre-tanh for the squashed family)
        _check_tau(tau)
        return DistParams(self.name, {"mean": dist["mean"], "log_std": dist["log_std"] + math.log(tau)})

    def hard_label_nll(self, teacher, student):
        """The teacher's mean (pre-tanh when squashed) under the student's mean and ONE std per action dimension (the
        batch mean of its log_std), as imitation's BC policies have (SB3's ActorCriticPolicy: a state-independent
        log_std). With a std per state, the NLL drives it to the log_std clamp (std 2e-9) on the states it fits
        best, and the 1/std^2 gradients that gives their means make training diverge (TRPO Hopper at 10k: 0.019)."""
        log_std = _shared(student["log_std"])
        z = (teacher["mean"] - student["mean"]) / log_std.exp()
        return (0.5 * z**2 + log_std + 0.5 * math.log(2 * math.pi)).sum(dim=-1)

    def hard_label_entropy(self, student):
        return (_shared(student["log_std"]) + 0.5 * math.log(2 * math.pi * math.e)).sum(dim=-1).expand(len(student["mean"]))

    def mean_squared_error(self, teacher, student):
        return ((self.mode(student) - self.mode(teacher)) ** 2).sum(dim=-1)

    def to_env_action(self, policy_action, low, high):
        return policy_action.minimum(high).maximum(low)  # as SB3 does for unsquashed policies

    def numpy_env_action(self, head_out, low, high):
        return np.minimum(np.maximum(head_out, low), high)

    def numpy_one_action(self, low, high):
        return lambda head_out: np.minimum(np.maximum(head_out, low, out=head_out), high)


class _ScaledFromUnitBox(Family):
    """Policy actions in [-1, 1] (a tanh of the head), scaled to the bounds: low + (action + 1) / 2 * (high - low)."""

    def to_env_action(self, policy_action, low, high):
        return low + 0.5 * (policy_action.clamp(-1.0, 1.0) + 1.0) * (high - low)

    def numpy_env_action(self, head_out, low, high):
        return low + 0.5 * (np.tanh(head_out) + 1.0) * (high - low)

    def numpy_one_action(self, low, high):  # mid + tanh * half_range: numpy_env_action up to float rounding
        half_range = (0.5 * (high - low)).astype(np.float32)
        mid = (low + half_range).astype(np.float32)

        def one_action(head_out: np.ndarray) -> np.ndarray:
            np.tanh(head_out, out=head_out)
            np.multiply(head_out, half_range, out=head_out)
            return np.add(head_out, mid)

        return one_action


class SquashedGaussianFamily(_ScaledFromUnitBox, GaussianFamily):
    """The Gaussian's parameters, heads and KL (pre-tanh); its actions tanh-squashed, then scaled to the bounds."""

    name = "squashed_gaussian"
    clips_to_bounds = False

    def mode(self, dist):
        return dist["mean"].tanh()

    def sample(self, dist, generator, noise_scale):
        return super().sample(dist, generator, noise_scale).tanh()  # the Gaussian's sample, squashed


class DeterministicFamily(_ScaledFromUnitBox):
    """One action per state, the tanh of the head, scaled to the bounds."""

    name, param_names = "deterministic", ("action",)

    def params_from_head(self, out, log_std):
        return {"action": out.tanh()}

    def mode(self, dist):
        return dist["action"]

    def sample(self, dist, generator, noise_scale):
        noise = _standard_normal(dist["action"], generator)
        return (dist["action"] + 0.1 * noise_scale * noise).clamp(-1.0, 1.0)

    def kl(self, p, q):  # no KL exists here: see kl_divergence
        return ((p["action"] - q["action"]) ** 2).sum(dim=-1)

    def with_temperature(self, dist, tau):
        raise ValueError("a deterministic (TD3/DDPG) teacher has no spread for a temperature to scale; leave tau at 1")

    def hard_label_nll(self, teacher, student):  # no likelihood exists: the squared action error, as kl()
        return self.kl(teacher, student)

    def hard_label_entropy(self, student):
        return torch.zeros(len(student["action"]))

    def mean_squared_error(self, teacher, student):
        return self.kl(teacher, student)


class CategoricalFamily(Family):
    """Logits over N discrete actions; the env action is the index."""

    name, param_names = "categorical", ("logits",)
    discrete = True

    def params_from_head(self, out, log_std):
        return {"logits": out}

    def mode(self, dist):
        return dist["logits"].argmax(dim=-1)

    def sample(self, dist, generator, noise_scale):
        return dist["logits"].softmax(dim=-1).multinomial(1, generator=generator).squeeze(-1)

    def kl(self, p, q):
        return categorical_kl(p["logits"], q["logits"])

    scales_student_temperature = True

    def with_temperature(self, dist, tau):
        _check_tau(tau)
        return DistParams(self.name, {"logits": dist["logits"] / tau})

    def hard_label_nll(self, teacher, student):  # cross-entropy with the teacher's argmax
        labels = teacher["logits"].argmax(dim=-1, keepdim=True)
        return -student["logits"].log_softmax(dim=-1).gather(-1, labels).squeeze(-1)

    def hard_label_entropy(self, student):
        log_p = student["logits"].log_softmax(dim=-1)
        return -(log_p.exp() * log_p).sum(dim=-1)

    def mean_squared_error(self, teacher, student):  # on centred logits: softmax ignores a shift of all logits
        centred = lambda logits: logits - logits.mean(dim=-1, keepdim=True)  # noqa: E731
        return ((centred(student["logits"]) - centred(teacher["logits"])) ** 2).sum(dim=-1)

    def to_env_action(self, policy_action, low, high):
        return policy_action

    def numpy_env_action(self, head_out, low, high):
        return np.argmax(head_out, axis=-1).astype(np.int64, copy=False)

    def numpy_one_action(self, low, high):
        return lambda head_out: int(np.argmax(head_out))


FAMILIES: dict[str, Family] = {f.name: f for f in (GaussianFamily(), SquashedGaussianFamily(), CategoricalFamily(), DeterministicFamily())}
PARAM_NAMES: dict[str, tuple[str, ...]] = {name: f.param_names for name, f in FAMILIES.items()}


def family_strategy(name: str) -> Family:
    """The strategy of the family called name; UnknownFamily (a PolicyKDError and a ValueError) for another name."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise UnknownFamily(f"unknown distribution family {name!r}; use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


@dataclass
class DistParams:
    """A batch of action distributions of one family; `params` maps PARAM_NAMES[family] to [B, ...] tensors."""

    family: str
    params: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        missing = set(family_strategy(self.family).param_names) - set(self.params)
        if missing:
            raise ValueError(f"{self.family} distribution lacks parameters {sorted(missing)}")

    @property
    def strategy(self) -> Family:
        return FAMILIES[self.family]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.params[name]

    def detach(self) -> DistParams:
        return DistParams(self.family, {k: v.detach() for k, v in self.params.items()})

    def mode(self) -> torch.Tensor:
        """The deterministic action in policy space: [B, A] float, or [B] long for categorical."""
        return self.strategy.mode(self)

    def with_std_of(self, other: DistParams) -> DistParams:
        """These means [B, A] with `other`'s log_std [B, A] (Gaussian families); other families unchanged."""
        if "log_std" not in self.params:
            return self
        return DistParams(self.family, {**self.params, "log_std": other["log_std"]})

    def sample(self, generator: torch.Generator | None = None, *, noise_scale: float = 1.0) -> torch.Tensor:
        """One action per state in policy space, drawn with `generator`.

        noise_scale multiplies the Gaussian std (exploration wider than the policy's own, as in DART); the
        deterministic family gets N(0, (0.1 * noise_scale)^2) noise, clipped to [-1, 1]; categorical ignores it.
        """
        return self.strategy.sample(self, generator, noise_scale)


def _reduce(per_state: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_state.mean()
    if reduction == "sum":
        return per_state.sum()
    if reduction == "none":
        return per_state
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'")


def kl_divergence(p: DistParams, q: DistParams, *, reduction: str = "mean") -> torch.Tensor:
    """KL(p || q) per state, summed over action dimensions, then reduced over the batch.

    For the deterministic family there is no KL; this returns the squared action error summed over
    dimensions (a Gaussian KL with equal fixed std, up to a constant factor).
    """
    if p.family != q.family:
        raise ValueError(f"cannot compare a {p.family} distribution with a {q.family} one")
    return _reduce(p.strategy.kl(p, q), reduction)


def _check_tau(tau: float) -> None:
    if tau <= 0 or not math.isfinite(tau):
        raise ValueError(f"temperature tau must be a positive finite number, got {tau}")


def with_temperature(dist: DistParams, tau: float) -> DistParams:
    """dist at temperature tau: categorical logits / tau; Gaussian (and pre-tanh squashed) std * tau; a
    deterministic distribution has none (ValueError unless tau == 1)."""
    return dist if tau == 1.0 else dist.strategy.with_temperature(dist, tau)


def box_bounds(space) -> tuple[np.ndarray, np.ndarray]:
    """float32 (low, high) of a Box action space, shape [A] each."""
    return np.asarray(space.low, dtype=np.float32).reshape(-1), np.asarray(space.high, dtype=np.float32).reshape(-1)
