"""AWD-LSTM's regularisers in the language model and on the command line: embedding
dropout (whole words), and ``npnn train``'s --embedding-dropout, --recurrent-dropout,
--zoneout and --weight-drop; exact resumption and deterministic evaluation with them on."""

import numpy as np
import pytest

from _helpers import TEXT, main, one_line_error, quiet, stop_at, tiny_config
from npnn import Embedding
from npnn import functional as F
from npnn.backend import to_backend, to_numpy
from npnn.models import RNNLM
from npnn.testing import assert_module_gradients
from npnn.training.checkpoint import read_checkpoint
from npnn.training.trainer import CheckpointError, Trainer

WORDS = ("the time traveller for so it will be convenient to speak of him was expounding "
         "a recondite matter to us his grey eyes shone and twinkled ") * 8

#: The regularisers of ``npnn train``, each on (embedding dropout needs an embedding).
AWD = dict(embedding_dropout=0.3, recurrent_dropout=0.2, zoneout=0.1, weight_drop=0.4)


class FixedMask:
    """A stand-in generator whose ``random`` always returns the same draws: the mask of
    every forward is the same, so finite differences see one function."""

    def __init__(self, draws):
        self.draws = draws

    def random(self, shape):
        assert tuple(shape) == self.draws.shape
        return self.draws


# -- the layer ------------------------------------------------------------------------
def test_embedding_dropout_drops_whole_words_and_scales_the_rest(backend):
    V, E, p = 7, 3, 0.4
    layer = Embedding(V, E, dtype="float64", seed=0, dropout=p).to(backend)
    W = to_numpy(layer.params["weight"])
    idx = np.array([[0, 1, 2, 1], [3, 1, 0, 6]])
    state = layer.rng.bit_generator.state
    y = to_numpy(layer(idx))
    layer.backward(to_backend(np.ones(idx.shape + (E,)), backend))
    if backend == "numpy":           # the mask is the generator's next draw over the vocabulary
        again = np.random.default_rng()
        again.bit_generator.state = state
        m = (again.random(V) >= p) / (1 - p)
        np.testing.assert_array_equal(y, W[idx] * m[idx][..., None])
    # one mask per forward: a word is dropped at all its positions or none
    zero = ~y.any(axis=-1)
    for v in np.unique(idx):
        assert len(set(zero[idx == v])) == 1
    kept = ~zero
    np.testing.assert_allclose(y[kept], W[idx][kept] / (1 - p), rtol=1e-15)
    # its gradient is masked and scaled alike: ones summed per occurrence, times m
    dW = to_numpy(layer.grads["weight"])
    counts = np.bincount(idx.ravel(), minlength=V)
    scale = np.zeros(V)
    for v in np.unique(idx):
        scale[v] = 0.0 if zero[idx == v][0] else 1 / (1 - p)
    np.testing.assert_allclose(dW, (counts * scale)[:, None] * np.ones((1, E)), rtol=1e-15)


def test_embedding_dropout_is_the_identity_in_eval_mode(backend):
    layer = Embedding(9, 4, seed=1, dropout=0.5).to(backend).eval()
    idx = np.arange(9).reshape(3, 3)
    before = layer.rng.bit_generator.state
    np.testing.assert_array_equal(to_numpy(layer(idx)), to_numpy(layer.params["weight"])[idx])
    assert layer.rng.bit_generator.state == before          # no draw in eval mode


def test_embedding_dropout_gradients_with_the_mask_fixed():
    V, E, p = 6, 2, 0.5
    layer = Embedding(V, E, dtype="float64", seed=2, dropout=p)
    draws = np.array([0.9, 0.1, 0.7, 0.2, 0.6, 0.8])      # words 1 and 3 dropped
    layer.rng = FixedMask(draws)
    idx = np.array([[1, 0, 3], [2, 1, 5], [0, 4, 4]])
    y = layer(idx)
    assert not y[idx == 1].any() and not y[idx == 3].any()
    layer.clear_caches()
    assert_module_gradients(layer, [idx])
    # and the same as the op with that mask
    m = (draws >= p) / (1 - p)
    expected, cache = F.embedding_forward(idx, layer.params["weight"], None, m)
    np.testing.assert_array_equal(layer(idx), expected)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, True, "0.1", float("nan")])
def test_embedding_dropout_out_of_range_is_a_clear_error(p):
    with pytest.raises(ValueError, match=r"expected dropout probability in \[0, 1\)"):
        Embedding(5, 2, dropout=p)
    with pytest.raises(ValueError, match=r"expected embedding_dropout probability in \[0, 1\)"):
        RNNLM(5, 4, "lstm", embedding_dim=2, embedding_dropout=p)


