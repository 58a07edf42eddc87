"""Encoder-decoder (N -> M) with the ways the tutorials pass the source to the decoder.

Encoder: embedding + (bi)directional GRU/LSTM over the source, with ``lengths``
(packed semantics) for padded sources or none for fixed-length ones. Its final
states, through a ``bridge`` (tanh(Linear(.)) of both directions' states when
bidirectional), start the decoder: all of them (``decoder_init='state'``, the
default: (h, c) for an LSTM) or h alone, the other states starting at zero
(``'h'``, as "Deep Learning from Scratch 2" does). The ``context`` scheme
decides what else the decoder sees (c: the source summary, the encoder's final
top-layer state; H_enc: all encoder outputs; s_t: the decoder's state):

    'init'       the context only as the decoder's initial state (Cho et al.);
    'concat'     also c, appended to every decoder input: x_t = [emb(y_{t-1}); c]
                 (d2l's Seq2SeqDecoder; the "peeky" decoder);
    'attention'  Bahdanau's form: at every step the context is recomputed by
                 attention over H_enc, queried by the previous decoder state:
                 c_t = attn(s_{t-1}, H_enc), x_t = [c_t; emb(y_{t-1})]; the decoder
                 steps one step at a time, since each query needs the step before;
    'luong'      Luong's global attention: the decoder runs over the whole
                 sequence first, s_t = cell(emb(y_{t-1}), s_{t-1}), then every step
                 attends with its own output as the query, c_t = attn(s_t, H_enc),
                 all steps in one batched call, and the output layer reads [c_t; s_t].

With ``output_context`` the output layer reads [c; s_t] ('concat': the peeky
decoder of the book, which feeds c to the output layer too) or [c_t; s_t]
('attention'); 'luong' always does. Options of the textbooks' tasks:
``reverse_source`` reverses each source within its length before encoding
(Sutskever et al.); ``pad=None``, ``eos=None`` and ``src_lengths=None`` make a
fixed-length model (no padding id, no end id; the encoder takes its unmasked
path, as it also does for a batch whose lengths are all full); ``scale``
passes through to dot attention.

Training uses teacher forcing: the decoder reads <bos> y_1 .. y_{T-1} and is
scored on y_1 .. y_T with cross-entropy that ignores padding
(``npnn.training.fit_seq2seq`` runs it through the training loop). Decoding is greedy or beam search (length-
normalised score log P / len**alpha, ends at <eos>, or after ``max_len`` tokens
without an end id). Token ids: batch-major (N, S) sources and (N, T) targets.
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .._checks import (check_choice, check_integer, check_positive_int, check_scale,
                       check_shape)
from .._typing import Array, ArrayModule, Seed, States
from ..backend import backend_name, get_array_module, to_backend, to_numpy
from ..functional import length_mask, log_softmax
from ..functional.registry import CELLS, as_states, from_states
from ..layers import AdditiveAttention, DotAttention, Embedding, Linear, Module, no_grad
from ..layers.base import make_rng
from ..layers.recurrent import layer_class, select_state

CONTEXTS = ("init", "concat", "attention", "luong")
DECODER_INITS = ("state", "h")
#: Decoding's source (``_start``): the encoder's outputs (N, S, C), the mask (N, S) or None,
#: and what every step reads besides (the context vector, the projected keys, or None).
Source = List[Array]
#: A decoder layer's prepared step (``Recurrent.stepper``): (x, states) -> new states.
Step = Callable[[Array, Tuple[Array, ...]], Tuple[Array, ...]]


class Seq2Seq(Module):
    """Encoder-decoder; see the module docstring.

    Args:
        src_vocab, tgt_vocab: vocabulary sizes.
        embed_size, hidden_size, num_layers: of both encoder and decoder.
        cell: a registered cell ('gru', 'lstm', ...).  bidirectional: the encoder.
        context: 'init', 'concat', 'attention' (Bahdanau) or 'luong'.
        attention: 'additive' or 'dot' (with 'attention' and 'luong'); scale: dot
            attention's score factor, None for 1/sqrt(H), 1.0 for Luong's plain dot.
        pad, bos, eos: special token ids of the target (pad also of the source);
            pad and eos may be None (fixed-length sequences), bos starts decoding.
        output_context: the output layer also reads the context ('concat',
            'attention'); None: only for 'luong', which needs it.
        reverse_source: reverse each source within its length before encoding.
        decoder_init: 'state' (the encoder's final states, (h, c) for an LSTM) or
            'h' (h alone, the other states zero).

    After a forward with context 'attention' or 'luong', ``attention_weights`` holds
    the attention weights of every decoder step over the source positions, (N, T, S)
    (each row sums to 1 over a source's valid positions), for plotting; None before
    one, and with the other contexts.
    """

    #: (N, T, S) attention weights of the last forward (see the class docstring)
    attention_weights: Optional[Array] = None

    def __init__(self, src_vocab: int, tgt_vocab: int, embed_size: int = 32,
                 hidden_size: int = 64, num_layers: int = 1, cell: str = "gru",
                 bidirectional: bool = False, context: str = "attention",
                 attention: str = "additive", dropout: float = 0.0, pad: Optional[int] = 0,
                 bos: int = 1, eos: Optional[int] = 2, dtype: DTypeLike = "float32",
                 seed: Seed = None, *, scale: Optional[float] = None,
                 output_context: Optional[bool] = None, reverse_source: bool = False,
                 decoder_init: str = "state") -> None:
        super().__init__()
        self.context = check_choice("context", context, CONTEXTS)
        self.cell = check_choice("cell", cell, tuple(CELLS))
        check_choice("attention", attention, ("additive", "dot"))
        self.decoder_init = check_choice("decoder_init", decoder_init, DECODER_INITS)
        attends = context in ("attention", "luong")
        if scale is not None and not (attends and attention == "dot"):
            raise ValueError(f"expected scale only with dot attention (context 'attention' or "
                             f"'luong', attention='dot'), got context={context!r}, "
                             f"attention={attention!r}")
        if output_context is None:
            output_context = context == "luong"
        if context == "luong" and not output_context:
            raise ValueError("expected output_context=True (or None) with context='luong': "
                             "its output layer reads [c_t; s_t]")
        if output_context and context == "init":
            raise ValueError("expected output_context only with context 'concat', 'attention' "
                             "or 'luong', got 'init' (its context is the initial state alone)")
        self.output_context = bool(output_context)
        self.reverse_source = bool(reverse_source)
        self.pad, self.bos, self.eos = (_token_id("pad", pad, True), _token_id("bos", bos),
                                        _token_id("eos", eos, True))
        self.dtype = np.dtype(dtype)
        E, H = check_positive_int("embed_size", embed_size), check_positive_int(
            "hidden_size", hidden_size)
        self.hidden_size, self.num_layers = H, check_positive_int("num_layers", num_layers)
        rng = make_rng(seed)
        self.rng = rng
        RNNClass = layer_class(cell)
        self.src_embedding = Embedding(src_vocab, E, padding_idx=self.pad, dtype=dtype, seed=rng)
        self.encoder = RNNClass(E, H, num_layers=num_layers, dropout=dropout,
                                bidirectional=bidirectional, dtype=dtype, seed=rng)
        self.dirs = 2 if bidirectional else 1
        C = self.dirs * H                                   # context size
        if bidirectional:           # one bridge per state: 'bridge' for h, 'bridge_c' for c, ...
            for name in self._bridge_names():
                setattr(self, name, Linear(2 * H, H, dtype=dtype, seed=rng))
        self.tgt_embedding = Embedding(tgt_vocab, E, padding_idx=self.pad, dtype=dtype, seed=rng)
        extra = C if context in ("concat", "attention") else 0
        self.decoder = RNNClass(E + extra, H, num_layers=num_layers, dropout=dropout, dtype=dtype,
                                seed=rng)
        self.attention: Union[DotAttention, AdditiveAttention]
        if attends:
            if attention == "dot":
                if C != H:
                    raise ValueError(f"expected dot attention with encoder outputs of the "
                                     f"decoder's size {H}, got {C} (use 'additive')")
                self.attention = DotAttention(check_scale(scale))
            else:
                self.attention = AdditiveAttention(H, C, H, dtype=dtype, seed=rng)
        self.out = Linear(H + (C if self.output_context else 0), tgt_vocab, dtype=dtype, seed=rng)
        self.tgt_vocab = tgt_vocab

    def extra_repr(self) -> str:
        options = [f"context={self.context!r}"]
        options += [f"{k}={v!r}" for k, v, default in (
            ("output_context", self.output_context, self.context == "luong"),
            ("reverse_source", self.reverse_source, False),
            ("decoder_init", self.decoder_init, "state")) if v != default]
        return ", ".join(options)

    # -- encoder -------------------------------------------------------------
    def _xp(self) -> ArrayModule:
        return get_array_module(self.out.params["weight"])

    def _ids(self, ids: ArrayLike) -> Array:
        return to_backend(np.asarray(to_numpy(ids)), backend_name(self._xp()))

    def _source(self, src: ArrayLike, src_lengths: Optional[ArrayLike]
                ) -> Tuple[NDArray[Any], Optional[NDArray[Any]]]:
        """-> host ids (N, S), reversed within their lengths when asked, and the lengths
        (N,) or None: none given, or all full (a full-length batch takes the unmasked
        path)."""
        src = np.asarray(to_numpy(src))
        check_integer("src", src)
        if src.ndim != 2:
            check_shape("src", src, (None, None), "NS")
        N, S = src.shape
        lengths = None
        if src_lengths is not None:
            lengths = np.asarray(to_numpy(src_lengths))
            check_integer("src_lengths", lengths)
            check_shape("src_lengths", lengths, (N,), "N")
            length_mask(lengths, S)                         # lengths in 1..S, or ValueError
            if bool((lengths == S).all()):
                lengths = None
        if self.reverse_source:
            if lengths is None:
                src = src[:, ::-1]
            else:
                s, n = np.arange(S)[None, :], lengths[:, None]
                src = np.take_along_axis(src, np.where(s < n, n - 1 - s, s), axis=1)
        return src, lengths

    def encode(self, src: ArrayLike, src_lengths: Optional[ArrayLike] = None
               ) -> Tuple[Array, States, States, Optional[Array]]:
        """src (N, S) ids, lengths (N,) or None -> enc_out (N, S, dirs*H), the encoder's
        final state, the decoder's initial state, mask (N, S) or None (no padding)."""
        src, lengths = self._source(src, src_lengths)
        emb = self.src_embedding(np.ascontiguousarray(src.T))   # (S, N, E); host ids: checked
        # there and copied once (device ids would be checked on the device: a sync)
        enc_out, state = self.encoder(emb, lengths=lengths)              # (S, N, dirs*H)
        mask = None if lengths is None else self._ids(length_mask(lengths, src.shape[1]).T)
        return enc_out.transpose(1, 0, 2), state, self._start_state(state), mask

    def _bridge_names(self) -> List[str]:
        n = 1 if self.decoder_init == "h" else len(self.encoder.spec.states)
        return ["bridge" if i == 0 else "bridge_" + state
                for i, state in enumerate(self.encoder.spec.states[:n])]

    def _bridges(self) -> List[Linear]:
        return [getattr(self, name) for name in self._bridge_names()]

    def _start_state(self, state: States) -> States:
        """The decoder's initial state: the encoder's final states (bridged when
        bidirectional), with 'h' only the first, the others zero."""
        states = as_states(state)
        n = len(self._bridge_names())
        start = (list(states[:n]) if self.dirs == 1 else
                 [self._bridge_one(s, lin) for s, lin in zip(states, self._bridges())])
        xp = get_array_module(states[0])
        return from_states(tuple(start) + tuple(xp.zeros_like(start[0]) for _ in states[n:]))

    def _bridge_one(self, s: Array, lin: Linear) -> Array:
        L, N, H = self.num_layers, s.shape[1], self.hidden_size
        both = s.reshape(L, 2, N, H).transpose(0, 2, 1, 3).reshape(L, N, 2 * H)
        return get_array_module(s).tanh(lin(both))

    def _start_state_backward(self, d_state: States,
                              state0: States) -> Tuple[Optional[Array], ...]:
        """The decoder's initial-state gradient -> the encoder's final-state gradient
        (None for the states 'h' does not pass)."""
        d_states, n = as_states(d_state), len(self._bridge_names())
        d = (list(d_states[:n]) if self.dirs == 1 else
             [self._bridge_one_backward(dd, y, lin) for dd, y, lin in
              zip(d_states, as_states(state0), self._bridges())])
        return tuple(d) + (None,) * (len(d_states) - n)

    def _bridge_one_backward(self, d: Array, y: Array, lin: Linear) -> Array:
        L, N, H = self.num_layers, d.shape[1], self.hidden_size
        d_both = lin.backward(d * (1 - y * y))                           # (L, N, 2H)
        return d_both.reshape(L, N, 2, H).transpose(0, 2, 1, 3).reshape(2 * L, N, H)

    def _context_vector(self, state: States) -> Array:
        """The encoder's final top-layer state, both directions: (N, dirs*H)."""
        top = as_states(state)[0][-self.dirs:]                               # (dirs, N, H)
        return top.transpose(1, 0, 2).reshape(top.shape[1], self.dirs * self.hidden_size)

    # -- teacher-forced forward and backward ----------------------------------
    def forward(self, src: ArrayLike, src_lengths: Optional[ArrayLike],
                tgt_in: ArrayLike) -> Array:
        """src (N, S), src_lengths (N,) or None (fixed length), tgt_in (N, T)
        (<bos> y_1..y_{T-1}) -> logits (N, T, V)."""
        xp = self._xp()
        enc_out, enc_state, state0, mask = self.encode(src, src_lengths)
        tgt_in = np.asarray(to_numpy(tgt_in))
        check_integer("tgt_in", tgt_in)
        check_shape("tgt_in", tgt_in, (enc_out.shape[0], None), "NT")
        emb = self.tgt_embedding(np.ascontiguousarray(tgt_in.T))  # (T, N, E), host ids
        T, N = emb.shape[:2]
        ctx = None                                  # what the output layer reads besides s_t
        if self.context == "init":
            dec_out, _ = self.decoder(emb, state0)
        elif self.context == "concat":
            ctx = xp.broadcast_to(self._context_vector(enc_state), (T, N, enc_out.shape[2]))
            dec_out, _ = self.decoder(xp.concatenate([emb, ctx], axis=2), state0)
        elif self.context == "attention":
            keys = self.attention.project(enc_out)     # what depends on the keys alone: once
            state, outs, ctxs, weights = state0, [], [], []
            for t in range(T):
                query = as_states(state)[0][-1]                                # (N, H)
                c = self.attention.attend(query, keys, enc_out, mask)          # (N, dirs*H)
                # index: attend() has just set the weights, (N, 1, S)
                weights.append(self.attention.weights[:, 0])  # type: ignore[index]
                out, state = self.decoder(xp.concatenate([c, emb[t]], axis=1)[None], state)
                outs.append(out[0])
                ctxs.append(c)
            dec_out = xp.stack(outs)                                           # (T, N, H)
            ctx = xp.stack(ctxs)                                               # (T, N, dirs*H)
            self.attention_weights = xp.stack(weights, axis=1)                 # (N, T, S)
        else:                                                                  # 'luong'
            dec_out, _ = self.decoder(emb, state0)                             # (T, N, H)
            ctx = self.attention(dec_out.transpose(1, 0, 2), enc_out, enc_out, mask)
            ctx = ctx.transpose(1, 0, 2)                                       # (T, N, dirs*H)
            self.attention_weights = self.attention.weights                   # (N, T, S)
        if self.output_context:
            logits = self.out(xp.concatenate([ctx, dec_out], axis=2))          # (T, N, V)
        else:
            logits = self.out(dec_out)
        self._push((state0, T, emb.shape[2], enc_out.shape))
        return logits.transpose(1, 0, 2)

    def backward(self, dlogits: Array) -> None:
        """dlogits (N, T, V) -> None; every parameter's gradient accumulates."""
        with self._consume() as (state0, T, E, enc_shape):
            self._check_grad("dlogits", dlogits, (enc_shape[0], T, self.tgt_vocab),
                             self.dtype)
        xp = get_array_module(dlogits)
        N, S, C = enc_shape
        d_out = self.out.backward(xp.ascontiguousarray(dlogits.transpose(1, 0, 2)))  # (T, N, .)
        d_ctx, d_dec = (d_out[:, :, :C], d_out[:, :, C:]) if self.output_context else (None,
                                                                                      d_out)
        d_enc_out = None                                                     # (N, S, dirs*H)
        d_top = None                       # 'concat': the context vector's gradient (N, C)
        if self.context == "init":
            d_emb, d_state0 = self.decoder.backward(d_dec)
        elif self.context == "concat":
            dx, d_state0 = self.decoder.backward(d_dec)
            d_emb = dx[:, :, :E]
            d_top = dx[:, :, E:].sum(axis=0)
            if d_ctx is not None:
                d_top += d_ctx.sum(axis=0)
        elif self.context == "attention":
            d_emb = xp.empty((T, N, E), dtype=d_dec.dtype)
            d_state = None
            for t in range(T - 1, -1, -1):
                dx, d_state = self.decoder.backward(d_dec[t][None], d_state)
                d_c, d_emb[t] = dx[0, :, :C], dx[0, :, C:]
                if d_ctx is not None:
                    d_c = d_c + d_ctx[t]
                dq = self.attention.attend_backward(d_c)
                as_states(d_state)[0][-1] += dq                              # the query s_{t-1}
            dK, dV = self.attention.project_backward()     # every step's, in one product
            d_enc_out = dK + dV
            d_state0 = d_state
        else:                                                                # 'luong'
            # 'luong' always has output_context, so d_ctx is an array here
            d_ctx_t = d_ctx.transpose(1, 0, 2)  # type: ignore[union-attr]
            dq, dK, dV = self.attention.backward(xp.ascontiguousarray(d_ctx_t))
            d_emb, d_state0 = self.decoder.backward(d_dec + dq.transpose(1, 0, 2))
            d_enc_out = dK + dV
        self.tgt_embedding.backward(d_emb)
        d_state_enc = self._start_state_backward(d_state0, state0)
        if d_top is not None:           # 'concat': the context is the top layer's final state
            d_top = d_top.reshape(N, self.dirs, self.hidden_size).transpose(1, 0, 2)
            h = d_state_enc[0].copy()  # type: ignore[union-attr]  # h's: never None
            h[-self.dirs:] += d_top
            d_state_enc = (h,) + d_state_enc[1:]
        if d_enc_out is None:
            d_enc = None
        else:
            d_enc = xp.ascontiguousarray(d_enc_out.transpose(1, 0, 2))      # (S, N, dirs*H)
        d_src, _ = self.encoder.backward(d_enc, from_states(d_state_enc))
        self.src_embedding.backward(d_src)

    # -- decoding ------------------------------------------------------------
    def _start(self, src: ArrayLike, src_lengths: Optional[ArrayLike]
               ) -> Tuple[Source, States, List[Step]]:
        """Decoding's set-up for a batch of sources -> (enc_out, mask, ctx), the decoder's
        initial state and its parameters by layer. ``ctx`` is what every step reads: the
        context vector ('concat') or the projected keys ('attention', 'luong')."""
        enc_out, enc_state, state, mask = self.encode(src, src_lengths)
        ctx = None
        if self.context == "concat":
            ctx = self._context_vector(enc_state)
        elif self.context in ("attention", "luong"):
            ctx = self.attention.project(enc_out)
        steps: List[Step] = [self.decoder.stepper(layer) for layer in range(self.num_layers)]
        return [enc_out, mask, ctx], state, steps

    def _step(self, tok: ArrayLike, state: States, source: Source,
              steps: Sequence[Step]) -> Tuple[Array, States]:
        """One decoder step: tok (B,) ids -> logits (B, V) (on the model's backend), state.

        Decoding keeps no cache and has no dropout, so the step runs each decoder
        layer's forward-only step (``Cell.stepper``, prepared once per decoding in
        ``_start``), and indexes the embedding and applies the output layer directly:
        a layer's call would add its checks and bookkeeping to every token."""
        xp = self._xp()
        enc_out, mask, ctx = source
        x = self.tgt_embedding.params["weight"][self._ids(tok)]               # (B, E)
        c = None
        if self.context == "concat":
            x = xp.concatenate([x, ctx], axis=1)
            c = ctx
        elif self.context == "attention":
            c = self.attention.attend(as_states(state)[0][-1], ctx, enc_out, mask)
            x = xp.concatenate([c, x], axis=1)
        states, finals = as_states(state), []
        for layer, step in enumerate(steps):
            new = step(x, tuple(s[layer] for s in states))
            finals.append(new)
            x = new[0]                                                        # (B, H)
        state = from_states(tuple(xp.stack(f) if len(f) > 1 else f[0][None]  # (L, B, H) each
                                  for f in zip(*finals)))
        h = x
        if self.context == "luong":
            c = self.attention.attend(h, ctx, enc_out, mask)
        if self.output_context:
            h = xp.concatenate([c, h], axis=1)
        return xp.dot(h, self.out.params["weight"].T) + self.out.params["bias"], state

    def greedy_decode(self, src: ArrayLike, src_lengths: Optional[ArrayLike] = None,
                      max_len: int = 50) -> List[List[int]]:
        """Most likely token at every step, for a batch; lists of ids, <eos> excluded
        (without an end id, ``max_len`` tokens each). A model in training mode decodes
        in eval mode and returns to training mode; a model already in eval mode is
        left as it is (submodules included). ``max_len`` 0 decodes nothing (empty lists)."""
        max_len = _max_len(max_len)
        was = self.training
        if was:                     # (toggling walks every submodule: not per call if not needed)
            self.eval()
        try:
            with no_grad():
                source, state, steps = self._start(src, src_lengths)
                N = source[0].shape[0]
                tok = np.full(N, self.bos)
                outs, done = [], np.zeros(N, dtype=bool)
                for _ in range(max_len):
                    logits, state = self._step(tok, state, source, steps)
                    tok = to_numpy(logits.argmax(axis=1))
                    outs.append(tok)
                    if self.eos is not None:
                        done |= tok == self.eos
                        if done.all():
                            break
        finally:
            if was:
                self.train()
        if not outs:
            return [[] for _ in range(source[0].shape[0])]
        seqs = np.stack(outs, axis=1).tolist()
        if self.eos is None:
            return seqs
        return [row[:row.index(self.eos)] if self.eos in row else row for row in seqs]

    def beam_decode(self, src: ArrayLike, src_length: Optional[int] = None, beam_width: int = 4,
                    max_len: int = 50, alpha: float = 0.75) -> List[int]:
        """Beam search for one source (S,) ids: keeps ``beam_width`` hypotheses by summed
        log-probability; a hypothesis ends at <eos> (or after ``max_len`` tokens); the
        result maximises log P / len ** alpha (len counts <eos>). Returns ids, <eos>
        excluded."""
        width = check_positive_int("beam_width", beam_width)
        if _max_len(max_len) == 0:
            return []
        was = self.training
        if was:                     # (toggling walks every submodule: not per call if not needed)
            self.eval()
        try:
            with no_grad():
                lengths = None if src_length is None else np.asarray([int(src_length)])
                source, state, steps = self._start(np.asarray(to_numpy(src))[None], lengths)
                scores = np.zeros(1)
                seqs: List[List[int]] = [[]]
                finished: List[Tuple[float, List[int]]] = []
                tok = np.array([self.bos])
                for step in range(max_len):
                    logits, state = self._step(tok, state, source, steps)
                    logits = to_numpy(logits).astype(np.float64)
                    total = (scores[:, None] + log_softmax(logits)).ravel()
                    order = np.argsort(-total, kind="stable")[:width]
                    beam_idx, toks = np.divmod(order, logits.shape[1])
                    scores = total[order]
                    seqs = [seqs[b] + [int(t)] for b, t in zip(beam_idx, toks)]
                    ended = (toks == self.eos if self.eos is not None
                             else np.zeros(toks.shape, dtype=bool))
                    finished += [(scores[i] / len(seqs[i]) ** alpha, seqs[i][:-1])
                                 for i in np.flatnonzero(ended)]
                    live = np.flatnonzero(~ended)
                    if live.size == 0 or step == max_len - 1:
                        break
                    seqs, scores, tok = [seqs[i] for i in live], scores[live], toks[live]
                    state = select_state(state, beam_idx[live])
                    rows = self._ids(np.zeros(live.size, dtype=np.int64))  # one source, repeated
                    source = [None if a is None else a[rows] for a in source]
                finished += [(scores[i] / len(seqs[i]) ** alpha, seqs[i]) for i in live]
        finally:
            if was:
                self.train()
        return max(finished, key=lambda f: f[0])[1]


def _max_len(value: int) -> int:
    """``max_len`` of decoding: a non-negative integer (0: nothing to decode)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"expected max_len to be a non-negative integer, got {value!r}")
    return int(value)


def _token_id(name: str, value: Optional[int], optional: bool = False) -> Optional[int]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        what = "a non-negative integer" + (" or None" if optional else "")
        raise ValueError(f"expected {name} to be {what}, got {value!r}")
    return int(value)
