"""LSTM with a projection (Sak, Senior and Beaufays 2014; PyTorch's ``nn.LSTM(proj_size=P)``):
forward and backpropagation through time, gate order i, f, g, o.

Shapes: T time steps, N sequences, D input features, H cell units, P the
projection (the state h and the output), 0 < P < H in PyTorch's layer (the maths
here holds for any P >= 1). Parameters as PyTorch's: W_ih (4H, D), W_hh (4H, P),
b_ih, b_hh (4H,), the four gate blocks stacked in the order of ``GATES``, and
W_hr (P, H), which has no bias. The states are h (N, P) and c (N, H).

One step forward (``lstmp_cell``), from the previous states h_{t-1}, c_{t-1}:

    (1) z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh       (N, 4H) = [z_i z_f z_g z_o]
    (2) i_t = sigmoid(z_i),  f_t = sigmoid(z_f),  g_t = tanh(z_g),  o_t = sigmoid(z_o)
    (3) c_t = f_t * c_{t-1} + i_t * g_t
    (4) u_t = o_t * tanh(c_t)                                  (N, H) the LSTM's h, unprojected
    (5) h_t = u_t W_hr^T                                       (N, P)
    (6) out_t = h_t

(1)-(3) are the LSTM's (``lstm.py``) with h_{t-1} of size P; (4) is its h_t.

One step backward (``lstmp_cell_backward``, docs/derivations.md, section "LSTM
with projections"). dh_t is the gradient reaching h_t (from out_t and from step
t + 1) and dc_t^next the one reaching c_t from step t + 1; the last step starts
from the gradients of the final states h_T, c_T:

    (7)  dh_t = dout_t + dh_t^next                             (N, P)
    (8)  du_t = dh_t W_hr                                      (N, H)
    (9)  do_t = du_t * tanh(c_t)
    (10) dc_t = dc_t^next + du_t * o_t * (1 - tanh(c_t)^2)     c_t also reaches u_t
    (11) di_t = dc_t * g_t,  df_t = dc_t * c_{t-1},  dg_t = dc_t * i_t
    (12) dc_{t-1}^next = dc_t * f_t
    (13) dz_t = [di_t * i_t (1 - i_t),  df_t * f_t (1 - f_t),  dg_t * (1 - g_t^2),  do_t * o_t (1 - o_t)]
    (14) dh_{t-1}^next = dz_t W_hh                             (N, P)

and, over the whole sequence, the input and the parameters:

    (15) dx_t = dz_t W_ih
    (16) dW_ih = sum_t dz_t^T x_t,  dW_hh = sum_t dz_t^T h_{t-1},  db_ih = db_hh = sum_t,n dz_t
    (17) dW_hr = sum_t dh_t^T u_t                              (P, H)

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, section
"Recurrent dropout, zoneout and weight-drop"), as in ``lstm.py``: a recurrent mask m
(N, P) on h_{t-1} in the product, zoneout keep-masks d^h_t (N, P), d^c_t (N, H) (or
p_h, p_c in eval mode) on the step's results, which become candidates h~_t, c~_t:

    (18) z_t = x_t W_ih^T + b_ih + (m * h_{t-1}) W_hh^T + b_hh
    (19) h_t = d^h_t * h_{t-1} + (1 - d^h_t) * h~_t,   c_t = d^c_t * c_{t-1} + (1 - d^c_t) * c~_t
    (20) dh~_t = (1 - d^h_t) * dh_t,  dc~_t = (1 - d^c_t) * dc_t    (these enter (8)-(12), (17))
    (21) dh_{t-1}^next = (dz_t W_hh) * m + d^h_t * dh_t,  dc_{t-1}^next += d^c_t * dc_t,
         dW_hh = sum_t dz_t^T (m * h_{t-1})

``lstmp_forward`` runs (1)-(5) for t = 1 .. T, with the input half of (1),
x_t W_ih^T + b_ih, computed for all steps in one product before the loop;
``lstmp_backward`` runs (7)-(14) for t = T .. 1 and then (15)-(17) as single
products over all steps. Padded steps (a mask) are handled by selection as in
``_recurrent``: they keep (h, c), output 0, and pass the gradients of (h, c)
straight back; they add nothing to (15)-(17).

This file is the reference and there is no acceleration for it: it runs as
written, on NumPy and CuPy alike.

Derived in the site's page "Backpropagation through time, derived", section "LSTM with
projections" (derivations.html#lstm-with-projections-lstmp-py; docs/derivations.md in
the repository, and installed with the wheel as share/doc/npnn/derivations.md under
``sys.prefix``), with the same equation numbers.

When this code runs: always. The cell has no acceleration, so
``npnn.functional.lstmp_forward``/``_backward``, ``npnn.LSTM(..., proj_size=P)``, the models and
``npnn.functional.fast`` all run this file (on NumPy and on CuPy).
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .._checks import (check_float, check_mask, check_same_backend, check_sequence_input,
                       check_states, check_weights)
from .._typing import Array, ArrayModule
from ..backend import get_array_module
from ._recurrent import (initial_state, input_and_weight_grads, input_half, keep_padded,
                         masked_output, output_grads, pass_padded, split_gates, state_grads,
                         step_mask, valid_only)
from .activations import sigmoid, tanh
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)

GATES = ("i", "f", "g", "o")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh


def lstmp_cell(xw: Array, h_prev: Array, c_prev: Array, W_hh: Array, W_hr: Array,
               b_hh: Optional[Array] = None
) -> Tuple[Array, Array, Tuple[Array, Array, Array, Array, Array, Array]]:
    """One step, (1)-(5), given its input half xw = x_t W_ih^T + b_ih (N, 4H).

    Returns h_t (N, P), c_t (N, H) and what the backward needs:
    (i, f, g, o, tanh(c_t), u_t), each (N, H).
    """
    z = xw + h_prev @ W_hh.T                            # (1)
    if b_hh is not None:
        z = z + b_hh
    z_i, z_f, z_g, z_o = split_gates(z, 4)
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)   # (2)
    c = f * c_prev + i * g                              # (3)
    tanh_c = tanh(c)
    u = o * tanh_c                                      # (4)
    h = u @ W_hr.T                                      # (5)
    return h, c, (i, f, g, o, tanh_c, u)


def lstmp_cell_backward(dh: Array, dc_next: Array, c_prev: Array, i: Array, f: Array, g: Array,
                        o: Array, tanh_c: Array, W_hh: Array,
                        W_hr: Array) -> Tuple[Array, Array, Array]:
    """One step, (8)-(14): dh = dh_t (N, P), dc_next = dc_t^next (N, H) and the step's
    saved values -> dz_t (N, 4H), dh_{t-1}^next (N, P), dc_{t-1}^next (N, H)."""
    xp = get_array_module(dh)
    du = dh @ W_hr                                      # (8)
    do = du * tanh_c                                    # (9)
    dc = dc_next + du * o * (1 - tanh_c * tanh_c)       # (10)
    di, df, dg = dc * g, dc * c_prev, dc * i            # (11)
    dc_prev = dc * f                                    # (12)
    dz = xp.concatenate([di * i * (1 - i), df * f * (1 - f),          # (13)
                         dg * (1 - g * g), do * o * (1 - o)], axis=1)
    dh_prev = dz @ W_hh                                 # (14)
    return dz, dh_prev, dc_prev


class LSTMPCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, P) h[0] = h_0, h[t] = h_t
    c: Any              # (T + 1, N, H) c[0] = c_0, c[t] = c_t
    i: Any              # (T, N, H) input gate
    f: Any              # (T, N, H) forget gate
    g: Any              # (T, N, H) candidate cell
    o: Any              # (T, N, H) output gate
    tanh_c: Any         # (T, N, H) tanh(c_t)
    u: Any              # (T, N, H) u_t = o_t * tanh(c_t), before the projection
    W_ih: Any           # (4H, D)
    W_hh: Any           # (4H, P)
    W_hr: Any           # (P, H)
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, P) m of (18), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d^h, d^c) of (19), or None


def check_lstmp_args(x: Array, h0: Optional[Array], c0: Optional[Array], W_ih: Array, W_hh: Array,
                     W_hr: Array, b_ih: Optional[Array], b_hh: Optional[Array],
                     mask: Optional[Array]) -> Tuple[ArrayModule, int, int, int, int, int]:
    """Validate the sequence op's arguments; return ``(xp, T, N, D, H, P)``.

    H comes from W_hh's rows (4H), P from its columns; W_hr must be (P, H)."""
    check_float("x", x)
    D, H = check_weights(4, W_ih, W_hh, b_ih, b_hh, x.dtype, projected=True)
    P = W_hh.shape[1]
    check_float("W_hr", W_hr, x.dtype)
    if tuple(W_hr.shape) != (P, H):
        raise ValueError(f"expected W_hr of shape (P, H) = ({P}, {H}) (P the columns of W_hh "
                         f"(4H, P), H a quarter of its rows), got {tuple(W_hr.shape)}")
    T, N = check_sequence_input(x, D)
    check_states({"h0": h0}, N, P, x.dtype)
    check_states({"c0": c0}, N, H, x.dtype)
    check_mask(mask, T, N)
    check_same_backend(x=x, W_ih=W_ih, W_hh=W_hh, W_hr=W_hr, b_ih=b_ih, b_hh=b_hh, mask=mask,
                       h0=h0, c0=c0)
    return get_array_module(x), T, N, D, H, P


