"""A recurrent language model: tokens -> embedding (or one-hot) -> RNN/LSTM/GRU -> logits.

    (1) e_t = E[x_t]  (embedding)   or   e_t = onehot(x_t)  (d2l's input)
        in training, with embedding dropout: e_t = m[x_t] E[x_t], m (V,) one mask per forward
    (2) h_t, state = rnn(e_t, state)          any cell, layers, dropout between layers
    (3) logits_t = dropout(h_t) W_dec^T + b_dec        W_dec may be tied to E (E must be H wide)

Tokens and logits are batch-major, as in d2l: X (N, T) -> logits (N, T, V).
The state returned by ``forward`` can be passed to the next call: it carries
no graph, so training on consecutive batches this way is truncated BPTT.
"""

from typing import Any, Callable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .._checks import (check_choice, check_dropout, check_dtype, check_index_range,
                       check_integer, check_positive_int)
from .._typing import Array, Seed, States
from ..backend import backend_name, get_array_module, to_backend, to_numpy
from ..functional import log_softmax
from ..functional.registry import CELLS, InitSpec, as_states, from_states, get_cell
from ..layers import Dropout, Embedding, Linear, Module, no_grad
from ..layers.base import make_rng
from ..layers.recurrent import layer_class, select_state

STRATEGIES = ("greedy", "sample", "beam")


class Vocabulary(Protocol):
    """What the model reads of its vocabulary (an ``npnn.training.data.Vocab``, which this
    library module does not import)."""
    @property
    def token_to_idx(self) -> Mapping[str, int]: ...

    def __getitem__(self, token: str) -> int: ...

    def to_tokens(self, indices: List[int]) -> List[str]: ...


#: A prefix or a generated sequence: text (with a vocabulary) or token ids.
Text = Union[str, List[int]]
#: A layer's prepared step (``Recurrent.stepper``): (x, states) -> new states.
Step = Callable[[Array, Tuple[Array, ...]], Tuple[Array, ...]]


