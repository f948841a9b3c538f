"""Cross-compile a student's C export for an embedded target, run it under emulation, and measure it.

Targets are YAML files: the built-in ones in policykd/targets/ (package data), or any file passed by path. For a microcontroller (kind: mcu) the firmware is a bare-metal
newlib program with its own vector table (initial SP, reset handler that enables the FPU, then newlib's
_start), printed through semihosting under qemu-system-arm. For a Linux board (kind: linux) it is a static
binary run by qemu user-mode emulation.

Reported: the outputs on fixed test observations (float bits, compared with the host build of the same C),
the student's flash (code + const weights) and static RAM plus its stack (from -fstack-usage), and, for
microcontrollers, instructions per inference counted from qemu's execution trace (N inferences minus none,
divided by N), cycles per inference from the Cortex-M4 TRM's instruction timings applied to that trace
(policykd/cortex_m_cycles.py), the time at the target clock, and for comparison the time at the target's flat,
pessimistic `cpi`.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from policykd.cortex_m_cycles import count_trace
from policykd.errors import PolicyKDError
from policykd.export import export_student
from policykd.tools import run_tool
from policykd.yaml_files import read_yaml_mapping

TARGETS = resources.files("policykd") / "targets"  # the built-in targets, package data (policykd/targets/*.yaml)

_STARTUP = r"""
/* Minimal Cortex-M startup: vector table at address 0, FPU enabled before newlib's _start. */
extern void _start(void);
void policykd_reset_handler(void);
void policykd_fault(void);

void policykd_fault(void) { for (;;) { } }

void policykd_reset_handler(void)
{
  *(volatile unsigned long *)0xE000ED88UL |= (0xFUL << 20); /* CPACR: full access to CP10, CP11 */
  __asm volatile ("dsb\n\tisb");
  _start();
}

__attribute__((section(".vectors"), used))
void (*const policykd_vectors[16])(void) = {
  (void (*)(void))0x20100000UL, policykd_reset_handler, policykd_fault, policykd_fault, policykd_fault, policykd_fault,
  policykd_fault, 0, 0, 0, 0, policykd_fault, policykd_fault, 0, policykd_fault, policykd_fault,
};
"""

_MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "policykd_student.h"
#include "test_obs.h"

#ifndef N_INFER
#define N_INFER 0
#endif

static unsigned long bits(float f) { unsigned long u = 0; memcpy(&u, &f, sizeof f); return u; }

int main(void)
{
  float action[POLICYKD_ACTION_DIM];
  volatile float sink = 0.0f;
  int i, j;
  for (i = 0; i < N_INFER; ++i) {
    policykd_act(TEST_OBS[i % N_TEST], action);
    sink += action[0];
  }
  for (i = 0; i < N_TEST; ++i) {
    policykd_act(TEST_OBS[i], action);
    for (j = 0; j < POLICYKD_ACTION_DIM; ++j) printf("%08lx ", bits(action[j]));
    printf("\n");
  }
  (void)sink;
  return 0;
}
"""


def target_names() -> list[str]:
    """The built-in targets (policykd/targets/NAME.yaml)."""
    return sorted(entry.name.removesuffix(".yaml") for entry in TARGETS.iterdir() if entry.name.endswith(".yaml"))


_TARGET_KINDS = ("mcu", "linux")  # bare metal with semihosting (cycle counts), or a Linux user-mode binary
_TARGET_NUMBERS = ("clock_hz", "ram_bytes", "flash_bytes", "cpi")  # > 0; flash_bytes optional, cpi needed by an mcu
_TARGET_STRINGS = ("name", "description", "compiler", "size_tool")
_TARGET_LISTS = ("cflags", "ldflags", "emulator", "apt_packages")  # of strings; ldflags and apt_packages optional
_TARGET_KEYS = ("kind", *_TARGET_STRINGS, *_TARGET_NUMBERS, *_TARGET_LISTS, "export_format")


