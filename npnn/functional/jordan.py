"""Jordan network: the previous *output*, not the hidden state, is fed back.

How it differs from the Elman RNN of ``rnn.py``: there h_{t-1} re-enters the
hidden layer; here the network's output y_{t-1} does (Jordan, 1986), through
W_yh, so the state carried between steps is the output itself.
Shapes: D input, H hidden, O output; parameters W_ih (H, D), W_yh (H, O),
b_h (H,), W_hy (O, H), b_y (O,).

Forward, for t = 1 .. T, from y_0 (zeros unless given):

    (1) h_t = tanh(x_t W_ih^T + y_{t-1} W_yh^T + b_h)
    (2) y_t = h_t W_hy^T + b_y
    (3) out_t = y_t

Backward, t = T .. 1 (dy_T from the final output's gradient):

    (4) dy_t += dout_t
    (5) dh_t = dy_t W_hy,   da_t = dh_t * (1 - h_t^2)
    (6) dy_{t-1} = da_t W_yh,   dx_t = da_t W_ih
    (7) dW_hy = sum dy_t^T h_t,  db_y = sum dy_t,  dW_ih = sum da^T x,
        dW_yh = sum da^T y_{t-1},  db_h = sum da
"""

from typing import Any, NamedTuple, Optional

from .._checks import check_array, check_float, check_same_backend, check_shape
from ..backend import get_array_module
from ._recurrent import (as_step_mask, check_output_grad, hold_padded, initial_state,
                         split_padded)


class JordanCache(NamedTuple):
    x: Any              # (T, N, D)
    h: Any              # (T, N, H) hidden states
    y: Any              # (T + 1, N, O) outputs, y[0] = y_0
    W_ih: Any
    W_yh: Any
    W_hy: Any
    has_bias: bool
    mask: Optional[Any]


def jordan_forward(x, y0, W_ih, W_yh, W_hy, b_h=None, b_y=None, mask=None):
    """Run a Jordan network: x (T, N, D) -> out (T, N, O), y_n (N, O), cache."""
    check_float("x", x)
    dtype = x.dtype
    for name, w in (("W_ih", W_ih), ("W_yh", W_yh), ("W_hy", W_hy)):
        check_float(name, w, dtype)
        if w.ndim != 2:
            check_shape(name, w, (None, None))
    H, D = W_ih.shape
    O = W_hy.shape[0]
    check_shape("W_hy", W_hy, (O, H), ("O", "H"))
    check_shape("W_yh", W_yh, (H, O), ("H", "O"))
    check_shape("x", x, (None, None, D), "TND")
    T, N = x.shape[:2]
    if T < 1 or N < 1:
        raise ValueError(f"expected x with at least one step and one sequence, got shape {x.shape}")
    if y0 is not None:
        check_float("y0", y0, dtype)
        check_shape("y0", y0, (N, O), "NO")
    if (b_h is None) != (b_y is None):
        raise ValueError("expected both b_h and b_y or neither")
    if b_h is not None:
        check_float("b_h", b_h, dtype)
        check_shape("b_h", b_h, (H,))
        check_float("b_y", b_y, dtype)
        check_shape("b_y", b_y, (O,))
    if mask is not None:
        check_array("mask", mask)
        check_shape("mask", mask, (T, N), "TN")
    check_same_backend(x=x, y0=y0, W_ih=W_ih, W_yh=W_yh, W_hy=W_hy, b_h=b_h, b_y=b_y, mask=mask)
    xp = get_array_module(x)
    m = as_step_mask(mask, dtype)
    y = xp.empty((T + 1, N, O), dtype=dtype)
    y[0] = initial_state(xp, y0, N, O, dtype)
    h = (x.reshape(T * N, D) @ W_ih.T).reshape(T, N, H)     # (1), input half
    if b_h is not None:
        h += b_h
    for t in range(T):
        h[t] += y[t] @ W_yh.T                                # (1)
        xp.tanh(h[t], out=h[t])
        y[t + 1] = h[t] @ W_hy.T                             # (2)
        if b_y is not None:
            y[t + 1] += b_y
        if m is not None:
            hold_padded(y, t, m)
    out = y[1:] if m is None else y[1:] * m                  # (3)
    return out, y[T], JordanCache(x, h, y, W_ih, W_yh, W_hy, b_h is not None, m)


def jordan_backward(dout, dy_n, cache):
    """BPTT for ``jordan_forward`` -> dx, dy0, grads (W_ih, W_yh, W_hy, b_h, b_y)."""
    x, h, y, W_ih, W_yh, W_hy, has_bias, m = cache
    T, N, D = x.shape
    H, O = h.shape[2], y.shape[2]
    xp = get_array_module(x)
    dtype = x.dtype
    dout = check_output_grad("dout", dout, (T, N, O), dtype, xp)
    dy_n = check_output_grad("dy_n", dy_n, (N, O), dtype, xp)
    dy = xp.zeros((N, O), dtype) if dy_n is None else dy_n.copy()
    dys = xp.empty((T, N, O), dtype=dtype)                   # gradient reaching each y_t
    da = xp.empty((T, N, H), dtype=dtype)
    for t in range(T - 1, -1, -1):
        if dout is not None:                                 # (4)
            dy = dy + (dout[t] if m is None else dout[t] * m[t])
        if m is not None:
            carry = split_padded(dy, t, m)
        dys[t] = dy
        da[t] = (dy @ W_hy) * (1 - h[t] * h[t])              # (5)
        dy = da[t] @ W_yh                                    # (6)
        if m is not None:
            dy = dy + carry
    da2, dy2 = da.reshape(T * N, H), dys.reshape(T * N, O)
    dx = (da2 @ W_ih).reshape(T, N, D)                       # (6)
    grads = {"W_ih": da2.T @ x.reshape(T * N, D),            # (7)
             "W_yh": da2.T @ y[:-1].reshape(T * N, O),
             "W_hy": dy2.T @ h.reshape(T * N, H)}
    if has_bias:
        grads["b_h"] = da2.sum(axis=0)
        grads["b_y"] = dy2.sum(axis=0)
    return dx, dy, grads
