"""C99 source for a student: weights as const arrays, no malloc, nothing beyond the C library (math.h).

Generated API (policykd_student.h):

    #define POLICYKD_OBS_DIM ...   #define POLICYKD_ACTION_DIM ...
    #define POLICYKD_ERR_NON_FINITE_OBS (-1)
    int policykd_act(const float obs[POLICYKD_OBS_DIM], float action[POLICYKD_ACTION_DIM]);

It computes the student's deterministic action from the raw observation: normalise and clip, the MLP (ReLU, tanh
or ELU), the action head, then clip to bounds (Gaussian), tanh and
scale (squashed / deterministic), or argmax (categorical: action[0] is the index, also returned). Returns 0
otherwise. If any observation entry is NaN or +-inf (C99 isfinite), it returns POLICYKD_ERR_NON_FINITE_OBS (-1)
and fills action with NAN instead of computing one (so do not build with -ffast-math / -ffinite-math-only, which
remove the check). Negative is always an error, also for categorical students.

tanh, sigmoid and ELU's expm1 are computed by the generated code itself (_FUNCTIONS: exp of a non-positive argument
by range reduction to |r| <= ln2/2 and its Taylor series, 2^k written into the exponent bits; tanh as
(1 - exp(-2|x|)) / (1 + exp(-2|x|)), or its odd Taylor series below 0.25; absolute error below 2e-7, measured in
tests), from + - * / only, which IEEE 754 rounds the same way everywhere: the C library's tanhf and expm1f differ
in their last bits between glibc and newlib, which would break the bit-identical guarantee below.

Layout: each weight matrix [out, in] is stored in blocks of 8 output rows, interleaved by input
(W8[block][j][r] = W[8 * block + r][j], rows padded with zeros to a multiple of 8). The layer then keeps 8
independent accumulators that share each x[j] load: SIMD-friendly on x86/aarch64 and fewer loads on a
Cortex-M4, while every output is still summed in the order bias + w0*x0 + w1*x1 + ..., so all targets give
bit-identical results (C99 mode disables FMA contraction).

CNN students (spec "conv", float arithmetic only): the normalised image and every convolution's output are kept
channels last ([h][w][c]) in two static ping-pong buffers (so policykd_act is not reentrant), each output summed
as bias + the kernel's rows in order (each row's kernel_width * channels weights contiguous, as its inputs are),
and the last convolution writes straight into the first hidden layer's input, followed by the vector entries. The
first hidden layer's weight columns are permuted at export from torch's channel-first flattening to this order.

Recurrent students (spec "gru", float arithmetic only): the GRU cell's two matrix products use the same dense
layout, its state is a static array that policykd_act updates after the hidden layers and the heads read, and
policykd_reset() (declared with POLICYKD_STATE_DIM in the header) zeroes it at the start of an episode.

arithmetic="int16" (export format `c-int16`) is for microcontrollers without SIMD floats: each weight row is
quantised symmetrically to 12 bits (+-2047, one float scale per row) and each layer input to 14 bits (+-8191,
one scale per call, from its largest magnitude), products are summed exactly in int32 (at most 2^24 each, so
any layer input width up to 128 cannot overflow: MAX_LAYER_INPUTS), and the sum is rescaled to float before bias and activation.
Pairs of inputs are packed into one 32-bit word so that a Cortex-M4 does two multiply-accumulates per
instruction (SMLAD, through ACLE's __smlad when __ARM_FEATURE_DSP is defined; portable C elsewhere, with
identical integer results). The quantisation error is measured in tests and benchmarks, not assumed.

arithmetic="int8" (export format `c-int8`) is the CMSIS-NN layout (arm_nn_vec_mat_mult_t_s8): each weight row is
quantised symmetrically to int8 (+-127, one float scale per row) and stored four to a 32-bit word, a quarter of the
float export's flash; each layer input is quantised to int8 (+-127, one scale per call, from its largest magnitude).
A Cortex-M4 unpacks a weight word into two pairs of 16-bit lanes with SXTB16 (bytes 0 and 2) and SXTB16 of the
word shifted by 8 (bytes 1 and 3), and multiplies each pair with SMLAD. The input is expanded once per layer into
the matching pairs (x0, x2) and (x1, x3), so no weight needs reordering at run time. Sums are exact in int32 (at
most 127 * 127 per product, any layer input width up to 133,144: MAX_LAYER_INPUTS), so every target computes bit-identical results.
"""

from __future__ import annotations

