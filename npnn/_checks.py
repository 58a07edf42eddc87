"""Every validation rule of npnn, in one place.

Each ``check_*`` helper raises ``ValueError`` or ``TypeError`` with a message that
names the argument, what was expected and what came, e.g.::

    ValueError: expected x of shape (T, N, 8), got (5, 3, 7)

The *settings rules* at the end (``int_at_least``, ``positive_number``, ...) check one
value of a configuration or a command line and raise ``ValueError`` with a message that
does not name it (``expected a positive integer, got -5000``): their caller names the
setting (``npnn.training.config`` as the field, the command line as the flag).

The checks of the recurrent ops' arguments come last (``check_sequence_args``,
``check_step_args`` and their parts): shapes in the letters T, N, D, H, G (and P for
the projected LSTM), as the cells' docstrings write them.
"""

import math
import numbers
from typing import (Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, TypeVar,
                    Union)

import numpy as np
from numpy.typing import DTypeLike

from ._typing import Array, ArrayModule
from .backend import BACKENDS, backend_name, cupy_module, get_array_module, is_array, to_backend


#: An expected shape: a size, or None for any size, per dimension.
Shape = Sequence[Optional[int]]
#: The dimensions' names for a message: a string of letters ("TND") or a tuple ("G*H", "D").
Symbols = Optional[Sequence[str]]
#: A settings rule: returns None or raises ValueError (see the module docstring).
Rule = Callable[[Any], None]
_V = TypeVar("_V")


def _fmt_shape(expected: Shape, symbols: Symbols) -> str:
    parts = []
    for i, size in enumerate(expected):
        if size is None:
            parts.append(symbols[i] if symbols else "*")
        else:
            parts.append(str(size))
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def check_array(name: str, a: Any) -> Array:
    """``a`` must be a NumPy or CuPy array."""
    if not is_array(a):
        raise TypeError(f"expected {name} to be a {' or '.join(BACKENDS)} array, "
                        f"got {type(a).__name__}")
    return a


def check_float(name: str, a: Any, dtype: Optional[DTypeLike] = None) -> Array:
    """``a`` must be a floating-point array, of ``dtype`` when one is given."""
    check_array(name, a)
    if a.dtype.kind != "f":
        raise TypeError(f"expected {name} to be a floating-point array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"expected {name} of dtype {np.dtype(dtype)} (the dtype of the "
                        f"other inputs), got {a.dtype}")
    return a


def check_shape(name: str, a: Array, expected: Shape, symbols: Symbols = None) -> Array:
    """``a.shape`` must match ``expected``, a tuple of ints or None (any size).

    ``symbols`` names the dimensions for the message, e.g. ``"TND"`` gives
    ``expected x of shape (T, N, 8), got (5, 3, 7)``.
    """
    shape = tuple(a.shape)
    if len(shape) == len(expected):
        for e, s in zip(expected, shape):      # a plain loop: this runs on every op call
            if e is not None and e != s:
                break
        else:
            return a
    raise ValueError(f"expected {name} of shape {_fmt_shape(expected, symbols)}, got {shape}")


def check_same_backend(**arrays: Optional[Array]) -> None:
    """All non-None arrays must live on the same backend (all NumPy or all CuPy)."""
    if cupy_module() is None:                  # one backend only
        return
    present = {k: v for k, v in arrays.items() if v is not None}
    modules = {k: get_array_module(v) for k, v in present.items()}
    if len(set(modules.values())) > 1:
        where = ", ".join(f"{k} on {m.__name__}" for k, m in modules.items())
        raise TypeError(f"expected all arrays on one backend, got {where}")


def check_integer(name: str, a: Any) -> Array:
    """``a`` must be an integer array (indices, targets, lengths)."""
    check_array(name, a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"expected {name} to be an integer array, got dtype {a.dtype}")
    return a


def check_index_range(name: str, a: Array, low: int, high: int,
                      allowed: Optional[int] = None) -> Array:
    """Every entry of ``a`` must lie in [low, high) (or equal ``allowed``)."""
    if a.size == 0:
        return a
    xp = get_array_module(a)
    bad = (a < low) | (a >= high)
    if allowed is not None:
        bad &= a != allowed
    if bool(xp.any(bad)):
        value = a[bad].ravel()[0]
        extra = f" or {allowed}" if allowed is not None else ""
        raise ValueError(f"expected {name} in [{low}, {high}){extra}, got {int(value)}")
    return a


def check_indices(name: str, a: Any, low: int, high: int, like: Array,
                  allowed: Optional[int] = None) -> Array:
    """Integer indices (ids, targets) to use next to the float array ``like``: checked to
    lie in [low, high) (or equal ``allowed``) and returned on ``like``'s backend.

    Indices on the host (NumPy arrays) are checked there and copied to the device once;
    indices already on the device are checked there, which costs a device-to-host
    synchronisation (reading the answer). Models keep their ids on the host for that."""
    check_integer(name, a)
    if get_array_module(a) is np:
        check_index_range(name, a, low, high, allowed)
        return to_backend(a, backend_name(get_array_module(like)))
    check_same_backend(**{name: a, "the float inputs": like})
    return check_index_range(name, a, low, high, allowed)


def check_choice(name: str, value: _V, choices: Iterable[Any]) -> _V:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"expected {name} to be one of {options}, got {value!r}")
    return value


