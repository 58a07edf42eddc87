"""Every public entry point on the device path, results equal to NumPy's.

Runs on each device backend (``device``: a real GPU when there is one, and always
the strict CuPy stand-in, ``npnn.testing.strict_cupy``): layers, cells, losses, models
with greedy and beam decoding, every optimizer and clip, the generic loop, the
Trainer's fit, save and resume, ``load_model``, ``npnn generate --backend cupy``
and ``check_all_ops``. Each model is built twice from one seed, once moved to the
device, and both copies must give the same numbers (float64: 1e-10).
"""

import numpy as np
import pytest

import npnn
import npnn.analysis
from npnn import optim
from npnn.backend import is_array, to_backend, to_numpy
from npnn.training.loop import fit
from npnn.gradcheck import check_all_ops
from npnn.models import (ConditionalDecoder, RNNLM, Seq2Seq, SequenceClassifier,
                         SequenceTagger)
from npnn.training.trainer import Trainer, load_model

from _helpers import TEXT, main, quiet, tiny_config

TOL = 1e-10


def assert_same(a, b, name="", tol=TOL):
    """Device result ``a`` equals NumPy result ``b`` (nested lists, tuples, dicts, arrays)."""
    if isinstance(b, dict):
        assert sorted(a) == sorted(b), name
        for k in b:
            assert_same(a[k], b[k], f"{name}.{k}", tol)
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), name
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{name}[{i}]", tol)
    elif is_array(b) or is_array(a):
        assert not isinstance(a, np.ndarray) or isinstance(b, np.ndarray), \
            f"{name}: the device run returned a NumPy array"
        x, y = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
        assert x.shape == y.shape, (name, x.shape, y.shape)
        scale = max(1.0, float(np.max(np.abs(y), initial=0.0)))
        np.testing.assert_allclose(x, y, rtol=0, atol=tol * scale, err_msg=name)
    elif isinstance(b, float):
        assert abs(a - b) <= tol * max(1.0, abs(b)), (name, a, b)
    else:
        assert a == b, (name, a, b)


def pair(build, device):
    """Two copies of a model from one seed: (on the device, on NumPy)."""
    return build().to(device), build()


def grads(model):
    return dict(model.named_gradients())


# -- layers, cells, losses -----------------------------------------------------------------

