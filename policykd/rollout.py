"""Vectorised collection: teacher-driven, student-driven or beta-mixed, every visited state labelled by the teacher.

gymnasium 1.x vector envs autoreset on the *next* step: after an env reports done, the following step()
ignores its action and returns the reset observation. That transition is masked (not recorded, not counted).
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from policykd.distributions import PARAM_NAMES
from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd.students import Student
from policykd.teachers import Teacher
from policykd.views import INFO_KEY

ACTOR_TEACHER, ACTOR_STUDENT = 0, 1


def make_vector_env(spec: EnvSpec, n_envs: int, *, max_episode_steps: int | None = None,
                    episode_cap: int | None = None) -> gym.vector.VectorEnv:
    """n_envs copies of the env; one worker process each when n_envs > 1. max_episode_steps replaces the
    registered time limit when given; episode_cap truncates outside the wrappers (EnvSpec.make)."""
    if n_envs == 1:
        return gym.vector.SyncVectorEnv([functools.partial(spec.make, max_episode_steps=max_episode_steps, episode_cap=episode_cap)])
    factories = [functools.partial(_make_in_worker, spec, max_episode_steps, episode_cap) for _ in range(n_envs)]
    return gym.vector.AsyncVectorEnv(factories, context="fork")


def _make_in_worker(spec: EnvSpec, max_episode_steps: int | None, episode_cap: int | None) -> gym.Env:
    """Build the env inside a worker process that leaves Ctrl-C (SIGINT) to the parent, which then stops the
    workers with SIGTERM (silent, the default action), so they never print tracebacks of their own.
    (AsyncVectorEnv also calls the first factory in the parent, for the spaces: the parent keeps its handler.)"""
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, inherited through fork
    return spec.make(max_episode_steps=max_episode_steps, episode_cap=episode_cap)


def close_vector_env(envs: gym.vector.VectorEnv, *, failed: bool) -> None:
    """Close `envs`; after a failure or an interrupt, terminate the workers (SIGTERM, silent) instead of waiting for
    them. Not gymnasium's close(terminate=True): it first waits on a pending step, which raises again (with
    tracebacks from __del__ and the other workers) when a worker has died."""
    if not (failed and isinstance(envs, gym.vector.AsyncVectorEnv)):
        envs.close()
        return
    for process in envs.processes:
        if process.is_alive():
            process.terminate()
    for process in envs.processes:
        process.join(timeout=5)
    for pipe in envs.parent_pipes:
        if pipe is not None:
            pipe.close()
    envs.closed = True


_WORKER_GONE = (EOFError, BrokenPipeError, ConnectionResetError)  # a vector env's pipe to a worker that died


def _worker_died(env_id: str) -> PolicyKDError:
    return PolicyKDError(f"an env worker process of {env_id} died (killed, out of memory, or the simulator crashed); "
                         "run again, with a smaller --n-envs if memory is short")


def collect(teacher: Teacher, *, steps: int, beta: float, seed: int, n_envs: int = 2, student: Student | None = None,
            round_index: int = 0, episode_offset: int = 0, sample_actions: bool = True, noise_scale: float = 1.0,
            max_episode_steps: int | None = None, label_every: int = 1, student_view: str = "",
            student_std_from_teacher: bool = False,
            on_progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run `steps` labelled env steps on n_envs envs in lockstep, labelled in this process; at each step each env is
    driven by the teacher with probability beta, else by the student. Returns buffer fields (see buffer.py), each
    with first dimension `steps`. (policykd.collectors runs this in one process per env, or on Ray actors.)

    sample_actions: the acting policy samples from its distribution (seeded) instead of taking its mode,
    with its std multiplied by noise_scale (distributions.DistParams.sample). student_std_from_teacher: a sampling
    student draws around its own means with the teacher's std at that state, for students whose loss does not train
    their std (loss mse: the untrained std head would add noise of std ~1). max_episode_steps, when given,
    truncates collection episodes earlier than the env's own time limit (more distinct starts per labelled step).
    label_every k > 1 keeps every k-th state of each episode (from a random offset per episode) and steps past the
    others unlabelled: k times the episodes, and the whole of each, per labelled step, for k times the env steps.
    student_view (policykd.views): the student sees and acts on that view of the env, stored as `student_obs`;
    the teacher labels its own observation. A recurrent student carries a state per env, from zero at each
    episode's start, through every step (also those the teacher drives).
    """
    if beta < 1.0 and student is None:
        raise ValueError("a student is needed when beta < 1")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    student_state = student.initial_state(n_envs) if student is not None and student.recurrent else None
    envs = make_vector_env(teacher.env_spec.with_view(student_view), n_envs, max_episode_steps=max_episode_steps)
    rows: dict[str, list[np.ndarray]] = {f: [] for f in ("obs", "value", "reward", "terminated", "truncated", "episode_id",
                                                         "actor", "action", "next_obs")}
    if student_view:
        rows["student_obs"] = []
    params: dict[str, list[np.ndarray]] = {n: [] for n in PARAM_NAMES[teacher.family]}
    try:
        obs, info = envs.reset(seed=[seed + i for i in range(n_envs)])
        after_done = np.zeros(n_envs, dtype=bool)
        episode_ids = episode_offset + np.arange(n_envs)
        # label_every: the step within each episode, and the episode's random labelling offset in [0, label_every)
        episode_step = np.zeros(n_envs, dtype=np.int64)
        offset = rng.integers(label_every, size=n_envs) if label_every > 1 else np.zeros(n_envs, dtype=np.int64)
        next_episode = episode_offset + n_envs
        recorded = 0
        while recorded < steps:
            _check_finite_rows(obs, "an observation the env returned", teacher.env_spec.env_id, episode_ids, episode_step,
                               "check the env and its wrappers")
            dist, value = teacher.dist_and_value(obs)
            outputs = np.concatenate([value.numpy().reshape(n_envs, -1), *(dist[n].numpy().reshape(n_envs, -1) for n in params)], axis=1)
            _check_finite_rows(outputs, "the teacher's output (action distribution or value) on a finite observation",
                               teacher.env_spec.env_id, episode_ids, episode_step, "check the teacher's weights and observation normaliser")
            action = dist.sample(generator, noise_scale=noise_scale) if sample_actions else dist.mode()
            by_teacher = rng.random(n_envs) < beta
            seen = info[INFO_KEY] if student_view else obs  # what the student sees
            if student_state is not None:  # a recurrent student sees every step, whoever acts
                with torch.no_grad():
                    student_dist, _, student_state = student.step(torch.as_tensor(seen, dtype=torch.float32), student_state)
            if not by_teacher.all():
                if student_state is None:
                    with torch.no_grad():
                        student_dist, _ = student(torch.as_tensor(seen, dtype=torch.float32))
                if student_std_from_teacher:
                    student_dist = student_dist.with_std_of(dist)
                student_action = student_dist.sample(generator, noise_scale=noise_scale) if sample_actions else student_dist.mode()
                mask = torch.as_tensor(by_teacher).view(-1, *([1] * (action.dim() - 1)))
                action = torch.where(mask, action, student_action)
            env_action = teacher.to_env_action(action)
            next_obs, reward, terminated, truncated, info = envs.step(env_action)
            labelled = ~after_done & ((episode_step - offset) % label_every == 0)
            keep = np.flatnonzero(labelled)[: steps - recorded]
            rows["obs"].append(obs[keep].astype(np.float32))
            rows["value"].append(value.numpy()[keep])
            rows["reward"].append(reward[keep])
            rows["terminated"].append(terminated[keep])
            rows["truncated"].append(truncated[keep])
            rows["episode_id"].append(episode_ids[keep])
            rows["actor"].append(np.where(by_teacher, ACTOR_TEACHER, ACTOR_STUDENT)[keep])
            rows["action"].append(np.asarray(env_action, dtype=np.float32)[keep])
            rows["next_obs"].append(np.asarray(next_obs, dtype=np.float32)[keep])
            if student_view:
                rows["student_obs"].append(np.asarray(seen, dtype=np.float32)[keep])
            for name in params:
                params[name].append(dist[name].numpy()[keep])
            recorded += len(keep)
            if on_progress is not None:
                on_progress(len(keep))
            restarted = np.flatnonzero(after_done)
            if student_state is not None:
                student_state[restarted] = 0.0  # those envs were reset by this step: a new episode
            episode_ids[restarted] = next_episode + np.arange(len(restarted))
            next_episode += len(restarted)
            episode_step += 1
            episode_step[restarted] = 0
            if label_every > 1:
                offset[restarted] = rng.integers(label_every, size=len(restarted))
            after_done = terminated | truncated
            obs = next_obs
    except _WORKER_GONE as e:
        close_vector_env(envs, failed=True)
        raise _worker_died(teacher.env_spec.env_id) from e
    except BaseException:
        close_vector_env(envs, failed=True)
        raise
    close_vector_env(envs, failed=False)
    out = {name: np.concatenate(parts) for name, parts in rows.items()}
    out.update({f"dist_{name}": np.concatenate(parts) for name, parts in params.items()})
    out["round"] = np.full(steps, round_index, dtype=np.int32)
    return out


