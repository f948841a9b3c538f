"""How much of its own return a zoo teacher keeps when its actions change a little: the noise floor of the ratio bar.

Each rl-zoo PPO Bullet teacher runs deterministically on the benchmark's evaluation seeds, two envs in lockstep as
every benchmark evaluates, and then again, on the same seeds, perturbed in one of two ways:
- `batch-1`: the same teacher, one env at a time. Its network sees batches of one instead of two, so its actions
  differ from the reference run in the last float32 bits only (about 1e-7).
- `gaussian`: i.i.d. Gaussian noise of std sigma added to every action (then clipped to the bounds), once per noise seed.
A student whose actions differ from the teacher's by about sigma can be expected near the same ratios. An episode
counts as short when it ends before the reference run's longest one (on Hopper: a fall). Records are merged into
benchmarks/results/teacher_action_noise.json by (env, episodes, perturbation, sigma, noise seed).

    python benchmarks/teacher_action_noise.py                       # 20 seeds, three teachers (about 9 minutes)
    python benchmarks/teacher_action_noise.py --envs HopperBulletEnv-v0 --episodes 100 --sigmas 1e-6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policykd.artifacts import atomic_write_json, package_versions
from policykd.evaluate import perturbed_act
from policykd.rollout import Episodes, run_episodes
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

ZOO = default_teachers_dir() / "rl-zoo"  # $POLICYKD_TEACHERS/rl-zoo, else ../shared/teachers/rl-zoo
RESULTS = Path(__file__).resolve().parent / "results" / "teacher_action_noise.json"
EVAL_SEED = 1_000_000


def record_key(r: dict[str, Any]) -> tuple:
    return r["env"], r["episodes"], r["perturbation"], r["sigma"], r["noise_seed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["HalfCheetahBulletEnv-v0", "HopperBulletEnv-v0", "ReacherBulletEnv-v0"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[1e-6, 1e-3, 0.01, 0.02, 0.05])
    parser.add_argument("--noise-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [EVAL_SEED + i for i in range(args.episodes)]
    existing = json.loads(RESULTS.read_text())["records"] if RESULTS.exists() else []
    records: dict[tuple, dict[str, Any]] = {record_key(r): r for r in existing}

    for env_id in args.envs:
        teacher = load_teacher(ZOO / "ppo" / f"{env_id}_1")
        clean = run_episodes(teacher.act, teacher.env_spec, seeds)

        def add(perturbation: str, sigma: float | None, noise_seed: int | None, episodes: Episodes) -> None:
            record = {
                "env": env_id, "teacher": f"rl-zoo/ppo/{env_id}", "episodes": len(seeds), "perturbation": perturbation,
                "sigma": sigma, "noise_seed": noise_seed, "eval_seeds": [seeds[0], seeds[-1]],
                "teacher_return": float(clean.returns.mean()), "perturbed_return": float(episodes.returns.mean()),
                "ratio": float(episodes.returns.mean() / clean.returns.mean()),
                "teacher_short_episodes": int((clean.lengths < clean.lengths.max()).sum()),
                "short_episodes": int((episodes.lengths < clean.lengths.max()).sum()),
                "teacher_returns": clean.returns.tolist(), "perturbed_returns": episodes.returns.tolist(),
                "teacher_lengths": clean.lengths.tolist(), "perturbed_lengths": episodes.lengths.tolist(),
            }
            records[record_key(record)] = record
            label = "batch 1" if sigma is None else f"sigma {sigma:g}, noise seed {noise_seed}"
            print(f"{env_id} {label}: ratio {record['ratio']:.3f}, {record['short_episodes']} of {len(seeds)} "
                  f"episodes ended early (reference run: {record['teacher_short_episodes']})", flush=True)

        add("batch-1", None, None, run_episodes(teacher.act, teacher.env_spec, seeds, n_envs=1))
        for sigma in args.sigmas:
            for noise_seed in args.noise_seeds:
                noisy = perturbed_act(teacher, sigma, np.random.default_rng(noise_seed))
                add("gaussian", sigma, noise_seed, run_episodes(noisy, teacher.env_spec, seeds))
        atomic_write_json(RESULTS, {"records": list(records.values()), "versions": package_versions()})


if __name__ == "__main__":
    main()
