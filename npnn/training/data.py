"""Text for language models: tokenizers, vocabulary, corpora, d2l's minibatch schemes.

The pipeline of d2l's chapter 8, with its semantics kept:

    text -> lines -> tokenize(lines, 'char' | 'word') -> Vocab -> corpus (token ids)
         -> seq_data_iter_random / seq_data_iter_sequential -> (X, Y) minibatches

X and Y are (N, T) integer arrays (batch-major, as in d2l), Y being X shifted
by one token. Both iterators take a ``numpy.random.Generator``, so an epoch's
batches are a function of the generator's state: reproducible, and resumable.

``default_corpus()`` is the corpus used when no file is given: a fixed list of
modules from the Python standard library's own source (``DEFAULT_CORPUS_FILES``),
present wherever CPython is installed, so a model learns to write Python-like
text without any download (in the spirit of char-rnn on the Linux source). The
exact text follows the installed Python version.
"""

import collections
import os
import re
import sysconfig

import numpy as np

from .._checks import check_choice, check_positive_int

#: How text becomes tokens: characters or whitespace-separated words.
TOKEN_MODES = ("char", "word")

#: Standard-library modules that make up the default corpus (about 1.3 MB on CPython 3.11;
#: a module missing from another version is skipped).
DEFAULT_CORPUS_FILES = (
    "textwrap.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py", "shlex.py",
    "string.py", "colorsys.py", "queue.py", "sched.py", "contextlib.py", "functools.py",
    "difflib.py", "argparse.py", "dataclasses.py", "enum.py", "fractions.py", "statistics.py",
    "calendar.py", "threading.py", "subprocess.py", "tarfile.py", "pathlib.py", "inspect.py",
    "typing.py", "collections/__init__.py", "logging/__init__.py", "json/decoder.py",
    "json/encoder.py",
)


# -- reading text ------------------------------------------------------------
def read_text(path):
    """Read a UTF-8 text file; clear errors for a missing, empty or non-UTF-8 file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"expected a text file, got a directory: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file is not valid UTF-8: {path} (byte {e.start}: "
                         f"{raw[e.start:e.start + 1]!r})") from None
    if not text.strip():
        raise ValueError(f"corpus file is empty: {path}")
    return text


def default_corpus():
    """The embedded default corpus: ``DEFAULT_CORPUS_FILES`` of this Python's stdlib."""
    folder = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in DEFAULT_CORPUS_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            parts.append(read_text(path))
    if not parts:
        raise FileNotFoundError(
            f"the default corpus needs the Python standard library's sources in {folder}, "
            "and none were found (a stripped installation?); pass a text file with --text")
    return "\n".join(parts)


def timemachine_lines(text):
    """d2l's preprocessing of *The Time Machine*: keep letters, lower-case, one
    space for every run of other characters; one string per line."""
    return [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text.splitlines()]


# -- tokens and vocabulary ---------------------------------------------------
def tokenize(lines, token="char"):
    """Split each line into characters ('char') or whitespace-separated words ('word')."""
    check_choice("token", token, TOKEN_MODES)
    if isinstance(lines, str):
        raise TypeError("expected a list of lines, got a single str; use text.splitlines()")
    return [list(line) if token == "char" else line.split() for line in lines]


def _flatten_tokens(tokens):
    if tokens and isinstance(tokens[0], (list, tuple)):
        return [t for line in tokens for t in line]
    return list(tokens)


class Vocab:
    """Token <-> index map. Index 0 is ``<unk>``, then the reserved tokens, then every
    token with frequency >= ``min_freq``, most frequent first, ties alphabetically."""

    def __init__(self, tokens=(), min_freq=0, reserved_tokens=()):
        counter = collections.Counter(_flatten_tokens(list(tokens)))
        self.token_freqs = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        self.idx_to_token = ["<unk>"] + [t for t in reserved_tokens if t != "<unk>"]
        seen = set(self.idx_to_token)
        for token, freq in self.token_freqs:
            if freq < min_freq:
                break
            if token not in seen:
                self.idx_to_token.append(token)
                seen.add(token)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}

    @classmethod
    def from_tokens_list(cls, idx_to_token):
        """Rebuild a vocabulary from its ``idx_to_token`` list (e.g. from a checkpoint)."""
        vocab = cls.__new__(cls)
        vocab.token_freqs = []
        vocab.idx_to_token = list(idx_to_token)
        vocab.token_to_idx = {t: i for i, t in enumerate(vocab.idx_to_token)}
        return vocab

    def __len__(self):
        return len(self.idx_to_token)

    @property
    def unk(self):
        return 0

    def __getitem__(self, tokens):
        if isinstance(tokens, (list, tuple)):
            return [self.__getitem__(t) for t in tokens]
        return self.token_to_idx.get(tokens, self.unk)

    def to_tokens(self, indices):
        if isinstance(indices, (list, tuple, np.ndarray)):
            return [self.idx_to_token[int(i)] for i in indices]
        return self.idx_to_token[int(indices)]

    def __repr__(self):
        return f"Vocab({len(self)} tokens: {self.idx_to_token[:8]}...)"