def _check_finite_rows(values: np.ndarray, what: str, env_id: str, episode_ids: np.ndarray, episode_step: np.ndarray,
                       fix: str) -> None:
    """One-line PolicyKDError naming the first env whose row of values [n_envs, ...] holds NaN or inf."""
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64).reshape(len(values), -1)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PolicyKDError(f"{what} is NaN or inf on {env_id} (episode {int(episode_ids[i])}, step {int(episode_step[i])}); "
                            f"{fix}")


UNLIMITED_EPISODE_CAP = 10_000  # evaluation steps per episode of an env registered without a time limit
_capped_envs: set[str] = set()


def evaluation_time_limit(spec: EnvSpec) -> int | None:
    """None (the env's own time limit) when the env has one; else UNLIMITED_EPISODE_CAP, said once per env id: an
    env registered without max_episode_steps can run an episode of a good policy for ever (evaluation hung at 0/N)."""
    if spec.time_limit() is not None:
        return None
    if spec.env_id not in _capped_envs:
        _capped_envs.add(spec.env_id)
        from policykd.tracking import console

        console.print(f"note: {spec.env_id} has no time limit (max_episode_steps); evaluation episodes stop after "
                      f"{UNLIMITED_EPISODE_CAP:,} steps (register the env with max_episode_steps to choose)", highlight=False)
    return UNLIMITED_EPISODE_CAP


