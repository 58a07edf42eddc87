"""The seeds' other shapes of recurrent model: N -> 1, N -> N and 1 -> N.

SequenceClassifier (N -> 1): embedding -> any registered cell over variable-length
sequences -> the final state of each sequence at its own last step ('last'),
or the mean of its valid outputs ('mean') -> linear -> class logits.

SequenceTagger (N -> N): embedding -> (bidirectional) recurrent stack ->
linear at every step -> one tag per token; padding is ignored by the loss.

ConditionalDecoder (1 -> N): a vector c (N, C) conditions a decoder that
writes a sequence; the context enters as its initial state
(h_0 = tanh(c W_c^T + b_c), scheme 'init') or as part of every input
(x_t = [emb(y_{t-1}); c], scheme 'input'), the two 1 -> N drawings of the seeds.
All take token ids batch-major, (N, T), as in d2l.
"""

from typing import Any, List, Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .._checks import check_choice, check_positive_int
from .._typing import Array, ArrayModule, Seed, States
from ..backend import backend_name, get_array_module, to_backend, to_numpy
from ..functional.registry import CELLS, as_states, from_states
from ..layers import Embedding, Linear, Module, no_grad
from ..layers.base import make_rng
from ..layers.recurrent import layer_class


def _argmax_eval(model: Module, X: Array, lengths: Optional[Array]) -> NDArray[Any]:
    """argmax over the last axis of the model's logits, in eval mode, keeping no cache."""
    was = model.training
    with no_grad():
        logits = model.eval().forward(X, lengths)
    model.train(was)
    return to_numpy(logits.argmax(axis=-1))


class _Encoder(Module):
    """Embedding + recurrent stack; shared by the classifier and the tagger."""

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
                 cell: str, bidirectional: bool, dropout: float, pad: int, dtype: DTypeLike,
                 rng: np.random.Generator) -> None:
        super().__init__()
        check_choice("cell", cell, tuple(CELLS))
        self.pad = pad
        self.embedding = Embedding(vocab_size, embed_size, padding_idx=pad, dtype=dtype, seed=rng)
        self.rnn = layer_class(cell)(embed_size, hidden_size, num_layers=num_layers,
                                     dropout=dropout, bidirectional=bidirectional, dtype=dtype,
                                     seed=rng)

    def _xp(self) -> ArrayModule:
        return get_array_module(self.embedding.params["weight"])

    def run(self, X: Array, lengths: Optional[Array]) -> Tuple[Array, States]:
        X = X if hasattr(X, "dtype") else np.asarray(X)     # ids: host or device, never moved back
        out, h_n = self.rnn(self.embedding(get_array_module(X).ascontiguousarray(X.T)),
                            lengths=lengths)
        return out, h_n                                        # (T, N, dirs*H)

    def back(self, d_out: Optional[Array], d_hn: States = None) -> None:
        dx, _ = self.rnn.backward(d_out, d_hn)
        self.embedding.backward(dx)


class SequenceClassifier(Module):
    """N -> 1: class logits (N, C) for token sequences X (N, T) with ``lengths``."""

    def __init__(self, vocab_size: int, num_classes: int, embed_size: int = 16,
                 hidden_size: int = 32, num_layers: int = 1, cell: str = "gru",
                 bidirectional: bool = False, pooling: str = "last", dropout: float = 0.0,
                 pad: int = 0, dtype: DTypeLike = "float32", seed: Seed = None) -> None:
        super().__init__()
        rng = make_rng(seed)
        self.pooling = check_choice("pooling", pooling, ("last", "mean"))
        self.encoder = _Encoder(vocab_size, embed_size, hidden_size, num_layers, cell,
                                bidirectional, dropout, pad, dtype, rng)
        self.dirs = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        self.head = Linear(self.dirs * hidden_size, num_classes, dtype=dtype, seed=rng)

    def forward(self, X: Array, lengths: Optional[Array] = None) -> Array:
        out, h_n = self.encoder.run(X, lengths)
        xp = get_array_module(out)
        T, N = out.shape[:2]
        lengths_b = xp.full(N, T) if lengths is None else to_backend(lengths, backend_name(xp))
        if self.pooling == "last":      # each sequence's state at its last valid step
            h = as_states(h_n)[0]
            top = h[-self.dirs:]                                   # (dirs, N, H)
            pooled = top.transpose(1, 0, 2).reshape(N, -1)
        else:                           # outputs past the end are zero: sum / length
            pooled = out.sum(axis=0) / lengths_b[:, None].astype(out.dtype)
        self._push((h_n, out.shape, lengths_b))
        return self.head(pooled)

    def backward(self, dlogits: Array) -> None:
        with self._consume() as (h_n, shape, lengths):
            d_pooled = self.head.backward(dlogits)
        xp = get_array_module(d_pooled)
        T, N, _ = shape
        if self.pooling == "last":
            states = as_states(h_n)
            d_h = xp.zeros_like(states[0])
            d_h[-self.dirs:] = d_pooled.reshape(N, self.dirs, self.hidden_size).transpose(1, 0, 2)
            self.encoder.back(None, from_states((d_h,) + (None,) * (len(states) - 1)))
        else:
            d_out = xp.broadcast_to(d_pooled / lengths[:, None].astype(d_pooled.dtype), shape)
            self.encoder.back(xp.ascontiguousarray(d_out))

    def predict(self, X: Array, lengths: Optional[Array] = None) -> NDArray[Any]:
        """Most likely class of each sequence (N,)."""
        return _argmax_eval(self, X, lengths)


