"""The distillation loss, per state s with teacher T and student S, averaged over the batch:

    action term  +  lambda_v * ((V_S(s) - V_T(s)) / sigma_V)^2

The action term is chosen by `loss`:
- "kl" (default): KL(T_tau(.|s) || S(.|s)) [or the reverse KL], closed form per family and summed over action
  dimensions (distributions.kl_divergence). The temperature tau scales the teacher's std (Gaussian families,
  pre-tanh for squashed ones) or divides the logits (categorical; DQN's Q-values, divided by the teacher's
  logit_scale, become softmax(Q / (logit_scale * tau))); for categorical targets the student's logits are divided by tau too and the term is multiplied by tau^2, so its
  gradients keep their size (Hinton et al., 2015). A deterministic (TD3) teacher has no temperature.
- "bc": behaviour cloning on hard labels, -log S(mode of T | s), as the `imitation` library trains it
  (cross-entropy with the teacher's argmax for categorical actions): a Gaussian student's std is one per action
  dimension there (the batch mean of its log_std, as imitation's SB3 policies have a state-independent std), and
  imitation's entropy bonus (BC_ENTROPY_WEIGHT times the student's entropy) is subtracted.
  With kl_mean_scale "dimension" (Gaussian families, forward KL), the KL's mean term divides by one student variance
  per action dimension (the batch's geometric mean) instead of the state's own, so states where the teacher is
  unsure still get their means matched (a deterministic student acts on its means); the std term is unchanged.
  With kl_mean_scale "teacher", it divides by the teacher's variance at the state (at temperature tau): the KL's
  value at its optimum, but a student can no longer lower the pull on a mean it has not fitted by widening its std
  there (the forward KL lets it: where the mean error is large, the best std is sqrt(var_T + error^2)).
  With kl_student_std "shared", the student's std in the KL is one per action dimension (the batch mean of its
  log_std, as in "bc"), so its std head does not fit the teacher's std state by state. With "mixed", the term is
  the mean of the two KLs (the student's std per state, and shared): the std head still fits the teacher's std state
  by state, while the shared half keeps a pull on every state's mean however wide the student's std is there.
- "mse": squared error between the action means (centred logits for categorical actions).
With action bounds given (Gaussian family, whose actions the env clips), means beyond a bound are compared as the
bound itself (bounded_means). The value error is measured in units of the teacher's value std sigma_V over the
buffer, so lambda_v means the same on every env. "kl" in the returned terms is always KL(T || S) at tau = 1, a
diagnostic comparable across losses. Every term has reduction "mean" over the batch, so the loss does not
depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from policykd.config import ACTION_LOSSES, KL_DIRECTIONS, KL_MEAN_SCALES, KL_STUDENT_STDS
from policykd.distributions import DistParams, gaussian_kl_mean_scaled, kl_divergence, shared_std, with_temperature

BC_ENTROPY_WEIGHT = 1e-3  # imitation's BC default (ent_weight)


@dataclass(frozen=True)
class LossConfig:
    kl_direction: str = "forward"  # "forward": KL(T || S) (mode-covering); "reverse": KL(S || T)
    tau: float = 1.0
    lambda_v: float = 0.5
    loss: str = "kl"               # the action term: kl, bc (hard-label NLL) or mse (action means)
    kl_mean_scale: str = "state"   # forward KL, Gaussian families: "dimension" weighs every state's mean error alike,
                                   # "teacher" by the teacher's variance there
    kl_student_std: str = "state"  # forward KL, Gaussian families: "shared" gives the student one std per dimension,
                                   # "mixed" averages the KLs with both stds

    @property
    def kl_as_is(self) -> bool:
        """The action term is KL(T || S) itself (up to temperature and direction), not a reweighted form of it."""
        return self.loss == "kl" and self.kl_mean_scale == "state" and self.kl_student_std == "state"

    def __post_init__(self) -> None:
        if self.kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"kl_direction must be 'forward' or 'reverse', got {self.kl_direction!r}")
        if self.loss not in ACTION_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(ACTION_LOSSES)}, got {self.loss!r}")
        if self.kl_mean_scale not in KL_MEAN_SCALES:
            raise ValueError(f"kl_mean_scale must be one of {', '.join(KL_MEAN_SCALES)}, got {self.kl_mean_scale!r}")
        if self.kl_student_std not in KL_STUDENT_STDS:
            raise ValueError(f"kl_student_std must be one of {', '.join(KL_STUDENT_STDS)}, got {self.kl_student_std!r}")
        if self.lambda_v < 0:
            raise ValueError(f"lambda_v must be >= 0, got {self.lambda_v}")


def bounded_means(teacher: DistParams, student: DistParams, low: torch.Tensor,
                  high: torch.Tensor) -> tuple[DistParams, DistParams]:
    """Gaussian pair with means [B, A] compared as the env acts on them, with actions clipped to [low, high] [A].

    The teacher's mean is clipped into the bounds; where it lay beyond a bound, the student's mean is clipped at
    that bound too, so a student mean on the same side costs nothing (and gets no gradient), while one inside is
    pulled to the bound. Where the teacher's mean lies inside, the student's is left as it is. Stds are unchanged.
    """
    mean_t, mean_s = teacher["mean"], student["mean"]
    mean_s = torch.where(mean_t >= high, torch.minimum(mean_s, high), mean_s)
    mean_s = torch.where(mean_t <= low, torch.maximum(mean_s, low), mean_s)
    clipped_t = torch.minimum(torch.maximum(mean_t, low), high)
    return (DistParams("gaussian", {"mean": clipped_t, "log_std": teacher["log_std"]}),
            DistParams("gaussian", {"mean": mean_s, "log_std": student["log_std"]}))


def action_term(teacher: DistParams, student: DistParams, config: LossConfig) -> torch.Tensor:
    """The batch-mean action term of `config.loss` (see the module docstring)."""
    strategy = teacher.strategy
    if config.loss == "bc":
        return strategy.hard_label_nll(teacher, student).mean() - BC_ENTROPY_WEIGHT * strategy.hard_label_entropy(student).mean()
    if config.loss == "mse":
        return strategy.mean_squared_error(teacher, student).mean()
    target = with_temperature(teacher, config.tau)
    scale = 1.0
    if strategy.scales_student_temperature and config.tau != 1.0:
        student, scale = with_temperature(student, config.tau), config.tau**2
    if config.kl_direction == "forward":
        if config.kl_student_std == "mixed" and strategy.has_log_std:
            return 0.5 * scale * (kl_divergence(target, student, reduction="mean")
                                  + kl_divergence(target, shared_std(student), reduction="mean"))
        if config.kl_student_std == "shared" and strategy.has_log_std:
            student = shared_std(student)
        if config.kl_mean_scale != "state" and strategy.has_log_std:
            mean_log_std = target["log_std"] if config.kl_mean_scale == "teacher" else student["log_std"].mean(dim=0, keepdim=True)
            return gaussian_kl_mean_scaled(target["mean"], target["log_std"], student["mean"], student["log_std"],
                                           (2 * mean_log_std).exp()).mean()
        return scale * kl_divergence(target, student, reduction="mean")
    return scale * kl_divergence(student, target, reduction="mean")


def distillation_loss(teacher: DistParams, teacher_value: torch.Tensor, student: DistParams, student_value: torch.Tensor,
                      *, value_std: torch.Tensor | float, config: LossConfig,
                      action_bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Returns {"loss", "kl", "value_mse"}; teacher/student values [B], value_std a scalar > 0; action_bounds
    (low [A], high [A]) switch on bounded_means for the Gaussian family. kl: KL(T || S) at tau = 1, no gradient."""
    if action_bounds is not None and teacher.strategy.clips_to_bounds:
        teacher, student = bounded_means(teacher, student, *action_bounds)
    action = action_term(teacher, student, config)
    with torch.no_grad():
        kl = kl_divergence(teacher, student, reduction="mean")
    value_mse = (((student_value - teacher_value) / value_std) ** 2).mean()
    return {"loss": action + config.lambda_v * value_mse, "kl": kl, "value_mse": value_mse}
