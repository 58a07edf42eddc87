"""Training runs and checkpoints: exact resumption, atomic writes, clear errors."""

import json
import os

import numpy as np
import pytest

from npnn.training.trainer import CheckpointError, TrainConfig, Trainer, load_model, read_checkpoint

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief. ") * 12


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def _config(text_file, **kw):
    base = dict(text=text_file, cell="lstm", hidden=16, layers=2, embedding=8, dropout=0.2,
                batch=4, steps=10, epochs=3, minutes=None, lr=0.01, seed=5, sample_every=2,
                sample_length=20, val_fraction=0.1)
    base.update(kw)
    return TrainConfig(**base)


def _quiet(*_):
    pass


def _params(trainer):
    return {k: v.copy() for k, v in trainer.model.state_dict().items()}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _ppl(history):
    return [(h["epoch"], h["train_ppl"], h["val_ppl"]) for h in history]


@pytest.mark.parametrize("iterator", ["sequential", "random"])
def test_resume_between_epochs_is_bit_identical(text_file, tmp_path, iterator):
    straight = Trainer(_config(text_file, iterator=iterator), tmp_path / "a", log=_quiet,
                       progress=False)
    straight.fit()
    first = Trainer(_config(text_file, iterator=iterator, epochs=1), tmp_path / "b", log=_quiet,
                    progress=False)
    first.fit()
    resumed = Trainer.resume(tmp_path / "b", log=_quiet, progress=False, epochs=3)
    resumed.fit()
    _same(_params(straight), _params(resumed))
    assert _ppl(straight.history) == _ppl(resumed.history)
    assert straight.optimizer.step_count == resumed.optimizer.step_count


def test_resume_from_the_middle_of_an_epoch_is_bit_identical(text_file, tmp_path):
    straight = Trainer(_config(text_file), tmp_path / "a", log=_quiet, progress=False)
    straight.fit()
    cut = Trainer(_config(text_file), tmp_path / "b", log=_quiet, progress=False)
    step, original = [0], cut.train_step
    stop = straight.optimizer.step_count // 2 + 3   # Ctrl-C in the middle of the second epoch

    def interrupt(*args):
        step[0] += 1
        if step[0] == stop:
            raise KeyboardInterrupt
        return original(*args)
    cut.train_step = interrupt
    cut.fit()
    assert cut.interrupted
    meta = read_checkpoint(tmp_path / "b").meta
    assert meta["progress"]["epoch"] == 1 and 0 < meta["progress"]["batch"]
    assert meta["carried"] == 2                                                # LSTM (h, c)
    resumed = Trainer.resume(tmp_path / "b", log=_quiet, progress=False)
    resumed.fit()
    _same(_params(straight), _params(resumed))
    assert _ppl(straight.history) == _ppl(resumed.history)


def test_a_write_interrupted_midway_leaves_the_previous_checkpoint(text_file, tmp_path,
                                                                   monkeypatch):
    trainer = Trainer(_config(text_file, epochs=1), tmp_path / "run", log=_quiet, progress=False)
    trainer.fit()
    path = tmp_path / "run" / "checkpoint.npz"
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path / "run") == ["checkpoint.npz"] or \
        sorted(os.listdir(tmp_path / "run")) == ["checkpoint.npz", "history.png"]
    monkeypatch.undo()
    Trainer.resume(tmp_path / "run", log=_quiet, progress=False)   # still loads


