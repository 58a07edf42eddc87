"""Accelerated GRU: ``functional/gru.py``'s numbers, computed faster.

Equation numbers refer to ``functional/gru.py``. What differs from the reference:

* Contiguous layout. A gate block of an (N, 3H) array is a strided view, and
  NumPy's ufuncs run 2-4x slower on those, so the step keeps r, z (one (N, 2H)
  array) apart from n (N, H), and the recurrent product (2) runs as two
  products, gh_rz and gh_n, each writing a contiguous buffer.
* The tanh form for r and z (``_common.SIGMOID_SCALE``): sigmoid(a) =
  s tanh(s a) + b with the factor s folded into their weight rows once per
  call; b_hr and b_hz are folded into the input half. Their derivative
  y (1 - y) = y - y^2 takes two passes over the (N, 2H) block.
* One gradient buffer per step. dgi and dgh of (12) share their r and z
  blocks, so the backward keeps one (N, 4H) buffer per step,

      dg = [da_n * r | da_r | da_z | da_n]

  whose last three blocks are dgi (in the order r, z, n) and whose first
  three are dgh in the order (n, r, z). (13) and (15) meet that order by
  taking W_hh's blocks as (n, r, z), and dW_hh, db_hh are put back in
  PyTorch's order (r, z, n) at the end.
* Buffers are allocated once per call and the step writes into them; some
  buffers change meaning within a step (each step's comments say what they
  hold), which the reference never does.
* The backward flushes gradients that fall towards the subnormal range;
  on CuPy each step's elementwise work is one fused kernel (``_Fused``).
* Padded steps are handled by selection, as in the reference.
"""

from typing import Any, NamedTuple, Optional

import numpy as np

from ...backend import elementwise_kernel, get_array_module
from .._recurrent import output_grads
from . import _numba
from ._numba import const as _const, tanh as _tanh
from ._common import (FLUSH_EVERY, SIGMOID_SCALE, SIGMOID_SHIFT, Prepared as _Prepared,
                      flush_subnormals, fused, hold, masked_output, padding, valid_rows)


