"""Run a student in a fixed-rate control loop against a simulator, with no torch, and report deadline misses.

    python examples/control_loop.py runs/demo/student --rate 200 --seconds 10 [--backend c --c-dir runs/demo/export-c]

Each tick: read the observation, compute the action (numpy runtime, or the compiled C export through ctypes),
step the simulator, then sleep until the next tick. A tick whose work ends after its deadline (start + period)
is a miss. The simulator step is part of the tick here, as it would be the robot's I/O.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

import policykd.runtime
from policykd.errors import PolicyKDError

MAX_TICKS = 10_000_000  # rate x seconds: what one run may loop (about a day at 100 Hz)


def positive(value: str) -> float:
    """A rate or duration: a positive, finite number."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", type=Path)
    parser.add_argument("--rate", type=positive, default=200.0, help="control rate in Hz")
    parser.add_argument("--seconds", type=positive, default=5.0)
    parser.add_argument("--backend", choices=["numpy", "c"], default="numpy")
    parser.add_argument("--c-dir", type=Path, help="folder of `policykd export --format c` (for --backend c)")
    args = parser.parse_args()
    ticks = round(args.rate * args.seconds)  # 100 Hz x 0.29 s is 29 ticks, not int(28.999...)
    if not 1 <= ticks <= MAX_TICKS:
        parser.error(f"--rate x --seconds gives {args.rate * args.seconds:.3g} ticks; give between 1 and {MAX_TICKS:,}")
    if args.c_dir is not None and args.backend != "c":
        parser.error("--c-dir is for --backend c; add --backend c or drop --c-dir")

    env = policykd.runtime.make_env(args.student)  # the env as the teacher was trained (wrappers included), from the card
    if args.backend == "c":
        if args.c_dir is None:
            parser.error("--backend c needs --c-dir (run `policykd export STUDENT --format c` first)")
        policy = policykd.runtime.load_c(args.student, args.c_dir)
    else:
        policy = policykd.runtime.load(args.student)

    period = 1.0 / args.rate
    infer_us, misses, episode_return, returns = np.empty(ticks), 0, 0.0, []
    obs, _ = env.reset(seed=0)
    next_tick = time.perf_counter()
    for i in range(ticks):
        start = time.perf_counter()
        action = policy(obs)
        infer_us[i] = (time.perf_counter() - start) * 1e6
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)
        if terminated or truncated:
            returns.append(episode_return)
            episode_return = 0.0
            obs, _ = env.reset()
        next_tick += period
        if time.perf_counter() > next_tick:
            misses += 1
            next_tick = time.perf_counter()  # do not try to catch up: skip to now
        else:
            time.sleep(max(0.0, next_tick - time.perf_counter()))
    env.close()
    print(f"{ticks} ticks at {args.rate:g} Hz with the {args.backend} backend: {misses} deadline misses ({misses / ticks:.2%}); "
          f"inference p50 {np.percentile(infer_us, 50):.1f} us, p99 {np.percentile(infer_us, 99):.1f} us, max {infer_us.max():.1f} us; "
          f"episode returns {[round(r, 1) for r in returns]}")


if __name__ == "__main__":
    try:
        main()
    except PolicyKDError as e:  # a folder that is not a student, an observation it cannot take: one line
        raise SystemExit(f"error: {e}") from None
