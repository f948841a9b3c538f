"""The Cortex-M4 cycle model applied to qemu traces."""

from pathlib import Path

import pytest

from policykd.cortex_m_cycles import classify, count_trace


@pytest.mark.parametrize("mnemonic, operands, size, cycles, branch", [
    ("ldr.w", "r3, [r2, #0xd88]", 4, 2, False),
    ("smlad", "r0, r1, r2, r0", 4, 1, False),
    ("vmla.f32", "s0, s1, s2", 4, 3, False),
    ("push", "{r4, r5, r6, r7, lr}", 2, 6, False),
    ("pop", "{r4-r7, pc}", 2, 6, True),
    ("vpush", "{s16-s23}", 4, 9, False),
    ("ldrd", "r0, r1, [r2]", 4, 3, False),
    ("bne.n", "#0x9300", 2, 1, True),
    ("udiv", "r0, r1, r2", 4, 12, False),
    ("vcvt.s32.f32", "s0, s0", 4, 1, False),
])
def test_classify(mnemonic, operands, size, cycles, branch):
    ins = classify(mnemonic, operands, size)
    assert (ins.cycles, ins.is_branch, ins.size) == (cycles, branch, size)


def test_count_trace_pipelines_loads_and_charges_taken_branches(tmp_path: Path):
    asm = {0x100: "f8d2 3d88  ldr.w    r3, [r2, #0xd88]", 0x104: "f8d2 4d8c  ldr.w    r4, [r2, #0xd8c]",
           0x108: "fb23 0004  smlad    r0, r3, r4, r0", 0x10c: "d1f8       bne.n    #0x100",
           0x10e: "4770       bx       lr"}
    lines = [f"IN: f\n0x{pc:08x}:  {text}\n" for pc, text in asm.items()]
    executed = [0x100, 0x104, 0x108, 0x10c] * 2 + [0x100, 0x104, 0x108, 0x10c, 0x10e]  # loop taken twice, then falls through
    lines += [f"Trace 0: 0x7f0000 [00800408/{pc:08x}/00000110/ff000201] f\n" for pc in executed]
    trace = tmp_path / "trace.log"
    trace.write_text("".join(lines))
    count = count_trace(trace)
    assert count.instructions == 13
    # per pass: ldr 2 + pipelined ldr 1 + smlad 1 + bne 1 (+3 when taken); bx is the last instruction (no next PC)
    assert count.cycles == 2 * (2 + 1 + 1 + 1 + 3) + (2 + 1 + 1 + 1) + 1