class GRUAccelCache(NamedTuple):
    """The accelerated forward's cache: the reference's values, r and z in one block."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    rz: Any             # (T, N, 2H) r, z
    n: Any              # (T, N, H) candidate state
    gh_n: Any           # (T, N, H) h_{t-1} W_hn^T + b_hn
    W_ih: Any           # (3H, D)
    W_hh: Any           # (3H, H)
    has_bias: bool
    pad: Optional[Any]  # (T, N, 1) True at padded steps, or None


class _Ufuncs:
    """The per-step elementwise work as ufunc passes into preallocated buffers."""

    def __init__(self, xp, H, N, dtype):
        self.xp, self.H = xp, H
        self.r_gh_n = xp.empty((N, H), dtype=dtype)
        self.dn = xp.empty((N, H), dtype=dtype)
        self.h_minus_n = xp.empty((N, H), dtype=dtype)
        self.n_slope = xp.empty((N, H), dtype=dtype)
        self.drz = xp.empty((N, 2 * H), dtype=dtype)
        self.rz_slope = xp.empty((N, 2 * H), dtype=dtype)

    def forward_step(self, rz, gh_rz, n, gh_n, b_hn, h_prev, h):
        """rz (N, 2H) holds the scaled input half of r, z and becomes r, z; n (N, H)
        holds gi_n and becomes n; gh_n holds h W_hn^T and gains b_hn."""
        xp, H = self.xp, self.H
        rz += gh_rz                                 # (3) r, z = sigmoid(.) in one pass
        xp.tanh(rz, out=rz)
        rz *= SIGMOID_SCALE
        rz += SIGMOID_SHIFT
        r, z = rz[:, :H], rz[:, H:]
        gh_n += b_hn                                # (2) the n block's bias
        xp.multiply(r, gh_n, out=self.r_gh_n)       # (4)
        n += self.r_gh_n
        xp.tanh(n, out=n)
        xp.subtract(h_prev, n, out=h)               # (5) h = n + z (h_{t-1} - n)
        h *= z
        h += n

    def backward_step(self, rz, n, h_prev, gh_n, dh, dg, dh_z):
        """dh = dh_t; fills dg = [da_n r | da_r | da_z | da_n] (N, 4H) and dh_z = dh z."""
        xp, H = self.xp, self.H
        r = rz[:, :H]
        z = rz[:, H:]
        dgh_n, da_rz, da_n = dg[:, :H], dg[:, H:3 * H], dg[:, 3 * H:]
        dr, dz = self.drz[:, :H], self.drz[:, H:]
        xp.multiply(dh, z, out=dh_z)                # (13) the direct path dh z
        xp.subtract(dh, dh_z, out=self.dn)          # (8) dn = dh (1 - z)
        xp.subtract(h_prev, n, out=self.h_minus_n)  #     dz = dh (h_{t-1} - n)
        xp.multiply(dh, self.h_minus_n, out=dz)
        xp.multiply(n, n, out=self.n_slope)         # (9) da_n = dn (1 - n^2)
        xp.subtract(1, self.n_slope, out=self.n_slope)
        xp.multiply(self.dn, self.n_slope, out=da_n)
        xp.multiply(da_n, gh_n, out=dr)             # (10) dr
        xp.multiply(rz, rz, out=self.rz_slope)      # (11) sigmoid' = y - y^2, r and z at once
        xp.subtract(rz, self.rz_slope, out=self.rz_slope)
        xp.multiply(self.drz, self.rz_slope, out=da_rz)
        xp.multiply(da_n, r, out=dgh_n)             # (12) the n block of dgh


_S, _B = f"(T){SIGMOID_SCALE!r}", f"(T){SIGMOID_SHIFT!r}"


class _Fused:
    """Each step's elementwise work as one CUDA kernel each way (CuPy only), padded steps,
    the output gradients and the direct path dh z included: with the products, three
    launches a step forward and two backward, masked or not. The backward writes the
    gradients of the two halves to two contiguous (N, 3H) blocks a step, dgh (n, r, z)
    for the recurrent product and dgi (r, z, n): no strided view of a shared buffer
    (CuPy copies those before every product). ``pad`` (N, 1) is True at padded rows."""

    def __init__(self, xp, H, N, dtype):
        pass

    @staticmethod
    def forward(rz, n, gh_n, gh_rz, W_hrz_T, W_hn_T, b_hn, h, pad):
        """(2)-(5) for every step; padded rows keep h_{t-1}."""
        xp = get_array_module(h)
        masked = pad is not None
        kernel = elementwise_kernel(
            "raw T gh_rz, raw T b_hn, T h_prev, " + ("bool pad, " if masked else "") + "int32 H",
            "raw T rz, T n, T gh_n, T h", f"""
            const ptrdiff_t row = i / H, j = i % H, k = row * 2 * H + j;
            const T r = tanh(rz[k] + gh_rz[k]) * {_S} + {_B};                    // (3)
            const T z = tanh(rz[k + H] + gh_rz[k + H]) * {_S} + {_B};
            rz[k] = r; rz[k + H] = z;
            gh_n = gh_n + b_hn[j];
            const T nn = tanh(n + r * gh_n);                                     // (4)
            n = nn;
            h = {"pad ? h_prev : " if masked else ""}nn + z * (h_prev - nn);     // (5)
            """, "npnn_gru_forward" + ("_masked" if masked else ""))
        H = np.int32(h.shape[2])
        for t in range(rz.shape[0]):
            xp.matmul(h[t], W_hrz_T, out=gh_rz)     # (2), r and z rows
            xp.matmul(h[t], W_hn_T, out=gh_n[t])    # (2), n rows (b_hn added by the kernel)
            kernel(gh_rz, b_hn, h[t], *((pad[t],) if masked else ()), H,
                   rz[t], n[t], gh_n[t], h[t + 1])

    @staticmethod
    def backward(rz, n, h, gh_n, W_hh_nrz, dout, dh, pad):
        """(7)-(13) for every step: dgi, dgh (T*N, 3H) and dh_0. ``dh`` holds dgh_{t+1}
        W_hh, ``carry`` the direct path dh_{t+1} z_{t+1} (what a padded step passes
        back, at its rows); the kernel adds them and dout_t."""
        xp = get_array_module(dh)
        T, N, H = n.shape
        masked, has_dout = pad is not None, dout is not None
        ins = ("raw T rz, T n, T h_prev, T gh_n, T dh, " + ("T dout, " if has_dout else "") +
               ("bool pad, " if masked else "") + "int32 H")
        kernel = elementwise_kernel(ins, "raw T dgh, raw T dgi, T carry", f"""
            const ptrdiff_t row = i / H, j = i % H, k = row * 2 * H + j, k3 = row * 3 * H + j;
            const T g = dh + carry{" + dout" if has_dout else ""};                // (7), (13)
            {"if (pad) { dgh[k3] = dgh[k3 + H] = dgh[k3 + 2 * H] = (T)0;"
             " dgi[k3] = dgi[k3 + H] = dgi[k3 + 2 * H] = (T)0; carry = g; } else {"
             if masked else "{"}
            const T r = rz[k], z = rz[k + H];
            const T da_n = g * ((T)1 - z) * ((T)1 - n * n);                      // (8), (9)
            const T da_r = da_n * gh_n * r * ((T)1 - r);                         // (10), (11)
            const T da_z = g * (h_prev - n) * z * ((T)1 - z);
            dgh[k3] = da_n * r; dgh[k3 + H] = da_r; dgh[k3 + 2 * H] = da_z;      // (12)
            dgi[k3] = da_r; dgi[k3 + H] = da_z; dgi[k3 + 2 * H] = da_n;
            carry = g * z; }}                                                    // (13)
            """, "npnn_gru_backward" + ("_dout" if has_dout else "") +
            ("_masked" if masked else ""))
        dgh = xp.empty((T, N, 3 * H), dtype=dh.dtype)
        dgi = xp.empty((T, N, 3 * H), dtype=dh.dtype)
        carry = xp.zeros_like(dh)
        H32 = np.int32(H)
        for t in range(T - 1, -1, -1):
            kernel(rz[t], n[t], h[t], gh_n[t], dh, *((dout[t],) if has_dout else ()),
                   *((pad[t],) if masked else ()), H32, dgh[t], dgi[t], carry)
            xp.matmul(dgh[t], W_hh_nrz, out=dh)     # (13) dgh W_hh
        return dgi.reshape(T * N, 3 * H), dgh.reshape(T * N, 3 * H), dh + carry


def _numba_forward_step(rz, gh_rz, n, gh_n, b_hn, h_prev, h):
    """A forward step of ``_Fused.forward`` as a loop compiled by numba (NumPy, ``_numba``)."""
    N, H = h.shape
    s, b = _const(h, SIGMOID_SCALE), _const(h, SIGMOID_SHIFT)
    for row in range(N):
        zr, zz, gr, gz = rz[row, :H], rz[row, H:], gh_rz[row, :H], gh_rz[row, H:]
        nn, ghn, hp, hn = n[row], gh_n[row], h_prev[row], h[row]
        for j in range(H):
            r = _tanh(zr[j] + gr[j]) * s + b                                    # (3)
            z = _tanh(zz[j] + gz[j]) * s + b
            zr[j], zz[j] = r, z
            g = ghn[j] + b_hn[j]                                                # (2)
            ghn[j] = g
            nj = _tanh(nn[j] + r * g)                                           # (4)
            nn[j] = nj
            hn[j] = nj + z * (hp[j] - nj)                                       # (5)


def _numba_backward_step(rz, n, h_prev, gh_n, dh, dg, dh_z):
    """A backward step of ``_Fused.backward`` (unmasked) as a loop compiled by numba."""
    N, H = dh.shape
    one = _const(dh, 1.0)
    for row in range(N):
        yr, yz = rz[row, :H], rz[row, H:]
        dgh_n, da_r, da_z, da_n = (dg[row, :H], dg[row, H:2 * H], dg[row, 2 * H:3 * H],
                                   dg[row, 3 * H:])
        nn, hp, ghn, dhn, dhz = n[row], h_prev[row], gh_n[row], dh[row], dh_z[row]
        for j in range(H):
            r, z, nj, d = yr[j], yz[j], nn[j], dhn[j]
            an = d * (one - z) * (one - nj * nj)                                # (8), (9)
            dgh_n[j] = an * r                                                   # (12)
            da_r[j] = an * ghn[j] * r * (one - r)                               # (10), (11)
            da_z[j] = d * (hp[j] - nj) * z * (one - z)
            da_n[j] = an
            dhz[j] = d * z                                                      # (13)


def _steps(xp, H, N, dtype):
    """The step kernels for these arrays: fused on CuPy, numba's or ufuncs on NumPy."""
    if fused(xp):
        return _Fused(xp, H, N, dtype)
    if _numba.use(xp, dtype):
        return _numba.Steps(_numba_forward_step, _numba_backward_step)
    return _Ufuncs(xp, H, N, dtype)


