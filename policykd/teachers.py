"""Load any SB3 / rl-zoo / policykd checkpoint as a Teacher with one contract, whatever the algorithm.

A Teacher offers, for a batch of *raw* env observations obs [B, obs_dim] (normalisation is applied inside):
- ``dist_and_value(obs)``: the action distribution (DistParams) and the value [B];
- ``features(obs)``: named hidden activations of the actor, each [B, H];
- ``act(obs)``: env-scaled actions, and ``make_env()``: the env exactly as trained.

Values: V(s) for actor-critic (PPO/A2C/TRPO); min over critics of Q(s, mu(s)) for SAC/TD3/TQC
(TQC: mean over quantiles first); max_a Q(s, a) for DQN/QR-DQN (QR-DQN: mean over quantiles).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.actions import box_bounds, to_env_action
from policykd.artifacts import sha256_file
from policykd.distributions import LOG_STD_MAX, LOG_STD_MIN, DistParams
from policykd.env_factory import EnvSpec, parse_wrappers
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.zoo import find_zoo_run, gym_module_alias, load_vecnormalize_stats

ON_POLICY = ("ppo", "a2c", "trpo")
SQUASHED = ("sac", "tqc")
DETERMINISTIC = ("td3", "ddpg")
Q_BASED = ("dqn", "qrdqn")
ALGOS = ON_POLICY + SQUASHED + DETERMINISTIC + Q_BASED
MODEL_CARD = "model_card.json"

# Schedules pickled by old SB3 versions may not unpickle; they are not needed for inference (rl-zoo does the same).
_CUSTOM_OBJECTS = {
    "learning_rate": 0.0,
    "lr_schedule": lambda _: 0.0,
    "clip_range": lambda _: 0.0,
    "clip_range_vf": None,
    "exploration_schedule": lambda _: 0.0,
}
_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Sigmoid)
_ACTOR_PREFIXES = {
    **{a: ("mlp_extractor.policy_net", "mlp_extractor.shared_net") for a in ON_POLICY},
    **{a: ("actor.latent_pi",) for a in SQUASHED},
    **{a: ("actor.mu",) for a in DETERMINISTIC},
    "dqn": ("q_net.q_net",),
    "qrdqn": ("quantile_net.quantile_net",),
}

# Parameter name prefixes of the nets that compute the action (target nets and critics excluded).
_ACTOR_PARAMETERS = {
    **{a: ("mlp_extractor.policy_net.", "mlp_extractor.shared_net.", "action_net.", "log_std") for a in ON_POLICY},
    **{a: ("actor.",) for a in SQUASHED + DETERMINISTIC},
    "dqn": ("q_net.",),
    "qrdqn": ("quantile_net.",),
}


def algo_class(algo: str) -> type:
    """The SB3 / sb3-contrib class for an algorithm name."""
    import sb3_contrib
    import stable_baselines3 as sb3

    classes = {
        "ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG, "dqn": sb3.DQN,
        "trpo": sb3_contrib.TRPO, "tqc": sb3_contrib.TQC, "qrdqn": sb3_contrib.QRDQN,
    }
    if algo not in classes:
        raise PolicyKDError(f"unknown algorithm {algo!r}; policykd loads {', '.join(ALGOS)}")
    return classes[algo]


def infer_algo(model_zip: Path) -> str:
    """Guess the algorithm of a bare SB3 zip from the hyperparameters it saved."""
    data = _read_zip_data(model_zip)
    policy_module = str((data.get("policy_class") or {}).get("__module__", ""))
    keys = set(data)
    if "qrdqn" in policy_module:
        return "qrdqn"
    if "tqc" in policy_module or "top_quantiles_to_drop_per_net" in keys:
        return "tqc"
    if "exploration_rate" in keys or "exploration_final_eps" in keys:
        return "dqn"
    if "target_entropy" in keys or "ent_coef_optimizer" in keys:
        return "sac"
    if "policy_delay" in keys:
        return "td3"
    if "cg_max_steps" in keys or "target_kl" in keys and "n_critic_updates" in keys:
        return "trpo"
    if "n_epochs" in keys and "clip_range" in keys:
        return "ppo"
    if "n_steps" in keys:
        return "a2c"
    raise PolicyKDError(f"cannot tell which algorithm saved {model_zip}; pass --algo (one of {', '.join(ALGOS)})")


def _read_zip_data(model_zip: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(model_zip) as archive:
            return json.loads(archive.read("data"))
    except FileNotFoundError as e:
        raise PolicyKDError(f"teacher file {model_zip} does not exist; check the path") from e
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise PolicyKDError(f"{model_zip} is not a readable SB3 checkpoint ({e}); re-download or re-save it") from e


@dataclass(frozen=True)
class TeacherSource:
    """Where a teacher came from and how to rebuild its env."""

    path: Path
    model_zip: Path
    algo: str
    env: EnvSpec
    normalizer: ObsNormalizer | None
    card: dict[str, Any]


def resolve_source(path: str | Path, *, algo: str | None = None, env_id: str | None = None) -> TeacherSource:
    """Recognise a policykd agent folder, an rl-zoo run folder, or a bare SB3 zip."""
    path = Path(path)
    if not path.exists():
        raise PolicyKDError(f"teacher path {path} does not exist; pass an SB3 .zip, an rl-zoo run folder or an agents/ folder")
    if path.is_dir() and (path / MODEL_CARD).exists():
        card = json.loads((path / MODEL_CARD).read_text())
        normalizer = ObsNormalizer.from_json(card["normalizer"]) if card.get("normalizer") else None
        return TeacherSource(path, path / card["model_file"], card["algo"], EnvSpec.from_json(card["env"]), normalizer, card)
    if path.is_dir():
        run = find_zoo_run(path)
        env = EnvSpec(env_id or run.env_id, run.env_kwargs, parse_wrappers(run.env_wrapper))
        normalizer = load_vecnormalize_stats(run.vecnormalize) if run.vecnormalize else None
        return TeacherSource(path, run.model_zip, algo or run.algo, env, normalizer, {"config": run.config})
    if path.suffix != ".zip":
        raise PolicyKDError(f"{path} is neither a .zip checkpoint nor a folder; pass an SB3 .zip or an rl-zoo run folder")
    if env_id is None:
        raise PolicyKDError(f"a bare SB3 zip does not record its env; pass --env ENV_ID for {path}")
    return TeacherSource(path, path, algo or infer_algo(path), EnvSpec(env_id), None, {})


class Teacher:
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
        self.normalizer = source.normalizer or ObsNormalizer.identity(obs_dim)
        self.family = self._family()
        if isinstance(self.action_space, gym.spaces.Box):
            low, high = box_bounds(self.action_space)
            self._low, self._high = torch.as_tensor(low), torch.as_tensor(high)
        self._features: dict[str, torch.Tensor] = {}
        self._hooks = [
            module.register_forward_hook(self._record(name))
            for name, module in self.policy.named_modules()
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

    def identity(self) -> dict[str, Any]:
        return {
            "path": str(self.source.path),
            "algo": self.algo,
            "env": self.env_spec.to_json(),
            "sha256": sha256_file(self.source.model_zip),
            "family": self.family,
            "actor_params": self.actor_parameter_count(),
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
            if self.family == "categorical":
                return DistParams("categorical", {"logits": dist.logits})
            return DistParams("gaussian", {"mean": dist.mean, "log_std": dist.stddev.log()})
        if algo in SQUASHED:
            mean, log_std, _ = policy.actor.get_action_dist_params(x)
            return DistParams("squashed_gaussian", {"mean": mean, "log_std": log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)})
        if algo in DETERMINISTIC:
            return DistParams("deterministic", {"action": policy.actor(x)})
        q_values = policy.quantile_net(x).mean(dim=1) if algo == "qrdqn" else policy.q_net(x)
        return DistParams("categorical", {"logits": q_values})

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
        return dist["logits"].max(dim=-1).values

    @torch.no_grad()
    def features(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        """raw obs [B, obs_dim] -> {activation module name: [B, H]} along the actor."""
        self._features = {}
        self.dist_and_value(obs)
        return dict(self._features)

    def to_env_action(self, policy_action: torch.Tensor) -> np.ndarray:
        if self.family == "categorical":
            return policy_action.numpy().astype(np.int64)
        return to_env_action(policy_action, self.family, self._low, self._high).numpy()

    def act(self, obs: np.ndarray, *, deterministic: bool = True, generator: torch.Generator | None = None) -> np.ndarray:
        """raw obs [B, obs_dim] -> env actions [B, A] (or [B] ints for discrete)."""
        dist = self.action_dist(obs)
        return self.to_env_action(dist.mode() if deterministic else dist.sample(generator))

    def sb3_predict(self, obs: np.ndarray) -> np.ndarray:
        """The SB3 baseline path: normalise, then `model.predict(deterministic=True)`."""
        return self.model.predict(self.normalizer(obs), deterministic=True)[0]

    # -- internals ---------------------------------------------------------------------------
    def _record(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self._features[name] = output.detach()

        return hook

    def _family(self) -> str:
        if isinstance(self.action_space, gym.spaces.Discrete):
            return "categorical"
        if not isinstance(self.action_space, gym.spaces.Box):
            raise PolicyKDError(f"action space {self.action_space} is not supported; policykd handles Box and Discrete")
        if self.algo in SQUASHED:
            if getattr(self.policy.actor, "use_sde", False):
                raise PolicyKDError("SAC/TQC with gSDE is not supported yet; use a teacher trained without use_sde")
            return "squashed_gaussian"
        if self.algo in DETERMINISTIC:
            return "deterministic"
        if self.algo in Q_BASED:
            raise PolicyKDError(f"{self.algo} needs a Discrete action space, the env has {self.action_space}")
        if getattr(self.policy, "squash_output", False):
            raise PolicyKDError("on-policy teachers with squash_output=True are not supported yet")
        return "gaussian"

    def _check_spaces(self) -> None:
        if not isinstance(self.observation_space, gym.spaces.Box):
            raise PolicyKDError(f"observation space {self.observation_space} is not supported; policykd handles flat Box observations")
        model_shape = tuple(self.model.observation_space.shape)
        if model_shape != tuple(self.observation_space.shape):
            raise PolicyKDError(
                f"the teacher expects observations of shape {model_shape} but {self.env_spec.env_id} with wrappers "
                f"{[w.path for w in self.env_spec.wrappers]} gives {tuple(self.observation_space.shape)}; wrong env or missing wrapper"
            )


def load_teacher(path: str | Path, *, algo: str | None = None, env_id: str | None = None) -> Teacher:
    """Load a teacher from an SB3 .zip (needs env_id), an rl-zoo run folder, or a policykd agents/ folder."""
    source = resolve_source(path, algo=algo, env_id=env_id)
    cls = algo_class(source.algo)
    try:
        with gym_module_alias(), warnings.catch_warnings():
            # old DQN checkpoints: SB3 drops their optimizer state, which inference does not need
            warnings.filterwarnings("ignore", message="You are probably loading a DQN model saved with SB3")
            model = cls.load(source.model_zip, device="cpu", custom_objects=_CUSTOM_OBJECTS)
    except (zipfile.BadZipFile, KeyError, RuntimeError, EOFError, ValueError) as e:
        raise PolicyKDError(f"cannot load {source.model_zip} as {source.algo}: {str(e).splitlines()[0][:200]}; check --algo or re-download the file") from e
    return Teacher(source, model)
