"""Array backends: NumPy on the CPU, CuPy on NVIDIA GPUs.

This is the only module that imports CuPy. Every op in npnn is written once
against the NumPy array API and asks this module which array module its data
lives in::

    xp = get_array_module(x, W)

The few things that differ between the two libraries (scatter-add for
embedding gradients, moving arrays between host and device) have a helper
here, so no other module needs to know which backend it runs on.
"""

import os
from typing import Any, ContextManager, Dict, Optional

import numpy as np
from numpy.typing import NDArray

from ._typing import Array, ArrayModule

try:  # CuPy is an optional extra (``pip install -e ".[gpu]"``, or ``cupy-cuda12x``).
    import cupy as _cupy
    import cupyx as _cupyx
except Exception:  # ImportError, or a broken CUDA install raising on import
    _cupy = None
    _cupyx = None

#: The backends' names, the one list of them: configuration, the command lines' choices
#: and the messages read it.
BACKENDS = ("numpy", "cupy")


def cupy_module() -> Optional[ArrayModule]:
    """The ``cupy`` module when it imports, else None (whether or not a GPU is present)."""
    return _cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return bool(_cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


def _require_cupy() -> ArrayModule:
    if _cupy is None:
        raise RuntimeError(
            "the 'cupy' backend was requested but CuPy is not installed; "
            "install it from npnn's folder with `pip install -e \".[gpu]\"` (CUDA 12), or "
            "install `cupy-cuda12x` (or the cupy wheel matching your CUDA version)")
    if not cupy_available():
        raise RuntimeError(
            "the 'cupy' backend was requested but CuPy finds no CUDA GPU on this machine")
    return _cupy


def get_array_module(*arrays: Any) -> ArrayModule:
    """Return ``numpy`` or ``cupy``, whichever holds the given arrays.

    Like ``cupy.get_array_module``: any CuPy array among ``arrays`` selects
    CuPy, anything else (NumPy arrays, scalars, None) selects NumPy.
    """
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def get_backend(name: Any) -> ArrayModule:
    """Return the array module called ``name`` (one of ``BACKENDS``, or an alias).

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when CuPy
    or a GPU is asked for but absent.
    """
    if isinstance(name, str):
        name = name.lower()
    if name in ("numpy", "np", "cpu"):
        return np
    if name in ("cupy", "cp", "gpu", "cuda"):
        return _require_cupy()
    if name is np:
        return np
    if _cupy is not None and name is _cupy:
        return _cupy
    raise ValueError(f"expected backend {' or '.join(map(repr, BACKENDS))}, got {name!r}")


def backend_name(xp: ArrayModule) -> str:
    """The name in ``BACKENDS`` of an array module."""
    return "cupy" if (_cupy is not None and xp is _cupy) else "numpy"


def is_array(a: Any) -> bool:
    """True for a NumPy or CuPy ndarray."""
    return isinstance(a, np.ndarray) or (_cupy is not None and isinstance(a, _cupy.ndarray))


def to_numpy(a: Any) -> NDArray[Any]:
    """Copy an array to the host as a NumPy array (NumPy input returned as is)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def to_backend(a: Any, backend: Any) -> Array:
    """Move ``a`` to ``backend`` (a name of ``BACKENDS`` or an array module).

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


_KERNELS: Dict[str, Any] = {}


def elementwise_kernel(in_params: str, out_params: str, body: str, name: str) -> Any:
    """A compiled ``cupy.ElementwiseKernel`` (built once, then cached by name)."""
    if name not in _KERNELS:
        _KERNELS[name] = _require_cupy().ElementwiseKernel(in_params, out_params, body, name)
    return _KERNELS[name]


def scatter_add(target: Array, indices: Array, values: Array) -> Array:
    """``target[indices] += values`` with repeated indices accumulated.

    Plain fancy-index assignment would keep only one of the repeated updates.
    1-D indices (an embedding's backward): the updates are sorted by index (stably)
    and each run of equal indices summed with ``add.reduceat``, then added once.
    The sums then have one fixed order on every backend, so a GPU run repeats bit for
    bit (CuPy's ``add.at`` and ``cupyx.scatter_add`` add with atomics, in whatever
    order the threads arrive); on a GPU it costs one synchronisation (the number of
    distinct indices). On NumPy it is 3x faster than ``np.add.at`` at a language
    model's shape, and equal to it up to the grouping of the additions.
    Otherwise ``np.add.at``, CuPy's ``add.at`` or ``cupyx.scatter_add``.
    """
    xp = get_array_module(target)
    if indices.ndim == 1 and indices.size and values.shape[:1] == indices.shape:
        order = xp.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        first = xp.empty(sorted_idx.shape, dtype=bool)          # each run's first element
        first[0] = True
        xp.not_equal(sorted_idx[1:], sorted_idx[:-1], out=first[1:])
        starts = xp.flatnonzero(first)
        target[sorted_idx[starts]] += xp.add.reduceat(values[order], starts, axis=0)
        return target
    if xp is np or hasattr(xp.add, "at"):       # NumPy, and CuPy >= 13
        xp.add.at(target, indices, values)
    else:
        _cupyx.scatter_add(target, indices, values)
    return target


# -- BLAS threads -----------------------------------------------------------------

def busy_cores() -> int:
    """How many cores other processes keep busy now: the 1-minute load average,
    rounded (0 where the system does not report one)."""
    try:
        return int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        return 0


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def auto_threads() -> int:
    """BLAS threads for a run starting now: one per core that no other process keeps
    busy, at least one. OpenBLAS's threads spin while they wait for work, so a thread
    that shares its core with another busy process slows every product down: on a
    2-core machine with one core busy, 2 threads ran the language model 2.4-2.8x
    slower than 1 (and 1.2x faster than 1 on an idle machine)."""
    return max(1, usable_cores() - busy_cores())


def blas_threads(n: int) -> ContextManager[Any]:
    """Context manager: NumPy's BLAS runs ``n`` threads inside (threadpoolctl)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=int(n), user_api="blas")