def test_embedding_dropout_needs_an_embedding():
    with pytest.raises(ValueError, match="expected an embedding"):
        RNNLM(5, 4, "lstm", embedding_dim=0, embedding_dropout=0.1)


def test_row_scale_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected row_scale of shape \(5,\), got \(4,\)"):
        F.embedding_forward(np.array([0, 1]), np.zeros((5, 2)), None, np.ones(4))


# -- the language model: evaluation and generation are deterministic --------------------
def _twins(**options):
    """A model with the regularisers on, and one holding the same weights with only what
    acts in eval mode (zoneout, whose eval form is its expectation)."""
    on = RNNLM(30, 8, "lstm", embedding_dim=6, dtype="float64", seed=3, **options)
    off = RNNLM(30, 8, "lstm", embedding_dim=6, dtype="float64", seed=4,
                zoneout=options.get("zoneout", 0.0))
    off.load_state_dict(on.state_dict())
    return on, off


@pytest.mark.parametrize("options", [AWD] + [{k: v} for k, v in AWD.items()],
                         ids=["all"] + list(AWD))
def test_eval_mode_and_generation_are_deterministic(options):
    on, off = _twins(**options)
    X = np.random.default_rng(0).integers(0, 30, (3, 7))
    train_logits, _ = on(X)
    on.clear_caches()
    assert not np.array_equal(train_logits, off.eval()(X)[0])     # training draws masks
    on.eval()
    drawn = on.rng.bit_generator.state
    for _ in range(2):                          # eval: nothing drawn, the twin's numbers
        np.testing.assert_array_equal(on(X)[0], off(X)[0])
    assert on.rng.bit_generator.state == drawn
    for strategy in ("greedy", "sample", "beam"):
        on.train()                          # generation ignores the mode: no dropout either way
        a = on.generate([1, 2, 3], 12, strategy=strategy, seed=5)
        assert a == on.generate([1, 2, 3], 12, strategy=strategy, seed=5)
        assert a == off.generate([1, 2, 3], 12, strategy=strategy, seed=5)
    assert on.rng.bit_generator.state == drawn


# -- training: resumed bit for bit, settings kept ----------------------------------------
@pytest.fixture
def words_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(WORDS, encoding="utf-8")
    return path


def _config(text, **kw):
    return tiny_config(text, **{"tokens": "word", "embedding": 6, "val_fraction": 0.1, **AWD,
                                **kw})


def test_resume_is_bit_for_bit_with_the_regularisers_on(words_file, tmp_path):
    straight = Trainer(_config(words_file), tmp_path / "a", log=quiet, progress=False)
    straight.fit()
    stop = straight.optimizer.step_count // 2 + 2         # Ctrl-C inside the second epoch
    cut = stop_at(Trainer(_config(words_file), tmp_path / "b", log=quiet, progress=False), stop)
    cut.fit()
    assert cut.interrupted
    meta = read_checkpoint(tmp_path / "b").meta
    assert meta["progress"]["batch"] > 0
    for name, value in AWD.items():
        assert meta["model"][name] == value
    resumed = Trainer.resume(tmp_path / "b", log=quiet, progress=False)
    resumed.fit()
    for k, v in straight.model.state_dict().items():
        np.testing.assert_array_equal(v, resumed.model.state_dict()[k], err_msg=k)
    assert [h["val_ppl"] for h in straight.history] == [h["val_ppl"] for h in resumed.history]
    # the regularisers changed the run: the same run without them ends elsewhere
    plain = Trainer(_config(words_file, **{k: 0.0 for k in AWD}), tmp_path / "c", log=quiet,
                    progress=False)
    plain.fit()
    assert plain.history[-1]["train_loss"] != straight.history[-1]["train_loss"]


@pytest.mark.parametrize("name", sorted(AWD))
def test_a_resume_with_other_values_is_refused(words_file, tmp_path, name):
    Trainer(_config(words_file, epochs=1), tmp_path / "run", log=quiet, progress=False).fit()
    with pytest.raises(CheckpointError, match=f"--{name.replace('_', '-')} 0.05 differs from "
                                              f"the checkpoint's {AWD[name]}"):
        Trainer.resume(tmp_path / "run", **{name: 0.05})


def test_a_checkpoint_from_before_the_regularisers_loads_with_them_off(words_file, tmp_path):
    import json
    Trainer(_config(words_file, epochs=1), tmp_path / "run", log=quiet, progress=False).fit()
    path = tmp_path / "run" / "checkpoint.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    for name in AWD:
        del meta["model"][name]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(str(path), **arrays)
    ckpt = read_checkpoint(tmp_path / "run")
    assert all(getattr(ckpt.model_config, name) == 0.0 for name in AWD)


