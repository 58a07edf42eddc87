"""The generic training loop: any (model, loss, batches), one place for divergence,
signals, budgets and saving."""

import os
import signal

import numpy as np
import pytest

import npnn
from _helpers import TEXT, quiet, stop_at, tiny_config
from npnn.analysis import LastStateRegressor
from npnn.training.loop import Diverged, Hooks, TrainState, fit, loss_step
from npnn.optim import SGD, Adam
from npnn.training.trainer import Trainer


def regression(seed=0):
    """A GRU read out by a linear map of its last state, on sums of sequences."""
    model = LastStateRegressor("gru", 1, 8, seed=seed)

    def batches(rng):
        for _ in range(6):
            x = rng.standard_normal((5, 4, 1)).astype(np.float32)     # (T, N, 1)
            yield (x,), x.sum(axis=0)                                 # targets (N, 1)
    return model, batches


def params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_fit_trains_any_model_with_any_loss():
    model, batches = regression()
    state = fit(model, npnn.MSELoss(), batches, Adam(model, lr=1e-2), epochs=8, clip=1.0,
                rng=np.random.default_rng(0), log=None)
    assert [r["epoch"] for r in state.history] == list(range(1, 9))
    assert state.history[-1]["train_loss"] < 0.5 * state.history[0]["train_loss"]
    assert state.stopped is None and state.epoch == 8 and state.batch == 0


def test_a_stop_inside_an_epoch_resumes_bit_for_bit():
    model, batches = regression()
    straight = fit(model, npnn.MSELoss(), batches, SGD(model, lr=0.05), epochs=3,
                   rng=np.random.default_rng(1), log=None)
    expected = params(model)

    model, batches = regression()
    optimizer, step, count = SGD(model, lr=0.05), loss_step(model, npnn.MSELoss()), [0]

    def ctrl_c_at_9(batch):
        count[0] += 1
        if count[0] == 9:
            raise KeyboardInterrupt
        return step(batch)
    state = fit(model, npnn.MSELoss(), batches, optimizer, epochs=3, step=ctrl_c_at_9,
                rng=np.random.default_rng(1), log=None)
    assert state.stopped == "SIGINT" and (state.epoch, state.batch) == (1, 2)
    state = TrainState.from_dict(state.to_dict())                    # through JSON's types
    fit(model, npnn.MSELoss(), batches, optimizer, epochs=3, state=state, log=None)
    for k, v in params(model).items():
        assert np.array_equal(v, expected[k]), k
    assert [r["train_loss"] for r in state.history] == \
        [r["train_loss"] for r in straight.history]


def test_sigterm_lets_the_step_finish_saves_and_restores_the_handlers():
    model, batches = regression()
    optimizer, step, count, saved = SGD(model, lr=0.05), loss_step(model, npnn.MSELoss()), [0], []

    def term_at_3(batch):
        count[0] += 1
        if count[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(batch)
    state = fit(model, npnn.MSELoss(), batches, optimizer, epochs=2, step=term_at_3,
                hooks=Hooks(save=lambda s: saved.append((s.epoch, s.batch)) or True),
                rng=np.random.default_rng(0), log=None)
    assert state.stopped == "SIGTERM" and optimizer.step_count == 3
    assert saved == [(0, 3)]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_divergence_raises_before_any_save():
    model, batches = regression()
    saved = []
    with pytest.raises(Diverged, match="epoch 1, batch 1: the parameters are not finite.*"
                                       "nothing was saved.*--lr"):
        fit(model, npnn.MSELoss(), batches, Adam(model, lr=1e38), epochs=2,
            hooks=Hooks(save=lambda s: saved.append(s.epoch)), rng=np.random.default_rng(0),
            log=None)
    assert saved == []


def test_a_non_finite_metric_is_divergence_too():
    model, batches = regression()
    saved = []
    hooks = Hooks(evaluate=lambda state, record: {"test_mse": float("nan")},
                  save=lambda s: saved.append(s.epoch))
    with pytest.raises(Diverged, match="end of epoch 1: a metric is not finite.*test_mse nan"):
        fit(model, npnn.MSELoss(), batches, SGD(model, lr=0.01), epochs=2, hooks=hooks,
            rng=np.random.default_rng(0), log=None)
    assert saved == []


def test_a_spent_time_budget_evaluates_and_saves_where_it_stopped():
    model, batches = regression()
    saved = []
    hooks = Hooks(evaluate=lambda state, record: {"probe": 1.0},
                  save=lambda s: saved.append((s.epoch, s.batch)) or True)
    state = fit(model, npnn.MSELoss(), batches, SGD(model, lr=0.01), minutes=1e-9, hooks=hooks,
                rng=np.random.default_rng(0), log=None)
    assert state.stopped == "time" and (state.epoch, state.batch) == (0, 1)
    assert saved == [(0, 1)] and state.history == []
    (record,) = state.mid_epoch
    assert record["probe"] == 1.0 and 0 < record["epoch"] < 1


def test_hooks_see_every_step_and_can_stop_all_processes_together():
    """What data parallelism needs: a gradient hook after every backward, and one
    decision to stop that every process takes at the same step."""
    model, batches = regression()
    seen, decisions = [], []

    def agree(stop):
        decisions.append(stop)
        return "SIGTERM" if len(decisions) == 4 else stop    # another process was stopped
    def after_backward(m):
        seen.append(float(np.abs(m.rnn.grads["weight_hh_l0"]).sum()))
    hooks = Hooks(after_backward=after_backward, agree=agree)
    state = fit(model, npnn.MSELoss(), batches, SGD(model, lr=0.01), epochs=3, hooks=hooks,
                rng=np.random.default_rng(0), log=None)
    assert len(seen) == 4 and all(g > 0 for g in seen)
    assert state.stopped == "SIGTERM" and state.batch == 4


def test_fit_refuses_a_missing_or_broken_budget_and_unknown_hooks():
    model, batches = regression()
    opt = SGD(model, lr=0.01)
    for kw, match in [({}, "budget"), ({"epochs": 0}, "epochs"),
                      ({"minutes": float("nan")}, "minutes"),
                      ({"epochs": 1, "clip": float("nan")}, "clip")]:
        with pytest.raises(ValueError, match=match):
            fit(model, npnn.MSELoss(), batches, opt, **kw)
    with pytest.raises(TypeError, match="expected hooks among"):
        Hooks(on_step=print)


def test_sigterm_inside_a_language_model_step_resumes_bit_for_bit(tmp_path):
    """As tests/test_train.py's Ctrl-C test, for SIGTERM (the old code died here)."""
    text = tmp_path / "tiny.txt"
    text.write_text(TEXT, encoding="utf-8")
    config = tiny_config(text, hidden=16, layers=2, embedding=8, dropout=0.2, lr=0.01, seed=5)
    straight = Trainer(config, tmp_path / "a", log=quiet, progress=False)
    straight.fit()
    stop = straight.optimizer.step_count // 2 + 3
    cut = stop_at(Trainer(config, tmp_path / "b", log=quiet, progress=False), stop, signal.SIGTERM)
    cut.fit()
    assert cut.state.stopped == "SIGTERM" and cut.optimizer.step_count == stop
    resumed = Trainer.resume(tmp_path / "b", log=quiet, progress=False)
    resumed.fit()
    for k, v in resumed.model.state_dict().items():
        assert np.array_equal(v, straight.model.state_dict()[k]), k
