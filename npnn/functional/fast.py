"""The recurrent sequence ops, accelerated where it pays: the public face of the
accelerations (``functional/accel``).

Each function has the arguments and results of the reference op of the same name
in ``npnn.functional`` (``fast.lstm_forward`` is ``functional.lstm_forward``'s
twin) and goes through the cell registry (``registry.Cell.run``), the one place
that chooses: the acceleration where ``accel.pays`` for the input (long NumPy
sequences, any CuPy sequence of two steps or more; ``NPNN_ACCEL=0`` or
``accel.use_reference()`` never, ``accel.use_acceleration()`` always), else the
reference. Each backward takes the cache of its forward, whichever ran, and runs
the matching backward. A cell without an acceleration (peephole LSTM, CTRNN,
Jordan, the projected LSTM) is its reference here. Layers and models use the registry directly.

Shapes: T time steps, N sequences, D input features, H hidden units.
"""

from typing import Any, Dict, Optional, Tuple

from .._typing import Array
from .ctrnn import ctrnn_backward, ctrnn_forward
from .jordan import jordan_backward, jordan_forward
from .lstmp import lstmp_backward, lstmp_forward
from .peephole import peephole_lstm_backward, peephole_lstm_forward
from .registry import CELLS

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward", "peephole_lstm_forward", "peephole_lstm_backward",
           "ctrnn_forward", "ctrnn_backward", "jordan_forward", "jordan_backward",
           "lstmp_forward", "lstmp_backward"]


def _weights(W_ih: Array, W_hh: Array, b_ih: Optional[Array],
             b_hh: Optional[Array]) -> Dict[str, Optional[Array]]:
    return {"W_ih": W_ih, "W_hh": W_hh, "b_ih": b_ih, "b_hh": b_hh}


def rnn_forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array,
                b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                nonlinearity: str = "tanh", mask: Optional[Array] = None,
                recurrent_mask: Optional[Array] = None,
                zoneout: Any = None) -> Tuple[Array, Array, Any]:
    """``functional.rnn_forward``: x (T, N, D), h0 (N, H) or None -> out (T, N, H),
    h_n (N, H), cache (for ``rnn_backward`` below)."""
    out, (h_n,), cache = CELLS["rnn"].run(x, (h0,), _weights(W_ih, W_hh, b_ih, b_hh), mask,
                                          nonlinearity=nonlinearity,
                                          recurrent_mask=recurrent_mask, zoneout=zoneout)
    return out, h_n, cache


def rnn_backward(dout: Optional[Array], dh_n: Optional[Array],
                 cache: Any) -> Tuple[Array, Array, Dict[str, Array]]:
    """``functional.rnn_backward``: dout (T, N, H) or None, dh_n (N, H) or None ->
    dx (T, N, D), dh0 (N, H), grads."""
    dx, (dh0,), grads = CELLS["rnn"].run_backward(dout, (dh_n,), cache)
    return dx, dh0, grads


def lstm_forward(x: Array, h0: Optional[Array], c0: Optional[Array], W_ih: Array, W_hh: Array,
                 b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                 mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                 zoneout: Any = None) -> Tuple[Array, Array, Array, Any]:
    """``functional.lstm_forward``: x (T, N, D), h0, c0 (N, H) or None -> out (T, N, H),
    h_n, c_n (N, H), cache (for ``lstm_backward`` below)."""
    out, (h_n, c_n), cache = CELLS["lstm"].run(x, (h0, c0), _weights(W_ih, W_hh, b_ih, b_hh),
                                               mask, recurrent_mask=recurrent_mask,
                                               zoneout=zoneout)
    return out, h_n, c_n, cache


def lstm_backward(dout: Optional[Array], dh_n: Optional[Array], dc_n: Optional[Array],
                  cache: Any) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """``functional.lstm_backward``: dout (T, N, H) or None, dh_n, dc_n (N, H) or None ->
    dx (T, N, D), dh0, dc0 (N, H), grads."""
    dx, (dh0, dc0), grads = CELLS["lstm"].run_backward(dout, (dh_n, dc_n), cache)
    return dx, dh0, dc0, grads


def gru_forward(x: Array, h0: Optional[Array], W_ih: Array, W_hh: Array,
                b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
                mask: Optional[Array] = None, recurrent_mask: Optional[Array] = None,
                zoneout: Any = None) -> Tuple[Array, Array, Any]:
    """``functional.gru_forward``: x (T, N, D), h0 (N, H) or None -> out (T, N, H),
    h_n (N, H), cache (for ``gru_backward`` below)."""
    out, (h_n,), cache = CELLS["gru"].run(x, (h0,), _weights(W_ih, W_hh, b_ih, b_hh), mask,
                                          recurrent_mask=recurrent_mask, zoneout=zoneout)
    return out, h_n, cache


def gru_backward(dout: Optional[Array], dh_n: Optional[Array],
                 cache: Any) -> Tuple[Array, Array, Dict[str, Array]]:
    """``functional.gru_backward``: dout (T, N, H) or None, dh_n (N, H) or None ->
    dx (T, N, D), dh0 (N, H), grads."""
    dx, (dh0,), grads = CELLS["gru"].run_backward(dout, (dh_n,), cache)
    return dx, dh0, grads
