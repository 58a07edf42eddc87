"""Layers: finite-difference checks through the public checker, gradient
accumulation, caches, modes, state dicts, backends and bad input."""

import os

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import npnn
from npnn.backend import cupy_available, to_backend, to_numpy
from npnn.gradcheck import check_module

from conftest import assert_close

small = st.integers(1, 4)
LAYERS = {"rnn": npnn.RNN, "lstm": npnn.LSTM, "gru": npnn.GRU}


@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), num_layers=st.integers(1, 2),
       bidirectional=st.booleans(), use_lengths=st.booleans(), batch_first=st.booleans(),
       dropout=st.sampled_from([0.0, 0.5]), given_hx=st.booleans(),
       T=small, N=small, D=small, H=small, seed=st.integers(0, 2**32 - 1))
@example(cell="gru", num_layers=2, bidirectional=True, use_lengths=True, batch_first=False,
         dropout=0.5, given_hx=True, T=3, N=3, D=2, H=2, seed=0)
def test_recurrent_layers_finite_differences(backend, cell, num_layers, bidirectional,
                                             use_lengths, batch_first, dropout, given_hx,
                                             T, N, D, H, seed):
    rng = np.random.default_rng(seed)
    layer = LAYERS[cell](D, H, num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         dropout=dropout, dtype="float64", seed=seed).to(backend)
    LD = num_layers * (2 if bidirectional else 1)
    dev = lambda a: to_backend(a, backend)  # noqa: E731
    x = dev(rng.standard_normal((N, T, D) if batch_first else (T, N, D)))
    hx = None
    if given_hx:
        hx = dev(0.5 * rng.standard_normal((LD, N, H)))
        if cell == "lstm":
            hx = (hx, dev(0.5 * rng.standard_normal((LD, N, H))))
    kwargs = {"lengths": rng.integers(1, T + 1, size=N)} if use_lengths else {}
    check_module(layer, (x, hx), kwargs, seed=seed, raise_on_failure=True)


@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), N=small, D=small, H=small,
       unbatched=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_cells_finite_differences(backend, cell, N, D, H, unbatched, seed):
    rng = np.random.default_rng(seed)
    cls = {"rnn": npnn.RNNCell, "lstm": npnn.LSTMCell, "gru": npnn.GRUCell}[cell]
    layer = cls(D, H, dtype="float64", seed=seed).to(backend)
    lead = () if unbatched else (N,)
    dev = lambda a: to_backend(a, backend)  # noqa: E731
    x = dev(rng.standard_normal(lead + (D,)))
    h = dev(0.5 * rng.standard_normal(lead + (H,)))
    hx = (h, dev(0.5 * rng.standard_normal(lead + (H,)))) if cell == "lstm" else h
    check_module(layer, (x, hx), seed=seed, raise_on_failure=True)


