"""npnn's pytest plugin: the array backends as fixtures, the strict CuPy stand-in among them.

Registered through the ``pytest11`` entry point (name ``npnn``), so it loads in every
pytest run wherever npnn is installed; ``-p no:npnn`` turns it off. At load it imports
pytest and nothing else of npnn's (no NumPy work, no Hypothesis, no PyTorch, no CuPy,
and it sets no Hypothesis profile); a fixture imports what it needs when a test uses it.

Fixtures:

* ``npnn_backend``: every test that takes it runs once per backend and gets the name
  npnn knows: ``numpy``; ``cupy`` on a real GPU (skipped without CuPy and one); and
  ``cupy-strict``, the strict CuPy stand-in (``npnn.testing.strict_cupy``) installed as
  npnn's CuPy for the test, which it gets as ``cupy``. The stand-in refuses what CuPy
  refuses and counts launches and device-to-host syncs, with no GPU.
* ``npnn_device``: the device backends alone (``cupy``, ``cupy-strict``).
* ``npnn_strict_cupy``: the stand-in installed for the test; yields the module
  (``with npnn_strict_cupy.counting() as c:`` counts what runs inside).
* ``npnn_xp``: the array module of ``npnn_backend``.

The stand-in runs ``ElementwiseKernel`` bodies compiled with the host's C++ compiler;
without one (``g++`` or ``c++`` on PATH) its tests skip, saying so.
"""

import contextlib
import shutil
from types import ModuleType
from typing import Iterator

import pytest

#: The backends' test ids, as ``npnn_backend`` runs them.
BACKENDS = ("numpy", "cupy", "cupy-strict")
DEVICES = ("cupy", "cupy-strict")
NO_COMPILER = ("the strict CuPy stand-in (cupy-strict) compiles its ElementwiseKernels with "
               "the host's C++ compiler, and none was found (g++ or c++ on PATH): install one "
               "(e.g. apt-get install g++) to run these tests without a GPU")
NO_GPU = "needs CuPy and a CUDA GPU (pip install 'npnn[gpu]')"


def strict_cupy() -> ModuleType:
    """The stand-in module, or a skip of the test that asked for it if no C++ compiler
    is present."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip(NO_COMPILER)
    from npnn.testing import strict_cupy as module
    return module


@contextlib.contextmanager
def on_backend(name: str) -> Iterator[str]:
    """Backend ``name`` (one of ``BACKENDS``) in place for the block; yields the name npnn
    knows it by ('numpy' or 'cupy'). Skips the running test where it cannot run."""
    if name == "numpy":
        yield "numpy"
    elif name == "cupy":
        from npnn.backend import cupy_available
        if not cupy_available():
            pytest.skip(NO_GPU)
        yield "cupy"
    elif name == "cupy-strict":
        with strict_cupy().installed():
            yield "cupy"
    else:
        raise ValueError(f"expected a backend of {BACKENDS}, got {name!r}")


@pytest.fixture(params=BACKENDS)
def npnn_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """'numpy' or 'cupy': a test that takes it runs on numpy, on a real GPU (skipped
    without one) and on the strict stand-in (as 'cupy')."""
    with on_backend(request.param) as name:
        yield name


@pytest.fixture(params=DEVICES)
def npnn_device(request: pytest.FixtureRequest) -> Iterator[str]:
    """'cupy' on each device backend: a real GPU (skipped without one), the stand-in."""
    with on_backend(request.param) as name:
        yield name


@pytest.fixture
def npnn_strict_cupy() -> Iterator[ModuleType]:
    """The strict CuPy stand-in, installed as npnn's CuPy for the test; yields the module."""
    with strict_cupy().installed() as module:
        yield module


@pytest.fixture
def npnn_xp(npnn_backend: str) -> ModuleType:
    """The array module of ``npnn_backend`` (NumPy, CuPy or the stand-in)."""
    from npnn.backend import get_backend
    return get_backend(npnn_backend)
