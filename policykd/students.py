"""Compact student policies: raw env observation in, env-scaled action out, everything needed inside.

A Student holds, as buffers saved with its weights: the teacher's observation normaliser (mean, std, clip),
the action bounds, and the value target scale. Saved as `student.safetensors` + `student.json` (the card:
architecture, spaces, normaliser, action scaling, teacher provenance, metrics); loading never unpickles and checks
the card against the weights (names, shapes, finite values: policykd/student_format.py, shared with the numpy runtime).

    student = load_student("runs/NAME/student")
    env = student.make_env()                      # the teacher's env, wrappers included, from the card
    raw_obs, _ = env.reset(seed=0)
    action = student.act(raw_obs[None])[0]        # numpy [B, obs_dim] in, numpy [B, A] (int64 [B]) out

act() refuses (errors.InvalidObservation) observations of another shape and NaN/inf entries; act_torch() is the
unchecked tensor version that exports and training use.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from policykd import student_format as fmt
from policykd.artifacts import atomic_write_json, package_versions
from policykd.distributions import LOG_STD_MAX, LOG_STD_MIN, DistParams, family_strategy
from policykd.errors import InvalidObservation, PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.quantisation_aware import quantised_linear, quantised_trunk
from policykd.student_format import CARD_FILE, CARD_FORMAT, CARD_VERSION, WEIGHTS_FILE  # noqa: F401  (re-exported)

# The torch module of each activation, keyed by the names of student_format.ACTIVATIONS (the numpy table).
TORCH_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
if set(TORCH_ACTIVATIONS) != set(fmt.ACTIVATION_NAMES):
    raise ImportError(f"students.TORCH_ACTIVATIONS {sorted(TORCH_ACTIVATIONS)} != student_format.ACTIVATIONS {sorted(fmt.ACTIVATION_NAMES)}")


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
    conv: dict[str, Any] | None = None  # CNN students: {"image_shape": [H, W, C], "layers": [[channels, kernel, stride], ...]}
    gru: int = 0  # recurrent students: the size G of the GRU state after the hidden layers (0: feed-forward)

    def __post_init__(self) -> None:
        if isinstance(self.hidden, (list, tuple)) and all(isinstance(h, (int, np.integer)) for h in self.hidden):
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for key in ("action_low", "action_high"):
            if isinstance(getattr(self, key), (list, tuple)):
                object.__setattr__(self, key, tuple(float(v) if isinstance(v, (int, float, np.number)) else v for v in getattr(self, key)))
        if self.conv is not None:  # JSON-shaped lists, so the card and a spec built in code compare equal
            object.__setattr__(self, "conv", {"image_shape": [int(v) for v in self.conv.get("image_shape", ())],
                                              "layers": [[int(v) for v in layer] for layer in self.conv.get("layers", ())]}
                               if isinstance(self.conv, dict) else self.conv)
        fmt.validate_spec(asdict(self))

    def to_json(self) -> dict[str, Any]:
        """The card's "spec": optional architecture keys (conv, gru) only when used, so an MLP student's card stays
        readable by policykd versions from before them."""
        return {k: v for k, v in asdict(self).items() if not (k in ("conv", "gru") and not v)}

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> StudentSpec:
        """The spec of a card (student.json's "spec"; checked with student_format.validate_spec)."""
        return cls(**{k: tuple(v) if k in ("hidden", "action_low", "action_high") else v for k, v in spec.items()})


def _recurrent_input(value: Any, shape: tuple[int, int], single: bool, name: str) -> np.ndarray:
    """predict()'s state [G] / [B, G] or episode_start [] / [B] as finite float32 of `shape` [B, G] or [B, 1], else an
    InvalidObservation naming what was expected."""
    batch, width = shape
    expected = (f"[{width}]" if single else f"[{batch}, {width}]") if name == "state" else ("one bool" if single else f"[{batch}] bools")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidObservation(f"{name} must be {expected} (numbers), got {type(value).__name__}") from e
    if array.size != batch * width:
        raise InvalidObservation(f"{name} must be {expected}, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise InvalidObservation(f"{name} holds NaN/inf; pass the state predict() returned, or None at an episode start")
    return np.ascontiguousarray(array.reshape(batch, width))


class Student(nn.Module):
    """(CNN encoder ->) MLP trunk -> heads: action mean/logits [B, A], log_std [B, A] (Gaussian families), value [B].

    A CNN student (spec.conv) reads the first H * W * C observation entries as an image [H, W, C] (channels last),
    convolves it, flattens the result channel-first and appends the remaining (vector) entries: encode().

    A recurrent student (spec.gru = G) has a GRU cell between the hidden layers and the heads, and a state [B, G]
    that starts each episode at zero: step(obs, state) and unroll(obs_sequence, state) compute with an explicit
    state; act() keeps one itself (reset() before each episode). forward() is for feed-forward students only."""

    def __init__(self, spec: StudentSpec) -> None:
        super().__init__()
        self.spec = spec
        self.strategy = family_strategy(spec.family)
        normalizer = ObsNormalizer.from_json(spec.normalizer) if spec.normalizer else ObsNormalizer.identity(spec.obs_dim)
        self.card: dict[str, Any] | None = None  # set by save() and load_student()
        # Names and shapes: see policykd/student_format.py (the buffers, trunk.{2i}, action_head, ...).
        self.register_buffer(fmt.OBS_MEAN, torch.as_tensor(normalizer.mean, dtype=torch.float32))
        self.register_buffer(fmt.OBS_STD, torch.as_tensor(normalizer.std, dtype=torch.float32))
        clip = normalizer.clip if normalizer.clip is not None else float("inf")
        self.register_buffer(fmt.OBS_CLIP, torch.tensor(clip, dtype=torch.float32))
        self.register_buffer(fmt.ACTION_LOW, torch.as_tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer(fmt.ACTION_HIGH, torch.as_tensor(spec.action_high, dtype=torch.float32))
        self.register_buffer(fmt.VALUE_MEAN, torch.zeros(()))
        self.register_buffer(fmt.VALUE_STD, torch.ones(()))
        self.encoder: nn.Sequential | None = None
        if spec.conv:
            convs: list[nn.Module] = []
            for (c_in, _, _), (c_out, kernel, stride) in zip(fmt.conv_shapes(spec.conv), spec.conv["layers"]):
                convs += [nn.Conv2d(c_in, c_out, kernel, stride), TORCH_ACTIVATIONS[spec.activation]()]
            self.encoder = nn.Sequential(*convs)
        layers: list[nn.Module] = []
        width = fmt.trunk_input_dim(asdict(spec))
        for i, h in enumerate(spec.hidden):
            assert len(layers) == fmt.trunk_index(i)
            layers += [nn.Linear(width, h), TORCH_ACTIVATIONS[spec.activation]()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.gru = nn.GRUCell(width, spec.gru) if spec.gru else None
        width = spec.gru or width
        self._state: torch.Tensor | None = None  # act()'s recurrent state [B, G]
        self.action_head = nn.Linear(width, spec.action_dim)
        self.log_std_head = nn.Linear(width, spec.action_dim) if self.strategy.has_log_std else None
        self.value_head = nn.Linear(width, 1)
        self.quantise_int8 = False  # True: the action path as c-int8 computes it (quantisation-aware distillation)
        self.detach_std_head = False  # True: the log_std head's gradient stops at its input (the trunk fits the means)

    @torch.no_grad()
    def fit_normalizer(self, obs: np.ndarray, *, clip: float = 10.0, min_std: float = 1e-3) -> None:
        """Observation statistics from collected observations [N, obs_dim]: mean, std (at least min_std, so a
        constant input, e.g. a ray that never hit, stays finite) and a clip at `clip` standard deviations."""
        obs = np.asarray(obs, dtype=np.float64).reshape(len(obs), -1)
        self.obs_mean.copy_(torch.as_tensor(obs.mean(axis=0), dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(obs.std(axis=0), min_std), dtype=torch.float32))
        self.obs_clip.fill_(clip)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        clip = self.obs_clip.clamp(max=fmt.NORMALISED_LIMIT)  # student_format.effective_clip
        return torch.clamp((obs - self.obs_mean) / self.obs_std, -clip, clip)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """raw obs [B, obs_dim] -> the trunk's input [B, in_0]: the normalised observation, or for a CNN student the
        flattened convolution features of its image [B, c * h * w] followed by its vector entries."""
        z = self.normalize(obs)
        if self.encoder is None:
            return z
        height, width, channels = self.spec.conv["image_shape"]
        pixels = height * width * channels
        image = z[:, :pixels].reshape(-1, height, width, channels).permute(0, 3, 1, 2)  # [B, C, H, W]
        return torch.cat([self.encoder(image).flatten(1), z[:, pixels:]], dim=1)

    def conv_maps(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """raw obs [B, obs_dim] -> a CNN student's activation after each convolution, [B, c_i, h_i, w_i] each."""
        height, width, channels = self.spec.conv["image_shape"]
        x = self.normalize(obs)[:, :height * width * channels].reshape(-1, height, width, channels).permute(0, 3, 1, 2)
        maps = []
        for index, module in enumerate(self.encoder):
            x = module(x)
            if index % 2 == 1:  # after each activation
                maps.append(x)
        return maps

    @property
    def recurrent(self) -> bool:
        return self.gru is not None

    def forward(self, obs: torch.Tensor) -> tuple[DistParams, torch.Tensor]:
        """raw obs [B, obs_dim] -> (distribution of batch B, value [B] in the teacher's value units)."""
        if self.gru is not None:
            raise PolicyKDError("a recurrent student needs its state: use step(obs, state), unroll(obs_sequence, state) or act()")
        if self.quantise_int8:
            hidden = quantised_trunk(self.trunk, self.normalize(obs))
            return self._heads(hidden, quantised_linear(self.action_head, hidden))
        return self._heads(self.trunk(self.encode(obs)))

    def _heads(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> tuple[DistParams, torch.Tensor]:
        """The heads' input [B, W] -> (distribution of batch B, value [B]); out: the action head's output if known."""
        out = self.action_head(hidden) if out is None else out
        std_input = hidden.detach() if self.detach_std_head else hidden
        log_std = self.log_std_head(std_input).clamp(LOG_STD_MIN, LOG_STD_MAX) if self.log_std_head is not None else None
        dist = DistParams(self.spec.family, self.strategy.params_from_head(out, log_std))
        value = self.value_head(hidden).squeeze(-1) * self.value_std + self.value_mean
        return dist, value

    def initial_state(self, batch: int) -> torch.Tensor:
        """A recurrent student's state at the start of an episode: zeros [batch, G]."""
        return torch.zeros(batch, self.spec.gru, device=self.obs_mean.device)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[DistParams, torch.Tensor, torch.Tensor]:
        """Recurrent students: raw obs [B, obs_dim] and state [B, G] -> (distribution of batch B, value [B], new state [B, G])."""
        new_state = self.gru(self.trunk(self.encode(obs)), state)
        return (*self._heads(new_state), new_state)

    def unroll(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[DistParams, torch.Tensor, torch.Tensor]:
        """Recurrent students: raw obs [T, B, obs_dim] (T consecutive steps of B sequences) and their state [B, G]
        before the first -> (distribution of batch T * B, time-major, value [T * B], state after the last [B, G])."""
        steps, batch = obs.shape[:2]
        inputs = self.trunk(self.encode(obs.reshape(steps * batch, -1))).reshape(steps, batch, -1)
        states = []
        for t in range(steps):
            state = self.gru(inputs[t], state)
            states.append(state)
        return (*self._heads(torch.stack(states).reshape(steps * batch, -1)), state)

    def reset(self) -> None:
        """Recurrent students: forget act()'s state (call at the start of every episode); no-op otherwise."""
        self._state = None

    def policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """raw obs [B, obs_dim] -> deterministic action in policy space (recurrent: from act()'s state, updated)."""
        if self.gru is None:
            return self.forward(obs)[0].mode()
        if self._state is None:
            self._state = self.initial_state(len(obs))
        elif len(self._state) != len(obs):
            raise InvalidObservation(f"this recurrent student's state holds {len(self._state)} episodes, the batch has {len(obs)}; "
                                     "call reset() at the start of every episode (batch)")
        dist, _, self._state = self.step(obs, self._state)
        return dist.mode()

    def act_step_torch(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent students, for exports: raw obs [B, obs_dim], state [B, G] -> (env action [B, A], new state [B, G])."""
        dist, _, new_state = self.step(obs, state)
        return self.strategy.to_env_action(dist.mode(), self.action_low, self.action_high), new_state

    def act_torch(self, obs: torch.Tensor) -> torch.Tensor:
        """raw obs [B, obs_dim] tensor -> deterministic env action [B, A] (or [B] long for discrete), as a tensor.

        Unchecked and differentiable: for exports (ONNX / TorchScript trace this) and training code. Use act()."""
        return self.strategy.to_env_action(self.policy_action(obs), self.action_low, self.action_high)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Raw observations [B, obs_dim] (float array-like) -> deterministic env actions, numpy: float32 [B, A], or
        int64 [B] for discrete actions. One observation: `student.act(obs[None])[0]`.

        Raises errors.InvalidObservation (a PolicyKDError) for any other shape (nothing is broadcast or reshaped),
        for non-numbers and for NaN/inf entries. A recurrent student carries its state from call to call: reset()
        at the start of every episode (and before a batch of another size)."""
        checked = fmt.check_observations(obs, self.spec.obs_dim)
        checked = np.require(checked, requirements=["C", "W"])  # torch wants writable, non-negative strides
        action = self.act_torch(torch.from_numpy(checked).to(self.obs_mean.device)).cpu().numpy()
        return action.astype(np.int64, copy=False) if self.strategy.discrete else action

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-style predict (so `stable_baselines3.common.evaluation.evaluate_policy` accepts a Student): one
        observation [obs_dim] -> action [A] (or a 0-d index), or a batch [B, obs_dim] -> [B, A]; checked as act().
        A recurrent student takes its state [G] or [B, G] (None: zeros) and episode_start ([B] bools: zero those
        states first) and returns the new state, as SB3's recurrent policies do."""
        obs = fmt.as_float32(observation.cpu().numpy() if isinstance(observation, torch.Tensor) else observation)
        if self.gru is not None:
            return self._predict_recurrent(obs, state, episode_start)
        if obs.ndim == 1:
            return self.act(fmt.check_observation(obs, self.spec.obs_dim)[None])[0], None
        return self.act(obs), None

    @torch.no_grad()
    def _predict_recurrent(self, obs: np.ndarray, state: Any, episode_start: Any) -> tuple[np.ndarray, np.ndarray]:
        """predict() for a recurrent student: (action(s), new state [G] or [B, G]); obs checked as act() checks it."""
        single = obs.ndim == 1
        checked = fmt.check_observations(obs[None] if single else obs, self.spec.obs_dim)
        batch, size = len(checked), self.spec.gru
        h = torch.zeros(batch, size) if state is None else torch.from_numpy(_recurrent_input(state, (batch, size), single, "state"))
        if episode_start is not None:
            h = h * (1.0 - torch.from_numpy(_recurrent_input(episode_start, (batch, 1), single, "episode_start")))
        with torch.no_grad():
            action, h = self.act_step_torch(torch.from_numpy(np.require(checked, requirements=["C", "W"])), h)
        action = action.numpy().astype(np.int64, copy=False) if self.strategy.discrete else action.numpy()
        return (action[0], h[0].numpy()) if single else (action, h.numpy())

    def make_env(self, render_mode: str | None = None, *, max_episode_steps: int | None = None):
        """The gymnasium env this student acts in, rebuilt from its card's teacher env record (id, kwargs and
        wrappers such as TimeFeatureWrapper, as the teacher was trained); see policykd.runtime.make_env."""
        from policykd.runtime import make_env

        if self.card is None:
            raise PolicyKDError("this student has no card yet (save() or load_student() gives it one), so its env is unknown")
        return make_env(self.card, render_mode=render_mode, max_episode_steps=max_episode_steps)

    def parameter_count(self, *, actor_only: bool = True) -> int:
        """Trainable parameters; actor_only excludes the value head (not needed to act)."""
        return sum(p.numel() for n, p in self.named_parameters() if not (actor_only and n.startswith("value_head")))

    def save(self, directory: str | Path, *, card_extra: dict[str, Any] | None = None) -> Path:
        """Write student.safetensors + student.json into `directory` (atomically, weights first)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{WEIGHTS_FILE}.tmp"
        spec = self.spec.to_json()
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=fmt.spec_metadata(spec))
        os.chmod(tmp, 0o644)
        tmp.replace(directory / WEIGHTS_FILE)
        card = {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "spec": spec,
            "parameters": self.parameter_count(),
            "versions": package_versions(),
            **(card_extra or {}),
        }
        atomic_write_json(directory / CARD_FILE, card)
        self.card = json.loads((directory / CARD_FILE).read_text())  # as a loaded student sees it
        return directory


def load_student(directory: str | Path) -> Student:
    """Load a student from safetensors + JSON, the card checked against the weights (student_format.read_student:
    shapes, finite values; one-line PolicyKDError naming the file). Never unpickles."""
    card, weights = fmt.read_student(directory)
    directory = Path(directory)
    student = Student(StudentSpec.from_json(card["spec"]))
    try:
        student.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    except RuntimeError as e:  # read_student checked names and shapes, so this is unexpected
        raise PolicyKDError(f"{directory / WEIGHTS_FILE} does not match the architecture in {CARD_FILE}: {str(e).splitlines()[0]}") from e
    student.card = card
    return student.eval()


def student_spec_for(teacher, *, hidden: tuple[int, ...], activation: str, observation_space=None,
                     conv: dict[str, Any] | None = None, gru: int = 0) -> StudentSpec:
    """A student spec that mirrors the teacher's interface (spaces, normaliser, family); observation_space: the
    student's own view when it sees another one than the teacher (policykd.views), normalised by fit_normalizer;
    conv: a CNN encoder (StudentSpec.conv) for an observation that starts with an image; gru: a recurrent state size."""
    low, high = (), ()
    if not teacher.strategy.discrete:
        low = tuple(float(x) for x in np.asarray(teacher.action_space.low).reshape(-1))
        high = tuple(float(x) for x in np.asarray(teacher.action_space.high).reshape(-1))
    if observation_space is not None:
        return StudentSpec(obs_dim=int(np.prod(observation_space.shape)), action_dim=teacher.action_dim, family=teacher.family,
                           hidden=hidden, activation=activation, action_low=low, action_high=high, conv=conv, gru=gru)
    return StudentSpec(
        obs_dim=teacher.obs_dim, action_dim=teacher.action_dim, family=teacher.family, hidden=hidden,
        activation=activation, action_low=low, action_high=high, normalizer=teacher.normalizer.to_json(), conv=conv, gru=gru,
    )
