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
* The gradients of the two halves, (12), are kept as two contiguous (N, 3H)
  blocks a step, dgi in the order (r, z, n) and dgh in the order (n, r, z),

      dgh = [da_n * r | da_r | da_z],   dgi = [da_r | da_z | da_n]

  (contiguous operands for the products: CuPy copies a strided view before
  each one). (13) and (15) meet dgh's order by taking W_hh's blocks as
  (n, r, z), and dW_hh, db_hh are put back in PyTorch's order (r, z, n) at
  the end.
* Buffers are allocated once per call and the step writes into them; some
  buffers change meaning within a step (each step's comments say what they
  hold), which the reference never does.
* The backward flushes gradients that fall towards the subnormal range.
* On CuPy each step's elementwise work is one fused kernel; with numba
  (float32) one compiled loop; elsewhere ufunc passes. The three kernel sets
  (``_common.Kernels``) take the same arguments; the loops are ``_loop``'s:

    forward(rz, gh_rz, n, gh_n, b_hn, h_prev, h, valid, bias)   (3)-(5): rz (N, 2H)
        holds the scaled input half of r, z and becomes r, z; n (N, H) holds gi_n
        and becomes n; gh_n holds h W_hn^T and gains b_hn; bias (3H,) the input
        half's biases (r, z scaled, then n's b_in), or None where they are in rz, n
    backward(rz, n, h_prev, gh_n, dh, dgh, dgi, dout, valid, carry)   (8)-(12):
        dh = dh_t (dh_t + dout_t where dout is given); fills dgh, dgi (N, 3H) and
        ``carry``, the direct path dh z of (13)
    prepared(xw, gh, h_prev) -> h       (3)-(5) for a forward-only step, xw = gi
        and gh (N, 3H) with their biases
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
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) recurrent-dropout mask, or None
    zoneout: Optional[Tuple[Any, ...]] = None   # zoneout of h, or None
    #: feature-major (``_layout``): h (T + 1, H, N), rz (T, 2H, N), n and gh_n
    #: (T, H, N), the recurrent-dropout mask (H, N) and zoneout's masks (T, H, N)
    feature: bool = False


Cache = GRUAccelCache


# -- NumPy/CuPy ufuncs: a few passes into preallocated buffers ---------------------------

def _ufuncs(xp: ArrayModule, N: int, H: int, dtype: DTypeLike) -> Kernels:
    r_gh_n, dn, h_minus_n, n_slope = (xp.empty((N, H), dtype=dtype) for _ in range(4))
    drz, rz_slope = xp.empty((N, 2 * H), dtype=dtype), xp.empty((N, 2 * H), dtype=dtype)

    def forward(rz: Array, gh_rz: Array, n: Array, gh_n: Array, b_hn: Array,
                h_prev: Array, h: Array, valid: Optional[Array],
                bias: Optional[Array] = None) -> None:
        if bias is not None:                        # (1)'s biases
            rz += bias[:2 * H]
            n += bias[2 * H:]
        rz += gh_rz                                 # (3) r, z = sigmoid(.) in one pass
        xp.tanh(rz, out=rz)
        rz *= SIGMOID_SCALE
        rz += SIGMOID_SHIFT
        r, z = rz[:, :H], rz[:, H:]
        gh_n += b_hn                                # (2) the n block's bias
        xp.multiply(r, gh_n, out=r_gh_n)            # (4)
        n += r_gh_n
        xp.tanh(n, out=n)
        xp.subtract(h_prev, n, out=h)               # (5) h = n + z (h_{t-1} - n)
        h *= z
        h += n

    def backward(rz: Array, n: Array, h_prev: Array, gh_n: Array, dh: Array, dgh: Array,
                 dgi: Array, dout: Optional[Array], valid: Optional[Array],
                 carry: Array) -> None:
        r, z = rz[:, :H], rz[:, H:]
        dr, dz = drz[:, :H], drz[:, H:]
        da_rz, da_n = dgi[:, :2 * H], dgi[:, 2 * H:]
        xp.multiply(dh, z, out=carry)               # (13) the direct path dh z
        xp.subtract(dh, carry, out=dn)              # (8) dn = dh (1 - z)
        xp.subtract(h_prev, n, out=h_minus_n)       #     dz = dh (h_{t-1} - n)
        xp.multiply(dh, h_minus_n, out=dz)
        xp.multiply(n, n, out=n_slope)              # (9) da_n = dn (1 - n^2)
        xp.subtract(1, n_slope, out=n_slope)
        xp.multiply(dn, n_slope, out=da_n)
        xp.multiply(da_n, gh_n, out=dr)             # (10) dr
        xp.multiply(rz, rz, out=rz_slope)           # (11) sigmoid' = y - y^2, r and z at once
        xp.subtract(rz, rz_slope, out=rz_slope)
        xp.multiply(drz, rz_slope, out=da_rz)
        xp.multiply(da_n, r, out=dgh[:, :H])        # (12) dgh = [da_n r | da_r | da_z]
        dgh[:, H:] = da_rz

    return Kernels(forward, backward, _ufunc_prepared, bias=True)


