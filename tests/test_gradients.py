"""Every backward against central finite differences, in float64, over
Hypothesis-drawn shapes (each dimension from 1): relative error < 1e-6."""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from npnn import functional as F
from npnn.backend import to_numpy
from npnn.functional.accel import use_reference
from npnn.functional.registry import CELLS
from npnn.gradcheck import cases, check_gradients

TOL = 1e-6
dims = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)


def _check(built, seed, atol=0.0):
    f, inputs = built
    check_gradients(f, inputs, tol=TOL, seed=seed, raise_on_failure=True, atol=atol)


def _rounding_level(built, seed, eps=1e-6):
    """The rounding error of a central difference of L = sum(out * dout) (``dout`` as
    ``check_gradients`` draws it for ``seed``): 4 u sum |out * dout| / eps, u = 2^-52.

    The layer-normalised cells need it as an absolute floor: with D = 1 (H = 1) the
    normalised x W_ih^T (h W_hh^T) is scale-invariant in x (h), LN(s w) = sign(s) LN(w)
    up to O(eps_LN / s^2), so dx (dh0) is O(1e-5) of the other gradients and its
    finite difference is at this level (docs/derivations.md, "Layer normalisation"). With
    D, H >= 2 no gradient is degenerate so, and no floor is used."""
    f, inputs = built
    outs, _ = f(**{k: (v.astype(np.float64) if hasattr(v, "dtype") and v.dtype.kind == "f"
                       else v) for k, v in inputs.items()})
    rng = np.random.default_rng(seed)
    total = sum(float(np.sum(np.abs(to_numpy(o) * rng.standard_normal(o.shape))))
                for o in (outs if isinstance(outs, tuple) else (outs,)))
    return 4 * np.finfo(np.float64).eps * total / eps


@given(T=dims, N=dims, D=dims, H=dims, bias=st.booleans(),
       nonlinearity=st.sampled_from(["tanh", "relu"]), masked=st.booleans(), seed=seeds)
@example(T=1, N=1, D=1, H=1, bias=True, nonlinearity="tanh", masked=False, seed=0)
@example(T=1, N=1, D=1, H=1, bias=False, nonlinearity="relu", masked=True, seed=1)
def test_rnn(backend, T, N, D, H, bias, nonlinearity, masked, seed):
    rng = np.random.default_rng(seed)
    _check(cases.rnn_case(rng, T, N, D, H, bias, nonlinearity, masked, backend, path="reference"),
           seed)


@given(cell=st.sampled_from(["lstm", "gru", "peephole_lstm", "layernorm_lstm", "layernorm_gru"]),
       T=dims, N=dims, D=dims, H=dims, bias=st.booleans(), masked=st.booleans(), seed=seeds)
@example(cell="lstm", T=1, N=1, D=1, H=1, bias=True, masked=False, seed=0)
@example(cell="gru", T=1, N=1, D=1, H=1, bias=True, masked=False, seed=0)
@example(cell="peephole_lstm", T=1, N=1, D=1, H=1, bias=True, masked=False, seed=0)
@example(cell="layernorm_lstm", T=1, N=1, D=1, H=1, bias=True, masked=False, seed=0)
@example(cell="layernorm_gru", T=1, N=1, D=1, H=1, bias=True, masked=False, seed=0)
@example(cell="layernorm_lstm", T=4, N=3, D=2, H=3, bias=False, masked=True, seed=1)
@example(cell="layernorm_gru", T=4, N=3, D=2, H=3, bias=False, masked=True, seed=1)
@example(cell="layernorm_lstm", T=1, N=1, D=1, H=1, bias=False, masked=False, seed=3)  # dx O(eps)
def test_gated_cells(backend, cell, T, N, D, H, bias, masked, seed):
    """The reference of every gated cell (the accelerations are checked against it in
    test_accel.py)."""
    rng = np.random.default_rng(seed)
    built = cases.recurrent_case(rng, cell, T, N, D, H, bias, masked, backend, path="reference")
    degenerate = cell.startswith("layernorm") and min(D, H) == 1      # see _rounding_level
    _check(built, seed, _rounding_level(built, seed) if degenerate else 0.0)


