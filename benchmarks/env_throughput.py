"""Raw steps/s of policykd's own envs (and one Bullet locomotion env for scale), and of the racecar with its student
views computed every step (the camera view renders a 64x48 frame per step): one process, random actions,
resets included, no policy. Writes benchmarks/results/env_throughput.json.

    python benchmarks/env_throughput.py [--steps 5000]

raw_env_throughput (the same through policykd's vector env) is imported by the other benchmarks
(`from env_throughput import raw_env_throughput`, benchmarks/ being the script's folder on sys.path).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import policykd_envs
from policykd.artifacts import atomic_write_json, package_versions
from policykd.env_factory import EnvSpec
from policykd.rollout import make_vector_env

RESULTS = Path(__file__).resolve().parent / "results" / "env_throughput.json"


def steps_per_second(env_id: str, steps: int, seed: int = 0, view: str = "") -> float:
    """Steps/s of one env in this process; view: with that student view computed after every step (policykd.views)."""
    env = EnvSpec(env_id).with_view(view).make()
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def raw_env_throughput(spec: EnvSpec, *, steps: int, n_envs: int = 2, seed: int = 0) -> float:
    """Env steps per second of policykd's vector env of `spec` (n_envs workers, as collection uses it) under
    random actions, without any policy."""
    envs = make_vector_env(spec, n_envs)
    try:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
        start = time.perf_counter()
        for _ in range(steps // n_envs):
            envs.step(envs.action_space.sample())
        return (steps // n_envs) * n_envs / (time.perf_counter() - start)
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    records = []
    rows = [(env_id, "") for env_id in (*policykd_envs.ENV_IDS, "InvertedDoublePendulumBulletEnv-v0", "HalfCheetahBulletEnv-v0")]
    rows += [("PolicyKD/RacecarTrack-v0", "rays"), ("PolicyKD/RacecarTrack-v0", "camera")]  # the student views' cost
    for env_id, view in rows:
        rate = steps_per_second(env_id, args.steps, view=view)
        records.append({"env": env_id, "view": view, "steps": args.steps, "steps_per_s": rate, "actions": "uniform random, seed 0",
                        "processes": 1, "versions": package_versions()})
        print(f"{env_id + (f' ({view} view)' if view else ''):40s} {rate:8.0f} steps/s", flush=True)
    atomic_write_json(RESULTS, records)


if __name__ == "__main__":
    main()
