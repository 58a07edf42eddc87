"""Array backends: NumPy on the CPU, CuPy on NVIDIA GPUs.

This is the only module that imports CuPy. Every op in npnn is written once
against the NumPy array API and asks this module which array module its data
lives in::

    xp = get_array_module(x, W)

The few things that differ between the two libraries (scatter-add for
embedding gradients, moving arrays between host and device) have a helper
here, so no other module needs to know which backend it runs on.
"""

import numpy as np

try:  # CuPy is an optional extra (``pip install -e ".[gpu]"``, or ``cupy-cuda12x``).
    import cupy as _cupy
    import cupyx as _cupyx
except Exception:  # ImportError, or a broken CUDA install raising on import
    _cupy = None
    _cupyx = None

BACKENDS = ("numpy", "cupy")


def cupy_module():
    """The ``cupy`` module when it imports, else None (whether or not a GPU is present)."""
    return _cupy


def cupy_available():
    """True when CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _require_cupy():
    if _cupy is None:
        raise RuntimeError(
            "the 'cupy' backend was requested but CuPy is not installed; "
            "install it from npnn's folder with `pip install -e \".[gpu]\"` (CUDA 12), or "
            "install `cupy-cuda12x` (or the cupy wheel matching your CUDA version)")
    if not cupy_available():
        raise RuntimeError(
            "the 'cupy' backend was requested but CuPy finds no CUDA GPU on this machine")
    return _cupy


def get_array_module(*arrays):
    """Return ``numpy`` or ``cupy``, whichever holds the given arrays.

    Like ``cupy.get_array_module``: any CuPy array among ``arrays`` selects
    CuPy, anything else (NumPy arrays, scalars, None) selects NumPy.
    """
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def get_backend(name):
    """Return the array module called ``name`` ('numpy' or 'cupy').

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when CuPy
    or a GPU is asked for but absent.
    """
    if isinstance(name, str):
        name = name.lower()
    if name in ("numpy", "np", "cpu"):
        return np
    if name in ("cupy", "cp", "gpu", "cuda"):
        return _require_cupy()
    if name is np or (_cupy is not None and name is _cupy):
        return name
    raise ValueError(f"expected backend 'numpy' or 'cupy', got {name!r}")


def backend_name(xp):
    """'numpy' or 'cupy' for an array module."""
    return "cupy" if (_cupy is not None and xp is _cupy) else "numpy"


def is_array(a):
    """True for a NumPy or CuPy ndarray."""
    return isinstance(a, np.ndarray) or (_cupy is not None and isinstance(a, _cupy.ndarray))


def to_numpy(a):
    """Copy an array to the host as a NumPy array (NumPy input returned as is)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def to_backend(a, backend):
    """Move ``a`` to ``backend`` ('numpy', 'cupy' or an array module).

    Anything array-like is accepted (lists, NumPy or CuPy arrays, objects with
    a ``.numpy()`` method such as CPU torch tensors). Arrays already on the
    requested backend are returned without a copy.
    """
    xp = get_backend(backend)
    if hasattr(a, "detach") and hasattr(a, "numpy"):  # a torch tensor
        a = a.detach().cpu().numpy()
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


_KERNELS = {}


def elementwise_kernel(in_params, out_params, body, name):
    """A compiled ``cupy.ElementwiseKernel`` (built once, then cached by name)."""
    if name not in _KERNELS:
        _KERNELS[name] = _require_cupy().ElementwiseKernel(in_params, out_params, body, name)
    return _KERNELS[name]


def scatter_add(target, indices, values):
    """``target[indices] += values`` with repeated indices accumulated.

    NumPy's ``np.add.at`` and CuPy's ``cupyx.scatter_add`` do this; plain
    fancy-index assignment would keep only one of the repeated updates.
    """
    xp = get_array_module(target)
    if xp is np or hasattr(xp.add, "at"):       # NumPy, and CuPy >= 13
        xp.add.at(target, indices, values)
    else:
        _cupyx.scatter_add(target, indices, values)
    return target