# -- the layers' arguments ----------------------------------------------------------
#: The floating-point dtypes of layers and models.
DTYPES = ("float32", "float64")


def check_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """'float32' or 'float64' (or the numpy dtypes) -> numpy dtype."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    check_choice("dtype", name, DTYPES)
    return np.dtype(name)


def check_layer_dtype(name: str, a: Array, dtype: DTypeLike) -> Array:
    """An input must have the layer's dtype (no silent casts), with the way out named."""
    if a.dtype != dtype:
        hint = ""
        if a.dtype.kind == "f":
            hint = f"; convert it with {name}.astype(np.{dtype})"
            if a.dtype.name in DTYPES:
                hint += f" or build the layer with dtype='{a.dtype}'"
        raise TypeError(f"expected {name} of dtype {dtype} (the layer's dtype), got {a.dtype}"
                        + hint)
    return a


def check_positive_int(name: str, value: Any) -> int:
    """A positive int (a Python or NumPy integer, not a bool) -> int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"expected {name} to be a positive integer, got {value!r}")
    return int(value)


def check_positive_number(name: str, value: Any) -> Union[int, float]:
    """A positive, finite int or float."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"expected {name} to be a positive, finite number, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """True or False (a Python or NumPy bool) -> bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"expected {name} to be True or False, got {value!r}")
    return bool(value)


def check_dropout(p: Any, name: str = "dropout") -> float:
    """A dropout probability in [0, 1) -> float (``name``: the argument, e.g. 'zoneout')."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"expected {name} probability in [0, 1), got {p!r}")
    return float(p)


def check_scale(scale: Any) -> Optional[float]:
    """None (1/sqrt(E)) or a positive, finite number -> None or a float."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
            math.isfinite(scale) and float(scale) > 0):
        raise ValueError(f"expected scale to be None (1/sqrt(E)) or a positive, finite number, "
                         f"got {scale!r}")
    return float(scale)


def check_padding_idx(padding_idx: Any, V: int) -> int:
    """An embedding's padding index, an int in [-V, V) -> the index in [0, V)."""
    if not isinstance(padding_idx, int) or not -V <= padding_idx < V:
        raise ValueError(f"expected padding_idx in [-{V}, {V}), got {padding_idx!r}")
    return padding_idx % V


def check_range(name: str, value: Any, low: float = 0.0, high: Optional[float] = None,
                low_open: bool = False) -> float:
    """A number in [low, high) ((low, high) with ``low_open``; no upper bound when ``high``
    is None), not NaN -> float. The optimizers' hyperparameters."""
    v = float(value)
    if (v <= low if low_open else v < low) or (high is not None and v >= high) or math.isnan(v):
        bound = f"({low}" if low_open else f"[{low}"
        bound += f", {high})" if high is not None else ", inf)"
        raise ValueError(f"expected {name} in {bound}, got {value!r}")
    return v


# -- the settings rules (configuration, command line) ----------------------------------
# A rule is a function of one value that returns None or raises ValueError; the caller
# names the setting (npnn.training.config.ConfigError, an argparse error).
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_at_least(low: int) -> Rule:
    """The rule: an int (not a bool) of at least ``low``."""
    def rule(v: Any) -> None:
        if not _is_int(v) or v < low:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise ValueError(f"expected {what}, got {v!r}")
    return rule


def positive_number(v: Any) -> None:
    """The rule: a positive, finite int or float."""
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"expected a positive, finite number, got {v!r}")


def finite_number(v: Any) -> None:
    """The rule: a finite int or float."""
    if not _is_number(v) or not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")


def fraction(v: Any) -> None:
    """The rule: a number in [0, 1)."""
    if not _is_number(v) or not 0 <= v < 1:
        raise ValueError(f"expected a number in [0, 1), got {v!r}")


def probability(v: Any) -> None:
    """The rule: a number in (0, 1] (a top-p)."""
    if not 0 < v <= 1:
        raise ValueError(f"expected a number in (0, 1], got {v!r}")


def one_of(*options: str) -> Rule:
    """The rule: one of ``options`` (strings)."""
    def rule(v: Any) -> None:
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
    return rule


def optional(rule: Rule) -> Rule:
    """The rule: None, or a value that passes ``rule``."""
    def check(v: Any) -> None:
        if v is not None:
            rule(v)
    return check


