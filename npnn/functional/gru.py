"""GRU: forward and backpropagation through time, gate order r, z, n (PyTorch's form).

Shapes: T time steps, N sequences, D input features, H hidden units.
Parameters as PyTorch's ``nn.GRU``: W_ih (3H, D), W_hh (3H, H), b_ih, b_hh (3H,),
the three gate blocks stacked in the order of ``GATES``. Blocks of a (N, 3H)
array are written with a suffix: gi_r = gi[:, :H], gi_z = gi[:, H:2H], gi_n = gi[:, 2H:].

One step forward (``gru_cell``), from the previous state h_{t-1}:

    (1) gi_t = x_t W_ih^T + b_ih                               (N, 3H) = [gi_r gi_z gi_n]
    (2) gh_t = h_{t-1} W_hh^T + b_hh                           (N, 3H) = [gh_r gh_z gh_n]
    (3) r_t = sigmoid(gi_r + gh_r),   z_t = sigmoid(gi_z + gh_z)
    (4) n_t = tanh(gi_n + r_t * gh_n)        (b_hn sits inside r * (...), as in PyTorch)
    (5) h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    (6) out_t = h_t

One step backward (``gru_cell_backward``, docs/derivations.md, section "GRU"),
with dh_t^next the gradient that step t + 1 passes back to h_t (for the last
step, the gradient of the final state h_T):

    (7)  dh_t = dout_t + dh_t^next
    (8)  dn_t = dh_t * (1 - z_t),   dz_t = dh_t * (h_{t-1} - n_t)
    (9)  da_n = dn_t * (1 - n_t^2)                 (the gradient of n's pre-activation)
    (10) dr_t = da_n * gh_n
    (11) da_r = dr_t * r_t (1 - r_t),   da_z = dz_t * z_t (1 - z_t)
    (12) dgi_t = [da_r, da_z, da_n],   dgh_t = [da_r, da_z, da_n * r_t]
    (13) dh_{t-1}^next = dh_t * z_t + dgh_t W_hh

and, over the whole sequence, the input and the parameters:

    (14) dx_t = dgi_t W_ih
    (15) dW_ih = sum_t dgi_t^T x_t,  dW_hh = sum_t dgh_t^T h_{t-1},
         db_ih = sum_t,n dgi_t,  db_hh = sum_t,n dgh_t

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, section
"Recurrent dropout, zoneout and weight-drop"): with a recurrent mask m (N, H), one
for the whole sequence, and zoneout keep-masks d_t (N, H) (or their expectation p in
eval mode), (2) reads the masked state, while h_{t-1} enters (5) unmasked, and (5)
gives the candidate h~_t:

    (16) gh_t = (m * h_{t-1}) W_hh^T + b_hh
    (17) h_t = d_t * h_{t-1} + (1 - d_t) * h~_t

and backward, dh_t the gradient reaching the zoned state h_t:

    (18) dh~_t = (1 - d_t) * dh_t                   (this enters (8)-(13) as dh_t)
    (19) dh_{t-1}^next = dh~_t * z_t + (dgh_t W_hh) * m + d_t * dh_t,
         dW_hh = sum_t dgh_t^T (m * h_{t-1})

``gru_forward`` runs (2)-(5) for t = 1 .. T with (1) computed for all steps in
one product before the loop; ``gru_backward`` runs (7)-(13) for t = T .. 1,
then (14)-(15) as single products over all steps.

This file is the reference; ``accel/gru.py`` computes the same numbers faster
and is tested against it. Called directly, the functions here always run
this reference; the registry (``Cell.run``) and ``npnn.functional.fast`` choose
the acceleration where it pays (``NPNN_ACCEL=0`` keeps the work here).

Derived in the site's page "Backpropagation through time, derived", section "GRU"
(derivations.html#gru-gru-py; docs/derivations.md in the repository, and installed
with the wheel as share/doc/npnn/derivations.md under ``sys.prefix``), with the same
equation numbers.

When this code runs: at every call of ``npnn.functional.gru_forward`` and
``gru_backward`` (and of the step functions), at any size: a breakpoint here
stops. ``npnn.GRU``, the models and ``npnn.functional.fast`` run ``accel/gru.py``
instead where ``accel.pays`` for the input (sequences long enough to repay its
set-up), and the forward-only steps of ``accel/gru.py`` for a forward that keeps no
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

GATES = ("r", "z", "n")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh


def gru_cell(gi: Array, h_prev: Array, W_hh: Array, b_hh: Optional[Array] = None,
             recurrent_mask: Optional[Array] = None
             ) -> Tuple[Array, Tuple[Array, Array, Array, Array]]:
    """One step, (2)-(5), given gi = x_t W_ih^T + b_ih (N, 3H) (and (16) with the
    recurrent-dropout mask m (N, H)).

    Returns h_t (N, H) and what the backward needs: (r, z, n, gh_n).
    """
    gh = masked_input(h_prev, recurrent_mask) @ W_hh.T  # (2), (16)
    if b_hh is not None:
        gh = gh + b_hh
    gi_r, gi_z, gi_n = split_gates(gi, 3)
    gh_r, gh_z, gh_n = split_gates(gh, 3)
    r = sigmoid(gi_r + gh_r)                            # (3)
    z = sigmoid(gi_z + gh_z)
    n = tanh(gi_n + r * gh_n)                           # (4)
    h = (1 - z) * n + z * h_prev                        # (5)
    return h, (r, z, n, gh_n)


def gru_cell_backward(dh: Array, h_prev: Array, r: Array, z: Array, n: Array, gh_n: Array,
                      W_hh: Array, recurrent_mask: Optional[Array] = None
                      ) -> Tuple[Array, Array, Array]:
    """One step, (8)-(13) (and (19) with the recurrent-dropout mask m (N, H)): dh = dh_t
    (N, H) and the step's saved values -> dgi_t, dgh_t (N, 3H), dh_{t-1}^next (N, H)."""
    xp = get_array_module(dh)
    dn = dh * (1 - z)                                   # (8)
    dz = dh * (h_prev - n)
    da_n = dn * (1 - n * n)                             # (9)
    dr = da_n * gh_n                                    # (10)
    da_r = dr * r * (1 - r)                             # (11)
    da_z = dz * z * (1 - z)
    dgi = xp.concatenate([da_r, da_z, da_n], axis=1)    # (12)
    dgh = xp.concatenate([da_r, da_z, da_n * r], axis=1)
    dh_prev = dh * z + masked_input(dgh @ W_hh, recurrent_mask)   # (13), (19)
    return dgi, dgh, dh_prev


class GRUCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    r: Any              # (T, N, H) reset gate
    z: Any              # (T, N, H) update gate
    n: Any              # (T, N, H) candidate state
    gh_n: Any           # (T, N, H) h_{t-1} W_hn^T + b_hn, needed by (10)
    W_ih: Any           # (3H, D)
    W_hh: Any           # (3H, H)
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) m of (16), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d,) of (17), or None


def gru_forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array,
                b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                zoneout: Any = None) -> Tuple[Array, Array, GRUCache]:
    """Run a GRU over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0: (N, H) initial state, or None for zeros.
        W_ih: (3H, D), W_hh: (3H, H), b_ih, b_hh: (3H,) or both None.
        mask: optional (T, N) valid-step mask (see ``_recurrent``).
        recurrent_mask: optional (N, H) recurrent-dropout mask m of (16).
        zoneout: optional zoneout of h, (17): a ``regularisers.Zoneout`` or a 1-tuple of
            keep-masks (T, N, H), an expectation p or None.

    Returns:
        out (T, N, H), h_n (N, H), cache (for ``gru_backward``).
    """
    xp, T, N, D, H = check_sequence_args(3, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H,), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    gi = input_half(x, W_ih, b_ih)                      # (1) for every step: (T, N, 3H)
    h = [initial_state(xp, h0, N, H, x.dtype)]
    saved = []
    for t in range(T):
        h_t, s = gru_cell(gi[t], h[t], W_hh, b_hh, rm)  # (2)-(5), (16)
        if zone is not None:
            h_t, = zone_forward(at_step(zone, t), (h_t,), (h[t],))          # (17)
        if m is not None:                               # padded steps keep h_{t-1}
            h_t, = keep_padded(xp, m[t], (h_t,), (h[t],))
        h.append(h_t)
        saved.append(s)
    h = xp.stack(h)                                     # (T + 1, N, H)
    r, z, n, gh_n = (xp.stack(a) for a in zip(*saved))  # (T, N, H) each
    cache = GRUCache(x, h, r, z, n, gh_n, W_ih, W_hh, b_ih is not None, m, rm, zone)
    return masked_output(xp, h[1:], m), h[T], cache    # (6)


