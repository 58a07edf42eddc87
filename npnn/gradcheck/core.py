"""The finite-difference checker itself (``npnn.gradcheck`` is its public face, and
its docstring the recipe): ``check_gradients`` compares a function's analytic
gradients with central differences, tensor by tensor, every element (``mode="full"``)
or along random directions (``mode="directional"``); ``check_all_ops`` runs it over
every built-in op case (``cases.py``). ``npnn.testing``'s assertions are this
checker with the defaults of a test suite."""

import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from .._typing import Array, CheckedFunction
from ..backend import backend_name, get_array_module, is_array, to_backend, to_numpy


class GradientCheckError(AssertionError):
    """Raised by ``check_gradients(..., raise_on_failure=True)``; carries the report."""

    def __init__(self, report: "GradCheckReport") -> None:
        super().__init__("gradient check failed:\n" + report.table())
        self.report = report


class GradientCheckWarning(UserWarning):
    """A check that cannot say much: outputs below float64 precision, or tensors whose
    analytic and numeric gradients are both zero (not exercised)."""


@dataclass(frozen=True)
class TensorCheck:
    """The outcome for one input tensor.

    In ``mode="full"`` ``index`` is the element with the largest |analytic - numeric|
    and ``analytic``/``numeric`` the two gradients there; in ``mode="directional"``
    ``index`` is ``(k,)``, the worst of the random directions u, and the two values are
    <gradient, u> and the central difference along u. ``exercised`` is False when the
    analytic and the numeric gradient are both identically zero: the check then says
    nothing about the tensor (its result is 'not exercised', which is not a failure).
    ``where`` names the gate block and unit of ``index`` for a stacked-gate parameter
    ('z gate, unit 1')."""
    op: str
    name: str
    shape: Tuple[int, ...]
    max_rel_error: float
    index: Tuple[int, ...]      # where the largest |analytic - numeric| occurs
    analytic: float             # the two values at that index
    numeric: float
    passed: bool
    exercised: bool = True
    where: str = ""
    mode: str = "full"

    @property
    def result(self) -> str:
        if not self.passed:
            return "FAIL"
        return "pass" if self.exercised else "not exercised"


@dataclass
class GradCheckReport:
    """All tensors of one or more checks; ``passed`` when no tensor failed (a tensor
    that was not exercised did not fail: see ``not_exercised``). A tensor passes when
    max |analytic - numeric| <= atol + tol * max(max |analytic|, max |numeric|)."""
    tol: float
    tensors: List[TensorCheck] = field(default_factory=list)
    atol: float = 0.0
    notes: List[str] = field(default_factory=list)

    @property
    def not_exercised(self) -> List[str]:
        """Names of the tensors whose analytic and numeric gradients were both zero."""
        return [t.name for t in self.tensors if not t.exercised]

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tensors)

    @property
    def max_rel_error(self) -> float:
        return max((t.max_rel_error for t in self.tensors), default=0.0)

    def extend(self, other: "GradCheckReport") -> "GradCheckReport":
        self.tensors.extend(other.tensors)
        self.notes.extend(n for n in other.notes if n not in self.notes)
        return self

    def table(self) -> str:
        rows = [("op", "tensor", "shape", "max rel error", "at", "analytic", "numeric", "result")]
        for t in self.tensors:
            rows.append((t.op, t.name, "x".join(map(str, t.shape)) or "()",
                         f"{t.max_rel_error:.2e}",
                         str(t.index) + (f" {t.where}" if t.where else "")
                         + (" direction" if t.mode == "directional" else ""),
                         f"{t.analytic:.6g}", f"{t.numeric:.6g}", t.result))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        atol = f", atol {self.atol:g}" if self.atol else ""
        return (f"{self.table()}\n{len(self.tensors)} tensors, tolerance {self.tol:g}{atol}: "
                f"{status}")


