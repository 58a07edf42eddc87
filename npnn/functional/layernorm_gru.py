"""Layer-normalised GRU: forward and backpropagation through time, gate order r, z, n
(PyTorch's GRU with Ba, Kiros and Hinton's (2016) layer normalisation).

Shapes: T time steps, N sequences, D input features, H hidden units.
Parameters: PyTorch's four, W_ih (3H, D), W_hh (3H, H), b_ih, b_hh (3H,), the gate
blocks stacked in the order of ``GATES``, and two layer normalisations
(``layernorm.py``, eps = 1e-5 inside the square root), each with a gain and a bias:
gamma_ih, beta_ih (3H,) over the input product and gamma_hh, beta_hh (3H,) over the
recurrent product, each normalised over all 3H gate pre-activations together.
LN(a; gamma, beta) is (L1)-(L4) of ``layernorm.py``; blocks of a (N, 3H) array are
written with a suffix: gi_r = gi[:, :H], gi_z = gi[:, H:2H], gi_n = gi[:, 2H:].

Derived in the site's page "Backpropagation through time, derived", section
"Layer-normalised GRU" (derivations.html#layer-normalised-gru-layernorm-gru-py;
docs/derivations.md in the repository, and installed with the wheel as
share/doc/npnn/derivations.md under ``sys.prefix``), with the same equation numbers.

When this code runs: always. The cell has no acceleration, so
``npnn.functional.layernorm_gru_forward``/``_backward``,
``npnn.Recurrent("layernorm_gru", ...)`` and the models all run this file (on NumPy
and on CuPy); ``npnn.functional.fast`` has no entry for it.

One step forward (``layernorm_gru_cell``), from the previous state h_{t-1}:

    (1) xw_t = x_t W_ih^T,   hw_t = h_{t-1} W_hh^T                       (N, 3H) each
    (2) gi_t = LN(xw_t; gamma_ih, beta_ih) + b_ih                   (N, 3H) = [gi_r gi_z gi_n]
    (3) gh_t = LN(hw_t; gamma_hh, beta_hh) + b_hh                   (N, 3H) = [gh_r gh_z gh_n]
    (4) r_t = sigmoid(gi_r + gh_r),   z_t = sigmoid(gi_z + gh_z)
    (5) n_t = tanh(gi_n + r_t * gh_n)
    (6) h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    (7) out_t = h_t

(2)-(6) are PyTorch's GRU with x_t W_ih^T and h_{t-1} W_hh^T layer-normalised first:
the n gate's recurrent half gh_n is normalised (with the r and z halves, over all 3H)
before the reset gate multiplies it, and b_hn stays inside r * (...), as in PyTorch.
beta_ih and b_ih add to the same gi_t, beta_hh and b_hh to the same gh_t, so each pair
gets the same gradient (15); all four are kept: b_ih and b_hh so that an ``nn.GRU``'s
weights have their usual places, the betas because each layer normalisation has its
gain and bias. With ``bias=False`` (all four biases None) only the gains remain.

One step backward (``layernorm_gru_cell_backward``, docs/derivations.md, section
"Layer-normalised GRU"), with dh_t^next the gradient that step t + 1 passes back to
h_t (for the last step, the gradient of the final state h_T); hw_hat, rstd_hh are the
recurrent normalisation's a_hat and rstd ((L3) of ``layernorm.py``):

    (8)  dh_t = dout_t + dh_t^next
    (9)  dn_t = dh_t * (1 - z_t),   dz_t = dh_t * (h_{t-1} - n_t)
    (10) da_n = dn_t * (1 - n_t^2)                 (the gradient of n's pre-activation)
    (11) dr_t = da_n * gh_n,   da_r = dr_t * r_t (1 - r_t),   da_z = dz_t * z_t (1 - z_t)
    (12) dgi_t = [da_r, da_z, da_n],   dgh_t = [da_r, da_z, da_n * r_t]
    (13) dhw_t = rstd_hh (dgh_t gamma_hh - mean(dgh_t gamma_hh)
                          - hw_hat mean(dgh_t gamma_hh hw_hat))             (L6)-(L7)
    (14) dh_{t-1}^next = dh_t * z_t + dhw_t W_hh

and, over the whole sequence, the input and the parameters (the means over the 3H
features of each row; the sums over all steps and sequences):

    (15) dxw_t = (13) with dgi_t, gamma_ih, xw_hat, rstd_ih,   dx_t = dxw_t W_ih
    (16) dW_ih = sum dxw_t^T x_t,  dW_hh = sum dhw_t^T h_{t-1},
         db_ih = dbeta_ih = sum dgi_t,  db_hh = dbeta_hh = sum dgh_t
    (17) dgamma_ih = sum dgi_t * xw_hat_t,  dgamma_hh = sum dgh_t * hw_hat_t

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, sections
"Layer-normalised GRU" and "Recurrent dropout, zoneout and weight-drop"): with a
recurrent mask m (N, H), one for the whole sequence, and zoneout keep-masks d_t (N, H)
(or their expectation p in eval mode), (1) reads the masked state, while h_{t-1} enters
(6) unmasked, and (6) gives the candidate h~_t:

    (18) hw_t = (m * h_{t-1}) W_hh^T
    (19) h_t = d_t * h_{t-1} + (1 - d_t) * h~_t

The mask sits before LN_hh, where h_{t-1} enters the recurrent product, as in every
cell's (R1): it drops units of h_{t-1} for the whole sequence (Gal and Ghahramani), not
entries of the normalised gate pre-activations, and LN_hh normalises the masked product
(its statistics are those of m * h_{t-1}; LN's scale invariance makes 1 / (1 - p)
immaterial up to eps). Backward, dh_t the gradient reaching the zoned state h_t:

    (20) dh~_t = (1 - d_t) * dh_t                   (this enters (9)-(14) as dh_t)
    (21) dh_{t-1}^next = dh~_t * z_t + (dhw_t W_hh) * m + d_t * dh_t,
         dW_hh = sum dhw_t^T (m * h_{t-1})

``layernorm_gru_forward`` runs (1)-(6) for t = 1 .. T with the input half (2) computed
for all steps before the loop; ``layernorm_gru_backward`` runs (8)-(14) for t = T .. 1,
then (15)-(17) over all steps; (18)-(21) join them where the masks are given. Padded
steps (a mask) are handled by selection as in ``_recurrent``: they keep h, output 0,
pass the gradient of h straight back and add nothing to (15)-(17).

This file is the reference and there is no acceleration for it: it runs as written, on
NumPy and CuPy alike.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .._checks import check_sequence_args
from .._typing import Array
from ..backend import get_array_module
from ._recurrent import (initial_state, keep_padded, masked_output, output_grads, pass_padded,
                         split_gates, step_mask, valid_only)
from .activations import sigmoid, tanh
from .layernorm import (check_norm_params, layer_norm, normalize_backward, normalized_grads,
                        normalized_input_half)
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)

GATES = ("r", "z", "n")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh, the LNs


def layernorm_gru_cell(gi: Array, h_prev: Array, W_hh: Array, gamma_hh: Array,
                       b_hh: Optional[Array] = None, beta_hh: Optional[Array] = None,
                       recurrent_mask: Optional[Array] = None
                       ) -> Tuple[Array, Tuple[Array, ...]]:
    """One step, (1)-(6), given gi = LN(x_t W_ih^T; gamma_ih, beta_ih) + b_ih (N, 3H) (and
    (18) with the recurrent-dropout mask m (N, H)).

    Returns h_t (N, H) and what the backward needs: (r, z, n, gh_n, hw_hat, rstd_hh).
    """
    hw = masked_input(h_prev, recurrent_mask) @ W_hh.T  # (1), (18)
    gh, hw_hat, rstd_hh = layer_norm(hw, gamma_hh, beta_hh)                # (3)
    if b_hh is not None:
        gh = gh + b_hh
    gi_r, gi_z, gi_n = split_gates(gi, 3)
    gh_r, gh_z, gh_n = split_gates(gh, 3)
    r = sigmoid(gi_r + gh_r)                            # (4)
    z = sigmoid(gi_z + gh_z)
    n = tanh(gi_n + r * gh_n)                           # (5)
    h = (1 - z) * n + z * h_prev                        # (6)
    return h, (r, z, n, gh_n, hw_hat, rstd_hh)


def layernorm_gru_cell_backward(dh: Array, h_prev: Array, r: Array, z: Array, n: Array,
                                gh_n: Array, hw_hat: Array, rstd_hh: Array, W_hh: Array,
                                gamma_hh: Array, recurrent_mask: Optional[Array] = None
                                ) -> Tuple[Array, Array, Array, Array]:
    """One step, (9)-(14) (and (21) with the recurrent-dropout mask m (N, H)): dh = dh_t
    (N, H) and the step's saved values -> dgi_t, dgh_t, dhw_t (N, 3H), dh_{t-1}^next (N, H)."""
    xp = get_array_module(dh)
    dn = dh * (1 - z)                                   # (9)
    dz = dh * (h_prev - n)
    da_n = dn * (1 - n * n)                             # (10)
    dr = da_n * gh_n                                    # (11)
    da_r = dr * r * (1 - r)
    da_z = dz * z * (1 - z)
    dgi = xp.concatenate([da_r, da_z, da_n], axis=1)    # (12)
    dgh = xp.concatenate([da_r, da_z, da_n * r], axis=1)
    dhw = normalize_backward(dgh * gamma_hh, hw_hat, rstd_hh)          # (13)
    dh_prev = dh * z + masked_input(dhw @ W_hh, recurrent_mask)      # (14), (21)
    return dgi, dgh, dhw, dh_prev


class LayerNormGRUCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    r: Any              # (T, N, H) reset gate
    z: Any              # (T, N, H) update gate
    n: Any              # (T, N, H) candidate state
    gh_n: Any           # (T, N, H) the n block of (3), needed by (11)
    hw_hat: Any         # (T, N, 3H) h_{t-1} W_hh^T normalised
    rstd_hh: Any        # (T, N, 1)
    xw_hat: Any         # (T, N, 3H) x_t W_ih^T normalised
    rstd_ih: Any        # (T, N, 1)
    params: Dict[str, Any]  # W_ih, W_hh, gamma_ih, gamma_hh and which biases were given
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) m of (18), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d,) of (19), or None


def layernorm_gru_forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array,
                          gamma_ih: Array, gamma_hh: Array, b_ih: Optional[Array] = None,
                          b_hh: Optional[Array] = None, beta_ih: Optional[Array] = None,
                          beta_hh: Optional[Array] = None, mask: Optional[Array] = None,
                          recurrent_mask: Optional[Array] = None, zoneout: Any = None
                          ) -> Tuple[Array, Array, LayerNormGRUCache]:
    """Run a layer-normalised GRU over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0: (N, H) initial state, or None for zeros.
        W_ih: (3H, D), W_hh: (3H, H), b_ih, b_hh: (3H,) or both None.
        gamma_ih, gamma_hh: (3H,) the gains; beta_ih, beta_hh: (3H,) the layer
            normalisations' biases, each or None (zero).
        mask: optional (T, N) valid-step mask (see ``_recurrent``).
        recurrent_mask: optional (N, H) recurrent-dropout mask m of (18).
        zoneout: optional zoneout of h, (19): a ``regularisers.Zoneout`` or a 1-tuple of
            keep-masks (T, N, H), an expectation p or None.

    Returns:
        out (T, N, H), h_n (N, H), cache (for ``layernorm_gru_backward``).
    """
    xp, T, N, D, H = check_sequence_args(3, x, {"h0": h0}, W_ih, W_hh, b_ih, b_hh, mask)
    check_norm_params(x, 3, H, {"gamma_ih": gamma_ih, "gamma_hh": gamma_hh,
                                "beta_ih": beta_ih, "beta_hh": beta_hh})
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H,), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    # (1), (2); padded rows of x read as 0: what padding holds (inf) never meets a mean
    gi, xw_hat, rstd_ih = normalized_input_half(valid_only(xp, x, m), W_ih, gamma_ih, beta_ih,
                                                b_ih)
    h = [initial_state(xp, h0, N, H, x.dtype)]
    saved = []
    for t in range(T):
        h_t, s = layernorm_gru_cell(gi[t], h[t], W_hh, gamma_hh, b_hh, beta_hh,
                                    rm)                 # (1)-(6), (18)
        if zone is not None:
            h_t, = zone_forward(at_step(zone, t), (h_t,), (h[t],))          # (19)
        if m is not None:                               # padded steps keep h_{t-1}
            h_t, = keep_padded(xp, m[t], (h_t,), (h[t],))
        h.append(h_t)
        saved.append(s)
    h = xp.stack(h)                                     # (T + 1, N, H)
    r, z, n, gh_n, hw_hat, rstd_hh = (xp.stack(a) for a in zip(*saved))
    params = {"W_ih": W_ih, "W_hh": W_hh, "gamma_ih": gamma_ih, "gamma_hh": gamma_hh,
              "b": b_ih is not None, "beta_ih": beta_ih is not None,
              "beta_hh": beta_hh is not None}
    cache = LayerNormGRUCache(x, h, r, z, n, gh_n, hw_hat, rstd_hh, xw_hat, rstd_ih, params, m,
                              rm, zone)
    return masked_output(xp, h[1:], m), h[T], cache    # (7)


