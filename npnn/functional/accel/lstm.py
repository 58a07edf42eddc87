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
* On CuPy each step's elementwise work is one fused kernel (``_Fused``);
  elsewhere a handful of ufunc passes (``_Ufuncs``). Both have the same
  signatures and fill the same buffers.
* Padded steps are handled by selection (``copyto(..., where=pad)``), as in
  the reference.
"""

import functools
from typing import Any, NamedTuple, Optional

import numpy as np

from ...backend import elementwise_kernel, get_array_module
from .._recurrent import output_grads
from . import _numba
from ._numba import const as _const, tanh as _tanh
from ._common import (FLUSH_EVERY, SIGMOID_SCALE, SIGMOID_SHIFT, Prepared as _Prepared,
                      flush_subnormals, fused, hold, masked_output, padding, valid_rows)


def _gate_affine(xp, H, dtype):
    """s, b (4H,) of y = s tanh(s z) + b: the sigmoid's constants on i, f, o; 1, 0 on g.
    On NumPy, one read-only pair per (H, dtype) serves every call (a forward-only step
    taken by hand prepares at each call: 5 us of 40 for an LSTMCell step, H = 256)."""
    if xp is np:
        return _host_gate_affine(H, np.dtype(dtype))
    return _new_gate_affine(xp, H, dtype)


def _new_gate_affine(xp, H, dtype):
    s = xp.full(4 * H, SIGMOID_SCALE, dtype=dtype)
    b = xp.full(4 * H, SIGMOID_SHIFT, dtype=dtype)
    s[2 * H:3 * H] = 1.0
    b[2 * H:3 * H] = 0.0
    return s, b


@functools.lru_cache(maxsize=32)
def _host_gate_affine(H, dtype):
    pair = _new_gate_affine(np, H, dtype)
    for a in pair:
        a.flags.writeable = False
    return pair


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
    pad: Optional[Any]  # (T, N, 1) True at padded steps, or None


class _Ufuncs:
    """The per-step elementwise work as ufunc passes into preallocated buffers."""

    def __init__(self, xp, H, N, dtype):
        self.xp, self.H = xp, H
        self.s, self.b = _gate_affine(xp, H, dtype)
        self.s2 = self.s * self.s
        self.ig = xp.empty((N, H), dtype=dtype)
        self.c_slope = xp.empty((N, H), dtype=dtype)
        self.gate_slope = xp.empty((N, 4 * H), dtype=dtype)

    def forward_step(self, z, rec, c_prev, c, tanh_c, h):
        """z (N, 4H) holds the scaled input half and becomes the gates [i f g o]."""
        xp, H = self.xp, self.H
        z += rec                                    # (1), scaled by s
        xp.tanh(z, out=z)                           # (2) all four gates: s tanh(s z) + b
        z *= self.s
        z += self.b
        i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        xp.multiply(f, c_prev, out=c)               # (3)
        xp.multiply(i, g, out=self.ig)
        c += self.ig
        xp.tanh(c, out=tanh_c)                      # (4)
        xp.multiply(o, tanh_c, out=h)

    def backward_step(self, y, c_prev, tc, dh, dc, dz):
        """dh = dh_t; dc holds dc_t^next and becomes dc_{t-1}^next; fills dz (N, 4H)."""
        xp, H, c_slope = self.xp, self.H, self.c_slope
        i, f, g, o = y[:, :H], y[:, H:2 * H], y[:, 2 * H:3 * H], y[:, 3 * H:]
        xp.multiply(dh, tc, out=dz[:, 3 * H:])      # (7) do
        xp.multiply(tc, tc, out=c_slope)            # (8) dc_t = dc^next + dh o (1 - tanh(c)^2)
        xp.subtract(1, c_slope, out=c_slope)
        c_slope *= o
        c_slope *= dh
        dc += c_slope
        xp.multiply(dc, g, out=dz[:, :H])           # (9) di
        xp.multiply(dc, c_prev, out=dz[:, H:2 * H])  #    df
        xp.multiply(dc, i, out=dz[:, 2 * H:3 * H])  #     dg
        dc *= f                                     # (10)
        xp.subtract(y, self.b, out=self.gate_slope)  # (11) dz = dy (s^2 - (y - b)^2)
        self.gate_slope *= self.gate_slope
        xp.subtract(self.s2, self.gate_slope, out=self.gate_slope)
        dz *= self.gate_slope


_S, _B = f"(T){SIGMOID_SCALE!r}", f"(T){SIGMOID_SHIFT!r}"


class _Fused:
    """Each step's elementwise work as one CUDA kernel each way (CuPy only), padded steps
    and the output gradients included: with the matrix product, two launches a step
    each way, masked or not (a mask selected apart cost 2 more forward, 5 backward).

    Each kernel reads a gate block of row n at column j through the raw (N, 4H)
    arrays; one thread per (n, j) of (N, H). ``pad`` (N, 1) is True at padded rows."""

    def __init__(self, xp, H, N, dtype):
        pass

    @staticmethod
    def forward(gates, rec, W_hh_sT, h, c, tanh_c, pad):
        """(1)-(4) for every step; padded rows keep (h, c)_{t-1}."""
        xp = get_array_module(h)
        masked = pad is not None
        ins = "raw T rec, T c_prev, T h_prev, " + ("bool pad, " if masked else "") + "int32 H"
        keep = "if (pad) { c = c_prev; h = h_prev; } else " if masked else ""
        kernel = elementwise_kernel(ins, "raw T z, T c, T tc, T h", f"""
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
        H = np.int32(h.shape[2])
        for t in range(gates.shape[0]):
            xp.matmul(h[t], W_hh_sT, out=rec)       # (1) recurrent half
            kernel(rec, c[t], h[t], *((pad[t],) if masked else ()), H,
                   gates[t], c[t + 1], tanh_c[t], h[t + 1])

    @staticmethod
    def backward(gates, c, tanh_c, W_hh, dout, dh, dc, pad):
        """(6)-(12) for every step: dz (T, N, 4H), dh_0, dc_0. ``dh`` holds the gradient
        reaching h_t from step t + 1 (dz_{t+1} W_hh), ``carry`` what padded steps pass
        straight back; both are added to dout_t inside the kernel."""
        xp = get_array_module(dh)
        T, N, H = tanh_c.shape
        masked, has_dout = pad is not None, dout is not None
        ins = ("raw T y, T c_prev, T tc, T dh, " + ("T dout, " if has_dout else "") +
               ("bool pad, " if masked else "") + "int32 H")
        outs = "raw T dz, T dc" + (", T carry" if masked else "")
        reach = "dh" + (" + dout" if has_dout else "") + (" + carry" if masked else "")
        kernel = elementwise_kernel(ins, outs, f"""
            const ptrdiff_t n = i / H, j = i % H, k = n * 4 * H + j;
            const T g = {reach};                                                 // (6)
            {"if (pad) { dz[k] = dz[k + H] = dz[k + 2 * H] = dz[k + 3 * H] = (T)0; carry = g; }"
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
        dz = xp.empty((T, N, 4 * H), dtype=dh.dtype)
        carry = xp.zeros_like(dh) if masked else None
        H32 = np.int32(H)
        for t in range(T - 1, -1, -1):
            kernel(gates[t], c[t], tanh_c[t], dh, *((dout[t],) if has_dout else ()),
                   *((pad[t],) if masked else ()), H32, dz[t], dc, *((carry,) if masked else ()))
            xp.matmul(dz[t], W_hh, out=dh)          # (12)
        return dz, (dh + carry if masked else dh), dc


def _numba_forward_step(z, rec, c_prev, c, tanh_c, h):
    """A forward step of ``_Fused.forward`` as a loop compiled by numba (NumPy, ``_numba``)."""
    N, H = c.shape
    s, b = _const(c, SIGMOID_SCALE), _const(c, SIGMOID_SHIFT)
    for n in range(N):
        zi, zf, zg, zo = z[n, :H], z[n, H:2 * H], z[n, 2 * H:3 * H], z[n, 3 * H:]
        ri, rf, rg, ro = rec[n, :H], rec[n, H:2 * H], rec[n, 2 * H:3 * H], rec[n, 3 * H:]
        cp, cn, tc, hn = c_prev[n], c[n], tanh_c[n], h[n]
        for j in range(H):
            ig = _tanh(zi[j] + ri[j]) * s + b                                   # (2)
            fg = _tanh(zf[j] + rf[j]) * s + b
            gg = _tanh(zg[j] + rg[j])
            og = _tanh(zo[j] + ro[j]) * s + b
            zi[j], zf[j], zg[j], zo[j] = ig, fg, gg, og
            cj = fg * cp[j] + ig * gg                                           # (3)
            cn[j] = cj
            tj = _tanh(cj)                                                      # (4)
            tc[j] = tj
            hn[j] = og * tj


def _numba_backward_step(y, c_prev, tanh_c, dh, dc, dz):
    """A backward step of ``_Fused.backward`` (unmasked) as a loop compiled by numba."""
    N, H = dh.shape
    one = _const(dh, 1.0)
    for n in range(N):
        yi, yf, yg, yo = y[n, :H], y[n, H:2 * H], y[n, 2 * H:3 * H], y[n, 3 * H:]
        di, df, dg, do = dz[n, :H], dz[n, H:2 * H], dz[n, 2 * H:3 * H], dz[n, 3 * H:]
        cp, tc, dhn, dcn = c_prev[n], tanh_c[n], dh[n], dc[n]
        for j in range(H):
            ig, fg, gg, og, t = yi[j], yf[j], yg[j], yo[j], tc[j]
            dct = dcn[j] + dhn[j] * og * (one - t * t)                          # (8)
            di[j] = dct * gg * ig * (one - ig)                                  # (9), (11)
            df[j] = dct * cp[j] * fg * (one - fg)
            dg[j] = dct * ig * (one - gg * gg)
            do[j] = dhn[j] * t * og * (one - og)                                # (7), (11)
            dcn[j] = dct * fg                                                   # (10)


def _steps(xp, H, N, dtype):
    """The step kernels for these arrays: fused on CuPy, numba's or ufuncs on NumPy."""
    if fused(xp):
        return _Fused(xp, H, N, dtype)
    if _numba.use(xp, dtype):
        return _numba.Steps(_numba_forward_step, _numba_backward_step)
    return _Ufuncs(xp, H, N, dtype)


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None, mask=None):
    """``functional.lstm_forward`` (arguments already checked there)."""
    xp = get_array_module(x)
    T, N, D = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    pad = padding(mask)
    h = xp.empty((T + 1, N, H), dtype=dt)
    c = xp.empty((T + 1, N, H), dtype=dt)
    h[0] = 0 if h0 is None else h0
    c[0] = 0 if c0 is None else c0
    tanh_c = xp.empty((T, N, H), dtype=dt)
    s, _ = _gate_affine(xp, H, dt)
    # (1) scaled by s, input half for every step at once: (T*N, D) @ (D, 4H)
    gates = (x.reshape(T * N, D) @ (W_ih * s[:, None]).T).reshape(T, N, 4 * H)
    if b_ih is not None:
        gates += (b_ih + b_hh) * s
    W_hh_sT = xp.ascontiguousarray((W_hh * s[:, None]).T)    # (H, 4H)
    rec = xp.empty((N, 4 * H), dtype=dt)
    steps = _steps(xp, H, N, dt)
    if isinstance(steps, _Fused):                   # (1)-(4), padded rows in the kernel
        steps.forward(gates, rec, W_hh_sT, h, c, tanh_c, pad)
    else:
        for t in range(T):
            xp.matmul(h[t], W_hh_sT, out=rec)       # (1) recurrent half
            steps.forward_step(gates[t], rec, c[t], c[t + 1], tanh_c[t], h[t + 1])  # (2)-(4)
            if pad is not None:                     # padded steps keep (h, c)_{t-1}
                hold(xp, h, t, pad)
                hold(xp, c, t, pad)
    out = masked_output(xp, h[1:], pad)             # (5)
    cache = LSTMAccelCache(x, h, c, gates, tanh_c, W_ih, W_hh, b_ih is not None, pad)
    return out, h[T], c[T], cache


