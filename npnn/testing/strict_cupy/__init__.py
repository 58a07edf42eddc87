"""A strict CuPy stand-in: CuPy's API and refusals on NumPy data, with counters.

No GPU is needed: ``ndarray`` holds a NumPy array (the "device" memory) and every
function runs the NumPy function of the same name. What makes it strict:

* **CuPy's API surface, no more.** Every name and keyword argument is checked
  against ``cupy_api.json``, recorded from an installed CuPy by ``record_api.py``:
  a function CuPy lacks is an AttributeError, a keyword it does not take a
  TypeError (e.g. ``where=`` on a ufunc: CuPy's ufuncs take ``out``, ``dtype``,
  ``casting``).
* **CuPy's refusals.** An array refuses implicit conversion to NumPy
  (``np.asarray(x)``, ``__array__``: TypeError with CuPy's message); ``np.*`` on it
  dispatches to the stand-in's function of that name, as CuPy's
  ``__array_function__``/``__array_ufunc__`` do, and where CuPy has none NumPy
  raises; a NumPy array given to a device function, ufunc or operator is refused
  (``Unsupported type``); a non-scalar NumPy array assigned into a device array
  is refused (CuPy fills from scalars only). Moving data is explicit:
  ``asarray``/``array`` (host to device), ``get``/``asnumpy`` (device to host).
* **ElementwiseKernel runs its body**: compiled with the host's C++ compiler
  (``kernels.py``), inputs const as CuPy declares them, ``max``/``min`` as CUDA's
  (NaN dropped).
* **Counters.** Inside ``with counting() as c:`` every kernel launch (each
  function, operator or kernel call that computes on device data; views are free),
  every device-to-host synchronisation (``float()``, ``int()``, ``bool()``,
  ``.item()``, ``.tolist()``, ``.get()``, ``asnumpy``, printing, boolean-mask
  indexing, ``nonzero``) and every host-to-device copy is recorded with its call
  site (the first frame outside this package and NumPy): ``c.launches``,
  ``c.syncs``, ``c.h2d`` are lists of ``Event(kind, what, site)``.

``install()`` makes npnn see the stand-in as CuPy (``npnn.backend``'s module),
``uninstall()`` restores it; ``installed()`` is both as a context manager.
"""

import builtins
import contextlib
import json
import os
import sys
import weakref
from types import FrameType, ModuleType
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, NoReturn, Optional,
                    Sequence, Tuple)

import numpy as np

from . import kernels

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "cupy_api.json")) as _f:
    API: Dict[str, Any] = json.load(_f)

__version__ = API["version"] + "+strict"
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


# -- counters ------------------------------------------------------------------------

class Event(NamedTuple):
    kind: str       # 'launch', 'sync' or 'h2d'
    what: str       # the function, operator or kernel
    site: str       # file:line of the caller (outside the stand-in and NumPy)


class Counts:
    """What happened inside one ``counting()`` block."""

    def __init__(self) -> None:
        self.events: List[Event] = []

    def _of(self, kind: str) -> List[Event]:
        return [e for e in self.events if e.kind == kind]

    launches = property(lambda self: self._of("launch"))
    syncs = property(lambda self: self._of("sync"))
    h2d = property(lambda self: self._of("h2d"))

    def sites(self, kind: str) -> Dict[str, int]:
        """{site: count} of one kind of event."""
        out: Dict[str, int] = {}
        for e in self._of(kind):
            out[f"{e.site} ({e.what})"] = out.get(f"{e.site} ({e.what})", 0) + 1
        return out

    def __repr__(self) -> str:
        return (f"Counts({len(self.launches)} launches, {len(self.syncs)} syncs, "
                f"{len(self.h2d)} host-to-device copies)")


_ACTIVE: List[Counts] = []
_SKIP = (_HERE + os.sep, os.path.dirname(np.__file__) + os.sep,
         os.path.dirname(contextlib.__file__) + os.sep + "contextlib")


def _site() -> str:
    frame: Optional[FrameType] = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
        frame = frame.f_back
    if frame is None:
        return "?"
    path = frame.f_code.co_filename
    for root in sys.path:
        if root and path.startswith(root + os.sep):
            path = path[len(root) + 1:]
            break
    return f"{path}:{frame.f_lineno}"


