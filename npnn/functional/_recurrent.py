"""What the RNN, LSTM and GRU sequence ops share: argument checks and masks.

A *mask* ``m (T, N)`` marks the valid steps of each sequence (1 valid, 0
padding). At a padded step the recurrent state is carried over unchanged,

    h_t = m_t * h_new + (1 - m_t) * h_{t-1},

and the step's output is zero. With ``m`` from ``length_mask(lengths, T)``
this gives PyTorch's packed-sequence semantics: the final state is each
sequence's state at its last valid step.
"""

import numpy as np

from .._checks import (check_array, check_float, check_index_range, check_integer,
                       check_same_backend, check_shape)
from ..backend import get_array_module


def check_sequence_args(gates, x, states, W_ih, W_hh, b_ih, b_hh, mask):
    """Validate a sequence op's arguments; return ``(xp, T, N, D, H)``.

    ``gates`` is G (1 RNN, 4 LSTM, 3 GRU); ``states`` maps names such as
    ``'h0'`` to initial states of shape (N, H) or None.
    """
    check_float("x", x)
    dtype = x.dtype
    check_float("W_hh", W_hh, dtype)
    check_float("W_ih", W_ih, dtype)
    if W_hh.ndim != 2:
        check_shape("W_hh", W_hh, (None, None), ("G*H", "H"))
    H = W_hh.shape[1]
    check_shape("W_hh", W_hh, (gates * H, H), ("G*H", "H"))
    if W_ih.ndim != 2:
        check_shape("W_ih", W_ih, (gates * H, None), ("G*H", "D"))
    D = W_ih.shape[1]
    check_shape("W_ih", W_ih, (gates * H, D))
    check_shape("x", x, (None, None, D), "TND")
    T, N = x.shape[0], x.shape[1]
    if T < 1 or N < 1:
        raise ValueError(f"expected x with at least one step and one sequence, got shape {x.shape}")
    for name, s in states.items():
        if s is not None:
            check_float(name, s, dtype)
            check_shape(name, s, (N, H), "NH")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("expected both b_ih and b_hh or neither, got "
                         f"b_ih={'array' if b_ih is not None else None}, "
                         f"b_hh={'array' if b_hh is not None else None}")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            check_float(name, b, dtype)
            check_shape(name, b, (gates * H,))
    if mask is not None:
        check_array("mask", mask)
        check_shape("mask", mask, (T, N), "TN")
    check_same_backend(x=x, W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh, mask=mask, **states)
    return get_array_module(x), T, N, D, H


#: The backward loops flush every FLUSH_EVERY steps: a flushed gradient is exact zeros
#: and stays zero (0 W = 0), so a gradient decaying through the slow range costs at
#: most this many slow steps, and the flush's own cost is spread over as many.
FLUSH_EVERY = 8


def flush_subnormals(xp, a):
    """Zero the entries of ``a`` below tiny / eps, in place (1e-31 in float32, 1e-292 in
    float64; tiny is the smallest normal number, eps the machine epsilon).

    BPTT over long sequences lets gradients vanish towards the subnormal range, and
    x86 CPUs run arithmetic that reads *or produces* subnormals through slow
    microcode: OpenBLAS's products then take 5 to 100 times longer (measured: a
    16x128 by 128x512 product, 24 us normal, 2.4 ms subnormal; an LSTM backward
    at T = 400 slowing from 18 to 100-150 us per step). Flushing at tiny / eps,
    not just at tiny, keeps the products of flushed arrays with weights down to eps
    normal. The values removed are below the float's relative resolution of any
    quantity of size 1, as in the CPU's flush-to-zero mode, which NumPy cannot set.
    GPUs treat subnormals at full speed, so only NumPy arrays are flushed.
    """
    if xp is np:
        info = np.finfo(a.dtype)
        xp.copyto(a, 0, where=xp.abs(a) < info.tiny / info.eps)
    return a


def hold_padded(s, t, m):
    """Forward, at step t: s[t+1] = s[t] + m_t (s[t+1] - s[t]), in place (padding keeps s[t])."""
    s[t + 1] -= s[t]
    s[t + 1] *= m[t]
    s[t + 1] += s[t]


def split_padded(g, t, m, out=None):
    """Backward, at step t: keep m_t g in ``g`` (in place, it goes through the cell) and
    return (1 - m_t) g, the part that passes straight to step t - 1 (written into
    ``out`` when given, so that a loop allocates no (N, H) arrays)."""
    if out is None:
        carry = g * (1 - m[t])
    else:
        carry = out
        carry[...] = g
        carry *= 1 - m[t]
    g *= m[t]
    return carry


def initial_state(xp, s, N, H, dtype):
    """The given initial state, or zeros (N, H)."""
    return xp.zeros((N, H), dtype=dtype) if s is None else s


def as_step_mask(mask, dtype):
    """Mask (T, N) -> (T, N, 1) in the data's dtype, ready to broadcast over H."""
    if mask is None:
        return None
    return mask.astype(dtype)[:, :, None]


def check_output_grad(name, d, shape, dtype, xp):
    """A gradient w.r.t. an output: None means zeros; otherwise it must match."""
    if d is None:
        return None
    check_float(name, d, dtype)
    check_shape(name, d, shape)
    return d


def length_mask(lengths, T):
    """Mask (T, N) that is True at steps t < lengths[n].

    ``lengths`` is an integer array of N sequence lengths in 1..T (any order).
    """
    check_integer("lengths", lengths)
    check_shape("lengths", lengths, (None,), "N")
    check_index_range("lengths", lengths, 1, T + 1)
    xp = get_array_module(lengths)
    return xp.arange(T)[:, None] < lengths[None, :]  # (T, N)


def check_step_input(x):
    """A one-step op's input must be (N, D); returns it as a length-1 sequence."""
    check_float("x", x)
    if x.ndim != 2:
        check_shape("x", x, (None, None), "ND")
    return x[None]
