"""Load any SB3 / rl-zoo / policykd checkpoint (or a saved policykd student: policykd.student_teacher) as a Teacher with one contract, whatever the algorithm.

A Teacher offers, for a batch of *raw* env observations obs [B, obs_dim] (normalisation is applied inside):
- ``dist_and_value(obs)``: the action distribution (DistParams) and the value [B];
- ``features(obs)``: named hidden activations of the actor, each [B, H];
- ``act(obs)``: env-scaled actions, and ``make_env()``: the env exactly as trained.

Distributions: Gaussian for PPO/A2C/TRPO, squashed (tanh) Gaussian for SAC/TQC/CrossQ and for on-policy teachers
with squash_output=True; with gSDE (use_sde=True) the std at a state is the one gSDE's noise has there
(gsde_log_std); one action per state for TD3/DDPG and ARS (Box); logits for DQN/QR-DQN (Q-values) and ARS (Discrete), divided by
the teacher's logit_scale (argmax_logit_scale: outputs whose scale is the reward's become a distribution that puts
0.95 on the best of two actions at the median state, so targets and sampled actions follow the greedy policy).
Values: V(s) for actor-critic (PPO/A2C/TRPO); min over critics of Q(s, mu(s)) for SAC/CrossQ/TD3/TQC
(TQC: mean over quantiles first); max_a Q(s, a) for DQN/QR-DQN (QR-DQN: mean over quantiles); none for ARS
(has_value False: zeros, and distillation turns value matching off).

Where the checkpoint comes from (agents/ folder, rl-zoo run, bare zip) is policykd.teacher_sources; its pickled
parts are read in safe mode unless trust_pickle=True (policykd.safe_pickle). The teacher's observation and
action spaces must match the env's (shape, Box bounds, number of discrete actions).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.artifacts import sha256_file
from policykd.distributions import LOG_STD_MAX, LOG_STD_MIN, DistParams, box_bounds, family_strategy
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.safe_pickle import SCHEDULE_OBJECTS, sb3_custom_objects
from policykd.teacher_forward import OnPolicyForward, gsde_log_std
from policykd.teacher_sources import (  # noqa: F401 - re-exported: `from policykd.teachers import ...` keeps working
    ALGOS,
    DETERMINISTIC,
    MODEL_CARD,
    ON_POLICY,
    Q_BASED,
    SEARCH_BASED,
    SQUASHED,
    TeacherSource,
    algo_class,
    check_supported_policy,
    infer_algo,
    read_checkpoint,
    read_zip_data,
    resolve_source,
)
from policykd.zoo import gym_module_alias

# Kept for callers of the old name: the schedules replaced in both modes (see policykd.safe_pickle).
_CUSTOM_OBJECTS = SCHEDULE_OBJECTS
_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Sigmoid)
_ACTOR_PREFIXES = {
    **{a: ("mlp_extractor.policy_net", "mlp_extractor.shared_net") for a in ON_POLICY},
    **{a: ("actor.latent_pi",) for a in SQUASHED},
    **{a: ("actor.mu",) for a in DETERMINISTIC},
    "dqn": ("q_net.q_net",),
    "qrdqn": ("quantile_net.quantile_net",),
    "ars": ("action_net",),
}

# Parameter name prefixes of the nets that compute the action (target nets and critics excluded).
_ACTOR_PARAMETERS = {
    **{a: ("mlp_extractor.policy_net.", "mlp_extractor.shared_net.", "action_net.", "log_std") for a in ON_POLICY},
    **{a: ("actor.",) for a in SQUASHED + DETERMINISTIC},
    "dqn": ("q_net.",),
    "qrdqn": ("quantile_net.",),
    "ars": ("action_net.",),
}
# Box bounds of the teacher and the env count as equal within this tolerance (float32 pickles vs float64 envs).
_BOUNDS_RTOL, _BOUNDS_ATOL = 1e-5, 1e-6


class TeacherActions:
    """Env actions from a teacher's distribution, shared by Teacher and policykd.student_teacher.StudentTeacher: the
    subclass sets `strategy` and calls _set_action_bounds, and provides action_dist(obs)."""

    def _set_action_bounds(self, action_space: gym.Space) -> None:
        self._low = self._high = None
        if isinstance(action_space, gym.spaces.Box):
            low, high = box_bounds(action_space)
            self._low, self._high = torch.as_tensor(low), torch.as_tensor(high)

    def to_env_action(self, policy_action: torch.Tensor) -> np.ndarray:
        action = self.strategy.to_env_action(policy_action, self._low, self._high).numpy()
        return action.astype(np.int64) if self.strategy.discrete else action

    def act(self, obs: np.ndarray, *, deterministic: bool = True, generator: torch.Generator | None = None) -> np.ndarray:
        """raw obs [B, obs_dim] -> env actions [B, A] (or [B] ints for discrete)."""
        dist = self.action_dist(obs)
        return self.to_env_action(dist.mode() if deterministic else dist.sample(generator))


class Teacher(TeacherActions):
    """A loaded SB3 policy behind the teacher contract (see the module docstring)."""

    def __init__(self, source: TeacherSource, model: Any) -> None:
        self.source = source
        self.algo = source.algo
        self.model = model
        self.policy = model.policy.eval()
        self.env_spec = source.env
        probe = self.env_spec.make()
        try:
            self.observation_space = probe.observation_space
            self.action_space = probe.action_space
        finally:
            probe.close()
        self._check_spaces()
        obs_dim = int(np.prod(self.observation_space.shape))
        if source.normalizer is not None and source.normalizer.mean.shape != (obs_dim,):
            raise PolicyKDError(f"the VecNormalize statistics of {source.path} are for {source.normalizer.mean.size} observations, "
                                f"but {self.env_spec.env_id} gives {obs_dim}; restore the run's own vecnormalize.pkl")
        self.normalizer = source.normalizer or ObsNormalizer.identity(obs_dim)
        self.family = self._family()
        self.strategy = family_strategy(self.family)
        self._one_pass = OnPolicyForward.of(self.policy) if self.algo in ON_POLICY else None
        self._set_action_bounds(self.action_space)
        self.logit_scale = 1.0  # raw outputs until decided (argmax teachers only)
        if self.acts_on_argmax:
            self.logit_scale = argmax_logit_scale(self)
        # Activation modules along the actor; hooked only while features() runs (no cost on other forwards).
        self._feature_modules = [
            (name, module) for name, module in self.policy.named_modules()
            if isinstance(module, _ACTIVATIONS) and name.startswith(_ACTOR_PREFIXES[self.algo])
        ]

    # -- identity ---------------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.observation_space.shape))

    @property
    def action_dim(self) -> int:
        """A for Box actions, N (number of actions) for Discrete."""
        if isinstance(self.action_space, gym.spaces.Discrete):
            return int(self.action_space.n)
        return int(np.prod(self.action_space.shape))

    def actor_parameter_count(self) -> int:
        """Parameters used to compute the action (critic/value nets excluded)."""
        prefixes = _ACTOR_PARAMETERS[self.algo]
        return sum(p.numel() for n, p in self.policy.named_parameters() if n.startswith(prefixes))

    @property
    def has_value(self) -> bool:
        """Whether the teacher has a value to match (ARS learns none: its value() is zeros and value matching is off)."""
        return self.algo not in SEARCH_BASED

    @property
    def acts_on_argmax(self) -> bool:
        """Whether the teacher acts on the argmax of outputs that are not a distribution (DQN, QR-DQN, discrete ARS)."""
        return self.strategy.discrete and (self.algo in Q_BASED or self.algo in SEARCH_BASED)

    def identity(self) -> dict[str, Any]:
        return {
            "path": str(self.source.path),
            "algo": self.algo,
            "env": self.env_spec.to_json(),
            "sha256": sha256_file(self.source.model_zip),
            "family": self.family,
            "actor_params": self.actor_parameter_count(),
            **({"logit_scale": self.logit_scale} if self.acts_on_argmax else {}),
        }

    def make_env(self, *, render_mode: str | None = None) -> gym.Env:
        """The env exactly as trained (wrappers included); observation normalisation happens in the teacher."""
        return self.env_spec.make(render_mode=render_mode)

    # -- the contract ----------------------------------------------------------------------
    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """raw obs [B, obs_dim] -> normalised float32 tensor [B, obs_dim]."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1, self.obs_dim)
        return torch.as_tensor(self.normalizer(obs))

    @torch.no_grad()
    def dist_and_value(self, obs: np.ndarray) -> tuple[DistParams, torch.Tensor]:
        """raw obs [B, obs_dim] -> (action distribution of batch B, value [B])."""
        x = self.obs_tensor(obs)
        if self._one_pass is not None:  # PPO/A2C/TRPO: policykd.teacher_forward, the same numbers at a third the cost
            return self._one_pass(x)
        return self._modules_dist_and_value(x)

    def _modules_dist_and_value(self, x: torch.Tensor) -> tuple[DistParams, torch.Tensor]:
        """dist_and_value through SB3's own modules (so forward hooks fire): normalised obs [B, obs_dim]."""
        dist = self._dist(x)
        return dist, self._value(x, dist)

    @torch.no_grad()
    def action_dist(self, obs: np.ndarray) -> DistParams:
        """raw obs [B, obs_dim] -> action distribution of batch B (no value computed)."""
        return self._dist(self.obs_tensor(obs))

    def value(self, obs: np.ndarray) -> torch.Tensor:
        return self.dist_and_value(obs)[1]

    def _dist(self, x: torch.Tensor) -> DistParams:
        policy, algo = self.policy, self.algo
        if algo in ON_POLICY:
            dist = policy.get_distribution(x).distribution
            if self.strategy.discrete:
                return DistParams("categorical", {"logits": dist.logits})
            # the pre-tanh Normal for a squashed (gSDE, squash_output=True) head, as for SAC
            return DistParams(self.family, {"mean": dist.mean, "log_std": dist.stddev.log()})
        if algo in SQUASHED:
            mean, log_std, extra = policy.actor.get_action_dist_params(x)
            if policy.actor.use_sde:  # log_std is gSDE's [latent, A] parameter, the state's std comes from the latent
                log_std = gsde_log_std(policy.actor.action_dist, log_std, extra["latent_sde"])
            return DistParams("squashed_gaussian", {"mean": mean, "log_std": log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)})
        if algo in DETERMINISTIC:
            return DistParams("deterministic", {"action": policy.actor(x)})
        if algo in SEARCH_BASED:
            return self._search_based_dist(policy.action_net(policy.extract_features(x, policy.features_extractor)))
        q_values = policy.quantile_net(x).mean(dim=1) if algo == "qrdqn" else policy.q_net(x)
        return DistParams("categorical", {"logits": q_values / self.logit_scale})

    def _value(self, x: torch.Tensor, dist: DistParams) -> torch.Tensor:
        policy, algo = self.policy, self.algo
        if algo in ON_POLICY:
            return policy.predict_values(x).squeeze(-1)
        if algo in SQUASHED:
            q = policy.critic(x, torch.tanh(dist["mean"]))
            q = q.mean(dim=-1) if algo == "tqc" else torch.cat(q, dim=-1)
            return q.min(dim=-1).values
        if algo in DETERMINISTIC:
            return torch.cat(policy.critic(x, dist["action"]), dim=-1).min(dim=-1).values
        if algo in SEARCH_BASED:
            return torch.zeros(len(x))
        return dist["logits"].max(dim=-1).values * self.logit_scale  # max_a Q(s, a), in the reward's units

    def _search_based_dist(self, out: torch.Tensor) -> DistParams:
        """ARS: the action net's output [B, out] as logits (Discrete: SB3 acts on their argmax) or as one action per
        state in [-1, 1], the deterministic family's policy space: a squashed policy's tanh output as SB3 unscales it
        to the bounds, a linear one's output clipped to the bounds (as SB3 acts) and mapped onto [-1, 1]."""
        if self.strategy.discrete:
            return DistParams("categorical", {"logits": out / self.logit_scale})
        if self.policy.squash_output:
            return DistParams("deterministic", {"action": out.clamp(-1.0, 1.0)})
        low, high = self._low.to(out.dtype), self._high.to(out.dtype)
        return DistParams("deterministic", {"action": 2 * (out.minimum(high).maximum(low) - low) / (high - low) - 1})

    @torch.no_grad()
    def features(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        """raw obs [B, obs_dim] -> {activation module name: [B, H]} along the actor."""
        features: dict[str, torch.Tensor] = {}
        hooks = [module.register_forward_hook(self._record(name, features)) for name, module in self._feature_modules]
        try:
            with torch.no_grad():
                self._modules_dist_and_value(self.obs_tensor(obs))
        finally:
            for hook in hooks:
                hook.remove()
        return features

    def sb3_predict(self, obs: np.ndarray) -> np.ndarray:
        """The SB3 baseline path: normalise, then `model.predict(deterministic=True)`."""
        return self.model.predict(self.normalizer(obs), deterministic=True)[0]

    # -- internals ---------------------------------------------------------------------------
    @staticmethod
    def _record(name: str, into: dict[str, torch.Tensor]):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            into[name] = output.detach()

        return hook

    def _family(self) -> str:
        if isinstance(self.action_space, gym.spaces.Discrete):
            return "categorical"
        if not isinstance(self.action_space, gym.spaces.Box):
            raise PolicyKDError(f"action space {self.action_space} is not supported; policykd handles Box and Discrete")
        if self.algo in SQUASHED or (self.algo in ON_POLICY and self.policy.squash_output):  # and squashed gSDE PPO & co.
            return "squashed_gaussian"
        if self.algo in DETERMINISTIC or self.algo in SEARCH_BASED:
            return "deterministic"
        if self.algo in Q_BASED:
            raise PolicyKDError(f"{self.algo} needs a Discrete action space, the env has {self.action_space}")
        return "gaussian"

    def _check_spaces(self) -> None:
        if not isinstance(self.observation_space, gym.spaces.Box):
            raise PolicyKDError(f"observation space {self.observation_space} is not supported; policykd handles flat Box observations")
        if any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in self.policy.modules()):
            raise PolicyKDError(f"{self.source.model_zip} is an image policy (convolutions, as SB3's CnnPolicy; observations "
                                f"{describe_space(self.model.observation_space)}): policykd reads SB3 teachers with flat "
                                "observations only (for a camera student, distil a state-based teacher through a student view: README, "
                                "\"My teacher cheats; my robot can't\")")
        env_label = self.env_spec.env_id
        if self.env_spec.wrappers:
            env_label += f" (wrappers {[w.path for w in self.env_spec.wrappers]})"
        for kind, space in (("observation", self.observation_space), ("action", self.action_space)):
            if isinstance(space, gym.spaces.Box) and len(space.shape) != 1:
                raise PolicyKDError(f"{env_label} gives {kind}s of shape {space.shape}, not one flat vector; policykd "
                                    f"distils teachers whose observations and actions are flat vectors: train the teacher on "
                                    "the env wrapped so that they are (e.g. gymnasium.wrappers.FlattenObservation)")
        if isinstance(self.action_space, gym.spaces.Discrete) and int(self.action_space.start) != 0:
            start = int(self.action_space.start)
            raise PolicyKDError(f"{env_label} takes actions {describe_space(self.action_space)}, {start} to "
                                f"{start + int(self.action_space.n) - 1}, but SB3 policies act with indices 0 to "
                                f"{int(self.action_space.n) - 1} whatever the start, so this teacher's actions are not the env's; "
                                "train it on the env wrapped to take actions from 0 (a gymnasium ActionWrapper adding the start)")
        problem = (_space_mismatch("observation", self.model.observation_space, self.observation_space, env_label)
                   or _space_mismatch("action", self.model.action_space, self.action_space, env_label))
        if problem is None:
            return
        guess = _guess_env_id(self.source)
        hint = (f"pass --env {guess}" if guess and guess != self.env_spec.env_id
                else "pass the --env the teacher was trained on (with its wrappers)")
        raise PolicyKDError(
            f"{problem}: teacher spaces observation {describe_space(self.model.observation_space)}, action "
            f"{describe_space(self.model.action_space)}; {env_label} spaces observation {describe_space(self.observation_space)}, "
            f"action {describe_space(self.action_space)}; wrong env or missing wrapper, {hint}"
        )


