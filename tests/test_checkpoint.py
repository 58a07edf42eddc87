"""The checkpoint module: nested names, the one schema, format 1, and the run folder."""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _helpers import TEXT, interrupted_run
from npnn.training import cli, rundir
from npnn.training.checkpoint import (CheckpointError, flatten, read_checkpoint, unflatten)
from npnn.training.config import ModelConfig
from npnn.models.lm import CELLS
from npnn.training.rundir import RunBusyError, RunDir
from npnn.training.trainer import Trainer, build_model, load_model, parameter_count

FORMAT1 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "format1")


# -- nested names ----------------------------------------------------------------
names = st.text(alphabet="abc._0123", min_size=1, max_size=4)
trees = st.recursive(st.integers(0, 9).map(lambda i: np.arange(i)),
                     lambda children: st.dictionaries(names, children, min_size=1, max_size=3),
                     max_leaves=8).filter(lambda t: isinstance(t, dict))


@given(trees)
def test_flatten_and_unflatten_are_inverses(tree):
    flat = flatten(tree)
    assert all(name.count("/") >= 0 and "" not in name.split("/") for name in flat)
    back = unflatten(flat)

    def same(a, b):
        if isinstance(a, dict):
            assert isinstance(b, dict) and a.keys() == b.keys()
            for k in a:
                same(a[k], b[k])
        else:
            assert np.array_equal(a, b)
    same(tree, back)


def test_flatten_refuses_names_with_slashes():
    with pytest.raises(ValueError, match="without '/'"):
        flatten({"a/b": np.zeros(1)})


# -- the schema: any damage to the meta is a CheckpointError, never a traceback -----
@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A run stopped inside its second epoch: every section of the meta is filled."""
    root = tmp_path_factory.mktemp("good")
    text = root / "tiny.txt"
    text.write_text(TEXT, encoding="utf-8")
    interrupted_run(text, root / "run", at=45, dropout=0.1, layers=2)
    path = root / "run" / "checkpoint.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return root / "run", arrays


def save_with_meta(folder, arrays, meta):
    """Write ``arrays`` with ``meta`` as ``folder/checkpoint.npz``; returns ``folder``."""
    np.savez(folder / "checkpoint.npz", **dict(arrays, meta=np.array(json.dumps(meta))))
    return folder


def _paths(value, prefix=()):
    """Every place in a JSON value: (path, is a dict key)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((prefix + (k,), True))
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out.append((prefix + (i,), False))
            out += _paths(v, prefix + (i,))
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=4),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=4)


WORDS = ["lstm", "gru", "rnn", "char", "word", "float64", "random", "sgd", "cupy", "<unk>", "e"]


def _values_like(value):
    """Values near ``value`` (same type, plausible range) or any JSON value."""
    if isinstance(value, bool):
        near = st.booleans()
    elif isinstance(value, int):
        near = st.integers(-1, 2 * abs(value) + 2)
    elif isinstance(value, float):
        near = st.floats(-1.0, 2 * abs(value) + 1.0) | st.just(float("nan"))
    elif isinstance(value, str):
        near = st.sampled_from(WORDS) | st.text(max_size=3)
    elif isinstance(value, list) and value:
        near = st.lists(_values_like(value[0]), max_size=len(value) + 1)
    else:
        near = st.nothing()
    return near | json_values


def _damage(meta, data):
    path, is_key = data.draw(st.sampled_from(_paths(meta)), label="where")
    node = meta
    for p in path[:-1]:
        node = node[p]
    if is_key and data.draw(st.booleans(), label="delete"):
        del node[path[-1]]
    else:
        node[path[-1]] = data.draw(_values_like(node[path[-1]]), label="value")
    return meta


def _damaged_copy(good_run, tmp_path_factory, data):
    """A folder holding the good run's checkpoint with one field of its meta damaged."""
    _, arrays = good_run
    meta = _damage(json.loads(str(arrays["meta"])), data)
    return save_with_meta(tmp_path_factory.mktemp("damaged"), arrays, meta)


@settings(max_examples=60)
@given(data=st.data())
def test_any_damage_to_the_meta_is_a_checkpoint_error(good_run, tmp_path_factory, data):
    out = _damaged_copy(good_run, tmp_path_factory, data)
    try:
        load_model(out)                            # what npnn generate does
        ckpt = read_checkpoint(out)                # and the rest of the meta was valid
        assert ckpt.meta["format"] == 2
    except CheckpointError:
        pass


@settings(max_examples=30)
@given(data=st.data())
def test_resuming_from_a_damaged_meta_is_one_line_or_works(good_run, tmp_path_factory, data):
    """The same through ``npnn train --resume``: an error is one line, exit status 2."""
    out = _damaged_copy(good_run, tmp_path_factory, data)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli.main(["train", "--resume", str(out), "--no-progress", "--minutes", "0.002"])
    lines = stderr.getvalue().splitlines()
    assert rc in (0, 2), stderr.getvalue()
    assert rc == 0 or (len(lines) == 1 and lines[0].startswith("npnn train: error: ")), lines


