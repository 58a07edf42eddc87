"""Layer-normalised LSTM (Ba, Kiros and Hinton 2016): forward and backpropagation through
time, gate order i, f, g, o.

Shapes: T time steps, N sequences, D input features, H hidden units.
Parameters: PyTorch's four, W_ih (4H, D), W_hh (4H, H), b_ih, b_hh (4H,), the gate
blocks stacked in the order of ``GATES``, and three layer normalisations
(``layernorm.py``, eps = 1e-5 inside the square root), each with a gain and a bias:
gamma_ih, beta_ih (4H,) over the input product, gamma_hh, beta_hh (4H,) over the
recurrent product (each normalised over all 4H gate pre-activations together, as
Ba et al. write it) and gamma_c, beta_c (H,) over the cell state. LN(a; gamma, beta)
is (L1)-(L4) of ``layernorm.py``.

Derived in the site's page "Backpropagation through time, derived", section
"Layer-normalised LSTM" (derivations.html#layer-normalised-lstm-layernorm-lstm-py;
docs/derivations.md in the repository, and installed with the wheel as
share/doc/npnn/derivations.md under ``sys.prefix``), with the same equation numbers.

When this code runs: always. The cell has no acceleration, so
``npnn.functional.layernorm_lstm_forward``/``_backward``,
``npnn.Recurrent("layernorm_lstm", ...)`` and the models all run this file (on NumPy
and on CuPy); ``npnn.functional.fast`` has no entry for it.

One step forward (``layernorm_lstm_cell``), from the previous states h_{t-1}, c_{t-1}:

    (1) xw_t = x_t W_ih^T,   hw_t = h_{t-1} W_hh^T                       (N, 4H) each
    (2) z_t = LN(xw_t; gamma_ih, beta_ih) + LN(hw_t; gamma_hh, beta_hh) + b_ih + b_hh
                                                                   (N, 4H) = [z_i z_f z_g z_o]
    (3) i_t = sigmoid(z_i),  f_t = sigmoid(z_f),  g_t = tanh(z_g),  o_t = sigmoid(z_o)
    (4) c_t = f_t * c_{t-1} + i_t * g_t                                  carried as it is
    (5) l_t = LN(c_t; gamma_c, beta_c),   h_t = o_t * tanh(l_t)
    (6) out_t = h_t

This is Ba et al.'s variant: the state carried to step t + 1 is the un-normalised c_t;
only h_t sees LN(c_t). PyTorch's ``custom_lstms`` benchmark (``LayerNormLSTMCell``) and
TensorFlow Addons' ``LayerNormLSTMCell`` carry LN(c_t) itself as the next cell state
(docs/derivations.md, section "Layer-normalised LSTM", says what that changes).

b_ih, b_hh, beta_ih and beta_hh all add to the same z_t, so only their sum matters and
each gets the same gradient (16). The four are kept: b_ih and b_hh so that an
``nn.LSTM``'s weights (and ``forget_bias``) have their usual places, the betas because
each layer normalisation has its gain and bias, as in Ba et al. and ``nn.LayerNorm``.
Initialised to zero (the betas) and PyTorch's U(-1/sqrt(H), 1/sqrt(H)) (b_ih, b_hh), the
sum starts where an ``nn.LSTM``'s does. With ``bias=False`` (all five biases None) the
layer normalisations keep only their gains.

One step backward (``layernorm_lstm_cell_backward``, docs/derivations.md, section
"Layer-normalised LSTM"). dh_t is the gradient reaching h_t (from out_t and from step
t + 1) and dc_t^next the one reaching c_t from step t + 1; the last step starts from the
gradients of the final states h_T, c_T. c_hat, rstd_c, hw_hat, rstd_hh are the
normalisations' a_hat and rstd ((L3) of ``layernorm.py``):

    (7)  dh_t = dout_t + dh_t^next
    (8)  do_t = dh_t * tanh(l_t),   dl_t = dh_t * o_t * (1 - tanh(l_t)^2)
    (9)  dc_t = dc_t^next + rstd_c (dl_t gamma_c - mean(dl_t gamma_c)
                                    - c_hat mean(dl_t gamma_c c_hat))  (L6)-(L7): c_t reaches h_t
    (10) di_t = dc_t * g_t,  df_t = dc_t * c_{t-1},  dg_t = dc_t * i_t
    (11) dc_{t-1}^next = dc_t * f_t
    (12) dz_t = [di_t * i_t (1 - i_t),  df_t * f_t (1 - f_t),  dg_t * (1 - g_t^2),  do_t * o_t (1 - o_t)]
    (13) dhw_t = rstd_hh (dz_t gamma_hh - mean(dz_t gamma_hh)
                          - hw_hat mean(dz_t gamma_hh hw_hat))              (L6)-(L7)
    (14) dh_{t-1}^next = dhw_t W_hh

and, over the whole sequence, the input and the parameters (the means over the 4H
features of each row; the sums over all steps and sequences):

    (15) dxw_t = (13) with gamma_ih, xw_hat, rstd_ih,   dx_t = dxw_t W_ih
    (16) dW_ih = sum dxw_t^T x_t,  dW_hh = sum dhw_t^T h_{t-1},
         db_ih = db_hh = dbeta_ih = dbeta_hh = sum dz_t
    (17) dgamma_ih = sum dz_t * xw_hat_t,  dgamma_hh = sum dz_t * hw_hat_t,
         dgamma_c = sum dl_t * c_hat_t,  dbeta_c = sum dl_t

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, sections
"Layer-normalised LSTM" and "Recurrent dropout, zoneout and weight-drop"): with a
recurrent mask m (N, H), one for the whole sequence, and zoneout keep-masks d^h_t, d^c_t
(N, H) (or their expectations p_h, p_c in eval mode), (1) reads the masked state and
the step's results (4)-(5) become candidates h~_t, c~_t:

    (18) hw_t = (m * h_{t-1}) W_hh^T
    (19) h_t = d^h_t * h_{t-1} + (1 - d^h_t) * h~_t,   c_t = d^c_t * c_{t-1} + (1 - d^c_t) * c~_t

The mask sits before LN_hh, where h_{t-1} enters the recurrent product, as in every
cell's (R1): it drops units of h_{t-1} for the whole sequence (Gal and Ghahramani), not
entries of the normalised gate pre-activations, and LN_hh normalises the masked product
(its statistics are those of m * h_{t-1}; LN's scale invariance makes 1 / (1 - p)
immaterial up to eps). Zoneout mixes the carried states: c the un-normalised one of
(4); h~_t = o_t * tanh(LN(c~_t)) is the candidate's. Backward, dh_t and dc_t^next the
gradients reaching the zoned states h_t, c_t:

    (20) dh~_t = (1 - d^h_t) * dh_t,  dc~_t^next = (1 - d^c_t) * dc_t^next
         (these enter (8)-(9) in place of dh_t and dc_t^next)
    (21) dh_{t-1}^next = (dhw_t W_hh) * m + d^h_t * dh_t,
         dc_{t-1}^next = dc_t * f_t + d^c_t * dc_t^next          (dc_t of (9))
    (22) dW_hh = sum dhw_t^T (m * h_{t-1})

``layernorm_lstm_forward`` runs (1)-(5) for t = 1 .. T, with the input half of (2),
LN(x_t W_ih^T) + b_ih, computed for all steps before the loop;
``layernorm_lstm_backward`` runs (7)-(14) for t = T .. 1, then (15)-(17) over all steps;
(18)-(22) join them where the masks are given.
Padded steps (a mask) are handled by selection as in ``_recurrent``: they keep (h, c),
output 0, pass the gradients of (h, c) straight back and add nothing to (15)-(17).

This file is the reference and there is no acceleration for it: it runs as written, on
NumPy and CuPy alike.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .._checks import check_sequence_args
from .._typing import Array
from ._recurrent import (initial_state, keep_padded, masked_output, output_grads, pass_padded,
                         split_gates, step_mask, valid_only)
from .activations import sigmoid, tanh
from ..backend import get_array_module
from .layernorm import (check_norm_params, layer_norm, normalize_backward, normalized_grads,
                        normalized_input_half)
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)

GATES = ("i", "f", "g", "o")  # order of the gate blocks in W_ih, W_hh, b_ih, b_hh, the LNs


def layernorm_lstm_cell(gi: Array, h_prev: Array, c_prev: Array, W_hh: Array, gamma_hh: Array,
                        gamma_c: Array, b_hh: Optional[Array] = None,
                        beta_hh: Optional[Array] = None, beta_c: Optional[Array] = None
                        ) -> Tuple[Array, Array, Tuple[Array, ...]]:
    """One step, (1)-(5), given its input half gi = LN(x_t W_ih^T; gamma_ih, beta_ih) + b_ih
    (N, 4H) (h_prev is m * h_{t-1} under recurrent dropout, (18), for the product is all
    that reads it). Returns h_t, c_t (N, H) and what the backward needs:
    (i, f, g, o, tanh(l_t), c_hat, rstd_c, hw_hat, rstd_hh)."""
    gh, hw_hat, rstd_hh = layer_norm(h_prev @ W_hh.T, gamma_hh, beta_hh)   # (1), (2)
    z = gi + gh if b_hh is None else gi + gh + b_hh                        # (2)
    z_i, z_f, z_g, z_o = split_gates(z, 4)
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)       # (3)
    c = f * c_prev + i * g                              # (4)
    l, c_hat, rstd_c = layer_norm(c, gamma_c, beta_c)   # (5)
    tanh_l = tanh(l)
    h = o * tanh_l
    return h, c, (i, f, g, o, tanh_l, c_hat, rstd_c, hw_hat, rstd_hh)


def layernorm_lstm_cell_backward(dh: Array, dc_next: Array, c_prev: Array, i: Array, f: Array,
                                 g: Array, o: Array, tanh_l: Array, c_hat: Array, rstd_c: Array,
                                 hw_hat: Array, rstd_hh: Array, W_hh: Array, gamma_hh: Array,
                                 gamma_c: Array) -> Tuple[Array, Array, Array, Array, Array]:
    """One step, (8)-(14): dh = dh_t, dc_next = dc_t^next (N, H) and the step's saved values
    -> dz_t (N, 4H), dhw_t (N, 4H), dl_t (N, H), dh_{t-1}^next, dc_{t-1}^next (N, H)."""
    xp = get_array_module(dh)
    do = dh * tanh_l                                    # (8)
    dl = dh * o * (1 - tanh_l * tanh_l)
    dc = dc_next + normalize_backward(dl * gamma_c, c_hat, rstd_c)    # (9)
    di, df, dg = dc * g, dc * c_prev, dc * i            # (10)
    dc_prev = dc * f                                    # (11)
    dz = xp.concatenate([di * i * (1 - i), df * f * (1 - f),          # (12)
                         dg * (1 - g * g), do * o * (1 - o)], axis=1)
    dhw = normalize_backward(dz * gamma_hh, hw_hat, rstd_hh)          # (13)
    dh_prev = dhw @ W_hh                                # (14)
    return dz, dhw, dl, dh_prev, dc_prev


class LayerNormLSTMCache(NamedTuple):
    """What the backward pass needs, all stacked over time."""
    x: Any              # (T, N, D) input
    h: Any              # (T + 1, N, H) h[0] = h_0, h[t] = h_t
    c: Any              # (T + 1, N, H) c[0] = c_0, c[t] = c_t
    i: Any              # (T, N, H) each: the gates
    f: Any
    g: Any
    o: Any
    tanh_l: Any         # (T, N, H) tanh(LN(c_t))
    c_hat: Any          # (T, N, H) c_t normalised, (L3)
    rstd_c: Any         # (T, N, 1)
    hw_hat: Any         # (T, N, 4H) h_{t-1} W_hh^T normalised
    rstd_hh: Any        # (T, N, 1)
    xw_hat: Any         # (T, N, 4H) x_t W_ih^T normalised
    rstd_ih: Any        # (T, N, 1)
    params: Dict[str, Any]  # W_ih, W_hh, gamma_ih, gamma_hh, gamma_c and which biases were given
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, H) m of (18), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d^h, d^c) of (19), or None


def layernorm_lstm_forward(x: Array, h0: Optional[Array], c0: Optional[Array], W_ih: Array,
                           W_hh: Array, gamma_ih: Array, gamma_hh: Array, gamma_c: Array,
                           b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                           beta_ih: Optional[Array] = None, beta_hh: Optional[Array] = None,
                           beta_c: Optional[Array] = None, mask: Optional[Array] = None,
                           recurrent_mask: Optional[Array] = None, zoneout: Any = None
                           ) -> Tuple[Array, Array, Array, LayerNormLSTMCache]:
    """Run a layer-normalised LSTM over a whole sequence.

    Args:
        x: (T, N, D) input.
        h0, c0: (N, H) initial hidden and cell states, or None for zeros.
        W_ih: (4H, D), W_hh: (4H, H), b_ih, b_hh: (4H,) or both None.
        gamma_ih, gamma_hh: (4H,), gamma_c: (H,) the gains; beta_ih, beta_hh: (4H,),
            beta_c: (H,) the layer normalisations' biases, each or None (zero).
        mask: optional (T, N) valid-step mask (see ``_recurrent``).
        recurrent_mask: optional (N, H) recurrent-dropout mask m of (18).
        zoneout: optional zoneout of (h, c), (19): a ``regularisers.Zoneout`` or a pair
            of per-state keep-masks (T, N, H), expectations p or None.

    Returns:
        out (T, N, H), h_n (N, H), c_n (N, H), cache (for ``layernorm_lstm_backward``).
    """
    xp, T, N, D, H = check_sequence_args(4, x, {"h0": h0, "c0": c0}, W_ih, W_hh, b_ih, b_hh,
                                         mask)
    check_norm_params(x, 4, H, {"gamma_ih": gamma_ih, "gamma_hh": gamma_hh, "gamma_c": gamma_c,
                                "beta_ih": beta_ih, "beta_hh": beta_hh, "beta_c": beta_c})
    check_recurrent_mask(recurrent_mask, N, H)
    zone = zoneout_states(zoneout, xp, T, N, (H, H), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    # (1), (2); padded rows of x read as 0: what padding holds (inf) never meets a mean
    gi, xw_hat, rstd_ih = normalized_input_half(valid_only(xp, x, m), W_ih, gamma_ih, beta_ih,
                                                b_ih)
    h = [initial_state(xp, h0, N, H, x.dtype)]
    c = [initial_state(xp, c0, N, H, x.dtype)]
    saved = []
    for t in range(T):
        h_t, c_t, s = layernorm_lstm_cell(gi[t], masked_input(h[t], rm), c[t], W_hh, gamma_hh,
                                          gamma_c, b_hh, beta_hh, beta_c)  # (1)-(5), (18)
        if zone is not None:
            h_t, c_t = zone_forward(at_step(zone, t), (h_t, c_t), (h[t], c[t]))   # (19)
        if m is not None:                               # padded steps keep (h, c)_{t-1}
            h_t, c_t = keep_padded(xp, m[t], (h_t, c_t), (h[t], c[t]))
        h.append(h_t)
        c.append(c_t)
        saved.append(s)
    h, c = xp.stack(h), xp.stack(c)                     # (T + 1, N, H)
    i, f, g, o, tanh_l, c_hat, rstd_c, hw_hat, rstd_hh = (xp.stack(a) for a in zip(*saved))
    params = {"W_ih": W_ih, "W_hh": W_hh, "gamma_ih": gamma_ih, "gamma_hh": gamma_hh,
              "gamma_c": gamma_c, "b": b_ih is not None, "beta_ih": beta_ih is not None,
              "beta_hh": beta_hh is not None, "beta_c": beta_c is not None}
    cache = LayerNormLSTMCache(x, h, c, i, f, g, o, tanh_l, c_hat, rstd_c, hw_hat, rstd_hh,
                               xw_hat, rstd_ih, params, m, rm, zone)
    return masked_output(xp, h[1:], m), h[T], c[T], cache             # (6)


def layernorm_lstm_backward(dout: Optional[Array], dh_n: Optional[Array], dc_n: Optional[Array],
                            cache: LayerNormLSTMCache
                            ) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """Backpropagation through time for ``layernorm_lstm_forward``.

    Args:
        dout: (T, N, H) gradient of every step's output, or None.
        dh_n, dc_n: (N, H) gradients of the final states, or None.
        cache: from ``layernorm_lstm_forward``.

    Returns:
        dx (T, N, D), dh0 (N, H), dc0 (N, H), grads: dict with 'W_ih', 'W_hh',
        'gamma_ih', 'gamma_hh', 'gamma_c' and each bias the forward was given.
    """
    (x, h, c, i, f, g, o, tanh_l, c_hat, rstd_c, hw_hat, rstd_hh, xw_hat, rstd_ih,
     params, m, rm, zone) = cache
    T, H = x.shape[0], h.shape[2]
    W_hh, gamma_hh, gamma_c = params["W_hh"], params["gamma_hh"], params["gamma_c"]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dh, dc) = output_grads(x, m, H, dout, {"dh_n": dh_n, "dc_n": dc_n})
    dz, dhw, dl = [None] * T, [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dh = dh + dout[t]                           # (7)
        dh_c, dc_c = dh, dc
        if zone is not None:
            (dh_c, dc_c), kept = zone_backward(at_step(zone, t), (dh, dc))       # (20)
        dz[t], dhw[t], dl[t], dh_prev, dc_prev = layernorm_lstm_cell_backward(
            dh_c, dc_c, c[t], i[t], f[t], g[t], o[t], tanh_l[t], c_hat[t], rstd_c[t], hw_hat[t],
            rstd_hh[t], W_hh, gamma_hh, gamma_c)        # (8)-(14)
        dh_prev = masked_input(dh_prev, rm)             # (21)
        if zone is not None:
            dh_prev, dc_prev = add_kept((dh_prev, dc_prev), kept)             # (21)
        if m is not None:                               # padded steps pass (dh, dc) straight back
            dz[t], dhw[t], dl[t] = (valid_only(xp, a, m[t]) for a in (dz[t], dhw[t], dl[t]))
            dh_prev, dc_prev = pass_padded(xp, m[t], (dh_prev, dc_prev), (dh, dc))
        dh, dc = dh_prev, dc_prev
    dz, dhw, dl = xp.stack(dz), xp.stack(dhw), xp.stack(dl)   # (T, N, 4H), (T, N, 4H), (T, N, H)
    # (15)-(17) but the cell state's, (22): dz is the gradient of both halves of (2)
    dx, grads = normalized_grads(dz, dz, dhw, x, masked_input(h[:-1], rm), xw_hat, rstd_ih,
                                 hw_hat, params, m)
    grads["gamma_c"] = valid_only(xp, dl * c_hat, m).reshape(-1, H).sum(axis=0)   # (17)
    if params["beta_c"]:
        grads["beta_c"] = dl.reshape(-1, H).sum(axis=0)
    return dx, dh, dc, grads
