"""Recurrent dropout, zoneout and weight-drop (``functional/regularisers.py``, the cells'
equations, the layers' ``recurrent_dropout=``, ``zoneout=``, ``weight_drop=``).

With the masks fixed, every backward against finite differences (float64, Hypothesis
shapes from 1), for every cell that takes each option; the accelerations against the
reference with the masks on; bounded-memory BPTT replaying zoneout's masks; the eval
forms; masks drawn in training only, from the layer's generator, on the device; the
refusals; and a resumed training run, bit for bit."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import npnn
from npnn.backend import to_backend, to_numpy
from npnn.functional import accel
from npnn.functional.accel._layout import LAYOUTS
from npnn.functional.registry import CELLS, STANDARD, Cell, cell_choices, register
from npnn.functional.regularisers import Zoneout, hash_uniform, zoneout_mask
from npnn.gradcheck import cases, check_gradients
from npnn.layers.recurrent import layer_class

from test_accel import TOL, VARIANTS, assert_equal_to_reference, kernel_set, make_case
from test_gradients import _rounding_level
from test_layernorm import _torch_formulation

dims = st.integers(1, 5)
seeds = st.integers(0, 2**32 - 1)
CELL_NAMES = sorted(CELLS)
#: the layers' cells ('lstmp' is 'lstm' with proj_size) and the size options each runs with
LAYER_CELLS = [(c, {}) for c in cell_choices()] + [("lstm", {"proj_size": 1})]
ACCELERATED = ("rnn", "lstm", "gru")


def _sizes(cell, H):
    return {"proj_size": H} if cell == "lstmp" else {}


def _state_sizes(cell, N, H):
    return [S for _, S in CELLS[cell].state_shapes(N, H, **_sizes(cell, H))]


def fixed_masks(rng, cell, T, N, H, which, p=0.4, eval_form=False, backend="numpy"):
    """The op's options with masks drawn here (fixed for the whole check): the recurrent
    mask (N, S_0) scaled 1/(1-p), zoneout's 0/1 keep-masks (T, N, S) per state (or the
    eval form, p per state)."""
    S = _state_sizes(cell, N, H)
    options = {}
    if "rd" in which:
        options["recurrent_mask"] = to_backend((rng.random((N, S[0])) >= p) / (1 - p), backend)
    if "zo" in which:
        options["zoneout"] = tuple(p if eval_form else to_backend(
            (rng.random((T, N, s)) < p).astype(np.float64), backend) for s in S)
    return options


# -- every backward against finite differences, masks fixed ----------------------------

@given(cell=st.sampled_from(CELL_NAMES), which=st.sampled_from(["rd", "zo", "rd+zo"]),
       T=dims, N=dims, D=dims, H=dims, bias=st.booleans(), masked=st.booleans(),
       eval_form=st.booleans(), seed=seeds)
@example(cell="lstm", which="rd+zo", T=1, N=1, D=1, H=1, bias=True, masked=False,
         eval_form=False, seed=0)
@example(cell="gru", which="rd+zo", T=3, N=2, D=1, H=2, bias=False, masked=True,
         eval_form=False, seed=1)
@example(cell="jordan", which="rd+zo", T=2, N=1, D=2, H=1, bias=True, masked=False,
         eval_form=True, seed=2)
@example(cell="layernorm_lstm", which="rd+zo", T=1, N=1, D=1, H=1, bias=True, masked=False,
         eval_form=False, seed=0)
@example(cell="layernorm_lstm", which="rd+zo", T=4, N=3, D=2, H=3, bias=False, masked=True,
         eval_form=False, seed=3)
@example(cell="layernorm_gru", which="rd+zo", T=3, N=2, D=2, H=3, bias=True, masked=True,
         eval_form=False, seed=1)
@example(cell="layernorm_gru", which="zo", T=2, N=2, D=3, H=2, bias=True, masked=False,
         eval_form=True, seed=4)
def test_reference_gradients_with_masks_fixed(backend, cell, which, T, N, D, H, bias, masked,
                                              eval_form, seed):
    """(R1)-(R5) in each cell's reference: dx, the initial states and every parameter.

    The layer-normalised cells get test_gradients' rounding floor where a gradient is
    O(eps_LN) (``_rounding_level``): D or H = 1, or a recurrent mask that keeps at most
    one unit of a row, whose normalised product m * h_{t-1} W_hh^T then depends on that
    unit only through its sign."""
    rng = np.random.default_rng(seed)
    options = {**CELLS[cell].options,
               **fixed_masks(rng, cell, T, N, H, which, eval_form=eval_form, backend=backend)}
    built = cases.recurrent_case(rng, cell, T, N, D, H, bias, masked, backend,
                                 path="reference", sizes=_sizes(cell, H), **options)
    rm = options.get("recurrent_mask")
    degenerate = cell.startswith("layernorm") and (
        min(D, H) == 1 or (rm is not None and (to_numpy(rm) != 0).sum(axis=1).min() <= 1))
    check_gradients(*built, tol=1e-6, seed=seed, raise_on_failure=True,
                    atol=_rounding_level(built, seed) if degenerate else 0.0)


@given(cell=st.sampled_from(ACCELERATED), which=st.sampled_from(["rd", "zo", "rd+zo"]),
       T=dims, N=dims, D=dims, H=dims, bias=st.booleans(), masked=st.booleans(), seed=seeds)
@example(cell="rnn", which="rd+zo", T=1, N=1, D=1, H=1, bias=True, masked=False, seed=0)
def test_accelerated_gradients_with_masks_fixed(cell, which, T, N, D, H, bias, masked, seed):
    rng = np.random.default_rng(seed)
    options = fixed_masks(rng, cell, T, N, H, which)
    f, inputs = cases.recurrent_case(rng, cell, T, N, D, H, bias, masked,
                                     path="accelerated", **options)
    check_gradients(f, inputs, tol=1e-6, seed=seed, raise_on_failure=True)


# -- the accelerations against the reference, masks on -----------------------------------

@pytest.mark.parametrize("layout", ["batch", "feature"])
@pytest.mark.parametrize("kernels", ["ufuncs", "numba"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@given(T=dims, N=dims, D=dims, H=dims, dtype=st.sampled_from(["float64", "float32"]),
       which=st.sampled_from(["rd", "zo", "rd+zo", "zo-eval"]), masked=st.booleans(),
       seed=seeds)
@example(T=1, N=1, D=1, H=1, dtype="float64", which="rd+zo", masked=False, seed=0)
@example(T=4, N=3, D=2, H=2, dtype="float64", which="rd+zo", masked=True, seed=3)
def test_accelerations_equal_the_reference_with_masks(layout, kernels, variant, T, N, D, H,
                                                     dtype, which, masked, seed):
    """Forward, final states and every gradient, NaN/inf in the padding included, in
    both layouts of the acceleration's loops."""
    cell, options = VARIANTS[variant][:2]
    case = make_case(variant, T, N, D, H, dtype, True, masked, True, "both", masked, seed)
    rng = np.random.default_rng(seed + 1)
    masks = fixed_masks(rng, cell, T, N, H, which, eval_form=which == "zo-eval")
    masks = {k: (v.astype(dtype) if k == "recurrent_mask" else
                 tuple(d if isinstance(d, float) else d.astype(dtype) for d in v))
             for k, v in masks.items()}
    spec = CELLS[cell]
    results = []
    with kernel_set(kernels):
        for force in (accel.use_reference, accel.use_acceleration):
            with force(), accel.use_layout(layout):
                out, finals, cache = spec.run(case["x"], case["states"], case["params"],
                                              case["mask"], **options, **masks)
                dx, dinits, grads = spec.run_backward(case["dout"], case["dfinals"], cache)
            results.append((cache, out, *finals, dx, *dinits, *(grads[k] for k in sorted(grads))))
    (ref_cache, *ref), (fast_cache, *fast) = results
    assert "accel" in type(fast_cache).__module__ and "accel" not in type(ref_cache).__module__
    assert fast_cache.feature == (layout == "feature")
    for k, (a, b) in enumerate(zip(fast, ref)):
        assert_equal_to_reference(a, b, dtype, f"result {k}")