def _record(kind: str, what: str) -> None:
    if _ACTIVE:
        event = Event(kind, what, _site())
        for c in _ACTIVE:
            c.events.append(event)


@contextlib.contextmanager
def counting() -> Iterator[Counts]:
    """Count launches, syncs and host-to-device copies inside the block."""
    c = Counts()
    _ACTIVE.append(c)
    try:
        yield c
    finally:
        _ACTIVE.remove(c)


# -- arrays --------------------------------------------------------------------------

def _refuse_host(a: Any, where: str) -> NoReturn:
    raise TypeError(f"Unsupported type {type(a)} (a NumPy array given to {where}: move it to "
                    "the device first, with cupy.asarray)")


def _dev(a: Any, where: str) -> Any:
    """Device argument -> its NumPy data; scalars pass; NumPy arrays are refused."""
    if isinstance(a, ndarray):
        return a._a
    if isinstance(a, np.ndarray):
        _refuse_host(a, where)
    if isinstance(a, (list, tuple)):
        return type(a)(_dev(x, where) for x in a)
    return a


#: id(NumPy data) -> its device array
_WRAPPERS: "weakref.WeakValueDictionary[int, ndarray]" = weakref.WeakValueDictionary()


def _wrap(r: Any) -> Any:
    if isinstance(r, np.ndarray):
        out = object.__new__(ndarray)
        out._a = r
        _WRAPPERS[id(r)] = out
        return out
    if isinstance(r, np.generic):            # CuPy returns 0-d arrays, not scalars
        return _wrap(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    if isinstance(r, list):
        return [_wrap(x) for x in r]
    return r


class _Flags:
    def __init__(self, a: np.ndarray[Any, Any]) -> None:
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, key: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[key]


class _Pointer:
    def __init__(self, a: np.ndarray[Any, Any]) -> None:
        self.ptr = a.ctypes.data
        self.device_id = 0


def _check_kwargs(what: str, kwargs: Dict[str, Any],
                  params: Optional[Sequence[Sequence[str]]]) -> None:
    """Refuse keyword arguments that CuPy's signature (``params``) does not have."""
    if params is None:
        return
    names = {n for n, kind in params if kind != "VAR_POSITIONAL"}
    if builtins.any(kind == "VAR_KEYWORD" for _, kind in params):
        return
    bad = sorted(set(kwargs) - names)
    if bad:
        raise TypeError(f"{what}() got an unexpected keyword argument {bad[0]!r} "
                        f"(not in CuPy {API['version']}'s signature)")


def _method(name: str) -> Callable[..., Any]:
    params = API["ndarray"][name]["params"]

    def method(self: ndarray, *args: Any, **kwargs: Any) -> Any:
        _check_kwargs(f"ndarray.{name}", kwargs, params)
        _record("launch", f"ndarray.{name}")
        return _wrap(getattr(self._a, name)(*_dev(args, f"ndarray.{name}"),
                                            **{k: _dev(v, name) for k, v in kwargs.items()}))
    method.__name__ = name
    return method


def _view_method(name: str) -> Callable[..., Any]:
    def method(self: ndarray, *args: Any, **kwargs: Any) -> Any:
        _check_kwargs(f"ndarray.{name}", kwargs, API["ndarray"][name]["params"])
        r = getattr(self._a, name)(*args, **kwargs)
        if not np.shares_memory(r, self._a):
            _record("launch", f"ndarray.{name}")
        return _wrap(r)
    method.__name__ = name
    return method


def _sync(what: str) -> None:
    _record("sync", what)


_sync_event = _sync


class ndarray:
    """A device array: a NumPy array behind CuPy's interface and refusals."""

    __slots__ = ("_a", "__weakref__")
    __hash__ = None  # type: ignore[assignment]  # unhashable, as CuPy's arrays

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None,
                 order: Any = "C") -> None:
        self._a = np.empty(shape, dtype=dtype, order=order)

    # attributes that read no data
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    data = property(lambda self: _Pointer(self._a))
    device = property(lambda self: cuda.Device(0))
    T = property(lambda self: _wrap(self._a.T))
    mT = property(lambda self: _wrap(self._a.mT))
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))

    @property
    def base(self) -> Optional["ndarray"]:
        """The device array this one is a view of (the same object, as CuPy's)."""
        b = self._a.base
        if b is None:
            return None
        known = _WRAPPERS.get(id(b))
        return known if known is not None and known._a is b else _wrap(b)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[Any]:
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # -- conversions to the host: refused implicitly, counted explicitly
    def __array__(self, dtype: Any = None, copy: Any = None) -> NoReturn:
        raise TypeError(_IMPLICIT)

    def get(self, stream: Any = None, order: Any = "C", out: Any = None,
            blocking: bool = True) -> Any:
        _sync("ndarray.get")
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def set(self, arr: Any, stream: Any = None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self._a.shape:
            raise ValueError("Shape mismatch")
        _record("h2d", "ndarray.set")
        self._a[...] = arr

    def item(self) -> Any:
        _sync("ndarray.item")
        return self._a.item()

    def tolist(self) -> Any:
        _sync("ndarray.tolist")
        return self._a.tolist()

    def __float__(self) -> float:
        _sync("float()")
        return builtins.float(self._a)

    def __int__(self) -> int:
        _sync("int()")
        return builtins.int(self._a)

    def __complex__(self) -> complex:
        _sync("complex()")
        return builtins.complex(self._a)

    def __bool__(self) -> bool:
        _sync("bool()")
        return builtins.bool(self._a)

    def __repr__(self) -> str:
        _sync("repr()")
        return repr(self._a).replace("array(", "array(", 1)

    def __str__(self) -> str:
        _sync("str()")
        return str(self._a)

    def __format__(self, spec: str) -> str:
        _sync("format()")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    # -- NumPy's protocols: dispatch to the stand-in, as CuPy does
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        mine = globals().get(ufunc.__name__)
        if not isinstance(mine, _Ufunc):
            return NotImplemented
        if "out" in kwargs and isinstance(kwargs["out"], tuple) and len(kwargs["out"]) == 1:
            kwargs["out"] = kwargs["out"][0]
        fn = mine if method == "__call__" else getattr(mine, method, None)
        if fn is None:
            return NotImplemented
        return fn(*inputs, **kwargs)

    def __array_function__(self, func: Callable[..., Any], types: Any, args: Sequence[Any],
                           kwargs: Dict[str, Any]) -> Any:
        module: Any = sys.modules[__name__]
        for part in func.__module__.split(".")[1:]:
            module = getattr(module, part, None)
        mine = getattr(module, func.__name__, None) if module is not None else None
        if mine is None or mine is func:
            return NotImplemented
        return mine(*args, **kwargs)

    # -- indexing
    def __getitem__(self, key: Any) -> Any:
        key, advanced = _index(key)
        r = self._a[key]
        if advanced:
            _record("launch", "ndarray.__getitem__")
        return _wrap(r)

    def __setitem__(self, key: Any, value: Any) -> None:
        key, _ = _index(key)
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        _record("launch", "ndarray.__setitem__")
        self._a[key] = _dev(value, "ndarray.__setitem__")

    # -- methods
    def astype(self, dtype: Any, order: Any = "K", casting: Any = None, subok: Any = None,
               copy: bool = True) -> Any:
        if not copy and np.dtype(dtype) == self._a.dtype:
            return self
        _record("launch", "ndarray.astype")
        return _wrap(self._a.astype(dtype, order=order, casting=casting or "unsafe"))

    def copy(self, order: Any = "C") -> Any:
        _record("launch", "ndarray.copy")
        return _wrap(self._a.copy(order=order))

    def fill(self, value: Any) -> None:
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        _record("launch", "ndarray.fill")
        self._a.fill(_dev(value, "ndarray.fill"))

    def reshape(self, *shape: Any, order: Any = "C", copy: Any = None) -> Any:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        r = self._a.reshape(shape, order=order)
        if not np.shares_memory(r, self._a) and self._a.size:
            _record("launch", "ndarray.reshape (a copy)")
        return _wrap(r)

    def view(self, dtype: Any = None, type: Any = None) -> Any:
        return _wrap(self._a if dtype is None else self._a.view(dtype))

    def __dlpack__(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_IMPLICIT)


for _name in ("transpose", "swapaxes", "squeeze", "ravel", "diagonal"):
    setattr(ndarray, _name, _view_method(_name))
for _name in ("sum", "mean", "max", "min", "prod", "any", "all", "argmax", "argmin", "std",
              "var", "cumsum", "cumprod", "clip", "dot", "take", "repeat", "flatten", "round",
              "conj", "argsort", "sort", "trace", "ptp", "searchsorted", "put", "choose",
              "compress", "partition", "argpartition", "conjugate"):
    if _name in API["ndarray"]:
        setattr(ndarray, _name, _method(_name))


def _nonzero(self: ndarray) -> Any:
    _sync("ndarray.nonzero")
    return _wrap(self._a.nonzero())


setattr(ndarray, "nonzero", _nonzero)      # (as the methods above)


def _index(key: Any) -> Tuple[Tuple[Any, ...], bool]:
    """A key with device arrays replaced by their data; whether it is advanced indexing
    (a copy: one launch). NumPy index arrays are copied to the device (CuPy accepts
    them); a boolean-array key needs its count of True on the host (a sync)."""
    items = key if isinstance(key, tuple) else (key,)
    out, advanced = [], False
    for k in items:
        if isinstance(k, ndarray):
            advanced = True
            if k.dtype == bool:
                _sync("boolean-mask indexing")
            k = k._a
        elif isinstance(k, np.ndarray) or isinstance(k, list):
            advanced = True
            _record("h2d", "a NumPy array as an index")
            k = np.asarray(k)
            if k.dtype == bool:
                _sync("boolean-mask indexing")
        out.append(k)
    if not advanced and Ellipsis not in out:
        out.append(Ellipsis)      # CuPy returns 0-d views, never scalars
    return tuple(out), advanced


def _binary(name: str, reflected: bool = False) -> Callable[[ndarray, Any], Any]:
    def op(self: ndarray, other: Any) -> Any:
        if isinstance(other, np.ndarray):
            _refuse_host(other, f"operator {name}")
        fn = globals()[name]
        return fn(other, self) if reflected else fn(self, other)
    return op


def _inplace(name: str) -> Callable[[ndarray, Any], ndarray]:
    def op(self: ndarray, other: Any) -> ndarray:
        globals()[name](self, other, out=self)
        return self
    return op


for _op, _ufunc in (("add", "add"), ("sub", "subtract"), ("mul", "multiply"),
                    ("truediv", "true_divide"), ("floordiv", "floor_divide"),
                    ("mod", "remainder"), ("pow", "power"), ("and", "bitwise_and"),
                    ("or", "bitwise_or"), ("xor", "bitwise_xor"), ("lshift", "left_shift"),
                    ("rshift", "right_shift"), ("matmul", "matmul")):
    setattr(ndarray, f"__{_op}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_op}__", _binary(_ufunc, True))
    setattr(ndarray, f"__i{_op}__", _inplace(_ufunc))
for _op, _ufunc in (("lt", "less"), ("le", "less_equal"), ("gt", "greater"),
                    ("ge", "greater_equal"), ("eq", "equal"), ("ne", "not_equal")):
    setattr(ndarray, f"__{_op}__", _binary(_ufunc))
for _op, _ufunc in (("neg", "negative"), ("pos", "positive"), ("abs", "absolute"),
                    ("invert", "invert")):      # the ufuncs are made below, from the API
    setattr(ndarray, f"__{_op}__", lambda self, _u=_ufunc: globals()[_u](self))


# -- ufuncs ---------------------------------------------------------------------------

class _Ufunc:
    """A CuPy ufunc: ``out``, ``dtype``, ``casting`` (and ``_where``) as keywords only."""

    def __init__(self, name: str, nin: int, nout: int) -> None:
        self.__name__ = self.name = name
        self.nin, self.nout, self.nargs = nin, nout, nin + nout
        self._np = getattr(np, name)

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args: Any, out: Any = None, dtype: Any = None,
                 casting: str = "same_kind", **kwargs: Any) -> Any:
        bad = set(kwargs) - {"_where"}
        if bad:
            raise TypeError(f"Wrong arguments {dict((k, kwargs[k]) for k in bad)} "
                            f"(CuPy's ufuncs take out, dtype, casting)")
        if len(args) > self.nin:
            out, args = args[self.nin] if self.nout == 1 else args[self.nin:], args[:self.nin]
        inputs = [_dev(a, self.name) for a in args]
        if out is not None:
            outs = out if isinstance(out, tuple) else (out,)
            for o in outs:
                if not isinstance(o, ndarray):
                    raise TypeError("Output arguments type must be cupy.ndarray")
            for k, a in enumerate(inputs):       # CuPy copies an input that overlaps an output
                if isinstance(a, np.ndarray) and builtins.any(
                        a is not o._a and np.may_share_memory(a, o._a) for o in outs):
                    _record("launch", f"{self.name} (input copied: it overlaps out=)")
            kw = {"out": tuple(o._a for o in outs) if self.nout > 1 else outs[0]._a}
        else:
            kw = {}
        if "_where" in kwargs:
            kw["where"] = _dev(kwargs["_where"], self.name)
        _record("launch", self.name)
        r = self._np(*inputs, dtype=dtype, casting=casting, **kw)
        return out if out is not None else _wrap(r)

    def at(self, a: Any, indices: Any, b: Any = None) -> None:
        _record("launch", f"{self.name}.at")
        args = (_dev(a, self.name), _dev(indices, self.name)) + (
            () if b is None else (_dev(b, self.name),))
        self._np.at(*args)

    def reduce(self, array: Any, axis: Any = 0, dtype: Any = None, out: Any = None,
               keepdims: bool = False) -> Any:
        _record("launch", f"{self.name}.reduce")
        return _wrap(self._np.reduce(_dev(array, self.name), axis=axis, dtype=dtype,
                                     keepdims=keepdims))

    def accumulate(self, array: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> Any:
        _record("launch", f"{self.name}.accumulate")
        return _wrap(self._np.accumulate(_dev(array, self.name), axis=axis, dtype=dtype))

    def reduceat(self, array: Any, indices: Any, axis: Any = 0, dtype: Any = None,
                 out: Any = None) -> Any:
        _record("launch", f"{self.name}.reduceat")
        return _wrap(self._np.reduceat(_dev(array, self.name), _dev(indices, self.name),
                                       axis=axis, dtype=dtype))

    def outer(self, A: Any, B: Any, **kwargs: Any) -> Any:
        _record("launch", f"{self.name}.outer")
        return _wrap(self._np.outer(_dev(A, self.name), _dev(B, self.name)))


# -- functions ------------------------------------------------------------------------

#: Functions that take host data (a copy to the device when given NumPy arrays or lists)
_FROM_HOST = {"asarray", "array", "asanyarray"}
#: Functions whose result needs a count only the device knows (a sync)
_SYNCING = {"nonzero", "flatnonzero", "argwhere", "unique", "count_nonzero_nonaxis"}
#: Functions that return views or metadata (no launch)
_NO_LAUNCH = {"empty", "empty_like", "broadcast_to", "shape", "ndim", "size", "result_type", "can_cast",
              "may_share_memory", "shares_memory", "get_array_module", "atleast_1d",
              "atleast_2d", "atleast_3d", "expand_dims", "squeeze", "swapaxes", "moveaxis",
              "transpose", "ravel_multi_index", "isscalar", "iscomplexobj", "isrealobj",
              "min_scalar_type", "promote_types", "ndarray", "broadcast_shapes",
              "broadcast_arrays", "split", "array_split", "hsplit", "vsplit", "dsplit",
              "rollaxis", "real", "imag"}


def _function(name: str, np_fn: Callable[..., Any],
              params: Optional[Sequence[Sequence[str]]]) -> Callable[..., Any]:
    def fn(*args: Any, **kwargs: Any) -> Any:
        _check_kwargs(name, kwargs, params)
        if name in _FROM_HOST:
            a = args[0] if args else kwargs.get("a", kwargs.get("obj"))
            if not isinstance(a, ndarray):
                _record("h2d", name)
                rest = {k: v for k, v in kwargs.items() if k not in ("blocking", "a", "obj")}
                return _wrap(np.array(a, *args[1:], **rest) if name == "array"
                             else np.asarray(a, *args[1:], **rest))
        args = _dev(args, name)
        kwargs = {k: _dev(v, name) for k, v in kwargs.items()}
        if name in _SYNCING:
            _sync(name)
        r = np_fn(*args, **kwargs)
        if name not in _NO_LAUNCH and not (
                isinstance(r, np.ndarray) and builtins.any(isinstance(a, np.ndarray) and r.size and
                                                  np.shares_memory(r, a) for a in args)):
            _record("launch", name)
        if "out" in kwargs and kwargs["out"] is not None:
            return _wrap(kwargs["out"])
        return _wrap(r)
    fn.__name__ = name
    return fn


def asnumpy(a: Any, stream: Any = None, order: Any = "C", out: Any = None, *,
            blocking: bool = True) -> Any:
    if isinstance(a, ndarray):
        return a.get(stream, order, out, blocking)
    return np.asarray(a, order=order)


def get_array_module(*args: Any) -> ModuleType:
    for a in args:
        if isinstance(a, ndarray):
            return sys.modules[__name__]
    return np


def ascontiguousarray(a: Any, dtype: Any = None) -> Any:
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got "
                        f"{type(a).__name__})")
    r = np.ascontiguousarray(a._a, dtype=dtype)
    if r is not a._a:
        _record("launch", "ascontiguousarray (a copy)")
        return _wrap(r)
    return a


