"""Teacher vs student: returns on the same fixed seeds, agreement on held-out teacher states, latency, size.

Returns follow the benchmark protocol: deterministic actions, fixed evaluation seeds (episode i uses seed
eval_seed + i for both policies), mean, std, IQM and a bootstrap 95% interval of the mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policykd.distributions import box_bounds, kl_divergence
from policykd.latency import measure_latency
from policykd.rollout import ActFn, Episodes, run_episodes
from policykd.students import Student
from policykd.teachers import Teacher


def interquartile_mean(x: np.ndarray) -> float:
    """Mean of the middle 50% of the sorted values (scipy.stats.trim_mean(x, 0.25))."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    cut = int(np.floor(0.25 * len(x)))
    return float(x[cut : len(x) - cut].mean())


def bootstrap_ci(x: np.ndarray, *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; NaN for fewer than 2 values (one value has no spread to resample)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def return_ratio(student_mean: float, teacher_mean: float) -> float:
    """Student return as a fraction of the teacher's: student / teacher, 1 = parity, lower = worse.

    For a negative teacher return (costs, as in Pendulum) it is teacher / student, so that it keeps that meaning.
    NaN when either is 0 or their signs differ: no fraction says how a student at +90 compares with a teacher at
    -0.4 (teacher / student would read -0.004, far worse, for a far better student); compare the means there.
    """
    if teacher_mean == 0 or student_mean == 0 or (teacher_mean > 0) != (student_mean > 0):
        return float("nan")
    return student_mean / teacher_mean if teacher_mean > 0 else teacher_mean / student_mean


def ratio_bootstrap_ci(student_returns: np.ndarray, teacher_returns: np.ndarray, *, n_resamples: int = 10_000,
                       confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of return_ratio, resampling the evaluation seeds in pairs (both policies ran
    each seed): student_returns, teacher_returns [n_episodes]. NaN for fewer than 2 episodes, and when resampled
    means reach 0 or opposite signs (return_ratio has no value there)."""
    student_returns, teacher_returns = np.asarray(student_returns, float), np.asarray(teacher_returns, float)
    if len(student_returns) < 2:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(student_returns), size=(n_resamples, len(student_returns)))
    ratios = np.array([return_ratio(s, t) for s, t in zip(student_returns[idx].mean(axis=1), teacher_returns[idx].mean(axis=1))])
    if not np.isfinite(ratios).all():  # resampled means cross 0: the ratio has no interval worth printing
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    return float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))


@dataclass(frozen=True)
class ReturnStats:
    """Returns of one policy on the evaluation seeds: mean, std, IQM and a bootstrap 95% interval of the mean."""

    mean: float
    std: float
    iqm: float
    ci95_low: float
    ci95_high: float
    episodes: int
    returns: tuple[float, ...] = ()
    success_rate: float | None = None  # the env's final info["is_success"], where it reports one
    failures: int = 0                  # episodes that failed: missed targets, or ended by the env early (falls, crashes)

    @classmethod
    def of(cls, returns: np.ndarray, successes: np.ndarray | None = None, failures: np.ndarray | None = None) -> ReturnStats:
        """returns [n_episodes]; successes, failures [n_episodes] bool or None (see Episodes.failures)."""
        low, high = bootstrap_ci(returns)
        return cls(mean=float(np.mean(returns)), std=float(np.std(returns)), iqm=interquartile_mean(returns),
                   ci95_low=low, ci95_high=high, episodes=int(len(returns)), returns=tuple(float(r) for r in returns),
                   success_rate=None if successes is None else float(np.mean(successes)),
                   failures=0 if failures is None else int(np.sum(failures)))

    @classmethod
    def of_episodes(cls, episodes: Episodes) -> ReturnStats:
        return cls.of(episodes.returns, episodes.successes, episodes.failures())

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "success_rate" or v is not None}
        out["returns"] = list(self.returns)
        return out


@dataclass(frozen=True)
class Comparison:
    """Teacher vs student on the same seeds: returns, ratio, agreement on held-out teacher states, latency, size.
    to_json() is the layout of RUN_DIR/eval.json."""

    env: str
    seeds: tuple[int, ...]
    teacher: ReturnStats
    student: ReturnStats
    teacher_actor_params: int
    student_params: int
    ratio: float
    ratio_ci95: tuple[float, float]             # paired bootstrap over the seeds
    agreement: dict[str, float]                  # kl, action_mse (Box) or accuracy, precision, recall, f1 (Discrete)
    latency_us: dict[str, dict[str, float]]      # path -> p50, p99, max, ...
    teacher_noise_floor: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "env": self.env, "seeds": list(self.seeds),
            "teacher": {**self.teacher.to_json(), "actor_params": self.teacher_actor_params},
            "student": {**self.student.to_json(), "params": self.student_params},
            "ratio": self.ratio, "ratio_ci95": list(self.ratio_ci95), "agreement": dict(self.agreement), "latency_us": dict(self.latency_us),
        }
        if self.teacher_noise_floor is not None:
            out["teacher_noise_floor"] = self.teacher_noise_floor
        return out


@torch.no_grad()
def agreement(teacher: Teacher, student: Student, states: np.ndarray, student_states: np.ndarray | None = None) -> dict[str, float]:
    """How closely the student matches the teacher on states [N, obs_dim] the teacher visited; student_states
    [N, ...]: the student's view of the same states, when it sees another one (policykd.views)."""
    teacher_dist, _ = teacher.dist_and_value(states)
    student_dist, _ = student(torch.as_tensor(states if student_states is None else student_states, dtype=torch.float32))
    result = {"kl": float(kl_divergence(teacher_dist, student_dist, reduction="mean")), "states": int(len(states))}
    teacher_action = teacher.to_env_action(teacher_dist.mode())
    student_action = teacher.to_env_action(student_dist.mode())
    if not teacher.strategy.discrete:
        result["action_mse"] = float(np.mean((teacher_action - student_action) ** 2))
        return result
    result.update(classification_agreement(teacher_action, student_action, teacher.action_dim))
    return result


def classification_agreement(reference: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of predicted vs reference action labels [N], averaged over the actions
    either of them takes (as scikit-learn does): an action of the n_classes that neither takes is no disagreement."""
    precision, recall, f1 = [], [], []
    for c in np.union1d(np.unique(reference), np.unique(predicted)).astype(int) if len(reference) else range(n_classes):
        tp = np.sum((predicted == c) & (reference == c))
        p = tp / max(np.sum(predicted == c), 1)
        r = tp / max(np.sum(reference == c), 1)
        precision.append(p)
        recall.append(r)
        f1.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return {"accuracy": float(np.mean(reference == predicted)), "precision": float(np.mean(precision)),
            "recall": float(np.mean(recall)), "f1": float(np.mean(f1))}


def perturbed_act(teacher: Teacher, error: float, rng: np.random.Generator) -> ActFn:
    """The teacher's deterministic actions with an error: Box actions get i.i.d. Gaussian noise of std `error` [env
    action units], clipped to the bounds; discrete actions become another action (uniformly among the others) with
    probability `error`, so the teacher disagrees with itself as often as the student disagrees with it."""
    if teacher.strategy.discrete:
        def act(obs: np.ndarray) -> np.ndarray:
            action = teacher.act(obs)
            swap = rng.random(action.shape) < error
            other = (action + rng.integers(1, max(teacher.action_dim, 2), size=action.shape)) % teacher.action_dim
            return np.where(swap, other, action)
        return act
    low, high = box_bounds(teacher.action_space)

    def act(obs: np.ndarray) -> np.ndarray:
        action = teacher.act(obs)
        noisy = action + error * rng.standard_normal(action.shape)
        return np.clip(noisy, low.reshape(action.shape[1:]), high.reshape(action.shape[1:])).astype(action.dtype)
    return act


def teacher_noise_floor(teacher: Teacher, seeds: list[int], reference: Episodes, *, n_envs: int, error: float,
                        run: Callable[[str, ActFn, int], Episodes], noise_seed: int = 0) -> dict:
    """The teacher against its own reference run (`reference`, stepped n_envs at a time) on the same seeds, perturbed
    two ways, each reported as the return ratio a student would get with those returns:

    - `other_batch`: stepped 1 env at a time (2 when n_envs is 1), so its actions differ only in the last float bits;
      on chaotic envs (falls in Hopper) this alone moves the return.
    - `student_error`: with an error the size of the student's (perturbed_act).

    A student ratio inside this spread is at the teacher's own noise floor on these seeds.
    `run(name, act, n_envs)` evaluates `act` on `seeds`.
    """
    kind = "random action with probability" if teacher.strategy.discrete else "gaussian std"
    perturbed = perturbed_act(teacher, error, np.random.default_rng(noise_seed))
    other_n_envs = 1 if n_envs > 1 else 2
    reference_mean = float(reference.returns.mean())
    other = run(f"teacher, {other_n_envs} env{'' if other_n_envs == 1 else 's'} at a time", teacher.act, other_n_envs)
    noisy = run(f"teacher with the student's error ({kind} {error:.3g})", perturbed, n_envs)
    return {
        "other_batch": {"n_envs": other_n_envs, "return_mean": float(other.returns.mean()),
                        "ratio": return_ratio(float(other.returns.mean()), reference_mean)},
        "student_error": {"kind": kind, "error": float(error), "noise_seed": noise_seed,
                          "return_mean": float(noisy.returns.mean()), "ratio": return_ratio(float(noisy.returns.mean()), reference_mean)},
    }


def compare(teacher: Teacher, student: Student, *, episodes: int = 20, eval_seed: int = 1_000_000, n_envs: int = 2,
            latency_calls: int = 2_000, max_agreement_states: int = 5_000, teacher_episodes: Episodes | None = None,
            noise_floor: bool = False, progress_factory=None, student_view: str = "") -> Comparison:
    """The full teacher-vs-student report. noise_floor: also run teacher_noise_floor, with the
    student's own error on held-out teacher states (RMS action error, or 1 - accuracy for discrete actions).
    student_view: the student sees that view of the env (policykd.views); the teacher its own observation.
    A recurrent student is evaluated from a zero state each episode; its agreement (and noise floor) is not measured
    (agreement {"states": 0}): the teacher's states are not sequences it followed from their start."""
    seeds = [eval_seed + i for i in range(episodes)]
    reset_student = student.reset  # a recurrent student starts every episode from a zero state

    def teacher_act(obs: np.ndarray) -> np.ndarray:
        return teacher.act(obs, deterministic=True)

    def run(name: str, act: ActFn, envs: int = n_envs, *, student: bool = False) -> Episodes:
        view = dict(view=student_view, act_on_view=student, reset=reset_student if student else None)
        if progress_factory is None:
            return run_episodes(act, teacher.env_spec, seeds, n_envs=envs, **view)
        with progress_factory(f"evaluating {name} ({episodes} episodes)", episodes) as advance:
            return run_episodes(act, teacher.env_spec, seeds, n_envs=envs, progress=advance, **view)

    if teacher_episodes is not None and student_view and teacher_episodes.view_states is None:
        teacher_episodes = None  # reference episodes without the student's view of their states: run them again
    if teacher_episodes is not None and len(teacher_episodes.returns) != episodes:
        raise ValueError(f"teacher_episodes holds {len(teacher_episodes.returns)} episodes, not the {episodes} of seeds {seeds[0]}..")
    teacher_eps = teacher_episodes or run("teacher", teacher_act)
    student_eps = run("student", student.act, student=True)
    rng = np.random.default_rng(eval_seed)
    states, student_states = teacher_eps.states, teacher_eps.view_states
    if len(states) > max_agreement_states:
        chosen = rng.choice(len(states), max_agreement_states, replace=False)
        states = states[chosen]
        student_states = None if student_states is None else student_states[chosen]
    probe, student_probe = states[:1], (states if student_states is None else student_states)[:1]
    student.reset()  # a recurrent student's state held the evaluation's batch; the latency probe is one observation
    latency = {
        "teacher_torch": measure_latency(lambda: teacher_act(probe), calls=latency_calls),
        "teacher_sb3_predict": measure_latency(lambda: teacher.sb3_predict(probe), calls=latency_calls),
        "student_torch": measure_latency(lambda: student.act(student_probe), calls=latency_calls),
    }
    student.reset()
    teacher_stats, student_stats = ReturnStats.of_episodes(teacher_eps), ReturnStats.of_episodes(student_eps)
    if student.recurrent:  # the teacher's states are not episodes the student followed from their start
        report_agreement = {"states": 0}
    else:
        report_agreement = agreement(teacher, student, states, student_states)
    floor = None
    if noise_floor and not student.recurrent:
        error = (1.0 - report_agreement["accuracy"] if teacher.strategy.discrete
                 else float(np.sqrt(report_agreement["action_mse"])))
        floor = teacher_noise_floor(teacher, seeds, teacher_eps, n_envs=n_envs, error=error, run=run, noise_seed=eval_seed)
    report = Comparison(env=teacher.env_spec.env_id, seeds=tuple(seeds), teacher=teacher_stats, student=student_stats,
                        teacher_actor_params=teacher.actor_parameter_count(), student_params=student.parameter_count(),
                        ratio=return_ratio(student_stats.mean, teacher_stats.mean),
                        ratio_ci95=ratio_bootstrap_ci(student_eps.returns, teacher_eps.returns), agreement=report_agreement,
                        latency_us=latency, teacher_noise_floor=floor)
    return report
