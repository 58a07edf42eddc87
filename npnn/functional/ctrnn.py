"""Continuous-time RNN (CTRNN), Euler-discretised, with a learnable or fixed time constant.

How it differs from ``rnn.py``: the state does not jump to tanh(a_t) but moves
towards it at rate k = dt / tau per step, a leaky integrator, so each unit
keeps a memory of about tau / dt steps. With dt = tau it is the plain tanh RNN.

    dh/dt = (-h + tanh(W_ih x + b_ih + W_hh h + b_hh)) / tau

Forward, for t = 1 .. T, with k = dt / tau (H,):

    (1) a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    (2) phi_t = tanh(a_t)
    (3) h_t = h_{t-1} + k * (phi_t - h_{t-1}) = (1 - k) * h_{t-1} + k * phi_t
    (4) out_t = h_t

Backward, t = T .. 1 (dh_T from the final state):

    (5) dh_t += dout_t
    (6) da_t = dh_t * k * (1 - phi_t^2)
    (7) dh_{t-1} = dh_t * (1 - k) + da_t W_hh,   dx_t = da_t W_ih
    (8) dk = sum dh_t * (phi_t - h_{t-1}),   dtau = -dk * dt / tau^2
    (9) dW_ih = sum da^T x,  dW_hh = sum da^T h_{t-1},  db_ih = db_hh = sum da
"""

from typing import Any, NamedTuple, Optional

from .._checks import check_float, check_shape
from ..backend import get_array_module
from ._recurrent import (as_step_mask, check_output_grad, check_sequence_args, hold_padded,
                         initial_state, split_padded)


class CTRNNCache(NamedTuple):
    x: Any              # (T, N, D)
    h: Any              # (T + 1, N, H)
    phi: Any            # (T, N, H) tanh(a_t)
    W_ih: Any
    W_hh: Any
    tau: Any            # (H,)
    dt: float
    has_bias: bool
    mask: Optional[Any]


def ctrnn_forward(x, h0, W_ih, W_hh, tau, b_ih=None, b_hh=None, dt=1.0, mask=None):
    """Run a CTRNN: x (T, N, D), tau (H,) > 0 -> out (T, N, H), h_n (N, H), cache."""
    xp, T, N, D, H = check_sequence_args(1, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    check_float("tau", tau, x.dtype)
    check_shape("tau", tau, (H,), "H")
    if not float(dt) > 0:
        raise ValueError(f"expected dt > 0, got {dt!r}")
    if bool((tau <= 0).any()):
        raise ValueError(f"expected tau > 0 everywhere, got min {float(tau.min())}")
    dtype = x.dtype
    m = as_step_mask(mask, dtype)
    k = dt / tau                                             # (H,)
    h = xp.empty((T + 1, N, H), dtype=dtype)
    h[0] = initial_state(xp, h0, N, H, dtype)
    phi = (x.reshape(T * N, D) @ W_ih.T).reshape(T, N, H)    # (1), input half
    if b_ih is not None:
        phi += b_ih + b_hh
    for t in range(T):
        phi[t] += h[t] @ W_hh.T                              # (1)
        xp.tanh(phi[t], out=phi[t])                          # (2)
        h[t + 1] = h[t] + k * (phi[t] - h[t])                # (3)
        if m is not None:
            hold_padded(h, t, m)
    out = h[1:] if m is None else h[1:] * m                  # (4)
    return out, h[T], CTRNNCache(x, h, phi, W_ih, W_hh, tau, float(dt), b_ih is not None, m)


def ctrnn_backward(dout, dh_n, cache):
    """BPTT for ``ctrnn_forward`` -> dx, dh0, grads (W_ih, W_hh, tau, b_ih, b_hh)."""
    x, h, phi, W_ih, W_hh, tau, dt, has_bias, m = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    xp = get_array_module(x)
    dtype = x.dtype
    dout = check_output_grad("dout", dout, (T, N, H), dtype, xp)
    dh_n = check_output_grad("dh_n", dh_n, (N, H), dtype, xp)
    dh = xp.zeros((N, H), dtype) if dh_n is None else dh_n.copy()
    k = dt / tau
    da = xp.empty((T, N, H), dtype=dtype)
    dk = xp.zeros(H, dtype=dtype)
    for t in range(T - 1, -1, -1):
        if dout is not None:                                 # (5)
            dh = dh + (dout[t] if m is None else dout[t] * m[t])
        if m is not None:
            carry = split_padded(dh, t, m)
        da[t] = dh * k * (1 - phi[t] * phi[t])               # (6)
        dk += (dh * (phi[t] - h[t])).sum(axis=0)             # (8)
        dh = dh * (1 - k) + da[t] @ W_hh                     # (7)
        if m is not None:
            dh = dh + carry
    da2 = da.reshape(T * N, H)
    dx = (da2 @ W_ih).reshape(T, N, D)                       # (7)
    grads = {"W_ih": da2.T @ x.reshape(T * N, D),            # (9)
             "W_hh": da2.T @ h[:-1].reshape(T * N, H),
             "tau": -dk * dt / (tau * tau)}                  # (8)
    if has_bias:
        grads["b_ih"] = da2.sum(axis=0)
        grads["b_hh"] = grads["b_ih"].copy()
    return dx, dh, grads