def copyto(dst: Any, src: Any, casting: Any = "same_kind", where: Any = None) -> None:
    if not isinstance(dst, ndarray):
        raise TypeError(f"Argument 'dst' has incorrect type (expected cupy.ndarray, got "
                        f"{type(dst).__name__})")
    _record("launch", "copyto")
    np.copyto(dst._a, _dev(src, "copyto"), casting=casting,
              where=True if where is None else _dev(where, "copyto"))


def matmul(*args: Any, out: Any = None, **kwargs: Any) -> Any:
    """cupy.matmul: cuBLAS takes C- or F-contiguous operands; CuPy copies any other."""
    _check_kwargs("matmul", kwargs, API["cupy"]["matmul"]["params"])
    a, b = (_dev(x, "matmul") for x in args)
    for x in (a, b):
        if x.ndim >= 2 and not (x.flags.c_contiguous or x.flags.f_contiguous):
            _record("launch", "matmul (operand copied: neither C- nor F-contiguous)")
    if out is not None and not out._a.flags.c_contiguous:
        _record("launch", "matmul (out is not C-contiguous: computed apart, then copied)")
    _record("launch", "matmul")
    r = np.matmul(a, b, out=None if out is None else out._a, **kwargs)
    return out if out is not None else _wrap(r)


def dot(a: Any, b: Any, out: Any = None) -> Any:
    return matmul(a, b, out=out) if (a.ndim >= 1 and b.ndim >= 1 and a.ndim <= 2 and
                                     b.ndim <= 2) else _function("dot", np.dot, None)(a, b)


