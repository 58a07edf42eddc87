"""Accelerated Elman RNN: ``functional/rnn.py``'s numbers, computed faster.

Equation numbers refer to ``functional/rnn.py``. What differs from the reference:
the recurrent weight is transposed once per call ((H, H) contiguous), both
biases are added to the input half before the loop, every step writes into
buffers allocated once per call, the backward flushes gradients that fall
towards the subnormal range, and on CuPy each step's elementwise work is one
fused kernel. The loops are ``_loop``'s; this file holds the cache, the weights'
preparation and the kernels.

The kernel set (``_common.Kernels``), the same arguments in every set:

    forward(a, rec, h_prev, h, relu, valid, bias)   (1)-(2): h = phi(a + rec + bias),
                                                 a (N, H) the input half (it becomes the
                                                 pre-activation); bias (H,) b_ih + b_hh, or
                                                 None where they are in a
    backward(g, h, da, relu, dout, valid, carry)  (5): da = g * phi'(a), from h = h_t
                                                 (g + dout_t where dout is given)
    prepared(xw, rec, relu) -> h                 (1)-(2) for a forward-only step
"""

import functools
from typing import Any, Dict, NamedTuple, Optional, Tuple

from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule
from ...backend import elementwise_kernel, get_array_module
from ..._checks import check_choice, check_sequence_args
from .._recurrent import masked_output, output_grads, step_mask
from ..regularisers import check_recurrent_mask, zoneout_states
from . import _layout, _loop, _numba, _pool
from ._common import Kernels, Prepared as _Prepared, kernel_set
from ._numba import const as _const, flush_below as _flush_below, tanh as _tanh


class RNNAccelCache(NamedTuple):
    """The accelerated forward's cache (the reference's values)."""
    x: Any                   # (T, N, D) input
    h: Any                   # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    W_ih: Any                # (H, D)
    W_hh: Any                # (H, H)
    has_bias: bool
    nonlinearity: str
    mask: Optional[Any]      # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) recurrent-dropout mask, or None
    zoneout: Optional[Tuple[Any, ...]] = None   # zoneout of h, or None
    candidate: Optional[Any] = None  # (T, N, H) h~_t where zoneout is on
    #: feature-major (``_layout``): h (T + 1, H, N), the candidates (T, H, N), the
    #: recurrent-dropout mask (H, N) and zoneout's masks (T, H, N)
    feature: bool = False


Cache = RNNAccelCache


# -- NumPy/CuPy ufuncs -------------------------------------------------------------------

def _ufunc_forward(a: Array, rec: Array, h_prev: Array, h: Array, relu: bool,
                   valid: Optional[Array], bias: Optional[Array] = None) -> None:
    xp = get_array_module(a)
    a += rec                                        # (1)
    if bias is not None:
        a += bias
    if relu:                                        # (2)
        xp.maximum(a, 0, out=h)
    else:
        xp.tanh(a, out=h)


def _ufunc_backward(g: Array, h: Array, da: Array, relu: bool, dout: Optional[Array],
                    valid: Optional[Array], carry: Optional[Array]) -> None:
    xp = get_array_module(g)
    if relu:                                        # (5)
        xp.multiply(g, h > 0, out=da)
    else:
        xp.multiply(h, h, out=da)
        xp.subtract(1, da, out=da)
        da *= g


def _ufunc_prepared(xw: Array, rec: Array, relu: bool) -> Array:
    xp = get_array_module(xw)
    a = xw + rec                                    # (1)
    return xp.maximum(a, 0, out=a) if relu else xp.tanh(a, out=a)   # (2)


_UFUNCS = Kernels(_ufunc_forward, _ufunc_backward, _ufunc_prepared, bias=True)


# -- numba (NumPy) ------------------------------------------------------------------------

def _numba_forward(a: Array, rec: Array, h_prev: Array, h: Array, relu: bool,
                   valid: Optional[Array], bias: Array) -> None:
    N, H = h.shape
    zero = _const(h, 0.0)
    for n in range(N):
        an, rn, hn = a[n], rec[n], h[n]
        for j in range(H):
            v = an[j] + rn[j] + bias[j]                                         # (1)
            an[j] = v
            hn[j] = (v if (v > zero or v != v) else zero) if relu else _tanh(v)  # (2)


def _numba_backward(g: Array, h: Array, da: Array, relu: bool, dout: Optional[Array],
                    valid: Optional[Array], carry: Optional[Array]) -> None:
    N, H = h.shape
    zero, one, below = _const(h, 0.0), _const(h, 1.0), _flush_below(h)
    for n in range(N):
        gn, hn, dn = g[n], h[n], da[n]
        for j in range(H):                                                      # (5)
            hj, gj = hn[j], gn[j]
            if dout is not None:
                gj += dout[n, j]                                                # (4)
            d = gj * (one if hj > zero else zero) if relu else gj * (one - hj * hj)
            dn[j] = zero if abs(d) < below else d       # flushed; NaN fails and stays