ActFn = Callable[[np.ndarray], np.ndarray]  # raw obs [B, obs_dim] -> env actions [B, A] (or [B] ints)


@dataclass
class Episodes:
    returns: np.ndarray  # [n_episodes] float64
    lengths: np.ndarray  # [n_episodes] int64
    states: np.ndarray   # [n_states, obs_dim] float32, every state the policy acted in
    successes: np.ndarray | None = None  # [n_episodes] bool, the env's final info["is_success"] where it reports one
    terminated: np.ndarray | None = None  # [n_episodes] bool, the env ended the episode before its time limit
    view_states: np.ndarray | None = None  # [n_states, ...] float32, a student view of the same states (run with view=)
    last_rewards: np.ndarray | None = None  # [n_episodes] float64, the reward of each episode's last step
    max_earlier_rewards: np.ndarray | None = None  # [n_episodes] float64, the highest reward before it (-inf: none)

    def success_rate(self) -> float | None:
        return None if self.successes is None else float(np.mean(self.successes))

    def failures(self) -> np.ndarray:
        """[n_episodes] bool. Where the env reports info["is_success"]: a missed target. Else an episode the env
        ended before its time limit, unless its own rewards say that end was a goal: a last reward above every
        earlier one (Acrobot's 0 after -1s, +100 on a landing), or, where every reward is the same, steps that
        cost (MountainCar's -1s; CartPole's 1s pay: a fall). Anything else is a fall or crash (a Bullet walker's
        alive bonus turned -1, even on a fall forward that gains ground; -100). Without last_rewards and
        max_earlier_rewards, or after one step, every early end is a failure. All False for envs that never end
        an episode early."""
        if self.successes is not None:
            return ~np.asarray(self.successes, dtype=bool)
        if self.terminated is None:
            return np.zeros(len(self.returns), dtype=bool)
        terminated = np.asarray(self.terminated, dtype=bool)
        if self.last_rewards is None or self.max_earlier_rewards is None:
            return terminated
        return terminated & ~_ended_at_a_goal(np.asarray(self.returns, dtype=np.float64),
                                              np.asarray(self.lengths, dtype=np.int64),
                                              np.asarray(self.last_rewards, dtype=np.float64),
                                              np.asarray(self.max_earlier_rewards, dtype=np.float64))


END_REWARD_RTOL = 1e-6  # rewards within this relative distance of each other are equal (float sums, float32 envs)


def _ended_at_a_goal(returns: np.ndarray, lengths: np.ndarray, last: np.ndarray, max_earlier: np.ndarray) -> np.ndarray:
    """[n_episodes] bool: the episode's rewards say its early end was a goal (see Episodes.failures). Stricter than
    "above the mean of the earlier rewards": a Hopper falling forward can end on more than its mean step."""
    mean_earlier = (returns - last) / np.maximum(lengths - 1, 1)
    above = (last > max_earlier) & ~_same(last, max_earlier)
    constant = _same(last, max_earlier) & _same(max_earlier, mean_earlier)  # mean == max: every reward the same
    return (lengths > 1) & (above | (constant & (mean_earlier < 0)))  # one step: nothing earlier to compare with


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.isclose(a, b, rtol=END_REWARD_RTOL, atol=1e-12)


