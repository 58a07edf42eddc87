"""Training a language model: truncated BPTT on the generic loop, checkpoints that resume exactly.

One training step is d2l's ``train_epoch_ch8`` step:

    logits, state = model(X, state)          state carried between sequential batches
    loss = cross_entropy(logits, Y)          mean over the N*T tokens
    model.backward(dloss); clip_grad_norm(model, clip); optimizer.step()

``Trainer(config, out_dir).fit()`` starts a run and ``Trainer.resume(out_dir).fit()``
continues one. The loop itself is ``npnn.fit.fit`` (divergence, SIGINT/SIGTERM,
the time budget, when to save); the Trainer is its ``Hooks``: it carries the
recurrent state from batch to batch, measures the validation perplexity, shows
samples, and writes ``out_dir/checkpoint.npz`` (``npnn.checkpoint``) and
``history.png``. While a Trainer exists (until ``fit`` returns, or ``close()``),
it holds the folder's lock (``npnn.rundir``): a second run there is refused.

A checkpoint holds the model, the optimizer's buffers, the vocabulary, the
generators of the data order and of dropout, the carried recurrent state, the
position (epoch and batch), the history, and the text's SHA-256. Because an
epoch's batches are a function of the data generator's state at the epoch's
start, a run resumed from any checkpoint, even one written in the middle of an
epoch by Ctrl-C, SIGTERM or a time budget, continues bit for bit as if it had
never stopped.
"""

import dataclasses
import math
import os
import time

import numpy as np

from .._version import __version__
from ..backend import get_backend, to_backend, to_numpy
from .checkpoint import (NAME as CHECKPOINT, CheckpointError, module_generators,
                         read_checkpoint, text_digest, write_checkpoint)
from .config import ConfigError, ModelConfig, TrainConfig
from .data import (TextCorpus, Vocab, default_corpus, num_batches, read_text,
                   seq_data_iter_random, seq_data_iter_sequential, timemachine_lines)
from .distributed import LOCAL, all_ok, from_root
from .loop import Diverged, Hooks, TrainState, fit
from ..functional import softmax_cross_entropy
from ..layers import SoftmaxCrossEntropy, no_grad
from ..models import RNNLM
from ..functional.accel import use_layout
from ..functional.registry import CELLS
from ..optim import OPTIMIZERS, perplexity
from .plot import available as plot_available
from .plot import plot_curves
from .rundir import RunDir

__all__ = ["Trainer", "TrainConfig", "ModelConfig", "CheckpointError", "ConfigError",
           "Diverged", "build_model", "build_optimizer", "load_corpus", "load_model",
           "read_checkpoint"]

#: Validation reads the text in pieces of this many steps (see ``validation_perplexity``).
VAL_PIECE_STEPS = 16
#: Shares of a run's --minutes: training stops ``TRAIN_RESERVE`` before the end (for the
#: last evaluation and the save), and an evaluation reads no validation piece later than
#: ``EVAL_GRACE`` after it (the whole run stays within 10% of its budget).
TRAIN_RESERVE, EVAL_GRACE = 0.05, 0.0
#: Settings a resumed run may change; the others must stay as the checkpoint has them.
RESUMABLE = ("epochs", "minutes", "backend", "sample_every", "sample_length", "prefix")


def read_corpus_text(config):
    """The run's raw text: the file, or the default corpus."""
    return default_corpus() if config.text is None else read_text(config.text)


def load_corpus(config, vocab=None, text=None):
    """The run's TextCorpus: the text (read if not given), preprocessed and tokenized."""
    text = read_corpus_text(config) if text is None else text
    if config.preprocess == "timemachine":
        text = "".join(timemachine_lines(text)) if config.tokens == "char" else \
            "\n".join(timemachine_lines(text))
    return TextCorpus.from_text(text, config.tokens, config.min_freq, config.val_fraction, vocab,
                                config.max_tokens)