def _ufunc_prepared(xw: Array, gh: Array, h_prev: Array) -> Array:
    xp = get_array_module(xw)
    H = h_prev.shape[1]
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
    return h


# -- numba (NumPy): one compiled loop over (n, j) a step -------------------------------

def _numba_forward(rz: Array, gh_rz: Array, n: Array, gh_n: Array, b_hn: Array,
                   h_prev: Array, h: Array, valid: Optional[Array], bias: Array) -> None:
    N, H = h.shape
    s, b = _const(h, SIGMOID_SCALE), _const(h, SIGMOID_SHIFT)
    br, bz, bn = bias[:H], bias[H:2 * H], bias[2 * H:]
    for row in range(N):
        zr, zz, gr, gz = rz[row, :H], rz[row, H:], gh_rz[row, :H], gh_rz[row, H:]
        nn, ghn, hp, hn = n[row], gh_n[row], h_prev[row], h[row]
        for j in range(H):
            r = _tanh(zr[j] + gr[j] + br[j]) * s + b                            # (1), (3)
            z = _tanh(zz[j] + gz[j] + bz[j]) * s + b
            zr[j], zz[j] = r, z
            g = ghn[j] + b_hn[j]                                                # (2)
            ghn[j] = g
            gi = nn[j] + bn[j]
            nn[j] = gi
            nj = _tanh(gi + r * g)                                              # (4)
            nn[j] = nj
            hn[j] = nj + z * (hp[j] - nj)                                       # (5)


def _numba_backward(rz: Array, n: Array, h_prev: Array, gh_n: Array, dh: Array, dgh: Array,
                    dgi: Array, dout: Optional[Array], valid: Optional[Array],
                    carry: Array) -> None:
    N, H = dh.shape
    one, zero, below = _const(dh, 1.0), _const(dh, 0.0), _flush_below(dh)
    for row in range(N):
        yr, yz = rz[row, :H], rz[row, H:]
        hn_r, hr, hz = dgh[row, :H], dgh[row, H:2 * H], dgh[row, 2 * H:]
        ir, iz, i_n = dgi[row, :H], dgi[row, H:2 * H], dgi[row, 2 * H:]
        nn, hp, ghn, dhn, dhz = n[row], h_prev[row], gh_n[row], dh[row], carry[row]
        for j in range(H):
            r, z, nj, d = yr[j], yz[j], nn[j], dhn[j]
            if dout is not None:
                d += dout[row, j]                                               # (7)
            an = d * (one - z) * (one - nj * nj)                                # (8), (9)
            ar = an * ghn[j] * r * (one - r)                                    # (10), (11)
            az = d * (hp[j] - nj) * z * (one - z)
            anr, dz_ = an * r, d * z
            # flushed (``_common.flush_subnormals``): NaN fails the test and stays
            an = zero if abs(an) < below else an
            ar = zero if abs(ar) < below else ar
            az = zero if abs(az) < below else az
            hn_r[j], hr[j], hz[j] = zero if abs(anr) < below else anr, ar, az   # (12)
            ir[j], iz[j], i_n[j] = ar, az, an
            dhz[j] = zero if abs(dz_) < below else dz_                          # (13)


def _numba_prepared_loop(xw: Array, gh: Array, h_prev: Array, h: Array) -> None:
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