def layernorm_gru_backward(dout: Optional[Array], dh_n: Optional[Array],
                           cache: LayerNormGRUCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """Backpropagation through time for ``layernorm_gru_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n: (N, H) gradient of the final state, or None.
        cache: from ``layernorm_gru_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), grads: dict with 'W_ih', 'W_hh', 'gamma_ih', 'gamma_hh'
        and each bias the forward was given.
    """
    x, h, r, z, n, gh_n, hw_hat, rstd_hh, xw_hat, rstd_ih, params, m, rm, zone = cache
    T = x.shape[0]
    W_hh, gamma_hh = params["W_hh"], params["gamma_hh"]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh,) = output_grads(x, m, h.shape[2], dout, {"dh_n": dh_n})
    dgi, dgh, dhw = [None] * T, [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (8)
        dh_c = dh
        if zone is not None:
            (dh_c,), kept = zone_backward(at_step(zone, t), (dh,))                # (20)
        dgi[t], dgh[t], dhw[t], dh_prev = layernorm_gru_cell_backward(
            dh_c, h[t], r[t], z[t], n[t], gh_n[t], hw_hat[t], rstd_hh[t], W_hh, gamma_hh,
            rm)                                         # (9)-(14), (21)
        if zone is not None:
            dh_prev, = add_kept((dh_prev,), kept)      # (21)
        if m is not None:                               # padded steps pass dh straight back
            dgi[t], dgh[t], dhw[t] = (valid_only(xp, a, m[t]) for a in (dgi[t], dgh[t], dhw[t]))
            dh_prev, = pass_padded(xp, m[t], (dh_prev,), (dh,))
        dh = dh_prev
    dgi, dgh, dhw = xp.stack(dgi), xp.stack(dgh), xp.stack(dhw)       # (T, N, 3H) each
    dx, grads = normalized_grads(dgi, dgh, dhw, x, masked_input(h[:-1], rm), xw_hat, rstd_ih,
                                 hw_hat, params, m)     # (15)-(17), (21)
    return dx, dh, grads
