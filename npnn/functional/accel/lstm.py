"""Accelerated LSTM: ``functional/lstm.py``'s numbers, computed faster.

Equation numbers refer to ``functional/lstm.py``. What differs from the reference:

* The tanh form (``_common.SIGMOID_SCALE``): every gate is y = s tanh(s z) + b,
  with s = b = 1/2 on the sigmoid blocks i, f, o and s = 1, b = 0 on g. The
  factor s inside tanh is folded into the weight rows once per call, so (2) is
  one tanh pass over the contiguous (N, 4H) block, and (11) is one pass too:
  dy/dz = s^2 - (y - b)^2 for every block alike.
* The recurrent weights are scaled and transposed once per call, (4H, H) ->
  (H, 4H) contiguous, and each step's product writes into a buffer.
* All buffers are allocated once per call; the loops write into them, so the
  step's elementwise work allocates nothing.
* The backward flushes gradients that fall towards the subnormal range
  (``_common.flush_subnormals``).
* On CuPy each step's elementwise work is one fused kernel; with numba
  (float32) one compiled loop; elsewhere a handful of ufunc passes. The three
  kernel sets (``_common.Kernels``) take the same arguments and fill the same
  buffers; the loops are ``_loop``'s:

    forward(z, rec, c_prev, h_prev, c, tanh_c, h, valid, bias)   (1)-(4): z (N, 4H)
        holds the scaled input half and becomes the gates [i f g o]; bias (4H,) the
        scaled b_ih + b_hh, or None where they are in z already
    backward(y, c_prev, tanh_c, dh, dc, dz, dout, valid, carry)   (7)-(11): dh = dh_t
        (dh_t + dout_t where dout is given), dc holds dc_t^next and becomes
        dc_{t-1}^next; fills dz (N, 4H)
    prepared(xw, rec, c_prev, s, b) -> h, c      (1)-(4) for a forward-only step, xw
        and rec the two unscaled halves of z, s and b from ``_gate_affine``
* Padded steps are handled by selection, as in the reference.
"""

import functools
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule
from ...backend import elementwise_kernel, get_array_module
from ..._checks import check_sequence_args
from .._recurrent import masked_output, output_grads, step_mask
from ..regularisers import check_recurrent_mask, zoneout_states
from . import _layout, _loop, _numba, _pool
from ._common import SIGMOID_SCALE, SIGMOID_SHIFT, Kernels, Prepared as _Prepared, kernel_set
from ._numba import const as _const, flush_below as _flush_below, tanh as _tanh


def _gate_affine(xp: ArrayModule, H: int, dtype: DTypeLike) -> Tuple[Array, Array, Array]:
    """s, b, s^2 (4H,) of y = s tanh(s z) + b: the sigmoid's constants on i, f, o; 1, 0
    on g. On NumPy, one read-only triple per (H, dtype) serves every call (a forward-only
    step taken by hand prepares at each call: 5 us of 40 for an LSTMCell step, H = 256)."""
    if xp is np:
        return _host_gate_affine(H, np.dtype(dtype))
    return _new_gate_affine(xp, H, dtype)


def _new_gate_affine(xp: ArrayModule, H: int,
                     dtype: DTypeLike) -> Tuple[Array, Array, Array]:
    s = xp.full(4 * H, SIGMOID_SCALE, dtype=dtype)
    b = xp.full(4 * H, SIGMOID_SHIFT, dtype=dtype)
    s[2 * H:3 * H] = 1.0
    b[2 * H:3 * H] = 0.0
    return s, b, s * s


@functools.lru_cache(maxsize=32)
def _host_gate_affine(H: int, dtype: np.dtype[Any]) -> Tuple[Array, Array, Array]:
    triple = _new_gate_affine(np, H, dtype)
    for a in triple:
        a.flags.writeable = False
    return triple