def non_empty_string(v: Any) -> None:
    """The rule: a non-empty str."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")


def boolean(v: Any) -> None:
    """The rule: True or False (a Python bool)."""
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")


# -- the arguments of the recurrent sequence and step ops (npnn.functional) -----------

def check_sequence_input(x: Array, D: Optional[int]) -> Tuple[int, int]:
    """x must be a float array (T, N, D) with T, N >= 1; returns (T, N)."""
    check_float("x", x)
    check_shape("x", x, (None, None, D), "TND")
    T, N = x.shape[0], x.shape[1]
    if T < 1 or N < 1:
        raise ValueError(f"expected x with at least one step and one sequence, got shape {x.shape}")
    return T, N


def check_states(states: Dict[str, Optional[Array]], N: int, H: int,
                 dtype: DTypeLike) -> None:
    """Each initial state (a dict name -> array or None) must be (N, H) of ``dtype``."""
    for name, s in states.items():
        if s is not None:
            check_float(name, s, dtype)
            check_shape(name, s, (N, H), "NH")


def check_bias_pair(names: Tuple[str, str], biases: Tuple[Optional[Array], Optional[Array]],
                    shapes: Tuple[Shape, Shape], dtype: DTypeLike) -> None:
    """Two biases, both given or both None, each of its shape."""
    if (biases[0] is None) != (biases[1] is None):
        given = ", ".join(f"{n}={'array' if b is not None else None}"
                          for n, b in zip(names, biases))
        raise ValueError(f"expected both {names[0]} and {names[1]} or neither, got {given}")
    for name, b, shape in zip(names, biases, shapes):
        if b is not None:
            check_float(name, b, dtype)
            check_shape(name, b, shape)


def check_mask(mask: Optional[Array], T: int, N: int) -> None:
    if mask is not None:
        check_array("mask", mask)
        check_shape("mask", mask, (T, N), "TN")


def check_weights(gates: int, W_ih: Array, W_hh: Array, b_ih: Optional[Array],
                  b_hh: Optional[Array], dtype: DTypeLike,
                  projected: bool = False) -> Tuple[int, int]:
    """A gated cell's parameters (G = ``gates`` blocks of H rows); returns (D, H).

    W_hh is (G*H, H), or with ``projected`` (G*H, P) for any P >= 1: it then reads
    a projection of size P, and H comes from its rows (the projected LSTM)."""
    check_float("W_hh", W_hh, dtype)
    check_float("W_ih", W_ih, dtype)
    cols = "P" if projected else "H"
    if W_hh.ndim != 2:
        check_shape("W_hh", W_hh, (None, None), ("G*H", cols))
    if projected and (W_hh.shape[0] % gates or W_hh.shape[0] == 0):
        raise ValueError(f"expected W_hh of shape (G*H, P) with G={gates}, "
                         f"got {tuple(W_hh.shape)}")
    H = W_hh.shape[0] // gates if projected else W_hh.shape[1]
    check_shape("W_hh", W_hh, (gates * H, W_hh.shape[1] if projected else H), ("G*H", cols))
    if W_ih.ndim != 2:
        check_shape("W_ih", W_ih, (gates * H, None), ("G*H", "D"))
    D = W_ih.shape[1]
    check_shape("W_ih", W_ih, (gates * H, D))
    check_bias_pair(("b_ih", "b_hh"), (b_ih, b_hh), ((gates * H,), (gates * H,)), dtype)
    return D, H


def check_sequence_args(gates: int, x: Array, states: Dict[str, Optional[Array]], W_ih: Array,
                        W_hh: Array, b_ih: Optional[Array], b_hh: Optional[Array],
                        mask: Optional[Array]) -> Tuple[ArrayModule, int, int, int, int]:
    """Validate a gated cell's sequence arguments; return ``(xp, T, N, D, H)``.

    ``gates`` is G (1 RNN, 4 LSTM, 3 GRU); ``states`` maps names such as
    ``'h0'`` to initial states of shape (N, H) or None.
    """
    check_float("x", x)
    D, H = check_weights(gates, W_ih, W_hh, b_ih, b_hh, x.dtype)
    T, N = check_sequence_input(x, D)
    check_states(states, N, H, x.dtype)
    check_mask(mask, T, N)
    check_same_backend(x=x, W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh, mask=mask, **states)
    return get_array_module(x), T, N, D, H


def check_step_input(x: Array) -> Array:
    """A one-step op's input must be (N, D)."""
    check_float("x", x)
    if x.ndim != 2:
        check_shape("x", x, (None, None), "ND")
    return x


def check_step_args(gates: int, x: Array, states: Dict[str, Optional[Array]], W_ih: Array,
                    W_hh: Array, b_ih: Optional[Array], b_hh: Optional[Array]
                    ) -> Tuple[ArrayModule, int, int, int]:
    """Validate a gated cell's one-step arguments: x (N, D), states (N, H) or None;
    return ``(xp, N, D, H)``."""
    check_step_input(x)
    D, H = check_weights(gates, W_ih, W_hh, b_ih, b_hh, x.dtype)
    check_shape("x", x, (None, D), "ND")
    N = x.shape[0]
    check_states(states, N, H, x.dtype)
    check_same_backend(x=x, W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh, **states)
    return get_array_module(x), N, D, H
