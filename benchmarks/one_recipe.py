"""One default recipe on every teacher: `policykd distill TEACHER --steps N` with no recipe file, against hard-label
behaviour cloning (`loss: bc`) with the same data budget, student and seeds (issue 16's protocol).

Teachers: every run folder in $POLICYKD_TEACHERS/rl-zoo/ALGO/ (else ../shared/teachers/rl-zoo) and every agents/
folder, found on disk (rl-zoo first), so a teacher added there is benchmarked too. Per teacher: the teacher on 100 fixed evaluation
seeds, and its noise floor (the same teacher stepped one env at a time, which changes only the last float bits of
its actions). Per budget, loss and distillation seed: the student on the same 100 seeds, with the ratio, its paired
bootstrap 95% interval, failures (falls, crashes, missed targets) per 100 episodes for teacher and student, the
held-out KL of the last round and what the recipe decided (epochs, batch size).

Each run's student is kept in runs/one_recipe/students/RUN (with its config.json). Results are appended to
benchmarks/results/one_recipe.json after every run (under a lock: processes with different
work, e.g. `--losses kl` and `--losses bc`, can run side by side) and records already there are skipped, so an
interrupted benchmark resumes; benchmarks/summarize.py turns them into README's headline table.

    python benchmarks/one_recipe.py                                   # every teacher, 10k and 50k, kl then bc, seeds 0-2
    python benchmarks/one_recipe.py --teachers ppo/HopperBulletEnv-v0_1 --budgets 50000 --losses kl
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import results_file  # benchmarks/results_file.py
import torch

from policykd.artifacts import atomic_write_bytes, package_versions
from policykd.config import DistillConfig, load_config
from policykd.evaluate import ReturnStats, return_ratio
from policykd.pipeline import distill_and_evaluate
from policykd.rollout import Episodes, run_episodes
from policykd.teachers import Teacher, load_teacher
from policykd.zoo import default_teachers_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = ROOT / "runs" / "benchmark_cache"
EPISODE_ARRAYS = ("returns", "lengths", "states", "successes", "terminated", "view_states", "last_rewards", "max_earlier_rewards")
EVAL_SEED = 1_000_000


def discover_teachers(zoo: Path, agents: Path) -> dict[str, Path]:
    """name (ALGO/RUN for rl-zoo, agents/NAME) -> folder, for every teacher folder on disk."""
    found = {f"{run.parent.name}/{run.name}": run for run in sorted(zoo.glob("*/*")) if run.is_dir()}
    found.update({f"agents/{run.name}": run for run in sorted(agents.glob("*")) if (run / "model_card.json").exists()})
    return found


def teacher_episodes(teacher: Teacher, episodes: int) -> Episodes:
    """The teacher on the evaluation seeds, two envs at a time (as students are evaluated). Kept in
    runs/benchmark_cache/ under a hash of the teacher (its file's sha256, env and family), the seeds and the package
    versions, so each benchmark process does not run the same deterministic episodes again."""
    seeds = [EVAL_SEED + i for i in range(episodes)]
    identity = {k: v for k, v in teacher.identity().items() if k != "path"}
    key = json.dumps({"teacher": identity, "seeds": seeds, "n_envs": 2, "versions": package_versions()}, sort_keys=True)
    cache = CACHE / f"teacher_episodes_{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    if cache.exists():
        with np.load(cache) as f:
            return Episodes(**{name: f[name] if name in f else None for name in EPISODE_ARRAYS})
    result = run_episodes(lambda obs: teacher.act(obs, deterministic=True), teacher.env_spec, seeds, n_envs=2)
    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(result, name) for name in EPISODE_ARRAYS if getattr(result, name) is not None})
    atomic_write_bytes(cache, buffer.getvalue())
    return result


def teacher_record(name: str, teacher: Teacher, reference: Episodes) -> dict:
    """The teacher's returns and failures, and its noise floor: the same teacher stepped one env at a time."""
    seeds = [EVAL_SEED + i for i in range(len(reference.returns))]
    other = run_episodes(lambda obs: teacher.act(obs, deterministic=True), teacher.env_spec, seeds, n_envs=1)
    stats = ReturnStats.of_episodes(reference)
    return {"teacher": name, "env": teacher.env_spec.env_id, "stats": stats.to_json(),
            "noise_floor_ratio": return_ratio(float(other.returns.mean()), stats.mean),
            "noise_floor_failures": int(np.sum(other.failures())), "eval_seeds": [seeds[0], seeds[-1]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=None, help="names as ALGO/RUN or agents/NAME (default: all)")
    parser.add_argument("--budgets", nargs="+", type=int, default=[10_000, 50_000])
    parser.add_argument("--losses", nargs="+", default=["kl", "bc"], help="kl: the default recipe; bc: hard-label BC")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--results", type=Path, default=RESULTS / "one_recipe.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    teachers = discover_teachers(default_teachers_dir() / "rl-zoo", ROOT / "agents")
    names = args.teachers or list(teachers)
    results = results_file.read(args.results)
    done = {(r["teacher"], r["loss"], r["labelled_steps"], r["seed"]) for r in results["runs"]}
    loaded: dict[str, tuple[Teacher, Episodes]] = {}  # this process's teachers and their evaluation episodes
    for loss in args.losses:
        for name in names:
            for budget in args.budgets:
                todo = [seed for seed in args.seeds if (name, loss, budget, seed) not in done]
                if not todo:
                    continue
                if name not in loaded:
                    teacher = load_teacher(teachers[name])
                    loaded[name] = (teacher, teacher_episodes(teacher, args.episodes))
                if name not in results["teachers"]:
                    results["teachers"][name] = teacher_record(name, *loaded[name])
                    results_file.set_teacher(args.results, name, results["teachers"][name])
                    t = results["teachers"][name]
                    print(f"{name}: teacher {t['stats']['mean']:.1f}, failures {t['stats']['failures']}/{args.episodes}, "
                          f"noise floor {t['noise_floor_ratio']:.3f}", flush=True)
                for seed in todo:
                    run_one(args, name, teachers[name], *loaded[name], loss, budget, seed)
                    done.add((name, loss, budget, seed))


def run_one(args, name: str, path: Path, teacher: Teacher, reference: Episodes, loss: str, budget: int,
            seed: int) -> None:
    """Distil with the default recipe (only the loss differs for the BC baseline), evaluate, append the record."""
    out = ROOT / "runs" / "one_recipe"
    run_name = f"{name.replace('/', '__')}__{loss}__{budget}__{seed}"
    shutil.rmtree(out / run_name, ignore_errors=True)  # a run this script made and did not finish
    config = load_config(None, {"teacher": str(path), "seed": seed, "labelled_steps": budget, "loss": loss,
                                "out_dir": str(out), "run_name": run_name, "eval_seed": EVAL_SEED,
                                "eval_episodes": args.episodes, "latency_calls": 100})
    result = distill_and_evaluate(config, teacher=teacher, teacher_episodes=reference, quiet=True)
    report = result.report.to_json()
    history = result.distillation.history
    record = {
        "teacher": name, "env": teacher.env_spec.env_id, "loss": loss, "labelled_steps": budget, "seed": seed,
        "ratio": report["ratio"], "ratio_ci95": report["ratio_ci95"],
        "teacher_return": report["teacher"]["mean"], "student_return": report["student"]["mean"],
        "teacher_failures": report["teacher"]["failures"], "student_failures": report["student"]["failures"],
        "episodes": args.episodes, "heldout_kl": history[-1].val_kl, "agreement_kl": report["agreement"].get("kl"),
        "wall_s": result.distillation.wall_s, "decided": config.decisions(), "student_params": report["student"]["params"],
        "student_returns": report["student"]["returns"], "config": config.to_dict(), "versions": package_versions(),
    }
    keep_student(result.distillation.run_dir, out / "students" / run_name)
    results_file.append_run(args.results, record)
    print(f"{name} {loss} {budget} seed {seed}: ratio {record['ratio']:.3f} {tuple(round(x, 3) for x in record['ratio_ci95'])}, "
          f"failures {record['student_failures']} vs {record['teacher_failures']}, held-out KL {record['heldout_kl']:.3f}, "
          f"{record['wall_s']:.0f} s", flush=True)
    shutil.rmtree(out / run_name, ignore_errors=True)


RUN_PLACEMENT = ("out_dir", "run_name", "latency_calls")  # config keys that name where a run went, not what it learnt


def same_recipe(config: dict, other: dict) -> bool:
    """Whether two runs' configs (DistillConfig.to_dict()) train the same student: every key but RUN_PLACEMENT, a key
    newer than a record counting as its default (the code before the key behaved as its default does)."""
    defaults = DistillConfig().to_dict()

    def recipe(c: dict) -> dict:
        return {k: v for k, v in {**defaults, **c}.items() if k not in RUN_PLACEMENT}

    return recipe(config) == recipe(other)


def keep_student(run_dir: Path, kept: Path) -> None:
    """Keep a run's student folder and recipe (kB; e.g. for benchmarks/quantised_closed_loop.py to export and run it)
    as kept/student and kept/config.json; the rest of the run folder (buffer, checkpoint) is removed by the caller."""
    shutil.rmtree(kept, ignore_errors=True)  # a student this script kept from an earlier, unrecorded run
    kept.mkdir(parents=True)
    shutil.copy2(run_dir / "config.json", kept / "config.json")
    shutil.copytree(run_dir / "student", kept / "student")


if __name__ == "__main__":
    main()