def lstm_backward(dout, dh_n, dc_n, cache):
    """``functional.lstm_backward`` for a cache of ``lstm_forward`` above."""
    x, h, c, gates, tanh_c, W_ih, W_hh, has_bias, pad = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    xp, dout, (dh, dc) = output_grads(x, None if pad is None else ~pad, H, dout,
                                      {"dh_n": dh_n, "dc_n": dc_n}, copy=True)
    if fused(xp):
        dz, dh, dc = _Fused.backward(gates, c, tanh_c, W_hh, dout, dh, dc, pad)
        return _weight_grads(x, h, W_ih, W_hh, has_bias, pad, dz, dh, dc)
    if pad is not None:
        dh_t, dc_t = xp.empty_like(dh), xp.empty_like(dc)
    dz = xp.empty((T, N, 4 * H), dtype=dt)
    step = _steps(xp, H, N, dt).backward_step
    for t in range(T - 1, -1, -1):
        if dout is not None:                        # (6)
            dh += dout[t]
        if pad is not None:                         # what a padded step passes straight back
            dh_t[...] = dh
            dc_t[...] = dc
        dzt = dz[t]
        step(gates[t], c[t], tanh_c[t], dh, dc, dzt)                  # (7)-(11)
        if pad is not None:
            xp.copyto(dzt, 0, where=pad[t])
        if t % FLUSH_EVERY == 0:
            flush_subnormals(xp, dzt)
            flush_subnormals(xp, dc)
        xp.matmul(dzt, W_hh, out=dh)                # (12)
        if pad is not None:
            xp.copyto(dh, dh_t, where=pad[t])
            xp.copyto(dc, dc_t, where=pad[t])
    return _weight_grads(x, h, W_ih, W_hh, has_bias, pad, dz, dh, dc)