def test_unbatched_input_finite_differences():
    rng = np.random.default_rng(0)
    layer = npnn.LSTM(3, 2, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    hx = (rng.standard_normal((4, 2)), rng.standard_normal((4, 2)))
    check_module(layer, (rng.standard_normal((5, 3)), hx), raise_on_failure=True)


def test_sequential_linear_embedding_dropout_losses_finite_differences():
    rng = np.random.default_rng(0)
    model = npnn.Sequential(npnn.Linear(4, 5, dtype="float64", seed=0), npnn.Dropout(0.3, seed=1),
                            npnn.Linear(5, 3, bias=False, dtype="float64", seed=2))
    check_module(model, (rng.standard_normal((2, 3, 4)),), raise_on_failure=True)
    idx = rng.integers(0, 7, size=(4, 3))
    check_module(npnn.Embedding(7, 3, dtype="float64", seed=0), (idx,), raise_on_failure=True)
    # with padding_idx the padding row is frozen (PyTorch's semantics): no gradient at all
    emb = npnn.Embedding(7, 3, padding_idx=2, dtype="float64", seed=0)
    emb.backward(np.ones(emb(idx).shape))
    assert not emb.grads["weight"][2].any() and emb.grads["weight"].any()
    ce = npnn.SoftmaxCrossEntropy(label_smoothing=0.2)
    target = rng.integers(0, 5, size=(3, 2))
    check_module(ce, (rng.standard_normal((3, 2, 5)), target), arg_names=["logits", "target"],
                 raise_on_failure=True)


def _grads_after(layer, x, times):
    layer.zero_grad()
    for _ in range(times):
        out, _ = layer(x)
        layer.backward(np.ones_like(out))
    return {k: g.copy() for k, g in layer.grads.items()}


def test_gradients_accumulate_until_zero_grad():
    layer = npnn.GRU(3, 4, num_layers=2, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    once, twice = _grads_after(layer, x, 1), _grads_after(layer, x, 2)
    for k in once:
        assert_close(twice[k], 2 * once[k], 1e-12, k)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())


def test_backward_needs_a_matching_forward():
    layer = npnn.LSTM(3, 4)
    with pytest.raises(RuntimeError, match="without a matching forward"):
        layer.backward(np.zeros((2, 1, 4), np.float32))
    x = np.zeros((2, 1, 3), np.float32)
    out, _ = layer(x)
    layer.backward(out)
    with pytest.raises(RuntimeError, match="without a matching forward"):
        layer.backward(out)
    with npnn.no_grad():
        layer(x)
    with pytest.raises(RuntimeError, match="without a matching forward"):
        layer.backward(out)


def test_cells_backpropagate_steps_in_reverse_order():
    """A cell stepped T times and backpropagated T times equals the sequence layer."""
    rng = np.random.default_rng(0)
    seq = npnn.LSTM(3, 4, dtype="float64", seed=0)
    cell = npnn.LSTMCell(3, 4, dtype="float64", seed=1)
    cell.load_state_dict({k[:-3]: v for k, v in seq.state_dict().items()})
    x = rng.standard_normal((5, 2, 3))
    dout = rng.standard_normal((5, 2, 4))
    out, _ = seq(x)
    dx_seq, _ = seq.backward(dout)
    hc, outs = None, []
    for t in range(5):
        hc = cell(x[t], hc)
        outs.append(hc[0])
    assert_close(np.stack(outs), out, 1e-12, "out")
    dh, dc, dxs = np.zeros((2, 4)), None, []
    for t in range(4, -1, -1):
        dx, (dh, dc) = cell.backward(dh + dout[t], dc)
        dxs.append(dx)
    assert_close(np.stack(dxs[::-1]), dx_seq, 1e-12, "dx")
    for k, g in cell.grads.items():
        assert_close(g, seq.grads[k + "_l0"], 1e-12, k)


def test_dropout_only_in_training_and_with_the_right_statistics():
    x = np.ones((200, 50, 8))
    layer = npnn.RNN(8, 16, num_layers=2, dropout=0.3, dtype="float64", seed=0)
    plain = npnn.RNN(8, 16, num_layers=2, dtype="float64", seed=0)
    out_train, _ = layer(x)
    drop = layer._caches[-1].drops[0]
    assert abs(float((drop == 0).mean()) - 0.3) < 0.01
    assert abs(float(drop.mean()) - 1.0) < 0.02
    layer.clear_caches()
    layer.eval()
    out_eval, _ = layer(x)
    assert_close(out_eval, plain(x)[0], 1e-12, "eval equals no dropout")
    assert np.abs(out_train - out_eval).max() > 1e-3
    d = npnn.Dropout(0.5, seed=0)
    y = d(x)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert np.array_equal(d.backward(x), y)            # the backward reuses the mask
    assert np.array_equal(d.eval()(x), x)


def test_lengths_give_packed_semantics():
    rng = np.random.default_rng(0)
    layer = npnn.GRU(2, 3, bidirectional=True, dtype="float64", seed=0)
    x = rng.standard_normal((5, 2, 2))
    out, h_n = layer(x, lengths=[5, 2])
    assert not out[2:, 1].any()                        # zero past the length
    alone, h_alone = layer(x[:2, 1:2])                 # the short sequence on its own
    assert_close(out[:2, 1:2], alone, 1e-12, "outputs")
    assert_close(h_n[:, 1:2], h_alone, 1e-12, "final states (both directions)")


def test_state_dict_save_load_and_mismatches(tmp_path):
    layer = npnn.LSTM(3, 4, num_layers=2, seed=0)
    path = tmp_path / "w.npz"
    layer.save(path)
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]    # no temporary file left behind
    other = npnn.LSTM(3, 4, num_layers=2, seed=1)
    other.load(path)
    for k, v in layer.params.items():
        assert np.array_equal(other.params[k], v)
    with pytest.raises(ValueError, match=r"missing keys \['weight_ih_l1'"):
        npnn.LSTM(3, 4, num_layers=2).load_state_dict(npnn.LSTM(3, 4).state_dict())
    with pytest.raises(ValueError, match=r"expected weight_ih_l0 of shape \(16, 3\), got \(12, 3\)"):
        npnn.LSTM(3, 4).load_state_dict(npnn.GRU(3, 4).state_dict() | {
            "weight_ih_l0": np.zeros((12, 3))}, strict=False)
    with pytest.raises(ValueError, match="unexpected keys"):
        npnn.LSTM(3, 4, bias=False).load_state_dict(npnn.LSTM(3, 4).state_dict())
    missing, unexpected = npnn.LSTM(3, 4, num_layers=2).load_state_dict(
        npnn.LSTM(3, 4).state_dict(), strict=False)
    assert "weight_ih_l1" in missing and not unexpected


