"""The optional numba kernels' shared pieces (``pip install -e ".[fast]"``).

With numba installed, each step's elementwise work of the accelerated RNN,
LSTM and GRU on NumPy runs as one compiled loop over (n, j) instead of a
dozen ufunc passes (the matrix products stay in NumPy's BLAS); the kernels sit
in each cell's accel file next to the ufunc and CUDA versions of the same step
(``_common.Kernels``).

* numba is imported on first use, not with npnn (it takes a second).
* Kernels are compiled on their first call and cached on disk (``cache=True``:
  the first run of a new installation compiles for a few seconds, later runs
  load them in a fraction of one).
* ``error_model="numpy"`` (no Python exceptions for a division by zero), and
  each gate block a row view of its own, so that LLVM vectorises the loops.
* tanh: numba's ``math.tanh`` is a scalar library call (18 ns a value; the
  llvmlite wheel brings no vector math library), so in float32 the kernels use
  a rational approximation, tanh(x) ~ x P(x^2) / Q(x^2) on x clamped to
  [-7.905, 7.905], whose largest error against tanh is 3.9e-7 (measured on a
  grid of 2e7 points in [-12, 12]; 3 units in the last place near 1). In
  float64 the kernels call the exact ``math.tanh``; that is slower than
  NumPy's vectorised tanh, so by default only float32 takes the numba path
  (``NPNN_NUMBA=all`` sends float64 there too, as the tests do, where it must
  equal the reference to rounding).

``NPNN_NUMBA=0`` (or ``NPNN_ACCEL=0``, which turns every acceleration off)
keeps the ufunc path.
"""

import math
import os
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule

_NUMBA: List[Optional[ModuleType]] = []  # [numba module or None], filled on first use
_COMPILED: Dict[Any, Any] = {}           # function -> compiled; "warned" -> bool

#: Coefficients of tanh(x) ~ x P(x^2) / Q(x^2), P of degree 6 and Q of degree 3 in x^2
#: (a minimax rational approximation on [-7.905, 7.905]; beyond that tanh is 1 in float32).
TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
          5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
          -2.76076847742355e-16)
TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
          1.19825839466702e-06)
TANH_CLAMP = 7.90531110763549805


def numba() -> Optional[ModuleType]:
    """The numba module (imported now, the first time), or None when it is missing."""
    if not _NUMBA:
        try:
            import numba as module
            _register(module)
        except ImportError:
            module = None  # type: ignore[assignment]  # the import's name, numba missing
        _NUMBA.append(module)
    return _NUMBA[0]


def use(xp: ArrayModule, dtype: DTypeLike) -> bool:
    """Whether arrays of ``xp`` and ``dtype`` take the numba kernels."""
    setting = os.environ.get("NPNN_NUMBA", "1")
    if xp is not np or setting == "0":
        return False
    if setting != "all" and np.dtype(dtype) != np.float32:
        return False
    return numba() is not None


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled by numba (once per process; cached on disk across processes).

    The disk cache is an optimisation that must never stop a run: where numba has
    nowhere to write it ("no locator available": a read-only installation, HOME and
    NUMBA_CACHE_DIR not writable), or a cached file cannot be loaded or saved (an
    emptied index, a truncated data file), the kernel is compiled without the cache,
    bit for bit the same code, and one warning per process says so."""
    if fn not in _COMPILED:
        import warnings
        options = dict(error_model="numpy", nogil=True)

        def fall_back(error: Exception) -> None:
            if not _COMPILED.get("warned"):
                _COMPILED["warned"] = True
                warnings.warn(f"npnn: numba's disk cache is unusable ({type(error).__name__}: "
                              f"{error}); compiling the kernels without it", RuntimeWarning,
                              stacklevel=4)
        module: Any = numba()                     # found: jit follows use()
        try:
            compiled = module.njit(cache=True, **options)(fn)
        except Exception as e:                    # no locator: nowhere to cache
            fall_back(e)
            compiled = module.njit(cache=False, **options)(fn)
        cache = getattr(compiled, "_cache", None)
        for name in ("load_overload", "save_overload"):
            if cache is not None and hasattr(cache, name):
                def guarded(*args: Any, _call: Callable[..., Any] = getattr(cache, name),
                            **kw: Any) -> Any:
                    try:
                        return _call(*args, **kw)
                    except Exception as e:        # EOFError, UnpicklingError, OSError, ...
                        fall_back(e)
                        cache.disable()           # compile (load) / keep in memory (save)
                        return None
                setattr(cache, name, guarded)
        _COMPILED[fn] = compiled
    return _COMPILED[fn]


def tanh(x: float) -> float:
    """tanh inside the kernels: the rational approximation in float32, math.tanh else."""
    return math.tanh(x)


def const(like: Array, value: float) -> float:
    """``value`` in the dtype of the array ``like`` (kernels keep float32 in float32)."""
    return value


def flush_below(like: Array) -> float:
    """The backward's flush threshold (``_common.flush_subnormals``), tiny / eps of the
    dtype of ``like``: a kernel writes 0 for any |value| below it (NaN stays NaN)."""
    info = np.finfo(like.dtype)
    return float(info.tiny / info.eps)


def _register(module: ModuleType) -> None:
    """Teach numba the two helpers above, by the type of their arguments."""
    from numba import types
    from numba.extending import overload

    # numba's overload requires the typing function (_tanh, _const) and the implementation
    # it returns to have the same signature, annotations included: none on either side
    @overload(tanh)
    def _tanh(x):  # type: ignore[no-untyped-def]  # see above
        if x == types.float32:
            a1, a3, a5, a7, a9, a11, a13 = (np.float32(v) for v in TANH_P)
            b0, b2, b4, b6 = (np.float32(v) for v in TANH_Q)
            lo, hi = np.float32(-TANH_CLAMP), np.float32(TANH_CLAMP)

            def approx(x):  # type: ignore[no-untyped-def]  # see above
                x = hi if x > hi else (lo if x < lo else x)      # NaN stays NaN
                x2 = x * x
                p = x * (a1 + x2 * (a3 + x2 * (a5 + x2 * (a7 + x2 * (a9 + x2 * (a11 + x2 * a13))))))
                return p / (b0 + x2 * (b2 + x2 * (b4 + x2 * b6)))
            return approx
        return lambda x: math.tanh(x)

    @overload(const)
    def _const(like, value):  # type: ignore[no-untyped-def]  # see above
        dtype = like.dtype
        return lambda like, value: dtype(value)

    @overload(flush_below)
    def _flush_below(like):  # type: ignore[no-untyped-def]  # see above
        info = np.finfo(np.dtype(str(like.dtype)))
        below = np.dtype(str(like.dtype)).type(info.tiny / info.eps)
        return lambda like: below
