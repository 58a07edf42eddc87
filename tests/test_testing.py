"""npnn.testing, the public testing kit: its checks catch wrong gradients in both modes
with default settings and pass correct ones (the mutation proofs), it says what a
learner needs to hear, and its parts load only when used."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import npnn
from npnn.gradcheck import GradientCheckWarning, check_module
from npnn.testing import (GradientCheckError, assert_close, assert_gradients,
                          assert_module_gradients)

MODES = ["full", "directional"]


# -- the mutation proofs ---------------------------------------------------------------

def _layer(mutate=None):
    """y = tanh(x W^T + b): its gradients, with ``mutate(dW) -> dW'`` applied to dW."""
    def f(x, W, b):
        y = np.tanh(x @ W.T + b)

        def vjp(dy):
            dz = dy * (1 - y ** 2)
            dW = dz.T @ x
            return {"x": dz @ W, "W": dW if mutate is None else mutate(dW.copy()),
                    "b": dz.sum(0)}
        return y, vjp
    return f


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((5, 4)), "W": 0.5 * rng.standard_normal((3, 4)),
            "b": 0.5 * rng.standard_normal(3)}


def _scaled(dW):
    return dW * 1.001


def _largest_zeroed(dW):
    dW[np.unravel_index(np.argmax(np.abs(dW)), dW.shape)] = 0.0
    return dW


def _swapped(dW):
    """Two entries that differ by at least 10% (of the larger one), swapped."""
    flat = dW.reshape(-1)
    order = np.argsort(flat)
    i, j = order[-1], order[0]          # the largest and the smallest: far apart
    assert abs(flat[i] - flat[j]) >= 0.1 * max(abs(flat[i]), abs(flat[j]))
    flat[i], flat[j] = flat[j], flat[i]
    return dW


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mutation", [_scaled, _largest_zeroed, _swapped],
                         ids=["scaled_by_1.001", "largest_entry_zeroed", "two_entries_swapped"])
def test_a_wrong_gradient_fails_with_default_settings(mode, mutation):
    with pytest.raises(GradientCheckError) as info:
        assert_gradients(_layer(mutation), _inputs(0), mode=mode)
    assert isinstance(info.value, AssertionError)
    failed = [t.name for t in info.value.report.tensors if not t.passed]
    assert failed == ["W"] and "FAIL" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_the_correct_gradient_passes_over_20_seeds(mode):
    """So a checker that always fails cannot pass the test above."""
    for seed in range(20):
        report = assert_gradients(_layer(), _inputs(seed), mode=mode, seed=seed)
        assert report.passed and len(report.tensors) == 3


def test_the_default_tolerance_is_tight_enough_for_float64():
    import inspect
    rtol = inspect.signature(assert_gradients).parameters["rtol"].default
    assert rtol <= 1e-6


def test_directional_mode_costs_two_forward_passes_per_direction():
    calls = []
    f = _layer()

    def counted(**inputs):
        calls.append(1)
        return f(**inputs)
    assert_gradients(counted, _inputs(0), mode="directional", directions=3)
    assert len(calls) == 1 + 3 * 2 * 3          # the first pass, then 3 tensors x 3 x 2
    calls.clear()
    assert_gradients(counted, _inputs(0), mode="full")
    assert len(calls) == 1 + 2 * (20 + 12 + 3)


# -- what a learner needs to hear ------------------------------------------------------

def test_float32_outputs_warn_that_precision_is_the_likely_cause():
    def f(x, W, b):
        y, vjp = _layer()(x.astype(np.float32), W.astype(np.float32), b.astype(np.float32))
        return y, lambda dy: {k: v.astype(np.float64) for k, v in vjp(dy).items()}
    with pytest.warns(GradientCheckWarning, match="precision"):
        with pytest.raises(GradientCheckError, match="most likely precision"):
            assert_gradients(f, _inputs(0))


