"""Vanilla (Elman) RNN with tanh or relu: forward and backpropagation through time.

Shapes: T time steps, N sequences, D input features, H hidden units.
Parameters as PyTorch's ``nn.RNN``: W_ih (H, D), W_hh (H, H), b_ih (H,), b_hh (H,).

Forward, for t = 1 .. T, starting from h_0:

    (1) a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        (N, H)
    (2) h_t = phi(a_t),   phi = tanh or relu
    (3) out_t = h_t

Backward (docs/derivations.md, section "RNN"). With g_t = dL/dh_t, the sum of
what reaches h_t from out_t and from step t + 1, going t = T .. 1:

    (4) g_t = dout_t + dh_t^rec,    dh_T^rec = dL/dh_T (gradient of the final state)
    (5) da_t = g_t * phi'(a_t),     tanh' = 1 - h_t^2,  relu' = [h_t > 0]
    (6) dh_{t-1}^rec = da_t W_hh
    (7) dx_t = da_t W_ih
    (8) dW_ih = sum_t da_t^T x_t,   dW_hh = sum_t da_t^T h_{t-1},
        db_ih = db_hh = sum_t sum_n da_t

The input half of (1) for all steps is one (T*N, D) x (D, H) product before the
loop, and (7)-(8) are single products over all steps after it; only the
recurrent product and the elementwise work run per step.
"""

from functools import partial
from typing import Any, NamedTuple, Optional

from .._checks import check_choice
from ..backend import fused_kernels, get_array_module
from ._recurrent import (FLUSH_EVERY, as_step_mask, check_output_grad, check_sequence_args,
                         check_step_input, flush_subnormals, hold_padded, initial_state,
                         split_padded)

NONLINEARITIES = ("tanh", "relu")


def _plain_forward_step(xp, a, rec, h, relu):
    """(1)-(2) with ufuncs (``_fused`` has the same step as one GPU kernel)."""
    a += rec
    if relu:
        xp.maximum(a, 0, out=h)
    else:
        xp.tanh(a, out=h)


def _plain_backward_step(xp, g, h, da, relu):
    """(5): da = g * phi'(a), from the output h."""
    if relu:
        xp.multiply(g, h > 0, out=da)
    else:
        xp.multiply(h, h, out=da)
        xp.subtract(1, da, out=da)
        da *= g


class RNNCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any                   # (T, N, D) input
    h: Any                   # (T + 1, N, H) states: h[0] = h_0, h[t] = h_t (post-activation)
    W_ih: Any                # (H, D)
    W_hh: Any                # (H, H)
    has_bias: bool
    nonlinearity: str
    mask: Optional[Any]      # (T, N, 1) valid-step mask, or None


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, nonlinearity="tanh", mask=None):
    """Run an RNN over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0: (N, H) initial state, or None for zeros.
        W_ih: (H, D), W_hh: (H, H), b_ih, b_hh: (H,) or both None.
        nonlinearity: 'tanh' or 'relu'.
        mask: optional (T, N) valid-step mask (see ``_recurrent``).

    Returns:
        out: (T, N, H) every step's state (zero at masked steps),
        h_n: (N, H) final state,
        cache: RNNCache for ``rnn_backward``.
    ``out`` and ``h_n`` are views of the cache: do not modify them in place.
    """
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    xp, T, N, D, H = check_sequence_args(1, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    m = as_step_mask(mask, x.dtype)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = initial_state(xp, h0, N, H, x.dtype)
    # (1), input half for every step at once: (T*N, D) @ (D, H)
    a = (x.reshape(T * N, D) @ W_ih.T).reshape(T, N, H)
    if b_ih is not None:
        a += b_ih + b_hh
    W_hh_T = xp.ascontiguousarray(W_hh.T)           # (H, H)
    rec = xp.empty((N, H), dtype=x.dtype)
    kernels = fused_kernels(xp)
    step = kernels.rnn_forward_step if kernels else partial(_plain_forward_step, xp)
    relu = nonlinearity == "relu"
    for t in range(T):
        xp.matmul(h[t], W_hh_T, out=rec)            # (1) recurrent half
        step(a[t], rec, h[t + 1], relu)             # (1)-(2)
        if m is not None:                           # padded steps keep h_{t-1}
            hold_padded(h, t, m)
    out = h[1:] if m is None else h[1:] * m         # (3)
    cache = RNNCache(x, h, W_ih, W_hh, b_ih is not None, nonlinearity, m)
    return out, h[T], cache


def rnn_backward(dout, dh_n, cache):
    """Backpropagation through time for ``rnn_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n: (N, H) gradient of the final state, or None.
        cache: from ``rnn_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), grads: dict with 'W_ih', 'W_hh' (and
        'b_ih', 'b_hh' when the forward had biases), shaped like the parameters.
    """
    x, h, W_ih, W_hh, has_bias, nonlinearity, m = cache
    T, N, D = x.shape
    H = W_hh.shape[1]
    xp = get_array_module(x)
    dout = check_output_grad("dout", dout, (T, N, H), x.dtype, xp)
    dh_n = check_output_grad("dh_n", dh_n, (N, H), x.dtype, xp)
    g = xp.zeros((N, H), dtype=x.dtype) if dh_n is None else dh_n.copy()
    if m is not None:                               # padded steps output 0: their dout is dropped
        dout = None if dout is None else dout * m
        carry = xp.empty_like(g)
    da = xp.empty((T, N, H), dtype=x.dtype)
    kernels = fused_kernels(xp)
    step = kernels.rnn_backward_step if kernels else partial(_plain_backward_step, xp)
    relu = nonlinearity == "relu"
    for t in range(T - 1, -1, -1):
        if dout is not None:                        # (4)
            g += dout[t]
        if m is not None:                           # padded steps pass g straight to h_{t-1}
            split_padded(g, t, m, out=carry)
        step(g, h[t + 1], da[t], relu)              # (5)
        if t % FLUSH_EVERY == 0:
            flush_subnormals(xp, da[t])
        xp.matmul(da[t], W_hh, out=g)               # (6)
        if m is not None:
            g += carry
    da2 = da.reshape(T * N, H)                      # (T*N, H)
    dx = (da2 @ W_ih).reshape(T, N, D)              # (7)
    grads = {"W_ih": da2.T @ x.reshape(T * N, D),   # (8)
             "W_hh": da2.T @ h[:-1].reshape(T * N, H)}
    if has_bias:
        grads["b_ih"] = xp.ones(T * N, dtype=da2.dtype) @ da2   # sum over steps, sequences
        grads["b_hh"] = grads["b_ih"].copy()
    return dx, g, grads


def rnn_step_forward(x, h, W_ih, W_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One RNN step: x (N, D), h (N, H) or None -> h_next (N, H), cache.

    Equations (1)-(2); the cache is that of a length-1 sequence.
    """
    _, h_next, cache = rnn_forward(check_step_input(x), h, W_ih, W_hh, b_ih, b_hh, nonlinearity)
    return h_next, cache


def rnn_step_backward(dh_next, cache):
    """Backward of one step: dh_next (N, H) -> dx (N, D), dh (N, H), grads."""
    dx, dh, grads = rnn_backward(None, dh_next, cache)
    return dx[0], dh, grads
