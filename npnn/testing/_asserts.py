"""The assertions: ``npnn.gradcheck``'s checker with a test suite's defaults, and
``assert_close``."""

import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

from .._typing import CheckedFunction
from ..backend import to_numpy
from ..gradcheck.core import (GradCheckReport, GradientCheckError, GradientCheckWarning,
                              check_gradients)
from ..gradcheck.modules import CheckedModule, check_module

#: Gradient checks in float64: the relative and absolute tolerance. A correct gradient
#: of an op in float64 with eps=1e-6 is typically within 1e-9 of the central difference
#: (relative to the tensor's largest entry); a gradient 1.001 times too large is 1e-3 off.
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-10

#: (rtol, atol) by dtype, torch.testing's choice: tight in float64, loose in float32.
_TOLERANCES = {"float16": (1e-3, 1e-5), "float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7)}


def _warn_not_exercised(report: GradCheckReport) -> None:
    if report.not_exercised:
        warnings.warn(
            f"not exercised: {', '.join(report.not_exercised)}: the analytic and the "
            f"numeric gradient are both identically zero, so the check says nothing about "
            f"them (e.g. a recurrent weight when the initial state is zero and the sequence "
            f"has one step); give inputs that reach them", GradientCheckWarning, stacklevel=3)


def assert_gradients(f: CheckedFunction, inputs: Dict[str, Any], *,
                     wrt: Optional[Sequence[str]] = None, eps: float = 1e-6,
                     rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, mode: str = "full",
                     directions: int = 2, seed: int = 0, op: str = "",
                     gates: Optional[Mapping[str, Sequence[str]]] = None) -> GradCheckReport:
    """Assert that ``f``'s analytic gradients match central differences in float64.

    ``f(**inputs) -> (outputs, vjp)`` as for ``npnn.gradcheck.check_gradients``: the
    scalar is L = sum_k sum(out_k * dout_k) with random ``dout`` (``seed``), and each
    checked tensor passes when

        max |analytic - numeric| <= atol + rtol * max(max |analytic|, max |numeric|).

    Modes, and the errors each catches:

    * ``mode="full"`` perturbs every element (2 forward passes per element) and
      compares the whole gradient: it catches any wrong entry larger than the
      tolerance (a gradient scaled by 1.001, an entry zeroed, two entries swapped, a
      transposed block) and names the worst one.
    * ``mode="directional"`` compares <gradient, u> with (L(x + eps u) - L(x - eps u))
      / (2 eps) for ``directions`` random unit directions u per tensor (2 forward
      passes per direction, whatever the tensor's size): it catches the same errors
      with probability 1 over the draw of u (a wrong gradient g' passes only if
      <g' - g, u> is within the tolerance for every u drawn, i.e. u almost orthogonal
      to g' - g), but cannot say which entry is wrong, only which tensor. Use it for
      large tensors and in fast test suites; use ``"full"`` to locate a bug.

    A tensor whose analytic and numeric gradients are both identically zero is
    reported as 'not exercised' (with a ``GradientCheckWarning``), not as a pass;
    outputs below float64 get a warning that precision is the likely cause of a failure.

    Args:
        f, inputs, wrt, eps, seed, op, gates: as for ``check_gradients``.
        rtol, atol: the tolerances above (defaults 1e-6 and 1e-10: float64).
        mode: ``"full"`` or ``"directional"``; directions: per tensor, directional only.

    Returns:
        The ``GradCheckReport`` (passing).

    Raises:
        GradientCheckError: an AssertionError whose message is the report's table.
    """
    report = check_gradients(f, inputs, wrt=wrt, eps=eps, tol=rtol, atol=atol, seed=seed,
                             op=op, mode=mode, directions=directions, gates=gates)
    _warn_not_exercised(report)
    if not report.passed:
        raise GradientCheckError(report)
    return report


def assert_module_gradients(module: CheckedModule, args: Sequence[Any],
                            kwargs: Optional[Mapping[str, Any]] = None, *, params: bool = True,
                            mode: str = "full", eps: float = 1e-6, rtol: float = DEFAULT_RTOL,
                            atol: float = DEFAULT_ATOL, directions: int = 2, seed: int = 0,
                            arg_names: Optional[Sequence[str]] = None) -> GradCheckReport:
    """Assert that a module's ``backward`` matches central differences, for the
    floating-point arguments of ``module(*args, **kwargs)`` (also inside tuples, e.g.
    ``(h0, c0)``) and, with ``params``, every parameter's accumulated gradient.

    The module must be float64 and follow npnn's layer protocol
    (``npnn.gradcheck.check_module``). A failing entry of a stacked-gate parameter is
    named by its gate block and unit ('z gate, unit 1'). Modes, tolerances and
    warnings as for ``assert_gradients``.

    Raises:
        GradientCheckError: an AssertionError whose message is the report's table.
    """
    report = check_module(module, args, kwargs, arg_names=arg_names, params=params, eps=eps,
                          tol=rtol, atol=atol, seed=seed, mode=mode, directions=directions)
    _warn_not_exercised(report)
    if not report.passed:
        raise GradientCheckError(report)
    return report


def default_tolerances(*dtypes: DTypeLike) -> Tuple[float, float]:
    """(rtol, atol) for comparing arrays of ``dtypes``: those of the least precise."""
    found = [_TOLERANCES.get(np.dtype(d).name) for d in dtypes]
    known = [t for t in found if t is not None] or [(0.0, 0.0)]     # integers: exact
    return max(t[0] for t in known), max(t[1] for t in known)


def assert_close(actual: Any, expected: Any, *, rtol: Optional[float] = None,
                 atol: Optional[float] = None, equal_nan: bool = False, name: str = "") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` element by element.

    ``actual`` and ``expected`` are NumPy or CuPy arrays (or scalars, lists) of the same
    shape; no broadcasting. Default tolerances depend on the dtypes (those of the less
    precise one, as ``torch.testing.assert_close`` chooses): float64 rtol 1e-7, atol
    1e-7; float32 rtol 1.3e-6, atol 1e-5; float16 rtol 1e-3, atol 1e-5; integers exact.
    The message gives the number of mismatches, the worst element with both values,
    and the tolerances.
    """
    a_raw, e_raw = to_numpy(actual), to_numpy(expected)
    a, e = np.asarray(a_raw), np.asarray(e_raw)
    label = f"{name}: " if name else ""
    if a.shape != e.shape:
        raise AssertionError(f"{label}shapes differ: actual {a.shape}, expected {e.shape}")
    d_rtol, d_atol = default_tolerances(a.dtype, e.dtype)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a64 - e64)
        allowed = atol + rtol * np.abs(e64)
        ok = diff <= allowed
        same = (a64 == e64) | (np.isnan(a64) & np.isnan(e64) if equal_nan else False)
    ok = ok | same
    bad = int(a.size - np.count_nonzero(ok))
    if not bad:
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(ok, -np.inf, np.where(np.isnan(diff), np.inf, diff / allowed))
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), a.shape)) \
        if a.ndim else ()
    raise AssertionError(
        f"{label}not close: {bad} of {a.size} elements ({100 * bad / a.size:.3g}%) differ "
        f"by more than atol + rtol * |expected| (rtol {rtol:g}, atol {atol:g}, "
        f"dtypes {a.dtype}/{e.dtype}); the worst at index {worst}: actual "
        f"{a64[worst]:.17g}, expected {e64[worst]:.17g}, |difference| {diff[worst]:.3g} "
        f"(allowed {allowed[worst]:.3g})")