def test_backend_moves(backend):
    layer = npnn.GRU(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    ref, _ = layer(x)
    layer.clear_caches()
    if backend == "cupy":
        moved = layer.to("cupy")
        assert moved.backend == "cupy"
        out, _ = moved(to_backend(x, "cupy"))
        assert_close(out, ref, 1e-5, "cupy vs numpy")
        moved.to("numpy")
    assert layer.backend == "numpy"


def test_to_cupy_without_gpu_is_a_clear_error():
    if cupy_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="cupy"):
        npnn.RNN(2, 2).to("cupy")


CONSTRUCTOR_ERRORS = [
    (lambda: npnn.RNN(0, 4), ValueError, "expected input_size to be a positive integer, got 0"),
    (lambda: npnn.LSTM(3, -1), ValueError, "expected hidden_size to be a positive integer, got -1"),
    (lambda: npnn.GRU(3, 4, num_layers=0), ValueError, "expected num_layers to be a positive"),
    (lambda: npnn.RNN(3, 4, nonlinearity="sigmoid"), ValueError,
     "expected nonlinearity to be one of 'tanh', 'relu', got 'sigmoid'"),
    (lambda: npnn.LSTM(3, 4, dropout=1.0), ValueError, "expected dropout probability in [0, 1), got 1.0"),
    (lambda: npnn.LSTM(3, 4, dropout=-0.1), ValueError, "in [0, 1), got -0.1"),
    (lambda: npnn.GRU(3, 4, bias="yes"), TypeError, "expected bias to be True or False, got 'yes'"),
    (lambda: npnn.GRU(3, 4, dtype="int32"), ValueError,
     "expected dtype to be one of 'float32', 'float64', got 'int32'"),
    (lambda: npnn.GRU(3, 4, seed="x"), TypeError, "expected seed to be an int"),
    (lambda: npnn.Linear(3, 0), ValueError, "expected out_features to be a positive integer, got 0"),
    (lambda: npnn.Embedding(5, 2, padding_idx=5), ValueError, "expected padding_idx in [-5, 5), got 5"),
    (lambda: npnn.Dropout(1.5), ValueError, "expected dropout probability in [0, 1), got 1.5"),
    (lambda: npnn.SoftmaxCrossEntropy(reduction="avg"), ValueError, "got 'avg'"),
    (lambda: npnn.Sequential(npnn.Linear(2, 2), "relu"), TypeError, "got str at position 1"),
]


@pytest.mark.parametrize("call, exc, message", CONSTRUCTOR_ERRORS,
                         ids=[c[2][:40] for c in CONSTRUCTOR_ERRORS])