class RNNLM(Module):
    """Recurrent language model.

    Args:
        vocab_size: V.
        hidden_size: H.
        cell: a registered cell ('rnn', 'lstm', 'gru', ...: ``functional.registry.CELLS``).
        num_layers: stacked recurrent layers.
        embedding_dim: E, or 0/None for one-hot inputs (d2l's models).
        dropout: between recurrent layers and before the decoder.
        embedding_dropout: AWD-LSTM's embedding dropout, whole words (rows of the
            embedding) dropped in training, one mask per forward (``Embedding(dropout=)``);
            needs an embedding.
        tie_weights: share the decoder's weight with the embedding (needs E == H).
        nonlinearity: 'tanh' or 'relu', for cells with that option ('rnn').
        recurrent_dropout, zoneout, weight_drop: the recurrent layer's regularisers
            inside the recurrence (``npnn.Recurrent``; ``functional/regularisers.py``),
            each a probability in [0, 1), zoneout also one per state; 0: off.
        vocab, token: a ``npnn.data.Vocab`` and 'char'/'word', for ``generate`` on text.
        init, forget_bias: the recurrent layers' initialisers and forget-gate bias
            (``npnn.Recurrent``); None: PyTorch's initialisation.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 256, cell: str = "gru",
                 num_layers: int = 1, embedding_dim: Optional[int] = None, dropout: float = 0.0,
                 tie_weights: bool = False, nonlinearity: str = "tanh",
                 dtype: DTypeLike = "float32", seed: Seed = None,
                 vocab: Optional[Vocabulary] = None, token: str = "char",
                 init: InitSpec = None, forget_bias: Optional[float] = None,
                 recurrent_dropout: float = 0.0, zoneout: Union[float, Sequence[float]] = 0.0,
                 weight_drop: float = 0.0, embedding_dropout: float = 0.0) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.cell = check_choice("cell", cell, tuple(CELLS))
        self.embedding_dim = int(embedding_dim or 0)
        self.dtype = check_dtype(dtype)
        check_dropout(dropout)
        embedding_dropout = check_dropout(embedding_dropout, "embedding_dropout")
        self.vocab, self.token = vocab, token
        self.rng = make_rng(seed)
        if tie_weights and self.embedding_dim != self.hidden_size:
            raise ValueError(f"expected embedding_dim == hidden_size ({self.hidden_size}) to tie "
                             f"weights, got embedding_dim={embedding_dim}")
        if embedding_dropout and not self.embedding_dim:
            raise ValueError(f"expected an embedding (embedding_dim > 0) for embedding_dropout="
                             f"{embedding_dropout}, got one-hot inputs (embedding_dim="
                             f"{embedding_dim})")
        if self.embedding_dim:
            self.embedding = Embedding(self.vocab_size, self.embedding_dim, dtype=dtype,
                                       seed=self.rng, dropout=embedding_dropout)
        extra = {"nonlinearity": nonlinearity} if "nonlinearity" in get_cell(cell).options else {}
        # the layer's dropout acts between its layers only (Dropout below does the decoder's)
        self.rnn = layer_class(cell)(self.embedding_dim or self.vocab_size, self.hidden_size,
                                     num_layers=num_layers,
                                     dropout=dropout if num_layers > 1 else 0.0, dtype=dtype,
                                     seed=self.rng, init=init, forget_bias=forget_bias,
                                     recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                                     weight_drop=weight_drop, **extra)
        self.drop = Dropout(dropout, seed=self.rng)
        self.decoder = Linear(self.hidden_size, self.vocab_size, dtype=dtype, seed=self.rng)
        self.tie_weights = bool(tie_weights)
        if self.tie_weights:  # one array, one gradient, two uses
            self.decoder.params["weight"] = self.embedding.params["weight"]
            self.decoder.grads["weight"] = self.embedding.grads["weight"]

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, cell='{self.cell}'" + (
            ", tied" if self.tie_weights else "")

    def _inputs(self, X: Array) -> Array:
        """(N, T) token ids -> (T, N, E) inputs to the recurrent stack."""
        xp = get_array_module(self.decoder.params["weight"])
        if not hasattr(X, "dtype"):
            X = np.asarray(X)
        check_integer("X", X)
        if X.ndim != 2:
            raise ValueError(f"expected X of shape (N, T), got {tuple(X.shape)}")
        check_index_range("X", X, 0, self.vocab_size)    # on the host for host ids: no sync
        if self.embedding_dim:                          # host ids go to the device once, there
            return self.embedding(get_array_module(X).ascontiguousarray(X.T))
        Xt = to_backend(X, backend_name(xp)).T                        # (T, N)
        T, N = Xt.shape
        onehot = xp.zeros((T, N, self.vocab_size), dtype=self.dtype)   # (1) one-hot (T, N, V)
        onehot[xp.arange(T)[:, None], xp.arange(N)[None, :], Xt] = 1
        return onehot

    def forward(self, X: Array, state: States = None) -> Tuple[Array, States]:
        """X (N, T) ids, state from the previous call or None -> logits (N, T, V), state."""
        out, state = self.rnn(self._inputs(X), state)                  # (2) (T, N, H)
        logits = self.decoder(self.drop(out))                          # (3) (T, N, V)
        return logits.transpose(1, 0, 2), state

    def backward(self, dlogits: Array, d_state: States = None) -> None:
        """dlogits (N, T, V) and optionally the gradient of the returned state -> None;
        gradients accumulate in every parameter."""
        xp = get_array_module(dlogits)
        d = self.drop.backward(
            self.decoder.backward(xp.ascontiguousarray(dlogits.transpose(1, 0, 2))))
        dx, _ = self.rnn.backward(d, d_state)
        if self.embedding_dim:
            self.embedding.backward(dx)

    # -- generation ----------------------------------------------------------
    def _encode(self, prefix: Union[str, Sequence[int]]) -> List[int]:
        if isinstance(prefix, str):
            if self.vocab is None:
                raise ValueError("this model has no vocabulary: pass token ids, or build it "
                                 "with vocab=...")
            tokens = list(prefix) if self.token == "char" else prefix.split()
            return [self.vocab[t] for t in tokens]
        return [int(t) for t in prefix]

    def _end_id(self, end_token: Union[str, int, None]) -> Optional[int]:
        """``end_token`` as an id: a token of the vocabulary (a string), an id, or None."""
        if end_token is None:
            return None
        if isinstance(end_token, str):
            if self.vocab is None:
                raise ValueError("this model has no vocabulary: pass end_token as a token id")
            if end_token not in self.vocab.token_to_idx:
                raise ValueError(f"expected end_token to be a token of the vocabulary, got "
                                 f"{end_token!r}, which is not in the vocabulary")
            return self.vocab.token_to_idx[end_token]
        if isinstance(end_token, bool) or not isinstance(end_token, (int, np.integer)) or \
                not 0 <= end_token < self.vocab_size:
            raise ValueError(f"expected end_token to be a token or an id in [0, "
                             f"{self.vocab_size}), got {end_token!r}")
        return int(end_token)

    def _decode(self, ids: Sequence[int]) -> Text:
        if self.vocab is None:
            return list(ids)
        tokens = self.vocab.to_tokens(list(ids))
        return "".join(tokens) if self.token == "char" else " ".join(tokens)

    def generate(self, prefix: Union[str, Sequence[int]], n: int, strategy: str = "greedy",
                 temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, beam_width: int = 4,
                 length_penalty: float = 0.75, end_token: Union[str, int, None] = None,
                 seed: Seed = None) -> Text:
        """Continue ``prefix`` by ``n`` tokens; returns prefix + continuation.

        The prefix warms up the state (d2l's ``predict_ch8``), then:
          greedy: the most likely token each step;
          sample: draw from softmax(logits / temperature), optionally only among the
                  ``top_k`` most likely tokens and/or the smallest set whose
                  probability reaches ``top_p``; reproducible with ``seed``;
          beam:   keep the ``beam_width`` best partial sequences by summed log
                  probability; a sequence ends at ``end_token`` (if given) and
                  the winner maximises log P / length ** length_penalty.
        ``prefix`` is text (with a vocabulary) or a list of token ids; ``end_token``
        (every strategy stops there) a token of the vocabulary, such as "\\n", or an id.
        """
        check_choice("strategy", strategy, STRATEGIES)
        ids = self._encode(prefix)
        if not ids:
            raise ValueError("expected a prefix of at least one token, got an empty prefix")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"expected n to be a non-negative integer, got {n!r}")
        if temperature <= 0:
            raise ValueError(f"expected temperature > 0, got {temperature!r}")
        end = self._end_id(end_token)
        # forward-only, whatever the mode: no cache, no dropout, the mode left alone (so
        # threads may generate side by side, and beside training)
        steps = [self.rnn.stepper(layer) for layer in range(self.rnn.num_layers)]
        with no_grad():
            check_index_range("prefix", np.asarray(ids), 0, self.vocab_size)
            logits, state = self._infer(np.asarray([ids]), None, steps)   # warm-up on the prefix
            last = to_numpy(logits[0]).astype(np.float64)
            if strategy == "beam":
                out = self._beam(ids, last, state, n, beam_width, length_penalty, end, steps)
            else:
                out = self._step_decode(ids, last, state, n, strategy, temperature,
                                        top_k, top_p, end, np.random.default_rng(seed), steps)
        return self._decode(out)

    def _infer(self, X: NDArray[Any], state: States,
               steps: Sequence[Step]) -> Tuple[Array, States]:
        """Generation's forward: X (N, T) host ids, the state (tuple of (L, N, H) arrays, or
        None) -> the last step's logits (N, V), the new state. Runs each layer's prepared
        step (``Recurrent.stepper``): no cache, no dropout, and the model's mode unread."""
        xp = get_array_module(self.decoder.params["weight"])
        N, T = X.shape
        Xt = to_backend(np.ascontiguousarray(X.T), backend_name(xp))              # (T, N)
        if self.embedding_dim:
            inputs = self.embedding.params["weight"][Xt]                          # (T, N, E)
        else:
            inputs = xp.eye(self.vocab_size, dtype=self.dtype)[Xt]                 # (T, N, V)
        L = self.rnn.num_layers
        if state is None:
            state = tuple(xp.zeros((L, N, S), dtype=self.dtype) for S in self.rnn.state_sizes)
        states = [tuple(s[layer] for s in as_states(state)) for layer in range(L)]
        for t in range(T):
            x = inputs[t]
            for layer, step in enumerate(steps):
                states[layer] = step(x, states[layer])
                x = states[layer][0]                                               # (N, H)
        state = from_states(tuple(xp.stack(s) for s in zip(*states)))             # (L, N, H)
        return xp.dot(x, self.decoder.params["weight"].T) + self.decoder.params["bias"], state

    def _step_decode(self, ids: List[int], last: NDArray[np.float64], state: States, n: int,
                     strategy: str, temperature: float, top_k: Optional[int],
                     top_p: Optional[float], end: Optional[int], rng: np.random.Generator,
                     steps: Sequence[Step]) -> List[int]:
        out = list(ids)
        for _ in range(n):
            if strategy == "greedy":
                tok = int(np.argmax(last))
            else:
                tok = int(rng.choice(last.size, p=sampling_probs(last, temperature, top_k, top_p)))
            out.append(tok)
            if tok == end:
                break
            logits, state = self._infer(np.asarray([[tok]]), state, steps)
            last = to_numpy(logits[0]).astype(np.float64)
        return out

    def _beam(self, ids: List[int], last: NDArray[np.float64], state: States, n: int, width: int,
              alpha: float, end: Optional[int], steps: Sequence[Step]) -> List[int]:
        width = check_positive_int("beam_width", width)
        if n == 0:
            return list(ids)
        scores = np.zeros(1)                      # summed log-probabilities, one per beam
        seqs: List[List[int]] = [[]]
        finished: List[Tuple[float, List[int]]] = []  # (normalised score, tokens)
        logp = log_softmax(last[None])            # (beams, V)
        for step in range(n):
            total = (scores[:, None] + logp).ravel()
            order = np.argsort(-total, kind="stable")[:width]
            beam_idx, toks = np.divmod(order, logp.shape[1])
            scores = total[order]
            seqs = [seqs[b] + [int(t)] for b, t in zip(beam_idx, toks)]
            ended = toks == end if end is not None else np.zeros(toks.size, dtype=bool)
            finished += [(scores[i] / len(seqs[i]) ** alpha, seqs[i]) for i in np.flatnonzero(ended)]
            live = np.flatnonzero(~ended)
            if live.size == 0 or step == n - 1:
                break
            seqs, scores = [seqs[i] for i in live], scores[live]
            state = select_state(state, beam_idx[live])
            logits, state = self._infer(toks[live][:, None], state, steps)
            logp = log_softmax(to_numpy(logits).astype(np.float64))
        finished += [(scores[i] / len(seqs[i]) ** alpha, seqs[i]) for i in live]
        return list(ids) + max(finished, key=lambda f: f[0])[1]


def sampling_probs(logits: ArrayLike, temperature: float = 1.0, top_k: Optional[int] = None,
                   top_p: Optional[float] = None) -> NDArray[np.float64]:
    """Next-token probabilities from logits (V,): temperature, then top-k, then top-p."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None:
        k = check_positive_int("top_k", top_k)
        if k < z.size:
            kth = np.partition(z, -k)[-k]
            z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None:
        if not 0.0 < float(top_p) <= 1.0:
            raise ValueError(f"expected top_p in (0, 1], got {top_p!r}")
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[:int(np.searchsorted(cum, top_p)) + 1]       # smallest set reaching top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[keep] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p
