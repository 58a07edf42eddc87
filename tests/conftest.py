"""Shared test set-up: Hypothesis profiles and the array-backend fixture.

Profiles, chosen with HYPOTHESIS_PROFILE (default 'ci'):
  ci        deterministic (derandomized), 50 examples a property, no deadline;
  dev       quick: 8 random examples a property;
  thorough  500 random examples a property, for a long run before a release.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from npnn.backend import cupy_available, get_backend
from npnn.functional.accel import use_acceleration, use_reference

settings.register_profile("ci", derandomize=True, max_examples=50, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=8, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(
        not cupy_available(), reason="needs CuPy and a CUDA GPU")),
]


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    """'numpy' or 'cupy': every test that takes it runs once per available backend."""
    return request.param


@pytest.fixture(scope="session")
def xp(backend):
    """The array module of ``backend``."""
    return get_backend(backend)


@pytest.fixture
def reference_only():
    """Within the test, every recurrent op runs its textbook reference (functional/*.py),
    not an acceleration: finite differences and PyTorch parity check the reference,
    and test_accel.py checks every acceleration against it."""
    with use_reference():
        yield


#: The two implementations of the recurrent ops: parametrize a test with
#: ``@pytest.mark.parametrize("path", PATHS)`` and run its ops ``with on_path(path):``
#: (the acceleration is forced, whatever the size, where the cell has one).
PATHS = ["accelerated", "reference"]


def on_path(path):
    """A context in which the recurrent ops take ``path`` (one of ``PATHS``)."""
    return use_reference() if path == "reference" else use_acceleration()


def to_numpy(a):
    from npnn.backend import to_numpy as _to_numpy
    return _to_numpy(a)


def assert_close(actual, expected, atol, name=""):
    """Max-abs-difference comparison that reports the difference on failure."""
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    e = np.asarray(to_numpy(expected), dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != {e.shape}"
    diff = float(np.max(np.abs(a - e), initial=0.0))
    assert diff < atol, f"{name}: max abs diff {diff:.3e} >= {atol:.1e}"


@pytest.fixture
def text_file(tmp_path):
    """A small UTF-8 text (``_helpers.TEXT``) in the test's folder."""
    from _helpers import TEXT
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path
