"""The layer base class: parameters, gradients, caches, state dicts.

A layer holds ``params`` and ``grads`` (dicts with the same keys, shapes and
dtypes) and calls the pure functions of ``npnn.functional``. Each ``forward``
pushes its cache on a stack and each ``backward`` pops the most recent one, so
a layer applied several times (a decoder's cell, step by step) is
backpropagated by calling ``backward`` in the reverse order: last in, first
out. Gradients accumulate in ``grads`` until ``zero_grad()``, as PyTorch's
``.grad`` does.

When a forward keeps its cache (the *grad mode*):

* in training mode (``model.train()``, the default), always;
* in evaluation mode (``model.eval()``), never: an evaluation loop that forgets
  ``no_grad`` cannot grow memory (in PyTorch the graph dies with the outputs;
  here the caches would live on in the layers). To backpropagate in eval mode,
  run the forward inside ``with npnn.enable_grad():``;
* inside ``with npnn.no_grad():`` (generation, evaluation), never.

Both contexts are local to the thread (and asyncio task) that enters them, as
PyTorch's grad mode is per thread.
"""

import contextlib
import contextvars
import os
import warnings
from typing import (Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence,
                    Tuple, TypeVar, Union)

import numpy as np
from numpy.typing import DTypeLike

from .._checks import check_float
from ..backend import backend_name, get_array_module, get_backend, to_backend, to_numpy
from ..durable import atomic_savez
from .._typing import Array, Seed

#: None: the module's mode decides; False: no_grad(); True: enable_grad().
_GRAD_MODE: contextvars.ContextVar[Optional[bool]] = contextvars.ContextVar(
    "npnn_grad_mode", default=None)
#: A module that keeps this many caches (forwards never backpropagated) warns once.
CACHE_WARNING = 1000
#: A Module or a subclass (what ``train``, ``eval``, ``to`` and ``add_module`` return).
_M = TypeVar("_M", bound="Module")


@contextlib.contextmanager
def _grad_mode(mode: Optional[bool]) -> Iterator[None]:
    token = _GRAD_MODE.set(mode)
    try:
        yield
    finally:
        _GRAD_MODE.reset(token)


def no_grad() -> ContextManager[None]:
    """Within this block, forward passes keep no cache (and cannot be backpropagated)."""
    return _grad_mode(False)


def enable_grad() -> ContextManager[None]:
    """Within this block, forward passes keep their caches even in eval mode."""
    return _grad_mode(True)


def grad_enabled() -> Optional[bool]:
    """False inside ``no_grad()``, True inside ``enable_grad()``, else None (the
    module's training mode decides)."""
    return _GRAD_MODE.get()


def make_rng(seed: Seed) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a seed, a Generator, or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    raise TypeError(f"expected seed to be an int, a numpy.random.Generator or None, "
                    f"got {type(seed).__name__}")


