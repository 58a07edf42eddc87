"""Backpropagation through time in bounded memory (``npnn.functional.bptt``): for every
registered cell and both paths, the checkpointed op equals full BPTT, bit for bit where
the budget keeps everything (m >= T), within 1e-12 relative to each result's largest
value otherwise; and its policies (``bptt_policy``) run what they predict."""

import functools

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from npnn.testing import strict_cupy
from npnn.backend import to_backend, to_numpy
from npnn.functional import bptt_policy
from npnn.functional.registry import CELLS

from conftest import PATHS, on_path

RTOL = 1e-12


def _case(cell, T, N, D, H, seed, masked, backend="numpy"):
    """Parameters, input, initial states, mask and the gradients that reach the outputs."""
    rng = np.random.default_rng(seed)
    if cell.sizes:                              # lstmp: a projection P = H - 1 >= 1
        H = max(H, 2)
    sizes = {"proj_size": H - 1} if cell.sizes else {}
    dev = functools.partial(to_backend, backend=backend)
    params = {p.arg: dev(0.5 * rng.standard_normal(shape))
              for p, shape in cell.param_shapes(D, H, True, **sizes)}
    x = dev(rng.standard_normal((T, N, D)))
    states = tuple(dev(0.5 * rng.standard_normal(s)) for s in cell.state_shapes(N, H, **sizes))
    mask = None
    if masked:
        lengths = rng.integers(1, T + 1, size=N)
        mask = dev(np.arange(T)[:, None] < lengths[None, :])
    dout = dev(rng.standard_normal((T, N, cell.output_size(H, **sizes))))
    dfinals = tuple(dev(rng.standard_normal(s.shape)) for s in states)
    return params, x, states, mask, dout, dfinals


def _run(cell, case, memory):
    params, x, states, mask, dout, dfinals = case
    out, finals, cache = cell.run(x, states, params, mask, bptt_memory=memory)
    dx, dinits, grads = cell.run_backward(dout, dfinals, cache)
    results = {"out": out, "dx": dx, **{f"final{k}": s for k, s in enumerate(finals)},
               **{f"dinit{k}": s for k, s in enumerate(dinits)}, **grads}
    return {k: to_numpy(v) for k, v in results.items()}, cache


def _compare(full, ckpt, exact):
    assert full.keys() == ckpt.keys()
    for name, a in full.items():
        b = ckpt[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if exact:
            assert np.array_equal(a, b), f"{name}: not bit for bit"
        else:
            scale = max(float(np.max(np.abs(a), initial=0.0)), 1e-300)
            diff = float(np.max(np.abs(a - b), initial=0.0))
            assert diff <= RTOL * scale, f"{name}: {diff:.3e} > {RTOL:.0e} x {scale:.3e}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(CELLS))
@given(T=st.integers(1, 12), N=st.integers(1, 3), D=st.integers(1, 4), H=st.integers(1, 4),
       memory=st.one_of(st.integers(1, 14), st.just("sqrt")), masked=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@example(T=1, N=1, D=1, H=1, memory=1, masked=False, seed=0)       # T = 1
@example(T=9, N=2, D=2, H=2, memory=1, masked=True, seed=1)        # one slot: restarts
@example(T=7, N=2, D=3, H=3, memory=7, masked=True, seed=2)        # m = T: full BPTT
@example(T=11, N=3, D=2, H=3, memory=3, masked=True, seed=3)       # the DP's splits
def test_checkpointed_equals_full_bptt(name, path, T, N, D, H, memory, masked, seed):
    cell = CELLS[name]
    case = _case(cell, T, N, D, H, seed, masked)
    with on_path(path):
        full, _ = _run(cell, case, None)
        ckpt, cache = _run(cell, case, memory)
    plan = cache.plan
    _compare(full, ckpt, exact=plan.name == "leaf")
    if memory != "sqrt" and memory >= T:
        assert plan.name == "leaf"
    assert sum(cache.steps_run) == plan.predicted_steps()


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole_lstm", "layernorm_lstm",
                                  "layernorm_gru"])
@pytest.mark.parametrize("memory", [1, 3, "sqrt", 20])
def test_device_no_extra_syncs(name, memory):
    """On the strict CuPy stand-in the checkpointed op runs, equals the NumPy results,
    and synchronises no more than full BPTT does (the schedule needs only T and m)."""
    cell, T = CELLS[name], 10
    expected, _ = _run(cell, _case(cell, T, 2, 3, 3, 5, True), memory)
    counted = {}
    with strict_cupy.installed() as cp:
        case = _case(cell, T, 2, 3, 3, 5, True, backend="cupy")
        for label, m in (("full", None), ("ckpt", memory)):
            with cp.counting() as c:
                params, x, states, mask, dout, dfinals = case
                out, finals, cache = cell.run(x, states, params, mask, bptt_memory=m)
                dx, dinits, grads = cell.run_backward(dout, dfinals, cache)
            counted[label] = len(c.syncs)
        got = {k: to_numpy(v) for k, v in {"out": out, "dx": dx, **grads}.items()}
    assert counted["ckpt"] <= counted["full"]
    for k, v in got.items():
        np.testing.assert_allclose(v, expected[k], rtol=0, atol=1e-12)


