"""The training loop, generic over (model, loss, batches).

    state = fit(model, npnn.MSELoss(), batches, Adam(model, lr=1e-3), epochs=10, clip=1.0)

``batches(rng)`` returns the minibatches of one epoch, ``(inputs, targets)`` pairs,
as a function of the generator ``rng`` alone; an epoch can therefore be replayed,
and a run resumed inside it (``TrainState`` holds the position and the
generator's state at the epoch's start). A step is d2l's:

    out = model(*inputs); loss = loss_fn(out, targets)      forward (``step``)
    model.zero_grad(); model.backward(loss_fn.backward())    backward
    loss, weight, stop = hooks.reduce(model, loss, weight, should_stop())
                                                             (data parallel: all-reduce here)
    clip_grad_norm(model, clip); optimizer.step()            update

``fit`` loops over ``train_epoch`` and is the one place that

* stops on divergence: after every update the loss, every parameter and every
  optimizer buffer must be finite, and after every evaluation its metrics; if not,
  ``Diverged`` is raised *before* anything is saved, so a checkpoint never holds
  broken weights;
* handles SIGINT (Ctrl-C), SIGTERM (a scheduler's stop) and SIGHUP (a closed
  terminal): the current step finishes, ``hooks.save`` runs and ``fit`` returns with
  ``state.stopped`` set to the signal's name (also when it came during the last
  evaluation or save);
* keeps the time budget (``minutes``, counted from this call), evaluates and
  saves when it is spent (``state.stopped == 'time'``);
* evaluates and saves after every epoch.

What a model adds (evaluation, samples, checkpoints, a recurrent state carried
between batches) comes through ``Hooks``. With ``world`` (``npnn.training.distributed.world()``)
of more than one process, ``fit`` trains data-parallel: each process's ``batches``
yield its rows of every global batch (``world.rows``), and
``npnn.training.distributed.DataParallel`` wraps the hooks: rank 0's parameters are
broadcast, the gradients and the loss averaged, every decision to stop agreed, and
only rank 0 logs (its ``evaluate`` and ``save`` run on rank 0 alone unless the hooks
are ``collective``).
"""

import dataclasses
import math
import signal
import time
from typing import Optional

import numpy as np

from .._checks import check_positive_int, check_positive_number
from ..backend import get_array_module, to_numpy
from ..optim import clip_grad_norm


#: Why a step stopped when Ctrl-C arrived before its update (in every process).
INTERRUPTED = "interrupted"


class Diverged(FloatingPointError):
    """The loss, a parameter, an optimizer buffer or a metric became NaN or infinite."""


@dataclasses.dataclass
class TrainState:
    """Where a run stands; with the model's and optimizer's arrays, all it needs to
    continue bit for bit. ``stopped`` (not saved) says why the last ``fit`` returned:
    None (its epochs are done), 'time', 'SIGINT', 'SIGTERM' or 'SIGHUP'."""
    rng: np.random.Generator = dataclasses.field(default_factory=np.random.default_rng)
    epoch: int = 0                      # epochs completed
    batch: int = 0                      # batches of the current epoch completed
    epoch_rng: Optional[dict] = None    # state of ``rng`` at the current epoch's start
    totals: list = dataclasses.field(default_factory=lambda: [0.0, 0])  # loss sum, weight
    history: list = dataclasses.field(default_factory=list)    # a record per epoch
    mid_epoch: list = dataclasses.field(default_factory=list)  # records of stops inside one
    elapsed: float = 0.0                # seconds of training, over all sessions
    stopped: Optional[str] = None

    def to_dict(self):
        """JSON-ready (the checkpoint's ``progress``)."""
        return {"epoch": self.epoch, "batch": self.batch, "rng": self.rng.bit_generator.state,
                "epoch_rng": self.epoch_rng, "totals": list(self.totals),
                "history": self.history, "mid_epoch": self.mid_epoch, "elapsed": self.elapsed}

    @classmethod
    def from_dict(cls, d):
        rng = np.random.default_rng()
        rng.bit_generator.state = d["rng"]
        return cls(rng=rng, **{k: d[k] for k in ("epoch", "batch", "epoch_rng", "totals",
                                                 "history", "mid_epoch", "elapsed")})