@pytest.mark.parametrize("which", ["rd", "zo", "rd+zo", "zo-eval"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_device_accelerations_equal_the_reference_with_masks(device, variant, which):
    """On a device (the stand-in compiles the kernels on the host): recurrent dropout
    alone runs the fused kernels (the loop scales the products' input and gradient),
    zoneout the ufunc set; both against the NumPy reference, NaN in the padding."""
    cell, options = VARIANTS[variant][:2]
    dtype = "float64"
    ref_case = make_case(variant, 6, 4, 3, 5, dtype, True, True, True, "both", True, 9)
    case = make_case(variant, 6, 4, 3, 5, dtype, True, True, True, "both", True, 9, device)
    masks = fixed_masks(np.random.default_rng(9), cell, 6, 4, 5, which,
                        eval_form=which == "zo-eval")
    dev = {k: to_backend(v, device) if k == "recurrent_mask" else
           tuple(d if isinstance(d, float) else to_backend(d, device) for d in v)
           for k, v in masks.items()}
    spec, results = CELLS[cell], []
    for c, m, force in ((ref_case, masks, accel.use_reference),
                        (case, dev, accel.use_acceleration)):
        with force():
            out, finals, cache = spec.run(c["x"], c["states"], c["params"], c["mask"],
                                          **options, **m)
            dx, dinits, grads = spec.run_backward(c["dout"], c["dfinals"], cache)
        results.append((out, *finals, dx, *dinits, *(grads[k] for k in sorted(grads))))
    for k, (a, b) in enumerate(zip(results[1], results[0])):
        assert_equal_to_reference(a, b, dtype, f"result {k}")


# -- masks: drawn from a key, the same on every backend, replayed by segments ------------

def test_zoneout_masks_are_a_pure_function_of_key_and_step():
    """Steps [a, b) drawn apart equal those steps of the whole sequence; the rate holds;
    the states and the keys draw different masks."""
    whole = zoneout_mask(np, 7, 0, 10, 2, 1, 3, 4, 0.3, "float64")
    part = zoneout_mask(np, 7, 4, 3, 2, 1, 3, 4, 0.3, "float64")
    np.testing.assert_array_equal(part, whole[4:7])
    big = zoneout_mask(np, 7, 0, 50, 2, 0, 20, 30, 0.3, "float32")
    assert big.dtype == np.float32 and set(np.unique(big)) == {0.0, 1.0}
    assert abs(float(big.mean()) - 0.3) < 0.01
    assert not np.array_equal(zoneout_mask(np, 7, 0, 10, 2, 0, 3, 4, 0.3, "float64"), whole)
    assert not np.array_equal(zoneout_mask(np, 8, 0, 10, 2, 1, 3, 4, 0.3, "float64"), whole)
    u = hash_uniform(7, np.arange(5, dtype=np.uint64))
    assert u.dtype == np.float64 and np.all((0 <= u) & (u < 1))


def test_zoneout_masks_are_made_on_the_device_as_on_the_host(strict):
    """One kernel, no host-to-device copy, NumPy's numbers bit for bit."""
    with strict.counting() as c:
        mask = zoneout_mask(strict, 11, 5, 6, 2, 1, 3, 7, 0.25, "float32")
    assert c.h2d == [] and [e.what for e in c.launches] == ["kernel npnn_zoneout_mask"]
    np.testing.assert_array_equal(to_numpy(mask),
                                  zoneout_mask(np, 11, 5, 6, 2, 1, 3, 7, 0.25, "float32"))


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("memory", [2, "sqrt", 100])
def test_bounded_memory_bptt_replays_zoneout(cell, memory):
    """bptt_memory with zoneout (and recurrent dropout) equals full BPTT: within 1e-12
    relative, bit for bit where the policy keeps everything (m >= T)."""
    T, N, D, H = 9, 3, 2, 3
    rng = np.random.default_rng(0)
    spec = CELLS[cell]
    sizes = _sizes(cell, H - 1)
    params = {p.arg: 0.5 * rng.standard_normal(s) for p, s in spec.param_shapes(D, H, **sizes)}
    x = rng.standard_normal((T, N, D))
    S = [s for _, s in spec.state_shapes(N, H, **sizes)]
    mask = np.ones((T, N), bool)
    mask[6:, 1] = False
    options = {**spec.options, "zoneout": Zoneout((0.4,) * len(S), key=123),
               "recurrent_mask": (rng.random((N, S[0])) > 0.3) / 0.7}
    runs = []
    for m in (None, memory):
        out, finals, cache = spec.run(x, [None] * len(S), params, mask, bptt_memory=m, **options)
        if m == 2:                          # the masks kept: the last segment's, not T steps'
            assert cache.tail[1].zoneout[0].shape[0] < T and cache.options["zoneout"].key == 123
        dout = np.cos(np.arange(out.size)).reshape(out.shape)
        dx, dinits, grads = spec.run_backward(dout, [np.ones((N, s)) for s in S], cache)
        runs.append([out, *finals, dx, *dinits, *(grads[k] for k in sorted(grads))])
    for a, b in zip(*runs):
        if memory == 100:
            np.testing.assert_array_equal(a, b)
        else:
            assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))