class SequenceTagger(Module):
    """N -> N: tag logits (N, T, K) for token sequences X (N, T) with ``lengths``."""

    def __init__(self, vocab_size: int, num_tags: int, embed_size: int = 16, hidden_size: int = 32,
                 num_layers: int = 1, cell: str = "gru", bidirectional: bool = True,
                 dropout: float = 0.0, pad: int = 0, dtype: DTypeLike = "float32",
                 seed: Seed = None) -> None:
        super().__init__()
        rng = make_rng(seed)
        self.encoder = _Encoder(vocab_size, embed_size, hidden_size, num_layers, cell,
                                bidirectional, dropout, pad, dtype, rng)
        self.head = Linear((2 if bidirectional else 1) * hidden_size, num_tags, dtype=dtype,
                           seed=rng)

    def forward(self, X: Array, lengths: Optional[Array] = None) -> Array:
        out, _ = self.encoder.run(X, lengths)                     # (T, N, dirs*H)
        return self.head(out).transpose(1, 0, 2)                  # (N, T, K)

    def backward(self, dlogits: Array) -> None:
        xp = get_array_module(dlogits)
        d_out = self.head.backward(xp.ascontiguousarray(dlogits.transpose(1, 0, 2)))
        self.encoder.back(d_out)

    def predict(self, X: Array, lengths: Optional[Array] = None) -> NDArray[Any]:
        """Most likely tag of each token (N, T)."""
        return _argmax_eval(self, X, lengths)


class ConditionalDecoder(Module):
    """1 -> N: a decoder conditioned on a vector c (N, C); scheme 'init' or 'input'."""

    def __init__(self, cond_size: int, vocab_size: int, embed_size: int = 16, hidden_size: int = 64,
                 cell: str = "gru", scheme: str = "init", bos: int = 1, eos: int = 2,
                 dtype: DTypeLike = "float32", seed: Seed = None) -> None:
        super().__init__()
        rng = make_rng(seed)
        self.scheme = check_choice("scheme", scheme, ("init", "input"))
        self.cell = check_choice("cell", cell, tuple(CELLS))
        self.bos, self.eos = bos, eos
        self.cond_size = check_positive_int("cond_size", cond_size)
        self.embedding = Embedding(vocab_size, embed_size, dtype=dtype, seed=rng)
        d_in = embed_size + (cond_size if scheme == "input" else 0)
        self.rnn = layer_class(cell)(d_in, hidden_size, dtype=dtype, seed=rng)
        if scheme == "init":
            self.cond = Linear(cond_size, hidden_size, dtype=dtype, seed=rng)
        self.out = Linear(hidden_size, vocab_size, dtype=dtype, seed=rng)

    def _state(self, c: Array) -> Tuple[States, Optional[Array]]:
        if self.scheme != "init":
            return None, None
        xp = get_array_module(c)
        h0 = xp.tanh(self.cond(c))[None]                          # (1, N, H)
        others = tuple(xp.zeros_like(h0) for _ in range(self.rnn.n_states - 1))  # e.g. c_0
        return from_states((h0,) + others), h0

    def _inputs(self, tokens: Array, c: Array) -> Array:
        xp = get_array_module(c)
        tokens = tokens if hasattr(tokens, "dtype") else np.asarray(tokens)
        emb = self.embedding(get_array_module(tokens).ascontiguousarray(tokens.T))   # (T, N, E)
        if self.scheme == "input":
            emb = xp.concatenate([emb, xp.broadcast_to(c, (emb.shape[0],) + c.shape)], axis=2)
        return emb

    def forward(self, c: Array, tgt_in: Array) -> Array:
        """c (N, C), tgt_in (N, T) = <bos> y_1..y_{T-1} -> logits (N, T, V)."""
        state, h0 = self._state(c)
        out, _ = self.rnn(self._inputs(tgt_in, c), state)
        self._push(h0)
        return self.out(out).transpose(1, 0, 2)

    def backward(self, dlogits: Array) -> Optional[Array]:
        xp = get_array_module(dlogits)
        with self._consume() as h0:
            d_out = self.out.backward(xp.ascontiguousarray(dlogits.transpose(1, 0, 2)))
        dx, d_state = self.rnn.backward(d_out)
        E = self.embedding.embedding_dim
        self.embedding.backward(dx[:, :, :E] if self.scheme == "input" else dx)
        d_c = dx[:, :, E:].sum(axis=0) if self.scheme == "input" else None
        if self.scheme == "init":
            d_h0 = as_states(d_state)[0][0]
            d_c = self.cond.backward(d_h0 * (1 - h0[0] * h0[0]))
        return d_c

    def generate(self, c: Array, max_len: int = 30) -> List[List[int]]:
        """Greedy decoding for every row of c -> lists of ids (<eos> excluded)."""
        was = self.training
        self.eval()
        outs = []
        with no_grad():
            state, _ = self._state(c)
            N = c.shape[0]
            tok = np.full((N, 1), self.bos)
            done = np.zeros(N, dtype=bool)
            for _ in range(max_len):
                out, state = self.rnn(self._inputs(tok, c), state)
                tok = to_numpy(self.out(out[0]).argmax(axis=1))[:, None]     # one sync a step
                outs.append(tok[:, 0])
                done |= tok[:, 0] == self.eos
                if done.all():
                    break
        self.train(was)
        rows = np.stack(outs, axis=1).tolist()
        return [r[:r.index(self.eos)] if self.eos in r else r for r in rows]
