"""The transcendental functions of the C export (policykd.c_codegen: pk_exp_neg, pk_tanh, pk_expm1_neg), written with
+ - * / only so that every target computes the same bits: their accuracy against float64 numpy."""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from policykd.c_codegen import _functions

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    work = tmp_path_factory.mktemp("cfunctions")
    source = ("#include <stdint.h>\n" + _functions("elu", True, False) +
              "float tanh_of(float x) { return pk_tanh(x); }\nfloat expm1_of(float x) { return pk_expm1_neg(x); }\n"
              "float exp_of(float x) { return pk_exp_neg(x); }\n")
    (work / "f.c").write_text(source)
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(work / "f.so"),
                    str(work / "f.c")], check=True)
    lib = ctypes.CDLL(str(work / "f.so"))
    for name in ("tanh_of", "expm1_of", "exp_of"):
        getattr(lib, name).restype, getattr(lib, name).argtypes = ctypes.c_float, [ctypes.c_float]
    return lib


def _evaluate(function, xs: np.ndarray) -> np.ndarray:
    return np.array([function(float(x)) for x in xs], dtype=np.float64)


def test_tanh_is_within_2e7_everywhere_and_exact_at_the_limits(library):
    xs = np.concatenate([np.linspace(-12, 12, 20_001), np.geomspace(1e-8, 0.3, 2_000), -np.geomspace(1e-8, 0.3, 2_000),
                         [0.0, 0.25, -0.25, 0.2499999, 50.0, -50.0, 1e30, -1e30]]).astype(np.float32)
    error = np.abs(_evaluate(library.tanh_of, xs) - np.tanh(xs.astype(np.float64)))
    assert error.max() < 2e-7, xs[np.argmax(error)]
    assert library.tanh_of(1e30) == 1.0 and library.tanh_of(-1e30) == -1.0 and library.tanh_of(0.0) == 0.0


def test_exp_and_expm1_of_non_positive_arguments(library):
    xs = -np.concatenate([np.geomspace(1e-8, 87, 20_000), [0.0, 0.25, 0.2499999, 86.9, 88.0, 1e30]]).astype(np.float32)
    exact = np.exp(xs.astype(np.float64))
    relative = np.abs(_evaluate(library.exp_of, xs) - exact) / np.maximum(exact, 1e-30)
    assert relative[xs > -87].max() < 3e-7
    assert library.exp_of(-88.0) == 0.0
    error = np.abs(_evaluate(library.expm1_of, xs) - np.expm1(xs.astype(np.float64)))
    assert error.max() < 2e-7