def build_model(config, vocab=None, seed=None):
    """The ``RNNLM`` of a ``ModelConfig`` (with the vocabulary, for text generation)."""
    return RNNLM(vocab_size=config.vocab_size, hidden_size=config.hidden, cell=config.cell,
                 num_layers=config.layers, embedding_dim=config.embedding,
                 dropout=config.dropout, tie_weights=config.tie, dtype=config.dtype, seed=seed,
                 vocab=vocab, token=config.tokens, init=config.init,
                 forget_bias=config.forget_bias, embedding_dropout=config.embedding_dropout,
                 recurrent_dropout=config.recurrent_dropout, zoneout=config.zoneout,
                 weight_drop=config.weight_drop)


def parameter_count(config):
    """The number of parameters of ``build_model(config)``, without building it."""
    V, H, E = config.vocab_size, config.hidden, config.embedding
    inputs = [E or V] + [H] * (config.layers - 1)
    rnn = sum(math.prod(shape) for D in inputs for _, shape in CELLS[config.cell].param_shapes(D, H))
    return V * E + rnn + (0 if config.tie else H * V) + V        # embedding, rnn, decoder


def _check_size(ckpt, config):
    """Refuse a checkpoint whose config would allocate more than its arrays hold (a
    small file must not make the model it describes huge)."""
    held = sum(math.prod(shape) for name, (shape, _) in ckpt.shapes.items()
               if name.startswith("model/"))
    needed = parameter_count(config)
    if needed > held:
        raise CheckpointError(f"checkpoint {ckpt.path} does not match its own settings: its "
                              f"model needs {needed:,} parameters, its arrays hold {held:,}")


def build_optimizer(config, model):
    return OPTIMIZERS[config.optimizer](model, lr=config.lr)


def default_prefix(config, vocab):
    """The prompt of samples when none is set: 'def ' for the default corpus, else the
    most frequent token."""
    if config.prefix:
        return config.prefix
    return "def " if config.text is None else vocab.idx_to_token[min(1, len(vocab) - 1)]


