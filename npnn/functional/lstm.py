"""LSTM: forward and backpropagation through time, gate order i, f, g, o.

Shapes: T time steps, N sequences, D input features, H hidden units.
Parameters as PyTorch's ``nn.LSTM``: W_ih (4H, D), W_hh (4H, H), b_ih, b_hh (4H,),
the four gate blocks stacked in the order of ``GATES``.

One step forward (``lstm_cell``), from the previous states h_{t-1}, c_{t-1}:

    (1) z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh       (N, 4H) = [z_i z_f z_g z_o]
    (2) i_t = sigmoid(z_i),  f_t = sigmoid(z_f),  g_t = tanh(z_g),  o_t = sigmoid(z_o)
    (3) c_t = f_t * c_{t-1} + i_t * g_t
    (4) h_t = o_t * tanh(c_t)
    (5) out_t = h_t

One step backward (``lstm_cell_backward``, docs/derivations.md, section "LSTM").
dh_t is the gradient reaching h_t (from out_t and from step t + 1) and dc_t^next
the one reaching c_t from step t + 1; the last step starts from the gradients
of the final states h_T, c_T:

    (6)  dh_t = dout_t + dh_t^next
    (7)  do_t = dh_t * tanh(c_t)
    (8)  dc_t = dc_t^next + dh_t * o_t * (1 - tanh(c_t)^2)      c_t also reaches h_t
    (9)  di_t = dc_t * g_t,  df_t = dc_t * c_{t-1},  dg_t = dc_t * i_t
    (10) dc_{t-1}^next = dc_t * f_t
    (11) dz_t = [di_t * i_t (1 - i_t),  df_t * f_t (1 - f_t),  dg_t * (1 - g_t^2),  do_t * o_t (1 - o_t)]
    (12) dh_{t-1}^next = dz_t W_hh

and, over the whole sequence, the input and the parameters:

    (13) dx_t = dz_t W_ih
    (14) dW_ih = sum_t dz_t^T x_t,  dW_hh = sum_t dz_t^T h_{t-1},  db_ih = db_hh = sum_t,n dz_t

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, section
"Recurrent dropout, zoneout and weight-drop"): with a recurrent mask m (N, H), one
for the whole sequence, and zoneout keep-masks d^h_t, d^c_t (N, H) (or their
expectations p_h, p_c in eval mode), (1) reads the masked state and the step's
results (3)-(4) become candidates h~_t, c~_t:

    (15) z_t = x_t W_ih^T + b_ih + (m * h_{t-1}) W_hh^T + b_hh
    (16) h_t = d^h_t * h_{t-1} + (1 - d^h_t) * h~_t,   c_t = d^c_t * c_{t-1} + (1 - d^c_t) * c~_t

and backward, dh_t and dc_t the gradients reaching the zoned states:

    (17) dh~_t = (1 - d^h_t) * dh_t,  dc~_t = (1 - d^c_t) * dc_t    (these enter (7)-(10))
    (18) dh_{t-1}^next = (dz_t W_hh) * m + d^h_t * dh_t,
         dc_{t-1}^next = dc~_t * f_t + d^c_t * dc_t
    (19) dW_hh = sum_t dz_t^T (m * h_{t-1})

``lstm_forward`` runs (1)-(4) for t = 1 .. T, with the input half of (1),
x_t W_ih^T + b_ih, computed for all steps in one product before the loop;
``lstm_backward`` runs (6)-(12) for t = T .. 1 and then (13)-(14) as single
products over all steps.

This file is the reference: the equations as they stand, one line each.
``accel/lstm.py`` computes the same numbers faster (in-place buffers, fused GPU
kernels) and is tested against this file. Called directly, the functions here
always run this reference; the registry (``Cell.run``) and
``npnn.functional.fast`` choose the acceleration where it pays
(``NPNN_ACCEL=0`` keeps the work here).

Derived in the site's page "Backpropagation through time, derived", section "LSTM"
(derivations.html#lstm-lstm-py; docs/derivations.md in the repository, and installed
with the wheel as share/doc/npnn/derivations.md under ``sys.prefix``), with the same
equation numbers.

When this code runs: at every call of ``npnn.functional.lstm_forward`` and
``lstm_backward`` (and of the step functions), at any size: a breakpoint here
stops. ``npnn.LSTM``, the models and ``npnn.functional.fast`` run ``accel/lstm.py``
instead where ``accel.pays`` for the input (sequences long enough to repay its
set-up), and the forward-only steps of ``accel/lstm.py`` for a forward that keeps no
cache (eval mode, ``no_grad``, decoding); they run this file for short
sequences, for single steps of a cell layer, and everywhere inside
``npnn.functional.accel.use_reference()`` or with ``NPNN_ACCEL=0``.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from ..backend import get_array_module
from .._checks import check_sequence_args, check_step_args
from .._typing import Array
from ._recurrent import (initial_state, input_and_weight_grads, input_half, keep_padded,
                         masked_output, output_grads, pass_padded, split_gates, state_grads,
                         step_mask, valid_only)
from .activations import sigmoid, tanh
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)

GATES = ("i", "f", "g", "o")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh


def lstm_cell(xw: Array, h_prev: Array, c_prev: Array, W_hh: Array,
              b_hh: Optional[Array] = None
) -> Tuple[Array, Array, Tuple[Array, Array, Array, Array, Array]]:
    """One step, (1)-(4), given its input half xw = x_t W_ih^T + b_ih (N, 4H).

    Returns h_t, c_t (N, H) and what the backward needs: (i, f, g, o, tanh(c_t)).
    """
    z = xw + h_prev @ W_hh.T                            # (1)
    if b_hh is not None:
        z = z + b_hh
    z_i, z_f, z_g, z_o = split_gates(z, 4)
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)   # (2)
    c = f * c_prev + i * g                              # (3)
    tanh_c = tanh(c)
    h = o * tanh_c                                      # (4)
    return h, c, (i, f, g, o, tanh_c)


def lstm_cell_backward(dh: Array, dc_next: Array, c_prev: Array, i: Array, f: Array, g: Array,
                       o: Array, tanh_c: Array, W_hh: Array) -> Tuple[Array, Array, Array]:
    """One step, (7)-(12): dh = dh_t, dc_next = dc_t^next (N, H) and the step's saved
    values -> dz_t (N, 4H), dh_{t-1}^next, dc_{t-1}^next (N, H)."""
    xp = get_array_module(dh)
    do = dh * tanh_c                                    # (7)
    dc = dc_next + dh * o * (1 - tanh_c * tanh_c)       # (8)
    di, df, dg = dc * g, dc * c_prev, dc * i            # (9)
    dc_prev = dc * f                                    # (10)
    dz = xp.concatenate([di * i * (1 - i), df * f * (1 - f),          # (11)
                         dg * (1 - g * g), do * o * (1 - o)], axis=1)
    dh_prev = dz @ W_hh                                 # (12)
    return dz, dh_prev, dc_prev


class LSTMCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    c: Any              # (T + 1, N, H) c[0] = c_0, c[t] = c_t
    i: Any              # (T, N, H) input gate
    f: Any              # (T, N, H) forget gate
    g: Any              # (T, N, H) candidate cell
    o: Any              # (T, N, H) output gate
    tanh_c: Any         # (T, N, H) tanh(c_t)
    W_ih: Any           # (4H, D)
    W_hh: Any           # (4H, H)
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) m of (15), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d^h, d^c) of (16), or None


def lstm_forward(x: Array, h0: Optional[Array], c0: Optional[Array], W_ih: Array, W_hh: Array,
                 b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                 mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                 zoneout: Any = None) -> Tuple[Array, Array, Array, LSTMCache]:
    """Run an LSTM over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0, c0: (N, H) initial hidden and cell states, or None for zeros.
        W_ih: (4H, D), W_hh: (4H, H), b_ih, b_hh: (4H,) or both None.
        mask: optional (T, N) valid-step mask (see ``_recurrent``).
        recurrent_mask: optional (N, H) recurrent-dropout mask m of (15).
        zoneout: optional zoneout of (h, c), (16): a ``regularisers.Zoneout`` or a pair
            of per-state keep-masks (T, N, H), expectations p or None.

    Returns:
        out (T, N, H), h_n (N, H), c_n (N, H), cache (for ``lstm_backward``).
    """
    xp, T, N, D, H = check_sequence_args(4, x, {"h0": h0, "c0": c0},
                                         W_ih, W_hh, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H, H), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    xw = input_half(x, W_ih, b_ih)                      # (1), input half: (T, N, 4H)
    h = [initial_state(xp, h0, N, H, x.dtype)]
    c = [initial_state(xp, c0, N, H, x.dtype)]
    saved = []
    for t in range(T):
        h_t, c_t, s = lstm_cell(xw[t], masked_input(h[t], rm), c[t], W_hh, b_hh)  # (1)-(4), (15)
        if zone is not None:
            h_t, c_t = zone_forward(at_step(zone, t), (h_t, c_t), (h[t], c[t]))   # (16)
        if m is not None:                               # padded steps keep (h, c)_{t-1}
            h_t, c_t = keep_padded(xp, m[t], (h_t, c_t), (h[t], c[t]))
        h.append(h_t)
        c.append(c_t)
        saved.append(s)
    h, c = xp.stack(h), xp.stack(c)                     # (T + 1, N, H)
    i, f, g, o, tanh_c = (xp.stack(a) for a in zip(*saved))          # (T, N, H) each
    cache = LSTMCache(x, h, c, i, f, g, o, tanh_c, W_ih, W_hh, b_ih is not None, m, rm, zone)
    return masked_output(xp, h[1:], m), h[T], c[T], cache             # (5)


def lstm_backward(dout: Optional[Array], dh_n: Optional[Array], dc_n: Optional[Array],
                  cache: LSTMCache) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """Backpropagation through time for ``lstm_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n, dc_n: (N, H) gradients of the final states, or None.
        cache: from ``lstm_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), dc0 (N, H), grads: dict with 'W_ih', 'W_hh'
        (and 'b_ih', 'b_hh' when the forward had biases).
    """
    x, h, c, i, f, g, o, tanh_c, W_ih, W_hh, has_bias, m, rm, zone = cache
    T = x.shape[0]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh, dc) = output_grads(x, m, h.shape[2], dout, {"dh_n": dh_n, "dc_n": dc_n})
    dz = [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (6)
        dh_c, dc_c = dh, dc
        if zone is not None:
            (dh_c, dc_c), kept = zone_backward(at_step(zone, t), (dh, dc))       # (17)
        dz[t], dh_prev, dc_prev = lstm_cell_backward(dh_c, dc_c, c[t], i[t], f[t], g[t], o[t],
                                                     tanh_c[t], W_hh)   # (7)-(12)
        dh_prev = masked_input(dh_prev, rm)             # (18)
        if zone is not None:
            dh_prev, dc_prev = add_kept((dh_prev, dc_prev), kept)             # (18)
        if m is not None:                               # padded steps pass (dh, dc) straight back
            dz[t] = valid_only(xp, dz[t], m[t])
            dh_prev, dc_prev = pass_padded(xp, m[t], (dh_prev, dc_prev), (dh, dc))
        dh, dc = dh_prev, dc_prev
    dz = xp.stack(dz)                                   # (T, N, 4H)
    dx, grads = input_and_weight_grads(dz, dz, x, masked_input(h[:-1], rm), W_ih, has_bias,
                                       m)                                  # (13), (14), (19)
    return dx, dh, dc, grads


class LSTMStepCache(NamedTuple):
    """What the backward of one step needs."""
    x: Any              # (N, D)
    h_prev: Any         # (N, H)
    c_prev: Any         # (N, H)
    i: Any              # (N, H) each: the gates
    f: Any
    g: Any
    o: Any
    tanh_c: Any         # (N, H)
    W_ih: Any
    W_hh: Any
    has_bias: bool


def lstm_step_forward(x: Array, h: Optional[Array], c: Optional[Array], W_ih: Array, W_hh: Array,
                      b_ih: Optional[Array] = None,
                      b_hh: Optional[Array] = None) -> Tuple[Array, Array, LSTMStepCache]:
    """One LSTM step, (1)-(4): x (N, D), h, c (N, H) or None -> h_next, c_next (N, H), cache."""
    xp, N, D, H = check_step_args(4, x, {"h": h, "c": c}, W_ih, W_hh, b_ih, b_hh)
    h = initial_state(xp, h, N, H, x.dtype)
    c = initial_state(xp, c, N, H, x.dtype)
    h_next, c_next, saved = lstm_cell(input_half(x, W_ih, b_ih), h, c, W_hh, b_hh)
    return h_next, c_next, LSTMStepCache(x, h, c, *saved, W_ih, W_hh, b_ih is not None)


def lstm_step_backward(dh_next: Optional[Array], dc_next: Optional[Array],
                       cache: LSTMStepCache) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """Backward of one step, (7)-(14): the gradients of h_next, c_next (N, H) or None
    -> dx (N, D), dh (N, H), dc (N, H), grads."""
    x, h, c, i, f, g, o, tanh_c, W_ih, W_hh, has_bias = cache
    dh, dc = state_grads(x, h.shape[0], h.shape[1], {"dh_next": dh_next, "dc_next": dc_next})
    dz, dh_prev, dc_prev = lstm_cell_backward(dh, dc, c, i, f, g, o, tanh_c, W_hh)  # (7)-(12)
    dx, grads = input_and_weight_grads(dz, dz, x, h, W_ih, has_bias)                # (13), (14)
    return dx, dh_prev, dc_prev, grads
