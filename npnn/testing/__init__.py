"""Testing your own layers with npnn's tools: gradient checks as pytest assertions,
comparisons with NumPy/CuPy arrays and with PyTorch, Hypothesis strategies, and the
strict CuPy stand-in that runs device-path tests without a GPU.

A pytest module for a custom cell (the README's "Testing your own layer")::

    from npnn.testing import assert_close, assert_gradients, assert_module_gradients

    def test_gradients(npnn_backend):            # numpy, cupy (GPU), cupy-strict
        cell = MyCell(3, 4, dtype="float64")
        x = to_backend(rng.standard_normal((2, 3)), npnn_backend)
        assert_module_gradients(cell, (x,), mode="directional")

Names (each loads what it needs on first use; nothing here imports Hypothesis or
PyTorch until asked):

* ``assert_gradients(f, inputs, ...)``, ``assert_module_gradients(module, args, ...)``:
  ``npnn.gradcheck``'s checker, raising ``GradientCheckError`` (an AssertionError)
  with the report table; ``mode="full"`` or ``"directional"``.
* ``assert_close(actual, expected, *, rtol=None, atol=None)``: dtype-aware tolerances.
* ``assert_matches_torch(module, torch_module, args, ...)``: outputs, states and every
  gradient against PyTorch (needs ``pip install torch``).
* ``npnn.testing.strategies``: Hypothesis strategies (needs ``pip install hypothesis``).
* ``npnn.testing.strict_cupy``: the strict CuPy stand-in.
* ``npnn.testing.plugin``: the pytest plugin (``npnn_backend``, ``npnn_device``,
  ``npnn_strict_cupy``, ``npnn_xp`` fixtures), registered by npnn's entry point.
"""

import importlib
from typing import Any, List

_NAMES = {
    "assert_gradients": "._asserts", "assert_module_gradients": "._asserts",
    "assert_close": "._asserts", "default_tolerances": "._asserts",
    "DEFAULT_RTOL": "._asserts", "DEFAULT_ATOL": "._asserts",
    "assert_matches_torch": "._torch",
    "GradientCheckError": "..gradcheck", "GradientCheckWarning": "..gradcheck",
    "GradCheckReport": "..gradcheck",
}
_MODULES = ("strategies", "strict_cupy", "plugin")

__all__ = sorted(_NAMES) + list(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
