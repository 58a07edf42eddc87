"""The fused GPU kernels against the textbook reference, on a GPU.

Runs on CuPy with a GPU (test_fused_compile.py runs the same kernels on the
host); elsewhere it checks that NumPy never takes the fused path.
"""

import numpy as np
import pytest

from npnn.backend import cupy_available, get_backend
from npnn.functional.accel import _common

from test_accel import VARIANTS, compare_paths


def test_numpy_takes_the_ufunc_path():
    assert not _common.fused(np)


@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_kernels_match_the_reference(monkeypatch, variant, dtype, masked):
    monkeypatch.setenv("NPNN_FUSED", "1")
    assert _common.fused(get_backend("cupy"))
    compare_paths(variant, dtype, masked, backend="cupy")
