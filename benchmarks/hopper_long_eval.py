"""Hopper students on 100 evaluation episodes instead of 20: how often teacher and student fall.

The benchmark's 20 seeds (1000000-1000019) decide the ratio by one or two falls. This re-runs the 50k DAgger recipe
of benchmarks/distill_zoo.py (same seeds, hence the same students bit for bit) and evaluates teacher and students on
seeds 1000000-1000099, counting episodes that end before the 1000-step limit (falls). Results:
benchmarks/results/hopper_long_eval.json.

    python benchmarks/hopper_long_eval.py [--budget 50000] [--episodes 100]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from policykd.artifacts import atomic_write_json, package_versions
from policykd.config import load_config
from policykd.distill import distill
from policykd.rollout import run_episodes
from policykd.teachers import load_teacher
from policykd.tracking import Tracker
from policykd.zoo import default_teachers_dir

ZOO = default_teachers_dir() / "rl-zoo"  # $POLICYKD_TEACHERS/rl-zoo, else ../shared/teachers/rl-zoo
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "distill"
RESULTS = Path(__file__).resolve().parent / "results" / "hopper_long_eval.json"
EVAL_SEED = 1_000_000
TIME_LIMIT = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    teacher = load_teacher(ZOO / "ppo" / "HopperBulletEnv-v0_1")
    torch.set_num_threads(1)
    seeds = [EVAL_SEED + i for i in range(args.episodes)]
    teacher_eps = run_episodes(teacher.act, teacher.env_spec, seeds)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            config = load_config(RECIPES / f"bench_{args.budget // 1000}k.yaml", {
                "teacher": str(teacher.source.path), "seed": seed, "data_mode": "dagger", "labelled_steps": args.budget,
                "out_dir": out, "run_name": "run", "eval_seed": EVAL_SEED})
            student = distill(config, teacher=teacher, tracker=Tracker(None, quiet=True)).student
            episodes = run_episodes(student.act,
                                    teacher.env_spec, seeds)
            shutil.rmtree(out, ignore_errors=True)
        row = {"seed": seed, "student_returns": episodes.returns.tolist(),
               "ratio_first_20": float(episodes.returns[:20].mean() / teacher_eps.returns[:20].mean()),
               "ratio_all": float(episodes.returns.mean() / teacher_eps.returns.mean()),
               "falls_first_20": int((episodes.lengths[:20] < TIME_LIMIT).sum()),
               "falls_all": int((episodes.lengths < TIME_LIMIT).sum())}
        rows.append(row)
        print(f"seed {seed}: ratio {row['ratio_first_20']:.3f} on 20 episodes, {row['ratio_all']:.3f} on {len(seeds)}; "
              f"falls {row['falls_first_20']} / {row['falls_all']}", flush=True)
    atomic_write_json(RESULTS, {
        "env": "HopperBulletEnv-v0", "teacher": "rl-zoo/ppo/HopperBulletEnv-v0", "labelled_steps": args.budget,
        "data_mode": "dagger", "eval_seeds": [seeds[0], seeds[-1]], "teacher_returns": teacher_eps.returns.tolist(),
        "teacher_falls_first_20": int((teacher_eps.lengths[:20] < TIME_LIMIT).sum()),
        "teacher_falls_all": int((teacher_eps.lengths < TIME_LIMIT).sum()),
        "students": rows, "versions": package_versions()})


if __name__ == "__main__":
    main()