class Hooks:
    """What a training loop adds to ``fit``. Every method is optional; subclass, or
    pass functions: ``Hooks(evaluate=lambda state, record: {"test_mse": ...})``."""

    unit = "items"      # what the rate counts (the loss weights: target elements)
    collective = False  # data parallel: evaluate and save run on every process (True)
                        # or on rank 0 alone, their outcome broadcast (False)

    def __init__(self, **functions):
        for name, fn in functions.items():
            if not callable(getattr(Hooks, name, None)):
                raise TypeError(f"expected hooks among {', '.join(_HOOKS)}, got {name!r}")
            setattr(self, name, fn)

    def begin(self, state):
        """Training starts (signal handlers are in place)."""

    def start_epoch(self, state):
        """A fresh epoch starts (not called when resuming inside one)."""

    def reduce(self, model, loss, weight, stop):
        """After each backward, before the update: the batch's gradients are in
        ``model``, ``loss`` is its mean over ``weight`` target elements, ``stop`` why
        this process would stop after this step (None: go on). Returns (loss, weight,
        stop) for the update and the totals; data-parallel training averages the
        gradients and the loss over the processes here and returns the same in every
        process. This one calls ``after_backward`` and ``agree``."""
        self.after_backward(model)
        return loss, weight, (stop if stop == INTERRUPTED else self.agree(stop))

    def after_backward(self, model):
        """The batch's gradients are in ``model`` (data parallel: averaged)."""

    def agree(self, stop):
        """Why to stop after this step or epoch (None: go on), as seen by this process;
        data-parallel training returns the same answer in every process."""
        return stop

    def evaluate(self, state, record):
        """Metrics to add to ``record`` (after an epoch, at a time stop, on divergence)."""
        return {}

    def describe(self, record):
        """One line of a record, for the log."""
        parts = [f"train loss {record['train_loss']:.4f}"]
        parts += [f"{k} {v:.4g}" for k, v in record.items() if k not in _RECORD]
        if "items_per_s" in record:
            parts.append(f"{record['items_per_s']:,.0f} {self.unit}/s")
        return ", ".join(parts)

    def postfix(self, loss):
        """Extra fields of the progress bar."""
        return {}

    def end_epoch(self, state, record):
        """An epoch's record was appended to ``state.history`` (samples go here)."""

    def save(self, state):
        """Write a checkpoint (after every epoch and at every stop); return a true value
        if one was written."""
        return None

    def diverged(self, error):
        """The ``Diverged`` error that ``fit`` is about to raise; returns it (data
        parallel: marked as met by every process at once)."""
        return error


_HOOKS = [name for name in vars(Hooks) if not name.startswith("_")
          and name not in ("unit", "collective")]
_RECORD = ("epoch", "train_loss", "items_per_s", "elapsed_s")


def loss_step(model, loss_fn):
    """The default step: ``loss_fn(model(*inputs), targets)`` and its backward; returns
    (loss, weight), the weight being the number of target elements the loss is a mean
    over (d2l's; those equal to the loss's ``ignore_index`` left out)."""
    def step(batch):
        inputs, targets = batch
        loss = loss_fn(model(*inputs), targets)
        model.backward(loss_fn.backward())
        return float(loss), loss_weight(loss_fn, targets)
    return step


def loss_weight(loss_fn, targets):
    """The number of target elements ``loss_fn``'s mean is over: all of them, less
    those equal to its ``ignore_index`` (cross-entropy's padding)."""
    ignore = getattr(loss_fn, "ignore_index", None)
    if ignore is None:
        return float(np.size(targets))
    return float((get_array_module(targets).asarray(targets) != ignore).sum())