def _as_tuple(outputs: Any) -> Tuple[Any, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _weighted_sum(outputs: Sequence[Optional[Array]], douts: Sequence[Optional[Array]]) -> float:
    total = 0.0
    for o, d in zip(outputs, douts):
        if o is not None:
            total += float(get_array_module(o).sum(o * d))
    return total


def check_gradients(f: CheckedFunction, inputs: Dict[str, Any], *,
                    wrt: Optional[Sequence[str]] = None,
                    eps: float = 1e-6, tol: float = 1e-6, seed: int = 0, op: str = "",
                    raise_on_failure: bool = False, atol: float = 0.0, mode: str = "full",
                    directions: int = 2,
                    gates: Optional[Mapping[str, Sequence[str]]] = None) -> GradCheckReport:
    """Compare ``f``'s analytic gradients with central differences in float64.

    Args:
        f: ``f(**inputs) -> (outputs, vjp)``, see the module docstring.
        inputs: keyword arguments of ``f``. Floating-point arrays are copied to
            float64; everything else (integer targets, flags) is passed as is.
        wrt: names to check; default every floating-point array input.
        eps: finite-difference step.
        tol: the relative tolerance (rtol): a tensor passes when
            max |analytic - numeric| <= atol + tol * max(max |analytic|, max |numeric|)
            (in ``mode="directional"`` the same with the directional derivatives).
        seed: seed of the random output weights ``dout`` (and of the directions).
        op: a label for the report.
        raise_on_failure: raise ``GradientCheckError`` instead of returning a
            failing report.
        atol: the absolute tolerance (default 0: the test is purely relative).
        mode: ``"full"`` perturbs every element (2 forward passes per element);
            ``"directional"`` compares <gradient, u> with the central difference along
            ``directions`` random unit directions u per tensor (2 forward passes per
            direction).
        directions: how many directions per tensor in ``mode="directional"``.
        gates: {tensor name: gate names} for parameters whose first axis stacks gate
            blocks (``W_ih`` (G*H, D)): a tensor's worst index is then named by its
            block and unit ('z gate, unit 1').

    Returns:
        A ``GradCheckReport`` with one ``TensorCheck`` per checked tensor.
    """
    if mode not in ("full", "directional"):
        raise ValueError(f"expected mode to be 'full' or 'directional', got {mode!r}")
    # C-ordered float64 copies: the perturbations below go through a flat view, which
    # only a C-contiguous array shares with itself (astype keeps an F-ordered layout)
    inputs = {k: (get_array_module(v).array(v, dtype=get_array_module(v).float64, order="C",
                                            copy=True)
                  if is_array(v) and v.dtype.kind == "f" else v)
              for k, v in inputs.items()}
    if wrt is None:
        wrt = [k for k, v in inputs.items() if is_array(v) and v.dtype.kind == "f"]
    for name in wrt:
        if name not in inputs or not (is_array(inputs[name]) and inputs[name].dtype.kind == "f"):
            raise ValueError(f"expected {name!r} to name a floating-point array input, "
                             f"got {type(inputs.get(name)).__name__}")
    result = f(**inputs)
    if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
        raise TypeError("expected f to return (outputs, vjp) with vjp callable")
    outputs, vjp = result
    single = not isinstance(outputs, (tuple, list))
    outs = _as_tuple(outputs)
    rng = np.random.default_rng(seed)
    douts = tuple(None if o is None else
                  to_backend(rng.standard_normal(o.shape), backend_name(get_array_module(o))).astype(o.dtype)
                  for o in outs)
    analytic = vjp(douts[0] if single else douts)
    report = GradCheckReport(tol=tol, atol=atol)
    low = sorted({str(o.dtype) for o in outs if o is not None and o.dtype.kind == "f"
                  and o.dtype.itemsize < 8})
    if low:
        note = (f"{op + ': ' if op else ''}outputs of dtype {', '.join(low)}: finite differences "
                f"in that precision are accurate to about 1e-2 at best, so a failure here is "
                f"most likely precision, not a wrong gradient; run the check in float64")
        report.notes.append(note)
        warnings.warn(note, GradientCheckWarning, stacklevel=2)
    directions_rng = np.random.default_rng([seed, 1])
    for name in wrt:
        x = inputs[name]
        if name not in analytic or analytic[name] is None:
            raise KeyError(f"vjp returned no gradient for {name!r}")
        a = analytic[name]
        if tuple(a.shape) != tuple(x.shape):
            raise ValueError(f"expected the gradient of {name} of shape {tuple(x.shape)}, "
                             f"got {tuple(a.shape)}")
        a = np.asarray(to_numpy(a), dtype=np.float64)
        if mode == "full":
            numeric = _numeric_gradient(f, inputs, name, douts, eps)
            check = _compare(op, name, a, numeric, tol, atol)
            if gates and name in gates and check.index and check.exercised:
                check = _name_gate(check, gates[name])
        else:
            check = _directional(f, inputs, name, a, douts, eps, tol, atol, op,
                                 directions, directions_rng)
        report.tensors.append(check)
    if raise_on_failure and not report.passed:
        raise GradientCheckError(report)
    return report


def _perturbed_loss(f: CheckedFunction, inputs: Dict[str, Any], name: str,
                    douts: Sequence[Optional[Array]], new_value: Array) -> float:
    """L with input ``name`` set to ``new_value`` (restored afterwards)."""
    x = inputs[name]
    old = x.copy()
    x[...] = new_value
    try:
        return _weighted_sum(_as_tuple(f(**inputs)[0]), douts)
    finally:
        x[...] = old


def _numeric_gradient(f: CheckedFunction, inputs: Dict[str, Any], name: str,
                      douts: Sequence[Optional[Array]], eps: float) -> NDArray[np.float64]:
    x = inputs[name]
    flat = x.reshape(-1)            # a view: x is the C-ordered float64 copy made above
    assert flat.base is x or flat.base is x.base, "the perturbed array must be a view"
    grad = np.empty(flat.size, dtype=np.float64)
    for i in range(flat.size):
        old = float(flat[i])
        flat[i] = old + eps
        plus = _weighted_sum(_as_tuple(f(**inputs)[0]), douts)
        flat[i] = old - eps
        minus = _weighted_sum(_as_tuple(f(**inputs)[0]), douts)
        flat[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad.reshape(x.shape)


def _directional(f: CheckedFunction, inputs: Dict[str, Any], name: str, a: NDArray[np.float64],
                 douts: Sequence[Optional[Array]], eps: float, tol: float, atol: float, op: str,
                 directions: int, rng: np.random.Generator) -> TensorCheck:
    """<a, u> against (L(x + eps u) - L(x - eps u)) / (2 eps) for random unit u."""
    x = inputs[name]
    xp = get_array_module(x)
    worst: Optional[Tuple[float, int, float, float, float]] = None
    all_zero = not a.any()
    for k in range(max(1, int(directions))):
        u = rng.standard_normal(x.shape)
        u /= max(float(np.linalg.norm(u)), 1e-300)
        u_dev = to_backend(u, backend_name(xp))
        plus = _perturbed_loss(f, inputs, name, douts, x + eps * u_dev)
        minus = _perturbed_loss(f, inputs, name, douts, x - eps * u_dev)
        d_a, d_n = float(np.sum(a * u)), (plus - minus) / (2 * eps)
        all_zero = all_zero and d_n == 0.0
        diff, scale = abs(d_a - d_n), max(abs(d_a), abs(d_n))
        margin = diff - (atol + tol * scale)        # > 0: outside the tolerance
        if worst is None or margin > worst[0] or not np.isfinite(diff):
            worst = (margin, k, d_a, d_n, diff / scale if scale > 0 else 0.0)
            if not np.isfinite(diff):
                break
    assert worst is not None        # the loop ran at least once
    margin, k, d_a, d_n, err = worst
    passed = bool(np.isfinite(d_a) and np.isfinite(d_n) and margin <= 0
                  and np.all(np.isfinite(a)))
    return TensorCheck(op, name, tuple(a.shape), err, (k,), d_a, d_n, passed,
                       exercised=not all_zero, mode="directional")


def _compare(op: str, name: str, a: NDArray[np.float64], n: NDArray[np.float64], tol: float,
             atol: float = 0.0) -> TensorCheck:
    diff = np.abs(a - n)
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(n).max(initial=0.0)))
    at = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    where = tuple(int(i) for i in at)
    largest = float(diff[where]) if diff.size else 0.0
    err = largest / scale if diff.size and scale > 0 else 0.0
    a_at = float(a[where]) if a.size else 0.0
    n_at = float(n[where]) if n.size else 0.0
    passed = bool(np.isfinite(err) and largest <= atol + tol * scale and np.all(np.isfinite(a)))
    exercised = bool(scale != 0.0 or not np.all(np.isfinite(diff)))
    return TensorCheck(op, name, tuple(a.shape), err, where, a_at, n_at, passed,
                       exercised=exercised)


