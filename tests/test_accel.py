"""Every acceleration against the textbook reference, never fast path against fast path.

``npnn/functional/accel/*.py`` must give the numbers of ``npnn/functional/{rnn,lstm,gru}.py``:
forward outputs, final states and every gradient equal within 1e-12 (float64) or
1e-5 (float32) relative to the largest reference value, over Hypothesis-drawn
shapes from 1, masked (NaN in the padding included) and not, and through the
layers in both directions, in both layouts of the loops (batch-major and
feature-major, ``accel._layout``: each forced, never the timed choice). The fused GPU
kernels are held to the same reference in test_fused.py (on a GPU) and
test_fused_compile.py (on the host).
"""

import contextlib
import os
import threading

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import npnn
from npnn import functional as F
from npnn.backend import to_backend, to_numpy
from npnn.functional import accel
from npnn.functional.accel import _layout, _numba
from npnn.functional.accel._layout import LAYOUTS, use_layout
from npnn.functional.registry import CELLS, as_states

TOL = {"float64": 1e-12, "float32": 1e-5}
dims = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)
#: (registry cell, options, the acceleration's forward and backward)
VARIANTS = {
    "rnn_tanh": ("rnn", {"nonlinearity": "tanh"}, accel.rnn.forward, accel.rnn.backward),
    "rnn_relu": ("rnn", {"nonlinearity": "relu"}, accel.rnn.forward, accel.rnn.backward),
    "lstm": ("lstm", {}, accel.lstm.forward, accel.lstm.backward),
    "gru": ("gru", {}, accel.gru.forward, accel.gru.backward),
}


def assert_equal_to_reference(fast, ref, dtype, name):
    fast, ref = np.asarray(to_numpy(fast), np.float64), np.asarray(to_numpy(ref), np.float64)
    assert fast.shape == ref.shape, f"{name}: shape {fast.shape} != {ref.shape}"
    assert np.all(np.isfinite(ref)), f"{name}: the reference is not finite"
    diff = float(np.max(np.abs(fast - ref), initial=0.0))
    scale = float(np.max(np.abs(ref), initial=0.0))
    assert diff <= TOL[dtype] * scale, f"{name}: max abs diff {diff:.3e}, largest value {scale:.3e}"


def make_case(variant, T, N, D, H, dtype, bias, masked, given_states, given_grads, poison,
              seed, backend="numpy"):
    """Arrays for one op call: x, states, params, mask, dout, dfinals."""
    cell, options, _, _ = VARIANTS[variant]
    spec = CELLS[cell]
    rng = np.random.default_rng(seed)
    dev = lambda a: None if a is None else to_backend(np.asarray(a, dtype=dtype), backend)  # noqa
    x = rng.standard_normal((T, N, D))
    mask = None
    if masked:
        lengths = rng.integers(1, T + 1, size=N)
        mask_np = np.arange(T)[:, None] < lengths[None, :]
        if poison:                          # whatever the padding holds must not matter
            pad = ~mask_np
            x[pad] = rng.choice([np.nan, np.inf, -np.inf, 1e30], size=(int(pad.sum()), 1))
        mask = to_backend(mask_np, backend)
    params = {p.arg: dev(0.5 * rng.standard_normal(shape))
              for p, shape in spec.param_shapes(D, H, bias)}
    states = tuple(dev(0.5 * rng.standard_normal((N, H))) if given_states else None
                   for _ in spec.states)
    dout = dev(rng.standard_normal((T, N, H))) if given_grads in ("out", "both") else None
    dfinals = tuple(dev(rng.standard_normal((N, H))) if given_grads in ("final", "both") else None
                    for _ in spec.states)
    return dict(x=dev(x), states=states, params=params, mask=mask, dout=dout, dfinals=dfinals,
                options=options)


def run_reference(variant, case):
    cell = VARIANTS[variant][0]
    with accel.use_reference():
        out, finals, cache = CELLS[cell].run(case["x"], case["states"], case["params"],
                                             case["mask"], **case["options"])
    dx, dinits, grads = CELLS[cell].run_backward(case["dout"], case["dfinals"], cache)
    return out, finals, dx, dinits, grads, cache