def describe_space(space: gym.Space) -> str:
    """A one-line description: Discrete(n), or Box(low, high, shape) with bounds summarised."""
    if isinstance(space, gym.spaces.Discrete):
        return f"Discrete({int(space.n)})" if int(space.start) == 0 else f"Discrete({int(space.n)}, start={int(space.start)})"
    if isinstance(space, gym.spaces.Box):
        return f"Box({_bounds_text(space.low)}, {_bounds_text(space.high)}, {tuple(space.shape)})"
    return " ".join(str(space).split())


def _bounds_text(values: np.ndarray) -> str:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return f"{flat[0]:g}"
    text = np.array2string(flat, threshold=6, edgeitems=2, max_line_width=10**6, precision=4, separator=" ")
    return " ".join(text.split())


def _unbounded_as_inf(bound: np.ndarray) -> np.ndarray:
    """float64 bounds with +-float32 max (how older envs wrote 'unbounded', e.g. gym's CartPole) as +-inf."""
    bound = np.asarray(bound, dtype=np.float64)
    return np.where(np.abs(bound) >= np.finfo(np.float32).max, np.copysign(np.inf, bound), bound)


def _space_mismatch(kind: str, teacher: gym.Space, env: gym.Space, env_label: str) -> str | None:
    """What differs between the teacher's and the env's spaces of one kind, or None when they agree."""
    verb = "gives" if kind == "observation" else "takes"
    if isinstance(teacher, gym.spaces.Discrete) and isinstance(env, gym.spaces.Discrete):
        if (int(teacher.n), int(teacher.start)) != (int(env.n), int(env.start)):
            return f"the teacher has {int(teacher.n)} discrete {kind}s but {env_label} has {int(env.n)}"
        return None
    if isinstance(teacher, gym.spaces.Box) and isinstance(env, gym.spaces.Box):
        if tuple(teacher.shape) != tuple(env.shape):
            return f"the teacher expects {kind}s of shape {tuple(teacher.shape)} but {env_label} {verb} {tuple(env.shape)}"
        for bound in ("low", "high"):
            a, b = _unbounded_as_inf(getattr(teacher, bound)), _unbounded_as_inf(getattr(env, bound))
            if not np.allclose(a, b, rtol=_BOUNDS_RTOL, atol=_BOUNDS_ATOL, equal_nan=True):
                return f"the teacher's {kind} bounds ({bound}) differ from those of {env_label}"
        return None
    if type(teacher) is not type(env):
        return f"the teacher's {kind} space is a {type(teacher).__name__} but {env_label}'s is a {type(env).__name__}"
    return None if teacher == env else f"the teacher's {kind} space differs from that of {env_label}"


