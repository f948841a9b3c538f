"""Ensemble distillation on HalfCheetahBulletEnv-v0: rl-zoo PPO (stronger) + A2C (weaker) into one student.

Students at 10k labelled steps (configs/distill/bench_10k.yaml, DAgger, 5 rounds) from: A2C alone, PPO alone,
and ensembles of both (PPO first: the student takes its normaliser) with mixture/product x uniform/value/agreement
weights. Every policy is evaluated on the same 20 seeds (eval_seed 1_000_000); each teacher once. Each record
gives the student's return and its ratio to the PPO teacher's and to the A2C teacher's returns.

    .venv/bin/python benchmarks/ensemble_halfcheetah.py [--seeds 0 1] [--variants a2c ppo mixture/uniform ...]

Resumable: records already in benchmarks/results/ensemble_halfcheetah.json are skipped; the file is rewritten
after every run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from policykd.artifacts import atomic_write_json, package_versions
from policykd.config import load_config
from policykd.ensemble import load_teacher_for
from policykd.evaluate import return_ratio
from policykd.pipeline import distill_and_evaluate
from policykd.rollout import run_episodes
from policykd.zoo import default_teachers_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "distill" / "bench_10k.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "ensemble_halfcheetah.json"
ENV = "HalfCheetahBulletEnv-v0"
EVAL_SEED, EPISODES, BUDGET = 1_000_000, 20, 10_000
DEFAULT_VARIANTS = ["a2c", "ppo", "mixture/uniform", "product/uniform", "mixture/value", "product/value",
                    "mixture/agreement", "product/agreement"]


def variant_overrides(variant: str, zoo: Path) -> dict:
    ppo, a2c = str(zoo / "ppo" / f"{ENV}_1"), str(zoo / "a2c" / f"{ENV}_1")
    if variant in ("ppo", "a2c"):
        return {"teacher": ppo if variant == "ppo" else a2c}
    mode, weighting = variant.split("/")
    return {"teacher": ppo, "ensemble": [a2c], "ensemble_mode": mode, "ensemble_weighting": weighting}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    args = parser.parse_args()
    zoo = default_teachers_dir() / "rl-zoo"
    seeds = [EVAL_SEED + i for i in range(EPISODES)]
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"teachers": {}, "records": []}
    done = {(r["variant"], r["seed"]) for r in data["records"]}
    loaded: dict[str, tuple] = {}

    def teacher_and_episodes(variant: str):
        """The (ensemble) teacher of a variant and its episodes on the eval seeds, evaluated once (kept in the JSON)."""
        if variant not in loaded:
            config = load_config(RECIPE, {**variant_overrides(variant, zoo), "labelled_steps": BUDGET})
            teacher = load_teacher_for(config)
            start = time.perf_counter()
            episodes = run_episodes(teacher.act, teacher.env_spec, seeds, n_envs=config.n_envs)
            if variant not in data["teachers"]:
                data["teachers"][variant] = {"return_mean": float(episodes.returns.mean()), "return_std": float(episodes.returns.std()),
                                             "returns": episodes.returns.tolist(), "identity": teacher.identity(),
                                             "eval_s": time.perf_counter() - start}
                print(f"teacher {variant}: return {episodes.returns.mean():.1f} +- {episodes.returns.std():.1f}", flush=True)
            loaded[variant] = (teacher, episodes)
        return loaded[variant]

    ppo_return = teacher_and_episodes("ppo")[1].returns.mean()
    a2c_return = teacher_and_episodes("a2c")[1].returns.mean()
    data.update({"env": ENV, "eval_seeds": seeds, "labelled_steps": BUDGET, "recipe": str(RECIPE.relative_to(ROOT)),
                 "ppo_teacher_return": float(ppo_return), "a2c_teacher_return": float(a2c_return), "versions": package_versions()})
    atomic_write_json(RESULTS, data)
    for seed in args.seeds:
        for variant in args.variants:
            if (variant, seed) in done:
                continue
            teacher, episodes = teacher_and_episodes(variant)
            with tempfile.TemporaryDirectory() as out:
                config = load_config(RECIPE, {**variant_overrides(variant, zoo), "labelled_steps": BUDGET, "seed": seed,
                                              "out_dir": out, "run_name": "run", "eval_seed": EVAL_SEED,
                                              "eval_episodes": EPISODES, "latency_calls": 100})
                result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=episodes, quiet=True)
            report = result.report
            student = float(report.student.mean)
            record = {"variant": variant, "seed": seed, "student_return": student, "student_std": float(report.student.std),
                      "student_returns": [float(x) for x in report.student.returns],
                      "ratio_vs_ppo": return_ratio(student, ppo_return), "ratio_vs_a2c": return_ratio(student, a2c_return),
                      "ratio_vs_own_teacher": float(report.ratio), "own_teacher_return": float(episodes.returns.mean()),
                      "heldout_kl_vs_own_teacher": float(report.agreement["kl"]), "wall_s": float(result.distillation.wall_s),
                      "config": {k: v for k, v in config.to_dict().items() if k not in ("out_dir", "run_name")}}
            data["records"].append(record)
            atomic_write_json(RESULTS, data)
            print(f"{variant:18s} seed {seed}: student {student:7.1f}  vs PPO {record['ratio_vs_ppo']:.3f}  vs A2C "
                  f"{record['ratio_vs_a2c']:.3f}  (own teacher {record['own_teacher_return']:.1f}, {record['wall_s']:.0f} s)", flush=True)
    summary = {}
    for variant in args.variants:
        rows = [r for r in data["records"] if r["variant"] == variant]
        if rows:
            summary[variant] = {"seeds": len(rows), "student_return_mean": float(np.mean([r["student_return"] for r in rows])),
                                "ratio_vs_ppo_mean": float(np.mean([r["ratio_vs_ppo"] for r in rows]))}
    data["summary"] = summary
    atomic_write_json(RESULTS, data)
    for variant, s in summary.items():
        print(f"{variant:18s} {s['seeds']} seeds: student {s['student_return_mean']:7.1f}  vs PPO {s['ratio_vs_ppo_mean']:.3f}")


if __name__ == "__main__":
    main()
