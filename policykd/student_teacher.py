"""A saved policykd student as a teacher: distillation chains, as in Roach (privileged teacher -> camera student ->
tiny camera student), or a student compressed once more.

`load_teacher(STUDENT_DIR)` returns a StudentTeacher when the folder holds student.json + student.safetensors. It
offers the teacher contract of policykd.teachers (dist_and_value, features, act, make_env, identity, ...) from the
student's own forward pass: its distribution (Gaussian, squashed Gaussian or categorical) and its value head. The
weights are read with safetensors and the card is checked as every runtime checks it; nothing is unpickled.

Its env is the student's: the card's teacher env record and, for a sensor-only student, its view as the
observation (policykd.views.StudentViewObservation; only views the env provides, never an import path a card
names). So a student of a camera student sees the camera too. The student normalises inside, so the teacher's
normaliser is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policykd import student_format as fmt
from policykd.artifacts import sha256_file
from policykd.distributions import DistParams
from policykd.env_factory import EnvSpec, WrapperSpec
from policykd.errors import PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.students import Student, load_student
from policykd.teachers import TeacherActions

ALGO = "policykd-student"


@dataclass(frozen=True)
class StudentSource:
    """Where a student teacher comes from: its folder, and its weights file (hashed for the teacher's identity)."""

    path: Path
    model_zip: Path  # the weights file; named as TeacherSource's checkpoint so callers that hash it need no branch


def is_student_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / fmt.CARD_FILE).is_file() and (path / fmt.WEIGHTS_FILE).is_file()


def student_env_spec(card: dict[str, Any], source: str) -> EnvSpec:
    """The env the card's student acts in: its teacher's env, with the student's view as the observation."""
    spec = EnvSpec.from_json(fmt.env_record(card, source))
    view = fmt.view_name(card, source, resolving=True)
    if view:
        spec = replace(spec, wrappers=(*spec.wrappers, WrapperSpec("policykd.views:StudentViewObservation", {"view": view})))
    return spec


class StudentTeacher(TeacherActions):
    """A policykd student behind the teacher contract (see the module docstring)."""

    algo = ALGO

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.student: Student = load_student(directory)
        card = self.student.card
        self.source = StudentSource(directory, directory / fmt.WEIGHTS_FILE)
        self.env_spec = student_env_spec(card, str(directory / fmt.CARD_FILE))
        probe = self.env_spec.make()
        try:
            self.observation_space, self.action_space = probe.observation_space, probe.action_space
        finally:
            probe.close()
        spec = self.student.spec
        if tuple(self.observation_space.shape or ()) != (spec.obs_dim,):
            raise PolicyKDError(f"{directory}: its env gives observations of shape {self.observation_space.shape}, the student "
                                f"takes ({spec.obs_dim},); the card's env record does not match the student")
        self.family, self.strategy = spec.family, self.student.strategy
        self.normalizer = ObsNormalizer.identity(spec.obs_dim)  # the student normalises inside
        self.image_shape = tuple(spec.conv["image_shape"]) if spec.conv else None  # for a CNN student of this one
        self._set_action_bounds(self.action_space)

    @property
    def obs_dim(self) -> int:
        return self.student.spec.obs_dim

    @property
    def action_dim(self) -> int:
        return self.student.spec.action_dim

    def actor_parameter_count(self) -> int:
        return self.student.parameter_count()

    def identity(self) -> dict[str, Any]:
        return {"path": str(self.source.path), "algo": ALGO, "env": self.env_spec.to_json(),
                "sha256": sha256_file(self.source.model_zip), "family": self.family, "actor_params": self.actor_parameter_count()}

    def make_env(self, *, render_mode: str | None = None) -> gym.Env:
        return self.env_spec.make(render_mode=render_mode)

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """raw obs [B, obs_dim] -> float32 tensor [B, obs_dim] (the student normalises inside)."""
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1, self.obs_dim))

    def _dist(self, x: torch.Tensor) -> DistParams:
        return self.student(x)[0]

    @torch.no_grad()
    def dist_and_value(self, obs: np.ndarray) -> tuple[DistParams, torch.Tensor]:
        """raw obs [B, obs_dim] -> (the student's action distribution of batch B, its value head [B])."""
        return self.student(self.obs_tensor(obs))

    @torch.no_grad()
    def action_dist(self, obs: np.ndarray) -> DistParams:
        return self.student(self.obs_tensor(obs))[0]

    def value(self, obs: np.ndarray) -> torch.Tensor:
        return self.dist_and_value(obs)[1]

    @torch.no_grad()
    def features(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        """raw obs [B, obs_dim] -> {"encoder.{2i+1}": [B, c_i * h_i * w_i]} for a CNN's convolutions (flattened), then
        {"trunk.{2i+1}": [B, hidden[i]]}, the activations of the student's hidden layers."""
        features = {f"encoder.{2 * i + 1}": m.flatten(1) for i, m in enumerate(self.conv_maps(obs))}
        x = self.student.encode(self.obs_tensor(obs))
        for index, module in enumerate(self.student.trunk):
            x = module(x)
            if index % 2 == 1:
                features[f"trunk.{index}"] = x
        return features

    @torch.no_grad()
    def conv_maps(self, obs: np.ndarray) -> list[torch.Tensor]:
        """raw obs [B, obs_dim] -> a CNN student's activation after each convolution, [B, c_i, h_i, w_i] each."""
        return self.student.conv_maps(self.obs_tensor(obs)) if self.student.spec.conv else []

    def sb3_predict(self, obs: np.ndarray) -> np.ndarray:
        """No SB3 model stands behind a student: its own deterministic action (for latency tables)."""
        return self.act(np.asarray(obs).reshape(-1, self.obs_dim))