def check_target(target: dict[str, Any], where: str) -> dict[str, Any]:
    """The target, or a one-line PolicyKDError naming its first missing or mistyped key."""
    required = [*_TARGET_STRINGS, "kind", "clock_hz", "ram_bytes", "cflags", "emulator", *(["cpi"] if target.get("kind") == "mcu" else [])]
    unknown = sorted(set(target) - set(_TARGET_KEYS))
    if unknown:
        raise PolicyKDError(f"target {where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} (a typo "
                            f"would drop its check); the keys are {', '.join(_TARGET_KEYS)}")
    missing = [key for key in required if key not in target]
    if missing:
        raise PolicyKDError(f"target {where} lacks {', '.join(missing)}; see policykd/targets/cortex-m4.yaml for the keys")
    if target["kind"] not in _TARGET_KINDS:
        raise PolicyKDError(f"target {where}: kind must be one of {', '.join(_TARGET_KINDS)}, got {target['kind']!r}")
    for key in _TARGET_STRINGS:
        if not isinstance(target[key], str) or not target[key]:
            raise PolicyKDError(f"target {where}: {key} must be a non-empty string, got {target[key]!r}")
    for key in _TARGET_NUMBERS:
        value = target.get(key)
        if key in target and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf")):
            raise PolicyKDError(f"target {where}: {key} must be a number > 0, got {value!r}")
    for key in _TARGET_LISTS:
        value = target.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (key == "emulator" and not value):
            raise PolicyKDError(f"target {where}: {key} must be a list of strings, got {value!r}")
    return target


def load_target(name_or_path: str | Path) -> dict[str, Any]:
    """A target by name (built-in, policykd/targets/NAME.yaml) or by the path of a YAML file, checked."""
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
            raise PolicyKDError(f"target file {path} not found")
        path = TARGETS / f"{name_or_path}.yaml"
        if not path.is_file():
            raise PolicyKDError(f"unknown target {str(name_or_path)!r}; known targets: {', '.join(target_names())} "
                                "(or pass a YAML path)")
    return check_target(read_yaml_mapping(path, what="target", examples="policykd/targets/"), str(name_or_path))


def missing_tools(target: dict[str, Any]) -> list[str]:
    """The target's compiler and emulator, and the host's cc, that are not on PATH."""
    tools = [target["compiler"], target["emulator"][0], "cc"]
    return [t for t in tools if shutil.which(t) is None]


# what scripts/install-toolchains.sh installs (the built-in targets' tools); a target of the user's own may name others
_SCRIPT_TOOLS = {"cc", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-size",
                 "qemu-aarch64"}


def check_target_tools(target: dict[str, Any]) -> None:
    """Refuse a target whose toolchain is not installed, in one line saying how to install it."""
    missing = missing_tools(target)
    if missing:
        fix = ("run scripts/install-toolchains.sh (as root)" if set(missing) <= _SCRIPT_TOOLS else
               "install them, or give their full paths in the target file (compiler, emulator)")
        raise PolicyKDError(f"target {target['name']} needs {', '.join(missing)}, not found on PATH; {fix}")


def _test_obs_header(obs: np.ndarray) -> str:
    rows = ",\n".join("  {" + ", ".join(f"{float(v)!r}f" for v in row) + "}" for row in obs.astype(np.float32))
    return f"#define N_TEST {len(obs)}\nstatic const float TEST_OBS[{len(obs)}][{obs.shape[1]}] = {{\n{rows}\n}};\n"


def _run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """A build or emulator step; a failure is one PolicyKDError line (see tools.run_tool)."""
    return run_tool(command, what="embedded build", cwd=cwd, timeout=timeout,
                    missing_hint="run scripts/install-toolchains.sh (as root)")


def _parse_outputs(text: str, n_test: int, action_dim: int) -> np.ndarray:
    rows = [line.split() for line in text.strip().splitlines() if re.fullmatch(r"([0-9a-f]{8} ?)+", line.strip())]
    if len(rows) != n_test:
        raise PolicyKDError(f"expected {n_test} output lines from the target, got {len(rows)}: {text[:200]!r}")
    flat = [struct.unpack("<f", struct.pack("<I", int(v, 16)))[0] for row in rows for v in row]
    return np.array(flat, dtype=np.float32).reshape(n_test, action_dim)


