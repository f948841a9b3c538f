"""Instruction and cycle counts of a Cortex-M4 program from qemu's single-step execution trace.

qemu-system-arm run with `-singlestep -d in_asm,exec,nochain` logs each instruction's disassembly once
(`0x00009294:  f8d2 3d88  ldr.w r3, [r2, #0xd88]`) and one `Trace` line per executed instruction, with its PC.
Each executed instruction is charged the cycles of the Cortex-M4 Technical Reference Manual (r0p1, tables 3-1
and 7-1), assuming zero-wait-state memory (code and weights in SRAM, or flash served by the STM32 ART
accelerator):

- loads and stores of one register: 2 cycles, 1 when they directly follow another such load or store (the TRM's
  pipelining of neighbouring single loads and stores); LDRD/STRD 3; LDM/STM/PUSH/POP and VLDM/VSTM/VPUSH/VPOP
  1 + number of registers; VLDR/VSTR 2;
- branches: 1 when not taken, 1 + 3 (the worst pipeline refill) when taken, found from the next executed PC;
  a POP or LDM that loads the PC likewise pays the refill;
- MLA/MLS 2; SDIV/UDIV 12 (worst case); VMLA/VMLS/VNMLA/VNMLS/VFMA/VFMS/VFNMA/VFNMS 3; VDIV/VSQRT 14;
- every other instruction (ALU, MUL, SMLAD and the other DSP multiplies, IT, FPU add/mul/convert/compare/move): 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ASM = re.compile(rb"^0x([0-9a-f]+):\s+((?:[0-9a-f]{4} )+)\s*(\S+)\s*(.*)$")
_TRACE = re.compile(rb"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")
_BRANCHES = {"b", "bl", "bx", "blx", "cbz", "cbnz", "tbb", "tbh"}
_CONDITIONS = ("eq", "ne", "cs", "cc", "hs", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al")
_REFILL = 3


@dataclass(frozen=True)
class Instruction:
    mnemonic: str  # without width suffix (.w/.n) and condition, e.g. "ldr", "smlad", "vldr"
    size: int      # bytes
    cycles: int    # when not a taken branch
    is_branch: bool
    is_single_memory: bool  # one-register load or store (can pipeline with its neighbour)


@dataclass(frozen=True)
class TraceCount:
    instructions: int
    cycles: int


def _register_count(operands: str) -> int:
    inside = operands[operands.find("{") + 1: operands.find("}")]
    count = 0
    for part in inside.split(","):
        part = part.strip()
        if "-" in part:  # r4-r7, s16-s31
            lo, hi = (int(re.sub(r"\D", "", x)) for x in part.split("-"))
            count += hi - lo + 1
        elif part:
            count += 1
    return max(count, 1)


def _base_mnemonic(raw: str) -> str:
    name = raw.lower().split(".")[0]
    if name.startswith("b") and name[1:] in _CONDITIONS:
        return "b"
    return name


def classify(raw_mnemonic: str, operands: str, size: int) -> Instruction:
    """Cycle cost of one disassembled instruction (see the module docstring)."""
    name = _base_mnemonic(raw_mnemonic)
    ops = operands.lower()
    writes_pc = "pc" in ops.split("{")[-1] if "{" in ops else False
    if name in _BRANCHES:
        return Instruction(name, size, 1, True, False)
    if name in ("ldm", "ldmia", "ldmdb", "stm", "stmia", "stmdb", "push", "pop",
                "vldm", "vldmia", "vldmdb", "vstm", "vstmia", "vstmdb", "vpush", "vpop"):
        n = _register_count(ops)
        return Instruction(name, size, 1 + n, writes_pc and name in ("pop", "ldm", "ldmia", "ldmdb"), False)
    if name in ("ldrd", "strd"):
        return Instruction(name, size, 3, False, False)
    if re.fullmatch(r"(ldr|str)(b|h|sb|sh|ex|exb|exh|t|bt|ht|sbt|sht)?", name):
        return Instruction(name, size, 2, name.startswith("ldr") and ops.startswith("pc"), True)
    if name in ("vldr", "vstr"):
        return Instruction(name, size, 2, False, False)
    if name in ("mla", "mls"):
        return Instruction(name, size, 2, False, False)
    if name in ("sdiv", "udiv"):
        return Instruction(name, size, 12, False, False)
    if name in ("vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms"):
        return Instruction(name, size, 3, False, False)
    if name in ("vdiv", "vsqrt"):
        return Instruction(name, size, 14, False, False)
    if name in ("mov", "add") and ops.startswith("pc"):
        return Instruction(name, size, 1, True, False)
    return Instruction(name, size, 1, False, False)


def count_trace(trace: Path) -> TraceCount:
    """Instructions executed and their modelled cycles, over the whole trace file."""
    program: dict[int, Instruction] = {}
    pcs: list[int] = []
    with open(trace, "rb") as f:
        for line in f:
            if line.startswith(b"Trace"):
                m = _TRACE.match(line)
                if m:
                    pcs.append(int(m.group(1), 16))
            elif line.startswith(b"0x"):
                m = _ASM.match(line.rstrip())
                if m:
                    size = 2 * len(m.group(2).split())
                    program[int(m.group(1), 16)] = classify(m.group(3).decode(), m.group(4).decode(), size)
    cycles = 0
    previous_single_memory = False
    for i, pc in enumerate(pcs):
        ins = program.get(pc)
        if ins is None:  # no disassembly logged (should not happen): charge one cycle
            cycles += 1
            previous_single_memory = False
            continue
        cost = ins.cycles
        if ins.is_single_memory and previous_single_memory:
            cost = 1
        if ins.is_branch and i + 1 < len(pcs) and pcs[i + 1] != pc + ins.size:
            cost += _REFILL
        cycles += cost
        previous_single_memory = ins.is_single_memory
    return TraceCount(instructions=len(pcs), cycles=cycles)