class LSTMAccelCache(NamedTuple):
    """The accelerated forward's cache: the reference's values, gates in one block."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    c: Any              # (T + 1, N, H) c[0] = c_0, c[t] = c_t
    gates: Any          # (T, N, 4H) post-activation i, f, g, o
    tanh_c: Any         # (T, N, H) tanh(c_t)
    W_ih: Any           # (4H, D)
    W_hh: Any           # (4H, H)
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) recurrent-dropout mask, or None
    zoneout: Optional[Tuple[Any, ...]] = None   # zoneout of (h, c), or None
    #: feature-major (``_layout``): h, c (T + 1, H, N), gates (T, 4H, N), tanh_c
    #: (T, H, N), the recurrent-dropout mask (H, N) and zoneout's masks (T, H, N)
    feature: bool = False


Cache = LSTMAccelCache


# -- NumPy/CuPy ufuncs: a few passes into preallocated buffers ---------------------------

def _ufuncs(xp: ArrayModule, N: int, H: int, dtype: DTypeLike) -> Kernels:
    s, b, s2 = _gate_affine(xp, H, dtype)
    ig, c_slope = xp.empty((N, H), dtype=dtype), xp.empty((N, H), dtype=dtype)
    gate_slope = xp.empty((N, 4 * H), dtype=dtype)

    def forward(z: Array, rec: Array, c_prev: Array, h_prev: Array, c: Array, tanh_c: Array,
                h: Array, valid: Optional[Array], bias: Optional[Array] = None) -> None:
        z += rec                                    # (1), scaled by s
        if bias is not None:
            z += bias
        xp.tanh(z, out=z)                           # (2) all four gates: s tanh(s z) + b
        z *= s
        z += b
        i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        xp.multiply(f, c_prev, out=c)               # (3)
        xp.multiply(i, g, out=ig)
        c += ig
        xp.tanh(c, out=tanh_c)                      # (4)
        xp.multiply(o, tanh_c, out=h)

    def backward(y: Array, c_prev: Array, tc: Array, dh: Array, dc: Array, dz: Array,
                 dout: Optional[Array], valid: Optional[Array], carry: Optional[Array]) -> None:
        i, f, g, o = y[:, :H], y[:, H:2 * H], y[:, 2 * H:3 * H], y[:, 3 * H:]
        cs, gs = c_slope, gate_slope                # (updated in place below)
        xp.multiply(dh, tc, out=dz[:, 3 * H:])      # (7) do
        xp.multiply(tc, tc, out=cs)                 # (8) dc_t = dc^next + dh o (1 - tanh(c)^2)
        xp.subtract(1, cs, out=cs)
        cs *= o
        cs *= dh
        dc += cs
        xp.multiply(dc, g, out=dz[:, :H])           # (9) di
        xp.multiply(dc, c_prev, out=dz[:, H:2 * H])  #    df
        xp.multiply(dc, i, out=dz[:, 2 * H:3 * H])  #     dg
        dc *= f                                     # (10)
        xp.subtract(y, b, out=gs)                   # (11) dz = dy (s^2 - (y - b)^2)
        gs *= gs
        xp.subtract(s2, gs, out=gs)
        dz *= gs

    return Kernels(forward, backward, _ufunc_prepared, bias=True)


def _ufunc_prepared(xw: Array, rec: Array, c_prev: Array, s: Array,
                    b: Array) -> Tuple[Array, Array]:
    xp = get_array_module(xw)
    H = c_prev.shape[1]
    z = xw + rec                                    # (1)
    z *= s                                          # (2): s tanh(s z) + b, all gates
    xp.tanh(z, out=z)
    z *= s
    z += b
    i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
    c = f * c_prev                                  # (3)
    c += i * g
    return o * xp.tanh(c), c                        # (4)


# -- numba (NumPy): one compiled loop over (n, j) a step -------------------------------

def _numba_forward(z: Array, rec: Array, c_prev: Array, h_prev: Array, c: Array,
                   tanh_c: Array, h: Array, valid: Optional[Array], bias: Array) -> None:
    N, H = c.shape
    s, b = _const(c, SIGMOID_SCALE), _const(c, SIGMOID_SHIFT)
    bi, bf, bg, bo = bias[:H], bias[H:2 * H], bias[2 * H:3 * H], bias[3 * H:]
    for n in range(N):
        zi, zf, zg, zo = z[n, :H], z[n, H:2 * H], z[n, 2 * H:3 * H], z[n, 3 * H:]
        ri, rf, rg, ro = rec[n, :H], rec[n, H:2 * H], rec[n, 2 * H:3 * H], rec[n, 3 * H:]
        cp, cn, tc, hn = c_prev[n], c[n], tanh_c[n], h[n]
        for j in range(H):
            ig = _tanh(zi[j] + ri[j] + bi[j]) * s + b                           # (1), (2)
            fg = _tanh(zf[j] + rf[j] + bf[j]) * s + b
            gg = _tanh(zg[j] + rg[j] + bg[j])
            og = _tanh(zo[j] + ro[j] + bo[j]) * s + b
            zi[j], zf[j], zg[j], zo[j] = ig, fg, gg, og
            cj = fg * cp[j] + ig * gg                                           # (3)
            cn[j] = cj
            tj = _tanh(cj)                                                      # (4)
            tc[j] = tj
            hn[j] = og * tj


def _numba_backward(y: Array, c_prev: Array, tanh_c: Array, dh: Array, dc: Array, dz: Array,
                    dout: Optional[Array], valid: Optional[Array], carry: Optional[Array]) -> None:
    N, H = dh.shape
    one, zero, below = _const(dh, 1.0), _const(dh, 0.0), _flush_below(dh)
    for n in range(N):
        yi, yf, yg, yo = y[n, :H], y[n, H:2 * H], y[n, 2 * H:3 * H], y[n, 3 * H:]
        di, df, dg, do = dz[n, :H], dz[n, H:2 * H], dz[n, 2 * H:3 * H], dz[n, 3 * H:]
        cp, tc, dhn, dcn = c_prev[n], tanh_c[n], dh[n], dc[n]
        for j in range(H):
            ig, fg, gg, og, t = yi[j], yf[j], yg[j], yo[j], tc[j]
            g = dhn[j]
            if dout is not None:
                g += dout[n, j]                                                 # (6)
            dct = dcn[j] + g * og * (one - t * t)                               # (8)
            a = dct * gg * ig * (one - ig)                                      # (9), (11)
            b = dct * cp[j] * fg * (one - fg)
            e = dct * ig * (one - gg * gg)
            o = g * t * og * (one - og)                                         # (7), (11)
            f = dct * fg                                                        # (10)
            # flushed (``_common.flush_subnormals``): NaN fails the test and stays
            di[j] = zero if abs(a) < below else a
            df[j] = zero if abs(b) < below else b
            dg[j] = zero if abs(e) < below else e
            do[j] = zero if abs(o) < below else o
            dcn[j] = zero if abs(f) < below else f


def _numba_prepared_loop(xw: Array, rec: Array, c_prev: Array, c: Array, h: Array) -> None:
    N, H = c.shape
    s, b = _const(c, SIGMOID_SCALE), _const(c, SIGMOID_SHIFT)
    for n in range(N):
        xi, xf, xg, xo = xw[n, :H], xw[n, H:2 * H], xw[n, 2 * H:3 * H], xw[n, 3 * H:]
        ri, rf, rg, ro = rec[n, :H], rec[n, H:2 * H], rec[n, 2 * H:3 * H], rec[n, 3 * H:]
        cp, cn, hn = c_prev[n], c[n], h[n]
        for j in range(H):
            ig = _tanh((xi[j] + ri[j]) * s) * s + b                             # (1), (2)
            fg = _tanh((xf[j] + rf[j]) * s) * s + b
            gg = _tanh(xg[j] + rg[j])
            og = _tanh((xo[j] + ro[j]) * s) * s + b
            cj = fg * cp[j] + ig * gg                                           # (3)
            cn[j] = cj
            hn[j] = og * _tanh(cj)                                              # (4)


def _numba_prepared(xw: Array, rec: Array, c_prev: Array, s: Array,
                    b: Array) -> Tuple[Array, Array]:
    c, h = np.empty_like(c_prev), np.empty_like(c_prev)
    _numba.jit(_numba_prepared_loop)(xw, rec, c_prev, c, h)
    return h, c


def _numba_kernels() -> Kernels:
    return Kernels(_numba.jit(_numba_forward), _numba.jit(_numba_backward), _numba_prepared,
                   bias=True, own=True)


# -- fused CUDA (CuPy): one kernel a step each way ---------------------------------------
# Padded steps and the output gradients included: with the matrix product, two launches
# a step each way, masked or not (a mask selected apart cost 2 more forward, 5 backward).
# Each kernel reads a gate block of row n at column j through the raw (N, 4H) arrays;
# one thread per (n, j) of (N, H).

_S, _B = f"(T){SIGMOID_SCALE!r}", f"(T){SIGMOID_SHIFT!r}"


@functools.lru_cache(maxsize=None)
def _fused_forward_source(masked: bool) -> Tuple[str, str, str, str]:
    """(in_params, out_params, body, name) of (1)-(4); padded rows keep (h, c)_{t-1}."""
    ins = "raw T rec, T c_prev, T h_prev, " + ("bool valid, " if masked else "") + "int32 H"
    keep = "if (!valid) { c = c_prev; h = h_prev; } else " if masked else ""
    return (ins, "raw T z, T c, T tc, T h", f"""
        const ptrdiff_t n = i / H, j = i % H, k = n * 4 * H + j;
        const T ig = tanh(z[k] + rec[k]) * {_S} + {_B};                      // (2)
        const T fg = tanh(z[k + H] + rec[k + H]) * {_S} + {_B};
        const T gg = tanh(z[k + 2 * H] + rec[k + 2 * H]);
        const T og = tanh(z[k + 3 * H] + rec[k + 3 * H]) * {_S} + {_B};
        z[k] = ig; z[k + H] = fg; z[k + 2 * H] = gg; z[k + 3 * H] = og;
        const T cn = fg * c_prev + ig * gg;                                  // (3)
        const T tn = tanh(cn);                                               // (4)
        tc = tn;
        {keep}{{ c = cn; h = og * tn; }}
        """, "npnn_lstm_forward" + ("_masked" if masked else ""))


def _fused_forward(z: Array, rec: Array, c_prev: Array, h_prev: Array, c: Array,
                   tanh_c: Array, h: Array, valid: Optional[Array],
                   bias: Optional[Array] = None) -> None:
    assert bias is None                 # (the set adds no bias: it is in z, Kernels.bias)
    masked = valid is not None
    kernel = elementwise_kernel(*_fused_forward_source(masked))
    kernel(rec, c_prev, h_prev, *((valid,) if masked else ()),
           np.int32(h.shape[1]), z, c, tanh_c, h)


@functools.lru_cache(maxsize=None)
def _fused_backward_source(has_dout: bool, masked: bool) -> Tuple[str, str, str, str]:
    """(in_params, ...) of (6)-(11). ``dh`` holds the gradient reaching h_t from step
    t + 1 (dz_{t+1} W_hh), ``carry`` what padded steps pass straight back; both are
    added to dout_t."""
    ins = ("raw T y, T c_prev, T tc, T dh, " + ("T dout, " if has_dout else "") +
           ("bool valid, " if masked else "") + "int32 H")
    outs = "raw T dz, T dc" + (", T carry" if masked else "")
    reach = "dh" + (" + dout" if has_dout else "") + (" + carry" if masked else "")
    return (ins, outs, f"""
        const ptrdiff_t n = i / H, j = i % H, k = n * 4 * H + j;
        const T g = {reach};                                                 // (6)
        {"if (!valid) { dz[k] = dz[k + H] = dz[k + 2 * H] = dz[k + 3 * H] = (T)0; carry = g; }"
         " else {" if masked else "{"}
        const T ig = y[k], fg = y[k + H], gg = y[k + 2 * H], og = y[k + 3 * H];
        const T dct = dc + g * og * ((T)1 - tc * tc);                        // (8)
        dz[k] = dct * gg * ig * ((T)1 - ig);                                 // (9), (11)
        dz[k + H] = dct * c_prev * fg * ((T)1 - fg);
        dz[k + 2 * H] = dct * ig * ((T)1 - gg * gg);
        dz[k + 3 * H] = g * tc * og * ((T)1 - og);                           // (7), (11)
        dc = dct * fg;                                                       // (10)
        {"carry = (T)0; " if masked else ""}}}
        """, "npnn_lstm_backward" + ("_dout" if has_dout else "") +
        ("_masked" if masked else ""))


def _fused_backward(y: Array, c_prev: Array, tc: Array, dh: Array, dc: Array, dz: Array,
                    dout: Optional[Array], valid: Optional[Array], carry: Optional[Array]) -> None:
    masked, has_dout = valid is not None, dout is not None
    kernel = elementwise_kernel(*_fused_backward_source(has_dout, masked))
    kernel(y, c_prev, tc, dh, *((dout,) if has_dout else ()), *((valid,) if masked else ()),
           np.int32(dh.shape[1]), dz, dc, *((carry,) if masked else ()))


_FUSED = Kernels(_fused_forward, _fused_backward, _ufunc_prepared, folds=True)


def _kernels(xp: ArrayModule, dtype: DTypeLike, N: int = 0, H: int = 0,
             folding: bool = True) -> Kernels:
    """The kernel set for these arrays; N, H size the ufunc set's buffers."""
    return kernel_set(xp, dtype, _FUSED, _numba_kernels, lambda: _ufuncs(xp, N, H, dtype),
                      folding)