LAYERS = {
    "linear": lambda: npnn.Linear(4, 3, dtype="float64", seed=0),
    "sequential": lambda: npnn.Sequential(npnn.Linear(4, 5, dtype="float64", seed=0),
                                          npnn.Linear(5, 3, dtype="float64", seed=1)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_feedforward_layers(device, name):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    dy = np.random.default_rng(1).standard_normal((2, 3, 3))
    results = []
    for model, dev in zip(pair(LAYERS[name], device), (device, "numpy")):
        y = model(to_backend(x, dev))
        dx = model.backward(to_backend(dy, dev))
        results.append([y, dx, grads(model)])
    assert_same(*results)


def test_embedding_dropout_and_losses(device):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 7, size=(3, 4))
    target = rng.integers(0, 5, size=(3, 4))
    results = []
    for dev in (device, "numpy"):
        emb = npnn.Embedding(7, 5, padding_idx=0, dtype="float64", seed=0).to(dev)
        ce = npnn.SoftmaxCrossEntropy(ignore_index=2, label_smoothing=0.1)
        mse = npnn.MSELoss()
        e = emb(to_backend(idx, dev))
        loss = ce(e, to_backend(target, dev))
        d = ce.backward()
        l2 = mse(e, to_backend(np.ones(e.shape), dev))
        d2 = mse.backward()
        emb.backward(d + d2)
        drop = npnn.Dropout(0.0)                 # p = 0: the identity, on any backend
        results.append([loss, l2, drop(e), grads(emb)])
    assert_same(*results)


@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells(device, cell):
    rng = np.random.default_rng(0)
    x, dh = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    results = []
    for model, dev in zip(pair(lambda: getattr(npnn, cell)(4, 5, dtype="float64", seed=0),
                               device), (device, "numpy")):
        out = model(to_backend(x, dev))
        d = to_backend(dh, dev)
        back = model.backward(d, None) if isinstance(out, tuple) else model.backward(d)
        results.append([out, back, grads(model)])
    assert_same(*results)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "peephole_lstm", "ctrnn", "jordan"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_layers_with_lengths(device, cell, bidirectional):
    """Every cell's layer, two layers, lengths, both directions, batch-first."""
    rng = np.random.default_rng(0)
    T, N, D, H = 6, 3, 4, 5
    x = rng.standard_normal((N, T, D))
    lengths = np.array([6, 2, 4])
    dout = rng.standard_normal((N, T, (2 if bidirectional else 1) * H))
    layer = npnn.layers.recurrent.layer_class(cell)
    results = []
    for model, dev in zip(pair(lambda: layer(D, H, num_layers=2, bidirectional=bidirectional,
                                             batch_first=True, dtype="float64", seed=1),
                               device), (device, "numpy")):
        out, h_n = model(to_backend(x, dev), lengths=lengths)
        dx, dh0 = model.backward(to_backend(dout, dev))
        results.append([out, h_n, dx, dh0, grads(model)])
    assert_same(*results)


# -- optimizers and clipping -----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
@pytest.mark.parametrize("clip", ["norm", "value"])
def test_optimizers_and_clipping(device, name, clip):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    results = []
    for model, dev in zip(pair(lambda: npnn.Linear(3, 2, dtype="float64", seed=0), device),
                          (device, "numpy")):
        opt = optim.OPTIMIZERS[name](model, lr=0.1)
        norms = []
        for _ in range(3):
            model.zero_grad()
            model(to_backend(x, dev))
            model.backward(to_backend(dy, dev))
            if clip == "norm":
                norms.append(optim.clip_grad_norm_(model, 0.5))
            else:
                optim.clip_grad_value_(model, 0.05)
            opt.step()
        state = opt.state_dict()
        results.append([model.state_dict(), norms, state["state"]])
    assert_same(*results)


# -- models ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_language_model_and_decoding(device, cell):
    rng = np.random.default_rng(0)
    X, Y = rng.integers(0, 11, size=(3, 5)), rng.integers(0, 11, size=(3, 5))
    results = []
    for model, dev in zip(pair(lambda: RNNLM(11, 6, cell, num_layers=2, embedding_dim=4,
                                             dtype="float64", seed=0), device),
                          (device, "numpy")):
        model.eval()          # dropout is 0 here; eval keeps no cache for generate
        model.train()
        ce = npnn.SoftmaxCrossEntropy()
        logits, state = model(X)
        loss = ce(logits, to_backend(Y, dev))
        model.backward(ce.backward())
        out = [loss, state, grads(model)]
        out += [model.generate([1, 2], 6, strategy=s, seed=3, end_token=None)
                for s in ("greedy", "sample", "beam")]
        results.append(out)
    assert_same(*results)


def test_sequence_models(device):
    rng = np.random.default_rng(0)
    X = rng.integers(1, 9, size=(3, 5))
    lengths = np.array([5, 2, 3])
    c = rng.standard_normal((3, 4))
    tgt_in = rng.integers(0, 7, size=(3, 4))
    results = []
    for dev in (device, "numpy"):
        out = []
        for pooling in ("last", "mean"):
            clf = SequenceClassifier(9, 3, 4, 5, cell="lstm", bidirectional=True,
                                     pooling=pooling, dtype="float64", seed=0).to(dev)
            logits = clf(X, lengths)
            clf.backward(to_backend(np.ones(logits.shape), dev))
            out += [logits, grads(clf), clf.predict(X, lengths)]
        tagger = SequenceTagger(9, 4, 4, 5, dtype="float64", seed=0).to(dev)
        logits = tagger(X, lengths)
        tagger.backward(to_backend(np.ones(logits.shape), dev))
        out += [logits, grads(tagger), tagger.predict(X, lengths)]
        for scheme in ("init", "input"):
            dec = ConditionalDecoder(4, 7, 3, 5, scheme=scheme, dtype="float64",
                                     seed=0).to(dev)
            logits = dec(to_backend(c, dev), tgt_in)
            d_c = dec.backward(to_backend(np.ones(logits.shape), dev))
            out += [logits, d_c, grads(dec), dec.generate(to_backend(c, dev), max_len=5)]
        results.append(out)
    assert_same(*results)


@pytest.mark.parametrize("context", ["init", "concat", "attention"])
def test_seq2seq(device, context):
    rng = np.random.default_rng(0)
    src = rng.integers(3, 9, size=(3, 5))
    lengths = np.array([5, 2, 4])
    tgt_in = rng.integers(3, 7, size=(3, 4))
    results = []
    for dev in (device, "numpy"):
        model = Seq2Seq(9, 7, 4, 5, 1, "gru", True, context, dtype="float64", seed=0).to(dev)
        logits = model(src, lengths, tgt_in)
        model.backward(to_backend(np.ones(logits.shape), dev))
        results.append([logits, grads(model), model.greedy_decode(src, lengths, max_len=5),
                        model.beam_decode(src[1], lengths[1], beam_width=3, max_len=5)])
    assert_same(*results)


# -- training ---------------------------------------------------------------------------------

def test_generic_fit(device):
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((5, 4, 2)), rng.standard_normal((4, 1))) for _ in range(3)]
    results = []
    for dev in (device, "numpy"):
        model = npnn.analysis.LastStateRegressor("gru", 2, 5, dtype="float64", seed=0).to(dev)
        batches = [((to_backend(x, dev),), to_backend(y, dev)) for x, y in data]
        state = fit(model, npnn.MSELoss(), lambda r: batches, optim.Adam(model, lr=0.01),
                    epochs=2, clip=1.0, rng=np.random.default_rng(1), log=None,
                    progress=False)
        results.append([model.state_dict(), [r["train_loss"] for r in state.history]])
    assert_same(*results)


def test_trainer_fit_save_resume_and_generate(device, tmp_path, capsys):
    """npnn train --backend cupy, resumed, load_model, npnn generate --backend cupy: the
    same numbers as on NumPy."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    results = []
    for dev in (device, "numpy"):
        out = tmp_path / dev
        t = Trainer(tiny_config(text, epochs=1, backend=dev, dropout=0.0), out, log=quiet,
                    progress=False)
        t.fit()
        resumed = Trainer.resume(out, log=quiet, progress=False, epochs=2)
        resumed.fit()
        model = load_model(out, backend=dev)
        rc, printed, _ = main(capsys, "generate", out, "--prefix", "it was", "-n", 20,
                              "--strategy", "greedy", "--backend", dev)
        assert rc == 0
        results.append([resumed.history[-1]["val_ppl"], model.state_dict(), printed])
    assert_same(*results, tol=1e-5)           # float32 models


def test_check_all_ops_on_the_device(device):
    report = check_all_ops(backend=device)
    assert report.passed, report
