"""Training a language model: truncated BPTT, checkpoints that resume exactly.

One training step is d2l's ``train_epoch_ch8`` step:

    logits, state = model(X, state)          state carried between sequential batches
    loss = cross_entropy(logits, Y)          mean over the N*T tokens
    model.backward(dloss); clip_grad_norm(model, clip); optimizer.step()

A checkpoint (``DIR/checkpoint.npz``, written atomically: temp file + rename)
holds the model, the optimizer's buffers, the vocabulary, the generators of
the data order and of dropout, the carried recurrent state, the position
(epoch and batch) and the history. Because an epoch's batches are a function
of the data generator's state at the epoch's start, a run resumed from any
checkpoint, even one written in the middle of an epoch by Ctrl-C or a time
budget, continues bit for bit as if it had never stopped.
"""

import dataclasses
import json
import math
import os
import signal
import time
from typing import Optional

import numpy as np

from . import __version__
from .backend import backend_name, get_array_module, get_backend, to_backend, to_numpy
from .functional import softmax_cross_entropy
from .data import (TextCorpus, Vocab, default_corpus, read_text, seq_data_iter_random,
                   seq_data_iter_sequential, timemachine_lines, num_batches)
from .layers import SoftmaxCrossEntropy, no_grad
from .layers.base import atomic_savez
from .models import RNNLM
from .optim import OPTIMIZERS, clip_grad_norm, perplexity

CHECKPOINT = "checkpoint.npz"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not matching."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run. Defaults: the README's main command."""
    text: Optional[str] = None          # a UTF-8 file, or None for the default corpus
    preprocess: str = "none"            # 'none' or 'timemachine' (d2l: letters and space)
    tokens: str = "char"                # 'char' or 'word'
    min_freq: int = 0
    max_tokens: Optional[int] = None    # keep only the first tokens (d2l: 10,000)
    val_fraction: float = 0.05
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embedding: int = 64                 # 0: one-hot inputs (d2l)
    dropout: float = 0.0
    tie: bool = False
    batch: int = 32
    steps: int = 64
    iterator: str = "sequential"        # or 'random' (d2l's two schemes)
    epochs: Optional[int] = None
    minutes: Optional[float] = 3.0
    optimizer: str = "adam"
    lr: float = 2e-3
    clip: Optional[float] = 1.0
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"
    sample_every: int = 5               # epochs
    sample_length: int = 200
    prefix: Optional[str] = None        # prompt of the samples; default from the corpus

    def validate(self):
        choices = {"preprocess": ("none", "timemachine"), "tokens": ("char", "word"),
                   "cell": ("rnn", "lstm", "gru"), "iterator": ("sequential", "random"),
                   "optimizer": tuple(OPTIMIZERS), "dtype": ("float32", "float64"),
                   "backend": ("numpy", "cupy")}
        for name, options in choices.items():
            if getattr(self, name) not in options:
                raise ValueError(f"expected {name} to be one of {', '.join(options)}, "
                                 f"got {getattr(self, name)!r}")
        for name in ("hidden", "layers", "batch", "steps", "sample_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"expected {name} to be a positive integer, got "
                                 f"{getattr(self, name)!r}")
        if self.epochs is None and self.minutes is None:
            raise ValueError("expected a budget: epochs or minutes (or both)")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"expected epochs >= 1, got {self.epochs}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"expected minutes > 0, got {self.minutes}")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"expected clip > 0 (or None for no clipping), got {self.clip}")
        return self


def load_corpus(config, vocab=None):
    """The run's TextCorpus: the file or the default corpus, preprocessed and tokenized."""
    text = default_corpus() if config.text is None else read_text(config.text)
    if config.preprocess == "timemachine":
        text = "".join(timemachine_lines(text)) if config.tokens == "char" else \
            "\n".join(timemachine_lines(text))
    return TextCorpus.from_text(text, config.tokens, config.min_freq, config.val_fraction, vocab,
                                config.max_tokens)


def build_model(config, vocab):
    return RNNLM(len(vocab), config.hidden, config.cell, config.layers, config.embedding,
                 config.dropout, config.tie, dtype=config.dtype, seed=config.seed,
                 vocab=vocab, token=config.tokens)


def build_optimizer(config, model):
    return OPTIMIZERS[config.optimizer](model, lr=config.lr)


