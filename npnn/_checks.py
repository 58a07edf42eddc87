"""Input validation shared by every op and layer.

Each helper raises ``ValueError`` or ``TypeError`` with a message that names
the argument, what was expected and what came, e.g.::

    ValueError: expected x of shape (T, N, 8), got (5, 3, 7)
"""

import numpy as np

from .backend import backend_name, cupy_module, get_array_module, is_array, to_backend


def _fmt_shape(expected, symbols):
    parts = []
    for i, size in enumerate(expected):
        if size is None:
            parts.append(symbols[i] if symbols else "*")
        else:
            parts.append(str(size))
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def check_array(name, a):
    """``a`` must be a NumPy or CuPy array."""
    if not is_array(a):
        raise TypeError(f"expected {name} to be a numpy or cupy array, got {type(a).__name__}")
    return a


def check_float(name, a, dtype=None):
    """``a`` must be a floating-point array, of ``dtype`` when one is given."""
    check_array(name, a)
    if a.dtype.kind != "f":
        raise TypeError(f"expected {name} to be a floating-point array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"expected {name} of dtype {np.dtype(dtype)} (the dtype of the "
                        f"other inputs), got {a.dtype}")
    return a


def check_shape(name, a, expected, symbols=None):
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


def check_same_backend(**arrays):
    """All non-None arrays must live on the same backend (all NumPy or all CuPy)."""
    if cupy_module() is None:                  # one backend only
        return
    present = {k: v for k, v in arrays.items() if v is not None}
    modules = {k: get_array_module(v) for k, v in present.items()}
    if len(set(modules.values())) > 1:
        where = ", ".join(f"{k} on {m.__name__}" for k, m in modules.items())
        raise TypeError(f"expected all arrays on one backend, got {where}")


def check_integer(name, a):
    """``a`` must be an integer array (indices, targets, lengths)."""
    check_array(name, a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"expected {name} to be an integer array, got dtype {a.dtype}")
    return a


def check_index_range(name, a, low, high, allowed=None):
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


def check_indices(name, a, low, high, like, allowed=None):
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


def check_choice(name, value, choices):
    """``value`` must be one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"expected {name} to be one of {options}, got {value!r}")
    return value