def gru_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, mask=None):
    """``functional.gru_forward`` (arguments already checked there)."""
    xp = get_array_module(x)
    T, N, D = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    pad = padding(mask)
    h = xp.empty((T + 1, N, H), dtype=dt)
    h[0] = 0 if h0 is None else h0
    gh_n = xp.empty((T, N, H), dtype=dt)
    x2 = x.reshape(T * N, D)
    # (1) for every step at once, r and z apart from n, the r, z rows scaled
    # (sigmoid via tanh); b_hr and b_hz are folded in too
    rz = (x2 @ (W_ih[:2 * H] * SIGMOID_SCALE).T).reshape(T, N, 2 * H)
    n = (x2 @ W_ih[2 * H:].T).reshape(T, N, H)
    if b_ih is not None:
        rz += (b_ih[:2 * H] + b_hh[:2 * H]) * SIGMOID_SCALE
        n += b_ih[2 * H:]
    W_hrz_T = xp.ascontiguousarray((W_hh[:2 * H] * SIGMOID_SCALE).T)    # (H, 2H)
    W_hn_T = xp.ascontiguousarray(W_hh[2 * H:].T)                       # (H, H)
    gh_rz = xp.empty((N, 2 * H), dtype=dt)
    b_hn = b_hh[2 * H:] if b_ih is not None else xp.zeros(H, dtype=dt)
    steps = _steps(xp, H, N, dt)
    if isinstance(steps, _Fused):                   # (2)-(5), padded rows in the kernel
        steps.forward(rz, n, gh_n, gh_rz, W_hrz_T, W_hn_T, b_hn, h, pad)
    else:
        for t in range(T):
            xp.matmul(h[t], W_hrz_T, out=gh_rz)     # (2), r and z rows
            xp.matmul(h[t], W_hn_T, out=gh_n[t])    # (2), n rows (b_hn added by the step)
            steps.forward_step(rz[t], gh_rz, n[t], gh_n[t], b_hn, h[t], h[t + 1])   # (3)-(5)
            if pad is not None:                     # padded steps keep h_{t-1}
                hold(xp, h, t, pad)
    out = masked_output(xp, h[1:], pad)             # (6)
    cache = GRUAccelCache(x, h, rz, n, gh_n, W_ih, W_hh, b_ih is not None, pad)
    return out, h[T], cache


