"""Ensemble distillation: several teachers of one task, combined per state into one teacher for one student.

`EnsembleTeacher([t0, t1, ...])` offers the Teacher contract (dist_and_value, action_dist, act, to_env_action,
identity, spaces, family, normalizer, env_spec, ...) over 2+ loaded Teachers on the same env (same env id and
wrappers, observation/action spaces and distribution family). Each member normalises the raw observations with
its own VecNormalize statistics; the student takes the *first* member's normaliser (``normalizer``), as it does
for a single teacher.

Per state s the members' distributions p_i are combined with weights w_i(s) (sum 1):

mode ``mixture`` (linear opinion pool, moment-matched to the family):
    Gaussian / squashed Gaussian (pre-tanh params): mean = sum w mu, var = sum w (sigma^2 + mu^2) - mean^2 per dim;
    categorical: logits = log sum w softmax(logits_i); deterministic: the weighted mean action.
mode ``product`` (logarithmic opinion pool: p proportional to prod p_i^{w_i}, the normalised weighted product of experts):
    Gaussian: precision = sum w_i / sigma_i^2, mean = sum w_i mu_i / sigma_i^2 / precision. Because sum w = 1,
    identical members give back the member, and two equal-weight members give the *mean* of their precisions
    (the plain product of experts, precision = sum 1/sigma_i^2, would be this with w_i = 1: n times sharper);
    categorical: logits = sum w log_softmax(logits_i); deterministic: the weighted mean action.

weighting (w_i(s)):
    ``uniform``: 1 / n.
    ``agreement``: w_i proportional to exp(-mean_{j != i} KL(p_i || p_j)) (squared action error for deterministic
        members). An outlier loses weight; with two members the narrower (more confident) one gets more, since
        KL(narrow || wide) < KL(wide || narrow).
    ``value``: w_i = softmax_i(V_i(s) / (VALUE_TEMPERATURE * mean_j |V_j(s)|)). Teachers of one env and reward
        estimate the same quantity (the discounted return from s, under their own policy), so their values are
        compared as they are, in one common, per-state scale: a member expecting 10% more return than the
        members' mean |V| gets e times the weight of the other. Standardising each member by its own scale would
        remove exactly the difference that matters. Needs comparable values: same discount, same reward scale
        (VecNormalize reward normalisation is undone by rl-zoo's critics only approximately: check it).
    ``return``: one weight per member for every state, w_i = softmax_i((R_i - max_j R_j) / (RETURN_TEMPERATURE *
        mean_j |R_j|)), R_i the member's mean return over RETURN_EPISODES deterministic episodes on seeds from
        RETURN_SEED (measured once when the ensemble is loaded, recorded in identity()). Members within a few percent
        of each other share the weight; a member 10% behind gets e^-5 of the best one's: a measured choice of the
        stronger teacher, where per-state estimates (value, agreement) pick the weaker one at some states.

Values are compared and combined in env reward units: an rl-zoo member trained with VecNormalize(norm_reward=True)
predicts returns divided by its return std (PPO and A2C HalfCheetah: 108 and 64), so its value is multiplied
back by it first (reward_scale). value(s) = sum_i w_i(s) V_i(s), expressed in the first member's units (what
the student's value head then matches, as for that teacher alone). sb3_predict is the first member's (the SB3 baseline path of one model);
actor_parameter_count is the sum over members (what the ensemble runs per action).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policykd.config import ENSEMBLE_MODES, ENSEMBLE_WEIGHTINGS
from policykd.distributions import LOG_STD_MAX, LOG_STD_MIN, DistParams, family_strategy
from policykd.errors import PolicyKDError

VALUE_TEMPERATURE = 0.1  # value weighting: a 10% higher expected return (relative to mean |V|) = e times the weight
RETURN_TEMPERATURE = 0.02  # return weighting: 2% more measured return (relative to mean |R|) = e times the weight
RETURN_EPISODES = 4  # return weighting: deterministic episodes per member
RETURN_SEED = 3_000_000  # ... on seeds RETURN_SEED, RETURN_SEED + 1, ...: apart from evaluation's (from 1,000,000)
_EPS = 1e-8


# -- combination math on DistParams (pure functions, tested on hand-made distributions) -----------------------------

def ensemble_weights(dists: list[DistParams], values: torch.Tensor | None, weighting: str,
                     returns: torch.Tensor | None = None) -> torch.Tensor:
    """Per-state weights [B, n] (rows sum to 1) of n member distributions; values [n, B] for weighting='value',
    the members' measured mean returns [n] for weighting='return'."""
    n, batch = len(dists), _batch(dists[0])
    if weighting == "uniform":
        return torch.full((batch, n), 1.0 / n)
    if weighting == "return":
        if returns is None:
            raise ValueError("return weighting needs the members' measured returns")
        returns = returns.double()
        scale = RETURN_TEMPERATURE * returns.abs().mean().clamp_min(_EPS)
        return torch.softmax((returns - returns.max()) / scale, dim=-1).float().expand(batch, n).clone()
    if weighting == "agreement":
        strategy = dists[0].strategy
        divergence = torch.zeros(batch, n)
        for i in range(n):
            others = [strategy.kl(dists[i], dists[j]).float() for j in range(n) if j != i]
            divergence[:, i] = torch.stack(others).mean(dim=0)
        return torch.softmax(-divergence, dim=-1)
    if weighting == "value":
        if values is None:
            raise ValueError("value weighting needs the members' values")
        values = values.double()
        scale = VALUE_TEMPERATURE * values.abs().mean(dim=0).clamp_min(_EPS)  # [B]
        return torch.softmax((values / scale).T, dim=-1).float()
    raise ValueError(f"unknown ensemble weighting {weighting!r}; use one of {', '.join(ENSEMBLE_WEIGHTINGS)}")


