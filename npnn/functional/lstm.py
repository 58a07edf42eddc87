"""LSTM: forward and backpropagation through time, gate order i, f, g, o.

Shapes: T time steps, N sequences, D input features, H hidden units, G = 4.
Parameters as PyTorch's ``nn.LSTM``: W_ih (4H, D), W_hh (4H, H), b_ih, b_hh (4H,),
the four gate blocks stacked in the order of ``GATES``.

Forward, for t = 1 .. T, starting from h_0 and c_0:

    (1) z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh       (N, 4H) = [z_i z_f z_g z_o]
    (2) i_t = sigmoid(z_i),  f_t = sigmoid(z_f),  g_t = tanh(z_g),  o_t = sigmoid(z_o)
    (3) c_t = f_t * c_{t-1} + i_t * g_t
    (4) h_t = o_t * tanh(c_t)
    (5) out_t = h_t

Backward (docs/derivations.md, section "LSTM"), t = T .. 1, with dh_t and dc_t
the gradients reaching h_t and c_t (dh_T, dc_T from the final states):

    (6)  dh_t += dout_t
    (7)  do_t = dh_t * tanh(c_t)
    (8)  dc_t += dh_t * o_t * (1 - tanh(c_t)^2)
    (9)  di_t = dc_t * g_t,  df_t = dc_t * c_{t-1},  dg_t = dc_t * i_t
    (10) dc_{t-1} = dc_t * f_t
    (11) dz_t = [di * i(1-i), df * f(1-f), dg * (1-g^2), do * o(1-o)]
    (12) dh_{t-1} = dz_t W_hh
    (13) dx_t = dz_t W_ih
    (14) dW_ih = sum_t dz_t^T x_t,  dW_hh = sum_t dz_t^T h_{t-1},  db_ih = db_hh = sum dz_t

Speed: (2) runs as one pass over the contiguous (N, 4H) block. With a = 1/2, b = 1/2
on the sigmoid blocks and a = 1, b = 0 on g, every gate is y = a tanh(a z) + b
(because sigmoid(z) = (1 + tanh(z / 2)) / 2); the factor a inside tanh is folded
into the weights once per call. Its derivative is, for every block alike,

    (11') dy/dz = a^2 - (y - b)^2        (= y (1 - y) for a sigmoid, 1 - y^2 for tanh)

so (11) is also one pass. Buffers are allocated once per call; the loops only
write into them.
"""

from typing import Any, NamedTuple, Optional

from ..backend import fused_kernels, get_array_module
from ._recurrent import (FLUSH_EVERY, as_step_mask, check_output_grad, check_sequence_args,
                         check_step_input, flush_subnormals, hold_padded, initial_state,
                         split_padded)

GATES = ("i", "f", "g", "o")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh


def _gate_affine(xp, H, dtype):
    """a, b (4H,) of y = a tanh(a z) + b: a = b = 1/2 for i, f, o; a = 1, b = 0 for g."""
    a = xp.full(4 * H, 0.5, dtype=dtype)
    b = xp.full(4 * H, 0.5, dtype=dtype)
    a[2 * H:3 * H] = 1.0
    b[2 * H:3 * H] = 0.0
    return a, b


class _Plain:
    """The per-step elementwise work with NumPy/CuPy ufuncs into preallocated buffers
    (``_fused`` holds the same two steps as single GPU kernels)."""

    def __init__(self, xp, H, N, dtype):
        self.xp, self.H = xp, H
        self.a, self.b = _gate_affine(xp, H, dtype)
        self.a2 = self.a * self.a
        self.tmp = xp.empty((N, H), dtype=dtype)
        self.slope = xp.empty((N, 4 * H), dtype=dtype)

    def forward_step(self, z, rec, c_prev, c, tanh_c, h):
        xp, H = self.xp, self.H
        z += rec                                    # (1)
        xp.tanh(z, out=z)                           # (2) all four gates: a tanh(a z) + b
        z *= self.a
        z += self.b
        i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        xp.multiply(f, c_prev, out=c)               # (3)
        xp.multiply(i, g, out=self.tmp)
        c += self.tmp
        xp.tanh(c, out=tanh_c)                      # (4)
        xp.multiply(o, tanh_c, out=h)

    def backward_step(self, y, c_prev, tc, dh, dc, dz):
        xp, H, tmp = self.xp, self.H, self.tmp
        i, f, g, o = y[:, :H], y[:, H:2 * H], y[:, 2 * H:3 * H], y[:, 3 * H:]
        xp.multiply(dh, tc, out=dz[:, 3 * H:])      # (7) do
        xp.multiply(tc, tc, out=tmp)                # (8) dc += dh o (1 - tanh(c)^2)
        xp.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp
        xp.multiply(dc, g, out=dz[:, :H])           # (9) di
        xp.multiply(dc, c_prev, out=dz[:, H:2 * H])  #    df
        xp.multiply(dc, i, out=dz[:, 2 * H:3 * H])  #     dg
        dc *= f                                     # (10)
        xp.subtract(y, self.b, out=self.slope)      # (11') dz = dy (a^2 - (y - b)^2)
        self.slope *= self.slope
        xp.subtract(self.a2, self.slope, out=self.slope)
        dz *= self.slope


class LSTMCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    c: Any              # (T + 1, N, H) c[0] = c_0, c[t] = c_t
    gates: Any          # (T, N, 4H) post-activation i, f, g, o
    tanh_c: Any         # (T, N, H) tanh(c_t) of the new cell state
    W_ih: Any           # (4H, D)
    W_hh: Any           # (4H, H)
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) valid-step mask, or None


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None, mask=None):
    """Run an LSTM over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0, c0: (N, H) initial hidden and cell states, or None for zeros.
        W_ih: (4H, D), W_hh: (4H, H), b_ih, b_hh: (4H,) or both None.
        mask: optional (T, N) valid-step mask (see ``_recurrent``).

    Returns:
        out (T, N, H), h_n (N, H), c_n (N, H), cache (LSTMCache).
    ``out``, ``h_n`` and ``c_n`` are views of the cache: do not modify them in place.
    """
    xp, T, N, D, H = check_sequence_args(4, x, {"h0": h0, "c0": c0},
                                         W_ih, W_hh, b_ih, b_hh, mask)
    dt = x.dtype
    m = as_step_mask(mask, dt)
    h = xp.empty((T + 1, N, H), dtype=dt)
    c = xp.empty((T + 1, N, H), dtype=dt)
    h[0] = initial_state(xp, h0, N, H, dt)
    c[0] = initial_state(xp, c0, N, H, dt)
    tanh_c = xp.empty((T, N, H), dtype=dt)
    a, b = _gate_affine(xp, H, dt)
    # (1) scaled by a (see (11')), input half for every step at once: (T*N, D) @ (D, 4H)
    gates = (x.reshape(T * N, D) @ (W_ih * a[:, None]).T).reshape(T, N, 4 * H)
    if b_ih is not None:
        gates += (b_ih + b_hh) * a
    W_hh_aT = xp.ascontiguousarray((W_hh * a[:, None]).T)    # (H, 4H)
    rec = xp.empty((N, 4 * H), dtype=dt)
    kernels = fused_kernels(xp)
    step = kernels.lstm_forward_step if kernels else _Plain(xp, H, N, dt).forward_step
    for t in range(T):
        xp.matmul(h[t], W_hh_aT, out=rec)           # (1) recurrent half
        step(gates[t], rec, c[t], c[t + 1], tanh_c[t], h[t + 1])      # (2)-(4)
        if m is not None:                           # padded steps keep (h, c)_{t-1}
            hold_padded(h, t, m)
            hold_padded(c, t, m)
    out = h[1:] if m is None else h[1:] * m         # (5)
    cache = LSTMCache(x, h, c, gates, tanh_c, W_ih, W_hh, b_ih is not None, m)
    return out, h[T], c[T], cache


def lstm_backward(dout, dh_n, dc_n, cache):
    """Backpropagation through time for ``lstm_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n, dc_n: (N, H) gradients of the final states, or None.
        cache: from ``lstm_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), dc0 (N, H), grads: dict with 'W_ih', 'W_hh'
        (and 'b_ih', 'b_hh' when the forward had biases).
    """
    x, h, c, gates, tanh_c, W_ih, W_hh, has_bias, m = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    xp = get_array_module(x)
    dout = check_output_grad("dout", dout, (T, N, H), dt, xp)
    dh_n = check_output_grad("dh_n", dh_n, (N, H), dt, xp)
    dc_n = check_output_grad("dc_n", dc_n, (N, H), dt, xp)
    dh = xp.zeros((N, H), dtype=dt) if dh_n is None else dh_n.copy()
    dc = xp.zeros((N, H), dtype=dt) if dc_n is None else dc_n.copy()
    if m is not None:                               # padded steps output 0: their dout is dropped
        dout = None if dout is None else dout * m
        carry_h, carry_c = xp.empty_like(dh), xp.empty_like(dc)
    dz = xp.empty((T, N, 4 * H), dtype=dt)
    kernels = fused_kernels(xp)
    step = kernels.lstm_backward_step if kernels else _Plain(xp, H, N, dt).backward_step
    for t in range(T - 1, -1, -1):
        if dout is not None:                        # (6)
            dh += dout[t]
        if m is not None:                           # padded steps pass (dh, dc) straight back
            split_padded(dh, t, m, out=carry_h)
            split_padded(dc, t, m, out=carry_c)
        dzt = dz[t]
        step(gates[t], c[t], tanh_c[t], dh, dc, dzt)                  # (7)-(11)
        if t % FLUSH_EVERY == 0:
            flush_subnormals(xp, dzt)
            flush_subnormals(xp, dc)
        xp.matmul(dzt, W_hh, out=dh)                # (12)
        if m is not None:
            dh += carry_h
            dc += carry_c
    dz2 = dz.reshape(T * N, 4 * H)                  # (T*N, 4H)
    dx = (dz2 @ W_ih).reshape(T, N, D)              # (13)
    grads = {"W_ih": dz2.T @ x.reshape(T * N, D),   # (14)
             "W_hh": dz2.T @ h[:-1].reshape(T * N, H)}
    if has_bias:
        grads["b_ih"] = xp.ones(T * N, dtype=dz2.dtype) @ dz2   # sum over steps, sequences
        grads["b_hh"] = grads["b_ih"].copy()
    return dx, dh, dc, grads


def lstm_step_forward(x, h, c, W_ih, W_hh, b_ih=None, b_hh=None):
    """One LSTM step: x (N, D), h, c (N, H) or None -> h_next, c_next (N, H), cache."""
    _, h_next, c_next, cache = lstm_forward(check_step_input(x), h, c, W_ih, W_hh, b_ih, b_hh)
    return h_next, c_next, cache


def lstm_step_backward(dh_next, dc_next, cache):
    """Backward of one step -> dx (N, D), dh (N, H), dc (N, H), grads."""
    dx, dh, dc, grads = lstm_backward(None, dh_next, dc_next, cache)
    return dx[0], dh, dc, grads
