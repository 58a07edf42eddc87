"""The fused GPU kernels, compiled and run without a GPU.

1. Every kernel's body is expanded the way ``cupy.ElementwiseKernel`` expands it
   (raw parameters are pointers indexed by hand, the others are references to
   element i) and compiled with nvcc for float and double. This catches what
   only a GPU run would otherwise show (an undeclared name, a type error).
2. The same bodies are compiled with the host's C++ compiler into a loop over i
   and run on NumPy arrays in place of the GPU kernels: the accelerated
   sequence ops then take their fused path on the CPU, and their results must
   match the textbook reference (functional/rnn.py, lstm.py, gru.py). This
   checks the kernels' indexing and numbers; test_fused.py checks them on a
   GPU, when there is one.
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from npnn.functional.accel import _common, gru, lstm, rnn

from test_accel import VARIANTS, compare_paths

MODULES = (rnn, lstm, gru)

NVCC = shutil.which("nvcc")
CXX = shutil.which("g++") or shutil.which("c++")


def _capture(monkeypatch):
    """(in_params, out_params, body, name) of every fused kernel."""
    captured = []

    def fake(in_params, out_params, body, name):
        captured.append((in_params, out_params, body, name))
        return lambda *args: None
    for module in MODULES:
        monkeypatch.setattr(module, "elementwise_kernel", fake)
    z, s = np.zeros((2, 12), "f"), np.zeros((2, 3), "f")
    lstm._Fused.forward_step(z, z, s, s, s, s)
    lstm._Fused.backward_step(z, s, s, s, s, z)
    rz = np.zeros((2, 6), "f")
    gru._Fused.forward_step(rz, rz, s, s, s[0], s, s)
    gru._Fused.backward_step(rz, s, s, s, s, z, s)
    for relu in (False, True):
        rnn._Fused.forward_step(s, s, s, relu)
        rnn._Fused.backward_step(s, s, s, relu)
    return captured


def _expand(in_params, out_params, body, name):
    params, refs = [], []
    for decl in (in_params + ", " + out_params).split(","):
        *mods, typ, var = decl.split()
        if mods == ["raw"]:
            params.append(("T*", var))
        elif typ == "T":
            params.append(("T*", "_" + var))
            refs.append(f"T& {var} = _{var}[i];")
        else:
            params.append(({"int32": "int"}.get(typ, typ), var))
    sig = ", ".join(f"{t} {v}" for t, v in params)
    lines = [f"template <typename T> __global__ void {name}({sig}, ptrdiff_t _size) {{",
             "  ptrdiff_t i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= _size) return;",
             "  " + " ".join(refs), body, "}"]
    for real in ("float", "double"):
        inst = ", ".join(t.replace("T", real) for t, _ in params)
        lines.append(f"template __global__ void {name}<{real}>({inst}, ptrdiff_t);")
    return "\n".join(lines)


@pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA compiler)")
def test_every_fused_kernel_compiles(monkeypatch, tmp_path):
    kernels = _capture(monkeypatch)
    assert len(kernels) == 8
    source = tmp_path / "kernels.cu"
    source.write_text("\n\n".join(_expand(*k) for k in kernels))
    run = subprocess.run([NVCC, "-c", "-o", str(tmp_path / "kernels.o"), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


# -- 2. the kernels on the host -------------------------------------------------

def _params(in_params, out_params):
    """[(kind, c type, name)] with kind 'raw', 'elem' (element i) or 'scalar'."""
    out = []
    for decl in (in_params + ", " + out_params).split(","):
        *mods, typ, var = decl.split()
        kind = "raw" if mods == ["raw"] else "elem" if typ == "T" else "scalar"
        out.append((kind, {"int32": "int"}.get(typ, typ), var))
    return out


def _host_function(in_params, out_params, body, name):
    """C++ source of the kernel as a loop over i, with extern "C" entry points."""
    params = _params(in_params, out_params)
    sig = ", ".join(f"{'T*' if k != 'scalar' else t} {'_' + v if k == 'elem' else v}"
                    for k, t, v in params)
    refs = " ".join(f"T& {v} = _{v}[i];" for k, _, v in params if k == "elem")
    lines = [f"template <typename T> void {name}({sig}, ptrdiff_t _size) {{",
             f"  for (ptrdiff_t i = 0; i < _size; ++i) {{ {refs}", body, "  }", "}"]
    for real in ("float", "double"):
        csig = ", ".join(f"{real + '*' if k != 'scalar' else t} a{j}"
                         for j, (k, t, _) in enumerate(params))
        call = ", ".join(f"a{j}" for j in range(len(params)))
        lines.append(f'extern "C" void {name}_{real}({csig}, ptrdiff_t size) '
                     f"{{ {name}<{real}>({call}, size); }}")
    return "\n".join(lines)


class _HostKernels:
    """Stands in for ``backend.elementwise_kernel``: each kernel compiled with the host
    compiler (all of them in one library) and called with ElementwiseKernel's rules."""

    def __init__(self, tmp_path, monkeypatch):
        with monkeypatch.context() as m:
            self.sources = {k[3]: k for k in _capture(m)}
        code = ["#include <cmath>", "#include <cstddef>", "#include <algorithm>",
                "using std::tanh;"]
        code += [_host_function(*k) for k in self.sources.values()]
        src, lib = tmp_path / "kernels.cpp", tmp_path / "kernels.so"
        src.write_text("\n\n".join(code))
        run = subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        self.lib = ctypes.CDLL(str(lib))

    def __call__(self, in_params, out_params, body, name):
        params = _params(in_params, out_params)
        n_in = len(in_params.split(","))

        def kernel(*args):
            assert len(args) == len(params)
            arrays = [a for a, (k, _, _) in zip(args, params) if k == "elem"]
            shape = np.broadcast_shapes(*(a.shape for a in arrays))
            dtype = arrays[0].dtype
            c_args, write_back = [], []
            for j, (a, (kind, _, var)) in enumerate(zip(args, params)):
                if kind == "scalar":
                    c_args.append(ctypes.c_int(int(a)))
                    continue
                assert a.dtype == dtype, f"{name}: {var} is {a.dtype}, not {dtype}"
                if kind == "elem" and j >= n_in:
                    assert a.shape == shape, f"{name}: output {var} of shape {a.shape}"
                buf = np.ascontiguousarray(np.broadcast_to(a, shape) if kind == "elem" else a)
                if j >= n_in and buf is not a:
                    write_back.append((a, buf))
                c_args.append(buf.ctypes.data_as(ctypes.c_void_p))
            real = {"float32": "float", "float64": "double"}[dtype.name]
            getattr(self.lib, f"{name}_{real}")(*c_args, ctypes.c_ssize_t(int(np.prod(shape))))
            for a, buf in write_back:
                a[...] = buf
        return kernel


