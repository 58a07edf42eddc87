"""Vanilla (Elman) RNN with tanh or relu: forward and backpropagation through time.

Shapes: T time steps, N sequences, D input features, H hidden units.
Parameters as PyTorch's ``nn.RNN``: W_ih (H, D), W_hh (H, H), b_ih (H,), b_hh (H,).

One step forward (``rnn_cell``), from the previous state h_{t-1}:

    (1) a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        (N, H)
    (2) h_t = phi(a_t),   phi = tanh or relu
    (3) out_t = h_t

One step backward (``rnn_cell_backward``, docs/derivations.md, section "RNN"),
with dh_t^next the gradient that step t + 1 passes back to h_t (for the last
step, the gradient of the final state h_T):

    (4) dh_t = dout_t + dh_t^next
    (5) da_t = dh_t * phi'(a_t),     tanh' = 1 - h_t^2,  relu' = [h_t > 0]
    (6) dh_{t-1}^next = da_t W_hh

and, over the whole sequence, the input and the parameters:

    (7) dx_t = da_t W_ih
    (8) dW_ih = sum_t da_t^T x_t,   dW_hh = sum_t da_t^T h_{t-1},
        db_ih = db_hh = sum_t sum_n da_t

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, section
"Recurrent dropout, zoneout and weight-drop"): with a recurrent mask m (N, H), one
for the whole sequence, and zoneout keep-masks d_t (N, H) (or their expectation p in
eval mode), (1) reads the masked state and (2) gives the candidate h~_t:

    (9)  a_t = x_t W_ih^T + b_ih + (m * h_{t-1}) W_hh^T + b_hh
    (10) h_t = d_t * h_{t-1} + (1 - d_t) * h~_t

and backward, dh_t the gradient reaching the zoned state h_t:

    (11) dh~_t = (1 - d_t) * dh_t                   (this enters (5), phi' read at h~_t)
    (12) dh_{t-1}^next = (da_t W_hh) * m + d_t * dh_t,   dW_hh = sum_t da_t^T (m * h_{t-1})

``rnn_forward`` runs (1)-(2) for t = 1 .. T with the input half of (1),
x_t W_ih^T + b_ih, computed for all steps in one product before the loop;
``rnn_backward`` runs (4)-(6) for t = T .. 1, then (7)-(8) as single products
over all steps.

This file is the reference; ``accel/rnn.py`` computes the same numbers faster
and is tested against it. Called directly, the functions here always run
this reference; the registry (``Cell.run``) and ``npnn.functional.fast`` choose
the acceleration where it pays (``NPNN_ACCEL=0`` keeps the work here).

Derived in the site's page "Backpropagation through time, derived", section "Vanilla
RNN" (derivations.html#vanilla-rnn-rnn-py; docs/derivations.md in the repository, and
installed with the wheel as share/doc/npnn/derivations.md under ``sys.prefix``), with
the same equation numbers.

When this code runs: at every call of ``npnn.functional.rnn_forward`` and
``rnn_backward`` (and of the step functions), at any size: a breakpoint here
stops. ``npnn.RNN``, the models and ``npnn.functional.fast`` run ``accel/rnn.py``
instead where ``accel.pays`` for the input (sequences long enough to repay its
set-up), and the forward-only steps of ``accel/rnn.py`` for a forward that keeps no
cache (eval mode, ``no_grad``, decoding); they run this file for short
sequences, for single steps of a cell layer, and everywhere inside
``npnn.functional.accel.use_reference()`` or with ``NPNN_ACCEL=0``.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .._checks import check_choice, check_sequence_args, check_step_args
from .._typing import Array
from ._recurrent import (initial_state, input_and_weight_grads, input_half, keep_padded,
                         masked_output, output_grads, pass_padded, state_grads, step_mask,
                         valid_only)
from .activations import relu, relu_backward, tanh, tanh_backward
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)

NONLINEARITIES = ("tanh", "relu")


def rnn_cell(xw: Array, h_prev: Array, W_hh: Array, b_hh: Optional[Array] = None,
             nonlinearity: str = "tanh") -> Array:
    """One step, (1)-(2), given its input half xw = x_t W_ih^T + b_ih (N, H) -> h_t (N, H)."""
    a = xw + h_prev @ W_hh.T                            # (1)
    if b_hh is not None:
        a = a + b_hh
    return relu(a) if nonlinearity == "relu" else tanh(a)            # (2)


def rnn_cell_backward(dh: Array, h: Array, W_hh: Array,
                      nonlinearity: str = "tanh") -> Tuple[Array, Array]:
    """One step, (5)-(6): dh = dh_t (N, H), h = h_t -> da_t, dh_{t-1}^next (N, H)."""
    da = relu_backward(dh, h) if nonlinearity == "relu" else tanh_backward(dh, h)   # (5)
    dh_prev = da @ W_hh                                 # (6)
    return da, dh_prev


class RNNCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any                   # (T, N, D) input
    h: Any                   # (T + 1, N, H) states: h[0] = h_0, h[t] = h_t (post-activation)
    W_ih: Any                # (H, D)
    W_hh: Any                # (H, H)
    has_bias: bool
    nonlinearity: str
    mask: Optional[Any]      # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) m of (9), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d,) of (10), or None
    candidate: Optional[Any] = None  # (T, N, H) h~_t of (10) where zoneout is on


def rnn_forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array,
                b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                nonlinearity: str = "tanh", mask: Optional[Array] = None,
                recurrent_mask: Optional[Array] = None,
                zoneout: Any = None) -> Tuple[Array, Array, RNNCache]:
    """Run an RNN over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0: (N, H) initial state, or None for zeros.
        W_ih: (H, D), W_hh: (H, H), b_ih, b_hh: (H,) or both None.
        nonlinearity: 'tanh' or 'relu'.
        mask: optional (T, N) valid-step mask (see ``_recurrent``).
        recurrent_mask: optional (N, H) recurrent-dropout mask m of (9).
        zoneout: optional zoneout of h, (10): a ``regularisers.Zoneout`` or a 1-tuple of
            keep-masks (T, N, H), an expectation p or None.

    Returns:
        out: (T, N, H) every step's state (zero at masked steps),
        h_n: (N, H) final state,
        cache: for ``rnn_backward``.
    """
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    xp, T, N, D, H = check_sequence_args(1, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H,), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    xw = input_half(x, W_ih, b_ih)                      # (1), input half: (T, N, H)
    h = [initial_state(xp, h0, N, H, x.dtype)]
    cand = []
    for t in range(T):
        h_t = rnn_cell(xw[t], masked_input(h[t], rm), W_hh, b_hh, nonlinearity)  # (1)-(2), (9)
        if zone is not None:
            cand.append(h_t)
            h_t, = zone_forward(at_step(zone, t), (h_t,), (h[t],))          # (10)
        if m is not None:                               # padded steps keep h_{t-1}
            h_t, = keep_padded(xp, m[t], (h_t,), (h[t],))
        h.append(h_t)
    h = xp.stack(h)                                     # (T + 1, N, H)
    cache = RNNCache(x, h, W_ih, W_hh, b_ih is not None, nonlinearity, m, rm, zone,
                     xp.stack(cand) if zone is not None else None)
    return masked_output(xp, h[1:], m), h[T], cache    # (3)


def rnn_backward(dout: Optional[Array], dh_n: Optional[Array],
                 cache: RNNCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """Backpropagation through time for ``rnn_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n: (N, H) gradient of the final state, or None.
        cache: from ``rnn_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), grads: dict with 'W_ih', 'W_hh' (and
        'b_ih', 'b_hh' when the forward had biases), shaped like the parameters.
    """
    x, h, W_ih, W_hh, has_bias, nonlinearity, m, rm, zone, cand = cache
    T = x.shape[0]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh,) = output_grads(x, m, h.shape[2], dout, {"dh_n": dh_n})
    da = [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (4)
        if zone is None:
            da[t], dh_prev = rnn_cell_backward(dh, h[t + 1], W_hh, nonlinearity)   # (5)-(6)
        else:
            (dh_c,), kept = zone_backward(at_step(zone, t), (dh,))                # (11)
            da[t], dh_prev = rnn_cell_backward(dh_c, cand[t], W_hh,  # type: ignore[index]
                                               nonlinearity)       # (5)-(6), cand set with zone
        dh_prev = masked_input(dh_prev, rm)             # (12)
        if zone is not None:
            dh_prev, = add_kept((dh_prev,), kept)      # (12)
        if m is not None:                               # padded steps pass dh straight back
            da[t] = valid_only(xp, da[t], m[t])
            dh_prev, = pass_padded(xp, m[t], (dh_prev,), (dh,))
        dh = dh_prev
    da = xp.stack(da)                                   # (T, N, H)
    dx, grads = input_and_weight_grads(da, da, x, masked_input(h[:-1], rm), W_ih, has_bias,
                                       m)                                  # (7), (8), (12)
    return dx, dh, grads


class RNNStepCache(NamedTuple):
    """What the backward of one step needs."""
    x: Any                   # (N, D)
    h_prev: Any              # (N, H)
    h: Any                   # (N, H) the new state
    W_ih: Any
    W_hh: Any
    has_bias: bool
    nonlinearity: str


def rnn_step_forward(x: Array, h: Optional[Array], W_ih: Array, W_hh: Array,
                     b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                     nonlinearity: str = "tanh") -> Tuple[Array, RNNStepCache]:
    """One RNN step, (1)-(2): x (N, D), h (N, H) or None -> h_next (N, H), cache."""
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    xp, N, D, H = check_step_args(1, x, {"h": h}, W_ih, W_hh, b_ih, b_hh)
    h = initial_state(xp, h, N, H, x.dtype)
    h_next = rnn_cell(input_half(x, W_ih, b_ih), h, W_hh, b_hh, nonlinearity)
    return h_next, RNNStepCache(x, h, h_next, W_ih, W_hh, b_ih is not None, nonlinearity)


def rnn_step_backward(dh_next: Optional[Array],
                      cache: RNNStepCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """Backward of one step, (5)-(8): dh_next (N, H) or None -> dx (N, D), dh (N, H), grads."""
    x, h, h_next, W_ih, W_hh, has_bias, nonlinearity = cache
    dh, = state_grads(x, h.shape[0], h.shape[1], {"dh_next": dh_next})
    da, dh_prev = rnn_cell_backward(dh, h_next, W_hh, nonlinearity)            # (5)-(6)
    dx, grads = input_and_weight_grads(da, da, x, h, W_ih, has_bias)           # (7), (8)
    return dx, dh_prev, grads