# -- the sequence ops ---------------------------------------------------------------------

#: gate blocks of W_hh's rows, and states
GATES, STATES = 4, 2


def forward(x: Array, h0: Optional[Array], c0: Optional[Array], W_ih: Array, W_hh: Array,
            b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
            mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
            zoneout: Any = None) -> Tuple[Array, Array, Array, LSTMAccelCache]:
    """``functional.lstm_forward``'s arguments and results (checked as it checks them),
    with an ``LSTMAccelCache``."""
    xp, T, N, D, H = check_sequence_args(4, x, {"h0": h0, "c0": c0},
                                         W_ih, W_hh, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H, H), x.dtype)
    rm = recurrent_mask
    dt = x.dtype
    m = step_mask(mask)
    feature = _layout.for_cell(xp, forward, backward, GATES, STATES, N, H, dt) == _layout.FEATURE
    s = _gate_affine(xp, H, dt)[0]
    bias = None if b_ih is None else (b_ih + b_hh) * s      # (1)'s biases, scaled by s
    rows, R, C = _layout.kernel_rows(feature, N, H)        # feature-major: one row of H*N
    kernels = _kernels(xp, dt, R, C, zone is None)
    if feature:       # (1) scaled by s, input half: (T, 4H, N); rm, zone's masks transposed
        rm, zone, mk = _layout.to_feature(xp, rm), _layout.zone_to_feature(xp, zone), (
            None if m is None else m.transpose(0, 2, 1))
        gates = _layout.input_half(xp, x, W_ih * s[:, None])
        W_rec = W_hh * s[:, None]                           # (4H, H): W h_{t-1}^T
        rec = _pool.empty(xp, (4 * H, N), dt)
    else:             # (1) scaled by s, input half: (T, N, 4H)
        mk = m
        gates = _pool.input_half(xp, x, W_ih * s[:, None])
        W_rec = _pool.transposed(xp, W_hh, s)                # (H, 4H): h_{t-1} W^T
        rec = _pool.empty(xp, (N, 4 * H), dt)
    b_k = _layout.kernel_bias(xp, kernels, bias, (gates,), feature, N)
    h, c = _loop.new_states(xp, T, N, H, dt, (h0, c0), feature)
    tanh_c = _pool.empty(xp, h[1:].shape, dt)
    gk, reck, hk, ck, tck = rows(gates), rows(rec), rows(h), rows(c), rows(tanh_c)
    fwd = kernels.forward
    _loop.forward(xp, kernels, lambda t, m_t: fwd(gk[t], reck, ck[t], hk[t], ck[t + 1],
                                                  tck[t], hk[t + 1], m_t, b_k),
                  (h, c), ((W_rec, rec),), mk, rm, zone,
                  feature=feature)                                          # (1)-(4), (15)-(16)
    cache = LSTMAccelCache(x, h, c, gates, tanh_c, W_ih, W_hh, b_ih is not None, m, rm, zone,
                           feature)
    if feature:
        return (masked_output(xp, _layout.to_batch(xp, h[1:]), m), _layout.to_batch(xp, h[T]),
                _layout.to_batch(xp, c[T]), cache)                          # (5)
    return masked_output(xp, h[1:], m), h[T], c[T], cache                   # (5)