# -- the layers: options, modes, generators ----------------------------------------------

def _layer(cell, seed=0, **kw):
    base = dict(num_layers=2, bidirectional=True, dtype="float64", seed=seed)
    base.update(kw)
    return layer_class(cell)(3, 4, **base)


def _plain_copy(layer, cell):
    plain = _layer(cell, seed=99)
    plain.load_state_dict(layer.state_dict())
    return plain


@pytest.mark.parametrize("cell, sizes", LAYER_CELLS)
def test_layer_gradients_with_every_option_on(cell, sizes):
    """Two layers, both directions, lengths: the layer's masks fixed by replaying its
    generator from the same state for each forward; every input and parameter entry
    against central differences, with and without bounded memory."""
    for kw in ({}, {"bptt_memory": 2}):
        layer = layer_class(cell)(2, 2, num_layers=2, bidirectional=True, dtype="float64",
                                  seed=0, recurrent_dropout=0.3, zoneout=0.3, weight_drop=0.3,
                                  **sizes, **kw)
        x = np.random.default_rng(1).standard_normal((4, 3, 2))
        lengths = np.array([4, 2, 3])
        start = layer.rng.bit_generator.state
        names = sorted(layer.params)

        def f(x, **params):
            for k, v in params.items():
                layer.params[k][...] = v
            layer.zero_grad()
            layer.rng.bit_generator.state = start
            out, _ = layer(x, lengths=lengths)

            def vjp(d):
                dx, _ = layer.backward(d[0])
                return {"x": dx, **{k: layer.grads[k].copy() for k in names}}
            return (out,), vjp
        inputs = {"x": x, **{k: layer.params[k].copy() for k in names}}
        check_gradients(f, inputs, tol=1e-6, raise_on_failure=True)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell, sizes", LAYER_CELLS)
