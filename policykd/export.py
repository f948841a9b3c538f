"""Export a student to the runtimes a robot may have: safetensors+json, ONNX (fp32 / int8), TorchScript, C99
(float, or int16 fixed point for microcontrollers: c-int16).

Every artefact computes the student's deterministic env action from the raw observation (normalisation and
action scaling inside) and is written with a `export.json` record (format, source student, sha256, versions).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.numpy import load_file

from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions, sha256_file
from policykd.c_codegen import generate_c
from policykd.errors import PolicyKDError
from policykd.students import CARD_FILE, WEIGHTS_FILE, Student, load_student

FORMATS = ("safetensors", "onnx", "onnx-int8", "torchscript", "c", "c-int16")


class DeterministicActor(torch.nn.Module):
    """raw obs [B, obs_dim] -> env action [B, A] (float; the index as float for discrete students)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.student.act(obs).to(torch.float32)


def _export_onnx(student: Student, path: Path) -> None:
    actor = DeterministicActor(student).eval()
    dummy = torch.zeros(1, student.spec.obs_dim)
    torch.onnx.export(actor, (dummy,), str(path), input_names=["obs"], output_names=["action"], opset_version=17,
                      dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}}, dynamo=False)


def export_student(student_dir: str | Path, out_dir: str | Path, fmt: str) -> list[Path]:
    """Write `fmt` artefacts of the student in student_dir into out_dir; returns the files written."""
    if fmt not in FORMATS:
        raise PolicyKDError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    student_dir, out_dir = Path(student_dir), Path(out_dir)
    student = load_student(student_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        files = [out_dir / WEIGHTS_FILE, out_dir / CARD_FILE]
        for f in files:
            shutil.copyfile(student_dir / f.name, f)
    elif fmt == "onnx":
        files = [out_dir / "student.onnx"]
        _export_onnx(student, files[0])
    elif fmt == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32 = out_dir / ".student.fp32.onnx"
        _export_onnx(student, fp32)
        files = [out_dir / "student.int8.onnx"]
        quantize_dynamic(str(fp32), str(files[0]), weight_type=QuantType.QInt8)
        fp32.unlink()
    elif fmt == "torchscript":
        files = [out_dir / "student.torchscript.pt"]
        traced = torch.jit.trace(DeterministicActor(student).eval(), torch.zeros(1, student.spec.obs_dim))
        traced.save(str(files[0]))
    else:
        arithmetic = "int16" if fmt == "c-int16" else "float"
        header, source = generate_c(student.card, load_file(str(student_dir / WEIGHTS_FILE)), arithmetic=arithmetic)
        files = [out_dir / "policykd_student.h", out_dir / "policykd_student.c"]
        atomic_write_bytes(files[0], header.encode())
        atomic_write_bytes(files[1], source.encode())
    atomic_write_json(out_dir / f"export-{fmt}.json", {
        "format": fmt, "student": str(student_dir), "student_sha256": sha256_file(student_dir / WEIGHTS_FILE),
        "files": {f.name: sha256_file(f) for f in files}, "versions": package_versions(),
    })
    return files
