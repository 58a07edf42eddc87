"""Peephole LSTM (Gers & Schmidhuber, 2000): the gates also look at the cell state.

How it differs from ``lstm.py``: the input and forget gates see the previous
cell state c_{t-1}, the output gate sees the new one c_t, each through a
diagonal ("peephole") weight vector, so a gate can time its opening on the
cell's content rather than only on h. Gate order i, f, g, o as in the LSTM;
peephole weights w_ci, w_cf, w_co (H,).

Forward, for t = 1 .. T:

    (1) z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh            (N, 4H)
    (2) i_t = sigmoid(z_i + w_ci * c_{t-1}),  f_t = sigmoid(z_f + w_cf * c_{t-1}),
        g_t = tanh(z_g)
    (3) c_t = f_t * c_{t-1} + i_t * g_t
    (4) o_t = sigmoid(z_o + w_co * c_t)
    (5) h_t = o_t * tanh(c_t),   out_t = h_t

Backward, t = T .. 1 (dh_t, dc_t start from the final states' gradients):

    (6)  dh_t += dout_t
    (7)  dz_o = dh_t * tanh(c_t) * o(1 - o)
    (8)  dc_t += dh_t * o_t * (1 - tanh(c_t)^2) + dz_o * w_co       (c_t also feeds o_t)
    (9)  dz_i = dc_t * g_t * i(1 - i),  dz_f = dc_t * c_{t-1} * f(1 - f),
         dz_g = dc_t * i_t * (1 - g^2)
    (10) dc_{t-1} = dc_t * f_t + dz_i * w_ci + dz_f * w_cf          (c_{t-1} feeds i, f)
    (11) dh_{t-1} = dz_t W_hh,   dx_t = dz_t W_ih
    (12) dW_ih = sum dz^T x,  dW_hh = sum dz^T h_{t-1},  db_ih = db_hh = sum dz,
         dw_ci = sum dz_i * c_{t-1},  dw_cf = sum dz_f * c_{t-1},  dw_co = sum dz_o * c_t
"""

from typing import Any, NamedTuple, Optional

from .._checks import check_float, check_shape
from ..backend import get_array_module
from .activations import sigmoid
from ._recurrent import (as_step_mask, check_output_grad, check_sequence_args, hold_padded,
                         initial_state, split_padded)


class PeepholeLSTMCache(NamedTuple):
    x: Any              # (T, N, D)
    h: Any              # (T + 1, N, H)
    c: Any              # (T + 1, N, H)
    gates: Any          # (T, N, 4H) post-activation i, f, g, o
    tanh_c: Any         # (T, N, H)
    W_ih: Any
    W_hh: Any
    peep: Any           # (w_ci, w_cf, w_co)
    has_bias: bool
    mask: Optional[Any]


def _check_peepholes(xp, H, dtype, w_ci, w_cf, w_co):
    for name, w in (("w_ci", w_ci), ("w_cf", w_cf), ("w_co", w_co)):
        check_float(name, w, dtype)
        check_shape(name, w, (H,), "H")