def run_accelerated(variant, case):
    """The acceleration's own functions, called directly (so T = 1 is covered too)."""
    _, options, forward, backward = VARIANTS[variant]
    out, *finals, cache = forward(case["x"], *case["states"], **case["params"],
                                  mask=case["mask"], **options)
    dx, *dinits, grads = backward(case["dout"], *case["dfinals"], cache)
    return out, tuple(finals), dx, tuple(dinits), grads, cache


def compare_paths(variant, dtype, masked, backend="numpy", seed=0):
    """The accelerated path on ``backend`` (fused kernels on CuPy) against the reference
    on NumPy, at one fixed size with NaN in the padding (for test_fused*.py)."""
    case = make_case(variant, 7, 5, 6, 9, dtype, True, masked, True, "both", masked, seed,
                     backend)
    ref_case = make_case(variant, 7, 5, 6, 9, dtype, True, masked, True, "both", masked, seed)
    compare(variant, case, dtype, ref_case)


def flatten(results):
    """(out, finals, dx, dinits, grads, cache) -> [(name, array)]."""
    out, finals, dx, dinits, grads, _ = results
    return ([("out", out)] + [(f"final state {k}", a) for k, a in enumerate(finals)] +
            [("dx", dx)] + [(f"d initial state {k}", a) for k, a in enumerate(dinits)] +
            [(k, grads[k]) for k in sorted(grads)])


def in_float64(case):
    """``case``'s NumPy arrays (float32) exactly, as float64."""
    up = lambda a: a if a is None or a.dtype == bool else np.asarray(a, np.float64)  # noqa
    return {**case, "x": up(case["x"]), "states": tuple(map(up, case["states"])),
            "params": {k: up(v) for k, v in case["params"].items()}, "mask": case["mask"],
            "dout": up(case["dout"]), "dfinals": tuple(map(up, case["dfinals"]))}


def compare(variant, case, dtype, ref_case=None, layout=None):
    """Accelerated on ``case`` against the reference on ``ref_case`` (default the same);
    with ``layout``, the acceleration's loops forced to run in it.

    In float32 a result that is a sum of terms much larger than itself (a weight gradient
    whose terms cancel) keeps only the absolute accuracy of its terms, and 1e-5 of its
    own size may be out of reach (the numba kernels' tanh is within 4e-7 of tanh, a few
    units in the last place of the terms). Where the acceleration misses that, both are
    compared with the reference computed in float64 from the same numbers: the
    acceleration passes if its error is at most twice the reference's own, or at most
    1e-5 of the largest value the case computes (what its terms can be known to)."""
    ref = run_reference(variant, ref_case or case)
    with use_layout(layout):
        fast = run_accelerated(variant, case)
    if layout is not None:
        assert fast[-1].feature == (layout == "feature")
    assert type(ref[-1]).__module__.startswith("npnn.functional.") and \
        "accel" not in type(ref[-1]).__module__
    assert "accel" in type(fast[-1]).__module__
    assert sorted(fast[4]) == sorted(ref[4])
    exact = None
    for (name, a), (_, b) in zip(flatten(fast), flatten(ref)):
        try:
            assert_equal_to_reference(a, b, dtype, name)
        except AssertionError:
            if dtype != "float32" or not isinstance(to_numpy(b), np.ndarray) or \
                    not isinstance(a, np.ndarray):
                raise
            if exact is None:       # float64 reference of the very same float32 numbers
                exact = dict(flatten(run_reference(variant, in_float64(ref_case or case))))
                largest = max(float(np.max(np.abs(v), initial=0.0)) for v in exact.values())
            err = lambda v: float(np.max(np.abs(np.asarray(v, np.float64) - exact[name]),  # noqa
                                         initial=0.0))
            assert err(a) <= max(2 * err(b), TOL[dtype] * largest), (
                f"{name}: the acceleration's error {err(a):.3e} against float64, the "
                f"reference's {err(b):.3e}, the case's largest value {largest:.3e}")


