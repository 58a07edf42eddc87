"""The public gradient checker: it must catch wrong gradients, say where, and
its command line must report every op."""

import subprocess
import sys

import numpy as np
import pytest

from npnn import functional as F
from npnn.gradcheck import GradientCheckError, check_gradients


def _linear(scale_dW=1.0, poke=None):
    def f(x, W):
        y, cache = F.linear_forward(x, W)

        def vjp(dy):
            dx, grads = F.linear_backward(dy, cache)
            dW = grads["W"] * scale_dW
            if poke is not None:
                dW = dW.copy()
                dW[poke] += 1e-3
            return {"x": dx, "W": dW}
        return y, vjp
    return f


def _inputs(dtype=np.float64):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((4, 3)).astype(dtype), "W": rng.standard_normal((2, 3)).astype(dtype)}


def test_correct_gradients_pass():
    report = check_gradients(_linear(), _inputs())
    assert report.passed and report.max_rel_error < 1e-8
    assert [t.name for t in report.tensors] == ["x", "W"]


def test_float32_inputs_are_checked_in_float64():
    report = check_gradients(_linear(), _inputs(np.float32))
    assert report.passed and report.max_rel_error < 1e-8


def test_a_wrong_gradient_fails_and_is_located():
    report = check_gradients(_linear(poke=(1, 2)), _inputs())
    assert not report.passed
    bad = {t.name: t for t in report.tensors}["W"]
    assert bad.index == (1, 2) and bad.max_rel_error > 1e-6
    assert "FAIL" in report.table()
    with pytest.raises(GradientCheckError) as info:
        check_gradients(_linear(scale_dW=1.001), _inputs(), raise_on_failure=True)
    assert not info.value.report.passed


def test_wrt_selects_tensors_and_missing_gradients_are_errors():
    report = check_gradients(_linear(), _inputs(), wrt=["W"])
    assert [t.name for t in report.tensors] == ["W"]

    def no_grad_for_x(x, W):
        y, cache = F.linear_forward(x, W)
        return y, lambda dy: {"W": F.linear_backward(dy, cache)[1]["W"]}
    with pytest.raises(KeyError, match="'x'"):
        check_gradients(no_grad_for_x, _inputs())
    with pytest.raises(ValueError, match="'nope'"):
        check_gradients(_linear(), _inputs(), wrt=["nope"])


def test_command_line_checks_every_op():
    run = subprocess.run([sys.executable, "-m", "npnn.gradcheck"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    for op in ("rnn_tanh", "rnn_relu", "lstm", "gru", "linear", "embedding",
               "cross_entropy(mean)", "mse", "sigmoid", "lstm [reference]",
               "gru(masked) [reference]", "peephole_lstm", "ctrnn", "jordan(O", "gru_step",
               "layernorm_lstm", "layernorm_lstm(masked)", "layernorm_gru(no bias)",
               "layernorm_gru_step", "layer_norm"):
        assert f"\n{op} " in run.stdout, op
    assert "FAIL" not in run.stdout and run.stdout.rstrip().endswith("passed")
