"""The language model under a BPTT memory budget: ``npnn train --bptt-memory``, the
setting kept in the checkpoint, exact resumption, the same training as full BPTT."""

import copy

import numpy as np
import pytest

from npnn.training.checkpoint import validate_meta
from npnn.training.trainer import Trainer, read_checkpoint

from _helpers import TINY, main, one_line_error, quiet, tiny_config

#: The run these tests train (``text_file`` is conftest's small text).
RUN = dict(cell="lstm", layers=2, dropout=0.2, steps=12, epochs=2, lr=0.01, seed=5,
           sample_every=5, sample_length=10, val_fraction=0.1, dtype="float64")


def _config(text_file, **kw):
    return tiny_config(text_file, **{**RUN, **kw})


def _params(trainer):
    return {k: np.asarray(v).copy() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("memory", [3, "sqrt"])
def test_budget_trains_as_full_bptt(text_file, tmp_path, memory):
    full = Trainer(_config(text_file), tmp_path / "a", log=quiet, progress=False)
    full.fit()
    bounded = Trainer(_config(text_file, bptt_memory=memory), tmp_path / "b", log=quiet,
                      progress=False)
    assert bounded.model.rnn.bptt_memory == memory
    bounded.fit()
    a, b = _params(full), _params(bounded)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-11, err_msg=k)


def test_resume_keeps_the_budget_bit_for_bit(text_file, tmp_path):
    straight = Trainer(_config(text_file, epochs=3, bptt_memory=4), tmp_path / "a", log=quiet,
                       progress=False)
    straight.fit()
    first = Trainer(_config(text_file, epochs=1, bptt_memory=4), tmp_path / "b", log=quiet,
                    progress=False)
    first.fit()
    assert read_checkpoint(tmp_path / "b").meta["run"]["bptt_memory"] == 4
    resumed = Trainer.resume(tmp_path / "b", log=quiet, progress=False, epochs=3)
    assert resumed.config.bptt_memory == 4 and resumed.model.rnn.bptt_memory == 4
    resumed.fit()
    a, b = _params(straight), _params(resumed)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_checkpoint_without_the_setting_keeps_everything(text_file, tmp_path):
    Trainer(_config(text_file, epochs=1), tmp_path / "a", log=quiet, progress=False).fit()
    meta = copy.deepcopy(read_checkpoint(tmp_path / "a").meta)
    del meta["run"]["bptt_memory"]              # a checkpoint written before the option
    assert validate_meta(meta).bptt_memory is None


def test_cli_long_steps_under_a_budget(capsys, text_file, tmp_path):
    rc, out, err = main(capsys, "train", "--text", str(text_file), *TINY[:-3], "--steps", "200",
                        "--bptt-memory", "sqrt", "--epochs", "1", "--no-progress",
                        "--out", tmp_path / "run")
    assert rc == 0, err
    assert read_checkpoint(tmp_path / "run").meta["run"]["bptt_memory"] == "sqrt"
    rc, out, err = main(capsys, "train", "--text", str(text_file), *TINY, "--bptt-memory", "0",
                        "--out", tmp_path / "bad")
    assert rc == 2
    one_line_error(err, "--bptt-memory", "positive integer")
