"""Distillation of the teachers policykd trained itself (agents/) into 2x64 students, on policykd's own envs and
one Bullet locomotion env: return ratio and success rate (lap completed for the racecar, target reached for the
arm), teacher and student on the same 20 seeds. Appends to benchmarks/results/distill_agents.json after every
run and skips records already there, so an interrupted benchmark resumes.

    python benchmarks/distill_agents.py                                   # every agent, DAgger, seeds 0 1 2
    python benchmarks/distill_agents.py --agents sac-RacecarTrack-v0 --seeds 0
    python benchmarks/distill_agents.py --agents sac-InvertedDoublePendulumBulletEnv-v0 --steps 50000
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
EVAL_SEED = 1_000_000
AGENTS = ("sac-RacecarTrack-v0", "sac-RacecarObstacles-v0", "sac-KukaReach-v0", "sac-KukaReachObstacle-v0",
          "sac-InvertedDoublePendulumBulletEnv-v0", "sac-Pendulum-v1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", default=list(AGENTS))
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs" / "distill" / "agents.yaml")
    parser.add_argument("--steps", type=int, default=None, help="labelled steps (default: the recipe's)")
    parser.add_argument("--modes", nargs="+", default=["dagger"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--results", type=Path, default=RESULTS / "distill_agents.json")
    args = parser.parse_args()

    records = json.loads(args.results.read_text()) if args.results.exists() else []
    done = {(r["teacher"], r["data_mode"], r["labelled_steps"], r["seed"]) for r in records}
    seeds = [EVAL_SEED + i for i in range(args.episodes)]
    for name in args.agents:
        path = ROOT / "agents" / name
        if not path.exists():
            print(f"{name}: not in agents/, skipped", flush=True)
            continue
        teacher = load_teacher(path)
        torch.set_num_threads(1)
        teacher_eps = None
        for mode in args.modes:
            for seed in args.seeds:
                run_name = f"bench__{name}__{mode}__{seed}"
                out = Path("runs") / "bench"
                config = load_config(args.recipe, {"teacher": str(path), "seed": seed, "data_mode": mode,
                                                   "labelled_steps": args.steps, "out_dir": str(out),
                                                   "run_name": run_name, "eval_seed": EVAL_SEED,
                                                   "eval_episodes": args.episodes, "latency_calls": 200})
                if (f"agents/{name}", mode, config.labelled_steps, seed) in done:
                    continue
                if teacher_eps is None:
                    teacher_eps = run_episodes(teacher.act, teacher.env_spec, seeds)
                shutil.rmtree(out / run_name, ignore_errors=True)
                result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=teacher_eps, quiet=True)
                report = result.report.to_json()
                t, s = report["teacher"], report["student"]
                record = {
                    "env": teacher.env_spec.env_id, "teacher": f"agents/{name}", "data_mode": mode, "seed": seed,
                    "labelled_steps": config.labelled_steps, "teacher_return": t["mean"], "teacher_return_std": t["std"],
                    "student_return": s["mean"], "student_return_std": s["std"], "ratio": report["ratio"],
                    "teacher_success_rate": t.get("success_rate"), "student_success_rate": s.get("success_rate"),
                    "student_params": s["params"], "teacher_actor_params": t["actor_params"], "wall_s": result.distillation.wall_s,
                    "agreement_kl": report["agreement"]["kl"], "eval_seeds": [EVAL_SEED, EVAL_SEED + args.episodes - 1],
                    "recipe": str(args.recipe.relative_to(ROOT)), "config": config.to_dict(), "versions": package_versions(),
                }
                records.append(record)
                atomic_write_json(args.results, records)
                success = ("" if t.get("success_rate") is None else
                           f", success {s['success_rate']:.0%} vs {t['success_rate']:.0%}")
                print(f"{name} {mode} seed {seed}: ratio {record['ratio']:.3f} ({s['mean']:.1f} vs {t['mean']:.1f}"
                      f"{success}) in {result.distillation.wall_s:.1f} s", flush=True)
                shutil.rmtree(out / run_name, ignore_errors=True)


if __name__ == "__main__":
    main()
