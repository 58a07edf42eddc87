"""The layer base class: parameters, gradients, caches, state dicts.

A layer holds ``params`` and ``grads`` (dicts with the same keys, shapes and
dtypes) and calls the pure functions of ``npnn.functional``. Each ``forward``
pushes its cache on a stack and each ``backward`` pops the most recent one, so
a layer applied several times (a decoder's cell, step by step) is
backpropagated by calling ``backward`` in the reverse order. Gradients
accumulate in ``grads`` until ``zero_grad()``, as PyTorch's ``.grad`` does.

Inside ``with npnn.no_grad():`` no cache is kept (generation, evaluation).
"""

import contextlib
import os
import tempfile

import numpy as np

from .._checks import check_choice
from ..backend import backend_name, get_array_module, get_backend, to_backend, to_numpy

_GRAD_ENABLED = [True]
DTYPES = ("float32", "float64")


@contextlib.contextmanager
def no_grad():
    """Within this block, forward passes keep no cache (and cannot be backpropagated)."""
    _GRAD_ENABLED.append(False)
    try:
        yield
    finally:
        _GRAD_ENABLED.pop()


def grad_enabled():
    """True unless inside ``no_grad()``."""
    return _GRAD_ENABLED[-1]


def make_rng(seed):
    """A ``numpy.random.Generator`` from a seed, a Generator, or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    raise TypeError(f"expected seed to be an int, a numpy.random.Generator or None, "
                    f"got {type(seed).__name__}")


def check_dtype(dtype):
    """'float32' or 'float64' (or the numpy dtypes) -> numpy dtype."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    check_choice("dtype", name, DTYPES)
    return np.dtype(name)


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"expected {name} to be a positive integer, got {value!r}")
    return int(value)


class Module:
    """Base class of every layer and model.

    Subclasses fill ``self.params`` in ``__init__`` (through ``_add_param``)
    and implement ``forward`` and ``backward``. Submodules assigned as
    attributes are registered, so ``state_dict``, ``named_parameters``,
    ``train``/``eval`` and ``to`` see the whole tree, with PyTorch's dotted names.
    """

    def __init__(self):
        object.__setattr__(self, "params", {})
        object.__setattr__(self, "grads", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_caches", [])
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._modules[name] = value
        elif name in getattr(self, "_modules", {}):
            del self._modules[name]
        object.__setattr__(self, name, value)

    # -- parameters ---------------------------------------------------------
    def _add_param(self, name, value):
        self.params[name] = value
        self.grads[name] = get_array_module(value).zeros_like(value)

    def _accumulate(self, name, grad):
        self.grads[name] += grad

    def named_modules(self, prefix=""):
        """Yield (dotted name, module) for this module and every submodule."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        """Yield (dotted name, parameter, gradient) for every parameter of the tree.

        A parameter shared by two modules (tied weights share both the array
        and its gradient) is yielded once, under its first name.
        """
        seen = set()
        for prefix, module in self.named_modules():
            for name, p in module.params.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield prefix + name, p, module.grads[name]

    def parameters(self):
        """List of (parameter, gradient) pairs, for optimizers and clipping."""
        return [(p, g) for _, p, g in self.named_parameters()]

    def zero_grad(self):
        """Set every gradient to zero (in place, so references stay valid)."""
        for _, _, g in self.named_parameters():
            g[...] = 0

    def num_parameters(self):
        return sum(int(p.size) for _, p, _ in self.named_parameters())

    # -- modes and caches ----------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout active); returns self."""
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (dropout off); returns self."""
        return self.train(False)

    def _push(self, cache):
        if grad_enabled():
            self._caches.append(cache)

    def _pop(self):
        if not self._caches:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called without a matching forward(): "
                "each backward consumes the cache of one earlier forward (run outside "
                "npnn.no_grad()), most recent first")
        return self._caches.pop()

    def clear_caches(self):
        """Drop every cache kept for backward in the whole tree."""
        for _, m in self.named_modules():
            m._caches.clear()

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- state ---------------------------------------------------------------
    @property
    def backend(self):
        """'numpy' or 'cupy', where this module's parameters live."""
        for _, p, _ in self.named_parameters():
            return backend_name(get_array_module(p))
        return "numpy"

    def to(self, backend):
        """Move parameters and gradients to 'numpy' or 'cupy'; returns self.

        Arrays are replaced, so create optimizers after moving a model.
        """
        get_backend(backend)
        moved = {}  # id -> new array, so shared (tied) arrays stay shared

        def move(a):
            if id(a) not in moved:
                moved[id(a)] = to_backend(a, backend)
            return moved[id(a)]
        for _, m in self.named_modules():
            for k in list(m.params):
                m.params[k] = move(m.params[k])
                m.grads[k] = move(m.grads[k])
            m._caches.clear()
        return self

    def state_dict(self):
        """Dict of dotted name -> copy of the parameter (on the module's backend)."""
        return {name: p.copy() for name, p, _ in self.named_parameters()}

    def load_state_dict(self, state, strict=True):
        """Copy parameters from ``state`` into this module, in place.

        Values may be NumPy or CuPy arrays, or anything convertible (lists,
        CPU torch tensors). Shapes must match; with ``strict`` the names must
        match exactly, otherwise only the common names are loaded.
        Returns (missing, unexpected) name lists.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"expected a dict of arrays, got {type(state).__name__}")
        own = {name: p for name, p, _ in self.named_parameters()}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state dict does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}")
        converted = {}
        for k, p in own.items():
            if k not in state:
                continue
            value = to_backend(state[k], backend_name(get_array_module(p)))
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(f"expected {k} of shape {tuple(p.shape)}, got {tuple(value.shape)}")
            converted[k] = value
        for k, value in converted.items():  # all checked before anything is written
            own[k][...] = value.astype(own[k].dtype, copy=False)
        return missing, unexpected

    def save(self, path):
        """Write the state dict to an ``.npz`` file atomically (temp file + rename)."""
        arrays = {k: to_numpy(v) for k, v in self.state_dict().items()}
        atomic_savez(path, arrays)

    def load(self, path, strict=True):
        """Load parameters saved by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            return self.load_state_dict({k: data[k] for k in data.files}, strict=strict)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + ")" if len(lines) > 1 else lines[0] + ")"


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path, write):
    """Write ``path`` through ``write(file)`` (a binary file) without ever leaving it half
    written: the data goes to a temporary file of a unique name in the same folder,
    ``.NAME.tmp-XXXXXXXX``, which is flushed to disk and renamed over ``path``.

    An error or a crash mid-write leaves the previous file untouched (a crash also
    leaves the temporary file; ``npnn.rundir`` removes those of a run's folder).
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=folder)
    try:
        if hasattr(os, "fchmod"):      # mkstemp's 0600 -> what open() would give
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_savez(path, arrays):
    """``np.savez(path, **arrays)``, atomically (see ``atomic_write``)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
