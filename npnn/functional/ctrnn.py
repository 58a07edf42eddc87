"""Continuous-time RNN (CTRNN), Euler-discretised, with a learnable or fixed time constant.

How it differs from ``rnn.py``: the state does not jump to tanh(a_t) but moves
towards it at rate k = dt / tau per step, a leaky integrator, so each unit
keeps a memory of about tau / dt steps. With dt = tau it is the plain tanh RNN.

    dh/dt = (-h + tanh(W_ih x + b_ih + W_hh h + b_hh)) / tau

The time constants enter as their logarithms, log_tau (H,): tau = exp(log_tau)
is positive whatever value a gradient step gives log_tau, so a learnt tau can
never step to zero or below (learning tau itself, one step could, and the next
forward would fail).

Derived in the site's page "Backpropagation through time, derived", section
"Continuous-time RNN" (derivations.html#continuous-time-rnn-ctrnn-py;
docs/derivations.md in the repository, and installed with the wheel as
share/doc/npnn/derivations.md under ``sys.prefix``), with the same equation numbers.

When this code runs: always. The cell has no acceleration, so
``npnn.functional.ctrnn_forward``/``_backward``, ``npnn.CTRNN``, the models and
``npnn.functional.fast`` all run this file (on NumPy and on CuPy).

One step forward (``ctrnn_cell``), with k = dt / tau = dt * exp(-log_tau) (H,):

    (1) a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    (2) phi_t = tanh(a_t)
    (3) h_t = h_{t-1} + k * (phi_t - h_{t-1}) = (1 - k) * h_{t-1} + k * phi_t
    (4) out_t = h_t

One step backward (``ctrnn_cell_backward``), dh_t^next from step t + 1 (for the
last step, the final state's gradient):

    (5) dh_t = dout_t + dh_t^next
    (6) da_t = dh_t * k * (1 - phi_t^2)
    (7) dh_{t-1}^next = dh_t * (1 - k) + da_t W_hh

and over the whole sequence:

    (8) dx_t = da_t W_ih,  dk = sum_t,n dh_t * (phi_t - h_{t-1}),
        dlog_tau = -dk * k                         (as dk/dlog_tau = -dt exp(-log_tau) = -k)
    (9) dW_ih = sum da^T x,  dW_hh = sum da^T h_{t-1},  db_ih = db_hh = sum da

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, section
"Recurrent dropout, zoneout and weight-drop"): a recurrent mask m (N, H) on h_{t-1}
in the product only (the leak (1 - k) * h_{t-1} reads it unmasked), zoneout
keep-masks d_t (N, H) (or p in eval mode) on the step's result, the candidate h~_t:

    (10) a_t = x_t W_ih^T + b_ih + (m * h_{t-1}) W_hh^T + b_hh
    (11) h_t = d_t * h_{t-1} + (1 - d_t) * h~_t
    (12) dh~_t = (1 - d_t) * dh_t                   (this enters (6)-(8) as dh_t)
    (13) dh_{t-1}^next = dh~_t * (1 - k) + (da_t W_hh) * m + d_t * dh_t,
         dW_hh = sum da^T (m * h_{t-1})
"""

import numpy as np

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .._checks import check_float, check_sequence_args, check_shape
from .._typing import Array
from ._recurrent import (initial_state, input_and_weight_grads, input_half, keep_padded,
                         masked_output, output_grads, pass_padded, step_mask, valid_only)
from .activations import tanh
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)


def ctrnn_cell(xw: Array, h_prev: Array, W_hh: Array, k: Array, b_hh: Optional[Array] = None,
               recurrent_mask: Optional[Array] = None) -> Tuple[Array, Array]:
    """One step, (1)-(3) ((10) with the recurrent mask m (N, H)), given
    xw = x_t W_ih^T + b_ih (N, H) -> h_t and phi_t (N, H)."""
    a = xw + masked_input(h_prev, recurrent_mask) @ W_hh.T   # (1), (10)
    if b_hh is not None:
        a = a + b_hh
    phi = tanh(a)                                       # (2)
    h = (1 - k) * h_prev + k * phi                      # (3)
    return h, phi


def ctrnn_cell_backward(dh: Array, phi: Array, W_hh: Array, k: Array,
                        recurrent_mask: Optional[Array] = None) -> Tuple[Array, Array]:
    """One step, (6)-(7) ((13) with the recurrent mask m): dh = dh_t -> da_t,
    dh_{t-1}^next (N, H)."""
    da = dh * k * (1 - phi * phi)                       # (6)
    dh_prev = dh * (1 - k) + masked_input(da @ W_hh, recurrent_mask)   # (7), (13)
    return da, dh_prev


