"""The sensor-only racecar students of benchmarks/privileged_racecar.py on the Cortex-M4 target: float C export,
instructions and modelled cycles per inference (policykd.embedded under qemu, policykd/cortex_m_cycles.py), time
at 168 MHz, flash and RAM, and whether the target's outputs are bit-identical to the host build's.

Reads the students that privileged_racecar.py kept (runs/privileged_racecar/students/), on two observations from
their own env (the view they see, after a seeded reset and one step), and writes
benchmarks/results/privileged_racecar_m4.json (one record per student folder; records already there are skipped).

    python benchmarks/privileged_racecar_m4.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from policykd import runtime
from policykd.artifacts import atomic_write_json, package_versions
from policykd.embedded import load_target, run_on_target

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ("instructions_per_inference", "cycles_per_inference", "us_per_inference", "max_rate_hz", "flash_bytes", "ram_bytes",
        "flash_fraction", "ram_fraction", "outputs_equal_host")


def real_observations(student_dir: Path) -> np.ndarray:
    """Two observations the student sees in its env: after a seeded reset and after one step of its own action."""
    env, policy = runtime.make_env(student_dir), runtime.load(student_dir)
    try:
        obs, _ = env.reset(seed=1_000_000)
        policy.reset()
        first = obs
        obs, *_ = env.step(policy(obs))
        return np.stack([first, obs]).astype(np.float32)
    finally:
        env.close()


def main() -> None:
    runs = json.loads((RESULTS / "privileged_racecar.json").read_text())["runs"]
    out_path = RESULTS / "privileged_racecar_m4.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"target": "cortex-m4", "students": []}
    done = {r["student_dir"] for r in results["students"]}
    target = load_target("cortex-m4")
    for run in runs:
        student_dir = run.get("student_dir")
        if not student_dir or student_dir in done or not (ROOT / student_dir).exists():
            continue
        card = json.loads((ROOT / student_dir / "student.json").read_text())
        heavy = bool(card["spec"].get("conv"))  # millions of traced instructions per inference: one is enough
        with tempfile.TemporaryDirectory() as tmp:
            result = run_on_target(ROOT / student_dir, target, real_observations(ROOT / student_dir), tmp,
                                   n_infer=1 if heavy else 20, export_format="c")
        record = {"student_dir": student_dir, "env": run["env"], "student": run.get("student", run["student_view"]),
                  "params": card["parameters"], "export_format": "c", "float_loop": "hand-scheduled (policykd/c_cortex_m.py)",
                  **{k: result[k] for k in KEYS}}
        results["students"].append(record)
        results["versions"] = package_versions()
        atomic_write_json(out_path, results)
        print(f"{record['env']} {record['student']}: {record['cycles_per_inference']:,.0f} cycles, {record['us_per_inference']:,.0f} us, "
              f"flash {record['flash_bytes']:,} B, RAM {record['ram_bytes']:,} B, bit-identical {record['outputs_equal_host']}", flush=True)


if __name__ == "__main__":
    main()