def test_gradients_that_are_both_zero_are_not_exercised_not_passed():
    cell = npnn.GRUCell(3, 4, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3))
    report = check_module(cell, (x,))                     # h0 = 0: weight_hh never used
    rows = {t.name: t for t in report.tensors}
    assert rows["weight_hh"].result == "not exercised" and not rows["weight_hh"].exercised
    assert report.not_exercised == ["weight_hh"] and rows["weight_ih"].result == "pass"
    assert "not exercised" in report.table()
    with pytest.warns(GradientCheckWarning, match="not exercised: weight_hh"):
        assert_module_gradients(cell, (x,))
    h0 = np.random.default_rng(1).standard_normal((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not assert_module_gradients(cell, (x, h0)).not_exercised


class _WrongGRUCell(npnn.GRUCell):
    """b_ih's gradient off at entry 9: with H = 8, unit 1 of the z block (r z n)."""

    def backward(self, *grads):
        result = super().backward(*grads)
        self.grads["bias_ih"][9] += 1e-3
        return result


def test_a_failing_stacked_gate_entry_names_its_gate_and_unit():
    cell = _WrongGRUCell(3, 8, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    with pytest.raises(GradientCheckError) as info:
        assert_module_gradients(cell, (rng.standard_normal((2, 3)),
                                       rng.standard_normal((2, 8))))
    bad = [t for t in info.value.report.tensors if not t.passed]
    assert [(t.name, t.index, t.where) for t in bad] == [("bias_ih", (9,), "(z gate, unit 1)")]
    assert "(9,) (z gate, unit 1)" in str(info.value)


def test_gate_names_come_from_each_cells_file_through_the_registry():
    from npnn.gradcheck import gate_names
    assert gate_names("gru") == ("r", "z", "n") and gate_names("lstm") == ("i", "f", "g", "o")
    assert len(gate_names("peephole_lstm")) == 4 and len(gate_names("rnn")) == 1


def test_a_whole_layer_in_both_modes():
    lstm = npnn.LSTM(2, 3, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 2))
    h0 = (rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 3)))
    for mode in MODES:
        report = assert_module_gradients(lstm, (x, h0), mode=mode)
        assert len(report.tensors) == 3 + 16 and not report.not_exercised


# -- assert_close ----------------------------------------------------------------------

def test_assert_close_has_dtype_aware_tolerances_and_says_where():
    e = np.linspace(1, 2, 12).reshape(3, 4)
    assert_close((e * (1 + 1e-6)).astype(np.float32), e.astype(np.float32))    # float32: loose
    a = e.copy()
    a[1, 2] += 1e-3
    a[2, 3] += 1e-6
    with pytest.raises(AssertionError) as info:
        assert_close(a, e)                                                  # float64: tight
    message = str(info.value)
    assert "2 of 12 elements" in message and "index (1, 2)" in message
    assert f"actual {a[1, 2]:.17g}, expected {e[1, 2]:.17g}" in message
    assert_close(a, e, atol=1e-2)
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_close(e, e.T)
    with pytest.raises(AssertionError, match="1 of 1 elements"):
        assert_close(np.array([np.nan]), np.array([np.nan]))
    assert_close(np.array([np.nan]), np.array([np.nan]), equal_nan=True)


def test_assert_close_takes_cupy_arrays(npnn_strict_cupy):
    cp = npnn_strict_cupy
    e = np.arange(6.0)
    assert_close(cp.asarray(e), e)
    with pytest.raises(AssertionError, match="index \\(5,\\)"):
        assert_close(cp.asarray(e + np.eye(6)[5]), cp.asarray(e))


def test_checks_run_on_every_backend(npnn_backend, npnn_xp):
    """A layer's gradients checked on its own backend: numpy, a GPU, the stand-in."""
    from npnn.backend import to_backend
    cell = npnn.GRUCell(3, 2, dtype="float64", seed=0).to(npnn_backend)
    rng = np.random.default_rng(0)
    x, h = (to_backend(rng.standard_normal(s), npnn_backend) for s in ((2, 3), (2, 2)))
    assert isinstance(x, npnn_xp.ndarray)
    assert_module_gradients(cell, (x, h), mode="directional")


