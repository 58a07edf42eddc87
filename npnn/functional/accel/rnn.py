"""Accelerated Elman RNN: ``functional/rnn.py``'s numbers, computed faster.

Equation numbers refer to ``functional/rnn.py``. What differs from the reference:
the recurrent weight is transposed once per call ((H, H) contiguous), both
biases are added to the input half before the loop, every step writes into
buffers allocated once per call, the backward flushes gradients that fall
towards the subnormal range, and on CuPy each step's elementwise work is one
fused kernel.
"""

from typing import Any, NamedTuple, Optional

from ...backend import elementwise_kernel, get_array_module
from .._recurrent import output_grads
from . import _numba
from ._numba import const as _const, tanh as _tanh
from ._common import (FLUSH_EVERY, flush_subnormals, fused, hold,
                      masked_output, padding, valid_rows)


class RNNAccelCache(NamedTuple):
    """The accelerated forward's cache (the reference's values)."""
    x: Any                   # (T, N, D) input
    h: Any                   # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    W_ih: Any                # (H, D)
    W_hh: Any                # (H, H)
    has_bias: bool
    nonlinearity: str
    pad: Optional[Any]       # (T, N, 1) True at padded steps, or None


class _Ufuncs:
    """The per-step elementwise work as ufunc passes into preallocated buffers."""

    def __init__(self, xp):
        self.xp = xp

    def forward_step(self, a, rec, h, relu):
        """(1)-(2): a (N, H) holds the input half; h = phi(a + rec)."""
        a += rec
        if relu:
            self.xp.maximum(a, 0, out=h)
        else:
            self.xp.tanh(a, out=h)

    def backward_step(self, g, h, da, relu):
        """(5): da = g * phi'(a), from the output h."""
        xp = self.xp
        if relu:
            xp.multiply(g, h > 0, out=da)
        else:
            xp.multiply(h, h, out=da)
            xp.subtract(1, da, out=da)
            da *= g


class _Fused:
    """One CUDA kernel per step each way (CuPy only). ReLU treats NaN as NumPy does
    (CUDA's max() would turn a NaN pre-activation into 0): max(NaN, 0) is NaN, and
    the backward is g * [h > 0], so a NaN gradient at an inactive unit stays NaN."""

    def __init__(self, xp):
        pass

    @staticmethod
    def forward_step(a, rec, h, relu):
        body = ("const T v = a + rec; h = (v > (T)0 || v != v) ? v : (T)0;" if relu
                else "h = tanh(a + rec);")
        elementwise_kernel("T a, T rec", "T h", body,
                           "npnn_rnn_forward_" + ("relu" if relu else "tanh"))(a, rec, h)

    @staticmethod
    def backward_step(g, h, da, relu):
        body = ("da = g * (T)(h > (T)0);" if relu
                else "da = g * ((T)1 - h * h);")
        elementwise_kernel("T g, T h", "T da", body,
                           "npnn_rnn_backward_" + ("relu" if relu else "tanh"))(g, h, da)


def _numba_forward_step(a, rec, h, relu):
    """``_Fused.forward_step`` as a loop compiled by numba (NumPy, ``_numba``)."""
    N, H = h.shape
    zero = _const(h, 0.0)
    for n in range(N):
        an, rn, hn = a[n], rec[n], h[n]
        for j in range(H):
            v = an[j] + rn[j]
            an[j] = v
            hn[j] = (v if (v > zero or v != v) else zero) if relu else _tanh(v)


def _numba_backward_step(g, h, da, relu):
    """``_Fused.backward_step`` as a loop compiled by numba."""
    N, H = h.shape
    zero, one = _const(h, 0.0), _const(h, 1.0)
    for n in range(N):
        gn, hn, dn = g[n], h[n], da[n]
        for j in range(H):
            hj = hn[j]
            dn[j] = gn[j] * (one if hj > zero else zero) if relu else gn[j] * (one - hj * hj)


def _steps(xp, dtype):
    """The step kernels for these arrays: fused on CuPy, numba's or ufuncs on NumPy."""
    if fused(xp):
        return _Fused(xp)
    if _numba.use(xp, dtype):
        return _numba.Steps(_numba_forward_step, _numba_backward_step)
    return _Ufuncs(xp)


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, nonlinearity="tanh", mask=None):
    """``functional.rnn_forward`` (arguments already checked there)."""
    xp = get_array_module(x)
    T, N, D = x.shape
    H = W_hh.shape[1]
    pad = padding(mask)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = 0 if h0 is None else h0
    a = (x.reshape(T * N, D) @ W_ih.T).reshape(T, N, H)     # (1), input half: every step at once
    if b_ih is not None:
        a += b_ih + b_hh
    W_hh_T = xp.ascontiguousarray(W_hh.T)           # (H, H)
    rec = xp.empty((N, H), dtype=x.dtype)
    step = _steps(xp, x.dtype).forward_step
    relu = nonlinearity == "relu"
    for t in range(T):
        xp.matmul(h[t], W_hh_T, out=rec)            # (1) recurrent half
        step(a[t], rec, h[t + 1], relu)             # (1)-(2)
        if pad is not None:                         # padded steps keep h_{t-1}
            hold(xp, h, t, pad)
    out = masked_output(xp, h[1:], pad)             # (3)
    return out, h[T], RNNAccelCache(x, h, W_ih, W_hh, b_ih is not None, nonlinearity, pad)


def rnn_backward(dout, dh_n, cache):
    """``functional.rnn_backward`` for a cache of ``rnn_forward`` above."""
    x, h, W_ih, W_hh, has_bias, nonlinearity, pad = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    xp, dout, (g,) = output_grads(x, None if pad is None else ~pad, H, dout, {"dh_n": dh_n},
                                  copy=True)
    if pad is not None:
        g_t = xp.empty_like(g)
    da = xp.empty((T, N, H), dtype=x.dtype)
    step = _steps(xp, x.dtype).backward_step
    relu = nonlinearity == "relu"
    for t in range(T - 1, -1, -1):
        if dout is not None:                        # (4)
            g += dout[t]
        if pad is not None:                         # what a padded step passes straight back
            g_t[...] = g
        step(g, h[t + 1], da[t], relu)              # (5)
        if pad is not None:
            xp.copyto(da[t], 0, where=pad[t])
        if t % FLUSH_EVERY == 0:
            flush_subnormals(xp, da[t])
        xp.matmul(da[t], W_hh, out=g)               # (6)
        if pad is not None:
            xp.copyto(g, g_t, where=pad[t])
    da2 = da.reshape(T * N, H)                      # (T*N, H)
    dx = (da2 @ W_ih).reshape(T, N, D)              # (7)
    grads = {"W_ih": da2.T @ valid_rows(xp, x, pad).reshape(T * N, D),    # (8)
             "W_hh": da2.T @ h[:-1].reshape(T * N, H)}
    if has_bias:
        grads["b_ih"] = xp.ones(T * N, dtype=x.dtype) @ da2    # sums over steps, sequences as GEMVs
        grads["b_hh"] = grads["b_ih"].copy()
    return dx, g, grads
