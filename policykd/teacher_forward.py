"""A one-pass forward of SB3 actor-critic (PPO, A2C, TRPO) policies for labelling: distribution and value together.

Labelling a state costs one teacher forward, and at collection's batch sizes (one row per env, 2-8 rows) that cost
is almost all per-call overhead: torch.distributions objects, the shared trunk computed twice (once for the
action, once for the value), and nn.Module dispatch around every layer. `OnPolicyForward` computes the features
and the MLP extractor once for both heads, builds no distribution objects, and runs plain Linear/activation stacks
as functional calls. The operations are the ones SB3 runs, so the numbers are the same to the bit
(tests/test_teachers.py compares them with torch.equal); about a third of the cost per call.

`OnPolicyForward.of(policy)` is None for a policy it does not cover (squashed gSDE, multi-discrete or Bernoulli
actions, custom modules): Teacher then takes SB3's own path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from policykd.distributions import DistParams

Layer = Callable[[torch.Tensor], torch.Tensor]

_ACTIVATIONS: dict[type, Callable[[nn.Module], Layer]] = {
    nn.ReLU: lambda m: torch.relu,
    nn.Tanh: lambda m: torch.tanh,
    nn.ELU: lambda m: lambda x: F.elu(x, m.alpha),
    nn.LeakyReLU: lambda m: lambda x: F.leaky_relu(x, m.negative_slope),
    nn.SiLU: lambda m: F.silu,
}


def _functional(module: nn.Module) -> Layer | None:
    """The module as one functional call or a chain of them (Sequential, Linear, the activations above,
    Identity); None for anything else."""
    if isinstance(module, nn.Sequential):
        layers = [_functional(m) for m in module]
        if any(layer is None for layer in layers):
            return None

        def chain(x: torch.Tensor) -> torch.Tensor:
            for layer in layers:
                x = layer(x)
            return x
        return chain
    if type(module) is nn.Linear:
        weight, bias = module.weight, module.bias
        return lambda x: F.linear(x, weight, bias)
    if type(module) is nn.Identity:
        return lambda x: x
    make = _ACTIVATIONS.get(type(module))
    return None if make is None else make(module)


class OnPolicyForward:
    """(distribution, value) of an SB3 ActorCriticPolicy with a diagonal-Gaussian, unsquashed gSDE or categorical
    head, in one pass; build with OnPolicyForward.of(policy)."""

    def __init__(self, policy: nn.Module, head: str, actor: Layer, critic: Layer, action: Layer, value: Layer) -> None:
        self.policy, self.head = policy, head
        self._actor, self._critic, self._action, self._value = actor, critic, action, value

    @classmethod
    def of(cls, policy: nn.Module) -> OnPolicyForward | None:
        from stable_baselines3.common.distributions import (
            CategoricalDistribution,
            DiagGaussianDistribution,
            StateDependentNoiseDistribution,
        )

        if not all(hasattr(policy, a) for a in ("mlp_extractor", "value_net", "action_net", "share_features_extractor")):
            return None
        dist = getattr(policy, "action_dist", None)
        if type(dist) is StateDependentNoiseDistribution and dist.bijector is None:
            head = "gsde"
        else:
            head = {DiagGaussianDistribution: "gaussian", CategoricalDistribution: "categorical"}.get(type(dist))
        extractor = policy.mlp_extractor
        parts = [_functional(m) if m is not None else None for m in (getattr(extractor, "policy_net", None),
                                                                   getattr(extractor, "value_net", None),
                                                                   policy.action_net, policy.value_net)]
        shared = getattr(extractor, "shared_net", None)  # SB3 < 1.8 extractors had a shared trunk
        if head is None or any(p is None for p in parts) or (shared is not None and len(shared) > 0):
            return None
        return cls(policy, head, *parts)

    def __call__(self, x: torch.Tensor) -> tuple[DistParams, torch.Tensor]:
        """normalised obs [B, obs_dim] -> (action distribution of batch B, value [B])."""
        policy = self.policy
        features = policy.extract_features(x)
        if policy.share_features_extractor:
            latent_pi, latent_vf = self._actor(features), self._critic(features)
        else:
            latent_pi, latent_vf = self._actor(features[0]), self._critic(features[1])
        value = self._value(latent_vf).squeeze(-1)
        head = self._action(latent_pi)
        if self.head == "categorical":  # torch Categorical(logits=...) normalises its logits this way
            return DistParams("categorical", {"logits": head - head.logsumexp(dim=-1, keepdim=True)}), value
        if self.head == "gsde":  # latent_sde = latent_pi
            return DistParams("gaussian", {"mean": head, "log_std": gsde_log_std(policy.action_dist, policy.log_std, latent_pi)}), value
        std = torch.ones_like(head) * policy.log_std.exp()  # as DiagGaussianDistribution builds its Normal
        return DistParams("gaussian", {"mean": head, "log_std": std.log()}), value


def gsde_log_std(action_dist: nn.Module, log_std: torch.Tensor, latent_sde: torch.Tensor) -> torch.Tensor:
    """The per-state log std of a gSDE policy (SB3's StateDependentNoiseDistribution), as its proba_distribution
    builds the Normal: std(s) = sqrt(latent_sde(s)^2 @ std_matrix^2 + epsilon), with std_matrix from the policy's
    log_std parameter [latent, A] (or [latent, 1]: one std per latent unit). latent_sde [B, latent] -> [B, A].

    The exploration noise gSDE samples (a weight matrix held for sde_sample_freq steps) has exactly this std at
    each state, so the marginal action distribution is this Gaussian (before any tanh squash)."""
    variance = torch.mm(latent_sde**2, action_dist.get_std(log_std) ** 2)
    return torch.sqrt(variance + action_dist.epsilon).log()  # as the Normal's stddev, to the bit