class CTRNNCache(NamedTuple):
    x: Any              # (T, N, D)
    h: Any              # (T + 1, N, H)
    phi: Any            # (T, N, H) tanh(a_t)
    W_ih: Any
    W_hh: Any
    k: Any              # (H,) dt / tau
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) m of (10), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d,) of (11), or None


def ctrnn_forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array, log_tau: Array,
                  b_ih: Optional[Array] = None, b_hh: Optional[Array] = None, dt: float = 1.0,
                  mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                  zoneout: Any = None) -> Tuple[Array, Array, CTRNNCache]:
    """Run a CTRNN: x (T, N, D), log_tau (H,) the time constants' logarithms, dt > 0
    the Euler step -> out (T, N, H), h_n (N, H), cache; ``recurrent_mask`` (N, H) and
    ``zoneout`` (a ``regularisers.Zoneout`` or a 1-tuple) as (10)-(11) say."""
    xp, T, N, D, H = check_sequence_args(1, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H,), x.dtype)
    rm = recurrent_mask
    check_float("log_tau", log_tau, x.dtype)
    check_shape("log_tau", log_tau, (H,), "H")
    if not float(dt) > 0:
        raise ValueError(f"expected dt > 0, got {dt!r}")
    if xp is np and not np.isfinite(log_tau).all():     # (on a GPU: no read-back per call)
        raise ValueError("expected finite log_tau (tau = exp(log_tau)), got "
                         f"{log_tau[~xp.isfinite(log_tau)][0]}")
    m = step_mask(mask)
    k = dt * xp.exp(-log_tau)                           # (H,) dt / tau
    xw = input_half(x, W_ih, b_ih)                      # (1), input half: (T, N, H)
    h = [initial_state(xp, h0, N, H, x.dtype)]
    phi = []
    for t in range(T):
        h_t, phi_t = ctrnn_cell(xw[t], h[t], W_hh, k, b_hh, rm)      # (1)-(3), (10)
        if zone is not None:
            h_t, = zone_forward(at_step(zone, t), (h_t,), (h[t],))          # (11)
        if m is not None:                               # padded steps keep h_{t-1}
            h_t, = keep_padded(xp, m[t], (h_t,), (h[t],))
        h.append(h_t)
        phi.append(phi_t)
    h, phi = xp.stack(h), xp.stack(phi)
    cache = CTRNNCache(x, h, phi, W_ih, W_hh, k, b_ih is not None, m, rm, zone)
    return masked_output(xp, h[1:], m), h[T], cache    # (4)


def ctrnn_backward(dout: Optional[Array], dh_n: Optional[Array],
                   cache: CTRNNCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """BPTT for ``ctrnn_forward`` -> dx, dh0, grads (W_ih, W_hh, log_tau, b_ih, b_hh)."""
    x, h, phi, W_ih, W_hh, k, has_bias, m, rm, zone = cache
    T = x.shape[0]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh,) = output_grads(x, m, h.shape[2], dout, {"dh_n": dh_n})
    da, dh_all = [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (5)
        dh_c = dh
        if zone is not None:
            (dh_c,), kept = zone_backward(at_step(zone, t), (dh,))                # (12)
        dh_all[t] = dh_c if m is None else valid_only(xp, dh_c, m[t])   # for dk, (8)
        da[t], dh_prev = ctrnn_cell_backward(dh_c, phi[t], W_hh, k, rm)    # (6)-(7), (13)
        if zone is not None:
            dh_prev, = add_kept((dh_prev,), kept)      # (13)
        if m is not None:                               # padded steps pass dh straight back
            da[t] = valid_only(xp, da[t], m[t])
            dh_prev, = pass_padded(xp, m[t], (dh_prev,), (dh,))
        dh = dh_prev
    da, dh_all = xp.stack(da), xp.stack(dh_all)         # (T, N, H) each
    dx, grads = input_and_weight_grads(da, da, x, masked_input(h[:-1], rm), W_ih, has_bias,
                                       m)                                  # (8), (9), (13)
    dk = (dh_all * valid_only(xp, phi - h[:-1], m)).sum(axis=(0, 1))          # (8)
    grads["log_tau"] = -dk * k
    return dx, dh, grads
