"""Text pipeline: tokenizers, Vocab, d2l's two minibatch schemes, corpus loading."""

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npnn.training import data
from npnn.training.data import (TIME_MACHINE, TextCorpus, Vocab, default_corpus, num_batches,
                                read_text, seq_data_iter_random, seq_data_iter_sequential,
                                split_corpus, time_machine, timemachine_lines, tokenize)


def test_tokenize():
    assert tokenize(["ab c", ""], "char") == [["a", "b", " ", "c"], []]
    assert tokenize(["the time  machine", "by h g wells"], "word") == [
        ["the", "time", "machine"], ["by", "h", "g", "wells"]]
    with pytest.raises(ValueError, match="expected token to be one of 'char', 'word', got 'byte'"):
        tokenize(["x"], "byte")
    with pytest.raises(TypeError, match="single str"):
        tokenize("abc")


def test_vocab_order_lookup_and_reserved_tokens():
    tokens = list("bbaaccd") + ["e"]
    v = Vocab(tokens, reserved_tokens=["<pad>"])
    # <unk> first, then reserved, then by frequency, ties alphabetically
    assert v.idx_to_token == ["<unk>", "<pad>", "a", "b", "c", "d", "e"]
    assert len(v) == 7 and v["a"] == 2 and v["zzz"] == v.unk == 0
    assert v[["c", "a", "?"]] == [4, 2, 0]
    assert v.to_tokens([2, 3]) == ["a", "b"] and v.to_tokens(4) == "c"
    assert Vocab(tokens, min_freq=2).idx_to_token == ["<unk>", "a", "b", "c"]
    assert Vocab([["x", "y"], ["y"]]).idx_to_token == ["<unk>", "y", "x"]   # lines are flattened
    assert Vocab.from_tokens_list(v.idx_to_token)["e"] == 6


@given(n=st.integers(40, 120), B=st.integers(1, 4), T=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))
def test_random_iterator_d2l_semantics(n, B, T, seed):
    corpus = np.arange(n)
    batches = list(seq_data_iter_random(corpus, B, T, np.random.default_rng(seed)))
    starts = []
    for X, Y in batches:
        assert X.shape == (B, T) and Y.shape == (B, T)
        assert np.array_equal(Y, X + 1)                                # targets: next token
        assert np.all(np.diff(X, axis=1) == 1)                        # contiguous subsequences
        starts += list(X[:, 0])
    offset = starts[0] % T if starts else 0
    assert offset < T and all(s % T == offset for s in starts)        # one offset in [0, T-1]
    assert len(set(starts)) == len(starts)                            # no subsequence twice
    subseqs = (n - offset - 1) // T
    assert len(batches) == subseqs // B                               # every full batch
    again = list(seq_data_iter_random(corpus, B, T, np.random.default_rng(seed)))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))   # seeded


@given(n=st.integers(40, 120), B=st.integers(1, 4), T=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))
def test_sequential_iterator_d2l_semantics(n, B, T, seed):
    corpus = np.arange(n)
    batches = list(seq_data_iter_sequential(corpus, B, T, np.random.default_rng(seed)))
    offset = int(batches[0][0][0, 0])
    assert 0 <= offset <= T
    rows = (n - offset - 1) // B                                      # tokens per row
    assert len(batches) == rows // T
    for i, (X, Y) in enumerate(batches):
        assert X.shape == (B, T) and np.array_equal(Y, X + 1)
        assert np.array_equal(X[:, 0], offset + np.arange(B) * rows + i * T)
        if i:                                                         # contiguous across batches
            assert np.array_equal(X[:, 0], batches[i - 1][0][:, -1] + 1)
    seen = np.concatenate([X.ravel() for X, _ in batches])
    assert len(set(seen.tolist())) == seen.size                      # each position once
    assert len(batches) <= num_batches(n, B, T, sequential=True)


def test_iterators_reject_bad_arguments():
    with pytest.raises(ValueError, match="expected a corpus of at least 16 tokens for batch_size 2"):
        list(seq_data_iter_sequential(np.arange(10), 2, 5, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="expected batch_size to be a positive integer, got 0"):
        list(seq_data_iter_random(np.arange(100), 0, 5, np.random.default_rng(0)))
    with pytest.raises(TypeError, match="1-D sequence of token ids"):
        list(seq_data_iter_random(np.zeros(100), 2, 5, np.random.default_rng(0)))


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus file not found: .*nope.txt"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="corpus file is empty: .*empty.txt"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not valid UTF-8: .*latin1.txt \(byte 3"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="got a directory"):
        read_text(tmp_path)
    (tmp_path / "ok.txt").write_text("héllo\n", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt") == "héllo\n"


def test_default_corpus_and_text_corpus():
    text = default_corpus()
    assert len(text) > 100_000 and "def " in text
    c = TextCorpus.from_text(text[:20_000], "char", val_fraction=0.1)
    assert len(c.train) + len(c.val) == len(c) == 20_000
    assert c.vocab.to_tokens(list(c.ids[:5])) == list(text[:5])
    cut = TextCorpus.from_text("abcabcxyz", "char", val_fraction=0.0, max_tokens=4)
    assert list(cut.ids) == cut.vocab[list("abca")] and len(cut.vocab) == 7   # vocab: all text
    words = TextCorpus.from_text("a b a\nc a", "word", val_fraction=0.0)
    assert words.vocab.idx_to_token[:2] == ["<unk>", "a"] and len(words.val) == 0


def test_the_time_machine_ships_with_npnn():
    """The text of d2l's chapter 8, package data (no download, no ../shared): the whole
    book, and d2l's pipeline on it gives d2l's vocabulary of 28 (letters, space, <unk>)."""
    text = time_machine()
    assert os.path.dirname(TIME_MACHINE) == os.path.dirname(os.path.abspath(data.__file__))
    assert text.startswith("The Time Machine\n") and len(text) == 179_693
    assert text.rstrip().endswith("still lived on in the heart of man.")
    corpus = TextCorpus.from_text("".join(timemachine_lines(text)), "char", val_fraction=0.0,
                                  max_tokens=10_000)
    assert len(corpus.vocab) == 28 and len(corpus) == 10_000
    assert corpus.vocab.idx_to_token[:5] == ["<unk>", " ", "e", "t", "a"]


def test_timemachine_preprocessing_and_split():
    assert timemachine_lines("The Time-Machine, by H. G. Wells [1898]\n  ") == [
        "the time machine by h g wells", ""]
    train, val = split_corpus(np.arange(10), 0.2)
    assert list(train) == list(range(8)) and list(val) == [8, 9]
    with pytest.raises(ValueError, match=r"expected val_fraction in \[0, 1\), got 1.0"):
        split_corpus(np.arange(10), 1.0)