import numpy as np

from policykd import c_cortex_m
from policykd import student_format as fmt
from policykd.distributions import family_strategy

# C expression of each activation of v, and of |ACT(v)| given o = ACT(v) (for the int16 path's input scale),
# keyed by the names of student_format.ACTIVATIONS (tests check that every trainable activation is here).
C_ACTIVATIONS: dict[str, tuple[str, str]] = {
    "relu": ("(v > 0.0f ? v : 0.0f)", "(o)"),  # ReLU outputs are never negative
    "tanh": ("pk_tanh(v)", "(o < 0.0f ? -o : o)"),
    "elu": ("(v > 0.0f ? v : pk_expm1_neg(v))", "(o < 0.0f ? -o : o)"),
}

# The transcendental functions the generated code needs, in C99 from + - * / only (see the module docstring), by name;
# each is emitted only when used (an unused static function is a warning, and warnings are errors).
_EXP_NEG = """
/* exp(x) for x <= 0: x = k ln2 + r with |r| <= ln2/2 (ln2 split so that k * LN2_HI is exact), exp(r) by its Taylor
   series to r^7 (relative error < 1e-8), times 2^k written into the exponent bits. 0 below -87. */
static float pk_exp_neg(float x)
{
  union { float f; uint32_t u; } scale;
  float r, p;
  int32_t k;
  if (x < -87.0f) return 0.0f;
  k = (int32_t)(x * 1.44269504f - 0.5f);  /* round(x / ln2): x <= 0, so truncation of x/ln2 - 0.5 rounds */
  r = (x - (float)k * 0.693359375f) - (float)k * -2.12194440e-4f;
  p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f + r * (8.33333333e-3f
      + r * (1.38888889e-3f + r * 1.98412698e-4f))))));
  scale.u = (uint32_t)(k + 127) << 23;
  return p * scale.f;
}
"""
_TANH = """
/* tanh(x): the odd Taylor series to x^9 below |x| = 0.25 (error < 3e-9), else (1 - e) / (1 + e) with e = exp(-2|x|). */
static float pk_tanh(float x)
{
  const float a = x < 0.0f ? -x : x;
  float t;
  if (a < 0.25f) {
    const float z = a * a;
    t = a * (1.0f + z * (-3.33333333e-1f + z * (1.33333333e-1f + z * (-5.39682540e-2f + z * 2.18694885e-2f))));
  } else {
    const float e = pk_exp_neg(-2.0f * a);
    t = (1.0f - e) / (1.0f + e);
  }
  return x < 0.0f ? -t : t;
}
"""
_EXPM1_NEG = """
/* exp(x) - 1 for x <= 0: its Taylor series to x^7 above -0.25 (error < 1e-9), else exp(x) - 1. */
static float pk_expm1_neg(float x)
{
  if (x > -0.25f)
    return x * (1.0f + x * (0.5f + x * (1.66666667e-1f + x * (4.16666667e-2f + x * (8.33333333e-3f
           + x * (1.38888889e-3f + x * 1.98412698e-4f))))));
  return pk_exp_neg(x) - 1.0f;
}
"""


def _functions(activation: str, squashed: bool, recurrent: bool) -> str:
    """The C source of the transcendental helpers this student uses (pk_exp_neg, pk_tanh, pk_expm1_neg)."""
    tanh = activation == "tanh" or squashed or recurrent
    expm1 = activation == "elu"
    if not (tanh or expm1):
        return ""
    return _EXP_NEG + (_TANH if tanh else "") + (_EXPM1_NEG if expm1 else "")


def _array(name: str, values: np.ndarray) -> str:
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    body = ",\n".join("  " + ", ".join(f"{float(v)!r}f" for v in flat[i : i + 6]) for i in range(0, len(flat), 6))
    return f"static const float {name}[{len(flat)}] = {{\n{body}\n}};\n"


