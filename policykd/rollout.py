"""Vectorised collection: teacher-driven, student-driven or beta-mixed, every visited state labelled by the teacher.

gymnasium 1.x vector envs autoreset on the *next* step: after an env reports done, the following step()
ignores its action and returns the reset observation. That transition is masked (not recorded, not counted).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from policykd.distributions import PARAM_NAMES
from policykd.env_factory import EnvSpec
from policykd.students import Student
from policykd.teachers import Teacher

ACTOR_TEACHER, ACTOR_STUDENT = 0, 1


def make_vector_env(spec: EnvSpec, n_envs: int, *, max_episode_steps: int | None = None) -> gym.vector.VectorEnv:
    """n_envs copies of the env; one worker process each when n_envs > 1. max_episode_steps replaces the
    registered time limit when given."""
    factories = [functools.partial(spec.make, max_episode_steps=max_episode_steps) for _ in range(n_envs)]
    if n_envs == 1:
        return gym.vector.SyncVectorEnv(factories)
    return gym.vector.AsyncVectorEnv(factories, context="fork")


def collect(teacher: Teacher, *, steps: int, beta: float, seed: int, n_envs: int = 2, student: Student | None = None,
            round_index: int = 0, episode_offset: int = 0, sample_actions: bool = True, noise_scale: float = 1.0,
            max_episode_steps: int | None = None, on_progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run `steps` labelled env steps; at each step each env is driven by the teacher with probability beta,
    else by the student. Returns buffer fields (see buffer.py), each with first dimension `steps`.

    sample_actions: the acting policy samples from its distribution (seeded) instead of taking its mode,
    with its std multiplied by noise_scale (distributions.DistParams.sample). max_episode_steps, when given,
    truncates collection episodes earlier than the env's own time limit (more distinct starts per labelled step).
    """
    if beta < 1.0 and student is None:
        raise ValueError("a student is needed when beta < 1")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    envs = make_vector_env(teacher.env_spec, n_envs, max_episode_steps=max_episode_steps)
    rows: dict[str, list[np.ndarray]] = {f: [] for f in ("obs", "value", "reward", "terminated", "truncated", "episode_id", "actor")}
    params: dict[str, list[np.ndarray]] = {n: [] for n in PARAM_NAMES[teacher.family]}
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(n_envs)])
        after_done = np.zeros(n_envs, dtype=bool)
        episode_ids = episode_offset + np.arange(n_envs)
        next_episode = episode_offset + n_envs
        recorded = 0
        while recorded < steps:
            dist, value = teacher.dist_and_value(obs)
            action = dist.sample(generator, noise_scale=noise_scale) if sample_actions else dist.mode()
            by_teacher = rng.random(n_envs) < beta
            if not by_teacher.all():
                with torch.no_grad():
                    student_dist, _ = student(torch.as_tensor(obs, dtype=torch.float32))
                student_action = student_dist.sample(generator, noise_scale=noise_scale) if sample_actions else student_dist.mode()
                mask = torch.as_tensor(by_teacher).view(-1, *([1] * (action.dim() - 1)))
                action = torch.where(mask, action, student_action)
            next_obs, reward, terminated, truncated, _ = envs.step(teacher.to_env_action(action))
            keep = np.flatnonzero(~after_done)[: steps - recorded]
            rows["obs"].append(obs[keep])
            rows["value"].append(value.numpy()[keep])
            rows["reward"].append(reward[keep])
            rows["terminated"].append(terminated[keep])
            rows["truncated"].append(truncated[keep])
            rows["episode_id"].append(episode_ids[keep])
            rows["actor"].append(np.where(by_teacher, ACTOR_TEACHER, ACTOR_STUDENT)[keep])
            for name in params:
                params[name].append(dist[name].numpy()[keep])
            recorded += len(keep)
            if on_progress is not None:
                on_progress(len(keep))
            restarted = np.flatnonzero(after_done)
            episode_ids[restarted] = next_episode + np.arange(len(restarted))
            next_episode += len(restarted)
            after_done = terminated | truncated
            obs = next_obs
    finally:
        envs.close()
    out = {k: np.concatenate(v) for k, v in rows.items()}
    out.update({f"dist_{k}": np.concatenate(v) for k, v in params.items()})
    out["round"] = np.full(steps, round_index, dtype=np.int32)
    return out


def raw_env_throughput(spec: EnvSpec, *, steps: int, n_envs: int = 2, seed: int = 0) -> float:
    """Env steps per second of the same vector env under random actions, without any policy."""
    envs = make_vector_env(spec, n_envs)
    try:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
        start = time.perf_counter()
        for _ in range(steps // n_envs):
            envs.step(envs.action_space.sample())
        return (steps // n_envs) * n_envs / (time.perf_counter() - start)
    finally:
        envs.close()