def peephole_lstm_forward(x, h0, c0, W_ih, W_hh, w_ci, w_cf, w_co, b_ih=None, b_hh=None,
                          mask=None):
    """Run a peephole LSTM over a sequence: x (T, N, D) -> out (T, N, H), h_n, c_n, cache."""
    xp, T, N, D, H = check_sequence_args(4, x, {"h0": h0, "c0": c0}, W_ih, W_hh, b_ih, b_hh, mask)
    _check_peepholes(xp, H, x.dtype, w_ci, w_cf, w_co)
    dt = x.dtype
    m = as_step_mask(mask, dt)
    h = xp.empty((T + 1, N, H), dtype=dt)
    c = xp.empty((T + 1, N, H), dtype=dt)
    h[0] = initial_state(xp, h0, N, H, dt)
    c[0] = initial_state(xp, c0, N, H, dt)
    tanh_c = xp.empty((T, N, H), dtype=dt)
    gates = (x.reshape(T * N, D) @ W_ih.T).reshape(T, N, 4 * H)   # (1), input half
    if b_ih is not None:
        gates += b_ih + b_hh
    for t in range(T):
        z = gates[t]
        z += h[t] @ W_hh.T                                       # (1)
        i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        i += w_ci * c[t]                                         # (2)
        f += w_cf * c[t]
        sigmoid(z[:, :2 * H], out=z[:, :2 * H])
        xp.tanh(g, out=g)
        c[t + 1] = f * c[t] + i * g                              # (3)
        o += w_co * c[t + 1]                                     # (4)
        sigmoid(o, out=o)
        xp.tanh(c[t + 1], out=tanh_c[t])                         # (5)
        h[t + 1] = o * tanh_c[t]
        if m is not None:                                        # padded steps keep (h, c)
            hold_padded(h, t, m)
            hold_padded(c, t, m)
    out = h[1:] if m is None else h[1:] * m
    cache = PeepholeLSTMCache(x, h, c, gates, tanh_c, W_ih, W_hh, (w_ci, w_cf, w_co),
                              b_ih is not None, m)
    return out, h[T], c[T], cache


def peephole_lstm_backward(dout, dh_n, dc_n, cache):
    """BPTT for ``peephole_lstm_forward`` -> dx, dh0, dc0, grads (W_ih, W_hh, w_ci, w_cf,
    w_co, and b_ih, b_hh with biases)."""
    x, h, c, gates, tanh_c, W_ih, W_hh, (w_ci, w_cf, w_co), has_bias, m = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    xp = get_array_module(x)
    dt = x.dtype
    dout = check_output_grad("dout", dout, (T, N, H), dt, xp)
    dh = xp.zeros((N, H), dt) if check_output_grad("dh_n", dh_n, (N, H), dt, xp) is None \
        else dh_n.copy()
    dc = xp.zeros((N, H), dt) if check_output_grad("dc_n", dc_n, (N, H), dt, xp) is None \
        else dc_n.copy()
    dz = xp.empty((T, N, 4 * H), dtype=dt)
    for t in range(T - 1, -1, -1):
        if dout is not None:                                     # (6)
            dh = dh + (dout[t] if m is None else dout[t] * m[t])
        if m is not None:
            carry_h, carry_c = split_padded(dh, t, m), split_padded(dc, t, m)
        y = gates[t]
        i, f, g, o = y[:, :H], y[:, H:2 * H], y[:, 2 * H:3 * H], y[:, 3 * H:]
        tc = tanh_c[t]
        dz_o = dh * tc * o * (1 - o)                             # (7)
        dc = dc + dh * o * (1 - tc * tc) + dz_o * w_co           # (8)
        dz[t, :, :H] = dc * g * i * (1 - i)                      # (9)
        dz[t, :, H:2 * H] = dc * c[t] * f * (1 - f)
        dz[t, :, 2 * H:3 * H] = dc * i * (1 - g * g)
        dz[t, :, 3 * H:] = dz_o
        dc = dc * f + dz[t, :, :H] * w_ci + dz[t, :, H:2 * H] * w_cf   # (10)
        dh = dz[t] @ W_hh                                        # (11)
        if m is not None:
            dh, dc = dh + carry_h, dc + carry_c
    dz2 = dz.reshape(T * N, 4 * H)
    dx = (dz2 @ W_ih).reshape(T, N, D)                           # (11)
    grads = {"W_ih": dz2.T @ x.reshape(T * N, D),                # (12)
             "W_hh": dz2.T @ h[:-1].reshape(T * N, H),
             "w_ci": (dz[:, :, :H] * c[:-1]).sum(axis=(0, 1)),
             "w_cf": (dz[:, :, H:2 * H] * c[:-1]).sum(axis=(0, 1)),
             "w_co": (dz[:, :, 3 * H:] * c[1:]).sum(axis=(0, 1))}
    if has_bias:
        grads["b_ih"] = dz2.sum(axis=0)
        grads["b_hh"] = grads["b_ih"].copy()
    return dx, dh, dc, grads
