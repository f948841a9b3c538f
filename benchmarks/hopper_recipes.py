"""Hopper recipe variants side by side: does any change to the distillation recipe make 2x64 students fall less?

The Hopper ratio on the benchmark's 20 seeds is decided by falls (episodes that end before the 1000-step limit): the
teacher falls in none of them, and each student fall costs 0.03-0.10 of the ratio. This distils the rl-zoo PPO
Hopper teacher with the benchmark recipe (configs/distill/bench_<budget>k.yaml, DAgger) and with one setting changed
at a time, on distillation seeds 0 / 1 / 2, and evaluates every student on seeds 1000000-1000019 (those of
benchmarks/distill_zoo.py, so the `recipe` rows reproduce its Hopper DAgger rows bit for bit). Each record holds the
ratio, the falls, the held-out KL and action MSE, and the distillation wall time. Results are appended to
benchmarks/results/hopper_recipes.json after every run; records already there are skipped (resumable).

    python benchmarks/hopper_recipes.py                        # every variant (about 65 minutes on 2 cores)
    python benchmarks/hopper_recipes.py --variants recipe lambda_v=0 --budgets 50000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policykd.artifacts import atomic_write_json, package_versions
from policykd.config import load_config
from policykd.distill import distill
from policykd.evaluate import agreement, return_ratio
from policykd.rollout import run_episodes
from policykd.teachers import load_teacher
from policykd.tracking import Tracker
from policykd.zoo import default_teachers_dir

ZOO = default_teachers_dir() / "rl-zoo"  # $POLICYKD_TEACHERS/rl-zoo, else ../shared/teachers/rl-zoo
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "distill"
RESULTS = Path(__file__).resolve().parent / "results" / "hopper_recipes.json"
EVAL_SEED = 1_000_000
TIME_LIMIT = 1000
# name -> settings layered over the budget's recipe; "recipe" is the recipe itself.
VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "lambda_v=0": {"lambda_v": 0.0},
    "lambda_v=2": {"lambda_v": 2.0},
    "activation=relu": {"activation": "relu"},
    "activation=tanh": {"activation": "tanh"},
    "bounded_means": {"bounded_means": True},
    "noise_scale=1.5": {"noise_scale": 1.5},
    "noise_scale=0.3": {"noise_scale": 0.3},
    "sample_actions=false": {"sample_actions": False},
    "epochs x2": {"epochs_per_round": "x2"},
    "hidden=128x128": {"hidden": [128, 128]},  # larger than the 2x64: is the student's size the limit?
    "hidden=256x256": {"hidden": [256, 256]},
}
DEFAULT_VARIANTS = {
    50_000: ["recipe", "lambda_v=0", "lambda_v=2", "activation=relu", "bounded_means", "noise_scale=1.5",
             "noise_scale=0.3", "sample_actions=false", "epochs x2", "hidden=128x128",
             "hidden=256x256"],
    10_000: ["recipe", "activation=tanh", "bounded_means", "epochs x2"],
}


def variant_overrides(name: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """The variant's settings, with "x2" resolved against the recipe's value."""
    return {k: 2 * recipe[k] if v == "x2" else v for k, v in VARIANTS[name].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", nargs="+", type=int, default=[50_000, 10_000])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None,
                        help="default: each budget's list in DEFAULT_VARIANTS")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    records = json.loads(args.results.read_text()) if args.results.exists() else []
    done = {(r["variant"], r["labelled_steps"], r["seed"]) for r in records}
    teacher = load_teacher(ZOO / "ppo" / "HopperBulletEnv-v0_1")
    torch.set_num_threads(1)
    seeds = [EVAL_SEED + i for i in range(args.episodes)]
    teacher_eps = run_episodes(teacher.act, teacher.env_spec, seeds)
    rng = np.random.default_rng(EVAL_SEED)
    held_out = teacher_eps.states[rng.choice(len(teacher_eps.states), 5_000, replace=False)]
    for budget in args.budgets:
        recipe_path = RECIPES / f"bench_{budget // 1000}k.yaml"
        recipe = load_config(recipe_path, {}).to_dict()
        for name in args.variants or DEFAULT_VARIANTS[budget]:
            overrides = variant_overrides(name, recipe)
            for seed in args.seeds:
                if (name, budget, seed) in done:
                    continue
                with tempfile.TemporaryDirectory() as out:
                    config = load_config(recipe_path, {
                        **overrides, "teacher": str(teacher.source.path), "seed": seed, "data_mode": "dagger",
                        "labelled_steps": budget, "out_dir": out, "run_name": "run", "eval_seed": EVAL_SEED})
                    result = distill(config, teacher=teacher, tracker=Tracker(None, quiet=True))
                student = result.student
                episodes = run_episodes(
                    student.act,
                    teacher.env_spec, seeds)
                match = agreement(teacher, student, held_out)
                record = {
                    "env": "HopperBulletEnv-v0", "teacher": "rl-zoo/ppo/HopperBulletEnv-v0", "variant": name,
                    "overrides": overrides, "labelled_steps": budget, "data_mode": "dagger", "seed": seed,
                    "ratio": return_ratio(float(episodes.returns.mean()), float(teacher_eps.returns.mean())),
                    "student_falls": int((episodes.lengths < TIME_LIMIT).sum()),
                    "teacher_falls": int((teacher_eps.lengths < TIME_LIMIT).sum()),
                    "student_returns": episodes.returns.tolist(), "teacher_returns": teacher_eps.returns.tolist(),
                    "agreement_kl": match["kl"], "agreement_action_mse": match["action_mse"], "wall_s": result.wall_s,
                    "eval_seeds": [seeds[0], seeds[-1]], "recipe": recipe_path.name, "config": config.to_dict(),
                    "versions": package_versions(),
                }
                records.append(record)
                atomic_write_json(args.results, records)
                print(f"{budget:6d} {name:22s} seed {seed}: ratio {record['ratio']:.3f}, falls {record['student_falls']}, "
                      f"kl {match['kl']:.4f}, {result.wall_s:.1f} s", flush=True)


if __name__ == "__main__":
    main()