def _blocked(weight: np.ndarray, bias: np.ndarray, rows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """W [out, in], b [out] -> W8 [ceil(out/rows), in, rows], b padded to [rows * ceil(out/rows)]."""
    out, inp = weight.shape
    blocks = -(-out // rows)
    padded = np.zeros((blocks * rows, inp), dtype=np.float32)
    padded[:out] = weight
    bias_padded = np.zeros(blocks * rows, dtype=np.float32)
    bias_padded[:out] = bias
    return padded.reshape(blocks, rows, inp).transpose(0, 2, 1), bias_padded


def _quantised_rows(weight: np.ndarray, bias: np.ndarray, per_word: int, qmax: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [out, in] -> (q [4*blocks, per_word*words] int64 in [-qmax, qmax], row scales [4*blocks] float32, bias
    [4*blocks]): rows padded to 4-row blocks and inputs to whole words of per_word values, each row quantised
    symmetrically on its largest magnitude (round(W[r] / scale[r]))."""
    out, inp = weight.shape
    blocks, words = -(-out // 4), -(-inp // per_word)
    padded = np.zeros((blocks * 4, words * per_word), dtype=np.float64)
    padded[:out, :inp] = weight
    scale = np.abs(padded).max(axis=1) / qmax
    scale[scale == 0] = 1.0
    bias_padded = np.zeros(blocks * 4, dtype=np.float32)
    bias_padded[:out] = bias
    return np.rint(padded / scale[:, None]).astype(np.int64), scale.astype(np.float32), bias_padded


def _blocks_of_words(words: np.ndarray) -> np.ndarray:
    """[4*blocks, n] uint32 -> [blocks, n, 4]: the 4 rows of a block interleaved by word."""
    return words.reshape(-1, 4, words.shape[1]).transpose(0, 2, 1)


def _packed_int16(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [out, in] -> (words [blocks, in_pairs, 4] uint32, row scales [4*blocks] float32, bias [4*blocks]).

    Row r is quantised to round(W[r] / scale[r]) in [-2047, 2047]; word (block, p, r) holds the int16 weights of
    row 4*block + r for inputs 2p (low half) and 2p + 1 (high half).
    """
    q, scale, bias_padded = _quantised_rows(weight, bias, 2, 2047.0)
    low, high = q[:, 0::2] & 0xFFFF, q[:, 1::2] & 0xFFFF
    return _blocks_of_words((low | (high << 16)).astype(np.uint32)), scale, bias_padded


def _packed_int8(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [out, in] -> (words [blocks, in_quads, 4] uint32, row scales [4*blocks] float32, bias [4*blocks]).

    Row r is quantised to round(W[r] / scale[r]) in [-127, 127]; word (block, g, r) holds the int8 weights of row
    4*block + r for inputs 4g .. 4g + 3, input 4g + k in byte k (little-endian).
    """
    q, scale, bias_padded = _quantised_rows(weight, bias, 4, 127.0)
    q &= 0xFF
    words = q[:, 0::4] | (q[:, 1::4] << 8) | (q[:, 2::4] << 16) | (q[:, 3::4] << 24)
    return _blocks_of_words(words.astype(np.uint32)), scale, bias_padded


def _uint32_array(name: str, values: np.ndarray) -> str:
    flat = np.asarray(values, dtype=np.uint32).reshape(-1)
    body = ",\n".join("  " + ", ".join(f"0x{int(v):08x}u" for v in flat[i : i + 6]) for i in range(0, len(flat), 6))
    return f"static const uint32_t {name}[{len(flat)}] = {{\n{body}\n}};\n"


_DENSE_FLOAT = """
/* y[0:8*ceil(out/8)] = act?(W x + b), W in 8-row interleaved blocks (see policykd/c_codegen.py). */
static void dense(const float *w, const float *b, int out, int in, const float *x, float *y, int activate)
{
  int i, j, r;
  for (i = 0; i < out; i += 8) {
    const float *wb = w + i * in;
    float s[8];
    for (r = 0; r < 8; ++r) s[r] = b[i + r];
    j = 0;
#if PK_M4_FPU
    j = in - in % 4;  /* the first multiple of 4 inputs by the Cortex-M kernel (policykd/c_cortex_m.py), the rest here */
    if (j > 0) policykd_m4_mac8(wb, x, j, s);
#endif
    for (; j < in; ++j) {
      const float xj = x[j];
      for (r = 0; r < 8; ++r) s[r] += wb[8 * j + r] * xj;
    }
    for (r = 0; r < 8; ++r) y[i + r] = activate ? ACT(s[r]) : s[r];
  }
}
"""

_SIMD_INT = """
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define SMLAD(a, b, acc) __smlad((a), (b), (acc))
#else
static int32_t lo16(uint32_t v) { int32_t x = (int32_t)(v & 0xFFFFu); return x >= 32768 ? x - 65536 : x; }
static int32_t hi16(uint32_t v) { return lo16(v >> 16); }
#define SMLAD(a, b, acc) ((acc) + lo16(a) * lo16(b) + hi16(a) * hi16(b))
#endif

static uint32_t pack(int32_t low, int32_t high) { return ((uint32_t)low & 0xFFFFu) | (((uint32_t)high & 0xFFFFu) << 16); }

#define OUT(r, acc) do { \\
    const float v = (float)(acc) * (inv * ws[i + (r)]) + b[i + (r)]; \\
    const float o = activate ? ACT(v) : v; \\
    const float mag = activate ? MAG(o) : (o < 0.0f ? -o : o); \\
    y[i + (r)] = o; \\
    if (mag > ym) ym = mag; \\
  } while (0)
"""

_DENSE_INT16 = _SIMD_INT + """
/* y[0:4*ceil(out/4)] = act?(dequantised(Wq xq) + b), Wq packed 12-bit rows in 4-row blocks (policykd/c_codegen.py). */
/* m = max |x[0:in]| (computed by the producer of x); x[in] must be 0 when in is odd. Returns max |y[0:out]|. */
static float dense(const uint32_t *w, const float *ws, const float *b, int out, int in, const float *x, float m, float *y,
                   int activate)
{
  uint32_t xq[WIDTH / 2];
  int32_t sums[WIDTH];
  float sx, inv, ym = 0.0f;
  int i, p, pairs = (in + 1) / 2, rows = 4 * ((out + 3) / 4);
  sx = m > 0.0f ? 8191.0f / m : 0.0f;
  inv = m / 8191.0f;
  for (p = 0; p < pairs; ++p) {
    int32_t low = (int32_t)(x[2 * p] * sx);  /* truncation: |error| < 1 step of 1/8191 of the layer's max */
    int32_t high = (int32_t)(x[2 * p + 1] * sx);
    xq[p] = pack(low, high);
  }
  for (i = 0; i < rows; i += 4) {
    const uint32_t *wb = w + i * pairs;
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (p = 0; p < pairs; ++p) {
      const uint32_t xp = xq[p];
      s0 = SMLAD(wb[4 * p], xp, s0);
      s1 = SMLAD(wb[4 * p + 1], xp, s1);
      s2 = SMLAD(wb[4 * p + 2], xp, s2);
      s3 = SMLAD(wb[4 * p + 3], xp, s3);
    }
    sums[i] = s0; sums[i + 1] = s1; sums[i + 2] = s2; sums[i + 3] = s3;
  }
  for (i = 0; i < rows; ++i) OUT(0, sums[i]);
  return ym;
}
"""

_DENSE_INT8 = _SIMD_INT + """
#if PK_M4_DSP
/* the Cortex-M kernel unpacks the weight words itself */
#elif defined(__ARM_FEATURE_DSP)
#define SXTB16(v) ((uint32_t)__sxtb16(v))
/* bytes 1 and 3 sign-extended into the two lanes in one instruction (ACLE has no intrinsic for the rotation) */
static uint32_t sxtb16_ror8(uint32_t v) { uint32_t r; __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v)); return r; }
#define SXTB16_ROR8(v) sxtb16_ror8(v)
#else
static int32_t sext8(uint32_t v) { int32_t x = (int32_t)(v & 0xFFu); return x >= 128 ? x - 256 : x; }
#define SXTB16(v) (((uint32_t)sext8(v) & 0xFFFFu) | (((uint32_t)sext8((v) >> 16) & 0xFFFFu) << 16))
#define SXTB16_ROR8(v) SXTB16((v) >> 8)
#endif

/* x * sx rounded to the nearest integer (|x * sx| <= 127 by the choice of sx) */
static int32_t q8(float v) { return (int32_t)(v >= 0.0f ? v + 0.5f : v - 0.5f); }

#define MAC4(acc, word) do { \\
    const uint32_t wq = (word); \\
    acc = SMLAD(SXTB16(wq), xa, acc); \\
    acc = SMLAD(SXTB16_ROR8(wq), xb, acc); \\
  } while (0)