def backward(dout: Optional[Array], dh_n: Optional[Array], dc_n: Optional[Array],
             cache: LSTMAccelCache) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """``functional.lstm_backward`` for a cache of ``forward`` above."""
    x, h, c, gates, tanh_c, W_ih, W_hh, has_bias, m, rm, zone, feature = cache
    T, N, _ = x.shape
    H = W_hh.shape[1]
    xp, dout, (dh, dc) = output_grads(x, m, H, dout, {"dh_n": dh_n, "dc_n": dc_n}, copy=True)
    if feature:
        dout, dh, dc = (_layout.to_feature(xp, a) for a in (dout, dh, dc))
        mk = None if m is None else m.transpose(0, 2, 1)
        W_back = _pool.transposed(xp, W_hh)     # W^T dz_t^T, W^T contiguous (_layout)
    else:
        mk, W_back = m, W_hh                                              # dz_t W
    rows, R, C = _layout.kernel_rows(feature, N, H)
    dz = _pool.empty(xp, gates.shape, x.dtype)
    gk, ck, tck, dhk, dck, dzk = rows(gates), rows(c), rows(tanh_c), rows(dh), rows(dc), rows(dz)
    kernels = _kernels(xp, x.dtype, R, C, zone is None)
    bwd = kernels.backward
    # (a step's output gradient d, where the kernel takes it, in the kernels' rows too)
    dh0 = _loop.backward(xp, kernels, lambda t, d, m_t, carry: bwd(gk[t], ck[t], tck[t],
                                                                   dhk, dck, dzk[t],
                                                                   _layout.rows_of(rows, d),
                                                                   m_t, carry),
                         (dz,), W_back, dh, (dc,), dout, mk, rm=rm, zone=zone,
                         feature=feature)                                   # (6)-(12), (17)-(18)
    dx, grads = _loop.weight_grads(x, h, W_ih, dz, dz, has_bias, m, rm,
                                   feature)                                 # (13)-(14), (19)
    if feature:
        return dx, _layout.to_batch(xp, dh0), _layout.to_batch(xp, dc), grads
    return dx, dh0, dc, grads


