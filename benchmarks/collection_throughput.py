"""Labelled collection throughput of the local backend as a fraction of the raw env's, side by side in one run.

For each pybullet teacher and env count n, three rows on n envs, each env in its own worker process:
- raw: policykd's vector env under random actions, no policy;
- labelled, one labelling process: `policykd.rollout.collect` driving that vector env, the teacher's forward in the
  parent for all n envs at once (the local backend until 2026-11);
- labelled, local backend: `policykd.collectors.LocalCollector`, n worker processes, each stepping one env and
  labelling its own states (what `distill` and `collect` run).
The fractions labelled / raw are what labelling costs. Writes benchmarks/results/collection_throughput.json with
the machine's load average beside the numbers.

    python benchmarks/collection_throughput.py                      # 3 ppo Bullet teachers, 2, 4 and 8 envs
    python benchmarks/collection_throughput.py --envs 2 --steps 4000
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from env_throughput import raw_env_throughput  # benchmarks/env_throughput.py
from one_recipe import ROOT, discover_teachers  # benchmarks/one_recipe.py

from policykd.artifacts import atomic_write_json, package_versions
from policykd.collectors import LocalCollector
from policykd.config import DistillConfig
from policykd.rollout import collect
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

TEACHERS = ["ppo/HalfCheetahBulletEnv-v0_1", "ppo/HopperBulletEnv-v0_1", "ppo/ReacherBulletEnv-v0_1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=TEACHERS)
    parser.add_argument("--envs", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=8_000)
    args = parser.parse_args()

    torch.set_num_threads(1)
    paths = discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents")
    rows = []
    for name in args.teachers:
        teacher = load_teacher(paths[name])
        for n_envs in args.envs:
            raw = raw_env_throughput(teacher.env_spec, steps=args.steps, n_envs=n_envs)
            start = time.perf_counter()
            collect(teacher, steps=args.steps, beta=1.0, seed=0, n_envs=n_envs)
            one_process = args.steps / (time.perf_counter() - start)
            start = time.perf_counter()
            LocalCollector(teacher, DistillConfig(n_envs=n_envs, label_every=1)).collect_round(
                steps=args.steps, beta=1.0, seed=0, round_index=0, episode_offset=0, student=None)
            local = args.steps / (time.perf_counter() - start)
            rows.append({"teacher": name, "env": teacher.env_spec.env_id, "n_envs": n_envs, "raw_steps_per_s": raw,
                         "one_labelling_process_steps_per_s": one_process, "one_labelling_process_fraction": one_process / raw,
                         "local_backend_steps_per_s": local, "local_backend_fraction": local / raw})
            print(f"{name:32s} {n_envs} envs: raw {raw:6.0f}, one labelling process {one_process:6.0f} ({one_process / raw:.2f}), "
                  f"local backend {local:6.0f} steps/s ({local / raw:.2f})", flush=True)
    atomic_write_json(ROOT / "benchmarks" / "results" / "collection_throughput.json", {
        "steps": args.steps, "rows": rows, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
        "versions": package_versions()})


if __name__ == "__main__":
    main()
