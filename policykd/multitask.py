"""Multi-task students: teachers of several envs distilled into one student.

Architecture, for tasks t = 0..T-1 whose observation and action spaces may differ:

    raw obs_t [B, obs_dim_t] -> normalise (task t's teacher statistics) -> input adapter_t: the first hidden layer,
    Linear(obs_dim_t, hidden[0]) + activation -> concat one-hot task input [B, T] -> shared MLP trunk (the other
    hidden layers) -> task t's heads:
       action [B, A_t] (means / logits), log_std [B, A_t] (Gaussian families), value [B] (task t's value units)

Only the adapters and heads are per task, so the student is smaller than one single-task student per teacher
(`MultiTaskStudent.parameter_count` against `single_task_parameter_counts`). Distillation is policykd's loop run
over all tasks at once: each round collects round_steps labelled steps per task (DAgger, each task's student view
acting), and every epoch takes minibatches of the tasks in turn, each with its own teacher's family in the loss;
the epoch with the lowest summed held-out KL is kept. Saved as multitask.safetensors + multitask.json (no pickle).

    result = distill_multitask([load_teacher(a), load_teacher(b)], config, Path("runs/multi"))
    student = load_multitask("runs/multi/student")
    action = student.view(1).act(obs[None])[0]      # task 1's raw obs -> task 1's env action
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from policykd import student_format as fmt
from policykd.artifacts import atomic_write_json, package_versions
from policykd.buffer import check_memory, row_bytes
from policykd.collectors import LocalCollector
from policykd.config import DistillConfig
from policykd.distill import _round_seed, check_loss_finite, held_out_episodes, learning_rate, total_gradient_steps, validation_loss
from policykd.distributions import LOG_STD_MAX, LOG_STD_MIN, DistParams, family_strategy
from policykd.errors import PolicyKDError
from policykd.losses import LossConfig, distillation_loss
from policykd.normalization import ObsNormalizer
from policykd.rollout import run_episodes
from policykd.students import TORCH_ACTIVATIONS, Student, StudentSpec, student_spec_for

FORMAT = "policykd-multitask-student"
WEIGHTS, CARD = "multitask.safetensors", "multitask.json"


class TaskIO(nn.Module):
    """What is task-specific: the teacher's normaliser and action bounds (buffers), input adapter and heads."""

    def __init__(self, spec: StudentSpec, adapter_width: int, trunk_width: int, activation: str) -> None:
        super().__init__()
        self.spec, self.strategy = spec, family_strategy(spec.family)
        normalizer = ObsNormalizer.from_json(spec.normalizer) if spec.normalizer else ObsNormalizer.identity(spec.obs_dim)
        self.register_buffer("obs_mean", torch.as_tensor(normalizer.mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(normalizer.std, dtype=torch.float32))
        self.register_buffer("obs_clip", torch.tensor(normalizer.clip if normalizer.clip is not None else float("inf")))
        self.register_buffer("action_low", torch.as_tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(spec.action_high, dtype=torch.float32))
        self.register_buffer("value_mean", torch.zeros(()))
        self.register_buffer("value_std", torch.ones(()))
        self.adapter = nn.Sequential(nn.Linear(spec.obs_dim, adapter_width), TORCH_ACTIVATIONS[activation]())
        self.action_head = nn.Linear(trunk_width, spec.action_dim)
        self.log_std_head = nn.Linear(trunk_width, spec.action_dim) if self.strategy.has_log_std else None
        self.value_head = nn.Linear(trunk_width, 1)


class MultiTaskStudent(nn.Module):
    """Per-task adapters and heads around one shared trunk (see the module docstring)."""

    def __init__(self, tasks: list[StudentSpec], hidden: tuple[int, ...] = (64, 64), activation: str = "relu") -> None:
        super().__init__()
        if len(hidden) < 2:
            raise PolicyKDError(f"a multi-task student needs at least two hidden layers (the first is per task), got {list(hidden)}")
        self.tasks, self.hidden, self.activation = list(tasks), tuple(hidden), activation
        layers: list[nn.Module] = []
        width = hidden[0] + len(tasks)
        for h in hidden[1:]:
            layers += [nn.Linear(width, h), TORCH_ACTIVATIONS[activation]()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.io = nn.ModuleList([TaskIO(spec, hidden[0], width, activation) for spec in tasks])
        self.detach_std_head = False  # True: the log_std heads' gradients stop at their input (as Student's)

    def forward(self, task: int, obs: torch.Tensor) -> tuple[DistParams, torch.Tensor]:
        """Task index and raw obs [B, obs_dim_task] -> (task's action distribution of batch B, value [B])."""
        io = self.io[task]
        clip = io.obs_clip.clamp(max=fmt.NORMALISED_LIMIT)  # student_format.effective_clip
        z = torch.clamp((obs - io.obs_mean) / io.obs_std, -clip, clip)
        onehot = torch.zeros(len(obs), len(self.tasks), dtype=z.dtype)
        onehot[:, task] = 1.0
        hidden = self.trunk(torch.cat([io.adapter(z), onehot], dim=1))
        std_input = hidden.detach() if self.detach_std_head else hidden
        log_std = io.log_std_head(std_input).clamp(LOG_STD_MIN, LOG_STD_MAX) if io.log_std_head is not None else None
        dist = DistParams(io.spec.family, io.strategy.params_from_head(io.action_head(hidden), log_std))
        return dist, io.value_head(hidden).squeeze(-1) * io.value_std + io.value_mean

    def view(self, task: int) -> TaskView:
        """The student on task number `task` (0 .. len(self.tasks) - 1, in the order of the card's tasks)."""
        if isinstance(task, bool) or not isinstance(task, int | np.integer) or not 0 <= task < len(self.tasks):
            raise PolicyKDError(f"task {task!r} is not a task number of this multi-task student: give 0 to {len(self.tasks) - 1}, "
                                "in the order of its card's tasks")
        return TaskView(self, int(task))

    def parameter_count(self) -> int:
        """Parameters needed to act on every task (value heads excluded, as Student.parameter_count)."""
        return sum(p.numel() for n, p in self.named_parameters() if ".value_head." not in n)

    def save(self, directory: str | Path, *, card_extra: dict[str, Any] | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{WEIGHTS}.tmp"
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(directory / WEIGHTS)
        atomic_write_json(directory / CARD, {
            "format": FORMAT, "format_version": 1, "tasks": [asdict(spec) for spec in self.tasks], "hidden": list(self.hidden),
            "activation": self.activation, "parameters": self.parameter_count(),
            "versions": package_versions(), **(card_extra or {})})
        return directory


class TaskView(nn.Module):
    """One task of a MultiTaskStudent, with the interface collection, losses and evaluation use on a Student."""

    def __init__(self, student: MultiTaskStudent, task: int) -> None:
        super().__init__()
        self.student, self.task = student, task
        io = student.io[task]
        self.strategy, self.spec = io.strategy, io.spec
        self.action_low, self.action_high = io.action_low, io.action_high

    recurrent = False  # multi-task students are feed-forward

    @property
    def value_std(self) -> torch.Tensor:
        return self.student.io[self.task].value_std

    def reset(self) -> None:
        """No state to forget (the Student interface evaluation calls at each episode start)."""

    def forward(self, obs: torch.Tensor) -> tuple[DistParams, torch.Tensor]:
        return self.student(self.task, obs)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """raw obs [B, obs_dim_task] -> deterministic env actions [B, A] (int64 [B] for discrete), checked as Student.act."""
        checked = torch.from_numpy(np.require(fmt.check_observations(obs, self.spec.obs_dim), requirements=["C", "W"]))
        action = self.strategy.to_env_action(self(checked)[0].mode(), self.action_low, self.action_high).numpy()
        return action.astype(np.int64, copy=False) if self.strategy.discrete else action


def load_multitask(directory: str | Path) -> MultiTaskStudent:
    """A MultiTaskStudent from multitask.safetensors + multitask.json; one-line PolicyKDError when they do not match."""
    directory = Path(directory)
    try:
        card = json.loads((directory / CARD).read_text())
        if card.get("format") != FORMAT:
            raise ValueError(f"format is {card.get('format')!r}, not {FORMAT}")
        student = MultiTaskStudent([StudentSpec.from_json(t) for t in card["tasks"]], tuple(card["hidden"]), card["activation"])
        student.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise PolicyKDError(f"{directory} is not a loadable multi-task student ({str(e).splitlines()[0][:160]}); "
                            "distil one with `policykd distill-multi`") from e
    return student.eval()


def single_task_parameter_counts(teachers, hidden: tuple[int, ...], activation: str) -> list[int]:
    """The parameters of one single-task student per teacher, of the same hidden sizes (for the comparison)."""
    return [Student(student_spec_for(t, hidden=hidden, activation=activation)).parameter_count() for t in teachers]


@dataclass
class MultiTaskResult:
    run_dir: Path
    student: MultiTaskStudent
    history: list[dict[str, Any]]
    wall_s: float


# recipe keys of single-task distillation that a multi-task run does not use: set to anything but their default, refused
SINGLE_TASK_KEYS = ("ensemble", "ensemble_mode", "ensemble_weighting", "backend", "num_workers", "ray_address",
                    "early_stopping_patience", "hint_weight", "hint_teacher_layer", "hint_student_layer", "attention_weight",
                    "quantise_aware_rounds", "wandb", "wandb_project", "tensorboard", "eval_every_round", "latency_calls",
                    "rollout_steps", "tbptt_steps", "image_shape")


def check_multitask_keys(config: DistillConfig) -> None:
    """One line naming every recipe key set that `policykd distill-multi` would otherwise ignore."""
    default = DistillConfig()
    if config.student_view:
        raise PolicyKDError("student_view is for single-task students; distil each view with `policykd distill`")
    if config.conv or config.gru:
        raise PolicyKDError("a multi-task student is an MLP: conv and gru are for single-task students (`policykd distill`); "
                            "remove them from the recipe")
    ignored = [key for key in SINGLE_TASK_KEYS if getattr(config, key) != getattr(default, key)]
    if ignored:
        raise PolicyKDError(f"distill-multi does not use recipe key{'s' if len(ignored) > 1 else ''} {', '.join(ignored)} "
                            "(single-task distillation only); remove them from the recipe")


def distill_multitask(teachers, config: DistillConfig, run_dir: Path, *, progress=None) -> MultiTaskResult:
    """Distil `teachers` (one per task) into one MultiTaskStudent with config's recipe (labelled_steps per task);
    saves it to run_dir/student. progress(message) is called once per round."""
    if len(teachers) < 2:
        raise PolicyKDError("a multi-task student needs at least two teachers; use `policykd distill` for one")
    envs = [t.env_spec.env_id for t in teachers]
    repeated = sorted({env for env in envs if envs.count(env) > 1})
    if repeated:
        raise PolicyKDError(f"a multi-task student takes one teacher per env, and {', '.join(repeated)} has more than one; "
                            "several teachers of one env go into one student with the recipe's `ensemble` key")
    check_multitask_keys(config)
    check_memory(sum(config.labelled_steps * row_bytes(t.observation_space, t.action_space, t.family, transitions=True)
                     for t in teachers), rows=config.labelled_steps, what="labelled_steps (per task)")
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    specs = [student_spec_for(t, hidden=tuple(config.hidden), activation=config.activation) for t in teachers]
    student = MultiTaskStudent(specs, tuple(config.hidden), config.activation)
    student.detach_std_head = config.std_head_detached
    views = [student.view(i) for i in range(len(teachers))]
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    loss_config = LossConfig(kl_direction=config.kl_direction, tau=config.tau, lambda_v=config.lambda_v, loss=config.loss,
                             kl_mean_scale=config.kl_mean_scale, kl_student_std=config.kl_student_std)
    data: list[dict[str, np.ndarray] | None] = [None] * len(teachers)
    history, step, start = [], 0, time.perf_counter()
    for round_index in range(config.rounds):
        beta = config.beta(round_index)
        for task, teacher in enumerate(teachers):
            chunk, _ = LocalCollector(teacher, config).collect_round(
                steps=config.round_steps(round_index), beta=beta, seed=_round_seed(config.seed, round_index) + task,
                round_index=round_index, student=views[task],
                episode_offset=0 if data[task] is None else int(data[task]["episode_id"].max()) + 1)
            data[task] = chunk if data[task] is None else {k: np.concatenate([data[task][k], chunk[k]]) for k in data[task]}
            if round_index == 0:
                student.io[task].value_mean.fill_(float(chunk["value"].mean()))
                student.io[task].value_std.fill_(float(chunk["value"].std()) + 1e-6)
        splits = []
        for task_data in data:
            held = held_out_episodes(task_data["episode_id"], config.validation_fraction, config.seed, task_data["round"])
            splits.append(({k: v[~held] for k, v in task_data.items()}, {k: v[held] for k, v in task_data.items()} if held.any() else None))
        metrics, step = _train_round(student, views, teachers, splits, optimizer, loss_config, config, round_index, step)
        history.append({"round": round_index, "beta": beta, **metrics})
        if progress is not None:
            progress(f"round {round_index + 1}/{config.rounds}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()
                                                                              if isinstance(v, float)))
    wall_s = time.perf_counter() - start
    student.save(run_dir / "student", card_extra={"teachers": [t.identity() for t in teachers], "config": config.to_dict(),
                                                  "decided": config.decisions(), "history": history, "wall_s": wall_s})
    return MultiTaskResult(run_dir=run_dir, student=student.eval(), history=history, wall_s=wall_s)


def _train_round(student, views, teachers, splits, optimizer, loss_config, config, round_index, step):
    """decided_epochs_per_round(round_index) epochs; each takes the tasks' minibatches in turn. Keeps the epoch with the lowest
    held-out KL summed over tasks. Returns (metrics, global gradient step)."""
    rng = np.random.default_rng(_round_seed(config.seed, round_index))
    batch = config.decided_batch_size()
    tensors = [(torch.as_tensor(train["obs"]), {n: torch.as_tensor(train[f"dist_{n}"]) for n in views[i].strategy.param_names},
                torch.as_tensor(train["value"])) for i, (train, _) in enumerate(splits)]
    for _, params, _ in tensors:
        if "logits" in params:
            params["logits"] = params["logits"].float()
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    losses: dict[str, float] = {}
    student.train()
    for epoch in range(1, config.decided_epochs_per_round(round_index) + 1):
        order = [(task, idx) for task, (obs, _, _) in enumerate(tensors)
                 for idx in np.array_split(rng.permutation(len(obs)), max(1, -(-len(obs) // batch)))]
        rng.shuffle(order)  # the tasks' minibatches interleaved
        totals = {"loss": 0.0, "kl": 0.0}
        for task, idx in order:
            obs, params, value = tensors[task]
            idx = torch.as_tensor(idx)
            view = views[task]
            dist, student_value = view(obs[idx])
            bounds = (view.action_low, view.action_high) if config.bounded_means and view.strategy.clips_to_bounds else None
            terms = distillation_loss(DistParams(teachers[task].family, {k: v[idx] for k, v in params.items()}), value[idx],
                                      dist, student_value, value_std=view.value_std, config=loss_config, action_bounds=bounds)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step, total_steps=len(views) * total_gradient_steps(config))
            step += 1
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            totals["loss"] += terms["loss"].item() / len(order)
            totals["kl"] += terms["kl"].item() / len(order)
        check_loss_finite(totals["loss"], round_index=round_index, epoch=epoch, lr=config.lr)
        losses = totals
        held = [(view, validation) for view, (_, validation) in zip(views, splits) if validation is not None]
        if held:
            val_loss = _held_out_loss(held, config, loss_config)
            if best is None or val_loss < best[0]:
                best = (val_loss, epoch, {k: v.detach().clone() for k, v in student.state_dict().items()})
    student.eval()
    if best is not None:
        student.load_state_dict(best[2])
        val_kl = best[0] if loss_config.kl_as_is else _held_out_loss(held, config, "kl")
        losses.update({"val_kl": val_kl, "best_epoch": best[1]})
    return losses, step


def _held_out_loss(held, config, loss: str | LossConfig) -> float:
    """Sum over tasks of `loss` (kl, bc or mse: distill.validation_loss) on each task's held-out rows; `held` is a
    list of (task view, held-out rows). Model selection uses the recipe's own loss, as single-task distillation does."""
    return sum(validation_loss(view, validation, view.spec.family, loss=loss,
                               action_bounds=(view.action_low, view.action_high)
                               if config.bounded_means and view.strategy.clips_to_bounds else None)
               for view, validation in held)


def evaluate_multitask(student: MultiTaskStudent, teachers, *, episodes: int = 20, eval_seed: int = 1_000_000,
                       n_envs: int = 2, teacher_episodes=None) -> list[dict[str, Any]]:
    """Per task: teacher and student on the same seeds; return ratio (evaluate.return_ratio) with its paired
    bootstrap 95% interval, and failures. teacher_episodes: one Episodes per teacher already run on those seeds."""
    from policykd.evaluate import ratio_bootstrap_ci, return_ratio

    seeds = [eval_seed + i for i in range(episodes)]
    rows = []
    for task, teacher in enumerate(teachers):
        reference = (teacher_episodes[task] if teacher_episodes is not None else
                     run_episodes(lambda obs, t=teacher: t.act(obs, deterministic=True), teacher.env_spec, seeds, n_envs=n_envs))
        own = run_episodes(student.view(task).act, teacher.env_spec, seeds, n_envs=n_envs)
        teacher_mean, student_mean = float(reference.returns.mean()), float(own.returns.mean())
        rows.append({"task": task, "env": teacher.env_spec.env_id, "teacher_return": teacher_mean, "student_return": student_mean,
                     "ratio": return_ratio(student_mean, teacher_mean),
                     "ratio_ci95": list(ratio_bootstrap_ci(own.returns, reference.returns)),
                     "teacher_failures": int(reference.failures().sum()), "student_failures": int(own.failures().sum()),
                     "episodes": episodes})
    return rows
