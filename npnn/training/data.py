"""Text for language models: tokenizers, vocabulary, corpora, d2l's minibatch schemes.

The pipeline of d2l's chapter 8, with its semantics kept:

    text -> lines -> tokenize(lines, 'char' | 'word') -> Vocab -> corpus (token ids)
         -> seq_data_iter_random / seq_data_iter_sequential -> (X, Y) minibatches

X and Y are (N, T) integer arrays (batch-major, as in d2l), Y being X shifted
by one token. Both iterators take a ``numpy.random.Generator``, so an epoch's
batches are a function of the generator's state: reproducible, and resumable.

A corpus's token ids are one compact array (``id_dtype``: uint8, uint16 or uint32,
the smallest that holds the vocabulary), made from a text by ``TextCorpus.from_text``
in pieces of ``CHUNK`` characters, counting first, then looking the ids up: a 200 MB
text takes about twice its size in memory, not a Python list of its tokens.

``default_corpus()`` is the corpus used when no file is given: a fixed list of
modules from the Python standard library's own source (``DEFAULT_CORPUS_FILES``),
present wherever CPython is installed, so a model learns to write Python-like
text without any download (in the spirit of char-rnn on the Linux source). The
exact text follows the installed Python version.

``time_machine()`` is H. G. Wells's *The Time Machine* (1895, public domain), the
text of d2l's chapter 8, shipped with npnn (``TIME_MACHINE``, its path, is a
``--text`` for ``npnn train``): 181,467 bytes of UTF-8, 3,174 lines, the text alone
(no Project Gutenberg header or licence). It is a later edition than the file d2l
downloads (it opens with a contents list and titles its chapters), so its first
10,000 characters differ from d2l's.
"""

import collections
import os
import re
import stat
import sysconfig

import numpy as np

from .._checks import check_choice, check_positive_int

#: How text becomes tokens: characters or whitespace-separated words.
TOKEN_MODES = ("char", "word")
#: Characters a text is tokenised in at a time (``TextCorpus.from_text``).
CHUNK = 2 ** 20
_UNICODE = 0x110000

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
    """Read a UTF-8 text file; clear errors for a missing, empty or non-UTF-8 file, and
    for anything but a regular file (a FIFO would block, ``/dev/zero`` never ends, and a
    pipe such as ``<(cat book)`` cannot be read again to resume the run). Reads the
    size the file has when it is opened, no more."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"expected a text file, got a directory: {path}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO or pipe" if stat.S_ISFIFO(st.st_mode) else
                    "a character device" if stat.S_ISCHR(st.st_mode) else
                    "a block device" if stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
            raise ValueError(f"expected the text to be a regular file, got {kind}: {path} "
                             "(a run reads its text again to resume: save it to a file first)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(st.st_size)
    finally:
        os.close(fd)
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


#: The path of *The Time Machine* shipped with npnn (package data of ``npnn.training``).
TIME_MACHINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "timemachine.txt")


def time_machine():
    """The text of *The Time Machine* shipped with npnn (``TIME_MACHINE``), as one str;
    ``timemachine_lines`` cleans it as d2l does."""
    return read_text(TIME_MACHINE)


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

    def __init__(self, tokens=(), min_freq=0, reserved_tokens=(), *, counts=None):
        counter = collections.Counter(_flatten_tokens(list(tokens))) if counts is None else \
            counts
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
    def id_dtype(self):
        """The smallest unsigned integer type that holds every id."""
        return id_dtype(len(self))

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


def id_dtype(size):
    """uint8, uint16 or uint32: the smallest that holds the ids of ``size`` tokens."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"expected a vocabulary of at most 2^32 tokens, got {size}")


def _code_points(text):
    """A str -> its code points, (len(text),) uint32."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _word_chunks(text, chunk=CHUNK):
    """The whitespace-separated words of ``text`` (``text.split()``), as lists of about
    ``chunk`` characters' words, cut at whitespace."""
    start, n = 0, len(text)
    while start < n:
        end = min(start + chunk, n)
        while end < n and not text[end].isspace():    # never cut inside a word
            end += 1
        yield text[start:end].split()
        start = end


