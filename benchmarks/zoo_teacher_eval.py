"""Reproduce the published returns of the rl-zoo Bullet teachers with `policykd teacher eval`.

Runs the CLI for each teacher (10 deterministic episodes on seeds 1000000..1000009 by default) and writes
benchmarks/results/zoo_teacher_eval.json with the published mean / std beside the measured ones.

    python benchmarks/zoo_teacher_eval.py [--episodes 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from policykd.artifacts import atomic_write_json, package_versions
from policykd.zoo import default_teachers_dir

ZOO = default_teachers_dir() / "rl-zoo"  # $POLICYKD_TEACHERS/rl-zoo, else ../shared/teachers/rl-zoo
RESULTS = Path(__file__).resolve().parent / "results" / "zoo_teacher_eval.json"
# rl-zoo benchmark.md (deterministic policy), as listed in shared/teachers/rl-zoo/README.md
PUBLISHED = {
    ("ppo", "HalfCheetahBulletEnv-v0"): (2924.7, 64.5),
    ("ppo", "HopperBulletEnv-v0"): (2575.1, 223.3),
    ("ppo", "ReacherBulletEnv-v0"): (17.1, 11.0),
    ("a2c", "HalfCheetahBulletEnv-v0"): (2107.4, 36.0),
    ("trpo", "HopperBulletEnv-v0"): (2565.4, 410.3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    records = []
    for (algo, env_id), (published_mean, published_std) in PUBLISHED.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "eval.json"
            subprocess.run([sys.executable, "-m", "policykd.cli", "teacher", "eval", str(ZOO / algo / f"{env_id}_1"),
                            "--episodes", str(args.episodes), "--json", str(out)], check=True)
            result = json.loads(out.read_text())
        record = {"algo": algo, "env": env_id, "published_mean": published_mean, "published_std": published_std,
                  "mean": result["mean"], "std": result["std"], "iqm": result["iqm"], "episodes": result["episodes"],
                  "seeds": result["seeds"], "returns": result["returns"],
                  "within_published_std": abs(result["mean"] - published_mean) <= published_std}
        records.append(record)
        print(f"{algo} {env_id}: {record['mean']:.1f} +- {record['std']:.1f} (published {published_mean} +- {published_std}) "
              f"{'OK' if record['within_published_std'] else 'OUTSIDE'}", flush=True)
    atomic_write_json(RESULTS, {"records": records, "versions": package_versions()})


if __name__ == "__main__":
    main()