def combine(dists: list[DistParams], weights: torch.Tensor, mode: str) -> DistParams:
    """The members' distributions (one family, batch B) combined per state with weights [B, n] (see the module)."""
    family = dists[0].family
    if any(d.family != family for d in dists):
        raise ValueError(f"cannot combine distributions of families {sorted({d.family for d in dists})}")
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble mode {mode!r}; use one of {', '.join(ENSEMBLE_MODES)}")
    w = weights.T.unsqueeze(-1)  # [n, B, 1]
    if family == "deterministic":
        action = torch.stack([d["action"] for d in dists])
        return DistParams(family, {"action": (w.to(action.dtype) * action).sum(0)})
    if family == "categorical":
        log_p = torch.stack([d["logits"].float().log_softmax(dim=-1) for d in dists])  # [n, B, N]
        w = w.to(log_p.dtype)
        if mode == "mixture":
            logits = torch.logsumexp(log_p + w.clamp_min(1e-30).log(), dim=0)
        else:
            logits = (w * log_p).sum(0)
        return DistParams(family, {"logits": logits - logits.logsumexp(dim=-1, keepdim=True)})
    mean = torch.stack([d["mean"] for d in dists]).double()  # [n, B, A]
    var = torch.stack([(2 * d["log_std"]).exp() for d in dists]).double()
    w = w.double()
    if mode == "mixture":
        mix_mean = (w * mean).sum(0)
        mix_var = ((w * (var + mean**2)).sum(0) - mix_mean**2).clamp_min(0.0)
        # the moment formula can cancel to below the members' smallest variance by rounding only: bound it there
        mix_var = torch.maximum(mix_var, var.min(dim=0).values * (w.sum(0) > 0))
    else:
        precision = (w / var).sum(0)
        mix_mean = (w * mean / var).sum(0) / precision
        mix_var = 1.0 / precision
    dtype = dists[0]["mean"].dtype
    log_std = (0.5 * mix_var.log()).clamp(LOG_STD_MIN, LOG_STD_MAX)
    return DistParams(family, {"mean": mix_mean.to(dtype), "log_std": log_std.to(dtype)})


def _batch(dist: DistParams) -> int:
    return int(next(iter(dist.params.values())).shape[0])


# -- the teacher ---------------------------------------------------------------------------------------------------