def gru_backward(dout, dh_n, cache):
    """``functional.gru_backward`` for a cache of ``gru_forward`` above."""
    x, h, rz, n, gh_n, W_ih, W_hh, has_bias, pad = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    xp, dout, (dh,) = output_grads(x, None if pad is None else ~pad, H, dout, {"dh_n": dh_n},
                                   copy=True)
    W_hh_nrz = xp.concatenate((W_hh[2 * H:], W_hh[:2 * H]))    # W_hh's blocks as (n, r, z)
    if fused(xp):
        dgi2, dgh2, dh = _Fused.backward(rz, n, h, gh_n, W_hh_nrz, dout, dh, pad)
        return _weight_grads(x, h, W_ih, has_bias, pad, dgi2, dgh2, dh)
    if pad is not None:
        dh_t = xp.empty_like(dh)
    dg = xp.empty((T, N, 4 * H), dtype=dt)         # [da_n r | da_r | da_z | da_n] per step
    dh_z = xp.empty((N, H), dtype=dt)
    step = _steps(xp, H, N, dt).backward_step
    for t in range(T - 1, -1, -1):
        if dout is not None:                        # (7)
            dh += dout[t]
        if pad is not None:                         # what a padded step passes straight back
            dh_t[...] = dh
        dgt = dg[t]
        step(rz[t], n[t], h[t], gh_n[t], dh, dgt, dh_z)               # (8)-(12)
        if pad is not None:
            xp.copyto(dgt, 0, where=pad[t])
        if t % FLUSH_EVERY == 0:
            flush_subnormals(xp, dgt)
            flush_subnormals(xp, dh_z)
        xp.matmul(dgt[:, :3 * H], W_hh_nrz, out=dh)  # (13) dgh W_hh
        dh += dh_z                                  #      + dh z
        if pad is not None:
            xp.copyto(dh, dh_t, where=pad[t])
    dgi2 = dg[:, :, H:].reshape(T * N, 3 * H)       # (T*N, 3H), blocks r, z, n
    dgh2 = dg[:, :, :3 * H].reshape(T * N, 3 * H)   # (T*N, 3H), blocks n, r, z
    return _weight_grads(x, h, W_ih, has_bias, pad, dgi2, dgh2, dh)


