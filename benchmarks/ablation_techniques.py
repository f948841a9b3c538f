"""Distillation techniques against each other: one change at a time from the default recipe (KL + value, DAgger, 2x64).

Variants (recipe keys over the default recipe; see docs/techniques.md):
    base            the default recipe                         bc          hard-label behaviour cloning (`loss: bc`)
    mse             squared error of the action means          no-value    KL without value matching (lambda_v 0)
    tau=2           the teacher's distribution at temperature 2
    hints           FitNets hints, last hidden layers, weight 1
    attention       input-saliency matching, weight 0.1
    teacher-data    teacher-driven data instead of DAgger
    ensemble        product of the PPO and A2C HalfCheetah teachers, value-weighted (HalfCheetah only)
    ensemble-agreement, ensemble-mixture, ensemble-return   the same two teachers: product weighted by agreement;
                    uniform mixture; product weighted by each teacher's measured return
    label_every=1   label every state (the default labels every third: three times the episodes per labelled step)
Each at two budgets and three distillation seeds, on the same 100 evaluation seeds as the teacher, with the teacher's
noise floor (the teacher stepped one env at a time). `base` and `bc` with a 2x64 student are the runs of
benchmarks/one_recipe.py (the same recipe, seeds and evaluation): when one_recipe.json holds them, they are copied
from there (marked `"source": "one_recipe.json"`) instead of run twice. Then `--hidden 32 32` runs base and the best variant with a 2x32
student. Records are appended to benchmarks/results/ablation_techniques.json after every run (under a lock, so processes with
different work can run side by side) and skipped when already there, so the benchmark resumes across sittings (about 150 runs on 2 cores).

    python benchmarks/ablation_techniques.py                                   # everything
    python benchmarks/ablation_techniques.py --teachers ppo/HopperBulletEnv-v0_1 --variants base hints --budgets 10000
    python benchmarks/ablation_techniques.py --hidden 32 32 --variants base hints
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import results_file  # benchmarks/results_file.py
import torch
from one_recipe import EVAL_SEED, ROOT, discover_teachers, same_recipe, teacher_episodes, teacher_record  # benchmarks/one_recipe.py

from policykd.artifacts import package_versions
from policykd.config import load_config
from policykd.pipeline import distill_and_evaluate
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

RESULTS = Path(__file__).resolve().parent / "results"
TEACHERS = ["ppo/HalfCheetahBulletEnv-v0_1", "ppo/HopperBulletEnv-v0_1", "ppo/ReacherBulletEnv-v0_1"]
VARIANTS: dict[str, dict] = {
    "base": {}, "bc": {"loss": "bc"}, "mse": {"loss": "mse"}, "no-value": {"lambda_v": 0.0},
    "kl-mean-per-dim": {"kl_mean_scale": "dimension"}, "kl-mean-teacher": {"kl_mean_scale": "teacher"}, "no-sampling": {"sample_actions": False},
    "kl-shared-std": {"kl_student_std": "shared"}, "kl-mixed-std": {"kl_student_std": "mixed"}, "std-head-detached": {"std_head_detached": True}, "tau=2": {"tau": 2.0},
    "hints": {"hint_weight": 1.0}, "attention": {"attention_weight": 0.1}, "teacher-data": {"data_mode": "teacher"},
    "ensemble": {"ensemble_mode": "product", "ensemble_weighting": "value"},
    "ensemble-agreement": {"ensemble_mode": "product", "ensemble_weighting": "agreement"},
    "ensemble-mixture": {"ensemble_mode": "mixture", "ensemble_weighting": "uniform"},
    "ensemble-return": {"ensemble_mode": "product", "ensemble_weighting": "return"}, "label_every=1": {"label_every": 1},
}
ENSEMBLE_PARTNERS = {"ppo/HalfCheetahBulletEnv-v0_1": "a2c/HalfCheetahBulletEnv-v0_1"}
ONE_RECIPE_LOSS = {"base": "kl", "bc": "bc"}  # variants that are benchmarks/one_recipe.py runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=TEACHERS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[10_000, 50_000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--hidden", nargs="+", type=int, default=[64, 64])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--results", type=Path, default=RESULTS / "ablation_techniques.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    teachers = discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents")
    results = results_file.read(args.results)
    one_recipe = results_file.read(RESULTS / "one_recipe.json")
    done = {(r["teacher"], r["variant"], r["labelled_steps"], r["seed"], tuple(r["hidden"])) for r in results["runs"]}
    for name in args.teachers:
        teacher, reference = None, None
        for budget in args.budgets:
            for variant in args.variants:
                if variant.startswith("ensemble") and name not in ENSEMBLE_PARTNERS:
                    continue
                for seed in args.seeds:
                    if (name, variant, budget, seed, tuple(args.hidden)) in done:
                        continue
                    shared = one_recipe_record(one_recipe, args, name, teachers[name], variant, budget, seed)
                    if shared is not None:
                        if name not in results["teachers"] and name in one_recipe["teachers"]:
                            results["teachers"][name] = one_recipe["teachers"][name]
                            results_file.set_teacher(args.results, name, results["teachers"][name])
                        results_file.append_run(args.results, shared)
                        print(f"{name} {variant} {budget} seed {seed}: from one_recipe.json, ratio {shared['ratio']:.3f}", flush=True)
                        continue
                    if teacher is None:
                        teacher = load_teacher(teachers[name])
                        reference = teacher_episodes(teacher, args.episodes)
                    if name not in results["teachers"]:
                        results["teachers"][name] = teacher_record(name, teacher, reference)
                        results_file.set_teacher(args.results, name, results["teachers"][name])
                    overrides = dict(VARIANTS[variant])
                    if variant.startswith("ensemble"):
                        overrides["ensemble"] = [str(teachers[ENSEMBLE_PARTNERS[name]])]
                    record = run_one(args, name, teachers[name], teacher, reference, variant, overrides, budget, seed)
                    results_file.append_run(args.results, record)
                    print(f"{name} {variant} {budget} seed {seed} {args.hidden}: ratio {record['ratio']:.3f}, "
                          f"held-out KL {record['heldout_kl']:.3f}, {record['wall_s']:.0f} s", flush=True)


def ablation_config(args, name: str, path: Path, variant: str, overrides: dict, budget: int, seed: int):
    out = ROOT / "runs" / "ablation_techniques"
    run_name = f"{name.replace('/', '__')}__{variant}__{budget}__{seed}__{'x'.join(map(str, args.hidden))}"
    return load_config(None, {"teacher": str(path), "seed": seed, "labelled_steps": budget, "hidden": args.hidden,
                              "out_dir": str(out), "run_name": run_name, "eval_seed": EVAL_SEED,
                              "eval_episodes": args.episodes, "latency_calls": 100, **overrides})


def one_recipe_record(one_recipe: dict, args, name: str, path: Path, variant: str, budget: int, seed: int) -> dict | None:
    """The benchmarks/one_recipe.py run that is this variant's run (base: the default recipe, bc: its BC baseline),
    as an ablation record, when one_recipe.json holds one with the same recipe (every key but where it was written)
    and the same evaluation episodes; else None."""
    if variant not in ONE_RECIPE_LOSS:
        return None
    wanted = ablation_config(args, name, path, variant, VARIANTS[variant], budget, seed).to_dict()
    for r in one_recipe["runs"]:
        if (r["teacher"], r["loss"], r["labelled_steps"], r["seed"], r["episodes"]) == (name, ONE_RECIPE_LOSS[variant], budget, seed, args.episodes) \
                and same_recipe(r["config"], wanted):
            keep = ("labelled_steps", "seed", "episodes", "ratio", "ratio_ci95", "teacher_return", "student_return",
                    "student_returns", "teacher_failures", "student_failures", "heldout_kl", "wall_s", "student_params", "decided", "config", "versions")
            return {"teacher": name, "variant": variant, "overrides": VARIANTS[variant], "hidden": list(args.hidden),
                    **{k: r[k] for k in keep}, "source": "one_recipe.json"}
    return None


def run_one(args, name: str, path: Path, teacher, reference, variant: str, overrides: dict, budget: int, seed: int) -> dict:
    config = ablation_config(args, name, path, variant, overrides, budget, seed)
    run_dir = Path(config.out_dir) / config.run_name
    shutil.rmtree(run_dir, ignore_errors=True)  # a run this script made and did not finish
    if config.ensemble:  # distil from the ensemble, compare with the primary teacher's episodes (its ratio)
        from policykd.ensemble import load_teacher_for

        teacher = load_teacher_for(config)
    result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=reference, quiet=True)
    report = result.report
    record = {
        "teacher": name, "variant": variant, "overrides": overrides, "labelled_steps": budget, "seed": seed,
        "hidden": list(args.hidden), "episodes": args.episodes, "ratio": report.ratio, "ratio_ci95": list(report.ratio_ci95),
        "teacher_return": report.teacher.mean, "student_return": report.student.mean,
        "student_returns": [float(x) for x in report.student.returns],
        "teacher_failures": report.teacher.failures, "student_failures": report.student.failures,
        "heldout_kl": result.distillation.history[-1].val_kl, "wall_s": result.distillation.wall_s,
        "student_params": report.student_params, "decided": config.decisions(), "config": config.to_dict(),
        "versions": package_versions(),
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return record


if __name__ == "__main__":
    main()
