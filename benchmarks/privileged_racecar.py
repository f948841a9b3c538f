"""A privileged teacher, sensor-only students (issue 14): the SAC racecar teachers (agents/) distilled into students
that see the teacher's own observation (the reference), the `rays` view, and `rays*3` (its last three frames).

Per env and student view: the default recipe with `student_view`, the teacher and the student on the same 50
seeded tracks (from 1,000,000), lap completion (the env's is_success) and return of both, the labelled steps, the
distillation wall time, the student's parameters and its numpy batch-1 latency. Records are appended to
benchmarks/results/privileged_racecar.json after every run and skipped when already there, so the benchmark
resumes across sittings.

    python benchmarks/privileged_racecar.py                                  # both racecar envs, 3 views, 50k
    python benchmarks/privileged_racecar.py --envs RacecarObstacles-v0 --views rays --budget 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from one_recipe import EVAL_SEED, ROOT, teacher_episodes  # benchmarks/one_recipe.py

from policykd.artifacts import atomic_write_json, package_versions
from policykd.config import load_config
from policykd.evaluate import ReturnStats
from policykd.latency import measure_latency
from policykd.pipeline import distill_and_evaluate
from policykd.runtime import load as load_numpy_policy
from policykd.teachers import load_teacher

RESULTS = Path(__file__).resolve().parent / "results" / "privileged_racecar.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["RacecarObstacles-v0", "RacecarTrack-v0"])
    parser.add_argument("--views", nargs="+", default=["", "rays", "rays*3"], help='"" is the teacher\'s own view')
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()

    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"teachers": {}, "runs": []}
    done = {(r["env"], r["student_view"], r["labelled_steps"], r["seed"]) for r in results["runs"]}
    for env in args.envs:
        path = ROOT / "agents" / f"sac-{env}"
        teacher, reference = None, None
        for view in args.views:
            if (env, view, args.budget, args.seed) in done:
                continue
            if teacher is None:
                teacher = load_teacher(path)
                reference = teacher_episodes(teacher, args.episodes)
                results["teachers"][env] = ReturnStats.of_episodes(reference).to_json()
            record = run_one(args, env, path, teacher, reference, view)
            results["runs"].append(record)
            atomic_write_json(RESULTS, results)
            print(f"{env} view {view or 'teacher'}: laps {record['student_lap_rate']:.0%} vs {record['teacher_lap_rate']:.0%}, "
                  f"ratio {record['ratio']:.3f}, {record['wall_s']:.0f} s", flush=True)


def run_one(args, env: str, path: Path, teacher, reference, view: str) -> dict:
    out = ROOT / "runs" / "privileged_racecar"
    run_name = f"{env}__{view.replace('*', 'x') or 'teacher-view'}__{args.budget}__{args.seed}"
    shutil.rmtree(out / run_name, ignore_errors=True)  # a run this script made and did not finish
    config = load_config(None, {"teacher": str(path), "student_view": view, "labelled_steps": args.budget, "seed": args.seed,
                                "out_dir": str(out), "run_name": run_name, "eval_seed": EVAL_SEED,
                                "eval_episodes": args.episodes, "latency_calls": 200})
    result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=None if view else reference, quiet=True)
    report = result.report
    policy = load_numpy_policy(result.student_dir)
    probe = np.zeros(result.distillation.student.spec.obs_dim, dtype=np.float32)
    record = {
        "env": env, "student_view": view, "labelled_steps": args.budget, "seed": args.seed, "episodes": args.episodes,
        "teacher_lap_rate": report.teacher.success_rate, "student_lap_rate": report.student.success_rate,
        "lap_rate_ratio": report.student.success_rate / max(report.teacher.success_rate, 1e-9),
        "teacher_return": report.teacher.mean, "student_return": report.student.mean, "ratio": report.ratio,
        "wall_s": result.distillation.wall_s, "student_params": report.student_params,
        "numpy_latency_us": measure_latency(lambda: policy(probe), calls=2_000),
        "config": config.to_dict(), "versions": package_versions(),
    }
    shutil.rmtree(out / run_name, ignore_errors=True)
    return record


if __name__ == "__main__":
    main()