def _weight_grads(x, h, W_ih, has_bias, pad, dgi2, dgh2, dh):
    """(14)-(15) as single products over all steps, after the loop; dgi2 (T*N, 3H) in the
    blocks r, z, n, dgh2 in n, r, z."""
    xp = get_array_module(x)
    T, N, D = x.shape
    H = h.shape[2]
    dt = x.dtype
    dx = (dgi2 @ W_ih).reshape(T, N, D)             # (14)
    dW_hh_nrz = dgh2.T @ h[:-1].reshape(T * N, H)   # (15)
    grads = {"W_ih": dgi2.T @ valid_rows(xp, x, pad).reshape(T * N, D),
             "W_hh": xp.concatenate((dW_hh_nrz[H:], dW_hh_nrz[:H]))}
    if has_bias:
        ones = xp.ones(T * N, dtype=dt)             # sums over steps and sequences as GEMVs
        grads["b_ih"] = ones @ dgi2
        db_hh_nrz = ones @ dgh2
        grads["b_hh"] = xp.concatenate((db_hh_nrz[H:], db_hh_nrz[:H]))
    return dx, dh, grads


def _numba_inference_step(xw, gh, h_prev, h):
    """``Prepared.cell``'s elementwise work, (3)-(5), as one loop compiled by numba:
    xw = x W_ih^T + b_ih, gh = h_prev W_hh^T + b_hh (N, 3H), writing h (N, H)."""
    N, H = h.shape
    s, b = _const(h, SIGMOID_SCALE), _const(h, SIGMOID_SHIFT)
    for row in range(N):
        xr, xz, xn = xw[row, :H], xw[row, H:2 * H], xw[row, 2 * H:]
        gr, gz, gn = gh[row, :H], gh[row, H:2 * H], gh[row, 2 * H:]
        hp, hn = h_prev[row], h[row]
        for j in range(H):
            r = _tanh((xr[j] + gr[j]) * s) * s + b                              # (3)
            z = _tanh((xz[j] + gz[j]) * s) * s + b
            nj = _tanh(xn[j] + r * gn[j])                                       # (4)
            hn[j] = nj + z * (hp[j] - nj)                                       # (5)


class Prepared(_Prepared):
    """Forward-only steps (``_common.Prepared``): r and z take one tanh pass over
    their (N, 2H) block (the tanh form of the sigmoid), and b_hn stays inside
    r * (...), as in (4); with numba (float32), the step's elementwise work is one
    compiled loop instead."""

    def __init__(self, W_ih, W_hh, b_ih=None, b_hh=None):
        self.xp = xp = get_array_module(W_ih)
        self.W_ih, self.W_hh, self.b_in, self.b_hh = W_ih, W_hh, b_ih, b_hh
        self.H = W_hh.shape[1]
        self.kernel = (_numba.jit(_numba_inference_step) if _numba.use(xp, W_ih.dtype)
                       else None)

    def cell(self, xw, states):
        xp, H = self.xp, self.H
        h_prev = states[0]
        gh = xp.dot(h_prev, self.W_hh.T)                 # (2)
        if self.b_hh is not None:
            gh += self.b_hh
        if self.kernel is not None:
            h = xp.empty_like(h_prev)
            self.kernel(xw, gh, h_prev, h)
            return h,
        rz = xw[:, :2 * H] + gh[:, :2 * H]              # (3): r and z in one pass
        rz *= SIGMOID_SCALE
        xp.tanh(rz, out=rz)
        rz *= SIGMOID_SCALE
        rz += SIGMOID_SHIFT
        r, z = rz[:, :H], rz[:, H:]
        n = r * gh[:, 2 * H:]                           # (4)
        n += xw[:, 2 * H:]
        xp.tanh(n, out=n)
        h = h_prev - n                                  # (5): (1 - z) n + z h = n + z (h - n)
        h *= z
        h += n
        return h,