def lstmp_forward(x: Array, h0: Optional[Array], c0: Optional[Array], W_ih: Array, W_hh: Array,
                  W_hr: Array, b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                  mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                  zoneout: Any = None) -> Tuple[Array, Array, Array, LSTMPCache]:
    """Run an LSTM with projections over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0: (N, P), c0: (N, H) initial states, or None for zeros.
        W_ih: (4H, D), W_hh: (4H, P), W_hr: (P, H), b_ih, b_hh: (4H,) or both None.
        mask: optional (T, N) valid-step mask (see ``_recurrent``).
        recurrent_mask: optional (N, P) recurrent-dropout mask m of (18).
        zoneout: optional zoneout of (h, c), (19): a ``regularisers.Zoneout`` or a pair
            of per-state keep-masks ((T, N, P), (T, N, H)), expectations p or None.

    Returns:
        out (T, N, P), h_n (N, P), c_n (N, H), cache (for ``lstmp_backward``).
    """
    xp, T, N, D, H, P = check_lstmp_args(x, h0, c0, W_ih, W_hh, W_hr, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, P)
    zone = zoneout_states(zoneout, xp, T, N, (P, H), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    xw = input_half(x, W_ih, b_ih)                      # (1), input half: (T, N, 4H)
    h = [initial_state(xp, h0, N, P, x.dtype)]
    c = [initial_state(xp, c0, N, H, x.dtype)]
    saved = []
    for t in range(T):
        h_t, c_t, s = lstmp_cell(xw[t], masked_input(h[t], rm), c[t], W_hh, W_hr,
                                 b_hh)                 # (1)-(5), (18)
        if zone is not None:
            h_t, c_t = zone_forward(at_step(zone, t), (h_t, c_t), (h[t], c[t]))   # (19)
        if m is not None:                               # padded steps keep (h, c)_{t-1}
            h_t, c_t = keep_padded(xp, m[t], (h_t, c_t), (h[t], c[t]))
        h.append(h_t)
        c.append(c_t)
        saved.append(s)
    h, c = xp.stack(h), xp.stack(c)                     # (T + 1, N, P), (T + 1, N, H)
    i, f, g, o, tanh_c, u = (xp.stack(a) for a in zip(*saved))       # (T, N, H) each
    cache = LSTMPCache(x, h, c, i, f, g, o, tanh_c, u, W_ih, W_hh, W_hr, b_ih is not None, m,
                       rm, zone)
    return masked_output(xp, h[1:], m), h[T], c[T], cache             # (6)


def lstmp_backward(dout: Optional[Array], dh_n: Optional[Array], dc_n: Optional[Array],
                   cache: LSTMPCache) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """Backpropagation through time for ``lstmp_forward``.

    Args:
        dout: (T, N, P) gradient of every step's output, or None.
        dh_n: (N, P), dc_n: (N, H) gradients of the final states, or None.
        cache: from ``lstmp_forward``.

    Returns:
        dx (T, N, D), dh0 (N, P), dc0 (N, H), grads: dict with 'W_ih', 'W_hh', 'W_hr'
        (and 'b_ih', 'b_hh' when the forward had biases).
    """
    x, h, c, i, f, g, o, tanh_c, u, W_ih, W_hh, W_hr, has_bias, m, rm, zone = cache
    T, N, H = i.shape
    P = h.shape[2]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh,) = output_grads(x, m, P, dout, {"dh_n": dh_n})
    (dc,) = state_grads(x, N, H, {"dc_n": dc_n})
    dz, dhs = [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (7)
        dh_c, dc_c = dh, dc
        if zone is not None:
            (dh_c, dc_c), kept = zone_backward(at_step(zone, t), (dh, dc))       # (20)
        dz[t], dh_prev, dc_prev = lstmp_cell_backward(dh_c, dc_c, c[t], i[t], f[t], g[t], o[t],
                                                      tanh_c[t], W_hh, W_hr)   # (8)-(14)
        dh_prev = masked_input(dh_prev, rm)             # (21)
        if zone is not None:
            dh_prev, dc_prev = add_kept((dh_prev, dc_prev), kept)             # (21)
        dhs[t] = dh_c
        if m is not None:                               # padded steps pass (dh, dc) straight back
            dz[t], dhs[t] = valid_only(xp, dz[t], m[t]), valid_only(xp, dh_c, m[t])
            dh_prev, dc_prev = pass_padded(xp, m[t], (dh_prev, dc_prev), (dh, dc))
        dh, dc = dh_prev, dc_prev
    dz = xp.stack(dz)                                   # (T, N, 4H)
    dx, grads = input_and_weight_grads(dz, dz, x, masked_input(h[:-1], rm), W_ih, has_bias,
                                       m)                                  # (15), (16), (21)
    dh_all = xp.stack(dhs).reshape(-1, P)               # (T*N, P), 0 at padded steps
    u_valid = valid_only(xp, u, m).reshape(-1, H)       # (T*N, H), padding kept out
    grads["W_hr"] = xp.dot(dh_all.T, u_valid)           # (17)
    return dx, dh, dc, grads