# -- minibatches -------------------------------------------------------------
def _check_batching(corpus, batch_size, num_steps):
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_steps", num_steps)
    corpus = np.asarray(corpus)
    if corpus.ndim != 1 or corpus.dtype.kind not in "iu":
        raise TypeError(f"expected corpus to be a 1-D sequence of token ids, got "
                        f"shape {corpus.shape} of dtype {corpus.dtype}")
    needed = batch_size * num_steps + num_steps + 1
    if corpus.size < needed:
        raise ValueError(f"expected a corpus of at least {needed} tokens for batch_size "
                         f"{batch_size} x num_steps {num_steps}, got {corpus.size}")
    return corpus


def seq_data_iter_random(corpus, batch_size, num_steps, rng):
    """Random sampling (d2l): subsequences of ``num_steps`` from a random offset in
    [0, num_steps - 1], shuffled; neighbouring batches are not contiguous."""
    corpus = _check_batching(corpus, batch_size, num_steps)
    corpus = corpus[int(rng.integers(0, num_steps)):]
    num_subseqs = (corpus.size - 1) // num_steps
    starts = np.arange(0, num_subseqs * num_steps, num_steps)
    rng.shuffle(starts)
    offsets = np.arange(num_steps)
    for i in range(0, (num_subseqs // batch_size) * batch_size, batch_size):
        idx = starts[i:i + batch_size, None] + offsets                  # (N, T)
        yield corpus[idx], corpus[idx + 1]


def seq_data_iter_sequential(corpus, batch_size, num_steps, rng):
    """Sequential partitioning (d2l): the corpus, from a random offset in
    [0, num_steps], is cut into ``batch_size`` rows; batch i holds columns
    [i*T, (i+1)*T), so row n of batch i+1 continues row n of batch i and the
    recurrent state can be carried over (truncated BPTT)."""
    corpus = _check_batching(corpus, batch_size, num_steps)
    offset = int(rng.integers(0, num_steps + 1))
    num_tokens = ((corpus.size - offset - 1) // batch_size) * batch_size
    Xs = corpus[offset:offset + num_tokens].reshape(batch_size, -1)
    Ys = corpus[offset + 1:offset + 1 + num_tokens].reshape(batch_size, -1)
    for i in range(0, (Xs.shape[1] // num_steps) * num_steps, num_steps):
        yield Xs[:, i:i + num_steps], Ys[:, i:i + num_steps]


def num_batches(corpus_size, batch_size, num_steps, sequential=True):
    """An upper bound on the batches per epoch of either iterator (the random offset
    can take one away)."""
    if sequential:
        return ((corpus_size - 1) // batch_size) // num_steps
    return ((corpus_size - 1) // num_steps) // batch_size


def split_corpus(corpus, val_fraction=0.1):
    """(train, validation): the last ``val_fraction`` of the corpus is held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"expected val_fraction in [0, 1), got {val_fraction!r}")
    corpus = np.asarray(corpus)
    cut = int(round(corpus.size * (1.0 - val_fraction)))
    return corpus[:cut], corpus[cut:]


class TextCorpus:
    """A tokenized text: ``vocab``, ``ids`` (all token ids) and the train/validation split.

    ``TextCorpus.from_text(text, token='char', min_freq=0, val_fraction=0.1)``.
    For 'char' tokens the newlines are kept (they matter in source code); for
    'word' tokens each line's words are kept and lines are joined. ``max_tokens``
    keeps only the first tokens of the corpus (d2l's ``load_corpus_time_machine``
    uses 10,000), the vocabulary still being built from the whole text.
    """

    def __init__(self, tokens, token="char", min_freq=0, val_fraction=0.1, vocab=None,
                 max_tokens=None):
        self.token = token
        flat = _flatten_tokens(tokens)
        if not flat:
            raise ValueError("expected a non-empty text, got no tokens")
        self.vocab = vocab if vocab is not None else Vocab(flat, min_freq=min_freq)
        self.ids = np.asarray(self.vocab[flat], dtype=np.int64)
        if max_tokens is not None:   # d2l: the vocabulary sees the whole text, the corpus is cut
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) \
                    or max_tokens < 1:
                raise ValueError(f"expected max_tokens to be a positive integer or None, got "
                                 f"{max_tokens!r}")
            self.ids = self.ids[:int(max_tokens)]
        self.train, self.val = split_corpus(self.ids, val_fraction)

    @classmethod
    def from_text(cls, text, token="char", min_freq=0, val_fraction=0.1, vocab=None,
                  max_tokens=None):
        if token == "char":
            tokens = list(text)
        else:
            tokens = tokenize(text.splitlines(), "word")
        return cls(tokens, token, min_freq, val_fraction, vocab, max_tokens)

    def __len__(self):
        return int(self.ids.size)