# -- PyTorch ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_assert_matches_torch_passes_a_true_twin_and_names_a_wrong_gradient(name):
    torch = pytest.importorskip("torch")
    from npnn.testing import assert_matches_torch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3))
    ours = getattr(npnn, name)(3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    theirs = getattr(torch.nn, name)(3, 5, num_layers=2, bidirectional=True).double()
    assert_matches_torch(ours, theirs, (x,))

    class Wrong(type(ours)):
        def backward(self, *grads):
            result = super().backward(*grads)
            self.grads["weight_hh_l1_reverse"] *= 1.0001
            return result
    wrong = Wrong(3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    with pytest.raises(AssertionError, match="dweight_hh_l1_reverse") as info:
        assert_matches_torch(wrong, theirs, (x,))
    assert "dx" not in str(info.value)


# -- strategies ------------------------------------------------------------------------

def test_strategies_allow_every_dimension_to_be_one_and_keep_values_bounded():
    from hypothesis import find, given, settings
    from npnn.testing import strategies as nst
    assert find(nst.sequences(), lambda x: x.shape == (1, 1, 1)).shape == (1, 1, 1)
    assert find(nst.sequences(D=3), lambda x: x.shape[0] == 5).shape[2] == 3
    lstm = npnn.LSTM(3, 2, num_layers=2, batch_first=True, dtype="float64")

    @settings(max_examples=20, deadline=None)
    @given(nst.sequences(max_T=3), nst.lengths(4, 6), nst.layer_inputs(lstm),
           nst.layer_inputs(npnn.GRUCell(3, 2, dtype="float64")))
    def check(x, lengths, args, cell_args):
        assert x.dtype == np.float64 and np.all(np.abs(x) <= nst.BOUND)
        assert lengths.shape == (4,) and lengths.min() >= 1 and lengths.max() <= 6
        x, (h0, c0) = args
        assert x.shape[0] <= 4 and x.shape[2] == 3 and h0.shape == c0.shape
        assert h0.shape[:1] == (2,) and h0.shape[1] == x.shape[0]
        assert cell_args[0].shape[1] == 3 and cell_args[1].shape == (cell_args[0].shape[0], 2)
        lstm(x, (h0, c0), lengths=np.minimum(lengths[:1].repeat(x.shape[0]), x.shape[1]))
    check()


# -- loading: the plugin and the optional peers ----------------------------------------

def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(npnn.__file__)))


def test_the_plugin_imports_nothing_heavy_when_it_loads():
    run = _run("""
        import sys
        import npnn.testing.plugin
        heavy = [m for m in ("hypothesis", "torch", "cupy", "numpy", "npnn.gradcheck",
                             "npnn.testing.strict_cupy") if m in sys.modules]
        print(heavy)
        """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_npnn_testing_works_without_hypothesis_or_torch():
    run = _run("""
        import sys
        sys.modules["hypothesis"] = sys.modules["torch"] = None     # not installed
        import numpy as np
        import npnn.testing as nt
        nt.assert_close(np.ones(2), np.ones(2))
        x = np.ones((2, 2))
        nt.assert_gradients(lambda x: (2 * x, lambda d: {"x": 2 * d}), {"x": x})
        for name in ("strategies", "assert_matches_torch"):
            try:
                getattr(nt, name)
            except ImportError as error:
                print(error)
        """)
    assert run.returncode == 0, run.stderr
    assert "pip install hypothesis" in run.stdout and "pip install torch" not in run.stdout
    assert_matches = _run("""
        import sys
        sys.modules["torch"] = None
        import npnn, numpy as np
        from npnn.testing import assert_matches_torch
        try:
            assert_matches_torch(npnn.GRU(1, 1), None, (np.ones((1, 1, 1)),))
        except ImportError as error:
            print(error)
        """)
    assert "pip install torch" in assert_matches.stdout, assert_matches.stderr


def test_the_entry_point_registers_the_plugin(pytestconfig):
    """Where npnn is installed with this version's metadata (the wheel in CI), pytest
    loads the plugin through its ``pytest11`` entry point."""
    from importlib.metadata import entry_points
    found = [ep for ep in entry_points(group="pytest11") if ep.name == "npnn"]
    installed = "site-packages" in npnn.__file__
    if not found and not installed:
        pytest.skip("npnn is not installed from this checkout (its entry points are not here)")
    assert [ep.value for ep in found] == ["npnn.testing.plugin"]
    assert pytestconfig.pluginmanager.get_plugin("npnn").__name__ == "npnn.testing.plugin"


def test_the_strict_stand_in_skips_clearly_without_a_compiler(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_x(npnn_strict_cupy):\n    pass\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(npnn.__file__)))
    env = {**os.environ, "PATH": str(tmp_path),          # no g++, no c++
           "PYTHONPATH": os.pathsep.join([root] + [p for p in os.environ.get(
               "PYTHONPATH", "").split(os.pathsep) if p])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "-p", "npnn.testing.plugin", "-p", "no:npnn", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "1 skipped" in run.stdout, run.stdout + run.stderr
    assert "C++ compiler" in run.stdout