def _numba_kernels() -> Kernels:
    """(the forward-only step is the ufuncs': one pass over one block already)"""
    return Kernels(_numba.jit(_numba_forward), _numba.jit(_numba_backward), _ufunc_prepared,
                   bias=True, own=True)


# -- fused CUDA (CuPy) --------------------------------------------------------------------
# One kernel per step each way, padded steps and the output gradients included: with
# the matrix product, two launches a step each way. ReLU treats NaN as NumPy does
# (CUDA's max() would turn a NaN pre-activation into 0): max(NaN, 0) is NaN, and the
# backward is g * [h > 0], so a NaN gradient at an inactive unit stays NaN.

@functools.lru_cache(maxsize=None)
def _fused_forward_source(relu: bool, masked: bool) -> Tuple[str, str, str, str]:
    """(in_params, out_params, body, name) of the kernel: (1)-(2); padded rows keep
    h_{t-1}."""
    phi = "(v > (T)0 || v != v) ? v : (T)0" if relu else "tanh(v)"
    return (
        "T a, T rec, T h_prev" + (", bool valid" if masked else ""), "T h",
        f"const T v = a + rec; h = {'!valid ? h_prev : ' if masked else ''}{phi};",
        f"npnn_rnn_forward_{'relu' if relu else 'tanh'}{'_masked' if masked else ''}")


def _fused_forward(a: Array, rec: Array, h_prev: Array, h: Array, relu: bool,
                   valid: Optional[Array], bias: Optional[Array] = None) -> None:
    assert bias is None                 # (the set adds no bias: it is in a)
    masked = valid is not None
    kernel = elementwise_kernel(*_fused_forward_source(relu, masked))
    kernel(a, rec, h_prev, *((valid,) if masked else ()), h)                # (1)-(2)


@functools.lru_cache(maxsize=None)
def _fused_backward_source(relu: bool, has_dout: bool,
                           masked: bool) -> Tuple[str, str, str, str]:
    """(in_params, ...) of the kernel: ``g`` holds the gradient reaching h_t from step
    t + 1, ``carry`` what padded steps pass back; it adds them and dout_t (4), then (5)."""
    slope = "(T)(h > (T)0)" if relu else "((T)1 - h * h)"
    reach = "g" + (" + dout" if has_dout else "") + (" + carry" if masked else "")
    body = (f"const T gt = {reach}; " +
            ("if (!valid) { da = (T)0; carry = gt; } else { "
             f"da = gt * {slope}; carry = (T)0; }}" if masked else f"da = gt * {slope};"))
    return (
        "T g, T h" + (", T dout" if has_dout else "") + (", bool valid" if masked else ""),
        "T da" + (", T carry" if masked else ""), body,
        f"npnn_rnn_backward_{'relu' if relu else 'tanh'}{'_dout' if has_dout else ''}"
        f"{'_masked' if masked else ''}")


def _fused_backward(g: Array, h: Array, da: Array, relu: bool, dout: Optional[Array],
                    valid: Optional[Array], carry: Optional[Array]) -> None:
    masked, has_dout = valid is not None, dout is not None
    kernel = elementwise_kernel(*_fused_backward_source(relu, has_dout, masked))
    kernel(g, h, *((dout,) if has_dout else ()), *((valid,) if masked else ()),
           da, *((carry,) if masked else ()))


_FUSED = Kernels(_fused_forward, _fused_backward, _ufunc_prepared, folds=True)


def _kernels(xp: ArrayModule, dtype: DTypeLike, folding: bool = True) -> Kernels:
    return kernel_set(xp, dtype, _FUSED, _numba_kernels, lambda: _UFUNCS, folding)


# -- the sequence ops ---------------------------------------------------------------------

#: gate blocks of W_hh's rows, and states
GATES, STATES = 1, 1


def forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array,
            b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
            nonlinearity: str = "tanh", mask: Optional[Array] = None,
            recurrent_mask: Optional[Array] = None,
            zoneout: Any = None) -> Tuple[Array, Array, RNNAccelCache]:
    """``functional.rnn_forward``'s arguments and results (checked as it checks them),
    with an ``RNNAccelCache``."""
    check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
    xp, T, N, D, H = check_sequence_args(1, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H,), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    feature = _layout.for_cell(xp, forward, backward, GATES, STATES, N, H,
                               x.dtype) == _layout.FEATURE
    h, = _loop.new_states(xp, T, N, H, x.dtype, (h0,), feature)
    if feature:                     # (1), input half (T, H, N); rm, zone's masks transposed
        rm, zone, mk = _layout.to_feature(xp, rm), _layout.zone_to_feature(xp, zone), (
            None if m is None else m.transpose(0, 2, 1))
        a = _layout.input_half(xp, x, W_ih)
        W_rec = W_hh                                     # W h_{t-1}^T
    else:                           # (1), input half: every step at once, (T, N, H)
        mk, a = m, _pool.input_half(xp, x, W_ih)
        W_rec = _pool.transposed(xp, W_hh)               # h_{t-1} W^T
    cand = None if zone is None else _pool.empty(xp, h[1:].shape, x.dtype)  # h~_t, (10)
    rec = _pool.empty(xp, h.shape[1:], x.dtype)
    rows = _layout.kernel_rows(feature, N, H)[0]        # feature-major: one row of H*N
    ak, reck, hk = rows(a), rows(rec), rows(h)
    kernels, relu = _kernels(xp, x.dtype, zone is None), nonlinearity == "relu"
    b_k = _layout.kernel_bias(xp, kernels, None if b_ih is None else b_ih + b_hh, (a,),
                              feature, N)               # (1)'s biases
    fwd = kernels.forward
    _loop.forward(xp, kernels, lambda t, m_t: fwd(ak[t], reck, hk[t], hk[t + 1], relu, m_t,
                                                  b_k),
                  (h,), ((W_rec, rec),), mk, rm, zone, (cand,), feature=feature)
    cache = RNNAccelCache(x, h, W_ih, W_hh, b_ih is not None, nonlinearity, m, rm, zone, cand,
                          feature)
    if feature:
        return masked_output(xp, _layout.to_batch(xp, h[1:]), m), _layout.to_batch(xp, h[T]), \
            cache                                                           # (3)
    return masked_output(xp, h[1:], m), h[T], cache                         # (3)


def backward(dout: Optional[Array], dh_n: Optional[Array],
             cache: RNNAccelCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """``functional.rnn_backward`` for a cache of ``forward`` above."""
    x, h, W_ih, W_hh, has_bias, nonlinearity, m, rm, zone, cand, feature = cache
    H, N = W_hh.shape[1], x.shape[1]
    xp, dout, (dh,) = output_grads(x, m, H, dout, {"dh_n": dh_n}, copy=True)
    if feature:
        dout, dh = _layout.to_feature(xp, dout), _layout.to_feature(xp, dh)
        mk = None if m is None else m.transpose(0, 2, 1)
        W_back = _pool.transposed(xp, W_hh)     # W^T da_t^T, W^T contiguous (_layout)
    else:
        mk, W_back = m, W_hh                                                  # da_t W
    da = _pool.empty(xp, h[1:].shape, x.dtype)      # (T, N, H) or (T, H, N)
    kernels, relu = _kernels(xp, x.dtype, zone is None), nonlinearity == "relu"
    bwd = kernels.backward
    rows = _layout.kernel_rows(feature, N, H)[0]
    new = rows(h[1:] if cand is None else cand)     # h~_t, what phi' reads (11)
    dhk, dak = rows(dh), rows(da)
    dh0 = _loop.backward(xp, kernels, lambda t, d, m_t, carry: bwd(dhk, new[t], dak[t], relu,
                                                                   _layout.rows_of(rows, d),
                                                                   m_t, carry),
                         (da,), W_back, dh, (), dout, mk, rm=rm, zone=zone,
                         feature=feature)                                   # (4)-(6), (11)-(12)
    dx, grads = _loop.weight_grads(x, h, W_ih, da, da, has_bias, m, rm,
                                   feature)                                 # (7)-(8), (12)
    return dx, _layout.to_batch(xp, dh0) if feature else dh0, grads


class Prepared(_Prepared):
    """Forward-only steps (``_common.Prepared``): (1)-(2) with b_ih + b_hh summed
    once into the input half (elementwise, the same code in either layout)."""

    G, S = GATES, STATES

    def __init__(self, W_ih: Array, W_hh: Array, b_ih: Optional[Array] = None,
                 b_hh: Optional[Array] = None, nonlinearity: str = "tanh") -> None:
        self.xp = get_array_module(W_ih)
        self.W_ih, self.W_hh = W_ih, W_hh
        self.b_in = None if b_ih is None else b_ih + b_hh
        self.relu = nonlinearity == "relu"
        self.kernel = _kernels(self.xp, W_ih.dtype).prepared

    def cell(self, xw: Array, states: Tuple[Array, ...],
             feature: bool = False) -> Tuple[Array, ...]:
        return self.kernel(xw, self.product(states[0], feature), self.relu),