def test_constructor_errors(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def _call_errors():
    f32 = np.float32
    lstm = npnn.LSTM(3, 4, num_layers=2)
    gru_bf = npnn.GRU(3, 4, batch_first=True)
    x = np.zeros((5, 2, 3), f32)
    return [
        (lambda: lstm(np.zeros((5, 2, 7), f32)), ValueError,
         "expected x of shape (T, N, 3) or (T, 3), got (5, 2, 7)"),
        (lambda: gru_bf(np.zeros((5, 2, 7), f32)), ValueError,
         "expected x of shape (N, T, 3) or (T, 3), got (5, 2, 7)"),
        (lambda: lstm(np.zeros((5, 2, 3))), TypeError,
         "expected x of dtype float32 (the layer's dtype), got float64"),
        (lambda: lstm(x, (np.zeros((2, 3, 4), f32), np.zeros((2, 2, 4), f32))), ValueError,
         "expected hx[0] of shape (2, 2, 4), got (2, 3, 4)"),
        (lambda: lstm(x, np.zeros((2, 2, 4), f32)), TypeError,
         "expected hx to be a tuple (h, c) or None, got ndarray"),
        (lambda: lstm(x, lengths=[0, 3]), ValueError, "expected lengths between 1 and T=5 (the "
         "number of time steps), got 0"),
        (lambda: lstm(x, lengths=[6, 3]), ValueError, "expected lengths between 1 and T=5 (the "
         "number of time steps), got 6"),
        (lambda: lstm(x, lengths=[1, 2, 3]), ValueError, "expected lengths of shape (2,), got (3,)"),
        (lambda: lstm(x, lengths=[1.0, 2.0]), TypeError, "expected lengths to be an integer array"),
        (lambda: lstm(x[:, 0], lengths=[5]), ValueError, "expected batched input"),
        (lambda: npnn.GRU(3, 4)(x, np.zeros((1, 2, 5), f32)), ValueError,
         "expected hx of shape (1, 2, 4), got (1, 2, 5)"),
        (lambda: npnn.Linear(3, 2)(np.zeros((4, 2), f32)), ValueError,
         "expected x of shape (..., 3), got (4, 2)"),
        (lambda: npnn.Embedding(5, 2)(np.array([5])), ValueError, "expected idx in [0, 5), got 5"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_call_errors(case):
    call, exc, message = _call_errors()[case]
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_backward_gradient_shape_is_checked():
    layer = npnn.GRU(3, 4, bidirectional=True)
    out, _ = layer(np.zeros((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected d_out of shape \(5, 2, 8\), got \(5, 2, 4\)"):
        layer.backward(np.zeros((5, 2, 4), np.float32))


def test_parameters_and_repr():
    model = npnn.Sequential(npnn.Linear(3, 4), npnn.Linear(4, 2, bias=False))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight"]
    assert len(list(model.parameters())) == 3 and model.num_parameters() == 3 * 4 + 4 + 8
    assert "Linear(in_features=3, out_features=4)" in repr(model)
    assert repr(npnn.LSTM(3, 4, num_layers=2, bidirectional=True)) == \
        "LSTM(3, 4, num_layers=2, bidirectional=True)"
    assert to_numpy(model[0].params["weight"]).dtype == np.float32


VARIANTS = {"peephole": npnn.PeepholeLSTM, "ctrnn": npnn.CTRNN, "jordan": npnn.JordanRNN}


@given(cell=st.sampled_from(sorted(VARIANTS)), num_layers=st.integers(1, 2),
       bidirectional=st.booleans(), use_lengths=st.booleans(), given_hx=st.booleans(),
       T=small, N=small, D=small, H=small, seed=st.integers(0, 2**32 - 1))
@example(cell="ctrnn", num_layers=2, bidirectional=True, use_lengths=True, given_hx=True,
         T=3, N=2, D=2, H=2, seed=0)
def test_variant_layers_finite_differences(backend, cell, num_layers, bidirectional, use_lengths,
                                           given_hx, T, N, D, H, seed):
    rng = np.random.default_rng(seed)
    layer = VARIANTS[cell](D, H, num_layers, bidirectional=bidirectional, dtype="float64",
                           seed=seed).to(backend)
    LD = num_layers * (2 if bidirectional else 1)
    dev = lambda a: to_backend(a, backend)  # noqa: E731
    hx = None
    if given_hx:
        hx = dev(0.5 * rng.standard_normal((LD, N, H)))
        if cell == "peephole":
            hx = (hx, dev(0.5 * rng.standard_normal((LD, N, H))))
    kwargs = {"lengths": rng.integers(1, T + 1, size=N)} if use_lengths else {}
    report = check_module(layer, (dev(rng.standard_normal((T, N, D))), hx), kwargs, seed=seed,
                          raise_on_failure=True)
    names = {t.name for t in report.tensors}
    expected = {"peephole": "weight_co_l0", "ctrnn": "log_tau_l0", "jordan": "weight_yh_l0"}[cell]
    assert expected in names


def test_variant_layer_parameters_and_fixed_tau():
    p = npnn.PeepholeLSTM(3, 4, bidirectional=True)
    assert {"weight_ci_l0", "weight_cf_l0_reverse", "weight_co_l0"} <= set(p.params)
    fixed = npnn.CTRNN(3, 4, tau=5.0, learn_tau=False, dt=0.5)
    assert "log_tau_l0" not in fixed.params
    learned = npnn.CTRNN(3, 4, tau=5.0, dt=0.5, dtype="float64")
    assert np.allclose(np.exp(learned.params["log_tau_l0"]), 5.0, rtol=1e-15)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items() if k != "log_tau_l0"})
    out_f, _ = fixed(x.astype(np.float32))
    out_l, _ = learned(x)
    assert_close(out_f, out_l, 1e-5, "fixed tau equals the learnable one at its initial value")
    j = npnn.JordanRNN(3, 4, num_layers=2)
    assert set(j.params) >= {"weight_ih_l1", "weight_yh_l1", "weight_hy_l1", "bias_y_l1"}
    with pytest.raises(ValueError, match="expected dt > 0 and tau > 0"):
        npnn.CTRNN(3, 4, tau=0)