def _tokenize_text(text, token, min_freq, vocab):
    """(vocab, ids) of a text, in chunks: the counts first (for a new vocabulary), then
    the ids, into one compact array."""
    if token == "char":
        if vocab is None:
            counts = np.zeros(0, dtype=np.int64)
            for i in range(0, len(text), CHUNK):
                piece = np.bincount(_code_points(text[i:i + CHUNK]))
                if piece.size > counts.size:
                    counts = np.concatenate([counts, np.zeros(piece.size - counts.size,
                                                              dtype=np.int64)])
                counts[:piece.size] += piece
            seen = np.flatnonzero(counts)
            vocab = Vocab(min_freq=min_freq, counts={chr(c): int(counts[c]) for c in seen})
        lookup = np.zeros(_UNICODE, dtype=vocab.id_dtype)        # <unk> (0) by default
        for t, i in vocab.token_to_idx.items():
            if len(t) == 1 and t != "<unk>":
                lookup[ord(t)] = i
        ids = np.empty(len(text), dtype=vocab.id_dtype)
        for i in range(0, len(text), CHUNK):
            ids[i:i + CHUNK] = lookup[_code_points(text[i:i + CHUNK])]
        return vocab, ids
    if vocab is None:
        counts = collections.Counter()
        for words in _word_chunks(text):
            counts.update(words)
        vocab = Vocab(min_freq=min_freq, counts=counts)
    get, dtype = vocab.token_to_idx.get, vocab.id_dtype
    parts = [np.fromiter((get(w, 0) for w in words), dtype=dtype, count=len(words))
             for words in _word_chunks(text)]
    return vocab, np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


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
        yield corpus[idx].astype(np.int64), corpus[idx + 1].astype(np.int64)


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
        yield (Xs[:, i:i + num_steps].astype(np.int64),
               Ys[:, i:i + num_steps].astype(np.int64))


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
                 max_tokens=None, *, _ids=None):
        self.token = token
        if _ids is None:
            flat = _flatten_tokens(tokens)
            if not flat:
                raise ValueError("expected a non-empty text, got no tokens")
            self.vocab = vocab if vocab is not None else Vocab(flat, min_freq=min_freq)
            self.ids = np.asarray(self.vocab[flat], dtype=self.vocab.id_dtype)
        else:
            if _ids.size == 0:
                raise ValueError("expected a non-empty text, got no tokens")
            self.vocab, self.ids = vocab, _ids
        if max_tokens is not None:   # d2l: the vocabulary sees the whole text, the corpus is cut
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) \
                    or max_tokens < 1:
                raise ValueError(f"expected max_tokens to be a positive integer or None, got "
                                 f"{max_tokens!r}")
            self.ids = self.ids[:int(max_tokens)].copy()
        self.val_fraction = val_fraction
        self.train, self.val = split_corpus(self.ids, val_fraction)

    @classmethod
    def from_text(cls, text, token="char", min_freq=0, val_fraction=0.1, vocab=None,
                  max_tokens=None):
        """Tokenise ``text`` in chunks into compact ids (see the module docstring); the
        same vocabulary and ids as ``TextCorpus(list(text))`` (char) or
        ``TextCorpus(tokenize(text.splitlines(), 'word'))``."""
        check_choice("token", token, TOKEN_MODES)
        vocab, ids = _tokenize_text(text, token, min_freq, vocab)
        return cls((), token, min_freq, val_fraction, vocab, max_tokens, _ids=ids)

    @classmethod
    def from_ids(cls, ids, vocab, token="char", val_fraction=0.1):
        """A corpus of token ``ids`` (already cut to ``max_tokens``) and their ``vocab``."""
        return cls((), token, 0, val_fraction, vocab, None, _ids=ids)

    def __len__(self):
        return int(self.ids.size)