class Prepared(_Prepared):
    """Forward-only steps (``_common.Prepared``) in the tanh form: b_ih + b_hh summed
    once; a step is one product, then one tanh pass over the (N, 4H) block for all
    four gates, y = s tanh(s z) + b (2), then (3)-(4); with numba (float32), the
    step's elementwise work is one compiled loop instead. Feature-major, the kernel
    takes the (4H, N) block as one row (``_layout.rows``)."""

    G, S = GATES, STATES

    def __init__(self, W_ih: Array, W_hh: Array, b_ih: Optional[Array] = None,
                 b_hh: Optional[Array] = None) -> None:
        self.xp = get_array_module(W_ih)
        self.W_ih, self.W_hh = W_ih, W_hh
        self.b_in = None if b_ih is None else b_ih + b_hh
        self.s, self.b, _ = _gate_affine(self.xp, W_hh.shape[1], W_ih.dtype)
        self.kernel = _kernels(self.xp, W_ih.dtype).prepared
        self._repeated: Tuple[int, Array, Array] = (0, self.s, self.b)   # N, s and b, N-fold

    def cell(self, xw: Array, states: Tuple[Array, ...],
             feature: bool = False) -> Tuple[Array, ...]:
        h_prev, c_prev = states
        rec = self.product(h_prev, feature)
        if not feature:
            return self.kernel(xw, rec, c_prev, self.s, self.b)
        H, N = c_prev.shape
        if self._repeated[0] != N:          # s, b for each of the N columns, one row
            self._repeated = (N, self.xp.repeat(self.s, N), self.xp.repeat(self.b, N))
        rows = _layout.rows
        h, c = self.kernel(rows(xw), rows(rec), rows(c_prev), *self._repeated[1:])
        return h.reshape(H, N), c.reshape(H, N)
