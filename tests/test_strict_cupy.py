"""The strict CuPy stand-in itself: each refusal and each counter works."""

import json
import os

import numpy as np
import pytest

from npnn.testing import strict_cupy as cp
from npnn.testing.strict_cupy import kernels

HERE = os.path.basename(__file__)


def a():
    return cp.asarray(np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda x: x.__array__(),
                                     lambda x: np.ascontiguousarray(x.get()) + np.asarray(x)])
def test_implicit_conversion_to_numpy_is_refused(convert):
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        convert(a())


def test_numpy_functions_dispatch_to_the_device_as_cupy_does():
    x = a()
    assert isinstance(np.sum(x), cp.ndarray) and isinstance(np.exp(x), cp.ndarray)
    assert isinstance(np.concatenate([x, x]), cp.ndarray)
    missing = next(n for n in ("busday_count", "nanpercentile", "einsum_path", "piecewise")
                   if n not in cp.API["cupy"])
    with pytest.raises(TypeError):          # CuPy has no such function: NumPy refuses
        getattr(np, missing)(x, [0, 1]) if missing != "busday_count" else np.busday_count(x, x)


@pytest.mark.parametrize("mix", [lambda x, h: x + h, lambda x, h: h * x, lambda x, h: cp.add(x, h),
                                 lambda x, h: cp.where(x > 0, x, h),
                                 lambda x, h: cp.concatenate([x, h]),
                                 lambda x, h: cp.matmul(x, h.T)])
def test_numpy_arrays_are_refused_by_device_functions_and_operators(mix):
    with pytest.raises(TypeError, match="Unsupported type"):
        mix(a(), np.ones((2, 3)))


def test_assignment_takes_device_arrays_and_scalars_only():
    x = a()
    x[0] = 1.0
    x[1] = cp.zeros(3)
    x[...] = np.float64(2.0)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        x[0] = np.ones(3)


def test_names_and_keywords_outside_cupys_api_are_refused():
    with pytest.raises(AttributeError, match="no attribute 'not_a_function'"):
        cp.not_a_function
    with pytest.raises(TypeError, match="Wrong arguments"):     # ufuncs: out, dtype, casting
        cp.multiply(a(), 2.0, where=a() > 0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'like'"):
        cp.zeros(3, like=a())
    with pytest.raises(TypeError, match="incorrect type"):
        cp.ascontiguousarray(np.ones(3))
    assert not hasattr(cp, "errstate")                       # cupyx.errstate, not cupy's


@pytest.mark.parametrize("name, sync", [
    ("float()", float), ("int()", lambda x: int(x[0, 0])), ("bool()", lambda x: bool(x[0, 0])),
    ("ndarray.item", lambda x: x[0, 0].item()), ("ndarray.tolist", lambda x: x.tolist()),
    ("ndarray.get", lambda x: x.get()), ("ndarray.get", cp.asnumpy), ("repr()", repr),
    ("format()", lambda x: f"{x[0, 0]:.2f}"), ("boolean-mask indexing", lambda x: x[x > 2]),
    ("nonzero", cp.nonzero), ("flatnonzero", cp.flatnonzero)])
def test_every_device_to_host_read_is_counted_with_its_call_site(name, sync):
    x = a()
    if name == "float()":
        x = x.sum()
    with cp.counting() as c:
        sync(x)
    assert [e.what for e in c.syncs] == [name]
    assert c.syncs[0].site.startswith(f"tests/{HERE}:") or c.syncs[0].site.startswith(HERE)


def test_launches_and_copies_are_counted():
    host = np.ones((2, 3))
    with cp.counting() as c:
        x = cp.asarray(host)                   # a host-to-device copy
        y = x.T                                 # views: free
        y = x[0]
        y = x.reshape(3, 2)
        y = cp.tanh(x)                          # one launch each
        y += x
        y = x @ x.T
        x[0] = 0
        cp.copyto(x, y[:2, :3] if y.shape == (2, 3) else x)
        z = x[:, ::2]
        z.reshape(4)                            # a copy: a launch
    assert len(c.h2d) == 1
    assert [e.what for e in c.launches] == ["tanh", "add", "matmul", "ndarray.__setitem__",
                                           "copyto", "ndarray.reshape (a copy)"]
    with cp.counting() as c:
        cp.matmul(cp.zeros((4, 6))[:, :3], cp.zeros((3, 2)))   # neither C nor F: CuPy copies
        w = cp.zeros(5)
        cp.add(w[1:], w[:-1], out=w[:-1])      # out overlapping an input: CuPy copies it
    whats = [e.what for e in c.launches]
    assert "matmul (operand copied: neither C- nor F-contiguous)" in whats
    assert "add (input copied: it overlaps out=)" in whats


def test_elementwise_kernels_run_their_body_with_cudas_semantics():
    k = cp.ElementwiseKernel("T x, raw T r, int32 n", "T y",
                             "y = max(x, (T)0) + r[(i + 1) % n];", "strict_test_kernel")
    x = cp.asarray(np.array([np.nan, -1.0, 2.0]))
    y = cp.empty(3)
    with cp.counting() as c:
        k(x, cp.asarray(np.array([10.0, 20.0, 30.0])), np.int32(3), y)
    assert [e.what for e in c.launches] == ["kernel strict_test_kernel"]
    np.testing.assert_array_equal(y.get(), [20.0, 30.0, 12.0])   # fmax(NaN, 0) = 0, as CUDA
    assert "strict_test_kernel" in cp.KERNELS
    with pytest.raises(TypeError, match="Type is mismatched"):
        k(x, cp.zeros(3, dtype="float32"), np.int32(3), y)
    with pytest.raises(kernels.CompileError):
        cp.ElementwiseKernel("T x", "T y", "x = y;", "writes_its_input")(x, y)


def test_installed_makes_npnn_see_the_stand_in_as_cupy():
    from npnn import backend
    assert backend.cupy_module() is not cp
    with cp.installed():
        assert backend.cupy_module() is cp and backend.cupy_available()
        assert backend.get_array_module(a()) is cp
        assert isinstance(backend.to_backend(np.ones(2), "cupy"), cp.ndarray)
    assert backend.cupy_module() is not cp


def test_the_recorded_api_matches_an_installed_cupy():
    """cupy_api.json is CuPy's (where CuPy is installed: ``record_api.py`` rewrites it)."""
    cupy = pytest.importorskip("cupy")
    from npnn.testing.strict_cupy.record_api import describe
    with open(os.path.join(os.path.dirname(cp.__file__), "cupy_api.json")) as f:
        api = json.load(f)
    if api["version"] != cupy.__version__:
        pytest.skip(f"recorded from CuPy {api['version']}, installed {cupy.__version__}")
    for name, info in api["cupy"].items():
        assert describe(getattr(cupy, name)) == info, name
