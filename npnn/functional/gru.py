"""GRU: forward and backpropagation through time, gate order r, z, n (PyTorch's form).

Shapes: T time steps, N sequences, D input features, H hidden units, G = 3.
Parameters as PyTorch's ``nn.GRU``: W_ih (3H, D), W_hh (3H, H), b_ih, b_hh (3H,),
the three gate blocks stacked in the order of ``GATES``. Blocks of a (., 3H)
array are written with a suffix: gi_r = gi[:, :H], gi_z = gi[:, H:2H], gi_n = gi[:, 2H:].

Forward, for t = 1 .. T, starting from h_0:

    (1) gi_t = x_t W_ih^T + b_ih                               (N, 3H)
    (2) gh_t = h_{t-1} W_hh^T + b_hh                           (N, 3H)
    (3) r_t = sigmoid(gi_r + gh_r),   z_t = sigmoid(gi_z + gh_z)
    (4) n_t = tanh(gi_n + r_t * gh_n)        (b_hn sits inside r * (...), as in PyTorch)
    (5) h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    (6) out_t = h_t

Backward (docs/derivations.md, section "GRU"), t = T .. 1, with dh_t the
gradient reaching h_t (dh_T from the final state):

    (7)  dh_t += dout_t
    (8)  dn_t = dh_t * (1 - z_t),   dz_t = dh_t * (h_{t-1} - n_t),   dh_{t-1} = dh_t * z_t
    (9)  da_n = dn_t * (1 - n_t^2)                (gradient of n's pre-activation)
    (10) dr_t = da_n * gh_n
    (11) da_r = dr_t * r(1 - r),   da_z = dz_t * z(1 - z)
    (12) dgi_t = [da_r, da_z, da_n],   dgh_t = [da_r, da_z, da_n * r_t]
    (13) dh_{t-1} += dgh_t W_hh
    (14) dx_t = dgi_t W_ih
    (15) dW_ih = sum_t dgi_t^T x_t,  dW_hh = sum_t dgh_t^T h_{t-1},
         db_ih = sum dgi_t,  db_hh = sum dgh_t

Speed: the step keeps r, z (one (N, 2H) array) apart from n (N, H), and the
recurrent product (2) runs as two products, gh_rz and gh_n, so that every array
the step's passes write is contiguous (a gate block of an (N, 3H) array is a
strided view, and NumPy's ufuncs run 2-4x slower on those). r and z are computed
in one pass as sigmoid(a) = (1 + tanh(a / 2)) / 2 with the 1/2 folded into their
weight rows once per call; their derivative y (1 - y) = y - y^2 takes two passes
over the same block (11). dgi and dgh of (12) share their r and z
blocks, so the backward keeps one (N, 4H) buffer per step,
dg = [da_n * r, da_r, da_z, da_n]: dgi is its last three blocks (r, z, n) and
dgh its first three, in the order (n, r, z), which (13) and (15) meet by taking
W_hh's blocks in that order. Buffers are allocated once per call; the loops only
write into them.
"""

from typing import Any, NamedTuple, Optional

from ..backend import fused_kernels, get_array_module
from ._recurrent import (FLUSH_EVERY, as_step_mask, check_output_grad, check_sequence_args,
                         check_step_input, flush_subnormals, hold_padded, initial_state,
                         split_padded)

GATES = ("r", "z", "n")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh


