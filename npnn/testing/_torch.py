"""``assert_matches_torch``: an npnn module against its PyTorch twin (PyTorch imported
when called)."""

from types import ModuleType
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .._typing import Array
from ..backend import backend_name, get_array_module, is_array, to_backend, to_numpy
from ..gradcheck.modules import CheckedModule, _flatten, _pair, _rebuild
from ._asserts import assert_close


class TorchComparable(CheckedModule, Protocol):
    """An npnn module as ``assert_matches_torch`` uses it: ``check_module``'s protocol
    and ``state_dict``."""

    def state_dict(self) -> Dict[str, Array]: ...


def _import_torch() -> ModuleType:
    try:
        import torch
    except ImportError as error:
        raise ImportError("npnn.testing.assert_matches_torch needs PyTorch: "
                          "pip install torch (the CPU wheel is enough)") from error
    return torch


def _parameters_and_gradients(module: TorchComparable) -> Dict[str, Tuple[Array, Array]]:
    """{dotted name: (parameter, gradient)} of an npnn module's tree."""
    return {prefix + name: (p, m.grads[name]) for prefix, m in module.named_modules()
            for name, p in m.params.items()}


def assert_matches_torch(module: TorchComparable, torch_module: Any, args: Sequence[Any], *,
                         grads: bool = True, rtol: Optional[float] = None,
                         atol: Optional[float] = None, seed: int = 0) -> None:
    """Assert that an npnn module computes what ``torch_module`` computes.

    Loads the npnn module's weights into ``torch_module`` (``load_state_dict``: the
    names must match, as they do for ``npnn.RNN/LSTM/GRU/Linear`` and PyTorch's), runs
    both on ``args`` (positional arguments of ``forward``; arrays, tuples of arrays
    such as ``(h0, c0)``, None), and compares every output leaf (outputs and final
    states). With ``grads``, it feeds both the same random output gradients (``seed``)
    and compares the gradients of every floating-point argument and of every
    parameter. Tolerances: ``assert_close``'s (dtype-aware) unless given; build both
    in float64 (``dtype="float64"``, ``torch_module.double()``) for a tight check.

    Raises:
        AssertionError: naming every output, state and gradient that differs.
        ImportError: PyTorch is not installed.
    """
    torch = _import_torch()
    args = tuple(args)
    own = module.state_dict()
    theirs = torch_module.state_dict()
    if set(own) != set(theirs):
        raise ValueError(f"the two modules' parameters differ: only npnn has "
                         f"{sorted(set(own) - set(theirs))}, only PyTorch has "
                         f"{sorted(set(theirs) - set(own))}")
    torch_module.load_state_dict({k: torch.as_tensor(np.array(to_numpy(v))).to(theirs[k].dtype)
                                  for k, v in own.items()})
    names = ["x", "hx"] + [f"arg{i}" for i in range(2, len(args))]
    leaves: List[Tuple[str, Any]] = []
    for a, n in zip(args, names):
        _flatten(a, n, leaves)

    def as_torch(v: Any) -> Any:
        if not is_array(v):
            return v
        t = torch.as_tensor(np.array(to_numpy(v)))
        return t.requires_grad_(grads) if t.dtype.is_floating_point else t

    torch_leaves = [as_torch(v) for _, v in leaves]
    module.zero_grad()
    out = module(*args)
    torch_out = torch_module(*_rebuild(args, iter(torch_leaves)))
    ours, yours = _flatten(out, "output", []), _flatten(torch_out, "output", [])
    if [n for n, _ in ours] != [n for n, _ in yours]:
        raise AssertionError(f"the outputs' structures differ: npnn {[n for n, _ in ours]}, "
                             f"PyTorch {[n for n, _ in yours]}")
    failures = []

    def compare(name: str, actual: Any, expected: Any) -> None:
        try:
            assert_close(actual, expected, rtol=rtol, atol=atol, name=name)
        except AssertionError as error:
            failures.append(str(error))

    for (name, a), (_, e) in zip(ours, yours):
        compare(name, a, e.detach().numpy())
    if grads:
        rng = np.random.default_rng(seed)
        douts = [to_backend(rng.standard_normal(a.shape), backend_name(get_array_module(a)))
                 .astype(a.dtype) for _, a in ours]
        single = not isinstance(out, tuple)
        arg_grads = module.backward(*_rebuild((out,) if single else out, iter(douts)))
        arg_grads = arg_grads if isinstance(arg_grads, tuple) else (arg_grads,)
        torch.autograd.backward([e for _, e in yours],
                                [torch.as_tensor(np.array(to_numpy(d))) for d in douts])
        given = dict(zip([n for n, _ in leaves], torch_leaves))
        for a, g, n in zip(args, arg_grads, names):
            for leaf, grad in _pair(a, g, n):
                t = given.get(leaf)
                if t is None or not getattr(t, "requires_grad", False):
                    continue
                expected = np.zeros(tuple(t.shape)) if t.grad is None else t.grad.numpy()
                if grad is None:
                    failures.append(f"d{leaf}: npnn returned no gradient")
                else:
                    compare(f"d{leaf}", grad, expected)
        torch_params = dict(torch_module.named_parameters())
        for name, (_, grad) in _parameters_and_gradients(module).items():
            p = torch_params.get(name)
            if p is not None:
                compare(f"d{name}", grad,
                        np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy())
    if failures:
        raise AssertionError("npnn and PyTorch differ:\n" + "\n".join(failures))
