"""Labelled collection throughput, local backend against Ray, side by side in one run on one pybullet teacher.

Rows: the raw env (random actions, policykd's vector env), the local backend (LocalCollector: 1 and n_envs worker
processes, one env each, each labelling its own states), and the Ray backend with 1 and 2 rollout actors (each
with n_envs // workers envs, so every row steps the same number of envs). Ray's overhead is the ratio of its steps/s to the local backend's at the same env count. Writes
benchmarks/results/ray_throughput.json. The machine's other load is recorded (os.getloadavg) beside the numbers.

    python benchmarks/ray_throughput.py                       # ppo HalfCheetahBullet, 2 envs, 6,000 steps per row
"""

from __future__ import annotations

import argparse
import os
import time

import ray
import torch
from env_throughput import raw_env_throughput  # benchmarks/env_throughput.py
from one_recipe import ROOT, discover_teachers  # benchmarks/one_recipe.py

from policykd.artifacts import atomic_write_json, package_versions
from policykd.collectors import LocalCollector
from policykd.config import DistillConfig
from policykd.ray_backend import RayCollector
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="ppo/HalfCheetahBulletEnv-v0_1")
    parser.add_argument("--steps", type=int, default=6_000)
    parser.add_argument("--envs", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # both rows' actors fit (one CPU each)
    path = discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents")[args.teacher]
    teacher = load_teacher(path)
    rows = [{"backend": "raw env (random actions)", "envs": args.envs,
             "steps_per_s": raw_env_throughput(teacher.env_spec, steps=args.steps, n_envs=args.envs)}]
    for workers in (1, args.envs):
        start = time.perf_counter()
        LocalCollector(teacher, DistillConfig(n_envs=workers, label_every=1)).collect_round(
            steps=args.steps, beta=1.0, seed=0, round_index=0, episode_offset=0, student=None)
        rows.append({"backend": f"local, {workers} worker{'s' if workers > 1 else ''}", "envs": workers,
                     "steps_per_s": args.steps / (time.perf_counter() - start)})
    for workers in (1, 2):
        config = DistillConfig(teacher=str(path), backend="ray", num_workers=workers, n_envs=max(args.envs // workers, 1),
                               label_every=1)
        collector = RayCollector(config)
        collector.collect_round(steps=200 * workers, beta=1.0, seed=1, round_index=0, episode_offset=0, student=None)  # warm up
        start = time.perf_counter()
        collector.collect_round(steps=args.steps, beta=1.0, seed=0, round_index=0, episode_offset=0, student=None)
        rows.append({"backend": f"ray, {workers} worker{'s' if workers > 1 else ''}", "envs": workers * config.n_envs,
                     "steps_per_s": args.steps / (time.perf_counter() - start)})
        collector.close()
    local = rows[2]["steps_per_s"]  # the local backend on as many envs as the Ray rows
    for row in rows:
        row["ratio_to_local"] = row["steps_per_s"] / local
        print(f"{row['backend']:26s} {row['envs']} envs: {row['steps_per_s']:7.0f} labelled steps/s ({row['ratio_to_local']:.2f}x local)", flush=True)
    atomic_write_json(ROOT / "benchmarks" / "results" / "ray_throughput.json", {
        "teacher": args.teacher, "steps": args.steps, "rows": rows, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
        "versions": package_versions()})


if __name__ == "__main__":
    main()
