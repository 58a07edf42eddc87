"""The finite-difference checker itself (``npnn.gradcheck`` is its public face, and
its docstring the recipe): ``check_gradients`` compares a function's analytic
gradients with central differences, tensor by tensor; ``check_all_ops`` runs it
over every built-in op case (``cases.py``)."""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..backend import backend_name, get_array_module, is_array, to_backend, to_numpy


class GradientCheckError(AssertionError):
    """Raised by ``check_gradients(..., raise_on_failure=True)``; carries the report."""

    def __init__(self, report):
        super().__init__("gradient check failed:\n" + report.table())
        self.report = report


@dataclass(frozen=True)
class TensorCheck:
    """The outcome for one input tensor."""
    op: str
    name: str
    shape: Tuple[int, ...]
    max_rel_error: float
    index: Tuple[int, ...]      # where the largest |analytic - numeric| occurs
    analytic: float             # the two values at that index
    numeric: float
    passed: bool


@dataclass
class GradCheckReport:
    """All tensors of one or more checks; ``passed`` when every tensor passed."""
    tol: float
    tensors: List[TensorCheck] = field(default_factory=list)

    @property
    def passed(self):
        return all(t.passed for t in self.tensors)

    @property
    def max_rel_error(self):
        return max((t.max_rel_error for t in self.tensors), default=0.0)

    def extend(self, other):
        self.tensors.extend(other.tensors)
        return self

    def table(self):
        rows = [("op", "tensor", "shape", "max rel error", "at", "analytic", "numeric", "result")]
        for t in self.tensors:
            rows.append((t.op, t.name, "x".join(map(str, t.shape)) or "()",
                         f"{t.max_rel_error:.2e}", str(t.index), f"{t.analytic:.6g}",
                         f"{t.numeric:.6g}", "pass" if t.passed else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self):
        status = "passed" if self.passed else "FAILED"
        return f"{self.table()}\n{len(self.tensors)} tensors, tolerance {self.tol:g}: {status}"


def _as_tuple(outputs):
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _weighted_sum(outputs, douts):
    total = 0.0
    for o, d in zip(outputs, douts):
        if o is not None:
            total += float(get_array_module(o).sum(o * d))
    return total


def check_gradients(f: Callable, inputs: Dict[str, object], *, wrt: Optional[Sequence[str]] = None,
                    eps: float = 1e-6, tol: float = 1e-6, seed: int = 0, op: str = "",
                    raise_on_failure: bool = False) -> GradCheckReport:
    """Compare ``f``'s analytic gradients with central differences in float64.

    Args:
        f: ``f(**inputs) -> (outputs, vjp)``, see the module docstring.
        inputs: keyword arguments of ``f``. Floating-point arrays are copied to
            float64; everything else (integer targets, flags) is passed as is.
        wrt: names to check; default every floating-point array input.
        eps: finite-difference step.
        tol: largest accepted relative error per tensor.
        seed: seed of the random output weights ``dout``.
        op: a label for the report.
        raise_on_failure: raise ``GradientCheckError`` instead of returning a
            failing report.

    Returns:
        A ``GradCheckReport`` with one ``TensorCheck`` per checked tensor.
    """
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
    report = GradCheckReport(tol=tol)
    for name in wrt:
        x = inputs[name]
        if name not in analytic or analytic[name] is None:
            raise KeyError(f"vjp returned no gradient for {name!r}")
        a = analytic[name]
        if tuple(a.shape) != tuple(x.shape):
            raise ValueError(f"expected the gradient of {name} of shape {tuple(x.shape)}, "
                             f"got {tuple(a.shape)}")
        numeric = _numeric_gradient(f, inputs, name, douts, eps)
        report.tensors.append(_compare(op, name, np.asarray(to_numpy(a), dtype=np.float64),
                                       numeric, tol))
    if raise_on_failure and not report.passed:
        raise GradientCheckError(report)
    return report


def _numeric_gradient(f, inputs, name, douts, eps):
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


def _compare(op, name, a, n, tol):
    diff = np.abs(a - n)
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(n).max(initial=0.0)))
    where = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    where = tuple(int(i) for i in where)
    err = float(diff[where]) / scale if diff.size and scale > 0 else 0.0
    a_at = float(a[where]) if a.size else 0.0
    n_at = float(n[where]) if n.size else 0.0
    passed = bool(np.isfinite(err) and err <= tol and np.all(np.isfinite(a)))
    return TensorCheck(op, name, tuple(a.shape), err, where, a_at, n_at, passed)


def check_all_ops(seed: int = 0, tol: float = 1e-6, backend: str = "numpy") -> GradCheckReport:
    """Run every built-in op case (``npnn.gradcheck.cases.builtin_cases``)."""
    from .cases import builtin_cases
    rng = np.random.default_rng(seed)
    report = GradCheckReport(tol=tol)
    for op, (f, inputs) in builtin_cases(rng, backend=backend):
        report.extend(check_gradients(f, inputs, op=op, tol=tol, seed=seed))
    return report

