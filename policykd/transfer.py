"""Feature and attention transfer: distillation terms that match how the teacher computes, not only what it outputs.

- Hints (FitNets, Romero et al. 2015): a learned linear regressor maps a student hidden layer [B, h_s] to a named
  teacher layer [B, h_t] (`Teacher.features`: an SB3 actor's activations; a CNN teacher's convolutions, flattened,
  then its hidden layers); the term is their mean squared error divided by the teacher
  features' mean square, so `hint_weight` means the same on every teacher. The regressor is trained with the
  student (its own Adam) and saved in the checkpoint, never in the student.
- Attention for vector observations (after Zagoruyko & Komodakis 2017, with input-gradient attention): the
  saliency of a policy at a state is sum_a |d out_a / d z| over its action outputs (Gaussian means, pre-tanh for
  squashed ones, a TD3 actor's action, or logits) with z the normalised observation [B, obs_dim], divided by its
  L2 norm per state. The term is the squared distance between the teacher's and the student's saliency, so the
  student attends to the same inputs. Its gradient goes through the student's input gradient (double backward).

- Spatial attention for CNN students of a CNN teacher (a policykd CNN student: policykd.student_teacher; Zagoruyko &
  Komodakis 2017, activation-based): the attention map of a convolution's activation F [B, c, h, w] is the mean
  over channels of F^2, [B, h, w], flattened and divided by its L2 norm per state. Each student convolution i of
  n_s is paired with the teacher's convolution at the same relative depth (round((i + 1) * n_t / n_s) - 1), the
  larger map average-pooled to the smaller's size; the term is the squared distance, averaged over the pairs.

Both are off by default (weights 0); `Transfer.of(config, teacher, student)` is None then.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from policykd.config import DistillConfig
from policykd.errors import PolicyKDError

TRANSFER_FILE = "transfer.safetensors"


def student_hidden(student: nn.Module, obs: torch.Tensor) -> list[torch.Tensor]:
    """raw obs [B, obs_dim] -> the student's hidden activations, one [B, hidden[i]] per layer (a CNN student's
    after its convolutions, so a hint trains them too)."""
    x, outputs = student.encode(obs), []
    for module in student.trunk:
        x = module(x)
        if not isinstance(module, nn.Linear):
            outputs.append(x)
    return outputs


def _action_output(params: dict[str, torch.Tensor]) -> torch.Tensor:
    for name in ("mean", "action", "logits"):
        if name in params:
            return params[name]
    raise AssertionError(f"no action output among {sorted(params)}")


def saliency(outputs_of, z: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """z [B, obs_dim] (requires grad) -> L2-normalised sum_a |d out_a / d z| [B, obs_dim], outputs_of(z) -> [B, A].

    Each row of the batch depends only on its own state, so the gradient of a column's sum is every row's gradient."""
    out = outputs_of(z)
    total = torch.zeros_like(z)
    for a in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[:, a].sum(), z, create_graph=create_graph, retain_graph=True)
        total = total + grad.abs()
    return total / total.norm(dim=1, keepdim=True).clamp_min(1e-12)


def teacher_saliency(teacher, obs: np.ndarray) -> torch.Tensor:
    """raw obs [B, obs_dim] -> the teacher's saliency [B, obs_dim] (no graph kept)."""
    z = teacher.obs_tensor(obs).float().requires_grad_(True)
    with torch.enable_grad():
        return saliency(lambda x: _action_output(teacher._dist(x).params), z, create_graph=False).detach()


