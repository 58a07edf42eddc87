"""Encoder-decoder, attention layers and BLEU."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npnn
from npnn.backend import to_backend, to_numpy
from npnn.gradcheck import check_module
from npnn.metrics import bleu, corpus_bleu
from npnn.models import Seq2Seq


def _batch(rng, N=3, S=5, T=4, V_src=9, V_tgt=7):
    src = rng.integers(3, V_src, size=(N, S))
    lengths = rng.integers(1, S + 1, size=N)
    lengths[0] = S
    src[np.arange(S)[None, :] >= lengths[:, None]] = 0          # padding id 0
    return src, lengths, rng.integers(3, V_tgt, size=(N, T))


def _sharpen(model):
    """Scale the attention's parameters so the check can see W_q: W_q q shifts every
    key's score alike, so it matters only through tanh's curvature, and at
    initialisation dL/dW_q is ~1e-5 of the other gradients, below what central
    differences resolve."""
    if model.context == "attention" and "w_v" in model.attention.params:
        model.attention.params["w_v"] *= 10
        model.attention.params["W_q"] *= 10
        model.attention.params["W_k"] *= 3


@pytest.mark.parametrize("context", ["init", "concat", "attention"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_seq2seq_finite_differences(context, cell, bidirectional):
    rng = np.random.default_rng(1)
    src, lengths, tgt = _batch(rng)
    model = Seq2Seq(9, 7, 3, 4, 2 if context != "attention" else 1, cell, bidirectional, context,
                    dtype="float64", seed=0)
    _sharpen(model)
    check_module(model, (src, lengths, tgt), arg_names=["src", "lengths", "tgt"],
                 raise_on_failure=True)


def test_dot_attention_decoder_finite_differences():
    rng = np.random.default_rng(2)
    src, lengths, tgt = _batch(rng)
    model = Seq2Seq(9, 7, 3, 4, 1, "gru", False, "attention", "dot", dtype="float64", seed=0)
    check_module(model, (src, lengths, tgt), arg_names=["src", "lengths", "tgt"],
                 raise_on_failure=True)


@pytest.mark.parametrize("kind", ["dot", "additive"])
@pytest.mark.parametrize("single_query", [True, False])
def test_attention_layers_finite_differences(backend, kind, single_query):
    rng = np.random.default_rng(0)
    dev = lambda a: to_backend(a, backend)  # noqa: E731
    layer = (npnn.DotAttention() if kind == "dot" else
             npnn.AdditiveAttention(4, 4, 3, dtype="float64", seed=0)).to(backend)
    q = dev(rng.standard_normal((2, 4) if single_query else (2, 3, 4)))
    K, V = dev(rng.standard_normal((2, 5, 4))), dev(rng.standard_normal((2, 5, 2)))
    mask = dev(np.array([[True] * 5, [True, True, False, False, False]]))
    report = check_module(layer, (q, K, V, mask), arg_names=["q", "K", "V", "mask"],
                          raise_on_failure=True)
    assert {"q", "K", "V"} <= {t.name for t in report.tensors}
    assert float(np.abs(to_numpy(layer.weights)[1, ..., 2:]).max()) == 0.0  # padding


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), context=st.sampled_from(["init", "concat", "attention"]))
def test_beam_width_one_is_greedy(seed, context):
    rng = np.random.default_rng(seed)
    model = Seq2Seq(9, 7, 4, 8, 1, "gru", True, context, seed=seed % 1000, eos=2)
    src, lengths, _ = _batch(rng)
    greedy = model.greedy_decode(src, lengths, max_len=8)
    for i in range(len(src)):
        assert model.beam_decode(src[i], lengths[i], beam_width=1, max_len=8) == greedy[i]


def test_seq2seq_learns_to_reverse():
    """A small attention model learns to reverse short sequences (exact match)."""
    rng = np.random.default_rng(0)
    V, pad, bos, eos = 8, 0, 1, 2
    model = Seq2Seq(V, V, 16, 32, 1, "gru", True, "attention", seed=0)
    opt, ce = npnn.optim.Adam(model, lr=0.01), npnn.SoftmaxCrossEntropy(ignore_index=pad)
    for _ in range(300):
        L = rng.integers(1, 6, size=32)
        src = np.where(np.arange(5)[None] < L[:, None], rng.integers(3, V, size=(32, 5)), pad)
        tgt = np.full((32, 6), pad)
        for i, n in enumerate(L):
            tgt[i, :n] = src[i, :n][::-1]
            tgt[i, n] = eos
        tgt_in = np.concatenate([np.full((32, 1), bos), tgt[:, :-1]], axis=1)
        ce(model(src, L, tgt_in), tgt)
        model.zero_grad()
        model.backward(ce.backward())
        npnn.optim.clip_grad_norm(model, 1.0)
        opt.step()
    L = rng.integers(1, 6, size=50)
    src = np.where(np.arange(5)[None] < L[:, None], rng.integers(3, V, size=(50, 5)), pad)
    out = model.greedy_decode(src, L, max_len=7)
    exact = np.mean([out[i] == list(src[i, :L[i]][::-1]) for i in range(50)])
    assert exact >= 0.9, exact


def test_bleu_against_hand_computed_values():
    # identical: 1; d2l's brevity factor exp(min(0, 1 - 4/2)) with perfect precisions
    assert bleu("a b c d", "a b c d") == 1.0
    assert math.isclose(bleu("a b", "a b c d", k=2), math.exp(-1))
    # p1 = 3/4, p2 = 1/3 (only "a b" of "a b", "b x", "x d"), no brevity penalty
    assert math.isclose(bleu("a b x d", "a b c d", k=2), (3 / 4) ** 0.5 * (1 / 3) ** 0.25)
    # clipping: "the the the" against "the cat": p1 = 1/3
    assert math.isclose(bleu("the the the", "the cat", k=1), (1 / 3) ** 0.5)
    assert bleu("x", "a b", k=2) == 0.0 and bleu([], ["a"]) == 0.0
    # corpus BLEU, k = 2: p1 = (4 + 1) / (4 + 2), p2 = (3 + 0) / (3 + 1); c = 6 < r = 7
    got = corpus_bleu(["a b c d", "e f"], ["a b c d", "e g h"], k=2)
    want = math.exp(1 - 7 / 6) * math.exp(0.5 * math.log(5 / 6) + 0.5 * math.log(3 / 4))
    assert math.isclose(got, want)
    with pytest.raises(ValueError, match="as many predictions as references"):
        corpus_bleu(["a"], [])


@settings(max_examples=12, deadline=None)
@given(context=st.sampled_from(["init", "concat", "attention"]),
       cell=st.sampled_from(["gru", "lstm"]), bidirectional=st.booleans(),
       N=st.integers(1, 3), S=st.integers(1, 5), T=st.integers(1, 4), E=st.integers(1, 3),
       H=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_seq2seq_finite_differences_drawn_shapes(context, cell, bidirectional, N, S, T, E, H,
                                                 seed):
    """The whole encoder-decoder backward, padded sources of drawn lengths included."""
    rng = np.random.default_rng(seed)
    src, lengths, tgt = _batch(rng, N, S, T)
    model = Seq2Seq(9, 7, E, H, 1, cell, bidirectional, context, dtype="float64",
                    seed=seed % 1000)
    _sharpen(model)
    check_module(model, (src, lengths, tgt), arg_names=["src", "lengths", "tgt"],
                 raise_on_failure=True)


@pytest.mark.parametrize("kind", ["dot", "additive"])
def test_attention_steps_equal_full_calls_and_keep_their_order(kind):
    """project / attend / attend_backward / project_backward give what full calls give:
    dq step by step, dK, dV and the parameters' gradients summed over the steps."""
    rng = np.random.default_rng(0)
    layer = (npnn.DotAttention(scale=0.7) if kind == "dot" else
             npnn.AdditiveAttention(4, 4, 5, dtype="float64", seed=0))
    K, V = rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 6, 2))
    mask = np.arange(6)[None, :] < np.array([[6], [3]])
    qs, dcs = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 2))
    full = [layer(q, K, V, mask) for q in qs]
    full_grads = [layer.backward(dc) for dc in dcs[::-1]][::-1]
    want = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grad()
    keys = layer.project(K)
    steps = [layer.attend(q, keys, V, mask) for q in qs]
    for a, b in zip(full, steps):
        np.testing.assert_allclose(a, b, atol=1e-14)
    with pytest.raises(RuntimeError, match="still to be backpropagated"):
        layer.project_backward()
    with pytest.raises(RuntimeError, match="attend_backward"):
        layer.backward(dcs[-1])
    dqs = [layer.attend_backward(dc) for dc in dcs[::-1]][::-1]
    dK, dV = layer.project_backward()
    for dq, (dq_full, _, _) in zip(dqs, full_grads):
        np.testing.assert_allclose(dq, dq_full, atol=1e-13)
    np.testing.assert_allclose(dK, sum(g[1] for g in full_grads), atol=1e-13)
    np.testing.assert_allclose(dV, sum(g[2] for g in full_grads), atol=1e-13)
    for k, g in want.items():
        np.testing.assert_allclose(layer.grads[k], g, atol=1e-13)
    layer.project(K)
    with pytest.raises(RuntimeError, match="attend\\(\\) call"):
        layer.attend_backward(dcs[0])
    with pytest.raises(RuntimeError, match="no attend_backward"):
        layer.project_backward()