def _weight_grads(x, h, W_ih, W_hh, has_bias, pad, dz, dh, dc):
    """(13)-(14) as single products over all steps, after the loop."""
    xp = get_array_module(x)
    T, N, D = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    dz2 = dz.reshape(T * N, 4 * H)                  # (T*N, 4H)
    dx = (dz2 @ W_ih).reshape(T, N, D)              # (13)
    grads = {"W_ih": dz2.T @ valid_rows(xp, x, pad).reshape(T * N, D),   # (14)
             "W_hh": dz2.T @ h[:-1].reshape(T * N, H)}
    if has_bias:
        grads["b_ih"] = xp.ones(T * N, dtype=dt) @ dz2     # sums over steps and sequences as GEMVs
        grads["b_hh"] = grads["b_ih"].copy()
    return dx, dh, dc, grads


def _numba_inference_step(xw, rec, c_prev, c, h):
    """``Prepared.cell``'s elementwise work, (1)-(4), as one loop compiled by numba:
    xw, rec (N, 4H) the two halves of z (unscaled), writing c and h (N, H)."""
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


class Prepared(_Prepared):
    """Forward-only steps (``_common.Prepared``) in the tanh form: b_ih + b_hh summed
    once; a step is one product, then one tanh pass over the (N, 4H) block for all
    four gates, y = s tanh(s z) + b (2), then (3)-(4); with numba (float32), the
    step's elementwise work is one compiled loop instead."""

    def __init__(self, W_ih, W_hh, b_ih=None, b_hh=None):
        self.xp = xp = get_array_module(W_ih)
        self.W_ih, self.W_hh = W_ih, W_hh
        self.H = W_hh.shape[1]
        self.s, self.b = _gate_affine(xp, self.H, W_ih.dtype)
        self.b_in = None if b_ih is None else b_ih + b_hh
        self.kernel = (_numba.jit(_numba_inference_step) if _numba.use(xp, W_ih.dtype)
                       else None)

    def cell(self, xw, states):
        xp, H = self.xp, self.H
        h_prev, c_prev = states
        if self.kernel is not None:
            c, h = xp.empty_like(c_prev), xp.empty_like(c_prev)
            self.kernel(xw, xp.dot(h_prev, self.W_hh.T), c_prev, c, h)
            return h, c
        z = xw + xp.dot(h_prev, self.W_hh.T)             # (1)
        z *= self.s                                     # (2): s tanh(s z) + b, all gates
        xp.tanh(z, out=z)
        z *= self.s
        z += self.b
        i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        c = f * c_prev                                  # (3)
        c += i * g
        return o * xp.tanh(c), c                        # (4)