# -- the command line ------------------------------------------------------------------
FLAGS = ["--" + name.replace("_", "-") for name in AWD]


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("value, words", [("1", "expected a number in [0, 1), got 1.0"),
                                          ("-0.5", "expected a number in [0, 1), got -0.5"),
                                          ("x", "invalid float value: 'x'")])
def test_bad_values_are_one_line_errors(capsys, tmp_path, flag, value, words):
    rc, _, err = main(capsys, "train", "--text", tmp_path / "none.txt", flag, value,
                      "--epochs", 1, "--out", tmp_path / "run")
    assert rc == 2
    one_line_error(err, f"argument {flag}", words)


def test_embedding_dropout_without_an_embedding_is_a_one_line_error(capsys, words_file, tmp_path):
    rc, _, err = main(capsys, "train", "--text", words_file, "--embedding-dropout", 0.1,
                      "--embedding", 0, "--epochs", 1, "--out", tmp_path / "run")
    assert rc == 2
    one_line_error(err, "argument --embedding-dropout", "expected an embedding")


def test_a_tiny_word_level_run_with_every_option(capsys, words_file, tmp_path):
    run = tmp_path / "run"
    values = [str(v) for name in AWD for v in ("--" + name.replace("_", "-"), AWD[name])]
    rc, out, err = main(capsys, "train", "--text", words_file, "--tokens", "word",
                        "--hidden", 8, "--embedding", 6, "--batch", 4, "--steps", 5,
                        "--val-fraction", 0.1, "--epochs", 2, "--out", run, "--no-progress",
                        *values)
    assert rc == 0, err
    assert "epoch 2: train perplexity" in out and "validation perplexity" in out
    meta = read_checkpoint(run).meta
    assert {name: meta["model"][name] for name in AWD} == AWD
    rc, out, err = main(capsys, "train", "--resume", run, "--epochs", 3, "--no-progress")
    assert rc == 0, err
    assert "epoch 3:" in out
    rc, _, err = main(capsys, "train", "--resume", run, "--epochs", 4, FLAGS[0], 0.05)
    assert rc == 2
    one_line_error(err, f"{FLAGS[0]} 0.05 differs from the checkpoint's")
    first = main(capsys, "generate", run, "--prefix", "the time", "-n", 10, "--seed", 3)
    assert first[0] == 0 and first[1].startswith("the time")
    assert first == main(capsys, "generate", run, "--prefix", "the time", "-n", 10, "--seed", 3)


def test_embedding_dropout_is_awd_lstms_embedded_dropout():
    """AWD-LSTM's ``embedded_dropout``: F.embedding(words, mask * weight), mask (V, 1); the
    same output and weight gradient with the same mask, in float64."""
    torch = pytest.importorskip("torch")
    V, E, p = 11, 4, 0.3
    rng = np.random.default_rng(6)
    W, idx = rng.standard_normal((V, E)), rng.integers(0, V, (5, 3))
    draws, dy = rng.random(V), rng.standard_normal((5, 3, E))
    layer = Embedding(V, E, dtype="float64", dropout=p)
    layer.params["weight"][...] = W
    layer.rng = FixedMask(draws)
    y = layer(idx)
    layer.backward(dy)
    weight = torch.tensor(W, requires_grad=True)
    mask = torch.tensor((draws >= p) / (1 - p))[:, None]             # (V, 1)
    out = torch.nn.functional.embedding(torch.tensor(idx), mask * weight)
    out.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(layer.grads["weight"], weight.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name, field", [("recurrent_dropout", "regularisers"),
                                         ("zoneout", "regularisers"),
                                         ("weight_drop", "recurrent")])
def test_a_cell_that_cannot_take_a_regulariser_is_refused_naming_the_flag(
        monkeypatch, name, field):
    """A registered cell whose ops take no recurrent mask or zoneout, or that has no
    recurrent weight matrix, refuses the flag before any model is built."""
    import dataclasses
    from npnn.functional.registry import CELLS
    from npnn.training.config import ConfigError, TrainConfig
    monkeypatch.setitem(CELLS, "gru", dataclasses.replace(
        CELLS["gru"], **{field: False if field == "regularisers" else None}))
    with pytest.raises(ConfigError, match="cell gru") as e:
        TrainConfig(cell="gru", **{name: 0.1}).validate()
    assert e.value.flag == "--" + name.replace("_", "-")
    TrainConfig(cell="gru", **{name: 0.0}).validate()          # off: nothing to refuse