def _numba_prepared(xw: Array, gh: Array, h_prev: Array) -> Array:
    h = np.empty_like(h_prev)
    _numba.jit(_numba_prepared_loop)(xw, gh, h_prev, h)
    return h


def _numba_kernels() -> Kernels:
    return Kernels(_numba.jit(_numba_forward), _numba.jit(_numba_backward), _numba_prepared,
                   bias=True, own=True)


# -- fused CUDA (CuPy): one kernel a step each way ---------------------------------------
# Padded steps, the output gradients and the direct path dh z included: with the
# products, three launches a step forward and two backward, masked or not.

_S, _B = f"(T){SIGMOID_SCALE!r}", f"(T){SIGMOID_SHIFT!r}"


@functools.lru_cache(maxsize=None)
def _fused_forward_source(masked: bool) -> Tuple[str, str, str, str]:
    """(in_params, out_params, body, name) of (2)-(5); padded rows keep h_{t-1}."""
    return ("raw T gh_rz, raw T b_hn, T h_prev, " + ("bool valid, " if masked else "") + "int32 H",
        "raw T rz, T n, T gh_n, T h", f"""
        const ptrdiff_t row = i / H, j = i % H, k = row * 2 * H + j;
        const T r = tanh(rz[k] + gh_rz[k]) * {_S} + {_B};                    // (3)
        const T z = tanh(rz[k + H] + gh_rz[k + H]) * {_S} + {_B};
        rz[k] = r; rz[k + H] = z;
        gh_n = gh_n + b_hn[j];
        const T nn = tanh(n + r * gh_n);                                     // (4)
        n = nn;
        h = {"!valid ? h_prev : " if masked else ""}nn + z * (h_prev - nn);  // (5)
        """, "npnn_gru_forward" + ("_masked" if masked else ""))


def _fused_forward(rz: Array, gh_rz: Array, n: Array, gh_n: Array, b_hn: Array,
                   h_prev: Array, h: Array, valid: Optional[Array],
                   bias: Optional[Array] = None) -> None:
    assert bias is None                 # (the set adds no bias: it is in rz, n)
    masked = valid is not None
    kernel = elementwise_kernel(*_fused_forward_source(masked))
    kernel(gh_rz, b_hn, h_prev, *((valid,) if masked else ()),
           np.int32(h.shape[1]), rz, n, gh_n, h)


