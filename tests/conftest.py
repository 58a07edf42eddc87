"""Shared test set-up: Hypothesis profiles and the array-backend fixtures.

The backends come from npnn's pytest plugin (``npnn.testing.plugin``; registered by
its entry point where npnn is installed, and here where it is not): 'numpy'; 'cupy'
on a real GPU (skipped without one); 'cupy-strict', the strict CuPy stand-in
``npnn.testing.strict_cupy`` (always on: CuPy's API and refusals on NumPy data,
kernels compiled on the host, syncs and launches counted). A test that takes
``backend`` gets the name npnn knows, 'numpy' or 'cupy'; under 'cupy-strict' npnn's
CuPy *is* the stand-in for the duration of the test. ``backend``, ``device``,
``strict`` and ``xp`` are the plugin's ``npnn_*`` fixtures under the suite's names.

Profiles, chosen with HYPOTHESIS_PROFILE (default 'ci'):
  ci        deterministic (derandomized), 50 examples a property, no deadline;
  dev       quick: 8 random examples a property;
  thorough  500 random examples a property, for a long run before a release.
"""

import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from npnn.functional.accel import use_acceleration, use_reference

# the backend fixture is function-scoped (it installs the stand-in for one test) and
# safe to share between a property's examples
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", derandomize=True, max_examples=50, deadline=None,
                          print_blob=True, suppress_health_check=_SUPPRESS)
settings.register_profile("dev", max_examples=8, deadline=None,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))



def pytest_configure(config):
    """The plugin, where its entry point did not load it (a checkout not installed).
    With NPNN_TEST_INSTALLED set (CI's run against the wheel) the npnn under test must
    be an installed one, in site-packages, not the checkout."""
    if os.environ.get("NPNN_TEST_INSTALLED"):
        import npnn
        if "site-packages" not in npnn.__file__:
            raise pytest.UsageError(f"NPNN_TEST_INSTALLED is set, but npnn comes from "
                                    f"{npnn.__file__}, not site-packages")
    if not config.pluginmanager.has_plugin("npnn"):
        config.pluginmanager.register(importlib.import_module("npnn.testing.plugin"), "npnn")


@pytest.fixture
def backend(npnn_backend):
    """'numpy' or 'cupy': every test that takes it runs once per backend (the strict
    stand-in as 'cupy')."""
    return npnn_backend


@pytest.fixture
def device(npnn_device):
    """'cupy' on each device backend (a real GPU, the stand-in), for the tests of the
    device path; yields the name npnn knows."""
    return npnn_device


@pytest.fixture
def strict(npnn_strict_cupy):
    """The strict stand-in, installed as npnn's CuPy for the test; yields the module."""
    return npnn_strict_cupy


@pytest.fixture
def xp(npnn_xp):
    """The array module of ``backend``."""
    return npnn_xp


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