class Trainer:
    """Trains ``RNNLM`` on a corpus and keeps ``out_dir/checkpoint.npz`` current.

    ``Trainer(config, out_dir).fit()`` starts a run; ``Trainer.resume(out_dir).fit()``
    continues one. ``log`` receives one line per epoch and the samples.
    """

    def __init__(self, config, out_dir, log=print, progress=None):
        self.config = config.validate()
        self.out_dir = os.fspath(out_dir)
        self.log, self.progress = log, progress
        get_backend(config.backend)  # a clear error now if CuPy or a GPU is missing
        self.corpus = load_corpus(config)
        self._setup(self.corpus.vocab)
        self.data_rng = np.random.default_rng([config.seed, 1])
        self.epoch, self.batch = 0, 0            # position: next batch to run
        self.epoch_rng_state = None               # data generator at the current epoch's start
        self.carried = None                       # recurrent state carried to the next batch
        self.totals = [0.0, 0]                    # current epoch's summed NLL and tokens
        self.history = []                         # one dict per completed epoch
        self.elapsed = 0.0                        # seconds of training so far, over all sessions

    def _setup(self, vocab):
        self.model = build_model(self.config, vocab).to(self.config.backend)
        self.optimizer = build_optimizer(self.config, self.model)
        self.loss_fn = SoftmaxCrossEntropy()
        if len(self.corpus.train) < self.config.batch * self.config.steps + self.config.steps + 1:
            raise ValueError(
                f"the training text has {len(self.corpus.train)} tokens, too few for batch "
                f"{self.config.batch} x steps {self.config.steps}; use a longer text or smaller "
                "--batch/--steps")

    # -- the loop ------------------------------------------------------------
    def _iterator(self):
        it = seq_data_iter_sequential if self.config.iterator == "sequential" else \
            seq_data_iter_random
        return it(self.corpus.train, self.config.batch, self.config.steps, self.data_rng)

    def train_step(self, X, Y, state):
        """One truncated-BPTT step; returns (mean loss, new state)."""
        logits, state = self.model(X, state)
        xp = get_array_module(logits)
        loss = self.loss_fn(logits, to_backend(Y, backend_name(xp)))
        self.model.zero_grad()
        self.model.backward(self.loss_fn.backward())
        if self.config.clip:
            clip_grad_norm(self.model, self.config.clip)
        self.optimizer.step()
        return float(loss), state

    def evaluate(self, ids=None):
        """Perplexity on ``ids`` (default: the validation text), state carried over
        consecutive chunks of one long stream, no dropout."""
        ids = self.corpus.val if ids is None else ids
        if len(ids) < 2:
            return float("nan")
        was = self.model.training
        self.model.eval()
        nll, count, state = 0.0, 0, None
        T = self.config.steps
        with no_grad():
            for i in range(0, len(ids) - 1, T):
                X = ids[i:i + T][None]
                Y = ids[i + 1:i + 1 + T][None]
                X = X[:, :Y.shape[1]]
                logits, state = self.model(X, state)
                xp = get_array_module(logits)
                loss, _ = _ce_sum(logits, to_backend(Y, backend_name(xp)))
                nll += loss
                count += Y.size
        self.model.train(was)
        return perplexity(nll / count)

    def sample(self, n=None, strategy="sample", seed=0):
        prefix = self.config.prefix or self._default_prefix()
        return self.model.generate(prefix, n or self.config.sample_length, strategy=strategy,
                                   temperature=0.8, seed=seed)

    def _default_prefix(self):
        if self.config.text is None:
            return "def "
        toks = self.corpus.vocab.to_tokens(list(self.corpus.train[:20]))
        return "".join(toks[:10]) if self.config.tokens == "char" else " ".join(toks[:3])

    def fit(self):
        """Train until the budget is spent; returns the history. Ctrl-C saves and returns."""
        cfg = self.config
        session = time.perf_counter()
        start = session - self.elapsed              # elapsed counts over all sessions
        deadline = None if cfg.minutes is None else session + 60.0 * cfg.minutes
        per_epoch = num_batches(len(self.corpus.train), cfg.batch, cfg.steps,
                                cfg.iterator == "sequential")
        self.log(f"npnn {__version__}: {cfg.cell.upper()} H={cfg.hidden} x{cfg.layers}, "
                 f"{self.model.num_parameters():,} parameters, vocabulary {len(self.corpus.vocab)}, "
                 f"{len(self.corpus.train):,} training / {len(self.corpus.val):,} validation tokens, "
                 f"{cfg.backend}")
        interrupted, out_of_time = False, False
        stop = _StopOnSigint()      # Ctrl-C ends the run *between* steps, never inside one
        try:
            while cfg.epochs is None or self.epoch < cfg.epochs:
                if self.epoch_rng_state is None:
                    self.epoch_rng_state = self.data_rng.bit_generator.state
                else:  # resuming inside an epoch: replay its generator, skip done batches
                    self.data_rng.bit_generator.state = self.epoch_rng_state
                bar = _progress(per_epoch, f"epoch {self.epoch + 1}", self.progress)
                t0, tokens0 = time.perf_counter(), self.totals[1]
                for b, (X, Y) in enumerate(self._iterator()):
                    if b < self.batch:
                        continue
                    state = None if cfg.iterator == "random" else self.carried
                    loss, state = self.train_step(X, Y, state)
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"the loss became {loss} at epoch "
                                                 f"{self.epoch + 1}, batch {b + 1}; try a "
                                                 "smaller --lr or --clip")
                    self.carried = state
                    self.batch = b + 1
                    self.totals[0] += loss * Y.size
                    self.totals[1] += Y.size
                    self.elapsed = time.perf_counter() - start
                    if bar is not None:
                        rate = (self.totals[1] - tokens0) / max(time.perf_counter() - t0, 1e-9)
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{math.exp(loss):.2f}",
                                        tok_s=f"{rate:,.0f}")
                    if stop.requested:
                        raise KeyboardInterrupt
                    if deadline is not None and time.perf_counter() >= deadline:
                        out_of_time = True
                        break
                if bar is not None:
                    bar.close()
                if out_of_time:
                    break
                self._end_epoch(time.perf_counter() - t0, self.totals[1] - tokens0)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stop.restore()
        self.elapsed = time.perf_counter() - start
        self.save()
        if interrupted:
            self.log(f"interrupted: checkpoint saved in {self.out_dir}; continue with "
                     f"`npnn train --resume {self.out_dir}`")
        elif out_of_time:
            self.log(f"time budget of {cfg.minutes:g} min reached at epoch {self.epoch + 1}, "
                     f"batch {self.batch}: validation perplexity {self.evaluate():.3f}; "
                     f"checkpoint in {self.out_dir}")
        self.interrupted = interrupted
        return self.history

    def _end_epoch(self, seconds, tokens):
        train_ppl = perplexity(self.totals[0] / max(self.totals[1], 1))
        val_ppl = self.evaluate()
        self.history.append({"epoch": self.epoch + 1, "train_ppl": train_ppl,
                             "val_ppl": val_ppl, "tokens_per_s": tokens / max(seconds, 1e-9),
                             "elapsed_s": self.elapsed})
        self.epoch, self.batch = self.epoch + 1, 0
        self.epoch_rng_state, self.carried, self.totals = None, None, [0.0, 0]
        val = "" if math.isnan(val_ppl) else f", validation {val_ppl:.3f}"
        self.log(f"epoch {self.epoch}: train perplexity {train_ppl:.3f}{val}, "
                 f"{tokens / max(seconds, 1e-9):,.0f} tokens/s")
        if self.epoch % self.config.sample_every == 0:
            self.log("sample: " + self.sample())
        self.save()
        self._plot()

    # -- checkpoints ---------------------------------------------------------
    def save(self):
        """Write the checkpoint atomically."""
        os.makedirs(self.out_dir, exist_ok=True)
        opt = self.optimizer.state_dict()
        carried = [] if self.carried is None else (
            list(self.carried) if isinstance(self.carried, tuple) else [self.carried])
        meta = {"format": FORMAT, "npnn": __version__, "config": dataclasses.asdict(self.config),
                "vocab": self.corpus.vocab.idx_to_token, "epoch": self.epoch,
                "batch": self.batch, "epoch_rng_state": self.epoch_rng_state,
                "data_rng_state": self.data_rng.bit_generator.state,
                "model_rng_state": self.model.rng.bit_generator.state,
                "carried": len(carried), "totals": self.totals, "history": self.history,
                "elapsed": self.elapsed, "optimizer": {"step_count": opt["step_count"],
                                                       "lr": opt["lr"]}}
        arrays = {"meta": np.array(json.dumps(meta))}
        arrays.update({f"param/{k}": to_numpy(v) for k, v in self.model.state_dict().items()})
        for i, s in enumerate(opt["state"]):
            arrays.update({f"optim/{i}/{k}": v for k, v in s.items()})
        arrays.update({f"state/{i}": to_numpy(s) for i, s in enumerate(carried)})
        atomic_savez(os.path.join(self.out_dir, CHECKPOINT), arrays)

    @classmethod
    def resume(cls, out_dir, log=print, progress=None, **overrides):
        """Continue the run saved in ``out_dir``; ``overrides`` may extend the budget
        (epochs, minutes) or change the backend."""
        meta, arrays = read_checkpoint(out_dir)
        config = TrainConfig(**meta["config"])
        allowed = {"epochs", "minutes", "backend", "sample_every", "sample_length", "prefix"}
        for k, v in overrides.items():
            if v is None:
                continue
            if k not in allowed:
                if getattr(config, k) != v:
                    raise CheckpointError(f"--{k} {v} differs from the checkpoint's "
                                          f"{getattr(config, k)!r}; a resumed run keeps its "
                                          "settings (only the budget and backend can change)")
                continue
            setattr(config, k, v)
        self = cls.__new__(cls)
        self.config, self.out_dir, self.log, self.progress = config.validate(), \
            os.fspath(out_dir), log, progress
        vocab = Vocab.from_tokens_list(meta["vocab"])
        self.corpus = load_corpus(config, vocab)
        self._setup(vocab)
        try:
            self.model.load_state_dict({k[6:]: v for k, v in arrays.items()
                                        if k.startswith("param/")})
            n = len(self.optimizer.pairs)
            self.optimizer.load_state_dict({
                "step_count": meta["optimizer"]["step_count"], "lr": meta["optimizer"]["lr"],
                "state": [{k.split("/")[2]: v for k, v in arrays.items()
                           if k.startswith(f"optim/{i}/")} for i in range(n)]})
        except ValueError as e:
            raise CheckpointError(f"checkpoint in {out_dir} does not match its own settings: "
                                  f"{e}") from None
        self.data_rng = np.random.default_rng()
        self.data_rng.bit_generator.state = meta["data_rng_state"]
        self.model.rng.bit_generator.state = meta["model_rng_state"]
        self.epoch, self.batch = meta["epoch"], meta["batch"]
        self.epoch_rng_state = meta["epoch_rng_state"]
        carried = [to_backend(arrays[f"state/{i}"], config.backend) for i in range(meta["carried"])]
        self.carried = None if not carried else (tuple(carried) if len(carried) > 1 else carried[0])
        self.totals, self.history, self.elapsed = meta["totals"], meta["history"], meta["elapsed"]
        return self

    def _plot(self):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        epochs = [h["epoch"] for h in self.history]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [h["train_ppl"] for h in self.history], label="train")
        ax.plot(epochs, [h["val_ppl"] for h in self.history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("perplexity")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"{self.config.cell.upper()} H={self.config.hidden}")
        fig.tight_layout()
        tmp = os.path.join(self.out_dir, ".history.png.tmp")
        fig.savefig(tmp, format="png")
        plt.close(fig)
        os.replace(tmp, os.path.join(self.out_dir, "history.png"))


class _StopOnSigint:
    """While training, SIGINT (Ctrl-C) only sets ``requested``; the loop checks it after
    each step, so a checkpoint never holds a half-applied update. Outside the main
    thread no handler can be installed and Ctrl-C interrupts as usual."""

    def __init__(self):
        self.requested = False
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:       # not the main thread
            self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _ce_sum(logits, Y):
    loss, cache = softmax_cross_entropy(logits, Y, reduction="sum")
    return float(loss), cache


def _progress(total, desc, enabled):
    """A tqdm bar, or None when disabled (``enabled`` None: only on a terminal)."""
    if enabled is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, disable=None if enabled is None else False,
                dynamic_ncols=True)


def read_checkpoint(out_dir):
    """(meta, arrays) of ``out_dir/checkpoint.npz``; ``CheckpointError`` if unusable."""
    path = os.path.join(os.fspath(out_dir), CHECKPOINT)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as e:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or incomplete "
                              f"({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}, "
                              f"this npnn reads format {FORMAT}")
    return meta, arrays


def load_model(out_dir, backend="numpy"):
    """The trained model of a run directory (with its vocabulary), for generation."""
    meta, arrays = read_checkpoint(out_dir)
    config = TrainConfig(**meta["config"])
    vocab = Vocab.from_tokens_list(meta["vocab"])
    model = build_model(config, vocab)
    try:
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("param/")})
    except ValueError as e:
        raise CheckpointError(f"checkpoint in {out_dir} does not match its own settings: "
                              f"{e}") from None
    return model.to(backend)