@pytest.mark.parametrize("context", ["attention", "luong"])
def test_attention_weights_of_every_decoder_step(context):
    """Issue 21 (the tutorials' heat map): a forward keeps every step's weights, (N, T, S),
    not only the last step's; each row sums to 1 over the source's valid positions, and
    step t's row is what an attention call on step t's query gives."""
    rng = np.random.default_rng(3)
    src, lengths, tgt = _batch(rng, N=3, S=6, T=4)
    model = Seq2Seq(9, 7, 4, 6, cell="gru", context=context, seed=0)
    assert model.attention_weights is None
    model.eval()
    model(src, lengths, tgt)
    w = model.attention_weights
    assert w.shape == (3, 4, 6)
    valid = np.arange(6)[None, None, :] < lengths[:, None, None]
    np.testing.assert_allclose(w.sum(axis=2), 1.0, rtol=1e-5)
    assert np.all(w[~np.broadcast_to(valid, w.shape)] == 0)
    assert not np.allclose(w[:, 0], w[:, -1])          # the steps differ: not one row repeated
    if context == "luong":                              # all steps in one call
        np.testing.assert_array_equal(w, model.attention.weights)
    else:                                               # the last step is the layer's last call
        np.testing.assert_array_equal(w[:, -1], model.attention.weights[:, 0])
    assert Seq2Seq(9, 7, 4, 6, context="concat", seed=0).attention_weights is None
