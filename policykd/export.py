"""Export a student to the runtimes a robot may have: safetensors+json, ONNX (fp32 / int8), TorchScript, C99
(float, or fixed point for microcontrollers: c-int16, and c-int8 in the CMSIS-NN layout).

Every artefact computes the student's deterministic env action from the raw observation (normalisation and
action scaling inside) and is written with an `export-FORMAT.json` record (format, source student, sha256,
versions, parity). After writing, every format whose runtime is available here (numpy runtime, onnxruntime,
TorchScript, a C compiler `cc`) is run on PARITY_OBSERVATIONS observations drawn around the normaliser
(mean + std * N(0, 1)) and compared with the torch student; the result is the record's "parity", and a
failure raises PolicyKDError with nothing written (the artefacts are staged, checked, then moved in). A file already
in the export folder is replaced only when one of policykd's export records there vouches for it (its sha256).

onnx-int8 is built here from the student's weights, not by onnxruntime.quantization (whose heuristics change
between versions): each weight matrix is quantised symmetrically per output row to int8 (+-127, one float scale
per row), stored as an INT8 initializer and dequantised in the graph (Cast to float, times the row scales) before
a float MatMul; normalisation, biases, activations and the action mapping stay float. Its error is therefore the
weight rounding only (at most half a step of each row's scale per weight), the same in every onnxruntime.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from policykd import student_format as fmt
from policykd.artifacts import atomic_write_bytes, atomic_write_json, package_versions, sha256_file
from policykd.c_codegen import MAX_LAYER_INPUTS, generate_c
from policykd.distributions import family_strategy
from policykd.errors import PolicyKDError
from policykd.students import CARD_FILE, WEIGHTS_FILE, Student, load_student

FORMATS = ("safetensors", "onnx", "onnx-int8", "torchscript", "c", "c-int16", "c-int8")
MLP_ONLY_FORMATS = ("onnx-int8", "c-int16", "c-int8")  # quantised layouts of Linear layers; CNN students are refused
PARITY_OBSERVATIONS = 1000
# Documented parity tolerances: float formats within 1e-5 (relative to the action scale when it exceeds 1);
# quantised formats within a fraction of the action range, and argmax agreement for discrete students.
EXACT_TOLERANCE = 1e-5
RANGE_FRACTION = {"onnx-int8": 0.05, "c-int16": 0.01, "c-int8": 0.1}
MIN_ARGMAX_AGREEMENT = 0.97
ONNX_OPSET, ONNX_IR_VERSION = 17, 8  # IR 8 / opset 17: loads in every onnxruntime >= 1.17 that pyproject allows


class DeterministicActor(torch.nn.Module):
    """raw obs [B, obs_dim] -> env action [B, A] (float; the index as float for discrete students)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.student.act_torch(obs).to(torch.float32)


class RecurrentActor(torch.nn.Module):
    """A recurrent student's step: (raw obs [B, obs_dim], state [B, G]) -> (env action [B, A], next state [B, G])."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        action, next_state = self.student.act_step_torch(obs, state)
        return action.to(torch.float32), next_state


def _traceable(student: Student) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The module an ONNX or TorchScript export traces, and example inputs: obs (and, recurrent, the state)."""
    obs = torch.zeros(1, student.spec.obs_dim)
    if student.recurrent:
        return RecurrentActor(student).eval(), (obs, student.initial_state(1))
    return DeterministicActor(student).eval(), (obs,)


def _export_onnx(student: Student, path: Path) -> None:
    """obs [batch, obs_dim] -> action; a recurrent student: (obs, state [batch, G]) -> (action, next_state)."""
    actor, inputs = _traceable(student)
    names_in, names_out = (["obs", "state"], ["action", "next_state"]) if student.recurrent else (["obs"], ["action"])
    torch.onnx.export(actor, inputs, str(path), input_names=names_in, output_names=names_out, opset_version=17,
                      dynamic_axes={name: {0: "batch"} for name in names_in + names_out}, dynamo=False)