def _name_gate(check: TensorCheck, gate_names: Sequence[str]) -> TensorCheck:
    """``check`` with its index named by gate block: row r of a (G*H, ...) tensor is unit
    r % H of gate r // H."""
    G, rows = len(gate_names), check.shape[0]
    if G < 2 or rows % G:
        return check
    H = rows // G
    row = check.index[0]
    return TensorCheck(**{**check.__dict__,
                          "where": f"({gate_names[row // H]} gate, unit {row % H})"})


def gate_names(cell: str) -> Tuple[str, ...]:
    """The gate blocks of registered cell ``cell``, in the order its weights stack them:
    its file's ``GATES`` (('r', 'z', 'n') for GRU), else 'gate 0', 'gate 1', ..."""
    from ..functional.registry import CELLS
    spec = CELLS[cell]
    names = getattr(sys.modules.get(spec.forward.__module__), "GATES", None)
    if names is None or len(names) != spec.gates:
        return tuple(f"block {k}" for k in range(spec.gates))
    return tuple(names)


def check_all_ops(seed: int = 0, tol: float = 1e-6, backend: str = "numpy") -> GradCheckReport:
    """Run every built-in op case (``npnn.gradcheck.cases.builtin_cases``)."""
    from .cases import builtin_cases
    rng = np.random.default_rng(seed)
    report = GradCheckReport(tol=tol)
    for op, (f, inputs) in builtin_cases(rng, backend=backend):
        report.extend(check_gradients(f, inputs, op=op, tol=tol, seed=seed))
    return report