def test_eval_mode_is_the_identity_and_zoneout_its_expectation(cell, sizes, layout):
    """In eval mode recurrent dropout and weight-drop change nothing and draw nothing;
    zoneout is s_t = p s_{t-1} + (1 - p) s~_t, the reference op given p (the prepared
    steps in either layout)."""
    x = np.random.default_rng(2).standard_normal((6, 2, 3))
    layer = _layer(cell, recurrent_dropout=0.5, weight_drop=0.5, **sizes).eval()
    plain = _layer(cell, seed=99, **sizes).eval()
    plain.load_state_dict(layer.state_dict())
    state = layer.rng.bit_generator.state
    out, h = layer(x)
    np.testing.assert_array_equal(out, plain(x)[0])
    assert layer.rng.bit_generator.state == state              # nothing drawn
    zoned = _layer(cell, zoneout=0.25, num_layers=1, bidirectional=False, **sizes).eval()
    with accel.use_layout(layout):
        out, _ = zoned(x)
    spec, S = zoned.spec, zoned.state_sizes
    with accel.use_reference():      # (eval forwards run the prepared steps: to 1e-12)
        expected, _, _ = spec.run(x, [None] * len(S), zoned.cell_params(), None,
                                  zoneout=(0.25,) * len(S), **zoned.cell_options)
    assert_equal_to_reference(out, expected, "float64", "out")
    stepper = zoned.stepper()                                   # the eval form too
    states = (None,) * len(S)
    for t in range(x.shape[0]):
        with accel.use_layout(layout):
            states = stepper(x[t], states)
        np.testing.assert_allclose(states[0], out[t], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("option", ["recurrent_dropout", "zoneout", "weight_drop"])
def test_masks_are_drawn_in_training_only_from_the_layers_generator(option):
    """Training: the output changes from forward to forward (new masks) and is
    reproduced by a layer whose generator is in the same state; eval: nothing drawn."""
    x = np.random.default_rng(3).standard_normal((6, 4, 3))
    a, b = _layer("lstm", seed=5, **{option: 0.5}), _layer("lstm", seed=5, **{option: 0.5})
    first, second = a(x)[0], a(x)[0]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(b(x)[0], first)
    plain = _plain_copy(a, "lstm")
    assert not np.array_equal(first, plain(x)[0])
    a.eval()
    state = a.rng.bit_generator.state
    a(x)
    assert a.rng.bit_generator.state == state


def test_recurrent_dropout_uses_one_mask_for_every_step():
    """A unit of h_{t-1} dropped for a sequence is dropped at every step: its column of
    W_hh gets no gradient from that sequence at any step, the kept columns do."""
    layer = _layer("gru", num_layers=1, bidirectional=False, recurrent_dropout=0.5, seed=4)
    layer = npnn.GRU(3, 16, dtype="float64", seed=4, recurrent_dropout=0.5)
    x = np.random.default_rng(4).standard_normal((8, 1, 3))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    column = np.abs(layer.grads["weight_hh_l0"]).sum(axis=0)       # (H,)
    dropped = column == 0
    assert 0 < dropped.sum() < 16                                   # some dropped, some kept
    layer.zero_grad()
    layer.recurrent_dropout = 0.0
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    assert np.all(np.abs(layer.grads["weight_hh_l0"]).sum(axis=0) > 0)


def test_weight_drop_masks_the_recurrent_weight_once_per_forward():
    """The op runs with W * M, the gradient of the unmasked weight is M * dW': zero where
    M is; the input weights are untouched (their gradients nonzero everywhere)."""
    layer = npnn.LSTM(3, 5, dtype="float64", seed=6, weight_drop=0.5)
    x = np.random.default_rng(6).standard_normal((7, 2, 3))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    g = layer.grads["weight_hh_l0"]
    assert 0 < (g == 0).sum() < g.size and np.all(layer.grads["weight_ih_l0"] != 0)
    jordan = npnn.JordanRNN(3, 5, dtype="float64", seed=6, weight_drop=0.5)
    out, _ = jordan(x)
    jordan.backward(np.ones_like(out))
    assert 0 < (jordan.grads["weight_yh_l0"] == 0).sum()           # the Jordan's W_yh
    assert np.all(jordan.grads["weight_hy_l0"] != 0)


def test_nan_padding_reaches_nothing_with_the_options_on():
    layer = _layer("lstm", recurrent_dropout=0.3, zoneout=0.3, weight_drop=0.3)
    rng = np.random.default_rng(7)
    x, lengths = rng.standard_normal((6, 3, 3)), np.array([6, 2, 4])
    poisoned = x.copy()
    for n, L in enumerate(lengths):
        poisoned[L:, n] = np.nan
    start = layer.rng.bit_generator.state
    runs = []
    for inp in (x, poisoned):
        layer.rng.bit_generator.state = start
        layer.zero_grad()
        out, (h, c) = layer(inp, lengths=lengths)
        dx, _ = layer.backward(np.ones_like(out), (np.ones_like(h), None))
        runs.append((out, h, c, {k: g.copy() for k, g in layer.grads.items()}, dx))
    (o1, h1, c1, g1, dx1), (o2, h2, c2, g2, dx2) = runs
    for a, b in ((o1, o2), (h1, h2), (c1, c2), *((g1[k], g2[k]) for k in g1)):
        np.testing.assert_array_equal(a, b)
    valid = np.arange(6)[:, None] < lengths[None, :]
    np.testing.assert_array_equal(dx1[valid], dx2[valid])


def test_the_device_path_draws_every_mask_on_the_device(strict):
    """On the stand-in: forward and backward with all three options on copy no mask
    from the host, and zoneout draws NumPy's masks (the same key)."""
    layer = npnn.LSTM(3, 4, seed=8, recurrent_dropout=0.3, zoneout=0.3, weight_drop=0.3)
    host = npnn.LSTM(3, 4, seed=8, zoneout=0.3)
    x = np.random.default_rng(8).standard_normal((5, 2, 3)).astype("float32")
    layer.to("cupy")
    xd = to_backend(x, "cupy")
    with strict.counting() as c:
        out, _ = layer(xd)
        layer.backward(strict.ones_like(out))
    assert c.h2d == [], c.sites("h2d")
    z = npnn.LSTM(3, 4, seed=8, zoneout=0.3).to("cupy")
    np.testing.assert_allclose(to_numpy(z(xd)[0]), host(x)[0], rtol=1e-5, atol=1e-6)


# -- refusals and bad values ------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"recurrent_dropout": 1.0}, "expected recurrent_dropout probability in [0, 1), got 1.0"),
    ({"zoneout": -0.1}, "expected zoneout probability in [0, 1), got -0.1"),
    ({"weight_drop": True}, "expected weight_drop probability in [0, 1), got True"),
    ({"zoneout": "0.5"}, "expected zoneout probability in [0, 1), got '0.5'"),
    ({"zoneout": (0.1, 1.5)}, "expected zoneout[1] probability in [0, 1), got 1.5"),
    ({"zoneout": (0.1, 0.2, 0.3)}, "expected zoneout to be one probability or one per state "
                                   "(h, c) of cell 'lstm', got 3"),
])
def test_bad_values_are_refused_naming_the_argument(kw, message):
    with pytest.raises(ValueError) as e:
        npnn.LSTM(3, 4, **kw)
    assert message in str(e.value)


