"""A privileged teacher, sensor-only students (issue 14): the SAC racecar teachers (agents/) distilled into students
that see the teacher's own observation (the reference), the `rays` view, `rays*3` (its last three frames), `rays`
with a GRU state, and the `camera` view through a CNN, then a tiny CNN distilled from that camera student (STUDENTS
below: each student is the default recipe plus its own keys).

Per env and student: the teacher and the student on the same 50 seeded tracks (from 1,000,000), lap completion
(the env's is_success) and return of both, the labelled steps, the distillation wall time, the student's
parameters and its numpy batch-1 latency. Records are appended to benchmarks/results/privileged_racecar.json after
every run and skipped when already there, so the benchmark resumes across sittings.

    python benchmarks/privileged_racecar.py                                  # both racecar envs, MLP students, 50k
    python benchmarks/privileged_racecar.py --envs RacecarTrack-v0 --students camera-cnn --budget 20000
    python benchmarks/privileged_racecar.py --envs RacecarTrack-v0 --students camera-tiny camera-tiny-attention --budget 20000

A chain row (camera-tiny*) distils from the camera-cnn student that an earlier run kept at the same budget and seed
(runs/privileged_racecar/students/); its ratio and lap rate are against that camera student, and
privileged_teacher_lap_rate is the SAC teacher's.
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
# student name -> the recipe keys it adds to the default recipe ("teacher-view": today's same-view student)
CAMERA_CNN = [[8, 5, 2], [16, 3, 2], [16, 3, 2]]  # 48x64x3 -> 22x30x8 -> 10x14x16 -> 4x6x16 (384 features)
TINY_CNN = [[4, 5, 4], [8, 3, 2]]                   # 48x64x3 -> 11x15x4 -> 5x7x8 (280 features)
STUDENTS: dict[str, dict] = {
    "teacher-view": {},
    "rays": {"student_view": "rays"},
    "rays*3": {"student_view": "rays*3"},
    "camera-cnn": {"student_view": "camera", "conv": CAMERA_CNN},
    "rays-gru": {"student_view": "rays", "hidden": [64], "gru": 32, "label_every": 1},
    # the chain's second step (as in Roach): the camera-cnn student of the same env, budget and seed as the teacher
    "camera-tiny": {"teacher_from": "camera-cnn", "conv": TINY_CNN, "hidden": [32]},
    "camera-tiny-attention": {"teacher_from": "camera-cnn", "conv": TINY_CNN, "hidden": [32], "attention_weight": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["RacecarObstacles-v0", "RacecarTrack-v0"])
    parser.add_argument("--students", nargs="+", default=["teacher-view", "rays", "rays*3"], choices=list(STUDENTS))
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()

    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"teachers": {}, "runs": []}
    done = {(r["env"], r.get("student", r["student_view"]), r["labelled_steps"], r["seed"]) for r in results["runs"]}
    for env in args.envs:
        path = ROOT / "agents" / f"sac-{env}"
        teacher, reference = None, None
        for student in args.students:
            if (env, student, args.budget, args.seed) in done:
                continue
            if teacher is None:
                teacher = load_teacher(path)
                reference = teacher_episodes(teacher, args.episodes)
                results["teachers"][env] = ReturnStats.of_episodes(reference).to_json()
            source = STUDENTS[student].get("teacher_from")
            if source:  # a chain: the teacher is a student kept by an earlier row
                earlier = [r for r in results["runs"] if (r["env"], r.get("student"), r["labelled_steps"], r["seed"], bool(r.get("student_dir")))
                           == (env, source, args.budget, args.seed, True)]
                if not earlier or not (ROOT / earlier[0]["student_dir"]).exists():
                    print(f"{env} student {student}: skipped, run {source} at this budget and seed first", flush=True)
                    continue
                chain_path = ROOT / earlier[0]["student_dir"]
                record = run_one(args, env, chain_path, load_teacher(chain_path), None, student)
                record["privileged_teacher_lap_rate"] = results["teachers"][env]["success_rate"]
            else:
                record = run_one(args, env, path, teacher, reference, student)
            results["runs"].append(record)
            atomic_write_json(RESULTS, results)
            print(f"{env} student {student}: laps {record['student_lap_rate']:.0%} vs {record['teacher_lap_rate']:.0%}, "
                  f"ratio {record['ratio']:.3f}, {record['wall_s']:.0f} s", flush=True)


def run_one(args, env: str, path: Path, teacher, reference, student: str) -> dict:
    out = ROOT / "runs" / "privileged_racecar"
    run_name = f"{env}__{student.replace('*', 'x')}__{args.budget}__{args.seed}"
    shutil.rmtree(out / run_name, ignore_errors=True)  # a run this script made and did not finish
    keys = {k: v for k, v in STUDENTS[student].items() if k != "teacher_from"}
    config = load_config(None, {"teacher": str(path), **keys, "labelled_steps": args.budget, "seed": args.seed,
                                "out_dir": str(out), "run_name": run_name, "eval_seed": EVAL_SEED,
                                "eval_episodes": args.episodes, "latency_calls": 200})
    view = config.student_view
    result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=None if view or reference is None else reference,
                                  quiet=True)
    report = result.report
    policy = load_numpy_policy(result.student_dir)
    probe = np.zeros(result.distillation.student.spec.obs_dim, dtype=np.float32)
    record = {
        "env": env, "student": student, "student_view": view, "labelled_steps": args.budget, "seed": args.seed, "episodes": args.episodes,
        "teacher_lap_rate": report.teacher.success_rate, "student_lap_rate": report.student.success_rate,
        "lap_rate_ratio": report.student.success_rate / max(report.teacher.success_rate, 1e-9),
        "teacher_return": report.teacher.mean, "student_return": report.student.mean, "ratio": report.ratio,
        "wall_s": result.distillation.wall_s, "student_params": report.student_params,
        "numpy_latency_us": measure_latency(lambda: policy(probe), calls=2_000),
        "decided": config.decisions(), "config": config.to_dict(), "versions": package_versions(),
    }
    kept = out / "students" / run_name  # the student itself, for the chain (a student as the next one's teacher)
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(result.student_dir, kept)
    record["student_dir"] = str(kept.relative_to(ROOT))
    shutil.rmtree(out / run_name, ignore_errors=True)
    return record


if __name__ == "__main__":
    main()