def student_saliency(student: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """raw obs [B, obs_dim] -> the student's saliency [B, obs_dim], differentiable in the student's weights."""
    z = student.normalize(obs).detach().requires_grad_(True)
    return saliency(lambda x: student.action_head(student.trunk(x)), z, create_graph=True)


def attention_map(activation: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """F [B, c, h, w] -> L2-normalised mean over channels of F^2, [B, h' * w'] (average-pooled to `size` if given)."""
    spatial = activation.pow(2).mean(dim=1, keepdim=True)
    if size is not None and tuple(spatial.shape[-2:]) != size:
        spatial = nn.functional.adaptive_avg_pool2d(spatial, size)
    flat = spatial.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def spatial_attention_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """Squared distance of the attention maps, each student convolution against the teacher's at the same relative
    depth, averaged over the pairs; maps [B, c, h, w]."""
    n_s, n_t = len(student_maps), len(teacher_maps)
    total = 0.0
    for i, student_map in enumerate(student_maps):
        teacher_map = teacher_maps[round((i + 1) * n_t / n_s) - 1]
        size = tuple(min(a, b) for a, b in zip(student_map.shape[-2:], teacher_map.shape[-2:]))
        total = total + (attention_map(student_map, size) - attention_map(teacher_map, size)).pow(2).sum(dim=1).mean()
    return total / n_s


class Transfer:
    """The hint and attention terms of one run, with the hint regressor and its optimizer."""

    def __init__(self, config: DistillConfig, teacher, student: nn.Module) -> None:
        self.teacher, self.hint_weight, self.attention_weight = teacher, config.hint_weight, config.attention_weight
        if self.attention_weight > 0 and not hasattr(teacher, "_dist"):
            raise PolicyKDError("attention_weight needs one teacher whose actor policykd can differentiate; it does not "
                                "work with an ensemble yet: set attention_weight: 0 or distil from one teacher")
        self.spatial = bool(getattr(student.spec, "conv", None))  # CNN student: spatial attention maps
        if self.spatial and self.attention_weight > 0 and not (hasattr(teacher, "conv_maps") and getattr(teacher, "image_shape", None)):
            raise PolicyKDError("attention_weight with a CNN student needs a CNN teacher (a policykd CNN student, whose "
                                "convolutions give the attention maps); set attention_weight: 0")
        self.regressor: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if self.hint_weight > 0:
            names = list(teacher.features(np.zeros((1, teacher.obs_dim), dtype=np.float32)))
            self.teacher_layer = config.hint_teacher_layer or names[-1]
            if self.teacher_layer not in names:
                raise PolicyKDError(f"hint_teacher_layer {self.teacher_layer!r} is not a layer of this teacher; "
                                    f"choose one of {', '.join(names)}")
            hidden = list(student.spec.hidden)
            self.student_layer = config.hint_student_layer % len(hidden)
            width = teacher.features(np.zeros((1, teacher.obs_dim), dtype=np.float32))[self.teacher_layer].shape[-1]
            with torch.random.fork_rng(devices=[]):  # the regressor's init leaves the run's other random streams alone
                torch.manual_seed(config.seed)
                self.regressor = nn.Linear(hidden[self.student_layer], width)
            self.optimizer = torch.optim.Adam(self.regressor.parameters(), lr=config.lr)

    @property
    def term_names(self) -> list[str]:
        return [name for name, on in (("hint_loss", self.regressor is not None), ("attention_loss", self.attention_weight > 0)) if on]

    @classmethod
    def of(cls, config: DistillConfig, teacher, student: nn.Module) -> Transfer | None:
        return cls(config, teacher, student) if config.hint_weight > 0 or config.attention_weight > 0 else None

    def terms(self, student: nn.Module, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """raw obs [B, obs_dim] -> {"hint_loss", "attention_loss"} (those switched on), unweighted batch means."""
        out: dict[str, torch.Tensor] = {}
        obs_np = obs.numpy()
        if self.regressor is not None:
            target = self.teacher.features(obs_np)[self.teacher_layer].float()
            predicted = self.regressor(student_hidden(student, obs)[self.student_layer])
            out["hint_loss"] = ((predicted - target) ** 2).mean() / (target.pow(2).mean() + 1e-8)
        if self.attention_weight > 0 and self.spatial:
            out["attention_loss"] = spatial_attention_loss(student.conv_maps(obs), self.teacher.conv_maps(obs_np))
        elif self.attention_weight > 0:
            difference = teacher_saliency(self.teacher, obs_np) - student_saliency(student, obs)
            out["attention_loss"] = (difference**2).sum(dim=1).mean()
        return out

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.hint_weight * terms.get("hint_loss", 0.0) + self.attention_weight * terms.get("attention_loss", 0.0)

    def zero_grad(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()

    # -- checkpoint: the regressor and its Adam state, as tensors (no pickle) ------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.regressor is None:
            return {}
        tensors = {f"regressor.{k}": v.detach().clone() for k, v in self.regressor.state_dict().items()}
        for index, entry in self.optimizer.state_dict()["state"].items():
            tensors.update({f"adam.{index}.{name}": torch.as_tensor(value).clone() for name, value in entry.items()})
        return tensors

    def save(self, directory: Path) -> None:
        tensors = self.state_tensors()
        if tensors:
            save_file(tensors, str(directory / TRANSFER_FILE))

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore state_tensors() output (from read_state); nothing to do for {} (a fresh run)."""
        if self.regressor is None or not tensors:
            return
        self.regressor.load_state_dict({k.removeprefix("regressor."): v for k, v in tensors.items() if k.startswith("regressor.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("adam."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})


def read_state(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """The transfer tensors a checkpoint holds ({} when it has none); one-line PolicyKDError if the file is damaged."""
    path = checkpoint_dir / TRANSFER_FILE
    if not path.exists():
        return {}
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise PolicyKDError(f"{path} is corrupt ({str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__}); "
                            "this run cannot be resumed, start a new one with another --run-name") from e