@contextlib.contextmanager
def kernel_set(kernels):
    """The NumPy step kernels the accelerations use: 'ufuncs', or 'numba' (both dtypes)."""
    if kernels == "numba" and _numba.numba() is None:
        pytest.skip("needs numba (pip install -e '.[fast]')")
    old = os.environ.get("NPNN_NUMBA")
    os.environ["NPNN_NUMBA"] = "all" if kernels == "numba" else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["NPNN_NUMBA"]
        else:
            os.environ["NPNN_NUMBA"] = old


KERNELS = ["ufuncs", "numba"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("given_grads", ["out", "final", "both"])
@given(T=dims, N=dims, D=dims, H=dims, bias=st.booleans(), given_states=st.booleans(),
       poison=st.booleans(), seed=seeds)
@example(T=1, N=1, D=1, H=1, bias=True, given_states=False, poison=False, seed=0)
@example(T=4, N=2, D=3, H=2, bias=True, given_states=True, poison=True, seed=1)
def test_accelerations_equal_the_reference_float64(layout, kernels, variant, masked, given_grads,
                                                   T, N, D, H, bias, given_states, poison, seed):
    case = make_case(variant, T, N, D, H, "float64", bias, masked, given_states, given_grads,
                     poison, seed)
    with kernel_set(kernels):
        compare(variant, case, "float64", layout=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("masked", [False, True])
@given(T=dims, N=dims, D=dims, H=dims, seed=seeds)
def test_accelerations_equal_the_reference_float32(layout, kernels, variant, masked, T, N, D, H,
                                                   seed):
    """In float32 the numba kernels' tanh is a rational approximation (``_numba``): within
    4e-7 of tanh, so results stay within float32 tolerance of the reference."""
    case = make_case(variant, T, N, D, H, "float32", True, masked, True, "both", masked, seed)
    with kernel_set(kernels):
        compare(variant, case, "float32", layout=layout)


def test_numba_is_chosen_for_float32_and_switched_off_by_its_switches(monkeypatch):
    if _numba.numba() is None:
        pytest.skip("needs numba")
    assert _numba.use(np, np.float32) and not _numba.use(np, np.float64)
    monkeypatch.setenv("NPNN_NUMBA", "all")
    assert _numba.use(np, np.float64)
    monkeypatch.setenv("NPNN_NUMBA", "0")
    assert not _numba.use(np, np.float32)
    monkeypatch.delenv("NPNN_NUMBA")
    x = np.zeros((accel.MIN_STEPS, accel.MIN_ROWS, 3), np.float32)
    W = [np.zeros(s, np.float32) for s in ((16, 3), (16, 4))]
    *_, cache = F.fast.lstm_forward(x, None, None, *W)
    assert isinstance(cache, accel.lstm.LSTMAccelCache)      # numba inside the acceleration
    monkeypatch.setenv("NPNN_ACCEL", "0")                     # the switch of every acceleration
    *_, cache = F.fast.lstm_forward(x, None, None, *W)
    assert isinstance(cache, F.LSTMCache)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@given(T=dims, N=dims, D=dims, H=dims, num_layers=st.integers(1, 2), seed=seeds)
def test_layers_in_both_directions_equal_the_reference(layout, cell, T, N, D, H, num_layers,
                                                       seed):
    """The reverse direction runs each sequence reversed within its length: through the
    layer, the accelerated kernels must still give the reference's numbers, in either
    layout of their loops."""
    rng = np.random.default_rng(seed)
    layer = npnn.layers.recurrent.layer_class(cell)(D, H, num_layers=num_layers,
                                                    bidirectional=True, dtype="float64", seed=seed)
    x = rng.standard_normal((T, N, D))
    lengths = rng.integers(1, T + 1, size=N)
    dout = rng.standard_normal((T, N, 2 * H))
    results = {}
    for name in ("accelerated", "reference"):
        layer.zero_grad()
        with accel.use_reference() if name == "reference" else accel.use_acceleration(), \
                use_layout(layout):
            out, h_n = layer(x, lengths=lengths)
        dx, dh0 = layer.backward(dout)
        results[name] = [out, *as_states(h_n), dx, *as_states(dh0), *layer.grads.values()]
    for a, b in zip(results["accelerated"], results["reference"]):
        assert_equal_to_reference(a, b, "float64", "layer")


def test_where_the_acceleration_pays(monkeypatch):
    x = np.zeros((accel.MIN_STEPS, accel.MIN_ROWS // accel.MIN_STEPS, 3))
    assert accel.pays(x)
    assert not accel.pays(x[:-1])                              # too few steps to pay
    assert not accel.pays(x[:, :-1])                           # too few rows to pay
    assert not accel.pays(x[:1, :1])                           # a step taken by hand
    # many sequences pay from two steps: T * N >= ROWS_PER_WIDTH * (D + H), MIN_SHORT_ROWS
    H = 197                                                    # D + H = 200
    rows = int(np.ceil(accel.ROWS_PER_WIDTH * 200))
    assert rows > accel.MIN_SHORT_ROWS
    short = np.zeros((2, rows // 2 + rows % 2, 3))
    assert accel.pays(short, H)
    assert not accel.pays(short)                               # H unknown: the long rule only
    assert not accel.pays(short[:1], H)                        # one step: the reference
    assert not accel.pays(np.zeros((2, rows // 2 - 1, 3)), H)  # too few rows
    tiny = np.zeros((2, accel.MIN_SHORT_ROWS // 2, 3))
    assert accel.pays(tiny, 4)                                 # small weights: the floor
    assert not accel.pays(tiny[:, :-1], 4)
    assert not accel.pays([[[0.0]]])                   # not an array: the reference says why
    with accel.use_reference():
        assert not accel.pays(x) and not accel.enabled()
    with accel.use_acceleration():
        assert accel.pays(x[:1, :1])
    assert accel.pays(x) and accel.enabled()
    monkeypatch.setenv("NPNN_ACCEL", "0")
    assert not accel.pays(x) and not accel.enabled()
    assert not accel._common.fused(np)                     # NumPy never takes the GPU kernels


def test_the_registry_chooses_in_one_place():
    """Cell.run runs the acceleration where it pays (a cell without one, its reference),
    and Cell.run_backward follows the forward's cache."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((accel.MIN_STEPS, accel.MIN_ROWS // accel.MIN_STEPS, 3))
    for name, accelerated in (("lstm", True), ("peephole_lstm", False), ("ctrnn", False)):
        spec = CELLS[name]
        params = {p.arg: 0.5 * rng.standard_normal(s) for p, s in spec.param_shapes(3, 4)}
        states = (None,) * spec.n_states
        with accel.use_acceleration():
            out, _, cache = spec.run(x, states, params)
        assert isinstance(cache, accel.lstm.Cache) == accelerated, name
        with accel.use_reference():
            ref, _, ref_cache = spec.run(x, states, params)
        assert "accel" not in type(ref_cache).__module__
        dout = rng.standard_normal(out.shape)
        a = spec.run_backward(dout, states, cache)
        b = spec.run_backward(dout, states, ref_cache)
        assert_equal_to_reference(out, ref, "float64", "out")
        assert_equal_to_reference(a[0], b[0], "float64", "dx")
        for k in b[2]:
            assert_equal_to_reference(a[2][k], b[2][k], "float64", k)


def test_an_accelerated_forward_checks_its_arguments_as_the_reference_does():
    """The registry may run the acceleration's forward without the reference's: the same
    error, the same message."""
    x = np.zeros((accel.MIN_STEPS, accel.MIN_ROWS, 3))
    W = [np.zeros((16, 3)), np.zeros((16, 4)), np.zeros(16), None]
    for forward in (F.lstm_forward, F.fast.lstm_forward, accel.lstm.forward):
        with pytest.raises(ValueError, match="expected both b_ih and b_hh or neither"):
            forward(x, None, None, *W)
    for forward in (F.rnn_forward, F.fast.rnn_forward, accel.rnn.forward):
        with pytest.raises(ValueError, match="nonlinearity"):
            forward(x, None, np.zeros((4, 3)), np.zeros((4, 4)), nonlinearity="sigmoid")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("masked", [False, True])
def test_fast_ops_equal_the_reference_and_route_the_backward(variant, masked):
    """``npnn.functional.fast.<cell>_forward/_backward`` (long enough to pay) give the
    reference's numbers, and the accelerated cache goes to the accelerated backward."""
    cell, options, _, _ = VARIANTS[variant]
    case = make_case(variant, accel.MIN_STEPS, accel.MIN_ROWS // accel.MIN_STEPS, 3, 4,
                     "float64", True, masked, True, "both", masked, 0)
    forward, backward = getattr(F.fast, f"{cell}_forward"), getattr(F.fast, f"{cell}_backward")
    out, *finals, cache = forward(case["x"], *case["states"], **case["params"],
                                  mask=case["mask"], **options)
    assert isinstance(cache, getattr(accel, cell).Cache)
    dx, *dinits, grads = backward(case["dout"], *case["dfinals"], cache)
    r_out, r_finals, r_dx, r_dinits, r_grads, _ = run_reference(variant, case)
    for a, b in zip((out, *finals, dx, *dinits), (r_out, *r_finals, r_dx, *r_dinits)):
        assert_equal_to_reference(a, b, "float64", variant)
    for k in r_grads:
        assert_equal_to_reference(grads[k], r_grads[k], "float64", k)
    with accel.use_reference():                   # the switch: fast runs the reference
        *_, cache = forward(case["x"], *case["states"], **case["params"], mask=case["mask"],
                            **options)
    assert "accel" not in type(cache).__module__


@pytest.mark.parametrize("name", ["peephole_lstm", "ctrnn", "jordan"])
def test_fast_ops_of_a_cell_without_acceleration_are_its_reference(name):
    for way in ("forward", "backward"):
        assert getattr(F.fast, f"{name}_{way}") is getattr(F, f"{name}_{way}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_reference_called_directly_runs_the_reference(cell):
    """``functional.<cell>_forward`` is the textbook, even for a sequence long enough to
    pay and under ``use_acceleration``."""
    rng = np.random.default_rng(0)
    spec = CELLS[cell]
    x = rng.standard_normal((4 * accel.MIN_STEPS, accel.MIN_ROWS, 3))
    params = {p.arg: 0.5 * rng.standard_normal(s) for p, s in spec.param_shapes(3, 4)}
    for context in (contextlib.nullcontext, accel.use_acceleration):
        with context():
            *_, cache = getattr(F, f"{cell}_forward")(x, *(None,) * spec.n_states, **params)
        assert type(cache) is getattr(F, f"{cell.upper()}Cache")


def test_use_reference_is_local_to_its_thread():
    """A thread that forces the reference does not change what another thread runs."""
    x = np.zeros((accel.MIN_STEPS, accel.MIN_ROWS, 3))
    inside, seen = threading.Event(), []

    def worker():
        with accel.use_reference():
            inside.set()
            seen.append(accel.pays(x))
            release.wait(5)
    release = threading.Event()
    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    assert accel.pays(x)
    release.set()
    t.join(5)
    assert seen == [False]


_BOUNDS_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_accel as ta
for variant in sorted(ta.VARIANTS):
    for layout in ta.LAYOUTS:
        for masked in (False, True):
            case = ta.make_case(variant, 4, 3, 2, 5, "float64", True, masked, True, "both",
                                masked, 7)
            ta.compare(variant, case, "float64", layout=layout)
print("in bounds")
"""


def test_the_numba_kernels_index_within_their_arrays(tmp_path):
    """numba does not check indices unless told to; run every numba kernel, in both
    layouts, with NUMBA_BOUNDSCHECK=1 (compiled afresh, in a cache of its own), so that an
    index past an array's end (which reads its neighbour's memory and may even give the
    right numbers) is an IndexError. A feature-major backward once read the step's output
    gradient, (H, N), as if it were the kernels' one row of H*N values."""
    import subprocess
    import sys
    if _numba.numba() is None:
        pytest.skip("needs numba (pip install -e '.[fast]')")
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NPNN_NUMBA": "all",
           "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    script = _BOUNDS_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0 and "in bounds" in run.stdout, run.stderr[-3000:]