def test_a_history_record_without_its_perplexity_is_refused(good_run, tmp_path):
    """Found by the property above: the plot read the missing key (KeyError)."""
    _, arrays = good_run
    meta = json.loads(str(arrays["meta"]))
    del meta["progress"]["history"][0]["train_ppl"]
    save_with_meta(tmp_path, arrays, meta)
    with pytest.raises(CheckpointError, match=r"history\[0\]: missing field 'train_ppl'"):
        read_checkpoint(tmp_path)


def test_a_valid_checkpoint_reads(good_run):
    folder, _ = good_run
    ckpt = read_checkpoint(folder)
    assert ckpt.meta["carried"] == 2                           # LSTM (h, c)
    assert ckpt.shapes["carried/1"][0] == (2, 4, 8)            # (layers, batch, hidden)
    assert load_model(folder).generate("It", 5, strategy="greedy").startswith("It")


@pytest.mark.parametrize("extra", [{"other/x": np.zeros(3)}, {"carried": np.zeros(2)}])
def test_arrays_that_are_not_npnn_names_are_refused(good_run, tmp_path, extra):
    _, arrays = good_run
    np.savez(tmp_path / "checkpoint.npz", **arrays, **extra)
    with pytest.raises(CheckpointError, match="should not|also a group"):
        read_checkpoint(tmp_path)


def test_a_format_that_is_not_an_integer_is_refused(good_run, tmp_path):
    _, arrays = good_run
    meta = json.loads(str(arrays["meta"]))
    meta["format"] = True                       # == 1 in Python
    with pytest.raises(CheckpointError, match="has format True"):
        read_checkpoint(save_with_meta(tmp_path, arrays, meta))


def test_a_config_larger_than_the_arrays_is_refused_before_building(good_run, tmp_path):
    _, arrays = good_run
    meta = json.loads(str(arrays["meta"]))
    meta["model"]["hidden"] = 10 ** 7              # 4e14 parameters: must not be allocated
    save_with_meta(tmp_path, arrays, meta)
    with pytest.raises(CheckpointError, match="needs .* parameters, its arrays hold"):
        load_model(tmp_path)


@given(st.sampled_from(sorted(c for c in CELLS if CELLS[c].variant_of is None)),  # lstmp: LSTM's
       st.integers(1, 9), st.integers(1, 5), st.integers(1, 3), st.integers(0, 5), st.booleans())
def test_parameter_count_is_the_models(cell, vocab, hidden, layers, embedding, tie):
    embedding = hidden if tie else embedding
    config = ModelConfig(vocab, cell, hidden, layers, embedding, tie=tie)
    assert parameter_count(config) == build_model(config).num_parameters()


# -- format 1 (npnn 0.1.0) ------------------------------------------------------------
@pytest.fixture
def format1(tmp_path, monkeypatch):
    """The format-1 run folder, its text given as the relative path it was saved with."""
    shutil.copy(os.path.join(FORMAT1, "text.txt"), tmp_path / "text.txt")
    (tmp_path / "run").mkdir()
    shutil.copy(os.path.join(FORMAT1, "checkpoint.npz"), tmp_path / "run" / "checkpoint.npz")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "run"


def test_a_format1_checkpoint_continues_as_npnn_010_would_have(format1):
    """It resumes at the position it was saved at and, 29 Adam steps later, ends where
    0.1.0's uninterrupted run ended, to float32 rounding: bit for bit holds within one
    version (tests/test_never_lose_work.py), not across versions whose arithmetic was
    made faster (the cross-entropy's single exp, Adam in place, numba's tanh)."""
    lines = []
    trainer = Trainer.resume(format1, log=lines.append, progress=False)
    assert (trainer.epoch, trainer.batch) == (1, 8)
    trainer.fit()
    assert trainer.optimizer.step_count == 73
    with np.load(os.path.join(FORMAT1, "expected_after_resume.npz")) as expected:
        for name, value in trainer.model.state_dict().items():
            np.testing.assert_allclose(value, expected[name], rtol=0, err_msg=name,
                                       atol=1e-5 * np.abs(expected[name]).max())
    assert any("format-1 checkpoint" in line for line in lines)
    assert read_checkpoint(format1).meta["format"] == 2      # saved in the current format


def test_a_format1_checkpoint_generates(format1):
    assert load_model(format1).generate("It was", 10, strategy="greedy").startswith("It was")


# -- the run folder -----------------------------------------------------------------------
def test_a_held_folder_is_refused_and_released(tmp_path):
    first = RunDir.open(tmp_path / "run")
    with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
        RunDir.open(tmp_path / "run")
    first.release()
    first.release()                                           # twice is fine
    assert os.listdir(tmp_path / "run") == []
    with RunDir.open(tmp_path / "run"):
        assert os.listdir(tmp_path / "run") == [".lock"]


def test_without_fcntl_the_lock_is_an_exclusive_file(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "fcntl", None)
    first = RunDir.open(tmp_path / "run")
    with pytest.raises(RunBusyError, match="delete .*\\.lock"):
        RunDir.open(tmp_path / "run")
    first.release()
    RunDir.open(tmp_path / "run").release()