class ElementwiseKernel:
    """cupy.ElementwiseKernel: the body runs on the host (``kernels.py``), one launch."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel",
                 reduce_dims: bool = True, preamble: str = "", no_return: bool = False,
                 return_tuple: bool = False, **kwargs: Any) -> None:
        if preamble or kwargs:
            raise NotImplementedError("the stand-in's kernels take no preamble or options")
        self.in_params, self.out_params, self.operation = in_params, out_params, operation
        self.name = self.__name__ = name
        self.params = kernels.parse(in_params, out_params)
        self.nin = builtins.sum(p.is_input for p in self.params)
        self.nout = len(self.params) - self.nin
        self.no_return, self.return_tuple = no_return, return_tuple
        KERNELS[name] = (in_params, out_params, operation)

    def __call__(self, *args: Any, size: Optional[int] = None, block_size: int = 128,
                 stream: Any = None) -> Any:
        if len(args) != len(self.params):
            raise TypeError(f"Wrong number of arguments for {self.name!r}: the stand-in "
                            f"needs the outputs too ({len(self.params)}), got {len(args)}")
        data = []
        for p, a in zip(self.params, args):
            if isinstance(a, np.ndarray):
                _refuse_host(a, f"kernel {self.name}")
            if not p.is_input and not isinstance(a, ndarray):
                raise TypeError("Output arguments must be cupy.ndarray")
            data.append(a._a if isinstance(a, ndarray) else a)
        _record("launch", f"kernel {self.name}")
        kernels.run_host(self.params, self.operation, self.name, data, size)
        outs = args[self.nin:]
        if self.no_return:
            return None
        return outs[0] if len(outs) == 1 and not self.return_tuple else tuple(outs)


#: name -> (in_params, out_params, body) of every ElementwiseKernel built (for nvcc)
KERNELS: Dict[str, Tuple[str, str, str]] = {}


def fuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise NotImplementedError("cupy.fuse is not modelled by the stand-in")


# -- the namespace: CuPy's names, each backed by NumPy's -------------------------------

def _build_namespace() -> None:
    ns = globals()
    for name, info in API["cupy"].items():
        if name in ns and not name.startswith("_") and name not in ("ndarray",):
            if callable(ns[name]) or name in ("random", "cuda", "testing"):
                continue
        kind = info["kind"]
        if kind == "ufunc" and hasattr(np, name) and isinstance(getattr(np, name), np.ufunc):
            ns[name] = _Ufunc(name, info["nin"], info["nout"])
        elif kind == "function" and callable(getattr(np, name, None)):
            ns[name] = _function(name, getattr(np, name), info["params"])
        elif kind == "class" and hasattr(np, name) and name != "ndarray":
            ns[name] = getattr(np, name)                    # dtypes, finfo, iinfo
        elif kind == "other" and hasattr(np, name):
            ns[name] = getattr(np, name)                    # inf, nan, pi, newaxis
    ns["true_divide"] = ns["divide"]


_build_namespace()


class NotModelled(AttributeError):
    """A name CuPy has that the stand-in does not model yet."""


# Any, though it raises: the type checker reads the names that _build_namespace made
# (cupy.zeros and the others) through this
def __getattr__(name: str) -> Any:
    if name in API["cupy"]:
        raise NotModelled(f"cupy.{name} exists in CuPy but the stand-in does not "
                                  f"model it yet")
    raise AttributeError(f"module 'cupy' has no attribute {name!r} (not in CuPy "
                         f"{API['version']})")


from . import cuda, random  # noqa: E402

SUBMODULES = (cuda, random)      # cupy.cuda, cupy.random


# -- npnn sees the stand-in as CuPy ---------------------------------------------------

class _Cupyx:
    """cupyx: ``scatter_add`` (atomics on a GPU: the order of additions is not fixed)."""

    @staticmethod
    def scatter_add(a: Any, slices: Any, value: Any) -> None:
        _record("launch", "cupyx.scatter_add")
        np.add.at(_dev(a, "scatter_add"), _dev(slices, "scatter_add"), _dev(value, "scatter_add"))

    def __getattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"the stand-in's cupyx has no {name!r}")


cupyx = _Cupyx()
_SAVED: List[Tuple[Any, Any, Dict[str, Any]]] = []


def install() -> None:
    """Make ``npnn.backend`` use this module as CuPy (and forget kernels built before)."""
    from npnn import backend
    _SAVED.append((backend._cupy, backend._cupyx, dict(backend._KERNELS)))
    backend._cupy, backend._cupyx = sys.modules[__name__], cupyx
    backend._KERNELS.clear()


def uninstall() -> None:
    from npnn import backend
    backend._cupy, backend._cupyx, kernels_before = _SAVED.pop()
    backend._KERNELS.clear()
    backend._KERNELS.update(kernels_before)


@contextlib.contextmanager
def installed() -> Iterator[ModuleType]:
    install()
    try:
        yield sys.modules[__name__]
    finally:
        uninstall()