/* y[0:4*ceil(out/4)] = act?(dequantised(Wq xq) + b), Wq int8 rows, four to a word, in 4-row blocks (c_codegen.py). */
/* m = max |x[0:in]| (computed by the producer of x); x[in:4*ceil(in/4)] must be 0. Returns max |y[0:out]|. */
static float dense(const uint32_t *w, const float *ws, const float *b, int out, int in, const float *x, float m, float *y,
                   int activate)
{
  uint32_t xq[WIDTH / 2];  /* per 4 inputs: (x0, x2) then (x1, x3), int8 values in 16-bit lanes */
  int32_t sums[WIDTH];
  float sx, inv, ym = 0.0f;
  int i, g, quads = (in + 3) / 4, rows = 4 * ((out + 3) / 4);
  sx = m > 0.0f ? 127.0f / m : 0.0f;
  inv = m / 127.0f;
  for (g = 0; g < quads; ++g) {
    const float *xg = x + 4 * g;  /* rounding: |error| <= half a step of 1/127 of the layer's max */
    xq[2 * g] = pack(q8(xg[0] * sx), q8(xg[2] * sx));
    xq[2 * g + 1] = pack(q8(xg[1] * sx), q8(xg[3] * sx));
  }
#if PK_M4_DSP
  policykd_m4_dense_s8(w, xq, quads, sums, rows / 4);  /* policykd/c_cortex_m.py */
#else
  for (i = 0; i < rows; i += 4) {
    const uint32_t *wb = w + i * quads;
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (g = 0; g < quads; ++g) {
      const uint32_t xa = xq[2 * g], xb = xq[2 * g + 1];
      MAC4(s0, wb[4 * g]);
      MAC4(s1, wb[4 * g + 1]);
      MAC4(s2, wb[4 * g + 2]);
      MAC4(s3, wb[4 * g + 3]);
    }
    sums[i] = s0; sums[i + 1] = s1; sums[i + 2] = s2; sums[i + 3] = s3;
  }
#endif
  for (i = 0; i < rows; ++i) OUT(0, sums[i]);
  return ym;
}
"""


_CONV_FLOAT = """
/* y[oh][ow][oc] = ACT(b[o] + sum over (ky, kx, c) of w[o][ky][kx][c] * x[oy*s + ky][ox*s + kx][c]), channels last,
   no padding: oh = (ih - k) / s + 1, ow = (iw - k) / s + 1. For each ky the k * ic inputs are contiguous. */
