"""Labelled collection throughput of the local backend as a fraction of the raw env's, side by side in one run.

For each pybullet teacher and env count n, three rows on n envs, each env in its own worker process:
- raw: policykd's vector env under random actions, no policy;
- labelled, one labelling process: `policykd.rollout.collect` driving that vector env, the teacher's forward in the
  parent for all n envs at once (the local backend until 2026-11);
- labelled, local backend: `policykd.collectors.LocalCollector`, n worker processes, each stepping one env and
  labelling its own states (what `distill` and `collect` run).
The fractions labelled / raw (medians of --repeats interleaved measurements) are what labelling costs. Writes benchmarks/results/collection_throughput.json with
the machine's load average beside the numbers.

    python benchmarks/collection_throughput.py                      # 3 ppo Bullet teachers, 2, 4 and 8 envs, 3 repeats
    python benchmarks/collection_throughput.py --envs 1 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
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
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row; the medians are reported")
    args = parser.parse_args()

    torch.set_num_threads(1)
    paths = discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents")
    rows = []
    for name in args.teachers:
        teacher = load_teacher(paths[name])
        for n_envs in args.envs:
            rates: dict[str, list[float]] = {"raw": [], "one_labelling_process": [], "local_backend": []}
            for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits all three alike
                rates["raw"].append(raw_env_throughput(teacher.env_spec, steps=args.steps, n_envs=n_envs))
                start = time.perf_counter()
                collect(teacher, steps=args.steps, beta=1.0, seed=0, n_envs=n_envs)
                rates["one_labelling_process"].append(args.steps / (time.perf_counter() - start))
                start = time.perf_counter()
                LocalCollector(teacher, DistillConfig(n_envs=n_envs, label_every=1)).collect_round(
                    steps=args.steps, beta=1.0, seed=0, round_index=0, episode_offset=0, student=None)
                rates["local_backend"].append(args.steps / (time.perf_counter() - start))
            median = {k: float(np.median(v)) for k, v in rates.items()}
            row = {"teacher": name, "env": teacher.env_spec.env_id, "n_envs": n_envs, "repeats": args.repeats,
                   "raw_steps_per_s": median["raw"], "raw_runs": rates["raw"]}
            for key in ("one_labelling_process", "local_backend"):
                row.update({f"{key}_steps_per_s": median[key], f"{key}_fraction": median[key] / median["raw"],
                            f"{key}_runs": rates[key]})
            rows.append(row)
            print(f"{name:32s} {n_envs} envs: raw {median['raw']:6.0f}, one labelling process "
                  f"{median['one_labelling_process']:6.0f} ({row['one_labelling_process_fraction']:.2f}), local backend "
                  f"{median['local_backend']:6.0f} steps/s ({row['local_backend_fraction']:.2f}); medians of {args.repeats}",
                  flush=True)
    atomic_write_json(ROOT / "benchmarks" / "results" / "collection_throughput.json", {
        "steps": args.steps, "rows": rows, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
        "versions": package_versions()})


if __name__ == "__main__":
    main()