def fit(model, loss_fn, batches, optimizer, *, epochs=None, minutes=None, clip=None, rng=None,
        state=None, hooks=None, step=None, log=print, progress=None, world=None):
    """Train until ``epochs`` (in all, counting those of ``state``) or ``minutes`` (this
    call) are spent, or a signal; returns the ``TrainState``.

    Args:
        model: a Module; ``model(*inputs)`` gives what ``loss_fn`` scores.
        loss_fn: a loss module (``SoftmaxCrossEntropy``, ``MSELoss``) with ``backward()``.
        batches: ``batches(rng)`` -> the epoch's iterable of (inputs tuple, targets).
        optimizer: an ``npnn.optim`` optimizer of the model.
        clip: global gradient-norm clip, or None.
        rng: the data-order generator of a new run (default: fresh entropy); or
        state: a ``TrainState`` to continue (from a checkpoint).
        hooks: ``Hooks``; step: ``step(batch) -> (loss, weight)`` replacing ``loss_step``.
        log: a function of one line, or None; progress: True, False or None (a bar on
            a terminal only).
        world: ``npnn.training.distributed.world()`` to train data-parallel over its processes
            (``batches`` then yield this process's rows; the loss must be a mean); None:
            this process alone.
    Raises ``Diverged`` (nothing saved, in every process), and whatever ``hooks.save``
    raises.
    """
    _check_budget(epochs, minutes, clip)
    if state is None:
        state = TrainState(rng=np.random.default_rng() if rng is None else rng)
    elif rng is not None:
        raise ValueError("expected rng for a new run or state to continue one, got both")
    hooks = Hooks() if hooks is None else hooks
    step = loss_step(model, loss_fn) if step is None else step
    if world is not None and world.size > 1:
        if getattr(loss_fn, "reduction", "mean") != "mean":
            raise ValueError(f"expected a loss with reduction 'mean' for data-parallel "
                             f"training (the processes' gradients are averaged), got "
                             f"{loss_fn.reduction!r}")
        hooks = world.data_parallel(hooks, model, optimizer)
        fresh = world.bcast(state)             # one data order and position everywhere
        if world.rank:
            for f in dataclasses.fields(state):
                setattr(state, f.name, getattr(fresh, f.name))
            log, progress = None, False
    log = log or (lambda line: None)
    state.stopped = None
    session, before = time.perf_counter(), state.elapsed
    deadline = None if minutes is None else session + 60.0 * minutes
    saved = (state.epoch, state.batch) if (state.epoch or state.batch) else None

    def should_stop():
        state.elapsed = before + time.perf_counter() - session
        if signals.received:
            return signals.received
        return "time" if deadline is not None and time.perf_counter() >= deadline else None

    # overflow and NaN are found after every step and reported as Diverged
    with _Signals() as signals, np.errstate(over="ignore", invalid="ignore"):
        hooks.begin(state)
        while epochs is None or state.epoch < epochs:
            if state.epoch_rng is None:             # a fresh epoch
                state.epoch_rng = state.rng.bit_generator.state
                hooks.start_epoch(state)
            else:                                   # inside one: replay its batches
                state.rng.bit_generator.state = state.epoch_rng
            epoch_batches = batches(state.rng)
            total = len(epoch_batches) if hasattr(epoch_batches, "__len__") else None
            t0, weight0 = time.perf_counter(), state.totals[1]
            bar = _progress(total, state.batch, f"epoch {state.epoch + 1}", progress)
            try:
                stop = train_epoch(model, step, epoch_batches, optimizer, state, clip=clip,
                                   hooks=hooks, should_stop=should_stop, bar=bar)
            except _NonFinite as e:
                raise _diverged(_where(state.epoch, state.batch), state, hooks, str(e),
                                saved) from None
            finally:
                _close(bar)
            rate = (state.totals[1] - weight0) / max(time.perf_counter() - t0, 1e-9)
            record = {"train_loss": state.totals[0] / max(state.totals[1], 1e-300),
                      "items_per_s": rate, "elapsed_s": state.elapsed}
            if stop is None:                        # the epoch is done
                record = {"epoch": state.epoch + 1, **record}
                record.update(hooks.evaluate(state, record))
                log(f"epoch {state.epoch + 1}: " + hooks.describe(record))
                if not _finite_record(record):
                    raise _diverged(f"the end of epoch {state.epoch + 1}", state, hooks,
                                    "a metric is not finite", saved, record)
                state.history.append(record)
                state.epoch, state.batch, state.epoch_rng = state.epoch + 1, 0, None
                state.totals = [0.0, 0]
                hooks.end_epoch(state, record)
                stop = hooks.agree(should_stop())   # a signal during the evaluation
            elif stop == "time":                    # evaluate where the budget ran out
                at = state.batch / total if total else 0.5
                record = {"epoch": state.epoch + min(at, 1.0), **record}
                record.update(hooks.evaluate(state, record))
                if not _finite_record(record):
                    raise _diverged(_where(state.epoch, state.batch), state, hooks,
                                    "a metric is not finite", saved, record)
                state.mid_epoch.append(record)
            if hooks.save(state):
                saved = (state.epoch, state.batch)
            if stop is not None:
                state.stopped = stop
                break
        if state.stopped is None and signals.received:   # during the last evaluation or save:
            state.stopped = signals.received             # saved, but the run was stopped
    state.elapsed = before + time.perf_counter() - session
    return state


