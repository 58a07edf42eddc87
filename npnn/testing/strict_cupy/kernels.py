"""CuPy's ``ElementwiseKernel`` bodies, compiled without a GPU.

``host_kernel`` compiles a kernel body with the host's C++ compiler into a loop over
i, declared as CuPy declares it (inputs ``const``, so a body that writes an input
fails to compile here as it would under NVRTC), with CUDA's meaning of ``max`` and
``min`` on floats (``fmaxf``/``fminf``: a NaN argument is dropped). The stand-in's
``ElementwiseKernel`` runs kernels through it. ``cuda_source`` expands a body into a
``__global__`` function the same way, for nvcc. Libraries are cached on disk by the
hash of their source.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

CXX = shutil.which("g++") or shutil.which("c++")
NVCC = shutil.which("nvcc")

#: dtype name -> C type, for scalar and array parameters of a fixed type
C_TYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
           "uint32": "unsigned int", "uint64": "unsigned long long", "bool": "bool",
           "int8": "signed char", "uint8": "unsigned char"}

HOST_PREAMBLE = """#include <cmath>
#include <cstddef>
#include <cstdint>
using std::tanh; using std::exp; using std::log; using std::sqrt; using std::fabs;
using std::log1p; using std::expm1;
// CUDA's max/min on floating point are fmax/fmin: a NaN argument is dropped
template <typename A, typename B> inline auto max(A a, B b) -> decltype(a + b) {
  return std::fmax(a, b); }
template <typename A, typename B> inline auto min(A a, B b) -> decltype(a + b) {
  return std::fmin(a, b); }
