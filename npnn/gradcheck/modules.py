"""Gradient checks of whole layers and models (anything with forward/backward).

``check_module(module, args)`` checks the gradients that ``module.backward``
returns for the floating-point arguments of ``module.forward(*args)`` and the
gradients it accumulates in every parameter, against central differences.
The module must be float64. The random generators of dropout layers are
rewound before every forward, so each evaluation draws the same masks.

The protocol is the one every npnn layer follows: ``forward(*args)`` returns
an array or a (nested) tuple of arrays, ``backward(*douts)`` takes gradients
with the same structure and returns the argument gradients: one array, or a
tuple mirroring forward's positional parameters (``(dx, dhx)`` for a recurrent
layer, also when ``hx`` was not passed: the extra entries are ignored).
"""

import re
from typing import (Any, Callable, Collection, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Protocol, Sequence, Tuple)

import numpy as np

from ..backend import is_array
from .._typing import Array, Vjp
from .core import GradCheckReport, check_gradients, gate_names


class CheckedModule(Protocol):
    """What the checks use of a module: an ``npnn.Module`` with its ``backward`` (the
    layers live on a floor above this one, so the checker names the protocol alone)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    @property
    def backward(self) -> Callable[..., Any]: ...

    def named_parameters(self) -> Iterable[Tuple[str, Array]]: ...

    def named_gradients(self) -> Iterable[Tuple[str, Array]]: ...

    def named_modules(self) -> Iterable[Tuple[str, Any]]: ...

    def zero_grad(self) -> None: ...

    def clear_caches(self) -> None: ...


def _flatten(obj: Any, name: str, out: List[Tuple[str, Any]]) -> List[Tuple[str, Any]]:
    """Leaves of nested tuples/lists as (name, value) pairs: x, hx[0], hx[1], ..."""
    if isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            _flatten(o, f"{name}[{i}]", out)
    else:
        out.append((name, obj))
    return out


def _rebuild(template: Any, leaves: Iterator[Any]) -> Any:
    """Nested structure of ``template`` with leaves taken in order from the iterator."""
    if isinstance(template, (tuple, list)):
        return type(template)(_rebuild(t, leaves) for t in template)
    return next(leaves)


def _generators(module: CheckedModule) -> List[np.random.Generator]:
    return [m.rng for _, m in module.named_modules() if isinstance(getattr(m, "rng", None),
                                                                   np.random.Generator)]


def _pair(arg: Any, grad: Any, name: str) -> Iterator[Tuple[str, Any]]:
    """Yield (name, gradient) for every leaf of ``arg``, walking ``grad`` alongside."""
    if isinstance(arg, (tuple, list)):
        for i, a in enumerate(arg):
            yield from _pair(a, grad[i], f"{name}[{i}]")
    else:
        yield name, grad


def _gates(module: CheckedModule, names: Collection[str]) -> Dict[str, Tuple[str, ...]]:
    """{parameter name: gate names} of the stacked-gate parameters among ``names``: those
    of a module whose ``spec`` is a registered cell, shaped (G*H, ...) in the registry."""
    from ..functional.registry import Cell
    out = {}
    for prefix, m in module.named_modules():
        spec = getattr(m, "spec", None)
        if not isinstance(spec, Cell) or spec.gates < 2:
            continue
        stacked = {p.name for p in spec.params if p.shape[0] == "G*H"}
        for name in getattr(m, "params", {}):
            if prefix + name in names and re.sub(r"_l\d+(_reverse)?$", "", name) in stacked:
                out[prefix + name] = gate_names(spec.name)
    return out


def check_module(module: CheckedModule, args: Sequence[Any], kwargs: Optional[Mapping[str, Any]] = None, *,
                 arg_names: Optional[Sequence[str]] = None, params: bool = True, eps: float = 1e-6,
                 tol: float = 1e-6, seed: int = 0, op: Optional[str] = None,
                 raise_on_failure: bool = False, **options: Any) -> GradCheckReport:
    """Finite-difference check of a module's backward.

    Args:
        module: an npnn Module (float64 parameters).
        args: tuple of positional arguments of ``forward``; floating-point
            arrays among them (also inside tuples, e.g. LSTM's ``(h0, c0)``)
            are checked, others (indices, None) are passed as they are.
        kwargs: keyword arguments of ``forward`` (e.g. ``lengths``), not checked.
        arg_names: names of the positional arguments for the report
            (default x, hx, arg2, ...).
        params: also check every parameter's accumulated gradient.
        eps, tol, seed, op, raise_on_failure, and ``options`` (``atol``, ``mode``,
            ``directions``): as for ``check_gradients``. A failing entry of a
            stacked-gate parameter is named by its gate block ('z gate, unit 1').
    """
    args, kwargs = tuple(args), dict(kwargs or {})
    for name, p in module.named_parameters():
        if p.dtype != np.float64:
            raise ValueError(f"expected a float64 module for gradient checks, got {name} "
                             f"of dtype {p.dtype}; build it with dtype='float64'")
    names = (list(arg_names) if arg_names else
             ["x", "hx"] + [f"arg{i}" for i in range(2, len(args))])[:len(args)]
    leaves: List[Tuple[str, Any]] = []
    for a, n in zip(args, names):
        _flatten(a, n, leaves)
    checked = {n for n, v in leaves if is_array(v) and v.dtype.kind == "f"}
    param_refs = dict(module.named_parameters()) if params else {}
    states = [g.bit_generator.state for g in _generators(module)]

    def f(**inputs: Any) -> Tuple[Tuple[Any, ...], Vjp]:
        for g, s in zip(_generators(module), states):     # same dropout masks every call
            g.bit_generator.state = s
        for name, p in param_refs.items():
            p[...] = inputs[name]
        values = iter([inputs[n] if n in checked else v for n, v in leaves])
        outputs = module(*_rebuild(args, values), **kwargs)
        single = not isinstance(outputs, tuple)

        def vjp(douts: Sequence[Any]) -> Dict[str, Any]:
            module.zero_grad()
            structured = _rebuild((outputs,) if single else outputs, iter(douts))
            result = module.backward(*structured)
            # one gradient (the first argument's) or a tuple mirroring forward's parameters
            arg_grads = result if isinstance(result, tuple) else (result,)
            grads: Dict[str, Any] = {}
            for a, g, n in zip(args, arg_grads, names):
                grads.update(_pair(a, g, n))
            grads.update({name: g.copy() for name, g in module.named_gradients()
                          if name in param_refs})
            return grads

        return tuple(v for _, v in _flatten(outputs, "out", [])), vjp

    inputs = {n: v for n, v in leaves if n in checked}
    inputs.update({name: p.copy() for name, p in param_refs.items()})
    module.clear_caches()
    try:
        return check_gradients(f, inputs, eps=eps, tol=tol, seed=seed,
                               op=op or type(module).__name__,
                               raise_on_failure=raise_on_failure,
                               gates=_gates(module, param_refs), **options)
    finally:
        module.clear_caches()