def gru_backward(dout: Optional[Array], dh_n: Optional[Array],
                 cache: GRUCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """Backpropagation through time for ``gru_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n: (N, H) gradient of the final state, or None.
        cache: from ``gru_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), grads: dict with 'W_ih', 'W_hh' (and
        'b_ih', 'b_hh' when the forward had biases).
    """
    x, h, r, z, n, gh_n, W_ih, W_hh, has_bias, m, rm, zone = cache
    T = x.shape[0]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh,) = output_grads(x, m, h.shape[2], dout, {"dh_n": dh_n})
    dgi, dgh = [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (7)
        dh_c = dh
        if zone is not None:
            (dh_c,), kept = zone_backward(at_step(zone, t), (dh,))                # (18)
        dgi[t], dgh[t], dh_prev = gru_cell_backward(dh_c, h[t], r[t], z[t], n[t], gh_n[t],
                                                    W_hh, rm)          # (8)-(13), (19)
        if zone is not None:
            dh_prev, = add_kept((dh_prev,), kept)      # (19)
        if m is not None:                               # padded steps pass dh straight back
            dgi[t], dgh[t] = valid_only(xp, dgi[t], m[t]), valid_only(xp, dgh[t], m[t])
            dh_prev, = pass_padded(xp, m[t], (dh_prev,), (dh,))
        dh = dh_prev
    dgi, dgh = xp.stack(dgi), xp.stack(dgh)             # (T, N, 3H) each
    dx, grads = input_and_weight_grads(dgi, dgh, x, masked_input(h[:-1], rm), W_ih, has_bias,
                                       m)                                  # (14), (15), (19)
    return dx, dh, grads


class GRUStepCache(NamedTuple):
    """What the backward of one step needs."""
    x: Any              # (N, D)
    h_prev: Any         # (N, H)
    r: Any              # (N, H)
    z: Any              # (N, H)
    n: Any              # (N, H)
    gh_n: Any           # (N, H)
    W_ih: Any
    W_hh: Any
    has_bias: bool


def gru_step_forward(x: Array, h: Optional[Array], W_ih: Array, W_hh: Array,
                     b_ih: Optional[Array] = None,
                     b_hh: Optional[Array] = None) -> Tuple[Array, GRUStepCache]:
    """One GRU step, (1)-(5): x (N, D), h (N, H) or None -> h_next (N, H), cache."""
    xp, N, D, H = check_step_args(3, x, {"h": h}, W_ih, W_hh, b_ih, b_hh)
    h = initial_state(xp, h, N, H, x.dtype)
    h_next, saved = gru_cell(input_half(x, W_ih, b_ih), h, W_hh, b_hh)
    return h_next, GRUStepCache(x, h, *saved, W_ih, W_hh, b_ih is not None)


def gru_step_backward(dh_next: Optional[Array],
                      cache: GRUStepCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """Backward of one step, (8)-(15): dh_next (N, H) or None -> dx (N, D), dh (N, H), grads."""
    x, h, r, z, n, gh_n, W_ih, W_hh, has_bias = cache
    dh, = state_grads(x, h.shape[0], h.shape[1], {"dh_next": dh_next})
    dgi, dgh, dh_prev = gru_cell_backward(dh, h, r, z, n, gh_n, W_hh)          # (8)-(13)
    dx, grads = input_and_weight_grads(dgi, dgh, x, h, W_ih, has_bias)         # (14), (15)
    return dx, dh_prev, grads