def train_epoch(model, step, batches, optimizer, state, *, clip=None, hooks=None,
                should_stop=lambda: None, bar=None):
    """Run the batches of the current epoch from ``state.batch`` on (the earlier ones
    are skipped: a replay); returns None when they are done, or why it stopped early
    ('SIGINT', 'SIGTERM', 'time'), decided after a step's backward (``hooks.reduce``),
    the step's update still made. Raises ``_NonFinite`` after a broken update (the
    state then counts the broken step: it must not be saved)."""
    hooks = Hooks() if hooks is None else hooks
    t0, done = time.perf_counter(), 0.0
    for b, batch in enumerate(batches):
        if b < state.batch:
            continue
        model.zero_grad()
        try:
            loss, weight = step(batch)
            stop = should_stop()
        except KeyboardInterrupt:    # raised before any update: this step is dropped
            model.zero_grad()
            loss, weight, stop = 0.0, 0.0, INTERRUPTED
        loss, weight, stop = hooks.reduce(model, loss, weight, stop)
        if stop == INTERRUPTED:     # (in every process)
            return "SIGINT"
        if clip is not None:
            clip_grad_norm(model, clip)
        optimizer.step()
        state.batch = b + 1
        state.totals[0] += loss * weight
        state.totals[1] += weight
        if not math.isfinite(loss):
            raise _NonFinite(f"the loss is {loss}")
        params_ok, buffers_ok = _all_finite(list(model.parameters()),
                                            [b for s in optimizer.state for b in s.values()])
        if not params_ok:
            raise _NonFinite("the parameters are not finite after the update")
        if not buffers_ok:
            raise _NonFinite("the optimizer's buffers are not finite after the update")
        done += weight
        if bar is not None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix({"loss": f"{loss:.3f}", **hooks.postfix(loss),
                             f"{hooks.unit}_s": f"{rate:,.0f}"}, refresh=False)
            bar.update(1)
        if stop is not None:
            return stop
    return None


class _NonFinite(Exception):
    pass


def _all_finite(*groups):
    """For each group of arrays, whether all of them are finite: one answer read from a
    device for all groups (a GPU synchronises once a step, not once an array)."""
    flags = []
    for arrays in groups:
        flags.append([get_array_module(a).isfinite(a).all() for a in arrays])
    device = [f for group in flags for f in group if not isinstance(f, (bool, np.bool_))]
    if device:
        xp = get_array_module(device[0])
        read = iter(to_numpy(xp.stack(device)).tolist())
        flags = [[f if isinstance(f, (bool, np.bool_)) else next(read) for f in group]
                 for group in flags]
    return tuple(all(bool(f) for f in group) for group in flags)


def _finite_record(record):
    return all(math.isfinite(v) for v in record.values() if isinstance(v, float))


def _where(epoch, batch):
    return f"epoch {epoch + 1}, batch {batch}" if batch else f"the end of epoch {epoch}"


def _diverged(where, state, hooks, what, saved, record=None):
    """The Diverged error: where, what, the metrics (the model is evaluated as it is
    now when no record is given), and what was kept."""
    if record is None:
        record = {"train_loss": state.totals[0] / max(state.totals[1], 1e-300)}
        try:
            record.update(hooks.evaluate(state, record))
        except Exception:       # the broken model may not even evaluate
            pass
    kept = (f"not saved: the checkpoint stays at {_where(*saved)}" if saved else
            "nothing was saved")
    error = Diverged(f"training diverged at {where}: {what} "
                     f"({hooks.describe(record)}); {kept}; try a smaller learning rate (--lr) "
                     "or gradient clipping (--clip)")
    return hooks.diverged(error)    # data parallel: met by every process at once


def _check_budget(epochs, minutes, clip):
    if epochs is None and minutes is None:
        raise ValueError("expected a budget: epochs or minutes (or both)")
    if epochs is not None:
        check_positive_int("epochs", epochs)
    for name, v in (("minutes", minutes), ("clip", clip)):
        if v is not None:
            check_positive_number(name, v)


#: The signals that stop a run after its step, with a checkpoint (SIGHUP: POSIX only).
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class _Signals:
    """While active (in the main thread), SIGINT, SIGTERM and SIGHUP (a closed terminal or
    ssh session) only set ``received`` to
    the signal's name; the loop checks it after each step, so a checkpoint never
    holds a half-applied update. Elsewhere no handler can be installed."""

    def __enter__(self):
        self.received, self._previous = None, {}
        for name in SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:       # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.received = self.received or signal.Signals(signum).name

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _progress(total, initial, desc, enabled):
    """A tqdm bar starting at ``initial``, or None when disabled (``enabled`` None: only
    on a terminal)."""
    if enabled is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, leave=False,
                disable=None if enabled is None else False, dynamic_ncols=True)


def _close(bar):
    if bar is not None:
        bar.close()