def _quantise_rows(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W [out, in] -> (q [out, in] int8 in [-127, 127], scale [out] float32) with W ~= q * scale[:, None]."""
    weight = np.asarray(weight, dtype=np.float64)
    scale = np.abs(weight).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    scale = scale.astype(np.float32)  # round the scale first, so q is rounded against the scale stored
    q = np.clip(np.rint(weight / scale.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _int8_onnx_model(card: dict, weights: dict[str, np.ndarray]):
    """The onnx-int8 graph of a student: obs [batch, obs_dim] -> action [batch, A] (or [batch] index as float)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    spec = card["spec"]
    strategy, activation = family_strategy(spec["family"]), spec["activation"]
    f32 = lambda name: np.asarray(weights[name], dtype=np.float32)  # noqa: E731
    initializers, nodes = [], []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    clip = fmt.effective_clip(np.asarray(weights["obs_clip"]).reshape(()))
    x = node("Sub", ["obs", const("obs_mean", f32("obs_mean"))], "centred")
    x = node("Div", [x, const("obs_std", f32("obs_std"))], "scaled")
    x = node("Clip", [x, const("clip_low", np.float32(-clip)), const("clip_high", np.float32(clip))], "normalised")
    layers = [(f"trunk.{2 * i}", True) for i in range(len(spec["hidden"]))] + [("action_head", False)]
    for i, (prefix, activate) in enumerate(layers):
        q, scale = _quantise_rows(weights[f"{prefix}.weight"])
        # Cast + Mul, not DequantizeLinear: recent onnxruntimes fuse DequantizeLinear -> MatMul into MatMulNBits, which
        # by default also quantises the activations to int8 (session.qdq_matmulnbits_accuracy_level), an error that
        # depends on the onnxruntime version. Cast + Mul of initializers is constant-folded to the same float matrix.
        w = node("Cast", [const(f"w{i}_int8", np.ascontiguousarray(q.T))], f"w{i}_float", to=TensorProto.FLOAT)
        w = node("Mul", [w, const(f"w{i}_scale", scale)], f"w{i}")  # [in, out] * [out]: one scale per output
        x = node("Add", [node("MatMul", [x, w], f"matmul{i}"), const(f"b{i}", f32(f"{prefix}.bias"))], f"linear{i}")
        if activate:
            op, attrs = {"relu": ("Relu", {}), "tanh": ("Tanh", {}), "elu": ("Elu", {"alpha": 1.0})}[activation]
            x = node(op, [x], f"hidden{i}", **attrs)
    if strategy.discrete:
        node("Cast", [node("ArgMax", [x], "index", axis=1, keepdims=0)], "action", to=TensorProto.FLOAT)
        out_shape = ["batch"]
    elif strategy.clips_to_bounds:
        x = node("Min", [x, const("action_high", f32("action_high"))], "below_high")
        node("Max", [x, const("action_low", f32("action_low"))], "action")
        out_shape = ["batch", spec["action_dim"]]
    else:  # squashed_gaussian / deterministic: low + (tanh + 1) / 2 * (high - low)
        low, high = f32("action_low"), f32("action_high")
        x = node("Add", [node("Tanh", [x], "squashed"), const("one", np.float32(1.0))], "shifted")
        x = node("Mul", [x, const("half_range", (0.5 * (high - low)).astype(np.float32))], "spread")
        node("Add", [x, const("action_low", low)], "action")
        out_shape = ["batch", spec["action_dim"]]
    graph = helper.make_graph(
        nodes, "policykd_student_int8",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", spec["obs_dim"]])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, out_shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="policykd",
                              ir_version=ONNX_IR_VERSION,
                              doc_string="policykd student: int8 weights (symmetric, per output row), float activations")
    helper.set_model_props(model, {"policykd.quantisation": "weight-only int8, symmetric per output row"})
    onnx.checker.check_model(model)
    return model


def _parity_observations(student: Student, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean, std = student.obs_mean.numpy().astype(np.float64), student.obs_std.numpy().astype(np.float64)
    return (mean + std * rng.standard_normal((n, student.spec.obs_dim))).astype(np.float32)


def _sequence(step: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], size: int) -> Callable[[np.ndarray], np.ndarray]:
    """obs [N, obs_dim] as one episode from a zero state, through step(obs [1, d], state [1, G]) -> (action, state)."""
    def run(obs: np.ndarray) -> np.ndarray:
        state, actions = np.zeros((1, size), dtype=np.float32), []
        for o in obs:
            action, state = step(o[None], state)
            actions.append(np.asarray(action)[0])
        return np.array(actions)
    return run


def _runner(fmt: str, files: list[Path], out_dir: Path, student: Student) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """A function obs [B, obs_dim] -> actions running the written artefact, or (None, why it cannot run here). For a
    recurrent student the B observations are one episode, in order, from a zero state."""
    recurrent, size = student.recurrent, student.spec.gru
    if fmt == "safetensors":
        import policykd.runtime

        policy = policykd.runtime.load(out_dir)
        if recurrent:
            policy.reset()
            return (lambda obs: np.array([policy(o) for o in obs])), "numpy runtime"
        return policy.batch, "numpy runtime"
    if fmt in ("onnx", "onnx-int8"):
        if importlib.util.find_spec("onnxruntime") is None:
            return None, "onnxruntime is not installed"
        try:  # installed: a failing import (a broken install, or Ctrl-C while its native module loads) is no skip
            import onnxruntime as ort
        except ImportError as e:
            raise PolicyKDError(f"onnxruntime is installed but did not import ({str(e).splitlines()[0] if str(e) else 'ImportError'}); "
                                "reinstall it (pip install --force-reinstall onnxruntime) and export again") from e
        session = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
        runtime = f"onnxruntime {ort.__version__} CPU"
        if recurrent:
            return _sequence(lambda o, h: tuple(session.run(None, {"obs": o, "state": h})), size), runtime
        return (lambda obs: session.run(None, {"obs": obs})[0]), runtime
    if fmt == "torchscript":
        module = torch.jit.load(str(files[0]))

        def run(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.as_tensor(obs)).numpy()

        def step(obs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                action, next_state = module(torch.as_tensor(obs), torch.as_tensor(state))
            return action.numpy(), next_state.numpy()

        return (_sequence(step, size) if recurrent else run), "torch.jit"
    compiler = shutil.which("cc")
    if compiler is None:
        return None, "no C compiler (cc) on PATH"
    import policykd.runtime

    with tempfile.TemporaryDirectory(prefix="policykd-parity-") as build:  # keep the export folder to its artefacts
        for f in files:
            shutil.copyfile(f, Path(build) / f.name)
        library = policykd.runtime.compile_c_export(build, compiler=compiler)
        spec = student.spec
        policy = policykd.runtime.CPolicy(library, spec.obs_dim, spec.action_dim, spec.family)  # loaded: the file may go
    policy.reset()  # a recurrent export: the observations are one episode
    return (lambda obs: np.array([policy(o) for o in obs])), "cc -O2, ctypes"


def _largest_bound(student: Student) -> float:
    """The largest finite |action bound| of a continuous student; nan when unbounded."""
    low, high = student.action_low.numpy().astype(np.float64), student.action_high.numpy().astype(np.float64)
    bounds = np.abs(np.concatenate([low[np.isfinite(low)], high[np.isfinite(high)]]))
    return float(bounds.max()) if bounds.size else float("nan")


def check_parity(student: Student, fmt: str, files: list[Path], out_dir: Path, *,
                 observations: int = PARITY_OBSERVATIONS, seed: int = 0) -> dict[str, Any]:
    """Run the written artefact and the torch student on the same observations; the record for export-FORMAT.json.

    Continuous: {"observations", "max_abs_diff", "tolerance", "passed", ...}; discrete: argmax agreement instead.
    When no runtime for fmt is available here: {"observations": 0, "skipped": why, "passed": None}.
    """
    run, runtime = _runner(fmt, files, out_dir, student)
    if run is None:
        return {"observations": 0, "skipped": runtime, "passed": None}
    obs = _parity_observations(student, observations, seed)
    with torch.no_grad():
        if student.recurrent:  # one episode of `observations` steps from a zero state
            dist, _, _ = student.unroll(torch.as_tensor(obs)[:, None], student.initial_state(1))
            logits = dist.params.get("logits")
            expected = student.strategy.to_env_action(dist.mode(), student.action_low, student.action_high)
        else:
            expected = DeterministicActor(student).eval()(torch.as_tensor(obs))
            logits = None
        expected = expected.to(torch.float32).numpy().astype(np.float64)
    actual = np.asarray(run(obs), dtype=np.float64)
    record: dict[str, Any] = {"observations": int(observations), "runtime": runtime,
                              "observations_drawn": "normaliser mean + std * N(0, 1)"}
    if student.recurrent:
        record["sequence"] = "the observations as one episode, in order, from a zero state"
    if student.strategy.discrete:
        expected, actual = expected.reshape(-1), actual.reshape(-1)
        agree = actual == expected
        record["argmax_agreement"] = float(agree.mean())
        if fmt in RANGE_FRACTION:
            record["min_agreement"] = MIN_ARGMAX_AGREEMENT
            record["passed"] = bool(agree.mean() >= MIN_ARGMAX_AGREEMENT)
        else:  # float formats: a disagreement is only allowed where the torch logits are tied within float rounding
            with torch.no_grad():
                if logits is None:
                    logits = student.action_head(student.trunk(student.encode(torch.as_tensor(obs))))
                logits = logits.numpy().astype(np.float64)
            top2 = np.sort(logits, axis=1)[:, -2:]
            tied = (top2[:, 1] - top2[:, 0]) <= 1e-4 * (1.0 + np.abs(top2[:, 1]))
            record["min_agreement"] = 1.0
            record["ties_excepted"] = "torch top-2 logits within 1e-4 x (1 + |top logit|)"
            record["disagreements_outside_ties"] = int(np.sum(~agree & ~tied))
            record["passed"] = record["disagreements_outside_ties"] == 0
        return record
    actual = actual.reshape(expected.shape)
    diffs = np.abs(actual - expected).reshape(len(expected), -1).max(axis=0, initial=0.0)  # [A] per action dimension
    if fmt in RANGE_FRACTION:  # each dimension within a fraction of its own range (a gripper's 4 cm beside +-1 joints)
        ranges = _dimension_ranges(student, expected)
        tolerances = RANGE_FRACTION[fmt] * ranges
        worst = int(np.argmax(diffs / tolerances))
        diff, tolerance = float(diffs[worst]), float(tolerances[worst])
        record["tolerance_basis"] = (f"{RANGE_FRACTION[fmt]:.0%} of each action dimension's range (worst: dimension {worst}, "
                                     f"range {ranges[worst]:g})")
        passed = bool(np.all(diffs <= tolerances))
    else:
        bound = _largest_bound(student)
        scale = bound if np.isfinite(bound) else float(np.max(np.abs(expected), initial=0.0))
        diff, tolerance = float(diffs.max(initial=0.0)), EXACT_TOLERANCE * max(1.0, scale)
        record["tolerance_basis"] = f"{EXACT_TOLERANCE:g} x max(1, action scale)"
        passed = diff <= tolerance
    finite = bool(np.all(np.isfinite(actual)))
    record.update({"max_abs_diff": diff if finite else float("inf"), "tolerance": float(tolerance),
                   "passed": bool(finite and passed)})
    return record


def _dimension_ranges(student: Student, expected: np.ndarray) -> np.ndarray:
    """[A] each action dimension's range high - low; where unbounded, the spread of the torch student's actions
    there (1 when they do not vary)."""
    span = (student.action_high.numpy().astype(np.float64) - student.action_low.numpy().astype(np.float64)).reshape(-1)
    spread = np.ptp(expected.reshape(len(expected), -1), axis=0) if len(expected) else np.zeros_like(span)
    return np.where(np.isfinite(span), span, np.where(spread > 0, spread, 1.0))


def describe_parity(parity: dict[str, Any]) -> str:
    """One line for the CLI, e.g. 'parity vs torch student on 1000 observations: max |diff| 3.1e-07 (tolerance 1e-05)'."""
    if parity.get("passed") is None:
        return f"parity vs torch student: not checked ({parity.get('skipped', 'no runtime here')})"
    head = f"parity vs torch student on {parity['observations']} observations: "
    if "argmax_agreement" in parity:
        required = f">= {parity['min_agreement']:.0%}"
        if "ties_excepted" in parity:
            required = f"{parity['min_agreement']:.0%} outside logit near-ties"
        return (head + f"argmax agreement {parity['argmax_agreement']:.1%} (required {required})"
                + ("" if parity["passed"] else " FAILED"))
    return (head + f"max |diff| {parity['max_abs_diff']:.2g} (tolerance {parity['tolerance']:.2g})"
            + ("" if parity["passed"] else " FAILED"))


def export_with_parity(student_dir: str | Path, out_dir: str | Path, fmt: str, *, observations: int = PARITY_OBSERVATIONS,
                       keep_failed_parity: bool = False) -> tuple[list[Path], dict[str, Any]]:
    """Write `fmt` artefacts of the student in student_dir into out_dir, checked against the torch student.

    The artefacts are written and checked in a staging folder inside out_dir, then moved in: a failed check
    (PolicyKDError) leaves out_dir as it was, and a file already there is replaced only when an export record in
    out_dir says policykd wrote it (same sha256). Returns (files written, parity record, also in
    out_dir/export-FORMAT.json); records of other formats whose files this export replaced are removed.
    keep_failed_parity: write the export even when its check fails (its record says so), for `policykd eval
    --backend`, which judges a quantised export by its return in closed loop.
    """
    if fmt not in FORMATS:
        raise PolicyKDError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    student_dir, out_dir = Path(student_dir), Path(out_dir)
    student = load_student(student_dir)
    if (student.spec.conv or student.recurrent) and fmt in MLP_ONLY_FORMATS:
        kind = "a CNN" if student.spec.conv else "a recurrent"
        raise PolicyKDError(f"{student_dir} is {kind} student and {fmt} export supports MLP students only; export it with "
                            f"--format c (float C), onnx or torchscript")
    arithmetic = {"c-int16": "int16", "c-int8": "int8"}.get(fmt)
    widest = max([student.spec.obs_dim, *student.spec.hidden])
    if arithmetic and widest > MAX_LAYER_INPUTS[arithmetic]:
        raise PolicyKDError(f"{fmt} export sums each layer exactly in int32, which holds layer inputs of at most "
                            f"{MAX_LAYER_INPUTS[arithmetic]:,}; this student's widest is {widest:,}: export it with "
                            f"{'--format c-int8 or ' if arithmetic == 'int16' else ''}--format c")
    created = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]  # deepest first
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=f".export-{fmt}-", dir=out_dir) as staging:
            staged = _write_artefacts(student, student_dir, Path(staging), fmt)
            parity = check_parity(student, fmt, staged, Path(staging), observations=observations)
            if parity["passed"] is False and not keep_failed_parity:
                raise PolicyKDError(f"{fmt} export of {student_dir} failed its {describe_parity(parity)}; nothing was written to "
                                    f"{out_dir}, do not deploy it")
            _check_replaceable(out_dir, [f.name for f in staged])
            files = [out_dir / f.name for f in staged]
            for source, destination in zip(staged, files, strict=True):
                os.replace(source, destination)
    except BaseException:
        for folder in created:  # the folders this export made, while they are still empty: nothing is left behind
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    _drop_stale_records(out_dir, keep=fmt)
    atomic_write_json(out_dir / f"export-{fmt}.json", {
        "format": fmt, "student": str(student_dir), "student_sha256": sha256_file(student_dir / WEIGHTS_FILE),
        "files": {f.name: sha256_file(f) for f in files}, "versions": package_versions(), "parity": parity,
    })
    return files, parity


