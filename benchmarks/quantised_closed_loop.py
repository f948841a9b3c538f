"""Quantised students judged in closed loop: each export drives the env on the teacher's evaluation seeds.

For each teacher and distillation seed, two students from the default recipe at one budget: plain, and
quantisation-aware (`quantise_aware_rounds: 1`, the last round trained through c-int8's arithmetic). Each is run as
the float torch student and through its c-int16, onnx-int8 and c-int8 exports (policykd.backends.closed_loop), on the
same seeds as the teacher; reported as return ratio against the teacher and against the float student, with the
failures (falls) per backend. An export that fails its parity check (policykd refuses to write it) is recorded as
refused, with the check's line, and not run. The plain student is the benchmarks/one_recipe.py run of the same recipe, budget, seed
and evaluation when that script kept it (runs/one_recipe/students/), so only its exports run here. Appends to benchmarks/results/quantised_closed_loop.json after every run and skips
records already there, so an interrupted benchmark resumes.

    python benchmarks/quantised_closed_loop.py                                       # the rl-zoo PPO Bullet teachers
    python benchmarks/quantised_closed_loop.py --teachers ppo/HalfCheetahBulletEnv-v0_1 --seeds 0 --episodes 20
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import results_file  # benchmarks/results_file.py
import torch
from one_recipe import EVAL_SEED, ROOT, discover_teachers, same_recipe, teacher_episodes  # benchmarks/one_recipe.py

from policykd.artifacts import atomic_write_json, package_versions
from policykd.backends import closed_loop
from policykd.config import load_config
from policykd.errors import PolicyKDError
from policykd.pipeline import distill_and_evaluate
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARK_TEACHERS = ["ppo/HalfCheetahBulletEnv-v0_1", "ppo/HopperBulletEnv-v0_1", "ppo/ReacherBulletEnv-v0_1"]
VARIANTS = {"plain": {}, "quantisation-aware": {"quantise_aware_rounds": 1}}
BACKENDS = ["c-int16", "onnx-int8", "c-int8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=BENCHMARK_TEACHERS)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--results", type=Path, default=RESULTS / "quantised_closed_loop.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    teachers = discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents")
    records = json.loads(args.results.read_text()) if args.results.exists() else []
    done = {(r["teacher"], r["variant"], r["labelled_steps"], r["seed"], r["episodes"]) for r in records}
    for name in args.teachers:
        teacher = load_teacher(teachers[name])
        reference = None
        for seed in args.seeds:
            for variant, overrides in VARIANTS.items():
                if (name, variant, args.budget, seed, args.episodes) in done:
                    continue
                reference = reference or teacher_episodes(teacher, args.episodes)
                out = ROOT / "runs" / "quantised"
                run_name = f"{name.replace('/', '__')}__{variant}__{args.budget}__{seed}"
                shutil.rmtree(out / run_name, ignore_errors=True)  # a run this script made and did not finish
                config = load_config(None, {"teacher": str(teachers[name]), "seed": seed, "labelled_steps": args.budget,
                                            "out_dir": str(out), "run_name": run_name, "eval_seed": EVAL_SEED,
                                            "eval_episodes": args.episodes, "latency_calls": 100, **overrides})
                kept = one_recipe_student(name, config) if variant == "plain" else None
                if kept is not None:
                    student_dir, one_recipe_run = kept
                    float_returns, teacher_mean = one_recipe_run["student_returns"], one_recipe_run["teacher_return"]
                    float_result = {"return_mean": one_recipe_run["student_return"], "ratio_vs_teacher": one_recipe_run["ratio"],
                                    "failures": one_recipe_run["student_failures"], "source": "one_recipe.json"}
                    teacher_failures = one_recipe_run["teacher_failures"]
                else:
                    result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=reference, quiet=True)
                    report = result.report
                    student_dir = result.distillation.run_dir / "student"
                    float_returns, teacher_mean = list(report.student.returns), report.teacher.mean
                    float_result = {"return_mean": report.student.mean, "ratio_vs_teacher": report.ratio,
                                    "failures": report.student.failures}
                    teacher_failures = report.teacher.failures
                seeds = [EVAL_SEED + i for i in range(args.episodes)]
                backends = {}
                for backend in BACKENDS:  # one at a time: an export that fails its parity check is recorded, not run
                    try:
                        backends.update(closed_loop(teacher.env_spec, student_dir, [backend], seeds, n_envs=2,
                                                    float_returns=float_returns, teacher_mean=teacher_mean,
                                                    work_dir=out / run_name / "exports"))
                    except PolicyKDError as e:
                        backends[backend] = {"export_refused": str(e)}
                record = {
                    "teacher": name, "env": teacher.env_spec.env_id, "variant": variant, "overrides": overrides,
                    "labelled_steps": args.budget, "seed": seed, "episodes": args.episodes,
                    "teacher_return": teacher_mean, "teacher_failures": teacher_failures, "float": float_result,
                    "backends": {b: {k: v for k, v in r.items() if k != "returns"} for b, r in backends.items()},
                    "decided": config.decisions(), "config": config.to_dict(), "versions": package_versions(),
                }
                records.append(record)
                atomic_write_json(args.results, records)
                vs_teacher = ", ".join(f"{b} {r['ratio_vs_teacher']:.3f}" if "export_refused" not in r else f"{b} refused"
                                       for b, r in backends.items())
                vs_float = ", ".join(f"{b} {r['ratio_vs_float_student']:.3f}" for b, r in backends.items() if "export_refused" not in r)
                print(f"{name} {variant} seed {seed}: float {float_result['ratio_vs_teacher']:.3f}, {vs_teacher} "
                      f"(vs float: {vs_float})", flush=True)
                shutil.rmtree(out / run_name, ignore_errors=True)


def one_recipe_student(name: str, config) -> tuple[Path, dict] | None:
    """(student folder, one_recipe.json record) of the benchmarks/one_recipe.py run with this recipe (every key but
    where the run was written), when that script kept its student; else None."""
    wanted = config.to_dict()
    for run in results_file.read(RESULTS / "one_recipe.json")["runs"]:
        kept = ROOT / "runs" / "one_recipe" / "students" / run["config"]["run_name"]
        if run["teacher"] == name and same_recipe(run["config"], wanted) \
                and (kept / "student").is_dir():
            return kept / "student", run
    return None


if __name__ == "__main__":
    main()