@pytest.fixture
def host_kernels(tmp_path, monkeypatch):
    if CXX is None:
        pytest.skip("needs a C++ compiler")
    return _HostKernels(tmp_path, monkeypatch)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_kernels_on_the_host_match_the_reference(host_kernels, monkeypatch, variant, dtype,
                                                       masked):
    for module in MODULES:
        monkeypatch.setattr(module, "elementwise_kernel", host_kernels)
        monkeypatch.setattr(module, "fused", lambda xp: True)
    compare_paths(variant, dtype, masked)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("where", ["x", "dout"])
def test_fused_kernels_propagate_nan_as_numpy_does(host_kernels, monkeypatch, variant, where):
    """A NaN in a *valid* input or output gradient gives NaN exactly where the reference
    does (CUDA's max() would drop it: fmaxf(NaN, 0) is 0; so would h > 0 ? g : 0)."""
    from npnn.functional.accel import use_reference
    from npnn.functional.registry import CELLS
    from test_accel import make_case
    case = make_case(variant, 3, 2, 2, 3, "float64", True, False, True, "both", False, 0)
    case[where][1, 0, :] = np.nan
    cell, options = VARIANTS[variant][:2]

    def run():
        out, finals, cache = CELLS[cell].run(case["x"], case["states"], case["params"],
                                             **options)
        dx, _, grads = CELLS[cell].run_backward(case["dout"], case["dfinals"], cache)
        return [out, *finals, dx, *grads.values()]
    with use_reference():
        expected = run()
    for module in MODULES:
        monkeypatch.setattr(module, "elementwise_kernel", host_kernels)
        monkeypatch.setattr(module, "fused", lambda xp: True)
    for a, b in zip(run(), expected):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