class EnsembleTeacher:
    """2+ Teachers of one env behind the Teacher contract; see the module docstring."""

    def __init__(self, members: list, *, mode: str = "mixture", weighting: str = "uniform",
                 member_returns: list[float] | None = None) -> None:
        """member_returns: each member's mean return for weighting='return'; measured here when not given."""
        if len(members) < 2:
            raise PolicyKDError(f"an ensemble needs at least 2 teachers, got {len(members)}; list more in `ensemble`")
        if mode not in ENSEMBLE_MODES:
            raise PolicyKDError(f"ensemble_mode must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
        if weighting not in ENSEMBLE_WEIGHTINGS:
            raise PolicyKDError(f"ensemble_weighting must be one of {', '.join(ENSEMBLE_WEIGHTINGS)}, got {weighting!r}")
        first = members[0]
        seen: dict[str, str] = {}
        for m in members:
            digest = m.identity()["sha256"]
            if digest in seen:
                raise PolicyKDError(f"ensemble teacher {m.source.path} is the same file as {seen[digest]} (sha256 "
                                    f"{digest[:12]}...); list each teacher once")
            seen[digest] = str(m.source.path)
        for m in members[1:]:
            problem = _mismatch(first, m)
            if problem:
                raise PolicyKDError(f"cannot ensemble {m.source.path} with {first.source.path}: {problem}; "
                                    "every teacher of an ensemble must be trained on the same env")
        self.members = list(members)
        self.mode, self.weighting = mode, weighting
        self.env_spec = first.env_spec
        self.observation_space, self.action_space = first.observation_space, first.action_space
        self.family, self.strategy = first.family, family_strategy(first.family)
        self.normalizer = first.normalizer  # the student normalises as the first member does
        self.source = first.source
        self.algo = "+".join(m.algo for m in self.members)
        self.last_weights: torch.Tensor | None = None  # [B, n] of the last call, for logging and tests
        # each member's value in env reward units = its value * its VecNormalize return std (1 without reward norm)
        self.value_scales = torch.tensor([reward_scale(m) for m in self.members], dtype=torch.float64)
        self.member_returns: list[float] | None = None  # [n] mean returns, weighting='return' only
        if weighting == "return":
            self.member_returns = list(member_returns) if member_returns is not None else measure_returns(self.members)

    @property
    def obs_dim(self) -> int:
        return self.members[0].obs_dim

    @property
    def action_dim(self) -> int:
        return self.members[0].action_dim

    def describe(self) -> str:
        """One line naming the ensemble (the CLI prints it)."""
        names = ", ".join(f"{m.algo} {m.source.path}" for m in self.members)
        return f"ensemble of {len(self.members)} teachers ({names}): {self.mode}, {self.weighting} weights"

    def actor_parameter_count(self) -> int:
        return sum(m.actor_parameter_count() for m in self.members)

    def identity(self) -> dict[str, Any]:
        members = [m.identity() for m in self.members]
        combined = hashlib.sha256("".join(m["sha256"] for m in members).encode()).hexdigest()
        identity = {"path": [m["path"] for m in members], "algo": self.algo, "env": members[0]["env"], "sha256": combined,
                    "family": self.family, "actor_params": self.actor_parameter_count(), "members": members,
                    "ensemble": self.mode, "weighting": self.weighting}
        if self.member_returns is not None:
            identity["member_returns"] = self.member_returns
        return identity

    def make_env(self, *, render_mode: str | None = None):
        return self.members[0].make_env(render_mode=render_mode)

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """raw obs -> the first member's normalised tensor (what the student sees)."""
        return self.members[0].obs_tensor(obs)

    @torch.no_grad()
    def members_dist_and_value(self, obs: np.ndarray) -> tuple[list[DistParams], torch.Tensor]:
        """Each member's distribution and values [n, B] in env reward units, each normalising obs its own way."""
        out = [m.dist_and_value(obs) for m in self.members]
        return [d for d, _ in out], torch.stack([v.double() for _, v in out]) * self.value_scales[:, None]

    @torch.no_grad()
    def weights(self, obs: np.ndarray) -> torch.Tensor:
        dists, values = self.members_dist_and_value(obs)
        return ensemble_weights(dists, values, self.weighting, self._returns())

    @torch.no_grad()
    def dist_and_value(self, obs: np.ndarray) -> tuple[DistParams, torch.Tensor]:
        """raw obs [B, obs_dim] -> (combined distribution, weighted value [B])."""
        dists, values = self.members_dist_and_value(obs)
        w = ensemble_weights(dists, values, self.weighting, self._returns())
        self.last_weights = w
        value = (w.T.double() * values).sum(0) / self.value_scales[0]  # in the first member's value units
        return combine(dists, w, self.mode), value.float()

    def _returns(self) -> torch.Tensor | None:
        return None if self.member_returns is None else torch.tensor(self.member_returns, dtype=torch.float64)

    @torch.no_grad()
    def action_dist(self, obs: np.ndarray) -> DistParams:
        return self.dist_and_value(obs)[0]

    def value(self, obs: np.ndarray) -> torch.Tensor:
        return self.dist_and_value(obs)[1]

    @torch.no_grad()
    def features(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        """Every member's actor activations, keyed 'm{i}/{module name}'."""
        return {f"m{i}/{k}": v for i, m in enumerate(self.members) for k, v in m.features(obs).items()}

    def to_env_action(self, policy_action: torch.Tensor) -> np.ndarray:
        return self.members[0].to_env_action(policy_action)

    def act(self, obs: np.ndarray, *, deterministic: bool = True, generator: torch.Generator | None = None) -> np.ndarray:
        dist = self.action_dist(obs)
        return self.to_env_action(dist.mode() if deterministic else dist.sample(generator))

    def sb3_predict(self, obs: np.ndarray) -> np.ndarray:
        """The first member's SB3 path (a baseline for latency; the ensemble itself has none)."""
        return self.members[0].sb3_predict(obs)


_measured_returns: dict[tuple[str, ...], list[float]] = {}  # member sha256s -> mean returns, once per process


def measure_returns(members: list) -> list[float]:
    """Each member's mean return over RETURN_EPISODES deterministic episodes on seeds from RETURN_SEED (the same for
    every member and run: the weights are a property of the teachers), said in one line per member."""
    from policykd.rollout import run_episodes
    from policykd.tracking import console

    key = tuple(m.identity()["sha256"] for m in members)
    if key not in _measured_returns:
        seeds = list(range(RETURN_SEED, RETURN_SEED + RETURN_EPISODES))
        console.print(f"return weighting: measuring each of {len(members)} teachers over {RETURN_EPISODES} episodes", highlight=False)
        returns = []
        for m in members:
            returns.append(float(np.mean(run_episodes(m.act, m.env_spec, seeds).returns)))
            console.print(f"  {m.algo} {m.source.path}: mean return {returns[-1]:.4g}", highlight=False)
        _measured_returns[key] = returns
    return list(_measured_returns[key])


def reward_scale(teacher) -> float:
    """sqrt(ret_rms.var + eps) of an rl-zoo teacher trained with VecNormalize(norm_reward=True): its critic
    predicts returns divided by this, so value * scale is in env reward units. 1 for every other teacher."""
    from policykd.safe_pickle import load_vecnormalize_pickle
    from policykd.zoo import find_zoo_run, is_zoo_run_model

    path = Path(teacher.source.path)
    if not (path.is_dir() or is_zoo_run_model(path)) or (path / "model_card.json").exists():
        return 1.0
    try:
        vecnormalize = (find_zoo_run(path) if path.is_dir() else find_zoo_run(path.parent, model_zip=path)).vecnormalize
        if not vecnormalize:
            return 1.0
        stats = load_vecnormalize_pickle(vecnormalize)
        if not getattr(stats, "norm_reward", False):
            return 1.0
        return float(np.sqrt(float(np.asarray(stats.ret_rms.var).reshape(-1)[0]) + float(stats.epsilon)))
    except (PolicyKDError, AttributeError, TypeError, ValueError, IndexError):
        return 1.0


def _mismatch(a, b) -> str | None:
    from policykd.teachers import describe_space

    if a.env_spec.env_id != b.env_spec.env_id:
        return f"env {b.env_spec.env_id} is not {a.env_spec.env_id}"
    wrappers_a, wrappers_b = [w.path for w in a.env_spec.wrappers], [w.path for w in b.env_spec.wrappers]
    if wrappers_a != wrappers_b:
        return f"env wrappers {wrappers_b} are not {wrappers_a}"
    for kind in ("observation_space", "action_space"):
        sa, sb = getattr(a, kind), getattr(b, kind)
        if describe_space(sa) != describe_space(sb) or sa != sb:
            return f"{kind.replace('_', ' ')} {describe_space(sb)} is not {describe_space(sa)}"
    if a.family != b.family:
        return f"its actions are {b.family} ({b.algo}), not {a.family} ({a.algo}); ensemble teachers of one family"
    return None


def load_teacher_for(config):
    """The teacher a DistillConfig names: load_teacher(config.teacher, ...), or, when config.ensemble lists more
    teachers, an EnsembleTeacher of it (first) and them. env_id and algo apply to config.teacher only (the
    members' algos are inferred; a member that is a bare SB3 zip, which records no env, gets the main teacher's
    env id); every member uses config.trust_pickle."""
    from policykd.teachers import load_teacher

    main = load_teacher(config.teacher, algo=config.algo, env_id=config.env_id, trust_pickle=config.trust_pickle)
    if not config.ensemble:
        return main
    env_id = main.env_spec.env_id
    members = [main]
    for path in config.ensemble:
        bare_zip = Path(path).suffix == ".zip" and Path(path).is_file()  # records no env: it gets the main teacher's
        try:
            members.append(load_teacher(path, env_id=env_id if bare_zip else None, trust_pickle=config.trust_pickle))
        except PolicyKDError as e:
            raise PolicyKDError(f"ensemble teacher {path}: {e}") from e
    return EnsembleTeacher(members, mode=config.ensemble_mode, weighting=config.ensemble_weighting)
