"""The fused GPU kernels against the plain ufunc path: same results to rounding.

Runs on CuPy with a GPU; elsewhere it checks that NumPy never takes the fused path.
"""

import numpy as np
import pytest

from npnn import functional as F
from npnn.backend import cupy_available, fused_kernels, get_backend, to_backend, to_numpy

from conftest import assert_close


def test_numpy_takes_the_plain_path():
    assert fused_kernels(np) is None


def _run(cell, backend, dtype, masked, seed=0):
    rng = np.random.default_rng(seed)
    T, N, D, H = 7, 5, 6, 9
    G = {"rnn": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[cell]
    dev = lambda a: to_backend(np.asarray(a, dtype=dtype), backend)  # noqa: E731
    x = dev(rng.standard_normal((T, N, D)))
    W = [dev(0.5 * rng.standard_normal(s)) for s in ((G * H, D), (G * H, H), (G * H,), (G * H,))]
    n_states = 2 if cell == "lstm" else 1
    states = [dev(0.5 * rng.standard_normal((N, H))) for _ in range(n_states)]
    dout = dev(rng.standard_normal((T, N, H)))
    dfinal = [dev(rng.standard_normal((N, H))) for _ in range(n_states)]
    mask = None
    if masked:
        mask = F.length_mask(to_backend(np.array([7, 3, 1, 5, 7]), backend), T)
    if cell.startswith("rnn"):
        out, *fin, cache = F.rnn_forward(x, *states, *W, "relu" if cell == "rnn_relu" else "tanh",
                                         mask)
        res = F.rnn_backward(dout, *dfinal, cache)
    elif cell == "lstm":
        out, *fin, cache = F.lstm_forward(x, *states, *W, mask)
        res = F.lstm_backward(dout, *dfinal, cache)
    else:
        out, *fin, cache = F.gru_forward(x, *states, *W, mask)
        res = F.gru_backward(dout, *dfinal, cache)
    arrays = [out, *fin, *res[:-1], *[res[-1][k] for k in sorted(res[-1])]]
    return [to_numpy(a) for a in arrays]


@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("cell", ["rnn", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_kernels_match_the_plain_path(monkeypatch, cell, dtype, tol, masked):
    get_backend("cupy")
    monkeypatch.setenv("NPNN_FUSED", "1")
    assert fused_kernels(get_backend("cupy")) is not None
    fused = _run(cell, "cupy", dtype, masked)
    monkeypatch.setenv("NPNN_FUSED", "0")
    plain = _run(cell, "cupy", dtype, masked)
    reference = _run(cell, "numpy", dtype, masked)
    for f, p, r in zip(fused, plain, reference):
        scale = max(1.0, float(np.abs(r).max()))
        assert_close(f, p, tol * scale)
        assert_close(f, r, tol * scale)
