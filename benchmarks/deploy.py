"""Deployment numbers for a 2x64 student of the rl-zoo PPO HalfCheetahBullet teacher: latency per backend
(with the teacher and SB3 predict() in the same run), export parity, and the embedded targets.

The student is checked in under benchmarks/students/halfcheetah-2x64 (made with
`policykd distill -c configs/distill/zoo_halfcheetah.yaml --run-name halfcheetah-2x64`), so these numbers can be
re-measured without distilling again. Run on an otherwise idle machine:

    python benchmarks/deploy.py                   # writes benchmarks/results/deploy_halfcheetah.json
    python benchmarks/deploy.py --embedded-only   # re-measures only the embedded targets (emulated: any machine)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import policykd.runtime as runtime
from policykd.artifacts import atomic_write_json, package_versions
from policykd.embedded import load_target, missing_tools, run_on_target
from policykd.export import FORMATS, export_student
from policykd.latency_backends import backend_latencies
from policykd.plots import latency_histograms
from policykd.rollout import run_episodes
from policykd.students import load_student
from policykd.teachers import load_teacher
from policykd.zoo import default_teachers_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "deploy_halfcheetah.json"
STUDENT = ROOT / "benchmarks" / "students" / "halfcheetah-2x64"
TEACHER = default_teachers_dir() / "rl-zoo" / "ppo" / "HalfCheetahBulletEnv-v0_1"  # $POLICYKD_TEACHERS, else ../shared/teachers


def parity(student_dir: Path, obs: np.ndarray, work: Path) -> dict[str, float]:
    """Max |action - torch student action| per export format over obs [N, obs_dim]."""
    student = load_student(student_dir)
    with torch.no_grad():
        expected = student.act(obs)
    result = {}
    for fmt in FORMATS:
        files = export_student(student_dir, work / fmt, fmt)
        if fmt == "safetensors":
            actual = runtime.load(work / fmt).batch(obs)
        elif fmt in ("onnx", "onnx-int8"):
            actual = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"]).run(None, {"obs": obs})[0]
        elif fmt == "torchscript":
            with torch.no_grad():
                actual = torch.jit.load(str(files[0]))(torch.as_tensor(obs)).numpy()
        else:
            policy = runtime.load_c(student_dir, work / fmt)
            actual = np.stack([policy(o) for o in obs])
        result[fmt] = float(np.max(np.abs(actual - expected)))
    return result


def embedded_targets(real: np.ndarray, work: Path) -> list[dict]:
    """Each embedded target and C export on real observations [N, obs_dim]: flash, RAM, instructions, modelled time,
    outputs against the host build (targets whose toolchain is missing are skipped, with a line)."""
    targets = []
    for name, fmt in (("cortex-m4", "c"), ("cortex-m4", "c-int16"), ("cortex-m4", "c-int8"), ("aarch64", "c"),
                      ("aarch64", "c-int16")):
        target = load_target(name)
        if missing_tools(target):
            print(f"{name}: skipped, missing {missing_tools(target)}")
            continue
        result = run_on_target(STUDENT, target, real[:32], work / f"{name}-{fmt}", n_infer=20, export_format=fmt)
        targets.append({k: v for k, v in result.items() if not k.endswith("_outputs")})
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedded-only", action="store_true",
                        help="re-measure the embedded targets only, keeping the latency and parity of the last full run")
    args = parser.parse_args()
    teacher = load_teacher(TEACHER)
    torch.set_num_threads(1)
    episodes = run_episodes(lambda o: teacher.act(o), teacher.env_spec, [7, 8])
    rng = np.random.default_rng(0)
    real = episodes.states[rng.choice(len(episodes.states), 1000, replace=False)]
    student = load_student(STUDENT)
    random = (student.obs_mean.numpy() + rng.normal(size=real.shape) * 3 * student.obs_std.numpy()).astype(np.float32)
    obs = np.concatenate([real, random]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        if args.embedded_only:
            report = json.loads(RESULTS.read_text())
            report.update({"embedded": embedded_targets(real, Path(tmp)), "embedded_versions": package_versions()})
            atomic_write_json(RESULTS, report)
            _print_targets(report["embedded"])
            return
        parities = parity(STUDENT, obs, Path(tmp))
        samples: dict = {}
        latency = backend_latencies(STUDENT, ("torch", "numpy", "onnx", "c", "c-ctypes"), teacher=teacher, calls=10_000,
                                    work_dir=Path(tmp) / "bench", samples=samples)
        latency_histograms(samples, ROOT / "benchmarks" / "results" / "latency_halfcheetah.png",
                           title="HalfCheetahBullet 2x64 student vs teacher: batch-1 latency, 10,000 calls per path")
        targets = embedded_targets(real, Path(tmp))
    sb3 = latency["sb3_predict"]["p50"]
    report = {
        "student": str(STUDENT.relative_to(ROOT)), "teacher": "rl-zoo/ppo/HalfCheetahBulletEnv-v0",
        "student_params": student.parameter_count(), "teacher_actor_params": teacher.actor_parameter_count(),
        "latency_us": latency, "speedup_vs_sb3_predict_p50": {k: sb3 / v["p50"] for k, v in latency.items()},
        "parity_max_abs_diff": parities, "parity_observations": {"real": 1000, "random": 1000},
        "embedded": targets, "versions": package_versions(),
    }
    atomic_write_json(RESULTS, report)
    for k, v in latency.items():
        print(f"{k:14s} p50 {v['p50']:8.2f} us  p99 {v['p99']:8.2f} us  ({sb3 / v['p50']:.1f}x vs SB3 predict)")
    print("parity:", parities)
    _print_targets(targets)


def _print_targets(targets: list[dict]) -> None:
    for t in targets:
        print(t["target"], t["export_format"], {k: t.get(k) for k in ("flash_bytes", "ram_bytes", "instructions_per_inference", "us_per_inference", "outputs_equal_host")})


if __name__ == "__main__":
    main()
