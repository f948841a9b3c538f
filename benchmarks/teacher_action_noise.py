"""How much return a zoo teacher keeps when its own actions carry a small error: the noise floor of the ratio bar.

Each rl-zoo PPO Bullet teacher runs deterministically on the benchmark's 20 evaluation seeds, then again with
i.i.d. Gaussian noise of std sigma added to every action (then clipped to the bounds). A student whose actions
differ from the teacher's by about sigma can be expected near the same ratio. Results:
benchmarks/results/teacher_action_noise.json.

    python benchmarks/teacher_action_noise.py [--sigmas 0.01 0.02 0.05]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from policykd.artifacts import atomic_write_json, package_versions
from policykd.evaluate import run_episodes
from policykd.teachers import load_teacher

ZOO = Path(__file__).resolve().parents[1].parent / "shared" / "teachers" / "rl-zoo"
RESULTS = Path(__file__).resolve().parent / "results" / "teacher_action_noise.json"
EVAL_SEED = 1_000_000
NOISE_SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["HalfCheetahBulletEnv-v0", "HopperBulletEnv-v0", "ReacherBulletEnv-v0"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.01, 0.02, 0.05])
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [EVAL_SEED + i for i in range(args.episodes)]
    records = []
    for env_id in args.envs:
        teacher = load_teacher(ZOO / "ppo" / f"{env_id}_1")
        low, high = teacher.action_space.low, teacher.action_space.high
        clean = run_episodes(teacher.act, teacher.env_spec, seeds)
        for sigma in args.sigmas:
            rng = np.random.default_rng(NOISE_SEED)

            def noisy(obs: np.ndarray, sigma: float = sigma) -> np.ndarray:
                action = teacher.act(obs)
                return np.clip(action + sigma * rng.standard_normal(action.shape), low, high)

            episodes = run_episodes(noisy, teacher.env_spec, seeds)
            record = {
                "env": env_id, "teacher": f"rl-zoo/ppo/{env_id}", "sigma": sigma, "noise_seed": NOISE_SEED,
                "teacher_return": float(clean.returns.mean()), "noisy_return": float(episodes.returns.mean()),
                "ratio": float(episodes.returns.mean() / clean.returns.mean()),
                "short_episodes": int((episodes.lengths < clean.lengths.max()).sum()),
                "eval_seeds": [seeds[0], seeds[-1]],
            }
            records.append(record)
            print(f"{env_id} sigma {sigma}: ratio {record['ratio']:.3f}, {record['short_episodes']} of {len(seeds)} "
                  f"episodes ended early", flush=True)
    atomic_write_json(RESULTS, {"records": records, "versions": package_versions()})


if __name__ == "__main__":
    main()