@functools.lru_cache(maxsize=None)
def _fused_backward_source(has_dout: bool, masked: bool) -> Tuple[str, str, str, str]:
    """(in_params, ...) of (7)-(13). ``dh`` holds dgh_{t+1} W_hh, ``carry`` the direct
    path dh_{t+1} z_{t+1}
    (what a padded step passes back, at its rows); the kernel adds them and dout_t."""
    ins = ("raw T rz, T n, T h_prev, T gh_n, T dh, " + ("T dout, " if has_dout else "") +
           ("bool valid, " if masked else "") + "int32 H")
    return (ins, "raw T dgh, raw T dgi, T carry", f"""
        const ptrdiff_t row = i / H, j = i % H, k = row * 2 * H + j, k3 = row * 3 * H + j;
        const T g = dh + carry{" + dout" if has_dout else ""};                // (7), (13)
        {"if (!valid) { dgh[k3] = dgh[k3 + H] = dgh[k3 + 2 * H] = (T)0;"
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


def _fused_backward(rz: Array, n: Array, h_prev: Array, gh_n: Array, dh: Array, dgh: Array,
                    dgi: Array, dout: Optional[Array], valid: Optional[Array],
                    carry: Array) -> None:
    masked, has_dout = valid is not None, dout is not None
    kernel = elementwise_kernel(*_fused_backward_source(has_dout, masked))
    kernel(rz, n, h_prev, gh_n, dh, *((dout,) if has_dout else ()),
           *((valid,) if masked else ()), np.int32(dh.shape[1]), dgh, dgi, carry)


_FUSED = Kernels(_fused_forward, _fused_backward, _ufunc_prepared, folds=True)


def _kernels(xp: ArrayModule, dtype: DTypeLike, N: int = 0, H: int = 0,
             folding: bool = True) -> Kernels:
    """The kernel set for these arrays; N, H size the ufunc set's buffers."""
    return kernel_set(xp, dtype, _FUSED, _numba_kernels, lambda: _ufuncs(xp, N, H, dtype),
                      folding)


# -- the sequence ops ---------------------------------------------------------------------

#: gate blocks of W_hh's rows, and states
GATES, STATES = 3, 1


def forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array, b_ih: Optional[Array] = None,
            b_hh: Optional[Array] = None, mask: Optional[Array] = None,
            recurrent_mask: Optional[Array] = None,
            zoneout: Any = None) -> Tuple[Array, Array, GRUAccelCache]:
    """``functional.gru_forward``'s arguments and results (checked as it checks them),
    with a ``GRUAccelCache``."""
    xp, T, N, D, H = check_sequence_args(3, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H,), x.dtype)
    rm = recurrent_mask
    dt = x.dtype
    m = step_mask(mask)
    feature = _layout.for_cell(xp, forward, backward, GATES, STATES, N, H, dt) == _layout.FEATURE
    h, = _loop.new_states(xp, T, N, H, dt, (h0,), feature)
    b_hn = b_hh[2 * H:] if b_ih is not None else xp.zeros(H, dtype=dt)  # type: ignore[index]
    # (1) for every step at once, r and z apart from n, the r, z rows scaled
    # (sigmoid via tanh); b_hr and b_hz are folded in too
    if feature:                  # (T, 2H, N) and (T, H, N); rm, zone's masks transposed
        rm, zone, mk = _layout.to_feature(xp, rm), _layout.zone_to_feature(xp, zone), (
            None if m is None else m.transpose(0, 2, 1))
        rz = _layout.input_half(xp, x, W_ih[:2 * H] * SIGMOID_SCALE)
        n = _layout.input_half(xp, x, W_ih[2 * H:])
        W_hrz = W_hh[:2 * H] * SIGMOID_SCALE             # (2H, H): W h_{t-1}^T
        W_hn = W_hh[2 * H:]                              # (H, H)
        b_hn = xp.repeat(b_hn, N)                        # the kernels' row: H*N values
    else:                        # (T, N, 2H) and (T, N, H)
        mk = m
        rz = _pool.input_half(xp, x, W_ih[:2 * H] * SIGMOID_SCALE)
        n = _pool.input_half(xp, x, W_ih[2 * H:])
        W_hrz = _pool.transposed(xp, W_hh[:2 * H], SIGMOID_SCALE)      # (H, 2H): h W^T
        W_hn = _pool.transposed(xp, W_hh[2 * H:])                      # (H, H)
    # (1)'s biases: b_ir + b_hr, b_iz + b_hz scaled, then b_in (b_ih and b_hh: both given
    # or both None, as check_sequence_args checked)
    bias = None if b_ih is None else xp.concatenate(
        ((b_ih[:2 * H] + b_hh[:2 * H]) * SIGMOID_SCALE, b_ih[2 * H:]))     # type: ignore[index]
    gh_rz = _pool.empty(xp, rz.shape[1:], dt)
    gh_n = _pool.empty(xp, n.shape, dt)             # (2), n rows (b_hn added by the kernel)
    rows, R, C = _layout.kernel_rows(feature, N, H)     # feature-major: one row of H*N
    rzk, gh_rzk, nk, gh_nk, hk = rows(rz), rows(gh_rz), rows(n), rows(gh_n), rows(h)
    kernels = _kernels(xp, dt, R, C, zone is None)
    b_k = _layout.kernel_bias(xp, kernels, bias, (rz, n), feature, N)
    fwd = kernels.forward
    _loop.forward(xp, kernels, lambda t, m_t: fwd(rzk[t], gh_rzk, nk[t], gh_nk[t], b_hn, hk[t],
                                                  hk[t + 1], m_t, b_k),
                  (h,), ((W_hrz, gh_rz), (W_hn, gh_n)), mk, rm, zone,
                  feature=feature)                                           # (2)-(5), (16)-(17)
    cache = GRUAccelCache(x, h, rz, n, gh_n, W_ih, W_hh, b_ih is not None, m, rm, zone, feature)
    if feature:
        return masked_output(xp, _layout.to_batch(xp, h[1:]), m), _layout.to_batch(xp, h[T]), \
            cache                                                           # (6)
    return masked_output(xp, h[1:], m), h[T], cache                         # (6)


