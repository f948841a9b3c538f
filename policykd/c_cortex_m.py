"""Hand-scheduled Cortex-M4/M7 inner loops for the generated C (policykd.c_codegen), as GNU top-level assembly.

GCC keeps one VLDR per float weight (two cycles each on a Cortex-M4) and runs out of registers in the int8 loop
(spilling the input words to the stack), so the dense layers' inner loops are written out here, one per arithmetic.
Each computes exactly what the portable C loop beside it computes, in the same order (float: a separate VMUL and VADD
per weight, the two roundings of C99's `s += w * x` without FMA contraction; int: exact int32 sums), so host,
Cortex-M4 and aarch64 outputs stay bit-identical. They are compiled only where the target has the instructions:

- PK_M4_FPU (ARMv7E-M, Thumb-2, a hardware FPU whatever the float ABI): 8 accumulators in s16-s23, 8 weights per
  VLDM (1 + 8 cycles) against one VLDR each, four inputs per loop pass;
- PK_M4_DSP (ARMv7E-M, Thumb-2, the DSP extension), int8: a whole layer per call, 4 row accumulators in r4-r7,
  single LDRs back to back (the Cortex-M4 pipelines neighbouring loads: 1 cycle each after the first), then two
  SXTB16 and two SMLAD per weight word, two groups of four inputs per loop pass. (GCC's own int16 loop is as fast
  as a hand-written one, so int16 has none.)

Every function follows the AAPCS (arguments in r0-r3, r4-r11, s16-s31 saved) and reads/writes its accumulators
through a pointer, so the C caller owns them.
"""

from __future__ import annotations

GUARDS = """
#if defined(__ARM_ARCH_7EM__) && defined(__thumb2__) && defined(__ARM_FP) && !defined(__SOFTFP__)
#define PK_M4_FPU 1
#else
#define PK_M4_FPU 0
#endif
#if defined(__ARM_ARCH_7EM__) && defined(__thumb2__) && defined(__ARM_FEATURE_DSP)
#define PK_M4_DSP 1
#else
#define PK_M4_DSP 0
#endif
"""


def _function(name: str, comment: str, body: list[str]) -> str:
    """A Thumb-2 function in its own section (so --gc-sections drops it when unused), as a C top-level asm block."""
    lines = [".pushsection .text." + name + ',"ax",%progbits', ".syntax unified", ".thumb", ".p2align 2",
             ".global " + name, ".type " + name + ", %function", ".thumb_func", name + ":", *body,
             ".size " + name + ", .-" + name, ".popsection"]
    asm = "\n".join('  "' + line.replace('"', '\\"') + '\\n"' for line in lines)
    return f"/* {comment} */\n__asm__(\n{asm}\n);\n"


def _float_input(k: int) -> list[str]:
    """s16-s23 += 8 weights (the next VLDM) * input s{k}."""
    return (["vldmia r0!, {s8-s15}"] + [f"vmul.f32 s{8 + r}, s{8 + r}, s{k}" for r in range(8)]
            + [f"vadd.f32 s{16 + r}, s{16 + r}, s{8 + r}" for r in range(8)])


def float_kernel() -> str:
    """policykd_m4_mac8(w, x, n, s): s[0:8] += sum over j < n of w[8j:8j+8] * x[j], n a positive multiple of 4."""
    body = ["vpush {s16-s23}", "vldmia r3, {s16-s23}", "1:", "vldmia r1!, {s0-s3}"]
    for k in range(4):
        body += _float_input(k)
    body += ["subs r2, r2, #4", "bne 1b", "vstmia r3, {s16-s23}", "vpop {s16-s23}", "bx lr"]
    prototype = "void policykd_m4_mac8(const float *w, const float *x, int n, float *s);\n"
    return ("#if PK_M4_FPU\n" + prototype
            + _function("policykd_m4_mac8", "s[0:8] += w[8j:8j+8] * x[j] for j < n (n > 0, n % 4 == 0), in order of j", body)
            + "#endif\n")


def _quad() -> list[str]:
    """acc r4-r7 += one group of four inputs: (x0,x2) (x1,x3) in r8, r9 against one weight word per row (r10-r12,
    lr: four int8 weights each), unpacked by SXTB16 (bytes 0, 2) and SXTB16 ROR 8 (bytes 1, 3)."""
    body = ["ldr r8, [r1], #4", "ldr r9, [r1], #4"] + [f"ldr {reg}, [r0], #4" for reg in ("r10", "r11", "r12", "lr")]
    for acc, word in zip(("r4", "r5", "r6", "r7"), ("r10", "r11", "r12", "lr")):
        body += [f"sxtb16 r3, {word}", f"smlad {acc}, r3, r8, {acc}", f"sxtb16 r3, {word}, ror #8", f"smlad {acc}, r3, r9, {acc}"]
    return body


def int8_kernel() -> str:
    """policykd_m4_dense_s8(w, xq, n, sums, blocks): for each of `blocks` 4-row blocks (weights one block after the
    other, c_codegen's int8 layout), sums[4b:4b+4] = the block's sums over the n groups of four inputs in xq."""
    name = "policykd_m4_dense_s8"
    quad = _quad()
    # the stack after the pushes: [sp] xq, [sp+4] n, [sp+8] sums (advanced per block), [sp+12] blocks left
    body = ["push {r4-r11, lr}", "ldr r12, [sp, #36]", "sub sp, sp, #16", "str r1, [sp]", "str r2, [sp, #4]",
            "str r3, [sp, #8]", "str r12, [sp, #12]",
            "0:", "ldr r1, [sp]", "ldr r2, [sp, #4]", "movs r4, #0", "movs r5, #0", "movs r6, #0", "movs r7, #0",
            "tst r2, #1", "beq 2f", *quad, "subs r2, r2, #1", "beq 3f",
            "2:", *quad, *quad, "subs r2, r2, #2", "bne 2b",
            "3:", "ldr r3, [sp, #8]", "stmia r3!, {r4-r7}", "str r3, [sp, #8]", "ldr r3, [sp, #12]", "subs r3, r3, #1",
            "str r3, [sp, #12]", "bne 0b", "add sp, sp, #16", "pop {r4-r11, pc}"]
    prototype = f"void {name}(const uint32_t *w, const uint32_t *xq, int n, int32_t *sums, int blocks);\n"
    return ("#if PK_M4_DSP\n" + prototype
            + _function(name, "sums[4b:4b+4] = block b's int32 sums over n > 0 groups of four int8 inputs, blocks > 0", body)
            + "#endif\n")