# -- the policies ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _brute(t, m):
    """(1)-(3) of ``bptt_policy``, by brute force."""
    if t <= m:
        return t
    if m == 1:
        return t * (t + 1) // 2
    return min(y + _brute(t - y, m - 1) + _brute(y, m) for y in range(1, t))


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 13, 21, 34])
def test_dp_is_the_recurrence_and_beats_even_spacing(T):
    for m in range(1, T + 2):
        dp = bptt_policy.dp_policy(T, m)
        assert dp.predicted_steps() == _brute(T, m), (T, m)
        even = bptt_policy.best_even(T, m)
        if even is not None:
            assert even.slots <= m
            assert dp.predicted_steps() <= even.predicted_steps() == bptt_policy.even_steps(
                T, even.L)


def test_worked_example():
    """docs/derivations.md's example: T = 6 steps in m = 3 slots."""
    assert bptt_policy.dp_policy(6, 3).predicted_steps() == _brute(6, 3) == 11
    assert bptt_policy.dp_policy(6, 3).split(6, 3) == (2, 2)


@pytest.mark.parametrize("T, m", [(1000, 20), (10_000, 199), (100_000, 632), (100_000, 316)])
def test_dp_never_runs_more_than_sqrt_at_the_same_slots(T, m):
    sqrt = bptt_policy.sqrt_policy(T)
    dp = bptt_policy.dp_policy(T, max(m, sqrt.slots))
    assert dp.slots == sqrt.slots or m > sqrt.slots
    assert dp.predicted_steps() <= sqrt.predicted_steps()
    best = bptt_policy.best_even(T, m)        # None: no evenly spaced schedule fits m
    assert best is None or bptt_policy.dp_policy(T, m).predicted_steps() <= best.predicted_steps()


def test_sqrt_policy_slots_and_cost():
    p = bptt_policy.sqrt_policy(10_000)
    assert p.L == 100 and p.slots == 199 and p.predicted_steps() == 19_900


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "log", "SQRT"])
def test_memory_option_checked(bad):
    with pytest.raises(ValueError, match="bptt_memory"):
        bptt_policy.check_memory(bad)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("memory", [1, 4, "sqrt", 50])
def test_layer_option_dropout_lengths_both_directions(name, memory):
    """``bptt_memory=`` on a layer of two layers, both directions, dropout between them
    (drawn outside the recomputed op, so replayed from the saved masks) and lengths:
    the same outputs and gradients as the layer keeping everything."""
    from npnn.layers.recurrent import Recurrent

    if CELLS[name].variant_of:
        return                                  # reached as its base's option (proj_size)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((11, 3, 2))
    results = []
    for m in (None, memory):
        layer = Recurrent(name, 2, 4, num_layers=2, dropout=0.4, bidirectional=True,
                          dtype="float64", seed=3, bptt_memory=m)
        out, _ = layer(x, lengths=[11, 6, 1])
        dx, dhx = layer.backward(np.cos(out))
        results.append({"out": out, "dx": dx, **layer.grads})
    full, ckpt = (to_numpy_dict(r) for r in results)
    _compare(full, ckpt, exact=memory == 50)


def to_numpy_dict(d):
    return {k: np.asarray(v) for k, v in d.items()}


def test_layer_option_checked_and_shown():
    from npnn.layers.recurrent import LSTM

    with pytest.raises(ValueError, match="bptt_memory"):
        LSTM(2, 3, bptt_memory=0)
    assert "bptt_memory='sqrt'" in repr(LSTM(2, 3, bptt_memory="sqrt"))


def test_bench_memory_runs(monkeypatch, capsys, tmp_path):
    """benchmarks/bench_memory.py, tiny: its table has every policy and the counts agree."""
    import importlib.util
    import os

    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
    monkeypatch.syspath_prepend(bench)
    spec = importlib.util.spec_from_file_location("bench_memory",
                                                  os.path.join(bench, "bench_memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "N", 2)
    monkeypatch.setattr(module, "D", 3)
    monkeypatch.setattr(module, "H", 4)
    monkeypatch.setattr(module, "measure", module.one)         # in this process: tiny sizes
    assert module.main(["--T", "30", "--budgets", "4", "--repeat", "1",
                        "--json", str(tmp_path / "records.json")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 30 ")]
    assert [r.split("|")[2].strip() for r in rows] == ["full BPTT", "sqrt", "DP", "DP"]
    for r in rows:
        cells = [c.strip() for c in r.split("|")]
        assert cells[9] == cells[10]            # steps predicted == steps run
