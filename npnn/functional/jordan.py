"""Jordan network: the previous *output*, not the hidden state, is fed back.

How it differs from the Elman RNN of ``rnn.py``: there h_{t-1} re-enters the
hidden layer; here the network's output y_{t-1} does (Jordan, 1986), through
W_yh, so the state carried between steps is the output itself.
Shapes: D input, H hidden, O output; parameters W_ih (H, D), W_yh (H, O),
b_h (H,), W_hy (O, H), b_y (O,).

Derived in the site's page "Backpropagation through time, derived", section "Jordan
network" (derivations.html#jordan-network-jordan-py; docs/derivations.md in the
repository, and installed with the wheel as share/doc/npnn/derivations.md under
``sys.prefix``), with the same equation numbers.

When this code runs: always. The cell has no acceleration, so
``npnn.functional.jordan_forward``/``_backward``, ``npnn.JordanRNN``, the models and
``npnn.functional.fast`` all run this file (on NumPy and on CuPy).

One step forward (``jordan_cell``), from y_{t-1} (y_0 zeros unless given):

    (1) h_t = tanh(x_t W_ih^T + b_h + y_{t-1} W_yh^T)
    (2) y_t = h_t W_hy^T + b_y
    (3) out_t = y_t

One step backward (``jordan_cell_backward``), dy_t^next from step t + 1 (for
the last step, the final output's gradient):

    (4) dy_t = dout_t + dy_t^next
    (5) dh_t = dy_t W_hy,   da_t = dh_t * (1 - h_t^2)
    (6) dy_{t-1}^next = da_t W_yh

and over the whole sequence:

    (7) dx_t = da_t W_ih,  dW_hy = sum dy_t^T h_t,  db_y = sum dy_t,
        dW_ih = sum da^T x,  dW_yh = sum da^T y_{t-1},  db_h = sum da

Recurrent dropout and zoneout (``regularisers``, docs/derivations.md, section
"Recurrent dropout, zoneout and weight-drop"): the state carried is y, so the
recurrent mask m (N, O) scales y_{t-1} where it enters through W_yh (the Jordan
network's recurrent weight matrix, the one weight-drop masks), and zoneout's
keep-masks d_t (N, O) (or p in eval mode) act on y_t, the step's candidate y~_t:

    (8)  h_t = tanh(x_t W_ih^T + b_h + (m * y_{t-1}) W_yh^T)
    (9)  y_t = d_t * y_{t-1} + (1 - d_t) * y~_t
    (10) dy~_t = (1 - d_t) * dy_t                   (this enters (5) and (7)'s dW_hy, db_y)
    (11) dy_{t-1}^next = (da_t W_yh) * m + d_t * dy_t,   dW_yh = sum da^T (m * y_{t-1})
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .._checks import (check_bias_pair, check_float, check_mask, check_same_backend,
                       check_sequence_input, check_shape, check_states)
from .._typing import Array, ArrayModule
from ..backend import get_array_module
from ._recurrent import (initial_state, input_half, keep_padded, masked_output, output_grads,
                         pass_padded, step_mask, valid_only)
from .activations import tanh
from .regularisers import (add_kept, at_step, check_recurrent_mask, masked_input, zone_backward,
                           zone_forward, zoneout_states)


def jordan_cell(xw: Array, y_prev: Array, W_yh: Array, W_hy: Array,
                b_y: Optional[Array] = None) -> Tuple[Array, Array]:
    """One step, (1)-(2), given xw = x_t W_ih^T + b_h (N, H) -> y_t (N, O), h_t (N, H)."""
    h = tanh(xw + y_prev @ W_yh.T)                      # (1)
    y = h @ W_hy.T                                      # (2)
    if b_y is not None:
        y = y + b_y
    return y, h


def jordan_cell_backward(dy: Array, h: Array, W_yh: Array, W_hy: Array) -> Tuple[Array, Array]:
    """One step, (5)-(6): dy = dy_t (N, O) -> da_t (N, H), dy_{t-1}^next (N, O)."""
    dh = dy @ W_hy                                      # (5)
    da = dh * (1 - h * h)
    dy_prev = da @ W_yh                                 # (6)
    return da, dy_prev


class JordanCache(NamedTuple):
    x: Any              # (T, N, D)
    h: Any              # (T, N, H) hidden states
    y: Any              # (T + 1, N, O) outputs, y[0] = y_0
    W_ih: Any
    W_yh: Any
    W_hy: Any
    has_bias: bool
    mask: Optional[Any]  # (T, N, 1) boolean valid-step mask, or None
    recurrent_mask: Optional[Any] = None    # (N, O) m of (8), or None
    zoneout: Optional[Tuple[Any, ...]] = None   # (d,) of (9), or None


def _check_args(x: Array, y0: Optional[Array], W_ih: Array, W_yh: Array, W_hy: Array,
                b_h: Optional[Array], b_y: Optional[Array],
                mask: Optional[Array]) -> Tuple[ArrayModule, int, int, int, int, int]:
    """-> xp, T, N, D, H, O."""
    check_float("x", x)
    for name, w in (("W_ih", W_ih), ("W_yh", W_yh), ("W_hy", W_hy)):
        check_float(name, w, x.dtype)
        if w.ndim != 2:
            check_shape(name, w, (None, None))
    H, D = W_ih.shape
    O = W_hy.shape[0]
    check_shape("W_hy", W_hy, (O, H), ("O", "H"))
    check_shape("W_yh", W_yh, (H, O), ("H", "O"))
    T, N = check_sequence_input(x, D)
    check_states({"y0": y0}, N, O, x.dtype)
    check_bias_pair(("b_h", "b_y"), (b_h, b_y), ((H,), (O,)), x.dtype)
    check_mask(mask, T, N)
    check_same_backend(x=x, y0=y0, W_ih=W_ih, W_yh=W_yh, W_hy=W_hy, b_h=b_h, b_y=b_y, mask=mask)
    return get_array_module(x), T, N, D, H, O


def jordan_forward(x: Array, y0: Optional[Array], W_ih: Array, W_yh: Array, W_hy: Array,
                   b_h: Optional[Array] = None, b_y: Optional[Array] = None,
                   mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                   zoneout: Any = None) -> Tuple[Array, Array, JordanCache]:
    """Run a Jordan network: x (T, N, D) -> out (T, N, O), y_n (N, O), cache;
    ``recurrent_mask`` (N, O) and ``zoneout`` (a ``regularisers.Zoneout`` or a
    1-tuple) as (8)-(9) say."""
    xp, T, N, D, H, O = _check_args(x, y0, W_ih, W_yh, W_hy, b_h, b_y, mask)
    check_recurrent_mask(recurrent_mask, N, O)
    zone = zoneout_states(zoneout, xp, T, N, (O,), x.dtype)
    rm = recurrent_mask
    m = step_mask(mask)
    xw = input_half(x, W_ih, b_h)                       # (1), input half: (T, N, H)
    y = [initial_state(xp, y0, N, O, x.dtype)]
    h = []
    for t in range(T):
        y_t, h_t = jordan_cell(xw[t], masked_input(y[t], rm), W_yh, W_hy, b_y)  # (1)-(2), (8)
        if zone is not None:
            y_t, = zone_forward(at_step(zone, t), (y_t,), (y[t],))          # (9)
        if m is not None:                               # padded steps keep y_{t-1}
            y_t, = keep_padded(xp, m[t], (y_t,), (y[t],))
        y.append(y_t)
        h.append(h_t)
    y, h = xp.stack(y), xp.stack(h)
    cache = JordanCache(x, h, y, W_ih, W_yh, W_hy, b_h is not None, m, rm, zone)
    return masked_output(xp, y[1:], m), y[T], cache    # (3)


def jordan_backward(dout: Optional[Array], dy_n: Optional[Array],
                    cache: JordanCache) -> Tuple[Array, Array, Dict[str, Array]]:
    """BPTT for ``jordan_forward`` -> dx, dy0, grads (W_ih, W_yh, W_hy, b_h, b_y)."""
    x, h, y, W_ih, W_yh, W_hy, has_bias, m, rm, zone = cache
    T, N, D = x.shape
    H, O = h.shape[2], y.shape[2]
    # the gradients reaching the outputs and final states (None: zeros; padding dropped)
    xp, dout, (dy,) = output_grads(x, m, O, dout, {"dy_n": dy_n})
    da, dy_all = [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        if dout is not None:
            dy = dy + dout[t]                           # (4)
        dy_c = dy
        if zone is not None:
            (dy_c,), kept = zone_backward(at_step(zone, t), (dy,))                # (10)
        da[t], dy_prev = jordan_cell_backward(dy_c, h[t], W_yh, W_hy)  # (5)-(6)
        dy_prev = masked_input(dy_prev, rm)             # (11)
        if zone is not None:
            dy_prev, = add_kept((dy_prev,), kept)      # (11)
        dy_all[t] = dy_c
        if m is not None:                               # padded steps pass dy straight back
            da[t], dy_all[t] = valid_only(xp, da[t], m[t]), valid_only(xp, dy_c, m[t])
            dy_prev, = pass_padded(xp, m[t], (dy_prev,), (dy,))
        dy = dy_prev
    da2 = xp.stack(da).reshape(T * N, H)                # (T*N, H)
    dy2 = xp.stack(dy_all).reshape(T * N, O)            # (T*N, O)
    dx = (da2 @ W_ih).reshape(T, N, D)                  # (7)
    grads = {"W_ih": da2.T @ valid_only(xp, x, m).reshape(T * N, D),
             "W_yh": da2.T @ masked_input(y[:-1], rm).reshape(T * N, O),   # (7), (11)
             "W_hy": dy2.T @ valid_only(xp, h, m).reshape(T * N, H)}
    if has_bias:
        grads["b_h"] = da2.sum(axis=0)
        grads["b_y"] = dy2.sum(axis=0)
    return dx, dy, grads