@given(lead=st.lists(dims, min_size=0, max_size=3), K=dims, beta=st.booleans(), seed=seeds)
@example(lead=[1], K=1, beta=True, seed=0)             # K = 1: a_hat = 0, only beta reaches y
def test_layer_norm(backend, lead, K, beta, seed):
    """``layernorm.py``, (L5)-(L7): the input, the gain and the bias."""
    rng = np.random.default_rng(seed)
    _check(cases.layer_norm_case(rng, tuple(lead), K, beta, backend), seed)


@given(T=dims, N=dims, D=dims, H=dims, P=dims, bias=st.booleans(), masked=st.booleans(),
       seed=seeds)
@example(T=1, N=1, D=1, H=1, P=1, bias=True, masked=False, seed=0)
@example(T=3, N=2, D=1, H=1, P=3, bias=False, masked=True, seed=1)     # P > H: the op allows it
def test_lstm_with_projections(backend, T, N, D, H, P, bias, masked, seed):
    """``lstmp.py``: every gradient, initial states h0 (N, P) and c0 (N, H), W_hr (P, H)."""
    rng = np.random.default_rng(seed)
    _check(cases.recurrent_case(rng, "lstmp", T, N, D, H, bias, masked, backend,
                                sizes={"proj_size": P}), seed)


@given(cell=st.sampled_from(sorted(CELLS)), N=dims, D=dims, H=dims, bias=st.booleans(),
       seed=seeds)
@example(cell="lstm", N=1, D=1, H=1, bias=True, seed=0)
def test_steps(backend, cell, N, D, H, bias, seed):
    rng = np.random.default_rng(seed)
    built = cases.step_case(rng, cell, N, D, H, bias, backend)
    degenerate = cell.startswith("layernorm") and min(D, H) == 1      # see _rounding_level
    _check(built, seed, _rounding_level(built, seed) if degenerate else 0.0)


@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), N=dims, D=dims, H=dims, bias=st.booleans(),
       given=st.booleans(), seed=seeds)