class _Plain:
    """The per-step elementwise work with NumPy/CuPy ufuncs into preallocated buffers
    (``_fused`` holds the same two steps as single GPU kernels)."""

    def __init__(self, xp, H, N, dtype):
        self.xp, self.H = xp, H
        self.tmp = xp.empty((N, H), dtype=dtype)
        self.slope = xp.empty((N, 2 * H), dtype=dtype)

    def forward_step(self, rz, gh_rz, n, gh_n, b_hn, h_prev, h):
        xp, H = self.xp, self.H
        rz += gh_rz                                 # (3) r, z = sigmoid(.) in one pass
        xp.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        r, z = rz[:, :H], rz[:, H:]
        gh_n += b_hn                                # (2) the n block's bias
        xp.multiply(r, gh_n, out=self.tmp)          # (4)
        n += self.tmp
        xp.tanh(n, out=n)
        xp.subtract(h_prev, n, out=h)               # (5) h = n + z * (h_{t-1} - n)
        h *= z
        h += n

    def backward_step(self, rz, n, h_prev, gh_n, dh, dg, dh_z):
        xp, H, tmp, slope = self.xp, self.H, self.tmp, self.slope
        r, z = rz[:, :H], rz[:, H:]
        dnr, da_r, da_z, da_n = dg[:, :H], dg[:, H:2 * H], dg[:, 2 * H:3 * H], dg[:, 3 * H:]
        xp.multiply(dh, z, out=dh_z)                # (8) direct path dh * z
        xp.subtract(dh, dh_z, out=da_n)             #     dn = dh (1 - z)
        xp.subtract(h_prev, n, out=da_z)            #     dz = dh (h_{t-1} - n)
        da_z *= dh
        xp.multiply(n, n, out=tmp)                  # (9) da_n = dn (1 - n^2)
        xp.subtract(1, tmp, out=tmp)
        da_n *= tmp
        xp.multiply(da_n, gh_n, out=da_r)           # (10) dr
        xp.multiply(rz, rz, out=slope)              # (11) sigmoid' = y (1 - y) = y - y^2
        xp.subtract(rz, slope, out=slope)
        dg[:, H:3 * H] *= slope
        xp.multiply(da_n, r, out=dnr)               # (12) the n block of dgh


class GRUCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    rz: Any             # (T, N, 2H) post-activation r, z
    n: Any              # (T, N, H) post-activation n
    gh_n: Any           # (T, N, H) W_hn h_{t-1} + b_hn, needed by (10)
    W_ih: Any           # (3H, D)
    W_hh: Any           # (3H, H)
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) valid-step mask, or None