static void conv(const float *w, const float *b, int ih, int iw, int ic, int oc, int k, int s, const float *x, float *y)
{
  const int oh = (ih - k) / s + 1, ow = (iw - k) / s + 1, row = k * ic;
  int oy, ox, o, ky, j;
  for (oy = 0; oy < oh; ++oy) {
    for (ox = 0; ox < ow; ++ox) {
      const float *xw = x + ((oy * s) * iw + ox * s) * ic;
      float *yo = y + (oy * ow + ox) * oc;
      for (o = 0; o < oc; ++o) {
        const float *wo = w + o * k * row;
        float v = b[o];
        for (ky = 0; ky < k; ++ky) {
          const float *xr = xw + ky * iw * ic, *wr = wo + ky * row;
          for (j = 0; j < row; ++j) v += wr[j] * xr[j];
        }
        yo[o] = ACT(v);
      }
    }
  }
}
"""

_GRU_FLOAT = """
/* The recurrent state (student_format: torch.nn.GRUCell, gates r, z, n), zero at the start of every episode. */
static float GRU_H[GRU_SIZE];
static float GRU_GATES_X[8 * ((3 * GRU_SIZE + 7) / 8)], GRU_GATES_H[8 * ((3 * GRU_SIZE + 7) / 8)];

void policykd_reset(void)
{
  int i;
  for (i = 0; i < GRU_SIZE; ++i) GRU_H[i] = 0.0f;
}

static float sigmoid(float v) { return 0.5f * (1.0f + pk_tanh(0.5f * v)); }  /* never overflows */

static void gru_step(const float *x, int in)
{
  int i;
  dense(GRU_WIH, GRU_BIH, 3 * GRU_SIZE, in, x, GRU_GATES_X, 0);
  dense(GRU_WHH, GRU_BHH, 3 * GRU_SIZE, GRU_SIZE, GRU_H, GRU_GATES_H, 0);
  for (i = 0; i < GRU_SIZE; ++i) {
    const float r = sigmoid(GRU_GATES_X[i] + GRU_GATES_H[i]);
    const float z = sigmoid(GRU_GATES_X[GRU_SIZE + i] + GRU_GATES_H[GRU_SIZE + i]);
    const float n = pk_tanh(GRU_GATES_X[2 * GRU_SIZE + i] + r * GRU_GATES_H[2 * GRU_SIZE + i]);
    GRU_H[i] = (1.0f - z) * n + z * GRU_H[i];
  }
}
"""

ARITHMETICS = ("float", "int16", "int8")
# the widest layer input whose exact int32 sum cannot overflow: products of at most 2047 * 8191 (int16) or 127 * 127 (int8)
MAX_LAYER_INPUTS = {"int16": (2**31 - 1) // (2047 * 8191), "int8": (2**31 - 1) // (127 * 127)}


def _gru_arrays(weights: dict[str, np.ndarray], size: int) -> list[str]:
    """The GRU cell's input and state weights [3G, in] and [3G, G] in the dense layout, with their biases."""
    w_ih, w_hh, b_ih, b_hh = (weights[name] for name in fmt.GRU_WEIGHTS)
    (wi, bi), (wh, bh) = _blocked(w_ih, b_ih), _blocked(w_hh, b_hh)
    return [_array("GRU_WIH", wi), _array("GRU_BIH", bi), _array("GRU_WHH", wh), _array("GRU_BHH", bh)]


