"""PyTorch parity: identical weights, identical results. Skipped without torch."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from npnn import functional as F
from npnn.backend import to_backend, to_numpy

from conftest import assert_close

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("reference_only")   # the accelerations: test_accel.py
dims = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)
TOL = {"float64": 1e-10, "float32": 1e-5}


def _torch_cell(cell, D, H, bias, nonlinearity, dtype):
    tdtype = getattr(torch, dtype)
    if cell == "rnn":
        return torch.nn.RNN(D, H, nonlinearity=nonlinearity, bias=bias, dtype=tdtype)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D, H, bias=bias, dtype=tdtype)


@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), T=dims, N=dims, D=dims, H=dims,
       bias=st.booleans(), nonlinearity=st.sampled_from(["tanh", "relu"]),
       dtype=st.sampled_from(["float64", "float32"]), seed=seeds)
@example(cell="gru", T=1, N=1, D=1, H=1, bias=True, nonlinearity="tanh", dtype="float64", seed=0)
def test_recurrent_ops_match_torch(backend, cell, T, N, D, H, bias, nonlinearity, dtype, seed):
    torch.manual_seed(seed % 2**31)
    rng = np.random.default_rng(seed)
    net = _torch_cell(cell, D, H, bias, nonlinearity, dtype)
    W = [getattr(net, f"{k}_l0").detach().numpy().copy()
         for k in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())]
    x = rng.standard_normal((T, N, D)).astype(dtype)
    n_states = 2 if cell == "lstm" else 1
    states = [rng.standard_normal((N, H)).astype(dtype) for _ in range(n_states)]
    dout = rng.standard_normal((T, N, H)).astype(dtype)
    dfinal = [rng.standard_normal((N, H)).astype(dtype) for _ in range(n_states)]

    # torch
    tx = torch.tensor(x, requires_grad=True)
    tstates = [torch.tensor(s[None], requires_grad=True) for s in states]
    tout, tfinal = net(tx, tuple(tstates) if cell == "lstm" else tstates[0])
    tfinal = list(tfinal) if cell == "lstm" else [tfinal]
    loss = (tout * torch.tensor(dout)).sum() + sum(
        (f * torch.tensor(d[None])).sum() for f, d in zip(tfinal, dfinal))
    loss.backward()

    # npnn, as its layers run it (the acceleration where it pays: on a device from two steps)
    dev = lambda a: to_backend(a, backend)  # noqa: E731
    Wd = [dev(w) for w in W] + [None] * (4 - len(W))
    if cell == "rnn":
        out, h_n, cache = F.fast.rnn_forward(dev(x), dev(states[0]), *Wd,
                                             nonlinearity=nonlinearity)
        finals = [h_n]
        dx, dh0, grads = F.fast.rnn_backward(dev(dout), dev(dfinal[0]), cache)
        dstates = [dh0]
    elif cell == "lstm":
        out, h_n, c_n, cache = F.fast.lstm_forward(dev(x), *map(dev, states), *Wd)
        finals = [h_n, c_n]
        dx, dh0, dc0, grads = F.fast.lstm_backward(dev(dout), *map(dev, dfinal), cache)
        dstates = [dh0, dc0]
    else:
        out, h_n, cache = F.fast.gru_forward(dev(x), dev(states[0]), *Wd)
        finals = [h_n]
        dx, dh0, grads = F.fast.gru_backward(dev(dout), dev(dfinal[0]), cache)
        dstates = [dh0]

    tol = TOL[dtype]
    assert to_numpy(out).dtype == np.dtype(dtype)
    assert_close(out, tout.detach().numpy(), tol, "out")
    for a, b in zip(finals, tfinal):
        assert_close(a, b.detach().numpy()[0], tol, "final state")
    assert_close(dx, tx.grad.numpy(), tol, "dx")
    for a, b in zip(dstates, tstates):
        assert_close(a, b.grad.numpy()[0], tol, "d initial state")
    names = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0",
             "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}
    assert set(grads) == ({"W_ih", "W_hh", "b_ih", "b_hh"} if bias else {"W_ih", "W_hh"})
    for k, g in grads.items():
        assert_close(g, getattr(net, names[k]).grad.numpy(), tol, k)


@given(M=dims, C=st.integers(1, 8), reduction=st.sampled_from(["mean", "sum", "none"]),
       label_smoothing=st.sampled_from([0.0, 0.1, 0.7]), n_ignored=st.integers(0, 3),
       dtype=st.sampled_from(["float64", "float32"]), seed=seeds)
def test_cross_entropy_matches_torch(backend, M, C, reduction, label_smoothing, n_ignored,
                                     dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((M, C))).astype(dtype)
    target = rng.integers(0, C, size=M)
    target[:min(n_ignored, M - 1)] = -100      # keep one position, so 'mean' is defined
    rng.shuffle(target)
    tl = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(target), ignore_index=-100,
                                              reduction=reduction,
                                              label_smoothing=label_smoothing)
    dloss = rng.standard_normal(tloss.shape).astype(dtype)
    (tloss * torch.tensor(dloss)).sum().backward()

    loss, cache = F.softmax_cross_entropy(to_backend(logits, backend), to_backend(target, backend),
                                          reduction=reduction, label_smoothing=label_smoothing)
    dlogits = F.softmax_cross_entropy_backward(to_backend(dloss, backend), cache)
    tol = TOL[dtype]
    assert to_numpy(loss).dtype == np.dtype(dtype) and to_numpy(dlogits).dtype == np.dtype(dtype)
    assert_close(loss, tloss.detach().numpy(), tol * 10, "loss")
    assert_close(dlogits, tl.grad.numpy(), tol, "dlogits")


@given(shape=st.lists(dims, min_size=1, max_size=3),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=seeds)
def test_mse_matches_torch(backend, shape, reduction, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal((2,) + tuple(shape))
    tp = torch.tensor(pred, requires_grad=True)
    tloss = torch.nn.functional.mse_loss(tp, torch.tensor(target), reduction=reduction)
    dloss = rng.standard_normal(tloss.shape)
    (tloss * torch.tensor(dloss)).sum().backward()
    loss, cache = F.mse_loss(to_backend(pred, backend), to_backend(target, backend), reduction)
    assert_close(loss, tloss.detach().numpy(), 1e-12, "loss")
    assert_close(F.mse_loss_backward(to_backend(dloss, backend), cache), tp.grad.numpy(),
                 1e-12, "dpred")


@given(kind=st.sampled_from(["dot", "additive"]), N=dims, L=dims, S=dims, E=dims, Ev=dims,
       A=dims, masked=st.booleans(), seed=seeds)
def test_attention_matches_torch(backend, kind, N, L, S, E, Ev, A, masked, seed):
    rng = np.random.default_rng(seed)
    q, K, V = (rng.standard_normal(s) for s in ((N, L, E), (N, S, E), (N, S, Ev)))
    mask = np.arange(S)[None, :] < rng.integers(1, S + 1, size=N)[:, None] if masked else None
    dc = rng.standard_normal((N, L, Ev))
    tq, tK, tV = (torch.tensor(a, requires_grad=True) for a in (q, K, V))
    tmask = None if mask is None else torch.tensor(mask)[:, None, :]
    dev = lambda a: None if a is None else to_backend(a, backend)  # noqa: E731
    if kind == "dot":
        tc = torch.nn.functional.scaled_dot_product_attention(tq, tK, tV, attn_mask=tmask)
        c, alpha, cache = F.dot_attention_forward(dev(q), dev(K), dev(V), dev(mask))
        dq, dK, dV = F.dot_attention_backward(dev(dc), cache)
        pairs = []
    else:   # a PyTorch formulation of the same equations (d2l's AdditiveAttention)
        W_q, W_k, w_v = (rng.standard_normal(s) for s in ((A, E), (A, E), (A,)))
        tW = [torch.tensor(w, requires_grad=True) for w in (W_q, W_k, w_v)]
        feats = torch.tanh((tq @ tW[0].T)[:, :, None, :] + (tK @ tW[1].T)[:, None, :, :])
        scores = feats @ tW[2]
        if tmask is not None:
            scores = scores.masked_fill(~tmask, float("-inf"))
        tc = torch.softmax(scores, dim=-1) @ tV
        c, alpha, cache = F.additive_attention_forward(dev(q), dev(K), dev(V), dev(W_q), dev(W_k),
                                                       dev(w_v), dev(mask))
        dq, dK, dV, grads = F.additive_attention_backward(dev(dc), cache)
        pairs = [(grads[k], t) for k, t in zip(("W_q", "W_k", "w_v"), tW)]
    (tc * torch.tensor(dc)).sum().backward()
    assert_close(c, tc.detach().numpy(), TOL["float64"], "context")
    for a, t in [(dq, tq), (dK, tK), (dV, tV)] + pairs:
        assert_close(a, t.grad.numpy(), TOL["float64"], "grad")
