"""Distillation quality and time on the rl-zoo PPO Bullet teachers (the benchmark protocol of design.md).

For each teacher: evaluate it once on 20 fixed seeds, then for each budget (labelled env steps), data mode
(teacher-driven, DAgger) and distillation seed, distil a 2x64 student (recipe configs/distill/bench_<budget>k.yaml;
records from before the one default recipe also list the per-teacher settings they used, `env_overrides`), time
collection + training,
and evaluate the student on the same 20 seeds. Results are appended to benchmarks/results/distill_zoo.json after every run;
records already there are skipped, so an interrupted benchmark resumes.

    python benchmarks/distill_zoo.py                       # everything (about 35 minutes on 2 cores)
    python benchmarks/distill_zoo.py --envs ReacherBulletEnv-v0 --budgets 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from policykd.artifacts import atomic_write_json, package_versions
from policykd.config import load_config
from policykd.pipeline import distill_and_evaluate
from policykd.rollout import run_episodes
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

ZOO = default_teachers_dir() / "rl-zoo"  # $POLICYKD_TEACHERS/rl-zoo, else ../shared/teachers/rl-zoo
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "distill"
RESULTS = Path(__file__).resolve().parent / "results"
EVAL_SEED = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["HalfCheetahBulletEnv-v0", "HopperBulletEnv-v0", "ReacherBulletEnv-v0"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[10_000, 50_000])
    parser.add_argument("--modes", nargs="+", default=["teacher", "dagger"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--zoo", type=Path, default=ZOO)
    parser.add_argument("--results", type=Path, default=RESULTS / "distill_zoo.json")
    args = parser.parse_args()

    records = json.loads(args.results.read_text()) if args.results.exists() else []
    done = {(r["env"], r["data_mode"], r["labelled_steps"], r["seed"]) for r in records}
    seeds = [EVAL_SEED + i for i in range(args.episodes)]
    for env_id in args.envs:
        teacher = load_teacher(args.zoo / "ppo" / f"{env_id}_1")
        torch.set_num_threads(1)
        teacher_eps = run_episodes(teacher.act, teacher.env_spec, seeds)
        print(f"{env_id}: teacher {teacher_eps.returns.mean():.1f} +- {teacher_eps.returns.std():.1f}", flush=True)
        for budget in args.budgets:
            for mode in args.modes:
                for seed in args.seeds:
                    if (env_id, mode, budget, seed) in done:
                        continue
                    run_name = f"bench__{env_id}__{mode}__{budget}__{seed}"
                    out = Path("runs") / "bench"
                    shutil.rmtree(out / run_name, ignore_errors=True)
                    recipe = RECIPES / f"bench_{budget // 1000}k.yaml"
                    config = load_config(recipe if recipe.exists() else None, {
                        "teacher": str(teacher.source.path), "seed": seed, "data_mode": mode, "labelled_steps": budget,
                        "out_dir": str(out), "run_name": run_name, "eval_seed": EVAL_SEED, "eval_episodes": args.episodes,
                        "latency_calls": 200})
                    result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=teacher_eps, quiet=True)
                    report = result.report.to_json()
                    record = {
                        "env": env_id, "teacher": f"rl-zoo/ppo/{env_id}", "data_mode": mode, "seed": seed,
                        "labelled_steps": budget, "teacher_return": report["teacher"]["mean"],
                        "teacher_return_std": report["teacher"]["std"], "student_return": report["student"]["mean"],
                        "student_return_std": report["student"]["std"], "student_return_iqm": report["student"]["iqm"],
                        "student_return_ci95": [report["student"]["ci95_low"], report["student"]["ci95_high"]],
                        "ratio": report["ratio"], "student_params": report["student"]["params"],
                        "teacher_actor_params": report["teacher"]["actor_params"], "wall_s": result.distillation.wall_s,
                        "agreement_kl": report["agreement"]["kl"], "agreement_action_mse": report["agreement"]["action_mse"],
                        "eval_seeds": [EVAL_SEED, EVAL_SEED + args.episodes - 1], "recipe": recipe.name if recipe.exists() else None,
                        "config": config.to_dict(),
                        "versions": package_versions(),
                    }
                    records.append(record)
                    atomic_write_json(args.results, records)
                    print(f"{env_id} {mode:7s} {budget:6d} seed {seed}: ratio {record['ratio']:.3f} "
                          f"({record['student_return']:.1f} vs {record['teacher_return']:.1f}) in {result.distillation.wall_s:.1f} s", flush=True)
                    shutil.rmtree(out / run_name, ignore_errors=True)


if __name__ == "__main__":
    main()