def _guess_env_id(source: TeacherSource) -> str | None:
    """The env id the teacher's files are named after (rl-zoo: ENV.zip; agents: sac-ENV/, model_card.json)."""
    for folder in (source.model_zip.parent, source.path if source.path.is_dir() else source.path.parent):
        card = folder / MODEL_CARD
        if card.is_file():
            try:
                env = json.loads(card.read_text()).get("env") or {}
                if env.get("env_id"):
                    return str(env["env_id"])
            except (OSError, ValueError, AttributeError):
                pass
    names = [source.model_zip.stem, source.model_zip.parent.name, source.path.name]
    known = sorted((str(i) for i in gym.registry), key=len, reverse=True)
    for name in names:
        for env_id in known:
            if env_id in name:
                return env_id
    return None


ARGMAX_SCALE_STATES = 256  # states of the teacher's own greedy rollout (seed 0) that decide its logit scale
ARGMAX_MEDIAN_GAP = math.log(19.0)  # logit gap at the median state: 0.95 on the best of two actions


@torch.no_grad()
def argmax_logit_scale(teacher: Teacher) -> float:
    """The divisor of an argmax teacher's outputs [B, N] (Q-values, ARS scores), decided from the teacher alone: the
    median gap between its best and second-best output over ARGMAX_SCALE_STATES states of its own greedy rollout
    (seed 0), divided by ARGMAX_MEDIAN_GAP. Softmax of raw Q-values depends on the reward's scale (gaps of 0.01 gave
    near-uniform targets and sampled actions: a student with 90% argmax agreement); this makes the targets as sharp
    on every such teacher. 1 where the outputs never differ."""
    env = teacher.make_env()
    try:
        obs, _ = env.reset(seed=0)
        states = []
        for _ in range(ARGMAX_SCALE_STATES):
            states.append(np.asarray(obs, dtype=np.float64).reshape(-1))
            action = int(teacher.dist_and_value(states[-1][None])[0]["logits"].argmax())
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    logits = teacher.dist_and_value(np.stack(states))[0]["logits"].double()
    top = logits.topk(2, dim=-1).values
    gap = float((top[:, 0] - top[:, 1]).median())
    return gap / ARGMAX_MEDIAN_GAP if math.isfinite(gap) and gap > 0 else 1.0


