"""The distillation loop, top to bottom: seed, teacher, buffer, student, then per round: collect, train, checkpoint.

Round r collects config.round_steps(r) teacher-labelled states with beta = config.beta(r) (the teacher acts with
probability beta, else the student: DAgger), appends them to the on-disk buffer, then trains the student on all
data gathered so far for config.decided_epochs_per_round() epochs. Every random source is derived from (seed, round), so a
run resumed from the last checkpoint gives the same student as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions
from policykd.buffer import Buffer, check_room, row_bytes, space_to_json
from policykd.checkpoint import checkpoint_config, load_checkpoint, save_checkpoint
from policykd.collectors import round_collector
from policykd.config import DistillConfig
from policykd.distributions import DistParams, family_strategy, kl_divergence
from policykd.errors import PolicyKDError
from policykd.losses import LossConfig, action_term, bounded_means, distillation_loss
from policykd.progress import Progress, RoundMetrics
from policykd.recurrent import EpisodeSequences
from policykd.rollout import run_episodes
from policykd.run_dir import CONFIG_FILE, LOCK_FILE, RUN_FORMAT, RunLock, check_same_teacher, read_run_record, resolve_run_dir
from policykd.students import Student, student_spec_for
from policykd.teachers import Teacher
from policykd.tracking import HISTORY_FILE, Tracker, make_tracker
from policykd.transfer import Transfer
from policykd.transfer import read_state as read_transfer_state
from policykd.views import student_observation_space, view_image_shape


@dataclass
class DistillResult:
    run_dir: Path
    student: Student
    teacher: Teacher
    history: tuple[RoundMetrics, ...]
    wall_s: float  # collection + training, this process only (excludes evaluation)
    tracker: Tracker  # still open: the caller logs evaluation to it, then calls finish()


def run_dir_for(config: DistillConfig, env_id: str) -> Path:
    name = config.run_name or f"{env_id.replace('/', '-')}__{config.data_mode}__{config.seed}__{int(time.time())}"
    return Path(config.out_dir) / name


def _round_seed(seed: int, round_index: int) -> int:
    return int(np.random.SeedSequence([seed, round_index]).generate_state(1)[0])


def _make_optimizer(config: DistillConfig):
    return lambda student: torch.optim.Adam(student.parameters(), lr=config.lr)


def total_gradient_steps(config: DistillConfig) -> int:
    """Minibatch updates over the whole run (round r trains on every row gathered in rounds 0..r)."""
    rows = np.cumsum([config.round_steps(r) for r in range(config.rounds)])
    return int(sum(-(-int(n) // config.decided_batch_size()) * config.decided_epochs_per_round(r) for r, n in enumerate(rows)))


def learning_rate(config: DistillConfig, step: int, *, total_steps: int | None = None) -> float:
    """lr at global gradient step `step`: constant, or cosine-annealed to 0 over the run's total_steps gradient
    steps (default: total_gradient_steps(config))."""
    if config.lr_schedule == "constant":
        return config.lr
    total = total_steps if total_steps is not None else total_gradient_steps(config)
    return config.lr * 0.5 * (1.0 + np.cos(np.pi * min(step / total, 1.0)))


def held_out_episodes(episode_id: np.ndarray, fraction: float, seed: int, row_round: np.ndarray | None = None) -> np.ndarray:
    """[N] bool: rows of the episodes held out for validation, about `fraction` of the episodes, chosen by a hash
    of (seed, episode id) so that an episode stays on its side in every round. When the hash picks none of two or
    more episodes (a few long episodes, as a balancing teacher's first round gives), the episode with the lowest
    hash is held out. A later, new episode may take its place; an episode trained on never becomes validation as
    long as every round holds one out, which two collection envs (the default), each starting an episode in round 0,
    guarantee. When the hash picks every episode of the first round (row_round [N], each row's round; without it
    every row counts as the first round's), as a short first round of long episodes can give, the earliest episode
    is trained on, in that round and every later one, so that no round trains on nothing."""
    if fraction <= 0:
        return np.zeros(len(episode_id), dtype=bool)
    ids = episode_id.astype(np.uint64)
    with np.errstate(over="ignore"):  # the hash wraps around 2**64 on purpose
        mixed = (ids * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed) * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(40)
    mixed %= np.uint64(10_000)
    held = mixed < np.uint64(round(fraction * 10_000))
    if not held.any() and len(np.unique(episode_id)) >= 2:
        held = episode_id == episode_id[np.argmin(mixed)]
    first_round = np.ones(len(episode_id), dtype=bool) if row_round is None or not len(row_round) else row_round == row_round.min()
    if len(episode_id) and held[first_round].all():
        held &= episode_id != episode_id.min()
    return held


def _labels(data: dict[str, np.ndarray], strategy) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The student's inputs [N, obs_dim] (its own view, `student_obs`, where the buffer has one; else the
    teacher's observation), the teacher's distribution parameters (each [N, ...]) and values [N] as tensors."""
    params = {n: torch.as_tensor(data[f"dist_{n}"]) for n in strategy.param_names}
    if strategy.discrete:
        params["logits"] = params["logits"].float()
    inputs = data["student_obs"] if "student_obs" in data else data["obs"]
    return torch.as_tensor(inputs), params, torch.as_tensor(data["value"])


@torch.no_grad()
def validation_loss(student: Student, data: dict[str, np.ndarray], family: str, *, batch: int = 4096,
                    action_bounds: tuple[torch.Tensor, torch.Tensor] | None = None, tbptt_steps: int = 32,
                    loss: str | LossConfig = "kl") -> float:
    """KL(teacher || student) averaged over the rows of `data` (held-out teacher-labelled states), or with `loss`
    "bc" / "mse", or a LossConfig whose KL is reweighted (kl_mean_scale, kl_student_std), that action term at tau 1
    (hard-label NLL, squared error of the means, the reweighted KL), so that model selection
    judges a student by what it was trained to match: a BC student's std shrinks towards its residuals, which makes
    its KL to the teacher grow while its actions improve. With action_bounds (low [A], high [A]), means beyond a
    bound are compared as training compares them (bounded_means). A recurrent student runs the held-out episodes in
    order (policykd.recurrent), in chunks of tbptt_steps."""
    obs, params, _ = _labels(data, family_strategy(family))
    terms = replace(loss, tau=1.0, kl_direction="forward") if isinstance(loss, LossConfig) else LossConfig(loss=loss)
    total = 0.0
    if student.recurrent:  # whole held-out episodes, chunk by chunk from the states their prefixes lead to
        sequences = EpisodeSequences(obs, data["episode_id"], tbptt_steps)
        sequences.refresh(student)
        groups = torch.arange(len(sequences)).split(max(1, batch // tbptt_steps))
        outputs = (sequences.forward(student, group) for group in groups)
    else:
        outputs = ((torch.arange(s, min(s + batch, len(obs))), *student(obs[s : s + batch])) for s in range(0, len(obs), batch))
    for rows, dist, _ in outputs:
        target = DistParams(family, {k: v[rows] for k, v in params.items()})
        if action_bounds is not None:
            target, dist = bounded_means(target, dist, *action_bounds)
        if terms.kl_as_is:
            total += float(kl_divergence(target, dist, reduction="sum"))
        else:
            total += float(action_term(target, dist, terms)) * len(rows)
    return total / max(len(obs), 1)


def check_loss_finite(loss: float, *, round_index: int, epoch: int, lr: float) -> None:
    """Stop training at the first epoch whose mean loss is NaN or inf (the labels are finite: policykd.rollout and
    policykd.buffer check them), before a NaN student can be saved."""
    if not np.isfinite(loss):
        raise PolicyKDError(f"training diverged in round {round_index + 1}, epoch {epoch}: the loss became NaN or inf (its "
                            f"labels are finite, policykd.buffer checks them); lower lr (now {lr:g}) and start a new run")


def train_round(student: Student, optimizer: torch.optim.Optimizer, data: dict[str, np.ndarray], family: str,
                config: DistillConfig, round_index: int, seed: int, first_step: int, on_progress=None,
                validation: dict[str, np.ndarray] | None = None, transfer: Transfer | None = None,
                value_matching: bool = True) -> dict[str, float]:
    """Up to config.decided_epochs_per_round(round_index) epochs of minibatch Adam on all rows of `data`, starting at
    global gradient step `first_step` (for the lr schedule). With `validation` rows, the weights of the epoch with the lowest
    held-out KL (held-out loss for `loss: bc | mse`) are kept, and training stops after config.early_stopping_patience epochs without improvement (when
    > 0). `transfer` adds the hint and attention terms (policykd.transfer). value_matching False (a teacher without a
    value, Teacher.has_value) trains at lambda_v 0 whatever the recipe says. Returns last-epoch mean losses, the
    gradient steps taken, and (with validation) val_kl, epochs, best_epoch."""
    loss_config = LossConfig(kl_direction=config.kl_direction, tau=config.tau, lambda_v=config.lambda_v if value_matching else 0.0,
                             loss=config.loss, kl_mean_scale=config.kl_mean_scale, kl_student_std=config.kl_student_std)
    strategy = family_strategy(family)
    obs, params, value = _labels(data, strategy)
    bounds = (student.action_low, student.action_high) if config.bounded_means and strategy.clips_to_bounds else None
    rng = np.random.default_rng(seed)
    n = len(obs)
    sequences = EpisodeSequences(obs, data["episode_id"], config.tbptt_steps) if student.recurrent else None  # TBPTT
    student.train()
    sums: dict[str, float] = {}
    step = first_step
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    epoch = 0
    batch_size = config.decided_batch_size()
    for epoch in range(1, config.decided_epochs_per_round(round_index) + 1):
        if sequences is not None:
            sequences.refresh(student)
            groups = sequences.minibatches(rng, batch_size)
        else:
            groups = torch.as_tensor(rng.permutation(n)).split(batch_size)
        sums = {"loss": 0.0, "kl": 0.0, "value_mse": 0.0}
        if transfer is not None:
            sums.update({name: 0.0 for name in transfer.term_names})
        batches = 0
        for group in groups:
            if sequences is not None:  # chunks of episodes: the rows they cover, and the student's outputs there
                idx, dist, student_value = sequences.forward(student, group)
            else:
                idx = group
                dist, student_value = student(obs[idx])
            target = DistParams(family, {k: v[idx] for k, v in params.items()})
            terms = distillation_loss(target, value[idx], dist, student_value, value_std=student.value_std, config=loss_config,
                                      action_bounds=bounds)
            if transfer is not None:
                extra = transfer.terms(student, obs[idx])
                terms = {**terms, **extra, "loss": terms["loss"] + transfer.weighted(extra)}
                transfer.zero_grad()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            step += 1
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            if transfer is not None:
                transfer.step()
            for k in sums:
                sums[k] += terms[k].item()
            batches += 1
        check_loss_finite(sums["loss"], round_index=round_index, epoch=epoch, lr=config.lr)
        if on_progress is not None:
            on_progress(1)
        if validation is not None:
            val_loss = validation_loss(student, validation, family, action_bounds=bounds, tbptt_steps=config.tbptt_steps,
                                       loss=loss_config)
            if best is None or val_loss < best[0]:
                best = (val_loss, epoch, {k: v.detach().clone() for k, v in student.state_dict().items()})
            elif config.early_stopping_patience and epoch - best[1] >= config.early_stopping_patience:
                break
    student.eval()
    out = {k: v / max(batches, 1) for k, v in sums.items()}
    out["steps"] = step - first_step
    if best is not None:
        student.load_state_dict(best[2])
        val_kl = best[0] if loss_config.kl_as_is else validation_loss(student, validation, family, action_bounds=bounds,
                                                                     tbptt_steps=config.tbptt_steps)
        out.update({"val_kl": val_kl, "epochs": epoch, "best_epoch": best[1]})
    return out


# Settings that may change between an interrupted run and its resumption (they do not affect the student).
_RESUMABLE_CHANGES = {"ray_address", "eval_episodes", "eval_every_round", "eval_seed", "latency_calls", "out_dir", "run_name", "wandb",
                      "wandb_project", "tensorboard", "rollout_steps", "trust_pickle"}


def _check_resume_config(run_dir: Path, record: dict[str, Any], config: DistillConfig) -> None:
    """Refuse a resumption whose settings differ from config.json's, or whose config.json no longer says what the
    checkpoint was trained with (edited by hand: the record would then lie about the student)."""
    current = config.to_dict()
    saved = {**DistillConfig().to_dict(), **record["config"]}  # keys newer than the run: defaults
    changed = sorted(k for k, v in current.items() if k not in _RESUMABLE_CHANGES and saved.get(k) != v)
    if changed:
        raise PolicyKDError(f"--resume with a different config than {run_dir / CONFIG_FILE} ({', '.join(changed)}); "
                            "resume with the same settings")
    trained = checkpoint_config(run_dir)
    if trained is not None:
        trained = {**DistillConfig().to_dict(), **trained}
        edited = sorted(k for k in current if k not in _RESUMABLE_CHANGES and trained.get(k) != saved.get(k))
        if edited:
            raise PolicyKDError(f"{run_dir / CONFIG_FILE} was edited since its checkpoint was written ({', '.join(edited)}: "
                                f"{', '.join(f'{k}={trained.get(k)!r:.30}' for k in edited[:3])} in the checkpoint); nothing was "
                                "changed. Restore those settings, or start a new run with another --run-name")


OUTPUT_FOLDERS = ("student", "plots")  # what a run writes in its run dir at the end, after the rounds


def check_recipe_fits_teacher(config: DistillConfig, teacher: Teacher) -> None:
    """The recipe's settings that only the teacher can judge (a temperature, a student view, a CNN encoder's
    image), checked before anything is written: PolicyKDError naming the setting otherwise."""
    if config.tau != 1.0 and config.loss == "kl" and teacher.family == "deterministic":
        raise PolicyKDError(f"tau={config.tau:g} has no meaning for a deterministic ({teacher.algo}) teacher: its actions have "
                            "no spread for a temperature to scale; leave tau at 1")
    if config.student_view:
        student_observation_space(teacher.env_spec, config.student_view)
    student_conv(config, teacher)


def prepare_run_dir(config: DistillConfig, teacher: Teacher, *, resume: bool) -> Path:
    """The run folder for `config`, checked before anything in it is touched: a new run needs an absent or empty
    folder; --resume needs a policykd run of the same recipe, teacher file and env. Creates the folder."""
    run_dir = resolve_run_dir(config.out_dir, run_dir_for(config, teacher.env_spec.env_id).name)
    check_recipe_fits_teacher(config, teacher)
    if resume:
        if not run_dir.is_dir():
            raise PolicyKDError(f"there is no run {run_dir} to resume; check --out-dir and --run-name, or drop --resume")
        record = read_run_record(run_dir)
        check_same_teacher(run_dir, record, teacher.identity())
        _check_resume_config(run_dir, record, config)
        blocking = next((run_dir / name for name in OUTPUT_FOLDERS if (run_dir / name).exists() and not (run_dir / name).is_dir()), None)
        if blocking is not None:  # found before the rounds are trained, not when the student is saved after them
            raise PolicyKDError(f"{blocking} is a file where the run keeps its {blocking.name} folder; move it away, then resume "
                                "(nothing was changed)")
    elif run_dir.exists() and (not run_dir.is_dir() or any(p.name != LOCK_FILE for p in run_dir.iterdir())):
        raise PolicyKDError(f"run dir {run_dir} already exists; pass --resume to continue it or choose another --run-name")
    else:
        view_space = student_observation_space(teacher.env_spec, config.student_view) if config.student_view else None
        check_room(run_dir, config.labelled_steps, row_bytes(teacher.observation_space, teacher.action_space, teacher.family,
                                                             transitions=True, student_observation_space=view_space),
                   held_in_memory=True, what="labelled_steps")
    if config.backend == "ray":
        from policykd.ray_backend import check_ray_target

        check_ray_target(config)  # a worker count or address Ray cannot serve: refused before the folder exists
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PolicyKDError(f"cannot create the run folder {run_dir}: {e.strerror}; choose another --out-dir (--out for a sweep)") from e
    return run_dir


def distill(config: DistillConfig, *, resume: bool = False, tracker: Tracker | None = None,
            teacher: Teacher | None = None) -> DistillResult:
    """Distil a student for `config` into its run folder (see prepare_run_dir); resume continues from the last
    finished round. The returned tracker is still open: the caller logs evaluation to it, then calls finish()."""
    from policykd.ensemble import load_teacher_for

    teacher = teacher or load_teacher_for(config)
    run_dir = prepare_run_dir(config, teacher, resume=resume)
    with RunLock(run_dir):
        state = load_run_state(config, teacher, run_dir, resume=resume)
        tracker = tracker or make_tracker(run_dir, config.to_dict(), wandb=config.wandb, tensorboard=config.tensorboard,
                                          project=config.wandb_project)
        return distill_in_run_dir(config, teacher, run_dir, state, tracker)


@dataclass
class RunState:
    """Where a run starts: a fresh student, or the last checkpoint with the buffer rows it was trained on."""

    student: Student
    optimizer: torch.optim.Optimizer
    progress: Progress
    buffer: Buffer | None            # the run's buffer when resuming, else None (created when the run starts)
    data: dict[str, np.ndarray] | None  # the rows of the checkpoint's buffer chunks, each [N, ...]
    transfer_state: dict[str, torch.Tensor] = field(default_factory=dict)  # the checkpoint's hint regressor

    @property
    def restored(self) -> bool:
        return self.data is not None


def student_conv(config: DistillConfig, teacher: Teacher) -> dict | None:
    """The CNN encoder of the recipe (StudentSpec.conv), its image shape from image_shape, else the student view's,
    else (no view) the teacher's when it is a CNN student itself (policykd.student_teacher)."""
    if not config.conv:
        return None
    image = config.image_shape
    if image is None and config.student_view:
        image = view_image_shape(teacher.env_spec, config.student_view)
    elif image is None:  # the teacher's own observation: a CNN teacher (a student of a camera view) says where its image is
        image = getattr(teacher, "image_shape", None)
    if image is None:
        raise PolicyKDError(f"conv needs to know where the image is: set image_shape [height, width, channels] or use a student "
                            f"view whose observations start with one (e.g. camera){'' if not config.student_view else f'; view {config.student_view!r} has none'}")
    return {"image_shape": list(image), "layers": config.conv}


def load_run_state(config: DistillConfig, teacher: Teacher, run_dir: Path, *, resume: bool) -> RunState:
    """Read and verify everything a run starts from (checkpoint, optimizer state, buffer chunks and their sha256)
    without writing anything, so a damaged run is refused before a file changes."""
    restored = load_checkpoint(run_dir, _make_optimizer(config)) if resume else None
    if restored is not None:
        student, optimizer, progress = restored
        try:
            buffer = Buffer.open(run_dir / "buffer")
            if len(buffer.metadata["chunks"]) < progress.buffer_chunks:
                raise PolicyKDError(f"{run_dir / 'buffer'} holds fewer chunks than its checkpoint trained on")
            data = buffer.load(n_chunks=progress.buffer_chunks)
        except PolicyKDError as e:  # the buffer's own advice (collect it again) is for `policykd collect`'s buffers
            problem = str(e).split("; ")[0]
            raise PolicyKDError(f"{problem}; this run cannot be resumed, start a new one with another --run-name") from e
        return RunState(student, optimizer, progress, buffer, data, read_transfer_state(run_dir / "checkpoint"))
    torch.manual_seed(config.seed)
    view_space = student_observation_space(teacher.env_spec, config.student_view) if config.student_view else None
    student = Student(student_spec_for(teacher, hidden=tuple(config.hidden), activation=config.activation,
                                       observation_space=view_space, conv=student_conv(config, teacher), gru=config.gru))
    return RunState(student, _make_optimizer(config)(student), Progress(), None, None)


def teacher_has_value(teacher: Teacher) -> bool:
    """Whether distillation matches the teacher's value (not for teachers without one: ARS, Teacher.has_value)."""
    return getattr(teacher, "has_value", True)


def distill_in_run_dir(config: DistillConfig, teacher: Teacher, run_dir: Path, state: RunState,
                       tracker: Tracker, on_round=None) -> DistillResult:
    """The loop, in a folder from prepare_run_dir whose RunLock the caller holds, from load_run_state's state."""
    torch.set_num_threads(config.torch_threads)
    identity = teacher.identity()
    decided = {**config.decisions(), "value_matching": teacher_has_value(teacher)}
    atomic_write_json(run_dir / CONFIG_FILE, {"format": RUN_FORMAT, "config": config.to_dict(), "decided": decided,
                                              "teacher": identity, "versions": package_versions()})
    card_extra = {"teacher": identity, "config": config.to_dict(), "decided": decided, "seed": config.seed}
    view_space = None
    if config.student_view:  # what the student sees, beside the teacher's env: `policykd eval` rebuilds it from here
        view_space = student_observation_space(teacher.env_spec, config.student_view)
        card_extra["student_view"] = {"name": config.student_view, "observation_space": space_to_json(view_space)}
    student, optimizer, progress, data = state.student, state.optimizer, state.progress, state.data
    student.detach_std_head = config.std_head_detached
    transfer = Transfer.of(config, teacher, student)
    if transfer is not None:
        transfer.load_tensors(state.transfer_state)
    if state.buffer is not None:
        buffer = state.buffer
        buffer.truncate(progress.buffer_chunks)  # rows collected after the checkpoint: collected again
        if not (run_dir / HISTORY_FILE).exists():  # the log was deleted: its finished rounds again, from the checkpoint
            atomic_write_bytes(run_dir / HISTORY_FILE, "".join(json.dumps({"step": m.labelled_steps, **m.to_json()}) + "\n"
                                                               for m in progress.history).encode())
        tracker.log({"resume/round": progress.rounds_done, "resume/rows": buffer.rows}, step=buffer.rows)
    else:
        if (run_dir / "buffer" / "metadata.json").exists():  # this run's buffer, but no round finished: start it over
            Buffer.open(run_dir / "buffer").truncate(0)
            (run_dir / "buffer" / "metadata.json").unlink()
        buffer = Buffer.create(run_dir / "buffer", observation_space=teacher.observation_space, action_space=teacher.action_space,
                               family=teacher.family, teacher=identity, normalizer=teacher.normalizer.to_json(),
                               config=config.to_dict(), transitions=True, student_view=config.student_view,
                               student_observation_space=view_space)

    with round_collector(config, teacher) as collector:
        for round_index in range(progress.rounds_done, config.rounds):
            round_start = time.perf_counter()
            seed = _round_seed(config.seed, round_index)
            beta = config.beta(round_index)
            steps = config.round_steps(round_index)
            with tracker.progress(f"round {round_index + 1}/{config.rounds}: collecting (beta={beta:.2f})", steps) as advance:
                collect_start = time.perf_counter()
                chunk, worker_failures = collector.collect_round(steps=steps, beta=beta, seed=seed, round_index=round_index,
                                                                 episode_offset=progress.episodes, student=student,
                                                                 on_progress=advance)
                collect_s = time.perf_counter() - collect_start
            buffer.append(chunk)
            data = chunk if data is None else {k: np.concatenate([data[k], chunk[k]]) for k in data}
            if round_index == 0 and not state.restored:
                student.value_mean.fill_(float(data["value"].mean()))
                student.value_std.fill_(float(data["value"].std()) + 1e-6)
                if config.student_view:  # the teacher's normaliser is for the teacher's view: fit the student's own
                    student.fit_normalizer(data["student_obs"])
            with tracker.progress(f"round {round_index + 1}/{config.rounds}: training", config.decided_epochs_per_round(round_index)) as advance:
                held_out = held_out_episodes(data["episode_id"], config.validation_fraction, config.seed, data["round"])
                train = data if not held_out.any() else {k: v[~held_out] for k, v in data.items()}
                validation = {k: v[held_out] for k, v in data.items()} if held_out.any() else None
                student.quantise_int8 = round_index >= config.rounds - config.quantise_aware_rounds
                try:
                    losses = train_round(student, optimizer, train, teacher.family, config, round_index, seed, progress.gradient_steps,
                                         on_progress=advance, validation=validation, transfer=transfer,
                                         value_matching=teacher_has_value(teacher))
                finally:
                    student.quantise_int8 = False  # acting, evaluation and exports use the float forward pass
                steps_taken = losses.pop("steps")
            evaluation = {}
            wall_s = progress.wall_s + time.perf_counter() - round_start
            if config.eval_every_round > 0:  # not part of wall_s: evaluation is excluded from the distillation budget
                seeds = [config.eval_seed + i for i in range(config.eval_every_round)]
                with tracker.progress(f"round {round_index + 1}/{config.rounds}: evaluating the student", len(seeds)) as advance:
                    episodes = run_episodes(student.act, teacher.env_spec, seeds, n_envs=config.n_envs, progress=advance)
                evaluation = {"eval_return_mean": float(episodes.returns.mean()), "eval_return_std": float(episodes.returns.std())}
            metrics = RoundMetrics(round=round_index, beta=beta, labelled_steps=len(data["obs"]), **losses,
                                   student_acted=float(np.mean(chunk["actor"])), collect_steps_per_s=steps / collect_s,
                                   worker_failures=worker_failures if config.backend == "ray" else None,
                                   wall_s=wall_s, **evaluation)
            progress = progress.after_round(metrics, buffer_chunks=len(buffer.metadata["chunks"]),
                                            episodes=int(data["episode_id"].max()) + 1,
                                            gradient_steps=steps_taken)
            save_checkpoint(run_dir, student, optimizer, progress, card_extra, transfer)
            tracker.log(metrics.to_json(), step=len(data["obs"]))
            if on_round is not None:  # e.g. a Ray Tune trial reporting for early stopping
                on_round(metrics)

    history = [m.to_json() for m in progress.history]
    student.save(run_dir / "student", card_extra={**card_extra, "history": history, "wall_s": progress.wall_s})
    return DistillResult(run_dir=run_dir, student=student.eval(), teacher=teacher, history=progress.history,
                         wall_s=progress.wall_s, tracker=tracker)