def gru_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, mask=None):
    """Run a GRU over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0: (N, H) initial state, or None for zeros.
        W_ih: (3H, D), W_hh: (3H, H), b_ih, b_hh: (3H,) or both None.
        mask: optional (T, N) valid-step mask (see ``_recurrent``).

    Returns:
        out (T, N, H), h_n (N, H), cache (GRUCache).
    ``out`` and ``h_n`` are views of the cache: do not modify them in place.
    """
    xp, T, N, D, H = check_sequence_args(3, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    dt = x.dtype
    m = as_step_mask(mask, dt)
    h = xp.empty((T + 1, N, H), dtype=dt)
    h[0] = initial_state(xp, h0, N, H, dt)
    gh_n = xp.empty((T, N, H), dtype=dt)
    x2 = x.reshape(T * N, D)
    # (1) for every step at once, r and z apart from n, the r, z rows halved
    # (sigmoid via tanh); b_hr and b_hz are folded in too
    rz = (x2 @ (W_ih[:2 * H] * 0.5).T).reshape(T, N, 2 * H)
    n = (x2 @ W_ih[2 * H:].T).reshape(T, N, H)
    if b_ih is not None:
        rz += (b_ih[:2 * H] + b_hh[:2 * H]) * 0.5
        n += b_ih[2 * H:]
    W_hrz_T = xp.ascontiguousarray((W_hh[:2 * H] * 0.5).T)      # (H, 2H)
    W_hn_T = xp.ascontiguousarray(W_hh[2 * H:].T)               # (H, H)
    gh_rz = xp.empty((N, 2 * H), dtype=dt)
    b_hn = b_hh[2 * H:] if b_ih is not None else xp.zeros(H, dtype=dt)
    kernels = fused_kernels(xp)
    step = kernels.gru_forward_step if kernels else _Plain(xp, H, N, dt).forward_step
    for t in range(T):
        xp.matmul(h[t], W_hrz_T, out=gh_rz)         # (2), r and z rows
        xp.matmul(h[t], W_hn_T, out=gh_n[t])        # (2), n rows (b_hn added by the step)
        step(rz[t], gh_rz, n[t], gh_n[t], b_hn, h[t], h[t + 1])      # (3)-(5)
        if m is not None:                           # padded steps keep h_{t-1}
            hold_padded(h, t, m)
    out = h[1:] if m is None else h[1:] * m         # (6)
    cache = GRUCache(x, h, rz, n, gh_n, W_ih, W_hh, b_ih is not None, m)
    return out, h[T], cache


def gru_backward(dout, dh_n, cache):
    """Backpropagation through time for ``gru_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n: (N, H) gradient of the final state, or None.
        cache: from ``gru_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), grads: dict with 'W_ih', 'W_hh' (and
        'b_ih', 'b_hh' when the forward had biases).
    """
    x, h, rz, n, gh_n, W_ih, W_hh, has_bias, m = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    xp = get_array_module(x)
    dout = check_output_grad("dout", dout, (T, N, H), dt, xp)
    dh_n = check_output_grad("dh_n", dh_n, (N, H), dt, xp)
    dh = xp.zeros((N, H), dtype=dt) if dh_n is None else dh_n.copy()
    if m is not None:                               # padded steps output 0: their dout is dropped
        dout = None if dout is None else dout * m
        carry = xp.empty_like(dh)
    dg = xp.empty((T, N, 4 * H), dtype=dt)         # [da_n r, da_r, da_z, da_n] per step
    dh_z = xp.empty((N, H), dtype=dt)
    W_hh_nrz = xp.concatenate((W_hh[2 * H:], W_hh[:2 * H]))     # W_hh's blocks as n, r, z
    kernels = fused_kernels(xp)
    step = kernels.gru_backward_step if kernels else _Plain(xp, H, N, dt).backward_step
    for t in range(T - 1, -1, -1):
        if dout is not None:                        # (7)
            dh += dout[t]
        if m is not None:                           # padded steps pass dh straight back
            split_padded(dh, t, m, out=carry)
        dgt = dg[t]
        step(rz[t], n[t], h[t], gh_n[t], dh, dgt, dh_z)              # (8)-(12)
        if t % FLUSH_EVERY == 0:
            flush_subnormals(xp, dgt)
            flush_subnormals(xp, dh_z)
        xp.matmul(dgt[:, :3 * H], W_hh_nrz, out=dh)  # (13) dh_{t-1} = dh z + dgh W_hh
        dh += dh_z
        if m is not None:
            dh += carry
    dgi2 = dg[:, :, H:].reshape(T * N, 3 * H)       # (T*N, 3H), blocks r, z, n
    dgh2 = dg[:, :, :3 * H].reshape(T * N, 3 * H)   # (T*N, 3H), blocks n, r, z
    dx = (dgi2 @ W_ih).reshape(T, N, D)             # (14)
    dW_hh_nrz = dgh2.T @ h[:-1].reshape(T * N, H)   # (15)
    grads = {"W_ih": dgi2.T @ x.reshape(T * N, D),
             "W_hh": xp.concatenate((dW_hh_nrz[H:], dW_hh_nrz[:H]))}
    if has_bias:
        ones = xp.ones(T * N, dtype=dt)             # sums over steps and sequences as GEMVs
        grads["b_ih"] = ones @ dgi2
        db_hh_nrz = ones @ dgh2
        grads["b_hh"] = xp.concatenate((db_hh_nrz[H:], db_hh_nrz[:H]))
    return dx, dh, grads


def gru_step_forward(x, h, W_ih, W_hh, b_ih=None, b_hh=None):
    """One GRU step: x (N, D), h (N, H) or None -> h_next (N, H), cache."""
    _, h_next, cache = gru_forward(check_step_input(x), h, W_ih, W_hh, b_ih, b_hh)
    return h_next, cache


def gru_step_backward(dh_next, cache):
    """Backward of one step -> dx (N, D), dh (N, H), grads."""
    dx, dh, grads = gru_backward(None, dh_next, cache)
    return dx[0], dh, grads