@pytest.fixture
def bare_cells():
    """Two cells registered for one test: one without a recurrent weight matrix, one
    whose ops take no masks."""
    rnn = CELLS["rnn"]
    cells = [register(Cell("no_recurrent_weight", 1, ("h",), STANDARD, rnn.forward,
                           rnn.backward, {"nonlinearity": "tanh"}, recurrent=None,
                           regularisers=True)),
             register(Cell("no_masks", 1, ("h",), STANDARD, rnn.forward, rnn.backward,
                           {"nonlinearity": "tanh"}))]
    yield cells
    for c in cells:
        del CELLS[c.name]


def test_cells_that_cannot_take_an_option_refuse_it(bare_cells):
    with pytest.raises(ValueError, match="weight_drop masks the recurrent weight matrix, and "
                                         "cell 'no_recurrent_weight' has none"):
        npnn.Recurrent("no_recurrent_weight", 3, 4, weight_drop=0.5)
    npnn.Recurrent("no_recurrent_weight", 3, 4, zoneout=0.5, recurrent_dropout=0.5)
    for kw in ({"zoneout": 0.5}, {"recurrent_dropout": 0.5}):
        with pytest.raises(ValueError, match="cell 'no_masks' does not take recurrent_dropout "
                                             "or zoneout"):
            npnn.Recurrent("no_masks", 3, 4, **kw)
    npnn.Recurrent("no_masks", 3, 4, weight_drop=0.5)
    assert all(CELLS[c].recurrent for c in CELL_NAMES)              # every built-in has one