def run_episodes(act: ActFn, spec: EnvSpec, seeds: list[int], *, n_envs: int = 2, progress: Callable[[int], None] | None = None,
                 view: str = "", act_on_view: bool = True, reset: Callable[[], None] | None = None) -> Episodes:
    """One episode per seed, n_envs at a time in lockstep; `act` maps raw obs [B, obs_dim] to env actions. With
    a student view (policykd.views), `view_states` records that view of every state, and `act` gets the view
    (act_on_view, a student) or the env's observation (a teacher). reset() (a recurrent policy's) is called before
    each batch of n_envs episodes: every env of a batch starts its episode together."""
    returns, lengths, states, successes, ended, view_states, last_rewards, max_earlier = [], [], [], [], [], [], [], []
    reports_success = False
    n_envs = max(1, min(n_envs, len(seeds)))  # no worker without an episode to run
    envs = make_vector_env(spec.with_view(view), n_envs, episode_cap=evaluation_time_limit(spec))
    try:
        for start in range(0, len(seeds), n_envs):
            batch = seeds[start : start + n_envs]
            batch_seeds = batch + [batch[-1]] * (n_envs - len(batch))  # pad; padded results are dropped
            obs, info = envs.reset(seed=batch_seeds)
            if reset is not None:
                reset()
            running = np.ones(n_envs, dtype=bool)
            running[len(batch):] = False
            ep_return = np.zeros(n_envs)
            ep_length = np.zeros(n_envs, dtype=np.int64)
            ep_success = np.zeros(n_envs, dtype=bool)
            ep_terminated = np.zeros(n_envs, dtype=bool)
            ep_last_reward = np.zeros(n_envs)
            ep_max_earlier = np.full(n_envs, -np.inf)
            while running.any():
                states.append(obs[running].astype(np.float32))
                if view:
                    view_states.append(info[INFO_KEY][running].astype(np.float32))
                if not np.isfinite(obs[running]).all():
                    bad = batch_seeds[int(np.flatnonzero(running & ~np.isfinite(obs.reshape(n_envs, -1)).all(axis=1))[0])]
                    raise PolicyKDError(f"evaluation stopped: {spec.env_id} returned a NaN or inf observation on seed {bad}; "
                                        "check the env and its wrappers")
                action = act(info[INFO_KEY] if view and act_on_view else obs)
                finite_action = np.isfinite(np.asarray(action, dtype=np.float64).reshape(n_envs, -1)).all(axis=1)
                if not finite_action[running].all():
                    bad = batch_seeds[int(np.flatnonzero(running & ~finite_action)[0])]
                    raise PolicyKDError(f"evaluation stopped: the policy gave a NaN or inf action on seed {bad} (its observation "
                                        "was finite); check the policy's weights and normaliser")
                obs, reward, terminated, truncated, info = envs.step(action)
                if not np.isfinite(reward[running]).all():
                    bad = batch_seeds[int(np.flatnonzero(running & ~np.isfinite(reward))[0])]
                    raise PolicyKDError(f"evaluation stopped: {spec.env_id} returned a NaN or inf reward on seed {bad} "
                                        "after a finite observation; check the env's reward for that action")
                ep_max_earlier = np.where(running & (ep_length > 0), np.maximum(ep_max_earlier, ep_last_reward), ep_max_earlier)
                ep_last_reward = np.where(running, reward, ep_last_reward)
                ep_return += np.where(running, reward, 0.0)
                ep_length += running
                ending = running & (terminated | truncated)
                ep_terminated |= running & terminated & ~truncated
                if "is_success" in info:
                    reports_success = True
                    ep_success[ending] = np.asarray(info["is_success"], dtype=bool)[ending]
                running &= ~ending
            returns.extend(ep_return[: len(batch)])
            lengths.extend(ep_length[: len(batch)])
            successes.extend(ep_success[: len(batch)])
            ended.extend(ep_terminated[: len(batch)])
            last_rewards.extend(ep_last_reward[: len(batch)])
            max_earlier.extend(ep_max_earlier[: len(batch)])
            if progress is not None:
                progress(len(batch))
    except _WORKER_GONE as e:
        close_vector_env(envs, failed=True)
        raise _worker_died(spec.env_id) from e
    except BaseException:
        close_vector_env(envs, failed=True)
        raise
    close_vector_env(envs, failed=False)
    return Episodes(np.array(returns), np.array(lengths), np.concatenate(states),
                    np.array(successes) if reports_success else None, np.array(ended, dtype=bool),
                    np.concatenate(view_states) if view else None, np.array(last_rewards, dtype=np.float64),
                    np.array(max_earlier, dtype=np.float64))
