"""Forward-only steps (``Cell.prepare``, each accelerated cell's ``Prepared``) against
the textbook reference, and where they run.

A forward whose result is never backpropagated (a layer in eval mode or under
``no_grad``, a decoder stepping token by token) runs the cell's prepared steps
instead of the reference wherever ``accel.pays`` says the acceleration's sequence forward would not pay:
they must give the reference's outputs and final states (1e-12 relative in
float64, 1e-5 in float32), masked (NaN in the padding) or not, over
Hypothesis-drawn shapes from 1, on NumPy and on the strict CuPy stand-in, in both
layouts (``accel._layout``: each forced; feature-major keeps the states (H, N) and
takes the products W h^T).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npnn
from npnn.functional import accel
from npnn.functional.accel._layout import LAYOUTS, use_layout
from npnn.functional.registry import CELLS, as_states
from npnn.layers.recurrent import layer_class
from npnn.models import Seq2Seq

from test_accel import (KERNELS, VARIANTS, assert_equal_to_reference, dims, kernel_set,
                         make_case, seeds)

DTYPES = ["float64", "float32"]


def reference_forward(variant, case):
    cell = VARIANTS[variant][0]
    with accel.use_reference():
        out, finals, _ = CELLS[cell].run(case["x"], case["states"], case["params"],
                                         case["mask"], **case["options"])
    return out, finals


def prepared(variant, case):
    cell, options = VARIANTS[variant][:2]
    p = CELLS[cell].prepare(case["params"], **options)
    assert type(p).__module__ == f"npnn.functional.accel.{cell}", type(p)
    return p


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@given(T=dims, N=dims, D=dims, H=dims, bias=st.booleans(), masked=st.booleans(),
       given_states=st.booleans(), seed=seeds)
def test_a_prepared_sequence_equals_the_reference(layout, kernels, variant, dtype, T, N, D, H,
                                                  bias, masked, given_states, seed):
    """(numba's kernels in float64 call the exact tanh; in float32 its approximation)"""
    case = make_case(variant, T, N, D, H, dtype, bias, masked, given_states, None, masked, seed)
    out, finals = reference_forward(variant, case)
    with kernel_set(kernels), use_layout(layout):
        p = prepared(variant, case)
        assert p.kernel.__name__.startswith("_numba") == (kernels == "numba" and
                                                          variant in ("lstm", "gru"))
        assert p.feature(N, dtype) == (layout == "feature")
        p_out, p_finals = p.sequence(case["x"], case["states"], case["mask"])
    assert_equal_to_reference(p_out, out, dtype, "out")
    assert len(p_finals) == len(finals)
    for k, (a, b) in enumerate(zip(p_finals, finals)):
        assert_equal_to_reference(a, b, dtype, f"final state {k}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@given(N=dims, D=dims, H=dims, bias=st.booleans(), given_states=st.booleans(), seed=seeds)
def test_a_prepared_step_equals_the_reference_step(layout, kernels, variant, dtype, N, D, H,
                                                   bias, given_states, seed):
    case = make_case(variant, 1, N, D, H, dtype, bias, False, given_states, None, False, seed)
    cell, options = VARIANTS[variant][:2]
    with accel.use_reference():
        new, _ = CELLS[cell].run_step(case["x"][0], case["states"], case["params"], **options)
    with kernel_set(kernels), use_layout(layout):
        step = CELLS[cell].stepper(case["params"], **options)
        assert getattr(step, "__self__", None) is not None       # the prepared step, bound
        assert step.__self__.feature(N, dtype) == (layout == "feature")
        stepped = step(case["x"][0], case["states"])
    for k, (a, b) in enumerate(zip(stepped, new)):
        assert_equal_to_reference(a, b, dtype, f"state {k}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_prepared_steps_on_the_device_stand_in(strict, variant):
    """The same numbers from device arrays, reading nothing back (masked, NaN padding)."""
    case = make_case(variant, 5, 4, 3, 6, "float32", True, True, True, None, True, 3, "cupy")
    ref = make_case(variant, 5, 4, 3, 6, "float32", True, True, True, None, True, 3)
    out, finals = reference_forward(variant, ref)
    with strict.counting() as c:
        p_out, p_finals = prepared(variant, case).sequence(case["x"], case["states"],
                                                           case["mask"])
    assert c.syncs == [], c.sites("sync")
    assert_equal_to_reference(p_out, out, "float32", "out")
    for a, b in zip(p_finals, finals):
        assert_equal_to_reference(a, b, "float32", "final state")


def test_where_the_prepared_steps_run():
    H, D = 8, 3
    params = {"W_ih": np.zeros((4 * H, D)), "W_hh": np.zeros((4 * H, H)), "b_ih": None,
              "b_hh": None}
    short, long = np.zeros((3, 1, D)), np.zeros((accel.MIN_STEPS, accel.MIN_ROWS, D))
    assert isinstance(CELLS["lstm"].prepare(params, short), accel.lstm.Prepared)
    assert CELLS["lstm"].prepare(params) is not None                   # a step by hand
    assert CELLS["lstm"].prepare(params, long) is None      # the acceleration's own forward
    with accel.use_reference():
        assert CELLS["lstm"].prepare(params, short) is None
        assert CELLS["lstm"].prepare(params) is None
    peephole = {p.arg: np.zeros(s) for p, s in CELLS["peephole_lstm"].param_shapes(D, H, True)}
    assert CELLS["peephole_lstm"].prepare(peephole, short) is None    # no acceleration
    step = CELLS["peephole_lstm"].stepper(peephole)              # falls back on run_step
    h, c = step(np.ones((2, D)), (None, None))
    assert h.shape == c.shape == (2, H)


CELL_NAMES = ["rnn", "lstm", "gru", "peephole_lstm", "ctrnn", "jordan"]


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@given(T=dims, N=dims, num_layers=st.integers(1, 2), batch_first=st.booleans(),
       given_states=st.booleans(), seed=seeds)
def test_a_layer_in_eval_mode_gives_the_references_numbers(cell, dtype, T, N, num_layers,
                                                           batch_first, given_states, seed):
    """Eval mode keeps no cache and runs the prepared steps at these sizes (or the
    acceleration's forward where ``select`` picks it): the numbers of a training-mode
    forward on the reference, for stacked, bidirectional layers over sequences of any
    lengths (NaN in the padding), with or without initial states, either layout."""
    rng = np.random.default_rng(seed)
    layer = layer_class(cell)(3, 4, num_layers=num_layers, bidirectional=True, dtype=dtype,
                              batch_first=batch_first, seed=seed)
    x = rng.standard_normal((T, N, 3)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=N)
    x[np.arange(T)[:, None] >= lengths[None, :]] = np.nan
    if batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    n_states = len(CELLS[layer.spec.name].states)
    hx = None
    if given_states:
        hx = tuple(rng.standard_normal((2 * num_layers, N, 4)).astype(dtype)
                   for _ in range(n_states))
        hx = hx[0] if n_states == 1 else hx
    with accel.use_reference():
        trained = layer(x, hx, lengths=lengths)
    layer.clear_caches()
    layer.eval()
    evaluated = layer(x, hx, lengths=lengths)
    assert not layer._caches
    for a, b in zip([trained[0], *as_states(trained[1])],
                    [evaluated[0], *as_states(evaluated[1])]):
        assert_equal_to_reference(b, a, dtype, "layer")


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("T", [3, 40])
def test_a_forward_keeping_no_cache_returns_arrays_of_its_own(cell, T):
    """out and h_n share no memory (with each other or a cache), on every path that a
    forward without cache takes; dropout between layers leaves h_n alone."""
    rng = np.random.default_rng(0)
    layer = layer_class(cell)(3, 4, num_layers=2, dropout=0.5, dtype="float64", seed=0)
    x = rng.standard_normal((T, 8, 3))
    with npnn.enable_grad():
        out_g, h_g = layer(x)
    layer.clear_caches()
    layer.rng = np.random.default_rng(1)
    with npnn.no_grad():                        # training mode: dropout on
        out, h_n = layer(x)
    for h_a, h_b in zip(as_states(h_n), as_states(h_g)):
        assert_equal_to_reference(h_a[0], h_b[0], "float64", "layer 0's final state")
        assert not np.shares_memory(out, h_a)
    layer.eval()
    out, h_n = layer(x)
    for h in as_states(h_n):
        assert not np.shares_memory(out, h)
        before = h.copy()
        out[...] = 7.0
        np.testing.assert_array_equal(h, before)


@pytest.mark.parametrize("options", [
    {"context": "init"}, {"context": "concat", "output_context": True},
    {"context": "attention"}, {"context": "luong", "attention": "dot", "scale": 1.0}])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole_lstm"])
def test_decoding_equals_decoding_on_the_reference(options, cell):
    rng = np.random.default_rng(1)
    model = Seq2Seq(9, 8, 5, 6, cell=cell, num_layers=2, seed=3, **options)
    src, lengths = rng.integers(3, 9, size=(4, 6)), np.array([6, 2, 5, 1])
    decoded = [model.greedy_decode(src, lengths, max_len=7),
               model.beam_decode(src[1], lengths[1], beam_width=3, max_len=7)]
    with accel.use_reference():
        reference = [model.greedy_decode(src, lengths, max_len=7),
                     model.beam_decode(src[1], lengths[1], beam_width=3, max_len=7)]
    assert decoded == reference


def test_attending_with_a_device_mask_reads_nothing_back(strict):
    """A decoder attends once per token: the key mask is checked on the host only."""
    model = Seq2Seq(9, 8, 5, 6, cell="lstm", context="attention", seed=0).to("cupy")
    src, lengths = np.random.default_rng(0).integers(3, 9, size=(3, 6)), np.array([6, 2, 4])
    with strict.counting() as c:
        model.greedy_decode(src, lengths, max_len=5)
    # what decoding reads: each step's token ids (to stop at <eos> and return them);
    # before, also the mask check of every step's attention and the source ids' check
    assert [e.what for e in c.syncs] == ["ndarray.get"] * 5, c.sites("sync")


def test_a_host_mask_without_a_valid_key_is_still_refused():
    q, K = np.ones((2, 1, 3)), np.ones((2, 4, 3))
    mask = np.array([[True, False, False, False], [False] * 4])
    with pytest.raises(ValueError, match="at least one valid key per sequence, got none for "
                                         "sequence 1"):
        npnn.functional.dot_attention_forward(q, K, K, mask)


@pytest.mark.parametrize("cls, options", [(npnn.RNNCell, {}), (npnn.RNNCell, {"nonlinearity": "relu"}),
                                          (npnn.LSTMCell, {}), (npnn.GRUCell, {})])
@pytest.mark.parametrize("dtype", DTYPES)
@given(N=dims, batched=st.booleans(), given_states=st.booleans(), seed=seeds)
def test_a_cell_stepped_without_a_cache_gives_the_reference_step(cls, options, dtype, N, batched,
                                                                 given_states, seed):
    """A cell layer in eval mode (or under no_grad) takes the prepared step: the
    reference step's numbers, no cache, and new arrays (the given state untouched)."""
    rng = np.random.default_rng(seed)
    cell = cls(3, 5, dtype=dtype, seed=seed, **options)
    shape = (N, 3) if batched else (3,)
    x = rng.standard_normal(shape).astype(dtype)
    n_states = 2 if cls is npnn.LSTMCell else 1
    hx = None
    if given_states:
        hx = tuple(rng.standard_normal(shape[:-1] + (5,)).astype(dtype) for _ in range(n_states))
        hx = hx[0] if n_states == 1 else hx
    with accel.use_reference():
        expected = cell(x, hx)
    cell.clear_caches()
    kept = None if hx is None else [h.copy() for h in as_states(hx)]
    for way in ("eval", "no_grad"):
        if way == "eval":
            cell.eval()
        with npnn.no_grad() if way == "no_grad" else accel.use_acceleration():
            got = cell(x, hx)
        cell.train()
        assert not cell._caches
        for a, b in zip(as_states(got), as_states(expected)):
            assert a.shape == b.shape
            assert_equal_to_reference(a, b, dtype, "new state")
        if hx is not None:
            for h, k in zip(as_states(hx), kept):
                np.testing.assert_array_equal(h, k)
                assert not any(np.shares_memory(h, a) for a in as_states(got))
