"""The 2x64 HalfCheetahBullet student on the Cortex-M4 target, per C export: instructions, modelled cycles, time at
168 MHz, flash and RAM (policykd.embedded under qemu, cycle model policykd/cortex_m_cycles.py). Also a tanh
student of the same shapes (random weights: the cycle count does not depend on the values, apart from tanhf's
own branches), to see what tanhf costs. Writes benchmarks/results/cortex_m4_budget.json.

    python benchmarks/cortex_m4_budget.py
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from policykd.artifacts import atomic_write_json, package_versions
from policykd.embedded import load_target, run_on_target
from policykd.students import Student, StudentSpec, load_student

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "benchmarks" / "students" / "halfcheetah-2x64"
KEYS = ("export_format", "instructions_per_inference", "cycles_per_inference", "us_per_inference", "flash_bytes", "ram_bytes",
        "outputs_equal_host")


def main() -> None:
    target = load_target("cortex-m4")
    relu = load_student(STUDENT)
    spec = relu.spec
    obs = np.random.default_rng(0).normal(size=(8, spec.obs_dim)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tanh_dir = Path(tmp) / "tanh"
        torch.manual_seed(0)
        Student(dataclasses.replace(StudentSpec.from_json(relu.card["spec"]), activation="tanh")).save(tanh_dir)
        for label, directory, formats in (("relu (shipped student)", STUDENT, ("c", "c-int16", "c-int8")), ("tanh (same shapes)", tanh_dir, ("c",))):
            for fmt in formats:
                result = run_on_target(directory, target, obs, Path(tmp) / f"{label[:4]}-{fmt}", export_format=fmt)
                rows.append({"student": label, **{k: result[k] for k in KEYS}})
                print(f"{label:24s} {fmt:8s} {result['instructions_per_inference']:>9,.0f} instr {result['cycles_per_inference']:>9,.0f} "
                      f"cycles {result['us_per_inference']:6.1f} us flash {result['flash_bytes']:,} ram {result['ram_bytes']:,}", flush=True)
    widths = [spec.obs_dim, *spec.hidden, spec.action_dim]
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    atomic_write_json(ROOT / "benchmarks" / "results" / "cortex_m4_budget.json", {
        "student": str(STUDENT.relative_to(ROOT)), "macs_per_inference": macs, "clock_hz": target["clock_hz"], "rows": rows,
        "versions": package_versions()})


if __name__ == "__main__":
    main()