def load_teacher(path: str | Path, *, algo: str | None = None, env_id: str | None = None,
                 trust_pickle: bool = False) -> Teacher:
    """Load a teacher from an SB3 .zip (needs env_id), an rl-zoo run folder, or a policykd agents/ folder.

    By default the checkpoint's pickled entries and vecnormalize.pkl are read in safe mode: only allowlisted
    numpy/gymnasium/torch/SB3 types are built, anything else is a PolicyKDError naming --trust-pickle.
    trust_pickle=True restores plain (cloud)pickle loading, which runs whatever code the files name.

    A policykd student folder (student.json + student.safetensors) loads as a policykd.student_teacher.StudentTeacher
    (the same contract; a distillation chain), never unpickled."""
    from policykd.student_teacher import StudentTeacher, is_student_folder

    if is_student_folder(path):
        return StudentTeacher(path)
    source = resolve_source(path, algo=algo, env_id=env_id, trust_pickle=trust_pickle)
    cls = algo_class(source.algo)
    raw, data = read_checkpoint(source.model_zip)
    check_supported_policy(data, source.model_zip)
    custom_objects = sb3_custom_objects(data, source=source.model_zip, trust_pickle=trust_pickle)
    try:
        with gym_module_alias(), warnings.catch_warnings():
            # old DQN checkpoints: SB3 drops their optimizer state, which inference does not need
            warnings.filterwarnings("ignore", message="You are probably loading a DQN model saved with SB3")
            # torch.load of a .pth member pickled at another protocol: weights_only refuses what it cannot read (below)
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            model = cls.load(io.BytesIO(raw), device="cpu", custom_objects=custom_objects)
    except PolicyKDError:
        raise
    except Exception as e:  # SB3's load runs zipfile, json, torch.load and the policy's constructor: any type
        if isinstance(e, KeyError):  # SB3 reads the "data" entries it saved: one is missing (an edited or partial save)
            raise PolicyKDError(f"cannot load {source.model_zip}: an entry SB3 saves with every model is missing "
                                f"({str(e.args[0] if e.args else e)[:120]}); re-save it with model.save() or re-download the file") from e
        detail = ("a .pth member is damaged or holds more than tensors" if isinstance(e, pickle.UnpicklingError)
                  else (str(e).splitlines() or [e.__class__.__name__])[0][:200])
        raise PolicyKDError(f"cannot load {source.model_zip} as {source.algo}: {detail}; check --algo or re-download the file") from e
    return Teacher(source, model)