def backward(dout: Optional[Array], dh_n: Optional[Array],
             cache: GRUAccelCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """``functional.gru_backward`` for a cache of ``forward`` above."""
    x, h, rz, n, gh_n, W_ih, W_hh, has_bias, m, rm, zone, feature = cache
    T, N, _ = x.shape
    H = W_hh.shape[1]
    xp, dout, (dh,) = output_grads(x, m, H, dout, {"dh_n": dh_n}, copy=True)
    W_hh_nrz = xp.concatenate((W_hh[2 * H:], W_hh[:2 * H]))    # W_hh's blocks as (n, r, z)
    if feature:
        dout, dh = _layout.to_feature(xp, dout), _layout.to_feature(xp, dh)
        mk, shape = None if m is None else m.transpose(0, 2, 1), (T, 3 * H, N)
        W_back = _pool.transposed(xp, W_hh_nrz)     # W^T dz_t^T, W^T contiguous (_layout)
    else:
        mk, W_back, shape = m, W_hh_nrz, (T, N, 3 * H)                   # dz_t W
    dgh = _pool.empty(xp, shape, x.dtype)          # blocks n, r, z
    dgi = _pool.empty(xp, shape, x.dtype)          # blocks r, z, n
    direct = xp.zeros_like(dh)
    rows, R, C = _layout.kernel_rows(feature, N, H)
    rzk, nk, hk, gh_nk, dhk, dghk, dgik = (rows(a) for a in (rz, n, h, gh_n, dh, dgh, dgi))
    kernels = _kernels(xp, x.dtype, R, C, zone is None)
    bwd = kernels.backward
    # (the direct path: ``carry`` is ``direct``, seen as the kernels see it)
    directk = rows(direct)
    dh0 = _loop.backward(xp, kernels,
                         lambda t, d, m_t, carry: bwd(rzk[t], nk[t], hk[t], gh_nk[t], dhk,
                                                      dghk[t], dgik[t],
                                                      _layout.rows_of(rows, d), m_t,
                                                      directk if carry is direct else carry),
                         (dgh, dgi), W_back, dh, (), dout, mk,
                         direct=direct, rm=rm, zone=zone, feature=feature)  # (7)-(13), (18)-(19)
    dx, grads = _loop.weight_grads(x, h, W_ih, dgi, dgh, has_bias, m, rm,
                                   feature)                                 # (14)-(15), (19)
    for k in ("W_hh", "b_hh"):                      # back to PyTorch's order r, z, n
        if k in grads:
            grads[k] = xp.concatenate((grads[k][H:], grads[k][:H]))
    return dx, _layout.to_batch(xp, dh0) if feature else dh0, grads


class Prepared(_Prepared):
    """Forward-only steps (``_common.Prepared``): r and z take one tanh pass over
    their (N, 2H) block (the tanh form of the sigmoid), and b_hn stays inside
    r * (...), as in (4); with numba (float32), the step's elementwise work is one
    compiled loop instead. Feature-major, the kernel takes the (3H, N) block as one
    row (``_layout.rows``)."""

    G, S = GATES, STATES

    def __init__(self, W_ih: Array, W_hh: Array, b_ih: Optional[Array] = None,
                 b_hh: Optional[Array] = None) -> None:
        self.xp = get_array_module(W_ih)
        self.W_ih, self.W_hh, self.b_in, self.b_hh = W_ih, W_hh, b_ih, b_hh
        self.kernel = _kernels(self.xp, W_ih.dtype).prepared

    def cell(self, xw: Array, states: Tuple[Array, ...],
             feature: bool = False) -> Tuple[Array, ...]:
        gh = self.product(states[0], feature)           # (2)
        if self.b_hh is not None:
            gh += self.b_hh[:, None] if feature else self.b_hh
        if not feature:
            return self.kernel(xw, gh, states[0]),
        rows = _layout.rows
        return self.kernel(rows(xw), rows(gh), rows(states[0])).reshape(states[0].shape),
