"""N -> 1, N -> N, 1 -> N models, the gradient analysis, and smoke runs of the examples."""

import os
import subprocess
import sys

import numpy as np
import pytest

import npnn
from npnn import functional as F
from npnn.analysis import (BASELINE_MSE, adding_problem, gradient_norms, step_jacobians,
                           train_adding)
from npnn.gradcheck import check_module
from npnn.models import ConditionalDecoder, SequenceClassifier, SequenceTagger

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_finite_differences(pooling, cell, bidirectional):
    rng = np.random.default_rng(0)
    X, L = rng.integers(1, 6, size=(3, 5)), np.array([5, 2, 3])
    model = SequenceClassifier(6, 3, 3, 4, 2, cell, bidirectional, pooling, dtype="float64",
                               seed=0)
    check_module(model, (X, L), arg_names=["X", "L"], raise_on_failure=True)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_tagger_finite_differences(bidirectional):
    rng = np.random.default_rng(1)
    X, L = rng.integers(1, 6, size=(3, 5)), np.array([4, 5, 1])
    model = SequenceTagger(6, 4, 3, 4, 2, "lstm", bidirectional, dtype="float64", seed=0)
    check_module(model, (X, L), arg_names=["X", "L"], raise_on_failure=True)


@pytest.mark.parametrize("scheme", ["init", "input"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_conditional_decoder_finite_differences(scheme, cell):
    rng = np.random.default_rng(2)
    model = ConditionalDecoder(5, 7, 3, 4, cell, scheme, dtype="float64", seed=0)
    report = check_module(model, (rng.standard_normal((3, 5)), rng.integers(0, 7, size=(3, 4))),
                          arg_names=["c", "tgt"], raise_on_failure=True)
    assert "c" in {t.name for t in report.tensors}          # the condition's gradient too


def test_classifier_pools_each_sequence_at_its_own_end():
    rng = np.random.default_rng(0)
    model = SequenceClassifier(6, 2, 3, 4, seed=0)
    X = rng.integers(1, 6, size=(2, 7))
    both = model.predict(X, [7, 3])
    alone = model.predict(X[1:, :3], [3])
    assert both[1] == alone[0]
    np.testing.assert_allclose(model(X, [7, 3])[1], model(X[1:, :3], [3])[0], atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_norms_match_the_sequence_backward(cell):
    rng = np.random.default_rng(0)
    layer = {"rnn": npnn.RNN, "lstm": npnn.LSTM, "gru": npnn.GRU}[cell](3, 5, dtype="float64",
                                                                       seed=0)
    x = rng.standard_normal((8, 4, 3))
    d_last = rng.standard_normal((4, 5))
    norms = gradient_norms(cell, layer, x, d_last)
    assert norms.shape == (9,)
    _, hx = layer(x)
    zeros = np.zeros((1, 4, 5))
    d = (d_last[None], zeros) if cell == "lstm" else d_last[None]
    _, dh0 = layer.backward(None, d)
    dh0 = dh0[0] if cell == "lstm" else dh0
    assert np.isclose(norms[0], np.linalg.norm(dh0[0], axis=1).mean(), rtol=1e-12)
    assert np.isclose(norms[-1], np.linalg.norm(d_last, axis=1).mean())


def test_rnn_step_jacobian_is_diag_tanh_prime_times_W_hh():
    rng = np.random.default_rng(0)
    layer = npnn.RNN(3, 4, dtype="float64", seed=0)
    x = rng.standard_normal((5, 2, 3))
    sv = step_jacobians("rnn", layer, x)
    W_ih, W_hh, b_ih, b_hh = (layer.params[k] for k in ("weight_ih_l0", "weight_hh_l0",
                                                         "bias_ih_l0", "bias_hh_l0"))
    out, _, _ = F.rnn_forward(x[:, :1], None, W_ih, W_hh, b_ih, b_hh)
    for t in range(5):
        J = (1 - out[t, 0] ** 2)[:, None] * W_hh
        np.testing.assert_allclose(sv[t], np.linalg.svd(J, compute_uv=False), atol=1e-12)


def test_lstm_step_jacobian_against_finite_differences():
    rng = np.random.default_rng(1)
    layer = npnn.LSTM(2, 3, dtype="float64", seed=0)
    x = rng.standard_normal((1, 1, 2))
    sv = step_jacobians("lstm", layer, x)
    W = [layer.params[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]

    def step(state):
        h, c, _ = F.lstm_step_forward(x[0], state[None, :3], state[None, 3:], *W)
        return np.concatenate([h[0], c[0]])
    J = np.empty((6, 6))
    for k in range(6):
        e = np.zeros(6)
        e[k] = 1e-6
        J[:, k] = (step(e) - step(-e)) / 2e-6
    np.testing.assert_allclose(sv[0], np.linalg.svd(J, compute_uv=False), atol=1e-8)


def test_adding_problem_data_and_baseline():
    x, y = adding_problem(np.random.default_rng(0), 5000, 40)
    assert x.shape == (40, 5000, 2) and y.shape == (5000, 1)
    assert np.all(x[:, :, 1].sum(axis=0) == 2)
    assert np.all(x[:20, :, 1].sum(axis=0) == 1)                 # one marker in each half
    np.testing.assert_allclose((x[:, :, 0] * x[:, :, 1]).sum(axis=0), y[:, 0], rtol=1e-6)
    assert abs(float(np.mean((y - 1.0) ** 2)) - BASELINE_MSE) < 0.01


def test_lstm_learns_a_short_adding_problem():
    _, mse = train_adding("lstm", 10, hidden=16, steps=600, seed=0, lr=1e-2)
    assert mse < 0.3 * BASELINE_MSE


@pytest.mark.parametrize("example", ["dates", "addition", "classify", "tag", "conditional"])
def test_examples_run(example):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples", f"{example}.py"),
                          "--smoke"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "|" in run.stdout                                        # prints its table


def test_analyze_command(tmp_path):
    run = subprocess.run([sys.executable, "-m", "npnn", "analyze", "--T", "20", "--hidden", "8",
                          "--train-steps", "0", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "| RNN | LSTM | GRU |" in run.stdout.replace("| t | ", "| ")