def _build(compiler: str, cflags: list[str], ldflags: list[str], work: Path, output: str, n_infer: int, startup: bool) -> Path:
    sources = ["main.c", "policykd_student.c"] + (["startup.c"] if startup else [])
    _run([compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", *cflags, f"-DN_INFER={n_infer}", *sources, "-o", output, *ldflags, "-lm"], work)
    return work / output


EMBEDDED_FORMATS = ("c", "c-int16", "c-int8")  # the C exports: what a target cross-compiles


def check_embedded_format(export_format: str, where: str = "--format") -> None:
    if export_format not in EMBEDDED_FORMATS:
        raise PolicyKDError(f"{where}: export format {export_format!r} does not run on embedded targets, which "
                            f"cross-compile the C exports; use one of {', '.join(EMBEDDED_FORMATS)}")


def run_on_target(student_dir: str | Path, target: dict[str, Any], test_obs: np.ndarray, work_dir: str | Path,
                  *, n_infer: int = 20, export_format: str | None = None) -> dict[str, Any]:
    """Build, run and measure the student on `target`; test_obs [n, obs_dim] are compared with the host build.

    export_format: "c" (float), "c-int16" or "c-int8" (fixed point); default: the target's `export_format`, else "c".
    """
    export_format = export_format or target.get("export_format", "c")
    check_embedded_format(export_format, f"target {target['name']}")
    check_target_tools(target)
    work = Path(work_dir)
    export_student(student_dir, work, export_format)
    (work / "test_obs.h").write_text(_test_obs_header(test_obs))
    (work / "main.c").write_text(_MAIN)
    mcu = target["kind"] == "mcu"
    if mcu:
        (work / "startup.c").write_text(_STARTUP)
    action_dim = int(re.search(r"#define POLICYKD_ACTION_DIM (\d+)", (work / "policykd_student.h").read_text()).group(1))

    host = _build("cc", ["-O2"], [], work, "host", 0, startup=False)
    host_out = _parse_outputs(_run([str(host)], work).stdout, len(test_obs), action_dim)

    cflags, ldflags = list(target["cflags"]), list(target.get("ldflags", []))
    _run([target["compiler"], "-std=c99", "-Wall", "-Wextra", "-Werror", *cflags, "-fstack-usage", "-c", "policykd_student.c",
          "-o", "student.o"], work)
    sizes = _run([target["size_tool"], "-A", "student.o"], work).stdout
    section = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\S+)\s+(\d+)", sizes, re.M)}
    flash = sum(v for k, v in section.items() if k.startswith((".text", ".rodata", ".data")))
    static_ram = sum(v for k, v in section.items() if k.startswith((".data", ".bss")))
    stack = max((int(m.group(1)) for m in re.finditer(r"policykd_act\s+(\d+)", (work / "student.su").read_text())), default=0)

    firmware = _build(target["compiler"], cflags, ldflags, work, "firmware.elf", 0, startup=mcu)
    emulator = [*target["emulator"], str(firmware)]
    target_out = _parse_outputs(_run(emulator, work).stdout, len(test_obs), action_dim)
    result: dict[str, Any] = {
        "target": target["name"], "description": target["description"], "clock_hz": target["clock_hz"],
        "export_format": export_format,
        "outputs_equal_host": bool(np.array_equal(target_out.view(np.uint32), host_out.view(np.uint32))),
        "max_abs_diff_vs_host": float(np.max(np.abs(target_out - host_out))), "test_observations": int(len(test_obs)),
        "flash_bytes": flash, "static_ram_bytes": static_ram, "stack_bytes": stack, "ram_bytes": static_ram + stack,
        "flash_fraction": flash / target["flash_bytes"] if target.get("flash_bytes") else None,
        "ram_fraction": (static_ram + stack) / target["ram_bytes"],
        "cflags": cflags, "target_outputs": target_out.tolist(), "host_outputs": host_out.tolist(),
    }
    if mcu:
        counts = []
        for n in (0, n_infer):
            elf = _build(target["compiler"], cflags, ldflags, work, f"count{n}.elf", n, startup=True)
            trace = work / f"trace{n}.log"
            _run([*target["emulator"][:-1], "-singlestep", "-d", "in_asm,exec,nochain", "-D", str(trace), "-kernel", str(elf)], work)
            counts.append(count_trace(trace))
            trace.unlink()
        instructions = (counts[1].instructions - counts[0].instructions) / n_infer
        cycles = (counts[1].cycles - counts[0].cycles) / n_infer
        result.update({"instructions_per_inference": instructions, "cycles_per_inference": cycles,
                       "cycle_model": "Cortex-M4 TRM timings, zero-wait-state memory (policykd/cortex_m_cycles.py)",
                       "us_per_inference": cycles / target["clock_hz"] * 1e6, "max_rate_hz": target["clock_hz"] / cycles,
                       "cpi_flat": target["cpi"],
                       "us_per_inference_flat_cpi": instructions * target["cpi"] / target["clock_hz"] * 1e6})
    return result
