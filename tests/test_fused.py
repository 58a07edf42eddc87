"""The fused GPU kernels against the textbook reference, on every device backend.

On the strict CuPy stand-in (always) the kernels' bodies run compiled on the host
(npnn/testing/strict_cupy/kernels.py), declared as CuPy declares them, with CUDA's
max/min; on a real GPU (when there is one) they run there. Either way the
accelerated sequence ops take their fused path, masks and output gradients
folded in, and must give the reference's numbers (functional/rnn.py, lstm.py,
gru.py); test_fused_compile.py compiles the same kernels with nvcc.
"""

import numpy as np
import pytest

from npnn.backend import get_backend, to_numpy
from npnn.functional.accel import _common, use_reference
from npnn.functional.registry import CELLS

from test_accel import VARIANTS, compare, make_case


def test_numpy_takes_the_ufunc_path():
    assert not _common.fused(np)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("given_grads", ["out", "final", "both"])
def test_fused_kernels_match_the_reference(device, monkeypatch, variant, dtype, masked,
                                           given_grads):
    monkeypatch.setenv("NPNN_FUSED", "1")
    assert _common.fused(get_backend(device))
    args = (variant, 7, 5, 6, 9, dtype, True, masked, True, given_grads, masked, 0)
    compare(variant, make_case(*args, backend=device), dtype, make_case(*args))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("where", ["x", "dout"])
def test_fused_kernels_propagate_nan_as_numpy_does(device, variant, where):
    """A NaN in a *valid* input or output gradient gives NaN exactly where the reference
    does (CUDA's max() would drop it: fmaxf(NaN, 0) is 0; so would h > 0 ? g : 0)."""
    cell, options = VARIANTS[variant][:2]

    def run(backend):
        case = make_case(variant, 3, 2, 2, 3, "float64", True, False, True, "both", False, 0,
                         backend)
        case[where][1, 0, :] = np.nan
        out, finals, cache = CELLS[cell].run(case["x"], case["states"], case["params"],
                                             **options)
        dx, _, grads = CELLS[cell].run_backward(case["dout"], case["dfinals"], cache)
        return [to_numpy(a) for a in (out, *finals, dx, *grads.values())]
    with use_reference():
        expected = run("numpy")
    for a, b in zip(run(device), expected):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
