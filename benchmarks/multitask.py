"""A multi-task student against its teachers: one 2x64 student (first layer per task, second shared) for teachers
of different envs, spaces and families, evaluated per task on the same seeds as each teacher, with its parameters
beside the sum of the single-task 2x64 students. Appends to benchmarks/results/multitask.json, one record per seed.

    python benchmarks/multitask.py                      # ppo CartPole + ppo Pendulum + ppo HalfCheetahBullet, seeds 0-2
    python benchmarks/multitask.py --seeds 0 --steps 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from one_recipe import EVAL_SEED, ROOT, discover_teachers, teacher_episodes  # benchmarks/one_recipe.py

from policykd.artifacts import atomic_write_json, package_versions
from policykd.config import load_config
from policykd.multitask import distill_multitask, evaluate_multitask, single_task_parameter_counts
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ["ppo/CartPole-v1_1", "ppo/Pendulum-v1_1", "ppo/HalfCheetahBulletEnv-v0_1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=TASKS)
    parser.add_argument("--steps", type=int, default=20_000, help="labelled steps per task")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--results", type=Path, default=RESULTS / "multitask.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    found = discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents")
    teachers = [load_teacher(found[name]) for name in args.teachers]
    references = [teacher_episodes(t, args.episodes) for t in teachers]
    records = json.loads(args.results.read_text()) if args.results.exists() else []
    done = {(tuple(r["teachers"]), r["labelled_steps_per_task"], r["seed"]) for r in records}
    for seed in args.seeds:
        if (tuple(args.teachers), args.steps, seed) in done:
            continue
        config = load_config(None, {"teacher": str(found[args.teachers[0]]), "labelled_steps": args.steps, "seed": seed})
        run_dir = ROOT / "runs" / "multitask" / f"seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a run this script made and did not finish
        result = distill_multitask(teachers, config, run_dir)
        rows = evaluate_multitask(result.student, teachers, episodes=args.episodes, eval_seed=EVAL_SEED, teacher_episodes=references)
        singles = single_task_parameter_counts(teachers, tuple(config.hidden), config.activation)
        records.append({"teachers": args.teachers, "labelled_steps_per_task": args.steps, "seed": seed, "tasks": rows,
                        "parameters": result.student.parameter_count(), "single_task_parameters": singles,
                        "wall_s": result.wall_s, "decided": config.decisions(), "config": config.to_dict(),
                        "versions": package_versions()})
        atomic_write_json(args.results, records)
        print(f"seed {seed}: " + ", ".join(f"{r['env']} {r['ratio']:.3f}" for r in rows) +
              f"; {result.student.parameter_count():,} parameters vs {sum(singles):,}; {result.wall_s:.0f} s", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