def _write_artefacts(student: Student, student_dir: Path, folder: Path, fmt: str) -> list[Path]:
    """The files of one export format, written into `folder`."""
    if fmt == "safetensors":
        files = [folder / WEIGHTS_FILE, folder / CARD_FILE]
        for f in files:
            shutil.copyfile(student_dir / f.name, f)
    elif fmt == "onnx":
        files = [folder / "student.onnx"]
        _export_onnx(student, files[0])
    elif fmt == "onnx-int8":
        files = [folder / "student.int8.onnx"]
        model = _int8_onnx_model(student.card, load_file(str(student_dir / WEIGHTS_FILE)))
        atomic_write_bytes(files[0], model.SerializeToString())
    elif fmt == "torchscript":
        files = [folder / "student.torchscript.pt"]
        traced = torch.jit.trace(*_traceable(student))
        traced.save(str(files[0]))
    else:
        arithmetic = {"c": "float", "c-int16": "int16", "c-int8": "int8"}[fmt]
        header, source = generate_c(student.card, load_file(str(student_dir / WEIGHTS_FILE)), arithmetic=arithmetic)
        files = [folder / "policykd_student.h", folder / "policykd_student.c"]
        atomic_write_bytes(files[0], header.encode())
        atomic_write_bytes(files[1], source.encode())
    return files


