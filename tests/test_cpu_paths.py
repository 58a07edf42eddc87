"""The plain-NumPy speed-ups of the language-model step (issue 16), each against what it
replaced: the cross-entropy's layout and dtype, the embedding's scatter-add, Adam in place."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npnn
from npnn import functional as F
from npnn.backend import scatter_add
from npnn.optim import Adam


def test_cross_entropy_gradient_keeps_the_logits_layout():
    """The language model's logits are a transposed view (N, T, V) of a (T, N, V) array;
    their gradient comes back with the same memory layout, so the model's transpose back
    to (T, N, V) is free (it used to copy the whole gradient)."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 3, 7)).astype(np.float32).transpose(1, 0, 2)  # (N, T, V)
    target = rng.integers(0, 7, size=(3, 5))
    for eps in (0.0, 0.1):
        _, cache = F.softmax_cross_entropy(logits, target, label_smoothing=eps)
        d = F.softmax_cross_entropy_backward(None, cache)
        assert d.dtype == np.float32
        assert d.transpose(1, 0, 2).flags.c_contiguous


@given(M=st.integers(1, 60), V=st.integers(1, 9), E=st.integers(1, 5),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**32 - 1))
def test_scatter_add_equals_add_at(M, V, E, dtype, seed):
    """Sorting and summing runs of equal indices gives np.add.at's sums (to rounding:
    the additions are grouped differently)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, size=M)
    values = rng.standard_normal((M, E)).astype(dtype)
    start = rng.standard_normal((V, E)).astype(dtype) if seed % 2 else np.zeros((V, E), dtype)
    np.add.at(reference := start.copy(), idx, values)
    np.testing.assert_allclose(scatter_add(start.copy(), idx, values), reference,
                               rtol=1e-6 if dtype == "float32" else 1e-14, atol=1e-6)


def test_adam_in_place_allocates_no_parameter_sized_arrays():
    lin = npnn.Linear(300, 200, seed=0)
    opt = Adam(lin, lr=1e-3)
    for g in lin.grads.values():
        g[...] = 1.0
    opt.step()                                          # creates the buffers and work arrays
    import tracemalloc
    tracemalloc.start()
    opt.step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < lin.params["weight"].nbytes / 4       # was ~8 weight-sized temporaries


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_of_one_class_has_an_exactly_zero_gradient(eps):
    _, cache = F.softmax_cross_entropy(np.zeros((3, 1)), np.zeros(3, int), label_smoothing=eps)
    assert not F.softmax_cross_entropy_backward(None, cache).any()


# -- BLAS threads ---------------------------------------------------------------------
@pytest.mark.parametrize("cores, busy, threads", [(2, 0, 2), (2, 1, 1), (2, 3, 1), (8, 2, 6)])
def test_auto_threads_leaves_busy_cores_alone(monkeypatch, cores, busy, threads):
    from npnn import backend
    monkeypatch.setattr(backend, "usable_cores", lambda: cores)
    monkeypatch.setattr(backend, "busy_cores", lambda: busy)
    assert backend.auto_threads() == threads


def test_blas_threads_limits_numpys_blas():
    from threadpoolctl import threadpool_info
    from npnn.backend import blas_threads
    with blas_threads(1):
        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas)


@pytest.mark.parametrize("flag, expected", [([], "auto"), (["--threads", "1"], 1)])
def test_every_command_runs_under_its_thread_setting(monkeypatch, tmp_path, flag, expected):
    from npnn.training import cli
    seen = []
    monkeypatch.setattr(cli, "auto_threads", lambda: "auto")
    monkeypatch.setattr(cli, "blas_threads", lambda n: seen.append(n) or _nothing())
    assert cli.main(["generate", str(tmp_path / "missing")] + flag) == 2
    assert seen == [expected]


def _nothing():
    import contextlib
    return contextlib.nullcontext()