def test_ops_refuse_masks_of_the_wrong_shape():
    from npnn import functional as F
    x, W_ih, W_hh = np.zeros((3, 2, 1)), np.zeros((8, 1)), np.zeros((8, 2))
    with pytest.raises(ValueError, match=r"expected recurrent_mask of shape \(N, S\) = \(2, 2\)"):
        F.lstm_forward(x, None, None, W_ih, W_hh, recurrent_mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expected zoneout\[1\] of shape \(T, N, S\)"):
        F.lstm_forward(x, None, None, W_ih, W_hh, zoneout=(None, np.ones((3, 2, 3))))
    with pytest.raises(ValueError, match="expected zoneout for 2 state"):
        F.lstm_forward(x, None, None, W_ih, W_hh, zoneout=(0.5,))
    g8, g2 = np.ones(8), np.ones(2)                 # the layer-normalised cells' ops alike
    with pytest.raises(ValueError, match=r"expected recurrent_mask of shape \(N, S\) = \(2, 2\)"):
        F.layernorm_lstm_forward(x, None, None, W_ih, W_hh, g8, g8, g2,
                                 recurrent_mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expected zoneout\[0\] of shape \(T, N, S\)"):
        F.layernorm_gru_forward(x, None, W_ih[:6], W_hh[:6], g8[:6], g8[:6],
                                zoneout=(np.ones((2, 2, 2)),))


# -- a training run with the options on resumes bit for bit -----------------------------

def test_a_run_with_the_regularisers_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The LM trained with all three options, stopped between epochs and resumed, ends
    with the uninterrupted run's weights: the masks' generator is in the checkpoint."""
    from npnn.models.lm import RNNLM
    from npnn.training import trainer as T
    from _helpers import TEXT, quiet, tiny_config

    def build(config, vocab=None, seed=None):
        return RNNLM(vocab_size=config.vocab_size, hidden_size=config.hidden, cell=config.cell,
                     num_layers=config.layers, embedding_dim=config.embedding,
                     dropout=config.dropout, dtype=config.dtype, seed=seed, vocab=vocab,
                     token=config.tokens, recurrent_dropout=0.2, zoneout=(0.1, 0.2),
                     weight_drop=0.3)
    monkeypatch.setattr(T, "build_model", build)
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    straight = T.Trainer(tiny_config(text, epochs=2, bptt_memory=3), tmp_path / "a", log=quiet,
                         progress=False)
    straight.fit()
    assert straight.model.rnn.zoneout == (0.1, 0.2)
    first = T.Trainer(tiny_config(text, epochs=1, bptt_memory=3), tmp_path / "b", log=quiet,
                      progress=False)
    first.fit()
    resumed = T.Trainer.resume(tmp_path / "b", log=quiet, progress=False, epochs=2)
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# -- the formulation, against PyTorch's autograd -----------------------------------------

def _plain_formulation(torch, cell, tx, h, c, W_ih, W_hh, b_ih, b_hh, tm, zone):
    """The LSTM's (torch's own cell) or the GRU's step, fed m * h_{t-1} in the recurrent
    product only, each state zoned: -> out (T, N, H)."""
    H, outs = h.shape[1], []
    for t in range(tx.shape[0]):
        d_h = torch.tensor(zone[0][t])
        if cell == "lstm":
            h_new, c_new = torch._VF.lstm_cell(tx[t], (tm * h, c), W_ih, W_hh, b_ih, b_hh)
            d_c = torch.tensor(zone[1][t])
            c = d_c * c + (1 - d_c) * c_new
        else:
            gi, gh = tx[t] @ W_ih.T + b_ih, (tm * h) @ W_hh.T + b_hh
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            h_new = (1 - z) * n + z * h
        h = d_h * h + (1 - d_h) * h_new
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.parametrize("cell", ["lstm", "gru", "layernorm_lstm", "layernorm_gru"])
def test_the_layers_formulation_against_pytorch(cell):
    """The papers' equations written with torch's cells and autograd, given the masks the
    layer drew (read from its cache): W_hh * M (weight-drop); the cell fed m * h_{t-1}
    in its recurrent product only (the GRU's interpolation reads h_{t-1}; the
    layer-normalised cells' product is masked before its layer norm); zoneout mixing each
    state with its previous value (the LSTMs' c un-normalised). Outputs and every
    gradient, float64."""
    torch = pytest.importorskip("torch")
    T, N, D, H = 6, 3, 2, 4
    layer = layer_class(cell)(D, H, dtype="float64", seed=11, recurrent_dropout=0.4,
                              zoneout=0.3, weight_drop=0.5)
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal((T, N, D)), rng.standard_normal((T, N, H))
    out, _ = layer(x)
    stack = layer._caches[-1]
    cache, M = stack.caches[0], stack.weight_masks[0]
    m, zone = cache.recurrent_mask, cache.zoneout
    dx, _ = layer.backward(dout)

    P = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    tx = torch.tensor(x, requires_grad=True)
    W_ih, b_ih, b_hh = P["weight_ih_l0"], P["bias_ih_l0"], P["bias_hh_l0"]
    W_hh = P["weight_hh_l0"] * torch.tensor(M)                      # (R6)
    tm = torch.tensor(m)
    h, c = torch.zeros(N, H, dtype=torch.float64), torch.zeros(N, H, dtype=torch.float64)
    if cell.startswith("layernorm"):                                # test_layernorm's equations
        args = {p.name + "_l0": p.arg for p in CELLS[cell].params}
        theirs, _ = _torch_formulation(torch, cell, tx, [h, c],
                                       {**{args[k]: v for k, v in P.items()}, "W_hh": W_hh},
                                       None, tm, tuple(torch.tensor(d) for d in zone))
    else:
        theirs = _plain_formulation(torch, cell, tx, h, c, W_ih, W_hh, b_ih, b_hh, tm, zone)
    (theirs * torch.tensor(dout)).sum().backward()
    np.testing.assert_allclose(out, theirs.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-12)
    for k, p in P.items():
        np.testing.assert_allclose(layer.grads[k], p.grad.numpy(), rtol=0, atol=1e-12, err_msg=k)
