"""Bad input gets a ValueError/TypeError that names what was expected and what came."""

import numpy as np
import pytest

from npnn import functional as F
from npnn.backend import get_backend

f64 = np.float64


def z(*shape, dtype=f64):
    return np.zeros(shape, dtype=dtype)


W4 = dict(W_ih=z(8, 8), W_hh=z(8, 2), b_ih=z(8), b_hh=z(8))  # LSTM, D=8, H=2

CASES = [
    # (call, exception, message fragment)
    (lambda: F.lstm_forward(z(5, 3, 7), None, None, **W4), ValueError,
     "expected x of shape (T, N, 8), got (5, 3, 7)"),
    (lambda: F.lstm_forward(z(5, 8), None, None, **W4), ValueError,
     "expected x of shape (T, N, 8), got (5, 8)"),
    (lambda: F.lstm_forward(z(5, 3, 8), z(4, 2), None, **W4), ValueError,
     "expected h0 of shape (3, 2), got (4, 2)"),
    (lambda: F.lstm_forward(z(5, 3, 8), None, z(3, 3), **W4), ValueError,
     "expected c0 of shape (3, 2), got (3, 3)"),
    (lambda: F.lstm_forward(z(5, 3, 8), None, None, z(8, 8), z(6, 2)), ValueError,
     "expected W_hh of shape (8, 2), got (6, 2)"),
    (lambda: F.gru_forward(z(5, 3, 8), None, z(6, 8), z(6, 2), z(6), z(5)), ValueError,
     "expected b_hh of shape (6,), got (5,)"),
    (lambda: F.gru_forward(z(5, 3, 8), None, z(6, 8), z(6, 2), z(6), None), ValueError,
     "both b_ih and b_hh or neither"),
    (lambda: F.rnn_forward(z(5, 3, 8), None, z(2, 8), z(2, 2), nonlinearity="sigmoid"),
     ValueError, "expected nonlinearity to be one of 'tanh', 'relu', got 'sigmoid'"),
    (lambda: F.rnn_forward(z(5, 3, 8, dtype=np.float32), None, z(2, 8), z(2, 2)), TypeError,
     "expected W_hh of dtype float32"),
    (lambda: F.rnn_forward(np.zeros((5, 3, 8), dtype=int), None, z(2, 8), z(2, 2)), TypeError,
     "expected x to be a floating-point array, got dtype int64"),
    (lambda: F.rnn_forward([[[0.0]]], None, z(2, 1), z(2, 2)), TypeError,
     "expected x to be a numpy or cupy array, got list"),
    (lambda: F.rnn_forward(z(0, 3, 8), None, z(2, 8), z(2, 2)), ValueError,
     "at least one step"),
    (lambda: F.rnn_forward(z(5, 3, 8), None, z(2, 8), z(2, 2), mask=np.ones((5, 2), bool)),
     ValueError, "expected mask of shape (5, 3), got (5, 2)"),
    (lambda: F.length_mask(np.array([0, 3]), 3), ValueError,
     "expected lengths between 1 and T=3 (the number of time steps), got 0"),
    (lambda: F.length_mask(np.array([1.0, 3.0]), 3), TypeError,
     "expected lengths to be an integer array"),
    (lambda: F.rnn_step_forward(z(5, 3, 8), None, z(2, 8), z(2, 2)), ValueError,
     "expected x of shape (N, D), got (5, 3, 8)"),
    (lambda: F.linear_forward(z(2, 3), z(5, 4)), ValueError,
     "expected x of shape (..., 4), got (2, 3)"),
    (lambda: F.linear_forward(z(2, 4), z(5, 4), z(4)), ValueError,
     "expected b of shape (5,), got (4,)"),
    (lambda: F.embedding_forward(np.array([0, 5]), z(5, 3)), ValueError,
     "expected idx in [0, 5), got 5"),
    (lambda: F.embedding_forward(np.array([0.0]), z(5, 3)), TypeError,
     "expected idx to be an integer array, got dtype float64"),
    (lambda: F.embedding_forward(np.array([0]), z(5, 3), padding_idx=7), ValueError,
     "expected padding_idx in [-5, 5), got 7"),
    (lambda: F.softmax_cross_entropy(z(4, 5), np.array([0, 1, 5, 2])), ValueError,
     "expected target in [0, 5) or -100, got 5"),
    (lambda: F.softmax_cross_entropy(z(4, 5), np.array([0, 1, -1, 2])), ValueError,
     "expected target in [0, 5) or -100, got -1"),
    (lambda: F.softmax_cross_entropy(z(4, 5), np.zeros(4)), TypeError,
     "expected target to be an integer array, got dtype float64"),
    (lambda: F.softmax_cross_entropy(z(4, 5), np.zeros(3, int)), ValueError,
     "expected target of shape (4,) to match logits of shape (4, 5) with the class axis "
     "last, got (3,)"),
    (lambda: F.softmax_cross_entropy(z(4, 5), np.zeros(4, int), reduction="avg"), ValueError,
     "expected reduction to be one of 'mean', 'sum', 'none', got 'avg'"),
    (lambda: F.softmax_cross_entropy(z(4, 5), np.zeros(4, int), label_smoothing=1.5), ValueError,
     "expected label_smoothing in [0, 1], got 1.5"),
    (lambda: F.softmax_cross_entropy(z(4, 5), np.zeros(4, int), weights=z(4, 1)), ValueError,
     "expected weights of shape (4,), got (4, 1)"),
    (lambda: F.mse_loss(z(3, 2), z(2, 3)), ValueError, "expected target of shape (3, 2), got (2, 3)"),
    (lambda: get_backend("tpu"), ValueError, "expected backend 'numpy' or 'cupy', got 'tpu'"),
    (lambda: F.dot_attention_forward(z(2, 3, 4), z(2, 5, 3), z(2, 5, 6)), ValueError,
     "expected K of shape (2, S, 4), got (2, 5, 3)"),
    (lambda: F.dot_attention_forward(z(2, 3, 4), z(2, 5, 4), z(2, 4, 6)), ValueError,
     "expected V of shape (2, 5, Ev), got (2, 4, 6)"),
    (lambda: F.dot_attention_forward(z(2, 3, 4), z(2, 5, 4), z(2, 5, 6),
                                     np.zeros((2, 5), bool)), ValueError,
     "expected at least one valid key per sequence, got none for sequence 0"),
    (lambda: F.dot_attention_forward(z(2, 3, 4), z(2, 5, 4), z(2, 5, 6), np.ones((2, 5))),
     TypeError, "expected mask to be a boolean array, got dtype float64"),
    (lambda: F.additive_attention_forward(z(2, 3, 4), z(2, 5, 3), z(2, 5, 6), z(7, 4), z(7, 3),
                                          z(6)), ValueError, "expected w_v of shape (7,), got (6,)"),
]


@pytest.mark.parametrize("call, exc, message", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_is_named(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_backward_checks_output_gradients():
    _, _, cache = F.rnn_forward(z(5, 3, 8), None, z(2, 8), z(2, 2))
    with pytest.raises(ValueError, match=r"expected dout of shape \(5, 3, 2\), got \(5, 3, 3\)"):
        F.rnn_backward(z(5, 3, 3), None, cache)
    with pytest.raises(TypeError, match="expected dh_n of dtype float64"):
        F.rnn_backward(None, z(3, 2, dtype=np.float32), cache)


def test_cupy_requested_without_gpu_is_a_runtime_error():
    from npnn.backend import cupy_available
    if cupy_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="cupy"):
        get_backend("cupy")