class Module:
    """Base class of every layer and model.

    Subclasses fill ``self.params`` in ``__init__`` (through ``register_parameter``)
    and implement ``forward`` and ``backward``. Submodules assigned as
    attributes are registered, so ``state_dict``, ``named_parameters``,
    ``train``/``eval`` and ``to`` see the whole tree, with PyTorch's dotted names.

    Parameters and gradients of the whole tree, as PyTorch (and JAX's mirrored trees):

    * ``named_parameters()`` yields (dotted name, array) pairs:
      ``dict(lstm.named_parameters())['weight_ih_l0']``; ``parameters()`` the arrays;
    * ``named_gradients()`` yields (dotted name, gradient) with the same names, in the
      same order, each gradient of its parameter's shape and dtype (PyTorch's ``p.grad``:
      an array cannot carry its gradient, so npnn keeps it beside it); ``gradients()``
      the gradient arrays. ``zip(model.parameters(), model.gradients())`` are the
      (parameter, gradient) pairs that optimizers and clipping update; they take the
      model itself: ``npnn.optim.Adam(model)``, ``clip_grad_norm(model, 1.0)``;
    * ``params`` and ``grads`` are this module's own dicts (no submodules), PyTorch's
      ``_parameters``.
    """

    # Set in __init__ through object.__setattr__ (around __setattr__'s registration of
    # submodules), declared here for the type checker.
    #: This module's parameters (no submodules), name -> array.
    params: Dict[str, Array]
    #: Their gradients, the same names, shapes and dtypes.
    grads: Dict[str, Array]
    #: Submodules by attribute name (registered by __setattr__).
    _modules: Dict[str, "Module"]
    #: The forwards' caches, most recent last (backward pops them).
    _caches: List[Any]
    #: Whether the CACHE_WARNING warning was given (until clear_caches()).
    _warned: bool
    #: Training mode (train() / eval()).
    training: bool
    #: Defined by every subclass (its signature its own); __call__ calls it.
    forward: Callable[..., Any]
    #: Defined by every subclass: the forward's outputs' gradients -> its inputs'.
    backward: Callable[..., Any]

    def __init__(self) -> None:
        object.__setattr__(self, "params", {})
        object.__setattr__(self, "grads", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_caches", [])
        object.__setattr__(self, "_warned", False)
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Module):
            self._modules[name] = value
        elif name in getattr(self, "_modules", {}):
            del self._modules[name]
        object.__setattr__(self, name, value)

    # -- parameters ---------------------------------------------------------
    def register_parameter(self, name: str, value: Array) -> Array:
        """Add a parameter ``name`` (a NumPy or CuPy float array) and its zero gradient;
        returns the array. Optimizers, ``state_dict`` and ``check_module`` see it."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"expected a parameter name without dots, got {name!r}")
        xp = get_array_module(value)
        if not hasattr(value, "dtype") or value.dtype.kind != "f":
            raise TypeError(f"expected parameter {name} to be a floating-point array, "
                            f"got {type(value).__name__}")
        self.params[name] = value
        self.grads[name] = xp.zeros_like(value)
        return value

    _add_param = register_parameter

    def add_module(self, name: str, module: _M) -> _M:
        """Register a submodule (as assigning it to an attribute does); returns it."""
        if not isinstance(module, Module):
            raise TypeError(f"expected an npnn Module, got {type(module).__name__}")
        setattr(self, name, module)
        return module

    def _accumulate(self, name: str, grad: Array) -> None:
        self.grads[name] += grad

    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        """Yield (dotted name, module) for this module and every submodule."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def _named_pairs(self, remove_duplicate: bool = True
                     ) -> Iterator[Tuple[str, Array, Array]]:
        """(dotted name, parameter, gradient) of every parameter of the tree, each shared
        (tied) array once unless ``remove_duplicate`` is False."""
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for name, p in module.params.items():
                if id(p) not in seen or not remove_duplicate:
                    seen.add(id(p))
                    yield prefix + name, p, module.grads[name]

    def named_parameters(self, remove_duplicate: bool = True) -> Iterator[Tuple[str, Array]]:
        """Yield (dotted name, parameter) for every parameter of the tree, as PyTorch:
        ``dict(model.named_parameters())`` maps ``'rnn.weight_ih_l0'`` to its array.

        A parameter shared by two modules (tied weights share both the array
        and its gradient) is yielded once, under its first name, unless
        ``remove_duplicate`` is False (as PyTorch's ``named_parameters``).
        """
        for name, p, _ in self._named_pairs(remove_duplicate):
            yield name, p

    def parameters(self) -> Iterator[Array]:
        """Yield every parameter (array) of the tree, as PyTorch's ``parameters()``."""
        for _, p, _ in self._named_pairs():
            yield p

    def named_gradients(self, remove_duplicate: bool = True) -> Iterator[Tuple[str, Array]]:
        """Yield (dotted name, gradient) in the order of ``named_parameters()``: the same
        names, and each gradient of its parameter's shape and dtype (PyTorch's
        ``p.grad``, which npnn keeps apart from the array ``p``)."""
        for name, _, g in self._named_pairs(remove_duplicate):
            yield name, g

    def gradients(self) -> Iterator[Array]:
        """Yield every gradient in the order of ``parameters()``: ``zip(model.parameters(),
        model.gradients())`` gives the (parameter, gradient) pairs optimizers update."""
        for _, _, g in self._named_pairs():
            yield g

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place, so references stay valid)."""
        for g in self.gradients():
            g[...] = 0

    def num_parameters(self) -> int:
        return sum(int(p.size) for p in self.parameters())

    # -- modes and caches ----------------------------------------------------
    def train(self: _M, mode: bool = True) -> _M:
        """Training mode (dropout active); returns self."""
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self: _M) -> _M:
        """Evaluation mode (dropout off); returns self."""
        return self.train(False)

    def keeps_caches(self) -> bool:
        """Whether a forward of this module now keeps its cache (see the module docstring)."""
        mode = grad_enabled()
        return self.training if mode is None else mode

    def _push(self, cache: Any) -> None:
        if not self.keeps_caches():
            return
        self._caches.append(cache)
        if len(self._caches) >= CACHE_WARNING and not self._warned:
            object.__setattr__(self, "_warned", True)
            warnings.warn(
                f"{type(self).__name__} keeps {len(self._caches)} caches: forwards in training "
                "mode that are never backpropagated hold memory until backward(); use "
                "model.eval() or `with npnn.no_grad():` for forwards you will not "
                "backpropagate (or call clear_caches())", RuntimeWarning, stacklevel=3)

    def _peek(self) -> Any:
        """The most recent forward's cache, left in place (check, then ``_pop``)."""
        if not self._caches:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called without a matching forward(): "
                "each backward consumes the cache of one earlier forward, most recent first "
                "(last in, first out); a forward keeps none inside npnn.no_grad() or in eval "
                "mode (model.eval()) - to backpropagate in eval mode, run the forward inside "
                "`with npnn.enable_grad():`")
        return self._caches[-1]

    def _pop(self) -> Any:
        self._peek()
        return self._caches.pop()

    @contextlib.contextmanager
    def _consume(self) -> Iterator[Any]:
        """The most recent forward's cache, removed only when the block succeeds: a
        backward rejected by its checks leaves it for a corrected retry."""
        cache = self._peek()
        yield cache
        self._caches.pop()

    def _check_grad(self, name: str, d: Array, shape: Sequence[int],
                    dtype: Optional[DTypeLike]) -> Array:
        """A gradient for the most recent forward: a float array of ``dtype`` (when given)
        and of ``shape``, else the error says which forward it was checked against."""
        check_float(name, d, dtype)
        if tuple(d.shape) != tuple(shape):
            raise self._mismatch(name, d.shape, shape)
        return d

    def _mismatch(self, name: str, got: Sequence[int], expected: Sequence[int]) -> ValueError:
        """A ValueError for a gradient that does not fit the most recent forward."""
        return ValueError(
            f"expected {name} of shape {tuple(expected)}, got {tuple(got)}: it does not fit "
            f"the most recent forward of {type(self).__name__}, and each backward consumes "
            "the most recent forward not yet backpropagated (last in, first out)")

    def clear_caches(self) -> None:
        """Drop every cache kept for backward in the whole tree."""
        for _, m in self.named_modules():
            m._caches.clear()
            object.__setattr__(m, "_warned", False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- state ---------------------------------------------------------------
    @property
    def backend(self) -> str:
        """The name (in ``npnn.backend.BACKENDS``) of where this module's parameters live."""
        for p in self.parameters():
            return backend_name(get_array_module(p))
        return "numpy"

    def to(self: _M, backend: str) -> _M:
        """Move parameters and gradients to ``backend`` (a name of ``npnn.backend.BACKENDS``);
        returns self.

        Arrays are replaced, so create optimizers after moving a model.
        """
        get_backend(backend)
        moved: Dict[int, Array] = {}  # id -> new array, so shared (tied) arrays stay shared

        def move(a: Array) -> Array:
            if id(a) not in moved:
                moved[id(a)] = to_backend(a, backend)
            return moved[id(a)]
        for _, m in self.named_modules():
            for k in list(m.params):
                m.params[k] = move(m.params[k])
                m.grads[k] = move(m.grads[k])
            m._caches.clear()
        return self

    def state_dict(self) -> Dict[str, Array]:
        """Dict of dotted name -> copy of the parameter (on the module's backend).

        A tied parameter appears under each of its names (``embedding.weight`` and
        ``decoder.weight``), as in PyTorch, so state dicts move both ways."""
        return {name: p.copy() for name, p in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state: Any, strict: bool = True) -> Tuple[List[str], List[str]]:
        """Copy parameters from ``state`` into this module, in place.

        Values may be NumPy or CuPy arrays, or anything convertible (lists,
        CPU torch tensors). Shapes must match; with ``strict`` the names must
        match exactly, otherwise only the common names are loaded. A tied
        parameter needs one of its names (PyTorch's state dicts have all of
        them, npnn's older files one); where several are given they must be
        equal. Returns (missing, unexpected) name lists.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"expected a dict of arrays, got {type(state).__name__}")
        names: Dict[int, List[str]] = {}            # id(array) -> every name of that array
        arrays: Dict[int, Array] = {}
        for name, p in self.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
            arrays[id(p)] = p
        missing = [n for ns in names.values() if not any(k in state for k in ns) for n in ns]
        unexpected = [k for k in state if not any(k in ns for ns in names.values())]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state dict does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}")
        converted: Dict[int, Array] = {}
        for key, ns in names.items():
            p = arrays[key]
            given = [k for k in ns if k in state]
            values: List[Array] = []
            for k in given:
                value = to_backend(state[k], backend_name(get_array_module(p)))
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"expected {k} of shape {tuple(p.shape)}, "
                                     f"got {tuple(value.shape)}")
                values.append(value)
            for k, v in zip(given[1:], values[1:]):
                if not bool(get_array_module(v).array_equal(v, values[0])):
                    raise ValueError(f"the tied parameters {given[0]} and {k} (one array in "
                                     f"{type(self).__name__}) differ in this state dict")
            if values:
                converted[key] = values[0]
        for key, value in converted.items():    # all checked before anything is written
            arrays[key][...] = value.astype(arrays[key].dtype, copy=False)
        return missing, unexpected

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the state dict to an ``.npz`` file atomically (temp file + rename)."""
        arrays = {k: to_numpy(v) for k, v in self.state_dict().items()}
        atomic_savez(path, arrays)

    def load(self, path: Union[str, "os.PathLike[str]"],
             strict: bool = True) -> Tuple[List[str], List[str]]:
        """Load parameters saved by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            return self.load_state_dict({k: data[k] for k in data.files}, strict=strict)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + ")" if len(lines) > 1 else lines[0] + ")"