def test_one_step_equals_a_sequence_of_one(cell, N, D, H, bias, given, seed):
    """``F.lstm_step_forward``/``backward`` (and the RNN's, the GRU's), the step path of
    cell layers and decoders, give what the sequence op gives for T = 1."""
    rng = np.random.default_rng(seed)
    f, inputs = cases.step_case(rng, cell, N, D, H, bias)
    spec = CELLS[cell]
    params = {k: v for k, v in inputs.items() if k not in spec.states and k != "x"}
    states = [inputs[s] if given else None for s in spec.states]
    forward = getattr(F, f"{cell}_step_forward")
    backward = getattr(F, f"{cell}_step_backward")
    *new, cache = forward(inputs["x"], *states, **params)
    d = [rng.standard_normal((N, H)) for _ in states]
    dx, *dprev, grads = backward(*d, cache)
    with use_reference():
        out, finals, seq_cache = spec.run(inputs["x"][None], states, params)
    sdx, sdprev, sgrads = spec.run_backward(None, d, seq_cache)
    for a, b in zip(list(new) + [dx] + dprev, list(finals) + [sdx[0]] + list(sdprev)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    for k in grads:
        np.testing.assert_allclose(grads[k], sgrads[k], rtol=1e-13, atol=1e-14)


@given(lead=st.lists(dims, min_size=0, max_size=3), D=dims, O=dims, bias=st.booleans(), seed=seeds)
def test_linear(backend, lead, D, O, bias, seed):
    rng = np.random.default_rng(seed)
    _check(cases.linear_case(rng, tuple(lead), D, O, bias, backend), seed)


@given(lead=st.lists(dims, min_size=1, max_size=3), V=dims, E=dims,
       pad=st.booleans(), dropout=st.sampled_from([0.0, 0.3, 0.7]), seed=seeds)
@example(lead=[1], V=1, E=1, pad=False, dropout=0.3, seed=0)
def test_embedding(backend, lead, V, E, pad, dropout, seed):
    """The lookup, and with embedding dropout's row scale (fixed: drawn once) (5), (6)."""
    rng = np.random.default_rng(seed)
    _check(cases.embedding_case(rng, tuple(lead), V, E, 0 if pad else None, backend, dropout),
           seed)


@given(lead=st.lists(dims, min_size=1, max_size=3), C=dims,
       reduction=st.sampled_from(["mean", "sum", "none"]),
       label_smoothing=st.sampled_from([0.0, 0.1, 0.5]), ignore=st.booleans(),
       weighted=st.booleans(), seed=seeds)
@example(lead=[1], C=1, reduction="mean", label_smoothing=0.0, ignore=False, weighted=False, seed=0)
def test_cross_entropy(backend, lead, C, reduction, label_smoothing, ignore, weighted, seed):
    rng = np.random.default_rng(seed)
    _check(cases.cross_entropy_case(rng, tuple(lead), C, reduction, label_smoothing,
                                    ignore, weighted, backend), seed)


@given(shape=st.lists(dims, min_size=0, max_size=3),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=seeds)
def test_mse(backend, shape, reduction, seed):
    rng = np.random.default_rng(seed)
    _check(cases.mse_case(rng, tuple(shape), reduction, backend), seed)


@given(name=st.sampled_from(["sigmoid", "tanh", "relu", "softmax"]),
       shape=st.lists(dims, min_size=1, max_size=3), seed=seeds)
def test_activations(backend, name, shape, seed):
    rng = np.random.default_rng(seed)
    _check(cases.activation_case(rng, name, tuple(shape), backend), seed)


@given(kind=st.sampled_from(["dot", "additive", "projected"]), N=dims, L=dims, S=dims, E=dims,
       Ev=dims, A=dims, masked=st.booleans(), scaled=st.booleans(), seed=seeds)
@example(kind="additive", N=1, L=1, S=1, E=1, Ev=1, A=1, masked=True, scaled=True, seed=0)
def test_attention(backend, kind, N, L, S, E, Ev, A, masked, scaled, seed):
    rng = np.random.default_rng(seed)
    _check(cases.attention_case(rng, kind, N, L, S, E, Ev, A, masked,
                                None if scaled else 1.0, backend), seed)


def test_peephole_lstm_without_peepholes_is_the_lstm():
    rng = np.random.default_rng(0)
    T, N, D, H = 5, 3, 4, 6
    x = rng.standard_normal((T, N, D))
    W = [0.5 * rng.standard_normal(s) for s in ((4 * H, D), (4 * H, H), (4 * H,), (4 * H,))]
    zero = np.zeros(H)
    out, h, c, cache = F.peephole_lstm_forward(x, None, None, W[0], W[1], zero, zero, zero,
                                               W[2], W[3])
    ref, rh, rc, rcache = F.lstm_forward(x, None, None, *W)
    np.testing.assert_allclose(out, ref, atol=1e-14)
    dout = rng.standard_normal((T, N, H))
    g = F.peephole_lstm_backward(dout, None, None, cache)
    r = F.lstm_backward(dout, None, None, rcache)
    for a, b in zip(g[:3], r[:3]):
        np.testing.assert_allclose(a, b, atol=1e-13)
    for k in r[3]:
        np.testing.assert_allclose(g[3][k], r[3][k], atol=1e-12)


@given(T=dims, N=dims, D=dims, H=dims, bias=st.booleans(), masked=st.booleans(),
       dt=st.sampled_from([0.1, 0.5, 1.0]), seed=seeds)
@example(T=1, N=1, D=1, H=1, bias=True, masked=False, dt=1.0, seed=0)
def test_ctrnn(backend, T, N, D, H, bias, masked, dt, seed):
    rng = np.random.default_rng(seed)
    _check(cases.recurrent_case(rng, "ctrnn", T, N, D, H, bias, masked, backend, dt=dt), seed)


@given(T=dims, N=dims, D=dims, H=dims, O=dims, bias=st.booleans(), masked=st.booleans(),
       seed=seeds)
@example(T=1, N=1, D=1, H=1, O=1, bias=True, masked=False, seed=0)
def test_jordan(backend, T, N, D, H, O, bias, masked, seed):
    rng = np.random.default_rng(seed)
    _check(cases.jordan_case(rng, T, N, D, H, O, bias, masked, backend), seed)


def test_ctrnn_with_dt_equal_to_tau_is_the_tanh_rnn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4))
    W = [0.5 * rng.standard_normal(s) for s in ((6, 4), (6, 6), (6,), (6,))]
    out, h, _ = F.ctrnn_forward(x, None, W[0], W[1], np.full(6, np.log(2.0)), W[2], W[3], dt=2.0)
    ref, rh, _ = F.rnn_forward(x, None, *W)
    np.testing.assert_allclose(out, ref, atol=1e-14)
