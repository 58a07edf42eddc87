"""Peephole LSTM (Gers & Schmidhuber, 2000): the gates also look at the cell state.

How it differs from ``lstm.py``: the input and forget gates see the previous
cell state c_{t-1}, the output gate sees the new one c_t, each through a
diagonal ("peephole") weight vector, so a gate can time its opening on the
cell's content rather than only on h. Gate order i, f, g, o as in the LSTM;
peephole weights w_ci, w_cf, w_co (H,).

Derived in the site's page "Backpropagation through time, derived", section "Peephole
LSTM" (derivations.html#peephole-lstm-peephole-py; docs/derivations.md in the
repository, and installed with the wheel as share/doc/npnn/derivations.md under
``sys.prefix``), with the same equation numbers.

When this code runs: always. The cell has no acceleration, so
``npnn.functional.peephole_lstm_forward``/``_backward``, ``npnn.PeepholeLSTM``, the models and
``npnn.functional.fast`` all run this file (on NumPy and on CuPy).

One step forward (``peephole_lstm_cell``), from h_{t-1} and c_{t-1}:

    (1) z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh            (N, 4H)
    (2) i_t = sigmoid(z_i + w_ci * c_{t-1}),  f_t = sigmoid(z_f + w_cf * c_{t-1}),
        g_t = tanh(z_g)
    (3) c_t = f_t * c_{t-1} + i_t * g_t
    (4) o_t = sigmoid(z_o + w_co * c_t)
    (5) h_t = o_t * tanh(c_t),   out_t = h_t

One step backward (``peephole_lstm_cell_backward``), with dh_t = dout_t + dh_t^next
the gradient reaching h_t and dc_t^next the one step t + 1 passes back to c_t:

    (6)  dh_t = dout_t + dh_t^next
    (7)  dz_o = dh_t * tanh(c_t) * o_t (1 - o_t)
    (8)  dc_t = dc_t^next + dh_t * o_t * (1 - tanh(c_t)^2) + dz_o * w_co   (c_t also feeds o_t)
    (9)  dz_i = dc_t * g_t * i_t (1 - i_t),  dz_f = dc_t * c_{t-1} * f_t (1 - f_t),
         dz_g = dc_t * i_t * (1 - g_t^2)
    (10) dc_{t-1}^next = dc_t * f_t + dz_i * w_ci + dz_f * w_cf   (c_{t-1} feeds i, f)
    (11) dh_{t-1}^next = dz_t W_hh

and over the whole sequence:

    (12) dx_t = dz_t W_ih,  dW_ih = sum dz^T x,  dW_hh = sum dz^T h_{t-1},
         db_ih = db_hh = sum dz,
         dw_ci = sum dz_i * c_{t-1},  dw_cf = sum dz_f * c_{t-1},  dw_co = sum dz_o * c_t

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, section
"Recurrent dropout, zoneout and weight-drop"), as in ``lstm.py``: a recurrent mask m
(N, H) on h_{t-1} in the product only (the peepholes read c unmasked), zoneout
keep-masks d^h_t, d^c_t (N, H) (or p_h, p_c in eval mode) on the step's results,
which become candidates h~_t, c~_t (o_t sees the candidate c~_t, and (12)'s c_t
is c~_t):

    (13) z_t = x_t W_ih^T + b_ih + (m * h_{t-1}) W_hh^T + b_hh
    (14) h_t = d^h_t * h_{t-1} + (1 - d^h_t) * h~_t,   c_t = d^c_t * c_{t-1} + (1 - d^c_t) * c~_t
    (15) dh~_t = (1 - d^h_t) * dh_t,  dc~_t = (1 - d^c_t) * dc_t     (these enter (7)-(10))
    (16) dh_{t-1}^next = (dz_t W_hh) * m + d^h_t * dh_t,  dc_{t-1}^next += d^c_t * dc_t,
         dW_hh = sum_t dz_t^T (m * h_{t-1})
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from numpy.typing import DTypeLike

from .._checks import check_float, check_sequence_args, check_shape
from .._typing import Array
from ..backend import get_array_module
from ._recurrent import (initial_state, input_and_weight_grads, input_half, keep_padded,
                         masked_output, output_grads, pass_padded, split_gates, step_mask,
                         valid_only)
from .activations import sigmoid, tanh
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)

GATES = ("i", "f", "g", "o")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh (as lstm.py)


def peephole_lstm_cell(xw: Array, h_prev: Array, c_prev: Array, W_hh: Array, w_ci: Array,
                       w_cf: Array, w_co: Array,
                       b_hh: Optional[Array] = None
) -> Tuple[Array, Array, Tuple[Array, Array, Array, Array, Array]]:
    """One step, (1)-(5), given xw = x_t W_ih^T + b_ih (N, 4H) -> h_t, c_t and
    what the backward needs: (i, f, g, o, tanh(c_t))."""
    z = xw + h_prev @ W_hh.T                            # (1)
    if b_hh is not None:
        z = z + b_hh
    z_i, z_f, z_g, z_o = split_gates(z, 4)
    i = sigmoid(z_i + w_ci * c_prev)                    # (2)
    f = sigmoid(z_f + w_cf * c_prev)
    g = tanh(z_g)
    c = f * c_prev + i * g                              # (3)
    o = sigmoid(z_o + w_co * c)                         # (4)
    tanh_c = tanh(c)
    h = o * tanh_c                                      # (5)
    return h, c, (i, f, g, o, tanh_c)


def peephole_lstm_cell_backward(dh: Array, dc_next: Array, c_prev: Array, i: Array, f: Array,
                                g: Array, o: Array, tanh_c: Array, W_hh: Array, w_ci: Array,
                                w_cf: Array, w_co: Array) -> Tuple[Array, Array, Array]:
    """One step, (7)-(11) -> dz_t (N, 4H), dh_{t-1}^next, dc_{t-1}^next (N, H)."""
    xp = get_array_module(dh)
    dz_o = dh * tanh_c * o * (1 - o)                    # (7)
    dc = dc_next + dh * o * (1 - tanh_c * tanh_c) + dz_o * w_co       # (8)
    dz_i = dc * g * i * (1 - i)                         # (9)
    dz_f = dc * c_prev * f * (1 - f)
    dz_g = dc * i * (1 - g * g)
    dc_prev = dc * f + dz_i * w_ci + dz_f * w_cf        # (10)
    dz = xp.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)
    dh_prev = dz @ W_hh                                 # (11)
    return dz, dh_prev, dc_prev


class PeepholeLSTMCache(NamedTuple):
    x: Any              # (T, N, D)
    h: Any              # (T + 1, N, H)
    c: Any              # (T + 1, N, H)
    i: Any              # (T, N, H) each: the gates
    f: Any
    g: Any
    o: Any
    tanh_c: Any         # (T, N, H)
    W_ih: Any
    W_hh: Any
    peep: Any           # (w_ci, w_cf, w_co)
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) m of (13), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d^h, d^c) of (14), or None
    c_candidate: Optional[Any] = None   # (T, N, H) c~_t where zoneout is on


def _check_peepholes(H: int, dtype: DTypeLike, w_ci: Array, w_cf: Array, w_co: Array) -> None:
    for name, w in (("w_ci", w_ci), ("w_cf", w_cf), ("w_co", w_co)):
        check_float(name, w, dtype)
        check_shape(name, w, (H,), "H")


def peephole_lstm_forward(x: Array, h0: Optional[Array], c0: Optional[Array], W_ih: Array,
                          W_hh: Array, w_ci: Array, w_cf: Array, w_co: Array,
                          b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                          mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                          zoneout: Any = None
) -> Tuple[Array, Array, Array, PeepholeLSTMCache]:
    """Run a peephole LSTM over a sequence: x (T, N, D) -> out (T, N, H), h_n, c_n, cache;
    ``recurrent_mask`` (N, H) and ``zoneout`` as in ``lstm_forward``, (13)-(14)."""
    xp, T, N, D, H = check_sequence_args(4, x, {"h0": h0, "c0": c0}, W_ih, W_hh, b_ih, b_hh, mask)
    _check_peepholes(H, x.dtype, w_ci, w_cf, w_co)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H, H), x.dtype)
    rm = recurrent_mask
    cand = []
    m = step_mask(mask)
    xw = input_half(x, W_ih, b_ih)                      # (1), input half: (T, N, 4H)
    h = [initial_state(xp, h0, N, H, x.dtype)]
    c = [initial_state(xp, c0, N, H, x.dtype)]
    saved = []
    for t in range(T):
        h_t, c_t, s = peephole_lstm_cell(xw[t], masked_input(h[t], rm), c[t], W_hh, w_ci, w_cf,
                                         w_co, b_hh)   # (1)-(5), (13)
        if zone is not None:
            cand.append(c_t)
            h_t, c_t = zone_forward(at_step(zone, t), (h_t, c_t), (h[t], c[t]))   # (14)
        if m is not None:                               # padded steps keep (h, c)_{t-1}
            h_t, c_t = keep_padded(xp, m[t], (h_t, c_t), (h[t], c[t]))
        h.append(h_t)
        c.append(c_t)
        saved.append(s)
    h, c = xp.stack(h), xp.stack(c)                     # (T + 1, N, H)
    i, f, g, o, tanh_c = (xp.stack(a) for a in zip(*saved))
    cache = PeepholeLSTMCache(x, h, c, i, f, g, o, tanh_c, W_ih, W_hh, (w_ci, w_cf, w_co),
                              b_ih is not None, m, rm, zone,
                              xp.stack(cand) if zone is not None else None)
    return masked_output(xp, h[1:], m), h[T], c[T], cache


def peephole_lstm_backward(dout: Optional[Array], dh_n: Optional[Array], dc_n: Optional[Array],
                           cache: PeepholeLSTMCache
) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """BPTT for ``peephole_lstm_forward`` -> dx, dh0, dc0, grads (W_ih, W_hh, w_ci, w_cf,
    w_co, and b_ih, b_hh with biases)."""
    x, h, c, i, f, g, o, tanh_c, W_ih, W_hh, (w_ci, w_cf, w_co), has_bias, m, rm, zone, cc = cache
    T = x.shape[0]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh, dc) = output_grads(x, m, h.shape[2], dout, {"dh_n": dh_n, "dc_n": dc_n})
    dz = [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (6)
        dh_c, dc_c = dh, dc
        if zone is not None:
            (dh_c, dc_c), kept = zone_backward(at_step(zone, t), (dh, dc))       # (15)
        dz[t], dh_prev, dc_prev = peephole_lstm_cell_backward(
            dh_c, dc_c, c[t], i[t], f[t], g[t], o[t], tanh_c[t], W_hh, w_ci, w_cf, w_co)  # (7)-(11)
        dh_prev = masked_input(dh_prev, rm)             # (16)
        if zone is not None:
            dh_prev, dc_prev = add_kept((dh_prev, dc_prev), kept)             # (16)
        if m is not None:                               # padded steps pass (dh, dc) straight back
            dz[t] = valid_only(xp, dz[t], m[t])
            dh_prev, dc_prev = pass_padded(xp, m[t], (dh_prev, dc_prev), (dh, dc))
        dh, dc = dh_prev, dc_prev
    dz = xp.stack(dz)                                   # (T, N, 4H)
    dx, grads = input_and_weight_grads(dz, dz, x, masked_input(h[:-1], rm), W_ih, has_bias,
                                       m)                                  # (12), (16)
    dz_i, dz_f, _, dz_o = split_gates(dz, 4)
    grads["w_ci"] = (dz_i * c[:-1]).sum(axis=(0, 1))
    grads["w_cf"] = (dz_f * c[:-1]).sum(axis=(0, 1))
    grads["w_co"] = (dz_o * (c[1:] if cc is None else cc)).sum(axis=(0, 1))
    return dx, dh, dc, grads
