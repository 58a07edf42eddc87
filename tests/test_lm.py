"""The language model: gradients, learning, generation strategies."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npnn
from npnn.training.data import TextCorpus
from npnn.gradcheck import check_module
from npnn.models import RNNLM, sampling_probs
from npnn.optim import Adam, clip_grad_norm

TEXT = "the quick brown fox jumps over a lazy dog. "


@pytest.mark.parametrize("cell, embedding, tie, layers", [
    ("gru", 0, False, 1), ("lstm", 4, True, 2), ("rnn", 3, False, 1)])
def test_model_gradients_finite_differences(cell, embedding, tie, layers):
    hidden = 4 if tie else 3
    model = RNNLM(7, hidden, cell, layers, embedding_dim=embedding, tie_weights=tie,
                  dropout=0.2 if layers > 1 else 0.0, dtype="float64", seed=0)
    X = np.random.default_rng(0).integers(0, 7, size=(2, 5))
    report = check_module(model, (X,), raise_on_failure=True)
    names = [t.name for t in report.tensors]
    if tie:   # one shared parameter, checked once, its gradient summed over both uses
        assert "embedding.weight" in names and "decoder.weight" not in names


def _train(model, corpus, steps, lr=0.02, T=8, B=4, seed=0):
    rng = np.random.default_rng(seed)
    opt, ce = Adam(model, lr=lr), npnn.SoftmaxCrossEntropy()
    losses = []
    ids = corpus.ids
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - T - 1, size=B)
        X = np.stack([ids[s:s + T] for s in starts])
        Y = np.stack([ids[s + 1:s + T + 1] for s in starts])
        logits, _ = model(X)
        losses.append(float(ce(logits, Y)))
        model.zero_grad()
        model.backward(ce.backward())
        clip_grad_norm(model, 1.0)
        opt.step()
    return losses


def test_training_loss_decreases_and_model_memorises_a_string():
    corpus = TextCorpus.from_text(TEXT * 8, val_fraction=0.0)
    model = RNNLM(len(corpus.vocab), 32, "lstm", embedding_dim=16, seed=0,
                  vocab=corpus.vocab, token="char")
    losses = _train(model, corpus, 300)
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:20])
    assert model.generate("the q", 60, strategy="greedy") == (TEXT * 3)[:65]


@pytest.fixture(scope="module")
def trained():
    corpus = TextCorpus.from_text(TEXT * 8, val_fraction=0.0)
    model = RNNLM(len(corpus.vocab), 16, "gru", embedding_dim=8, seed=1, vocab=corpus.vocab)
    _train(model, corpus, 60)
    return model


@settings(max_examples=15)
@given(prefix=st.sampled_from(["t", "the", "o", "fox j", "g. "]), n=st.integers(0, 12))
def test_beam_width_one_is_greedy(trained, prefix, n):
    assert trained.generate(prefix, n, strategy="beam", beam_width=1) == \
        trained.generate(prefix, n, strategy="greedy")


def test_sampling_is_reproducible_and_beam_is_at_least_as_likely(trained):
    a = trained.generate("t", 40, strategy="sample", temperature=1.5, seed=3)
    assert a == trained.generate("t", 40, strategy="sample", temperature=1.5, seed=3)
    assert a != trained.generate("t", 40, strategy="sample", temperature=1.5, seed=4)
    assert a.startswith("t")

    def logprob(text):
        ids = trained.vocab[list(text)]
        logits, _ = trained(np.asarray([ids[:-1]]))
        logp = npnn.functional.log_softmax(logits[0].astype(np.float64))
        return float(sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1)))
    trained.eval()
    greedy = trained.generate("th", 6, strategy="greedy")
    beam = trained.generate("th", 6, strategy="beam", beam_width=5, length_penalty=0.0)
    assert logprob(beam) >= logprob(greedy) - 1e-9


def test_sampling_probs_top_k_top_p_temperature():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.allclose(sampling_probs(logits), [0.5, 0.3, 0.15, 0.05])
    assert np.allclose(sampling_probs(logits, top_k=2), [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    assert np.allclose(sampling_probs(logits, top_p=0.75), [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    assert np.allclose(sampling_probs(logits, top_p=0.85), [0.5, 0.3, 0.15, 0] / np.float64(0.95))
    assert np.allclose(sampling_probs(logits, top_p=0.4), [1, 0, 0, 0])
    cold = sampling_probs(logits, temperature=0.01)
    assert cold[0] > 0.999
    with pytest.raises(ValueError, match=r"expected top_p in \(0, 1\], got 0"):
        sampling_probs(logits, top_p=0)


def test_generate_and_model_errors(trained):
    with pytest.raises(ValueError, match="empty prefix"):
        trained.generate("", 5)
    with pytest.raises(ValueError, match="expected strategy to be one of 'greedy', 'sample', 'beam'"):
        trained.generate("t", 5, strategy="nucleus")
    with pytest.raises(ValueError, match="expected temperature > 0"):
        trained.generate("t", 5, strategy="sample", temperature=0)
    with pytest.raises(ValueError, match=r"expected X in \[0, 9\), got 9"):
        RNNLM(9, 4, seed=0)(np.array([[9]]))
    with pytest.raises(ValueError, match="expected embedding_dim == hidden_size"):
        RNNLM(9, 4, embedding_dim=3, tie_weights=True)
    with pytest.raises(ValueError, match="expected cell to be one of"):
        RNNLM(9, 4, cell="transformer")