class Trainer(Hooks):
    """Trains ``RNNLM`` on a corpus and keeps ``out_dir/checkpoint.npz`` current.

    ``Trainer(config, out_dir).fit()`` starts a run (refused where a checkpoint is,
    unless ``overwrite``); ``Trainer.resume(out_dir).fit()`` continues one. ``log``
    receives one line per epoch and the samples; ``progress``: True, False or None
    (a bar on a terminal only).
    """

    unit = "tokens"
    collective = True      # data parallel: evaluate and save run on every rank (see below)

    def __init__(self, config, out_dir, log=print, progress=None, overwrite=False, *,
                 world=None, started=None, _resume=None):
        self.world = w = LOCAL if world is None else world
        self.log = log if w.rank == 0 else _quiet         # only rank 0 prints, samples, plots
        self.progress = progress if w.rank == 0 else False
        self.nothing_to_do = False
        # the whole run counts against --minutes: from ``started`` (a perf_counter value)
        self._started = time.perf_counter() if started is None else started
        self.run, ckpt = RunDir.elsewhere(out_dir), None   # rank 0 alone checks and locks it
        corpus = None

        def source():            # rank 0: the folder, the text, the checkpoint, the corpus
            nonlocal ckpt, corpus
            if _resume is None:
                cfg = dataclasses.replace(config)
                if cfg.text is not None:
                    cfg.text = os.path.abspath(cfg.text)      # resumable from any folder
                _check_processes(cfg.validate(), w)
                get_backend(cfg.backend)   # a clear error now if CuPy or a GPU is missing
                text = read_corpus_text(cfg)   # a missing text is found before the folder
                self.run = RunDir.open(out_dir)
            else:
                self.run, ckpt, cfg = _open_checkpoint(out_dir, _resume[1])
            try:
                if ckpt is not None:
                    _check_processes(cfg, w, resumed=True)
                if ckpt is None and not overwrite and os.path.exists(self.run.file(CHECKPOINT)):
                    raise ConfigError("out", f"{self.run.path} already holds a checkpoint: "
                                             f"continue that run with --resume {self.run.path}, "
                                             "or replace it with --overwrite")
                if ckpt is not None:     # the folder is locked: read the text now
                    text = read_corpus_text(cfg)
                digest = text_digest(text)
                if ckpt is not None:
                    self._check_text(cfg, ckpt, digest, _resume[0])
                corpus = load_corpus(cfg, None if ckpt is None else
                                     Vocab.from_tokens_list(ckpt.vocab), text)
                del text
                _check_corpus(cfg, corpus)
            except BaseException:
                self.run.release()
                raise
            return (cfg, digest, corpus.vocab.idx_to_token, corpus.ids.dtype.str,
                    corpus.ids.size)

        # rank 0 tokenises; the others receive the token ids
        self._shared = config, digest, tokens, dtype, size = from_root(w, source)
        try:
            if w.size > 1:
                ids = corpus.ids if w.rank == 0 else np.empty(size, dtype=np.dtype(dtype))
                w.bcast_array(ids)
                if w.rank:
                    corpus = TextCorpus.from_ids(ids, Vocab.from_tokens_list(tokens),
                                                 config.tokens, config.val_fraction)
            all_ok(w, lambda: self._build(config, digest, corpus, ckpt))
            self._share_progress()
        except BaseException:
            self.run.release()
            raise

    def _build(self, config, digest, corpus, ckpt):
        """The model and the optimizer, on every rank; rank 0 restores the checkpoint (the
        others receive its state through ``_share_progress`` and fit)."""
        self.config = config
        get_backend(config.backend)
        if config.backend == "cupy" and self.world.size > 1:
            self.world.use_device()
        self.text_sha256 = digest
        self.corpus = corpus
        self.model_config = config.model_config(len(self.corpus.vocab))
        if ckpt is not None:
            _check_size(ckpt, self.model_config)
        self.model = build_model(self.model_config, self.corpus.vocab,
                                 seed=config.seed).to(config.backend)
        self.model.rnn.bptt_memory = config.bptt_memory     # the same gradients, less memory
        self.optimizer = build_optimizer(config, self.model)
        self.loss_fn = SoftmaxCrossEntropy()
        if ckpt is None:
            self.config.prefix = self.config.prefix or self._corpus_prefix()
            self.state = TrainState(rng=np.random.default_rng([config.seed, 1]))
            self.carried = None
        else:
            self._restore(ckpt)
        self.layout = self._choose_layout(ckpt) if self.world.rank == 0 else None

    def _choose_layout(self, ckpt):
        """The layout of the accelerations' loops for the whole run (rank 0 chooses,
        ``_share_progress`` tells the others): the checkpoint's on resume (the layouts round
        differently, and a resumed run must go on bit for bit; a checkpoint written before
        layouts were chosen ran batch-major), else timed now for this run's rows per
        process (or forced by NPNN_LAYOUT)."""
        if ckpt is not None:
            return ckpt.meta.get("layout") or "batch"
        cfg = self.config
        rows = len(range(cfg.batch)[self.world.rows(cfg.batch)])
        return CELLS[cfg.cell].layout(rows, cfg.hidden, cfg.dtype, get_backend(cfg.backend))

    def _share_progress(self):
        """Rank 0's position, generators and carried state, on every rank; each keeps its
        rows of the carried state (the parameters and the optimizer's buffers are
        broadcast when ``fit`` starts)."""
        w = self.world
        if w.size == 1:
            return
        carried = None if self.carried is None else [to_numpy(a) for a in _states(self.carried)]
        progress, rngs, carried, self.layout = w.bcast((self.state.to_dict(), [
            g.bit_generator.state for g in module_generators(self.model)], carried, self.layout))
        if w.rank:
            self.state = TrainState.from_dict(progress)
            for g, s in zip(module_generators(self.model), rngs):
                g.bit_generator.state = s
        if carried is not None:
            rows = w.rows(self.config.batch)
            carried = [to_backend(np.ascontiguousarray(a[:, rows]), self.config.backend)
                       for a in carried]
            self.carried = tuple(carried) if len(carried) > 1 else carried[0]

    @classmethod
    def resume(cls, out_dir, log=print, progress=None, allow_changed_text=False, *, world=None,
               started=None, **overrides):
        """Continue the run saved in ``out_dir``. ``overrides`` may extend the budget
        (``epochs``, ``minutes``: None for no time limit), change the backend or the
        samples; any other setting must equal the checkpoint's. ``world``: as for a new
        run (the checkpoint may come from any number of processes)."""
        for k in overrides:
            if k not in TrainConfig.__dataclass_fields__:
                raise TypeError(f"unexpected setting {k!r}")
        return cls(None, out_dir, log, progress, world=world, started=started,
                   _resume=(allow_changed_text, overrides))

    def close(self):
        """Release the run folder (``fit`` does when it returns)."""
        self.run.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- set-up ----------------------------------------------------------------

    def _check_text(self, config, ckpt, digest, allow_changed_text):
        stored = ckpt.meta["text_sha256"]
        name = config.text or "the default corpus"
        if stored is None:
            self.log(f"(a format-1 checkpoint: whether {name} changed cannot be checked)")
        elif stored != digest and not allow_changed_text:
            raise ConfigError(None, f"{name} has changed since the run started (its SHA-256 "
                                    "differs from the checkpoint's); resume with "
                                    "--allow-changed-text to train on it as it is now")

    def _restore(self, ckpt):
        self._check_progress(ckpt)
        self.state = TrainState.from_dict(ckpt.meta["progress"])
        carried = ckpt.restore(self.model, self.optimizer, self._state_shapes())
        generators, states = module_generators(self.model), ckpt.meta["module_rngs"]
        if len(generators) != len(states):
            raise CheckpointError(f"checkpoint {ckpt.path} holds {len(states)} generator states, "
                                  f"the model has {len(generators)} generators")
        for g, s in zip(generators, states):
            g.bit_generator.state = s
        carried = [to_backend(a.astype(self.model.dtype), self.config.backend) for a in carried]
        self.carried = None if not carried else (tuple(carried) if len(carried) > 1 else
                                                 carried[0])

    def _check_progress(self, ckpt):
        """Refuse a position that this text's epochs cannot have: a batch beyond the
        epoch, or an optimizer step count that does not fit the position (every batch
        is one step; an epoch has ``num_batches`` batches, or one fewer)."""
        cfg, progress = self.config, ckpt.meta["progress"]
        nb = num_batches(len(self.corpus.train), cfg.batch, cfg.steps,
                         cfg.iterator == "sequential")
        epoch, batch = progress["epoch"], progress["batch"]
        if batch > nb:
            raise CheckpointError(f"checkpoint {ckpt.path} is impossible: it stopped at batch "
                                  f"{batch} of an epoch of {nb} batches")
        steps = ckpt.meta["optimizer"]["step_count"]
        low, high = epoch * max(nb - 1, 0) + batch, epoch * nb + batch
        if not low <= steps <= high:
            raise CheckpointError(f"checkpoint {ckpt.path} is impossible: its optimizer took "
                                  f"{steps} steps, where epoch {epoch} and batch {batch} of "
                                  f"{nb}-batch epochs mean {low} to {high}")

    def _state_shapes(self):
        """Shapes of the carried state: n_states arrays (L, N, H) (the LSTM's h and c)."""
        cfg = self.config
        return [(cfg.layers, cfg.batch, cfg.hidden)] * self.model.rnn.n_states

    def _corpus_prefix(self):
        if self.config.text is None:
            return "def "
        toks = self.corpus.vocab.to_tokens(list(self.corpus.train[:20]))
        return "".join(toks[:10]) if self.config.tokens == "char" else " ".join(toks[:3])

    # -- the run as seen by callers ---------------------------------------------
    out_dir = property(lambda self: self.run.path)
    history = property(lambda self: self.state.history)
    elapsed = property(lambda self: self.state.elapsed)
    epoch = property(lambda self: self.state.epoch)
    batch = property(lambda self: self.state.batch)
    interrupted = property(lambda self: self.state.stopped in ("SIGINT", "SIGTERM", "SIGHUP"))

    def last_evaluation(self):
        """The run's latest evaluation, where it was and what it measured, as one line
        ('at epoch 3, batch 388: train perplexity 3.461, ...' where a time budget stopped
        the run inside an epoch, else 'after epoch 2: ...'); None before any. The
        time-budget line and ``npnn train``'s closing summary both report it."""
        state = self.state
        if state.stopped == "time" and state.batch and state.mid_epoch:
            return (f"at epoch {state.epoch + 1}, batch {state.batch}: "
                    f"{self.describe(state.mid_epoch[-1])}")
        if not state.history:
            return None
        return f"after epoch {state.history[-1]['epoch']}: {self.describe(state.history[-1])}"

    def fit(self):
        """Train until the budget is spent, a signal, or divergence (``Diverged``, after
        which the last checkpoint stays as it was); returns the history."""
        cfg, state = self.config, self.state
        if cfg.epochs is not None and state.epoch >= cfg.epochs:
            self.nothing_to_do = True
            self.log(f"nothing left to do: the run in {self.out_dir} has done its {state.epoch} "
                     f"epochs; give a larger --epochs to continue it")
            self.close()
            return self.history
        if self.world.rank == 0:
            self.run.acquire()
        minutes = cfg.minutes
        if minutes is not None:      # the set-up (reading, tokenising) counts against it
            if self.world.rank == 0:
                plot_available()     # and so does importing matplotlib for the closing plot
            end = self._started + 60.0 * minutes
            self._eval_deadline = end + 60.0 * minutes * EVAL_GRACE
            left = end - 60.0 * minutes * TRAIN_RESERVE - time.perf_counter()
            minutes = max(left / 60.0, 1e-9)
        try:
            with use_layout(self.layout):       # the run's layout, kept for its whole life
                fit(self.model, self.loss_fn, self._batches, self.optimizer, epochs=cfg.epochs,
                    minutes=minutes, clip=cfg.clip, state=state, hooks=self, step=self._step,
                    log=self.log, progress=self.progress, world=self.world)
        finally:
            self.close()
        resume = f"continue with `npnn train --resume {self.out_dir}`"
        if state.stopped == "SIGINT":
            self.log(f"interrupted: checkpoint saved in {self.out_dir}; {resume}")
        elif state.stopped in ("SIGTERM", "SIGHUP"):
            self.log(f"stopped by {state.stopped}: checkpoint saved in {self.out_dir}; {resume}")
        elif state.stopped == "time":
            self.log(f"time budget of {cfg.minutes:g} min reached {self.last_evaluation()}; "
                     f"checkpoint in {self.out_dir}")
        return self.history

    # -- the Hooks of npnn.fit ---------------------------------------------------
    def begin(self, state):
        cfg = self.config
        where = f"; resuming at {_position(state)}" if state.epoch or state.batch else ""
        corpus = self.corpus
        self.log(f"npnn {__version__}: {cfg.cell.upper()} H={cfg.hidden} x{cfg.layers}, "
                 f"{self.model.num_parameters():,} parameters, vocabulary {len(corpus.vocab)}, "
                 f"{len(corpus.train):,} training / {len(corpus.val):,} validation tokens, "
                 f"{cfg.backend}{_processes(self.world, cfg.batch)}{where}")

    def start_epoch(self, state):
        self.carried = None

    def evaluate(self, state, record):
        metrics = {"train_ppl": perplexity(record["train_loss"])}
        if len(self.corpus.val) >= 2:
            val = self.validation_perplexity(deadline=getattr(self, "_eval_deadline", None))
            if val is not None:
                metrics["val_ppl"] = val
        if "items_per_s" in record:
            metrics["tokens_per_s"] = record["items_per_s"]
        return metrics

    def describe(self, record):
        train_ppl = record.get("train_ppl", perplexity(record["train_loss"]))
        parts = [f"train perplexity {train_ppl:.3f}"]
        if "val_ppl" in record:
            parts.append(f"validation perplexity {record['val_ppl']:.3f}")
        if "tokens_per_s" in record:
            parts.append(f"{record['tokens_per_s']:,.0f} tokens/s")
        return ", ".join(parts)

    def postfix(self, loss):
        return {"ppl": f"{math.exp(min(loss, 700.0)):.2f}"}

    def end_epoch(self, state, record):
        # after the first epoch (a short run shows one), then every ``sample_every``
        if (state.epoch == 1 or state.epoch % self.config.sample_every == 0) and \
                self.world.rank == 0:
            self.log("sample: " + self.sample())

    def save(self, state=None):
        """Write the checkpoint atomically (and the history plot); CheckpointWriteError
        (an OSError) if it cannot be written, the previous one then being intact. Data
        parallel: rank 0 writes, the carried state's rows gathered from every rank in
        rank order (the one-process layout), and every rank raises if it failed."""
        carried = [] if self.carried is None else [to_numpy(a) for a in _states(self.carried)]
        parts = self.world.gather(carried)

        def write():
            full = [np.concatenate([p[i] for p in parts], axis=1) for i in range(len(carried))]
            meta = {"model": dataclasses.asdict(self.model_config),
                    "vocab": self.corpus.vocab.idx_to_token, "run": self.config.run_settings(),
                    "text_sha256": self.text_sha256, "progress": self.state.to_dict(),
                    "module_rngs": [g.bit_generator.state
                                    for g in module_generators(self.model)],
                    "layout": self.layout}
            write_checkpoint(self.run.file(CHECKPOINT), meta, self.model, self.optimizer, full)
            self._plot()
            return True
        return from_root(self.world, write)

    # -- the language model's step, evaluation and samples -------------------------
    def _batches(self, rng):
        cfg = self.config
        sequential = cfg.iterator == "sequential"
        it = seq_data_iter_sequential if sequential else seq_data_iter_random
        batches = it(self.corpus.train, cfg.batch, cfg.steps, rng)
        if self.world.size > 1:           # every rank draws the global batch, keeps its rows
            rows = self.world.rows(cfg.batch)
            batches = ((X[rows], Y[rows]) for X, Y in batches)
        return _Sized(batches, num_batches(len(self.corpus.train), cfg.batch, cfg.steps,
                                           sequential))

    def _step(self, batch):
        X, Y = batch
        state = None if self.config.iterator == "random" else self.carried
        loss, self.carried = self.train_step(X, Y, state)
        return loss, float(Y.size)

    def train_step(self, X, Y, state):
        """Forward, loss and backward of one batch (``fit`` clips and updates);
        returns (mean loss, the state to carry)."""
        logits, state = self.model(X, state)
        loss = self.loss_fn(logits, Y)          # host targets: checked there, copied once
        self.model.backward(self.loss_fn.backward())
        return float(loss), state

    def validation_perplexity(self, ids=None, deadline=None):
        """Perplexity on ``ids`` (default: the validation text), no dropout.

        The text is cut into pieces of ``VAL_PIECE_STEPS`` x steps tokens, each read in
        chunks of ``steps`` with the state carried (and reset at the piece's start);
        rank r reads pieces r, r + P, ... as the rows of one batch, and the pieces'
        log-likelihoods are summed over the ranks (each piece's by one rank: exactly).
        The perplexity is thus the same on any number of processes. With ``deadline`` (a
        ``time.perf_counter()`` value: a run's time budget) no piece is started after
        it: the perplexity is then of the pieces read, None if none was."""
        ids = self.corpus.val if ids is None else ids
        n, w = len(ids) - 1, self.world              # n: the tokens predicted
        if n < 1:
            return float("nan")
        length = VAL_PIECE_STEPS * self.config.steps
        pieces = -(-n // length)
        sums = np.zeros(2 * pieces)            # (pieces,) log-likelihoods, (pieces,) tokens read
        nll, read = sums[:pieces], sums[pieces:]
        mine = list(range(w.rank, pieces, w.size))
        whole = [i for i in mine if (i + 1) * length <= n]
        late = lambda: deadline is not None and time.perf_counter() > deadline   # noqa: E731
        was = self.model.training
        self.model.eval()
        try:
            with no_grad():
                for k in range(0, len(whole), self.config.batch):
                    if late():
                        break
                    group = whole[k:k + self.config.batch]
                    nll[group] = self._piece_nll(ids, [i * length for i in group], length)
                    read[group] = length
                if pieces - 1 in mine and pieces - 1 not in whole and not late():
                    start = (pieces - 1) * length                         # the short last one
                    nll[-1] = self._piece_nll(ids, [start], n - start)[0]
                    read[-1] = n - start
        finally:
            self.model.train(was)
        w.allreduce(sums)
        tokens = float(np.sum(read))
        if tokens == 0:
            return None if deadline is not None else float("nan")
        return perplexity(float(np.sum(nll)) / (n if tokens == n else tokens))

    def _piece_nll(self, ids, starts, length):
        """The summed negative log-likelihood of each piece ``ids[s:s + length + 1]``
        (predicting its last ``length`` tokens), the pieces as rows of one batch."""
        T = self.config.steps
        X = np.stack([ids[s:s + length] for s in starts]).astype(np.int64)   # (rows, length)
        Y = np.stack([ids[s + 1:s + 1 + length] for s in starts]).astype(np.int64)
        sums, state = 0.0, None
        for t in range(0, length, T):
            logits, state = self.model(X[:, t:t + T], state)                # (rows, T, V)
            loss, _ = softmax_cross_entropy(logits, Y[:, t:t + T], reduction="none")
            sums = sums + loss.astype(np.float64).sum(axis=1)   # (rows,), where the logits are
        return to_numpy(sums)           # one device-to-host read per group of pieces

    def sample(self, n=None, strategy="sample", seed=0):
        return self.model.generate(default_prefix(self.config, self.corpus.vocab),
                                   n or self.config.sample_length, strategy=strategy,
                                   temperature=0.8, seed=seed)

    def _plot(self):
        """history.png: every evaluation (each epoch's, and where a time budget stopped
        one); a failure is reported, never raised."""
        cfg = self.config
        try:
            points = sorted(self.state.history + self.state.mid_epoch, key=lambda r: r["epoch"])
            if not points:
                return
            xs = [r["epoch"] for r in points]
            curves = {"train": (xs, [r["train_ppl"] for r in points])}
            if all("val_ppl" in r for r in points):
                curves["validation"] = (xs, [r["val_ppl"] for r in points])
            drawn = plot_curves(self.run.file("history.png"), curves, "epoch", "perplexity",
                                f"{cfg.cell.upper()} H={cfg.hidden}", logy=True)
            if drawn is None and not getattr(self, "_said_no_plot", False):
                self._said_no_plot = True          # once a run
                self.log('(matplotlib not installed: no history.png; pip install -e ".[plot]")')
        except Exception as e:
            self.log(f"could not draw history.png ({type(e).__name__}: {e}); training goes on")


def _check_corpus(cfg, corpus):
    """The training text must fill a batch, and hold two different tokens of the
    vocabulary (one alone is predicted with certainty: nothing to learn)."""
    n = len(corpus.train)
    if n < cfg.batch * cfg.steps + cfg.steps + 1:
        raise ValueError(f"the training text has {n} tokens, too few for batch {cfg.batch} "
                         f"x steps {cfg.steps}; use a longer text or smaller --batch/--steps")
    first = corpus.train[0]
    present = 1 + any(np.any(corpus.train[i:i + 2 ** 20] != first)    # a copy of 1 MB at most
                      for i in range(0, n, 2 ** 20))
    if present < 2:
        only = corpus.vocab.idx_to_token[int(corpus.train[0])]
        raise ConfigError("min_freq" if cfg.min_freq > 1 else None,
                          f"the training text is one token repeated ({only!r}, with a "
                          f"vocabulary of {len(corpus.vocab)}): nothing to learn"
                          + ("; lower --min-freq" if cfg.min_freq > 1 else ""))


def _open_checkpoint(out_dir, overrides):
    """Lock the run folder and read its checkpoint: (RunDir, Checkpoint, the run's
    TrainConfig with ``overrides`` applied); every problem a one-line error."""
    path = os.path.join(os.fspath(out_dir), CHECKPOINT)
    if not os.path.isdir(out_dir):
        raise CheckpointError(f"no checkpoint at {path}")
    run = RunDir.open(out_dir, "resume")     # the lock first: nobody writes while we read
    try:
        if not os.path.isfile(path):
            raise CheckpointError(f"no checkpoint at {path}")
        ckpt = read_checkpoint(run.file(CHECKPOINT))
        config = ckpt.config
        for k, v in overrides.items():
            if k in RESUMABLE:
                setattr(config, k, v)
            elif k == "text" and v is not None and config.text is not None and \
                    os.path.abspath(v) == os.path.abspath(config.text):
                continue
            elif getattr(config, k) != v:
                raise CheckpointError(
                    f"--{k.replace('_', '-')} {v} differs from the checkpoint's "
                    f"{getattr(config, k)!r}; a resumed run keeps its settings (only "
                    f"{', '.join('--' + r.replace('_', '-') for r in RESUMABLE)} can "
                    "change)")
        done = ckpt.meta["progress"]["epoch"]
        if config.epochs is not None and config.epochs < done:
            raise ConfigError("epochs", f"{config.epochs} is below the {done} epochs this "
                                        f"run has done; give {done + 1} or more to continue it")
        return run, ckpt, config.validate()
    except BaseException:
        run.release()
        raise


def _check_processes(config, world, resumed=False):
    """The global batch must split evenly over the processes (never silently changed:
    nor the batch, nor the learning rate)."""
    if config.batch % world.size == 0:
        return
    if resumed:
        raise ConfigError(None, f"this run's --batch {config.batch} does not split evenly over "
                                f"{world.size} processes; resume it on a number of processes "
                                f"that divides {config.batch}")
    raise ConfigError("batch", f"expected a multiple of the {world.size} processes (each takes "
                               f"an equal share of the global batch), got {config.batch}")


def _states(carried):
    """The carried state as a list of arrays (one per state: the LSTM's h and c)."""
    return list(carried) if isinstance(carried, tuple) else [carried]


def _quiet(*_):
    pass


class _Sized:
    """An iterable with a known length (the progress bar's total)."""

    def __init__(self, iterable, n):
        self.iterable, self.n = iterable, n

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self):
        return self.n


def _processes(world, batch):
    if world.size == 1:
        return ""
    return f", {world.size} processes x {batch // world.size} rows"


def _position(state):
    return (f"epoch {state.epoch + 1}, batch {state.batch}" if state.batch else
            f"epoch {state.epoch + 1}")


def load_model(checkpoint, backend="numpy"):
    """The trained model of a run folder, a checkpoint file or a ``Checkpoint``, with its
    vocabulary, for generation."""
    ckpt = checkpoint if hasattr(checkpoint, "restore") else read_checkpoint(checkpoint)
    _check_size(ckpt, ckpt.model_config)
    model = build_model(ckpt.model_config, Vocab.from_tokens_list(ckpt.vocab))
    ckpt.restore(model)
    return model.to(backend)
