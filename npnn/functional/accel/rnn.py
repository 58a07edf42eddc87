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
from ._common import (FLUSH_EVERY, Prepared as _Prepared, flush_subnormals, fused, hold,
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
    """One CUDA kernel per step each way (CuPy only), padded steps and the output
    gradients included: with the matrix product, two launches a step each way. ReLU
    treats NaN as NumPy does (CUDA's max() would turn a NaN pre-activation into 0):
    max(NaN, 0) is NaN, and the backward is g * [h > 0], so a NaN gradient at an
    inactive unit stays NaN. ``pad`` (N, 1) is True at padded rows."""

    def __init__(self, xp):
        pass

    @staticmethod
    def forward(a, W_hh_T, rec, h, relu, pad):
        """(1)-(2) for every step; padded rows keep h_{t-1}."""
        xp = get_array_module(h)
        masked = pad is not None
        phi = "(v > (T)0 || v != v) ? v : (T)0" if relu else "tanh(v)"
        kernel = elementwise_kernel(
            "T a, T rec, T h_prev" + (", bool pad" if masked else ""), "T h",
            f"const T v = a + rec; h = {'pad ? h_prev : ' if masked else ''}{phi};",
            f"npnn_rnn_forward_{'relu' if relu else 'tanh'}{'_masked' if masked else ''}")
        for t in range(a.shape[0]):
            xp.matmul(h[t], W_hh_T, out=rec)        # (1) recurrent half
            kernel(a[t], rec, h[t], *((pad[t],) if masked else ()), h[t + 1])

    @staticmethod
    def backward(h, W_hh, dout, g, relu, pad):
        """(4)-(6) for every step: da (T, N, H) and dh_0. ``g`` holds the gradient reaching
        h_t from step t + 1 (da_{t+1} W_hh), ``carry`` what padded steps pass back."""
        xp = get_array_module(g)
        T = h.shape[0] - 1
        masked, has_dout = pad is not None, dout is not None
        slope = "(T)(h > (T)0)" if relu else "((T)1 - h * h)"
        reach = "g" + (" + dout" if has_dout else "") + (" + carry" if masked else "")
        body = (f"const T gt = {reach}; " +
                ("if (pad) { da = (T)0; carry = gt; } else { "
                 f"da = gt * {slope}; carry = (T)0; }}" if masked else f"da = gt * {slope};"))
        kernel = elementwise_kernel(
            "T g, T h" + (", T dout" if has_dout else "") + (", bool pad" if masked else ""),
            "T da" + (", T carry" if masked else ""), body,
            f"npnn_rnn_backward_{'relu' if relu else 'tanh'}{'_dout' if has_dout else ''}"
            f"{'_masked' if masked else ''}")
        da = xp.empty(h[1:].shape, dtype=g.dtype)
        carry = xp.zeros_like(g) if masked else None
        for t in range(T - 1, -1, -1):
            kernel(g, h[t + 1], *((dout[t],) if has_dout else ()), *((pad[t],) if masked else ()),
                   da[t], *((carry,) if masked else ()))                       # (4)-(5)
            xp.matmul(da[t], W_hh, out=g)           # (6)
        return da, (g + carry if masked else g)


def _numba_forward_step(a, rec, h, relu):
    """A forward step of ``_Fused.forward`` as a loop compiled by numba (NumPy, ``_numba``)."""
    N, H = h.shape
    zero = _const(h, 0.0)
    for n in range(N):
        an, rn, hn = a[n], rec[n], h[n]
        for j in range(H):
            v = an[j] + rn[j]
            an[j] = v
            hn[j] = (v if (v > zero or v != v) else zero) if relu else _tanh(v)


def _numba_backward_step(g, h, da, relu):
    """A backward step of ``_Fused.backward`` (unmasked) as a loop compiled by numba."""
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
    steps = _steps(xp, x.dtype)
    relu = nonlinearity == "relu"
    if isinstance(steps, _Fused):                   # (1)-(2), padded rows in the kernel
        steps.forward(a, W_hh_T, rec, h, relu, pad)
    else:
        for t in range(T):
            xp.matmul(h[t], W_hh_T, out=rec)        # (1) recurrent half
            steps.forward_step(a[t], rec, h[t + 1], relu)       # (1)-(2)
            if pad is not None:                     # padded steps keep h_{t-1}
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
    if fused(xp):
        da, g = _Fused.backward(h, W_hh, dout, g, nonlinearity == "relu", pad)
        return _weight_grads(x, h, W_ih, has_bias, pad, da, g)
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
    return _weight_grads(x, h, W_ih, has_bias, pad, da, g)


def _weight_grads(x, h, W_ih, has_bias, pad, da, g):
    """(7)-(8) as single products over all steps, after the loop."""
    xp = get_array_module(x)
    T, N, D = x.shape
    H = h.shape[2]
    da2 = da.reshape(T * N, H)                      # (T*N, H)
    dx = (da2 @ W_ih).reshape(T, N, D)              # (7)
    grads = {"W_ih": da2.T @ valid_rows(xp, x, pad).reshape(T * N, D),    # (8)
             "W_hh": da2.T @ h[:-1].reshape(T * N, H)}
    if has_bias:
        grads["b_ih"] = xp.ones(T * N, dtype=x.dtype) @ da2    # sums over steps, sequences as GEMVs
        grads["b_hh"] = grads["b_ih"].copy()
    return dx, g, grads


class Prepared(_Prepared):
    """Forward-only steps (``_common.Prepared``): (1)-(2) with b_ih + b_hh summed
    once into the input half."""

    def __init__(self, W_ih, W_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
        self.xp = get_array_module(W_ih)
        self.W_ih, self.W_hh = W_ih, W_hh
        self.b_in = None if b_ih is None else b_ih + b_hh
        self.relu = nonlinearity == "relu"

    def cell(self, xw, states):
        xp = self.xp
        a = xw + xp.dot(states[0], self.W_hh.T)                      # (1)
        return (xp.maximum(a, 0, out=a) if self.relu else xp.tanh(a, out=a)),   # (2)