"""


class Param:
    """One parameter of a kernel: ``raw``, its type (a dtype name or a letter such as T),
    its name, and whether it is an input (CuPy declares those const)."""

    def __init__(self, decl: str, is_input: bool) -> None:
        *mods, self.type, self.name = decl.split()
        unknown = set(mods) - {"raw"}
        if unknown:
            raise ValueError(f"unknown keyword {unknown} in kernel parameter {decl!r}")
        self.raw = "raw" in mods
        self.is_input = is_input
        self.letter = len(self.type) == 1

    def ctype(self, types: Dict[str, str]) -> str:
        return types[self.type] if self.letter else C_TYPES[np.dtype(self.type).name]


def parse(in_params: str, out_params: str) -> List[Param]:
    """[Param] of a kernel, inputs first."""
    ins = [Param(d, True) for d in in_params.split(",") if d.strip()]
    outs = [Param(d, False) for d in out_params.split(",") if d.strip()]
    names = [p.name for p in ins + outs]
    if "i" in names:
        raise ValueError("Can not use 'i' as a parameter name")
    return ins + outs


def _is_array_param(p: Param, arg: Any) -> bool:
    return p.raw or isinstance(arg, np.ndarray)


def host_source(params: Sequence[Param], body: str, name: str, types: Dict[str, str],
                array_args: Sequence[bool]) -> str:
    """C++ of one kernel instance: ``extern "C" void name(args..., ptrdiff_t _size)``."""
    sig: List[str] = []
    refs: List[str] = []
    for p, is_array in zip(params, array_args):
        t = p.ctype(types)
        const = "const " if p.is_input else ""
        if not is_array:                               # a scalar, passed by value
            sig.append(f"{t} {p.name}")
        elif p.raw:
            sig.append(f"{const}{t}* {p.name}")
        else:
            sig.append(f"{const}{t}* _raw_{p.name}")
            refs.append(f"{const}{t}& {p.name} = _raw_{p.name}[i];")
    typedefs = "".join(f"typedef {c} {letter};\n" for letter, c in sorted(types.items()))
    return (HOST_PREAMBLE + typedefs +
            f'extern "C" void {name}({", ".join(sig + ["ptrdiff_t _size"])}) {{\n'
            f"  for (ptrdiff_t i = 0; i < _size; ++i) {{\n    {' '.join(refs)}\n"
            f"{body}\n  }}\n}}\n")


def cuda_source(in_params: str, out_params: str, body: str, name: str,
                reals: Sequence[str] = ("float", "double")) -> str:
    """The kernel as CuPy expands it for arrays of one dimension, as a template
    instantiated for each of ``reals`` (for nvcc): raw parameters are pointers indexed
    by hand, the others references to element i, inputs const."""
    params = parse(in_params, out_params)
    sig: List[str] = []
    refs: List[str] = []
    for p in params:
        t = p.type if p.letter else C_TYPES[np.dtype(p.type).name]
        const = "const " if p.is_input else ""
        if p.raw:
            sig.append(f"{const}{t}* {p.name}")
        elif p.letter or p.type == "bool":
            sig.append(f"{const}{t}* _raw_{p.name}")
            refs.append(f"{const}{t}& {p.name} = _raw_{p.name}[i];")
        else:
            sig.append(f"{t} {p.name}")
    letters = sorted({p.type for p in params if p.letter})
    template = ", ".join(f"typename {x}" for x in letters)
    lines = [f"template <{template}> __global__ void {name}({', '.join(sig)}, ptrdiff_t _size) {{",
             "  ptrdiff_t i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= _size) return;",
             "  " + " ".join(refs), body, "}"]
    for real in reals:
        inst = ", ".join(s.rsplit(" ", 1)[0] for s in sig)
        for x in letters:
            inst = inst.replace(f"{x}*", f"{real}*").replace(f"{x}&", f"{real}&")
        lines.append(f"template __global__ void {name}<{', '.join([real] * len(letters))}>"
                     f"({inst}, ptrdiff_t);")
    return "\n".join(lines)


def cache_dir() -> str:
    path = os.environ.get("NPNN_KERNEL_CACHE") or os.path.join(
        tempfile.gettempdir(), f"npnn-host-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}")
    os.makedirs(path, exist_ok=True)
    return path


_LIBS: Dict[str, ctypes.CDLL] = {}


def compile_host(source: str, name: str) -> Callable[..., Any]:
    """The ctypes function ``name`` of ``source`` compiled with the host's C++ compiler
    (cached on disk by the source's hash)."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:20]
    if digest not in _LIBS:
        if CXX is None:
            raise RuntimeError("the strict CuPy stand-in runs kernels through a C++ compiler; "
                               "none was found (install g++)")
        folder = cache_dir()
        lib = os.path.join(folder, f"{name}-{digest}.so")
        if not os.path.exists(lib):
            src = os.path.join(folder, f"{name}-{digest}.cpp")
            with open(src, "w") as f:
                f.write(source)
            tmp = f"{lib}.{os.getpid()}.tmp"
            run = subprocess.run([CXX, "-O1", "-std=c++14", "-shared", "-fPIC", "-o", tmp, src],
                                 capture_output=True, text=True, timeout=300)
            if run.returncode != 0:
                raise CompileError(f"kernel {name} does not compile:\n{run.stderr}")
            os.replace(tmp, lib)
        _LIBS[digest] = ctypes.CDLL(lib)
    return getattr(_LIBS[digest], name)


class CompileError(RuntimeError):
    """A kernel body that the compiler refuses (NVRTC would refuse it too)."""


def _scalar(value: Any, ctype: str) -> Any:
    return {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int,
            "long long": ctypes.c_longlong, "unsigned int": ctypes.c_uint,
            "unsigned long long": ctypes.c_ulonglong, "bool": ctypes.c_bool,
            "signed char": ctypes.c_byte, "unsigned char": ctypes.c_ubyte}[ctype](value)


def run_host(params: Sequence[Param], body: str, name: str, args: Sequence[Any],
             size: Optional[int] = None) -> None:
    """Run the kernel on NumPy arrays ``args`` (inputs then outputs, all given), with
    ElementwiseKernel's rules: the non-raw arrays broadcast to one shape, the loop runs
    over its elements (``size`` when every array is raw), raw arrays are indexed
    as C-ordered, every array of one type letter has one dtype."""
    if len(args) != len(params):
        raise TypeError(f"Wrong number of arguments for '{name}': expected {len(params)} "
                        f"(with outputs), got {len(args)}")
    types: Dict[str, np.dtype[Any]] = {}
    for p, a in zip(params, args):
        if p.letter and isinstance(a, np.ndarray):
            t = types.setdefault(p.type, a.dtype)
            if t != a.dtype:
                raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {t} {p.type}")
        elif not p.letter and isinstance(a, np.ndarray) and a.dtype != np.dtype(p.type):
            raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {p.type}")
    elementwise = [a for p, a in zip(params, args) if not p.raw and isinstance(a, np.ndarray)]
    if size is None:
        if not elementwise:
            raise ValueError("Loop size is undecided.")
        shape = np.broadcast_shapes(*(a.shape for a in elementwise))
        size = int(np.prod(shape))
    else:
        shape = (size,)
    c_types = {k: C_TYPES[v.name] for k, v in types.items()}
    arrays = [_is_array_param(p, a) for p, a in zip(params, args)]
    fn = compile_host(host_source(params, body, name, c_types, arrays), name)
    c_args: List[Any] = []
    write_back: List[Tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
    for p, a in zip(params, args):
        if not isinstance(a, np.ndarray):
            c_args.append(_scalar(a, p.ctype(c_types)))
            continue
        if not p.raw and not p.is_input and a.shape != shape:
            raise ValueError("Out shape is mismatched")
        buf = np.ascontiguousarray(a if p.raw else np.broadcast_to(a, shape))
        if not p.is_input and not np.shares_memory(buf, a):
            write_back.append((a, buf))
        c_args.append(buf.ctypes.data_as(ctypes.c_void_p))
    if size:
        fn(*c_args, ctypes.c_ssize_t(size))
    for a, buf in write_back:
        a[...] = buf