def _c_float(v: float) -> str:
    return "INFINITY" if np.isinf(v) else f"{float(np.float32(v))!r}f"


def _conv_layers(spec: dict, weights: dict[str, np.ndarray]) -> tuple[list[str], list[str], np.ndarray]:
    """A CNN student's convolutions: (calls of conv() from CONV_A through the ping-pong buffers to the first hidden
    layer's input a, the C arrays and buffers, the permutation of the first hidden layer's columns from torch's
    channel-first flattening [c, h, w] to channels last [h, w, c], followed by the vector entries)."""
    conv = spec["conv"]
    shapes = fmt.conv_shapes(conv)  # [c, h, w] of the image and of each output
    parts = [f"static float CONV_A[{max(c * h * w for c, h, w in shapes)}], CONV_B[{max(c * h * w for c, h, w in shapes)}];"
             "  /* channels-last activations (static: not reentrant) */\n"]
    calls = []
    buffers = ["CONV_A", "CONV_B"]
    for i, ((c_in, h, w), (c_out, kernel, stride)) in enumerate(zip(shapes, conv["layers"])):
        weight = np.asarray(weights[fmt.encoder_weight_name(i)], dtype=np.float32).transpose(0, 2, 3, 1)  # [o, ky, kx, c]
        parts += [_array(f"CW{i}", weight), _array(f"CB{i}", weights[fmt.encoder_bias_name(i)])]
        source, target = buffers[i % 2], ("a" if i == len(conv["layers"]) - 1 else buffers[(i + 1) % 2])
        calls.append(f"conv(CW{i}, CB{i}, {h}, {w}, {c_in}, {c_out}, {kernel}, {stride}, {source}, {target});")
    c, h, w = shapes[-1]
    channel_first = np.arange(c * h * w).reshape(c, h, w)  # torch's column of (channel, row, column)
    columns = channel_first.transpose(1, 2, 0).reshape(-1)  # in the order the C code stores them
    vector = np.arange(c * h * w, fmt.trunk_input_dim(spec))
    return calls, parts, np.concatenate([columns, vector])