def _export_records(out_dir: Path) -> dict[Path, dict[str, Any]]:
    """The export-FORMAT.json records in out_dir that parse as ours ({"format", "files": {name: sha256}})."""
    records = {}
    for path in sorted(out_dir.glob("export-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("files"), dict) and "format" in record:
            records[path] = record
    return records


def _check_replaceable(out_dir: Path, names: list[str]) -> None:
    """Refuse to replace a file in out_dir that no export record there vouches for (a user's file, or an export
    edited since it was written)."""
    ours = {(name, digest) for record in _export_records(out_dir).values() for name, digest in record["files"].items()}
    for name in names:
        path = out_dir / name
        if path.exists() and (name, sha256_file(path) if path.is_file() else None) not in ours:
            if (out_dir / "student.json").is_file():
                raise PolicyKDError(f"--out {out_dir} is a student folder and the export would replace its {name}; "
                                    "pass another --out (default: beside the student)")
            raise PolicyKDError(f"{path} exists and was not written by `policykd export` (or was changed since); move it "
                                f"away or pass another --out")


def _drop_stale_records(out_dir: Path, *, keep: str) -> None:
    """Remove the records of other formats whose files are no longer the ones they describe (replaced by this export)."""
    for path, record in _export_records(out_dir).items():
        if record["format"] == keep:
            continue
        files = [(out_dir / str(name), digest) for name, digest in record["files"].items()]
        if any(not f.is_file() or sha256_file(f) != digest for f, digest in files):
            path.unlink()


def export_student(student_dir: str | Path, out_dir: str | Path, fmt: str) -> list[Path]:
    """Write `fmt` artefacts of the student in student_dir into out_dir; returns the files written.

    The same as export_with_parity (parity checked, recorded in export-FORMAT.json, PolicyKDError on failure),
    for callers that only need the files.
    """
    return export_with_parity(student_dir, out_dir, fmt)[0]
