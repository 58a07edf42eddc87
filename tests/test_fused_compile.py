"""The fused GPU kernels, compiled for a GPU without one.

Every kernel the accelerated ops build (each cell, masked or not, with or without
output gradients, and the dropout mask) is collected by running them on the strict
CuPy stand-in, then compiled with nvcc:

1. expanded as CuPy expands an ElementwiseKernel (``npnn.testing.strict_cupy.kernels.cuda_source``:
   raw parameters are pointers indexed by hand, the others references to element i,
   inputs const), for float and double;
2. where CuPy itself is installed (it imports without a GPU), with CuPy's own code
   generator (``cupy._core._kernel._get_elementwise_kernel_code``) and headers: the
   source NVRTC would compile on a GPU.

A body that writes one of its inputs fails both (and the stand-in's host build).
"""

import subprocess

import numpy as np
import pytest

from npnn.testing import strict_cupy
from npnn.backend import to_backend
from npnn.functional.accel import use_acceleration
from npnn.functional.registry import CELLS
from npnn.layers.recurrent import dropout_mask
from npnn.testing.strict_cupy import kernels

from test_accel import VARIANTS, make_case

NVCC = kernels.NVCC
NDARRAY, INDEXER, SCALAR = 1, 2, 3      # CuPy's _ArgKind (cupy/_core/_kernel.pxd)


@pytest.fixture(scope="module")
def every_kernel():
    """name -> (in_params, out_params, body) of every fused kernel."""
    with strict_cupy.installed(), use_acceleration():
        strict_cupy.KERNELS.clear()
        for variant, (cell, options, _, _) in VARIANTS.items():
            for masked in (False, True):
                for grads in ("final", "both"):
                    case = make_case(variant, 3, 2, 2, 3, "float32", True, masked, True, grads,
                                     False, 0, "cupy")
                    out, finals, cache = CELLS[cell].run(case["x"], case["states"],
                                                         case["params"], case["mask"], **options)
                    CELLS[cell].run_backward(case["dout"], case["dfinals"], cache)
        dropout_mask(np.random.default_rng(0), (2, 3), 0.5, to_backend(np.zeros(1), "cupy"))
        return dict(strict_cupy.KERNELS)


def test_every_variant_builds_its_kernel(every_kernel):
    # rnn tanh/relu, lstm, gru: forward plain and masked; backward x (dout or not) x masked
    assert len(every_kernel) == 4 * (2 + 4) + 1, sorted(every_kernel)


def _nvcc(tmp_path, source, *flags):
    path = tmp_path / "kernels.cu"
    path.write_text(source)
    return subprocess.run([NVCC, "-c", *flags, "-o", str(tmp_path / "kernels.o"), str(path)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA compiler)")
def test_every_fused_kernel_compiles(every_kernel, tmp_path):
    source = "\n\n".join(kernels.cuda_source(*k, name) for name, k in every_kernel.items())
    run = _nvcc(tmp_path, source)
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA compiler)")
def test_a_kernel_that_writes_an_input_does_not_compile(tmp_path):
    run = _nvcc(tmp_path, kernels.cuda_source("T x", "T y", "x = 1; y = x;", "bad"))
    assert run.returncode != 0 and "const" in run.stderr


def test_a_kernel_that_writes_an_input_fails_on_the_stand_in_too(strict):
    x = strict.zeros(3)
    with pytest.raises(kernels.CompileError):
        strict.ElementwiseKernel("T x", "T y", "x = 1; y = x;", "bad_host")(x, strict.empty(3))


def _cupy_code(cupy, in_params, out_params, body, name, dtype):
    """The source CuPy's ElementwiseKernel hands NVRTC for 1-d contiguous arrays of
    ``dtype`` (and int32/bool/uint64/float64 where the parameters say so)."""
    from cupy._core import _kernel
    ins = _kernel._get_param_info(in_params, True)
    outs = _kernel._get_param_info(out_params, False)
    params = ins + outs + _kernel._get_param_info("CIndexer _ind", False)
    infos, types = [], {}
    for p in ins + outs:
        dt = np.dtype(dtype) if p.dtype is None else p.dtype
        if p.dtype is None:
            types[p.ctype] = dt
        scalar = not p.raw and p.dtype is not None and p.dtype.kind in "iuf" and \
            p.name in ("H", "key", "p")
        infos.append(_kernel._ArgInfo(SCALAR if scalar else NDARRAY, cupy.ndarray, dt,
                                      0 if scalar else 1, True, True))
    infos.append(_kernel._ArgInfo(INDEXER, None, None, 1, True, True))
    type_map = _kernel._TypeMap(tuple(sorted(types.items())))
    return _kernel._get_elementwise_kernel_code(tuple(infos), type_map, params, body, name, "")


@pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA compiler)")
def test_every_fused_kernel_compiles_as_cupy_generates_it(every_kernel, tmp_path):
    cupy = pytest.importorskip("cupy")
    import os
    include = os.path.join(os.path.dirname(cupy.__file__), "_core", "include")
    sources = ["#include <cassert>", "#include <cupy/carray.cuh>"]
    for name, (ins, outs, body) in every_kernel.items():
        for dtype in ("float32", "float64"):
            code = _cupy_code(cupy, ins, outs, body, f"{name}_{dtype}", dtype)
            sources.append(f"namespace {name}_{dtype}_ns {{\n{code}\n}}")
    run = _nvcc(tmp_path, "\n".join(sources), "-I", include, "-std=c++17")
    assert run.returncode == 0, run.stderr[-3000:]
    bad = _cupy_code(cupy, "T x", "T y", "x = 1; y = x;", "bad", "float32")
    run = _nvcc(tmp_path, "#include <cassert>\n#include <cupy/carray.cuh>\n" + bad,
                "-I", include, "-std=c++17")
    assert run.returncode != 0 and "must be a modifiable lvalue" in run.stderr   # x is const