def generate_c(card: dict, weights: dict[str, np.ndarray], *, arithmetic: str = "float") -> tuple[str, str]:
    """(header, source) for the student described by card (student.json) and its weights (student.safetensors).

    arithmetic: "float" (exact up to float rounding), "int16" (12-bit weights, 14-bit activations) or "int8" (int8
    weights and activations, the CMSIS-NN layout); see the module docstring.
    """
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {', '.join(ARITHMETICS)}, got {arithmetic!r}")
    spec = card["spec"]
    family, hidden, activation = spec["family"], spec["hidden"], spec["activation"]
    if activation not in C_ACTIVATIONS:
        raise ValueError(f"C export supports {', '.join(C_ACTIVATIONS)} students, not {activation}")
    obs_dim = spec["obs_dim"]
    out_dim = spec["action_dim"]
    strategy = family_strategy(family)
    action_dim = 1 if strategy.discrete else out_dim
    conv = spec.get("conv")
    if conv and arithmetic != "float":
        raise ValueError(f"{arithmetic} C export supports MLP students; export a CNN student with float arithmetic (--format c)")
    gru = fmt.recurrent_size(spec)
    if gru and arithmetic != "float":
        raise ValueError(f"{arithmetic} C export supports feed-forward students; export a recurrent student with float arithmetic (--format c)")
    trunk_in = fmt.trunk_input_dim(spec)
    width = 8 * -(-max([obs_dim if not conv else trunk_in, *hidden, out_dim, gru]) // 8)
    if arithmetic != "float" and max([obs_dim, *hidden]) > MAX_LAYER_INPUTS[arithmetic]:
        raise ValueError(f"{arithmetic} C export supports layer inputs of at most {MAX_LAYER_INPUTS[arithmetic]:,} (int32 sums "
                         "could overflow beyond)")
    shape = f"MLP {obs_dim}-{'-'.join(map(str, hidden))}-{out_dim}"
    if conv:
        shape = (f"CNN: image {'x'.join(map(str, conv['image_shape']))}, convolutions "
                 f"{', '.join(f'{c}@{k}x{k}/{st}' for c, k, st in conv['layers'])}, then " + shape)
    if gru:
        shape += f" with a GRU state of {gru} before the heads"
    recurrent_api = "" if not gru else f"""
#define POLICYKD_STATE_DIM {gru}

/* Recurrent student: policykd_act carries a state from call to call (static, so one control loop per program).
   Call policykd_reset() at the start of every episode; the state starts at zero. */
void policykd_reset(void);
"""
    header = f"""/* Generated by policykd: a {family} student, {shape} ({activation}), {arithmetic} arithmetic. */
#ifndef POLICYKD_STUDENT_H
#define POLICYKD_STUDENT_H

#define POLICYKD_OBS_DIM {obs_dim}
#define POLICYKD_ACTION_DIM {action_dim}
#define POLICYKD_ERR_NON_FINITE_OBS (-1)

/* Raw env observation in, env action out. Returns 0, or for a categorical student the chosen index (>= 0, also
   in action[0]). Returns POLICYKD_ERR_NON_FINITE_OBS (-1) if any obs entry is NaN or +-inf: then no action is
   computed and action[] is filled with NAN. Any negative return is an error. Do not compile with -ffast-math. */
int policykd_act(const float obs[POLICYKD_OBS_DIM], float action[POLICYKD_ACTION_DIM]);
{recurrent_api}
#endif
"""
    parts = ['#include "policykd_student.h"\n#include <math.h>\n#include <stdint.h>\n\n', f"#define WIDTH {width}\n\n"]
    parts.append(_array("OBS_MEAN", weights[fmt.OBS_MEAN]))
    parts.append(_array("OBS_INV_STD", 1.0 / weights[fmt.OBS_STD].astype(np.float64)))
    if not strategy.discrete:
        parts.append(_array("ACTION_LOW", weights[fmt.ACTION_LOW]))
        parts.append(_array("ACTION_HIGH", weights[fmt.ACTION_HIGH]))
    layers = fmt.layer_names(spec)  # the hidden layers, then the action head
    names = [(f"W{i}", f"B{i}") for i in range(len(hidden))] + [("WOUT", "BOUT")]
    matrices = [(w_name, b_name, weights[w], weights[b]) for (w_name, b_name), (w, b) in zip(names, layers)]
    calls = []
    in_dim = obs_dim
    conv_calls: list[str] = []
    if conv:
        conv_calls, conv_parts, first_columns = _conv_layers(spec, weights)
        parts += conv_parts
        w_name, b_name, weight, bias = matrices[0]
        matrices[0] = (w_name, b_name, weight[:, first_columns], bias)
        in_dim = trunk_in
    for index, (w_name, b_name, weight, bias) in enumerate(matrices):
        out = int(weight.shape[0])
        activate = int(index < len(hidden))
        if gru and index == len(hidden):  # the GRU cell on the last hidden layer, then the head reads its state
            parts += _gru_arrays(weights, gru)
            calls.append(f"gru_step(%s, {in_dim}); /* %s: unused */")
            in_dim = gru
        if arithmetic == "float":
            w4, b4 = _blocked(weight, bias)
            parts += [_array(w_name, w4), _array(b_name, b4)]
            source = "GRU_H" if gru and index == len(hidden) else "%s"
            calls.append(f"dense({w_name}, {b_name}, {out}, {in_dim}, {source}, %s, {activate});")
        else:
            words, scales, b4 = (_packed_int16 if arithmetic == "int16" else _packed_int8)(weight, bias)
            parts += [_uint32_array(w_name, words), _array(f"{w_name}S", scales), _array(b_name, b4)]
            calls.append(f"m = dense({w_name}, {w_name}S, {b_name}, {out}, {in_dim}, %s, m, %s, {activate});")
        in_dim = out
    act, magnitude = C_ACTIVATIONS[activation]
    parts.append(_functions(activation, not strategy.discrete and not strategy.clips_to_bounds, bool(gru)))
    parts.append(f"\n#define ACT(v) {act}\n#define MAG(o) {magnitude}\n")
    if arithmetic != "int16":  # GCC's own int16 loop is as fast (it keeps its accumulators in registers)
        parts += [c_cortex_m.GUARDS, c_cortex_m.float_kernel() if arithmetic == "float" else c_cortex_m.int8_kernel()]
    parts.append({"float": _DENSE_FLOAT, "int16": _DENSE_INT16, "int8": _DENSE_INT8}[arithmetic])
    if conv:
        parts.append(_CONV_FLOAT)
    if gru:
        parts.append(f"\n#define GRU_SIZE {gru}\n" + _GRU_FLOAT)
    quantised = arithmetic != "float"
    declare_max = "\n  float m = 0.0f; /* max |input| of the next layer, for its quantisation */" if quantised else ""
    track_max = "\n    if ((a[i] < 0.0f ? -a[i] : a[i]) > m) m = a[i] < 0.0f ? -a[i] : a[i];" if quantised else ""
    group = {"float": 1, "int16": 2, "int8": 4}[arithmetic]  # inputs are read in pairs (int16) or fours (int8)
    padded = group * -(-obs_dim // group)
    pad = (f"\n  for (i = POLICYKD_OBS_DIM; i < {padded}; ++i) a[i] = 0.0f;  /* inputs go in groups of {group}: "
           "the padding reads zeros */") if padded > obs_dim else ""
    store = "a[i]"
    if conv:  # the image into the first convolution's input, the vector entries after the image features
        pixels, features = int(np.prod(conv["image_shape"])), trunk_in - (obs_dim - int(np.prod(conv["image_shape"])))
        store = f"*(i < {pixels} ? &CONV_A[i] : &a[{features} + i - {pixels}])"
    parts.append(f"""
int policykd_act(const float obs[POLICYKD_OBS_DIM], float action[POLICYKD_ACTION_DIM])
{{
  float a[WIDTH], b[WIDTH];{declare_max}
  const float clip = {_c_float(fmt.effective_clip(weights[fmt.OBS_CLIP]))};
  int i;
  for (i = 0; i < POLICYKD_OBS_DIM; ++i) {{
    float z;
    if (!isfinite(obs[i])) {{  /* NaN or +-inf: refuse, rather than let the clip below turn it into an action */
      for (i = 0; i < POLICYKD_ACTION_DIM; ++i) action[i] = NAN;
      return POLICYKD_ERR_NON_FINITE_OBS;
    }}
    z = (obs[i] - OBS_MEAN[i]) * OBS_INV_STD[i];  /* multiply: VDIV takes 14 cycles on a Cortex-M4 */
    {store} = z > clip ? clip : (z < -clip ? -clip : z);{track_max}
  }}{pad}
""")
    for call in conv_calls:
        parts.append("  " + call + "\n")
    src, dst = "a", "b"
    for call in calls:
        if call.startswith("gru_step"):  # reads the last hidden layer's buffer, writes the state GRU_H
            parts.append("  " + call.split(" /*")[0] % src + "\n")
            continue
        parts.append("  " + (call % (src, dst) if call.count("%s") == 2 else call % dst) + "\n")
        src, dst = dst, src
    dst = src  # the buffer the action head wrote last
    if strategy.discrete:
        parts.append(f"""  {{
    int best = 0;
    for (i = 1; i < {out_dim}; ++i) if ({dst}[i] > {dst}[best]) best = i;
    action[0] = (float)best;
    return best;
  }}
}}
""")
    elif strategy.clips_to_bounds:
        parts.append(f"""  for (i = 0; i < POLICYKD_ACTION_DIM; ++i) {{
    float v = {dst}[i];
    action[i] = v < ACTION_LOW[i] ? ACTION_LOW[i] : (v > ACTION_HIGH[i] ? ACTION_HIGH[i] : v);
  }}
  return 0;
}}
""")
    else:  # squashed_gaussian / deterministic: low + (tanh + 1) / 2 * (high - low)
        parts.append(f"""  for (i = 0; i < POLICYKD_ACTION_DIM; ++i)
    action[i] = ACTION_LOW[i] + 0.5f * (pk_tanh({dst}[i]) + 1.0f) * (ACTION_HIGH[i] - ACTION_LOW[i]);
  return 0;
}}
""")
    return header, "".join(parts)