def test_bad_checkpoints_give_clear_errors(text_file, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        Trainer.resume(tmp_path / "nothing")
    trainer = Trainer(_config(text_file, epochs=1), tmp_path / "run", log=_quiet, progress=False)
    trainer.fit()
    path = tmp_path / "run" / "checkpoint.npz"
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match="differs from the checkpoint's 16"):
        Trainer.resume(tmp_path / "run", hidden=32)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        Trainer.resume(tmp_path / "run")
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        load_model(tmp_path / "run")
    # a checkpoint whose weights do not fit its own settings
    (tmp_path / "good.npz").write_bytes(good)
    with np.load(tmp_path / "good.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["model"]["hidden"] = 17
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(str(path), **arrays)
    with pytest.raises(CheckpointError, match="does not match its own settings"):
        Trainer.resume(tmp_path / "run")
    meta["format"] = 99
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(str(path), **arrays)
    with pytest.raises(CheckpointError, match="has format 99"):
        load_model(tmp_path / "run")


def test_training_reduces_perplexity_and_samples(text_file, tmp_path):
    lines = []
    trainer = Trainer(_config(text_file, epochs=4, layers=1, dropout=0.0, lr=0.02), tmp_path / "r",
                      log=lines.append, progress=False)
    history = trainer.fit()
    assert history[-1]["train_ppl"] < 0.5 * history[0]["train_ppl"]
    assert any(line.startswith("sample: ") for line in lines)
    assert len([h for h in history]) == 4 and all(np.isfinite(h["val_ppl"]) for h in history)


def test_config_errors(text_file, tmp_path):
    # lstmp (npnn.LSTM's proj_size) is a cell but no choice: registry.cell_choices()
    with pytest.raises(ValueError, match="cell: expected one of rnn, lstm, gru, peephole_lstm, ctrnn, "
                                         "jordan, layernorm_lstm, layernorm_gru, got 'tcn'"):
        Trainer(_config(text_file, cell="tcn"), tmp_path)
    with pytest.raises(ValueError, match="expected a budget"):
        Trainer(_config(text_file, epochs=None, minutes=None), tmp_path)
    with pytest.raises(ValueError, match="too few for batch 64 x steps 100"):
        Trainer(_config(text_file, batch=64, steps=100), tmp_path)
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        Trainer(_config(str(tmp_path / "missing.txt")), tmp_path)


def test_ctrl_c_inside_a_step_lets_the_step_finish(text_file, tmp_path):
    """A real SIGINT arriving in the middle of a training step (here: before its
    forward pass) stops the run after that step, so the checkpoint never holds a
    half-applied update and the resumed run is bit-identical."""
    import os
    import signal
    straight = Trainer(_config(text_file), tmp_path / "a", log=_quiet, progress=False)
    straight.fit()
    cut = Trainer(_config(text_file), tmp_path / "b", log=_quiet, progress=False)
    step, original = [0], cut.train_step
    stop = straight.optimizer.step_count // 2 + 3

    def signal_inside(*args):
        step[0] += 1
        if step[0] == stop:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)
    cut.train_step = signal_inside
    cut.fit()
    assert cut.interrupted and cut.optimizer.step_count == stop   # the step completed
    resumed = Trainer.resume(tmp_path / "b", log=_quiet, progress=False)
    resumed.fit()
    _same(_params(straight), _params(resumed))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored


# -- the layout of the accelerations' loops: chosen once, kept for the run's whole life -----

def _layouts_seen(trainer, seen):
    """Record the layout forced on the accelerations at each training step."""
    from npnn.functional.accel import _layout
    step = trainer.train_step

    def spying(*args):
        seen.append(_layout.forced())
        return step(*args)
    trainer.train_step = spying
    return trainer


def test_a_run_keeps_its_layout_through_a_resume(text_file, tmp_path, monkeypatch):
    """The layout is stored in the checkpoint and a resumed run takes it from there, over
    NPNN_LAYOUT and over the timed choice; and, feature-major with the accelerations on
    at every length, a resumed run ends bit for bit where an uninterrupted one does."""
    from npnn.functional import accel
    monkeypatch.setenv("NPNN_LAYOUT", "feature")
    with accel.use_acceleration():
        straight = Trainer(_config(text_file), tmp_path / "a", log=_quiet, progress=False)
        assert straight.layout == "feature"
        straight.fit()
        seen = []
        first = _layouts_seen(Trainer(_config(text_file, epochs=1), tmp_path / "b", log=_quiet,
                                      progress=False), seen)
        first.fit()
        assert set(seen) == {"feature"}
        assert read_checkpoint(tmp_path / "b").meta["layout"] == "feature"
        monkeypatch.setenv("NPNN_LAYOUT", "batch")          # the checkpoint's layout wins
        seen.clear()
        resumed = _layouts_seen(Trainer.resume(tmp_path / "b", log=_quiet, progress=False,
                                               epochs=3), seen)
        assert resumed.layout == "feature"
        resumed.fit()
    assert set(seen) == {"feature"}
    _same(_params(straight), _params(resumed))
    assert _ppl(straight.history) == _ppl(resumed.history)
    assert read_checkpoint(tmp_path / "b").meta["layout"] == "feature"


def test_a_checkpoint_from_before_layouts_resumes_batch_major(text_file, tmp_path, monkeypatch):
    monkeypatch.setenv("NPNN_LAYOUT", "feature")
    Trainer(_config(text_file, epochs=1), tmp_path / "run", log=_quiet, progress=False).fit()
    path = tmp_path / "run" / "checkpoint.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["layout"]                                      # as npnn wrote it before
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    seen = []
    resumed = _layouts_seen(Trainer.resume(tmp_path / "run", log=_quiet, progress=False,
                                           epochs=2), seen)
    assert resumed.layout == "batch"
    resumed.fit()
    assert set(seen) == {"batch"}
    assert read_checkpoint(path).meta["layout"] == "batch"


def test_a_new_run_times_its_layout_for_its_own_shape(text_file, tmp_path, monkeypatch):
    """Unforced, a new run asks the registry's cell for the layout of its shape (rows per
    process, hidden size, dtype) once, and keeps that."""
    from npnn.functional.registry import Cell
    monkeypatch.delenv("NPNN_LAYOUT", raising=False)
    asked = []

    def layout(self, N, H, dtype, xp):
        asked.append((self.name, N, H, dtype))
        return "feature"
    monkeypatch.setattr(Cell, "layout", layout)
    trainer = Trainer(_config(text_file, cell="gru", epochs=1), tmp_path / "run", log=_quiet,
                      progress=False)
    assert asked == [("gru", 4, 16, "float32")] and trainer.layout == "feature"
