"""Extreme but valid inputs: logits of +-1e4, saturated gates (pre-activations
of +-100). Everything stays finite, and correct."""

import numpy as np
import pytest

from npnn import functional as F
from npnn.backend import to_backend, to_numpy
from npnn.functional.registry import CELLS

from conftest import PATHS, assert_close, on_path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_with_huge_logits(backend, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], dtype=dtype)
    target = np.array([0, 0, 1])
    loss, cache = F.softmax_cross_entropy(to_backend(logits, backend), to_backend(target, backend),
                                          reduction="none")
    d = F.softmax_cross_entropy_backward(None, cache)
    # exact values: log-sum-exp of the rows is 1e4, 1e4, 1e4 + log 2
    assert_close(loss, [0.0, 2e4, np.log(2.0)], 1e-3 if dtype == "float32" else 1e-9, "loss")
    expected = np.array([[0, 0, 0], [-1, 1, 0], [0.5, -0.5, 0]])
    assert_close(d, expected, 1e-6, "dlogits")
    assert np.all(np.isfinite(to_numpy(d)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_saturate_cleanly(backend, dtype):
    a = to_backend(np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=dtype), backend)
    s = to_numpy(F.sigmoid(a))
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[-1] == 1.0 and s[2] == 0.5
    assert np.all(np.isfinite(to_numpy(F.log_softmax(a))))
    assert_close(F.softmax(a), [0, 0, 0, 0, 1], 1e-12, "softmax")


def _saturating_inputs(rng, cell, dtype, T=5, N=3, D=2, H=4):
    """Weights of +-1 and inputs of +-50 drive every pre-activation to about +-100."""
    G = CELLS[cell].gates
    W_ih = rng.choice([-1.0, 1.0], size=(G * H, D)).astype(dtype)
    W_hh = (0.1 * rng.standard_normal((G * H, H))).astype(dtype)
    b = np.zeros(G * H, dtype=dtype)
    x = (50 * rng.choice([-1.0, 1.0], size=(T, N, D))).astype(dtype)
    return x, [W_ih, W_hh, b, b.copy()]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_gates_stay_finite_and_match_torch(backend, path, cell, dtype):
    rng = np.random.default_rng(0)
    x, W = _saturating_inputs(rng, cell, dtype)
    T, N, _ = x.shape
    H = W[1].shape[1]
    dout = rng.standard_normal((T, N, H)).astype(dtype)
    dev = lambda a: to_backend(a, backend)  # noqa: E731
    spec = CELLS[cell]
    params = dict(zip(("W_ih", "W_hh", "b_ih", "b_hh"), map(dev, W)))
    with on_path(path):
        out, _, cache = spec.run(dev(x), (None,) * spec.n_states, params)
    dx, _, grads = spec.run_backward(dev(dout), (None,) * spec.n_states, cache)
    res = (dx, grads)
    arrays = [out, *res[:-1], *res[-1].values()]
    assert all(np.all(np.isfinite(to_numpy(a))) for a in arrays)

    torch = pytest.importorskip("torch")
    net = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        x.shape[2], H, dtype=getattr(torch, dtype))
    with torch.no_grad():
        for name, w in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), W):
            getattr(net, name).copy_(torch.tensor(w))
    tx = torch.tensor(x, requires_grad=True)
    tout = net(tx)[0]
    (tout * torch.tensor(dout)).sum().backward()
    tol = 1e-10 if dtype == "float64" else 1e-5
    assert_close(out, tout.detach().numpy(), tol, "out")
    assert_close(res[0], tx.grad.numpy(), tol, "dx")
    assert_close(res[-1]["W_hh"], net.weight_hh_l0.grad.numpy(), tol, "dW_hh")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_near_subnormal_gradients_are_flushed_and_nothing_else_changes(dtype):
    from npnn.functional.accel._common import flush_subnormals
    info = np.finfo(dtype)
    cut = info.tiny / info.eps
    a = np.array([1.0, -2.5, 2 * cut, -cut, cut / 2, info.tiny, -info.tiny / 1024, 0.0],
                 dtype=dtype)
    b = flush_subnormals(np, a.copy())
    np.testing.assert_array_equal(b, np.where(np.abs(a) < cut, 0, a))
    assert b[2] == a[2] and b[3] == a[3] and not b[4:].any()


def test_long_sequence_backward_with_vanishing_gradients_stays_correct():
    """Over 400 steps the float32 gradient vanishes below 1e-31, where the backward
    flushes it; the result still matches float64 (where nothing that small occurs)
    to within float32's resolution, down to the flush threshold."""
    rng = np.random.default_rng(0)
    H = 8
    W = [0.05 * rng.standard_normal(s) for s in ((H, 2), (H, H), (H,), (H,))]
    x = rng.standard_normal((400, 4, 2))
    d = np.ones((4, H))
    res = {}
    for dtype in ("float32", "float64"):
        _, _, cache = F.fast.rnn_forward(x.astype(dtype), None, *(w.astype(dtype) for w in W))
        assert "accel" in type(cache).__module__             # the flush is the acceleration's
        res[dtype] = F.fast.rnn_backward(None, d.astype(dtype), cache)
    info = np.finfo(np.float32)
    cut = float(info.tiny / info.eps)
    dx32, dx64 = res["float32"][0].astype(np.float64), res["float64"][0]
    assert np.abs(dx64[0]).max() < cut                       # it did vanish below the cut
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=4 * cut)
