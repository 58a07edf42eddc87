"""Encoder-decoder (N -> M) with the three ways the seeds pass the source to the decoder.

Encoder: embedding + (bi)directional GRU/LSTM over the padded source, with
``lengths`` (packed semantics). Its final states, through a ``bridge``
(tanh(Linear(.)) of both directions' states when bidirectional), start the decoder.
The ``context`` scheme decides what else the decoder sees:

    'init'       the context only as the decoder's initial state (Cho et al.);
    'concat'     also the encoder's final top-layer state c, appended to every
                 decoder input: x_t = [emb(y_{t-1}); c]  (d2l's Seq2SeqDecoder);
    'attention'  at every step the context is recomputed by attention over all
                 encoder outputs, queried by the previous decoder state:
                 c_t = attn(s_{t-1}, enc_out), x_t = [c_t; emb(y_{t-1})] (Bahdanau).

Training uses teacher forcing: the decoder reads <bos> y_1 .. y_{T-1} and is
scored on y_1 .. y_T with cross-entropy that ignores padding. Decoding is
greedy or beam search (length-normalised score log P / len**alpha, ends at <eos>).
Token ids: batch-major (N, S) sources and (N, T) targets, as in d2l.
"""

import numpy as np

from .._checks import check_choice
from ..backend import backend_name, get_array_module, to_backend, to_numpy
from ..functional import log_softmax
from ..functional.registry import CELLS, as_states, from_states
from ..layers import AdditiveAttention, DotAttention, Embedding, Linear, Module, no_grad
from ..layers.base import check_positive_int, make_rng
from ..layers.recurrent import layer_class
from .lm import _select_state

CONTEXTS = ("init", "concat", "attention")


class Seq2Seq(Module):
    """Encoder-decoder; see the module docstring.

    Args:
        src_vocab, tgt_vocab: vocabulary sizes.
        embed_size, hidden_size, num_layers: of both encoder and decoder.
        cell: a registered cell ('gru', 'lstm', ...).  bidirectional: the encoder.
        context: 'init', 'concat' or 'attention'.  attention: 'additive' or 'dot'.
        pad, bos, eos: special token ids of the target (pad also of the source).
    """

    def __init__(self, src_vocab, tgt_vocab, embed_size=32, hidden_size=64, num_layers=1,
                 cell="gru", bidirectional=False, context="attention", attention="additive",
                 dropout=0.0, pad=0, bos=1, eos=2, dtype="float32", seed=None):
        super().__init__()
        self.context = check_choice("context", context, CONTEXTS)
        self.cell = check_choice("cell", cell, tuple(CELLS))
        check_choice("attention", attention, ("additive", "dot"))
        self.pad, self.bos, self.eos = int(pad), int(bos), int(eos)
        self.dtype = np.dtype(dtype)
        E, H = check_positive_int("embed_size", embed_size), check_positive_int(
            "hidden_size", hidden_size)
        self.hidden_size, self.num_layers = H, check_positive_int("num_layers", num_layers)
        rng = make_rng(seed)
        self.rng = rng
        RNNClass = layer_class(cell)
        self.src_embedding = Embedding(src_vocab, E, padding_idx=pad, dtype=dtype, seed=rng)
        self.encoder = RNNClass(E, H, num_layers=num_layers, dropout=dropout,
                                bidirectional=bidirectional, dtype=dtype, seed=rng)
        self.dirs = 2 if bidirectional else 1
        enc_out = self.dirs * H
        if bidirectional:           # one bridge per state: 'bridge' for h, 'bridge_c' for c, ...
            for name in self._bridge_names():
                setattr(self, name, Linear(2 * H, H, dtype=dtype, seed=rng))
        self.tgt_embedding = Embedding(tgt_vocab, E, padding_idx=pad, dtype=dtype, seed=rng)
        extra = enc_out if context in ("concat", "attention") else 0
        self.decoder = RNNClass(E + extra, H, num_layers=num_layers, dropout=dropout, dtype=dtype,
                                seed=rng)
        if context == "attention":
            if attention == "dot":
                if enc_out != H:
                    raise ValueError(f"expected dot attention with encoder outputs of the "
                                     f"decoder's size {H}, got {enc_out} (use 'additive')")
                self.attention = DotAttention()
            else:
                self.attention = AdditiveAttention(H, enc_out, H, dtype=dtype, seed=rng)
        self.out = Linear(H, tgt_vocab, dtype=dtype, seed=rng)
        self.tgt_vocab = tgt_vocab

    # -- encoder -------------------------------------------------------------
    def _xp(self):
        return get_array_module(self.out.params["weight"])

    def _ids(self, ids):
        return to_backend(np.asarray(to_numpy(ids)), backend_name(self._xp()))

    def encode(self, src, src_lengths):
        """src (N, S) ids, lengths (N,) -> enc_out (N, S, dirs*H), the encoder's final state,
        the decoder's initial state (bridged), mask (N, S)."""
        xp = self._xp()
        src = self._ids(src)
        lengths = np.asarray(to_numpy(src_lengths))
        emb = self.src_embedding(xp.ascontiguousarray(src.T))            # (S, N, E)
        enc_out, state = self.encoder(emb, lengths=lengths)              # (S, N, dirs*H)
        mask = xp.arange(src.shape[1])[None, :] < self._ids(lengths)[:, None]
        return enc_out.transpose(1, 0, 2), state, self._bridge(state), mask

    def _bridge_names(self):
        return ["bridge" if i == 0 else "bridge_" + state
                for i, state in enumerate(self.encoder.spec.states)]

    def _bridges(self):
        return [getattr(self, name) for name in self._bridge_names()]

    def _bridge(self, state):
        if self.dirs == 1:
            return state
        return from_states(tuple(self._bridge_one(s, lin)
                                 for s, lin in zip(as_states(state), self._bridges())))

    def _bridge_one(self, s, lin):
        L, N, H = self.num_layers, s.shape[1], self.hidden_size
        both = s.reshape(L, 2, N, H).transpose(0, 2, 1, 3).reshape(L, N, 2 * H)
        return get_array_module(s).tanh(lin(both))

    def _bridge_backward(self, d_state, state0):
        if self.dirs == 1:
            return d_state
        return from_states(tuple(self._bridge_one_backward(d, y, lin) for d, y, lin in
                                 zip(as_states(d_state), as_states(state0), self._bridges())))

    def _bridge_one_backward(self, d, y, lin):
        L, N, H = self.num_layers, d.shape[1], self.hidden_size
        d_both = lin.backward(d * (1 - y * y))                           # (L, N, 2H)
        return d_both.reshape(L, N, 2, H).transpose(0, 2, 1, 3).reshape(2 * L, N, H)

    def _context_vector(self, state):
        """The encoder's final top-layer state, both directions: (N, dirs*H)."""
        top = as_states(state)[0][-self.dirs:]                                             # (dirs, N, H)
        return top.transpose(1, 0, 2).reshape(top.shape[1], self.dirs * self.hidden_size)

    # -- teacher-forced forward and backward ----------------------------------
    def forward(self, src, src_lengths, tgt_in):
        """src (N, S), src_lengths (N,), tgt_in (N, T) (<bos> y_1..y_{T-1}) -> logits (N, T, V)."""
        xp = self._xp()
        enc_out, enc_state, state0, mask = self.encode(src, src_lengths)
        tgt_in = self._ids(tgt_in)
        emb = self.tgt_embedding(xp.ascontiguousarray(tgt_in.T))         # (T, N, E)
        T = emb.shape[0]
        if self.context == "init":
            dec_out, _ = self.decoder(emb, state0)
        elif self.context == "concat":
            ctx_vec = self._context_vector(enc_state)                   # (N, dirs*H)
            x = xp.concatenate([emb, xp.broadcast_to(ctx_vec, (T,) + ctx_vec.shape)], axis=2)
            dec_out, _ = self.decoder(x, state0)
        else:
            keys = self.attention.project(enc_out)     # what depends on the keys alone: once
            state, outs = state0, []
            for t in range(T):
                query = as_states(state)[0][-1]                                # (N, H)
                ctx = self.attention.attend(query, keys, enc_out, mask)        # (N, dirs*H)
                out, state = self.decoder(xp.concatenate([ctx, emb[t]], axis=1)[None], state)
                outs.append(out[0])
            dec_out = xp.stack(outs)                                           # (T, N, H)
        logits = self.out(dec_out)                                             # (T, N, V)
        self._push((state0, T, emb.shape[2], enc_out.shape,
                    keys.shape if self.context == "attention" else None))
        return logits.transpose(1, 0, 2)

    def backward(self, dlogits):
        """dlogits (N, T, V) -> None; every parameter's gradient accumulates."""
        with self._consume() as (state0, T, E, enc_shape, keys_shape):
            self._check_grad("dlogits", dlogits, (enc_shape[0], T, self.tgt_vocab),
                             self.dtype)
        xp = get_array_module(dlogits)
        d_dec = self.out.backward(xp.ascontiguousarray(dlogits.transpose(1, 0, 2)))   # (T, N, H)
        d_enc_out = xp.zeros(enc_shape, dtype=d_dec.dtype)                   # (N, S, dirs*H)
        d_enc_state = None
        if self.context == "init":
            d_emb, d_state0 = self.decoder.backward(d_dec)
        elif self.context == "concat":
            dx, d_state0 = self.decoder.backward(d_dec)
            d_emb = dx[:, :, :E]
            d_ctx = dx[:, :, E:].sum(axis=0)                                 # (N, dirs*H)
            d_enc_state = d_ctx
        else:
            d_emb = xp.empty((T,) + d_dec.shape[1:2] + (E,), dtype=d_dec.dtype)
            d_state = None
            C = enc_shape[2]
            d_keys = xp.zeros(keys_shape, dtype=d_dec.dtype)
            for t in range(T - 1, -1, -1):
                dx, d_state = self.decoder.backward(d_dec[t][None], d_state)
                d_ctx, d_emb[t] = dx[0, :, :C], dx[0, :, C:]
                dq, dk, dV = self.attention.backward(d_ctx)
                d_keys += dk
                d_enc_out += dV
                as_states(d_state)[0][-1] += dq                              # the query s_{t-1}
            d_enc_out += self.attention.project_backward(d_keys)            # the keys, once
            d_state0 = d_state
        self.tgt_embedding.backward(d_emb)
        d_state_enc = self._bridge_backward(d_state0, state0)
        if d_enc_state is not None:      # 'concat': the context is the top layer's final state
            d_top = d_enc_state.reshape(d_enc_state.shape[0], self.dirs, self.hidden_size)
            states = as_states(d_state_enc)
            h = states[0].copy()
            h[-self.dirs:] += d_top.transpose(1, 0, 2)
            d_state_enc = from_states((h,) + states[1:])
        d_src, _ = self.encoder.backward(xp.ascontiguousarray(d_enc_out.transpose(1, 0, 2)),
                                         d_state_enc)
        self.src_embedding.backward(d_src)

    # -- decoding ------------------------------------------------------------
    def _step(self, tok, state, enc_out, mask, ctx):
        """One decoder step: tok (B,) ids -> logits (B, V) as float64 on the host, state.
        ``ctx`` is what ``_start`` prepared: the context vector ('concat') or the
        projected keys ('attention')."""
        xp = self._xp()
        emb = self.tgt_embedding(self._ids(tok)[None])                  # (1, B, E)
        if self.context == "init":
            x = emb
        elif self.context == "concat":
            x = xp.concatenate([emb, ctx[None]], axis=2)
        else:
            query = as_states(state)[0][-1]
            c = self.attention.attend(query, ctx, enc_out, mask)
            x = xp.concatenate([c[None], emb], axis=2)
        out, state = self.decoder(x, state)
        return to_numpy(self.out(out[0])).astype(np.float64), state

    def _start(self, src, src_lengths):
        enc_out, enc_state, state, mask = self.encode(src, src_lengths)
        ctx = None
        if self.context == "concat":
            ctx = self._context_vector(enc_state)
        elif self.context == "attention":
            ctx = self.attention.project(enc_out)
        return enc_out, state, mask, ctx

    def greedy_decode(self, src, src_lengths, max_len=50):
        """Most likely token at every step, for a batch; lists of ids, <eos> excluded."""
        was = self.training
        self.eval()
        try:
            with no_grad():
                enc_out, state, mask, ctx = self._start(src, src_lengths)
                N = enc_out.shape[0]
                tok = np.full(N, self.bos)
                outs, done = [], np.zeros(N, dtype=bool)
                for _ in range(max_len):
                    logits, state = self._step(tok, state, enc_out, mask, ctx)
                    tok = logits.argmax(axis=1)
                    outs.append(tok)
                    done |= tok == self.eos
                    if done.all():
                        break
        finally:
            self.train(was)
        seqs = np.stack(outs, axis=1)
        return [list(row[:list(row).index(self.eos)] if self.eos in row else row)
                for row in seqs.tolist()]

    def beam_decode(self, src, src_length, beam_width=4, max_len=50, alpha=0.75):
        """Beam search for one source (S,) ids: keeps ``beam_width`` hypotheses by summed
        log-probability; a hypothesis ends at <eos>; the result maximises
        log P / len ** alpha (len counts <eos>). Returns ids, <eos> excluded."""
        width = check_positive_int("beam_width", beam_width)
        was = self.training
        self.eval()
        try:
            with no_grad():
                enc_out, state, mask, ctx = self._start(np.asarray(src)[None],
                                                            np.asarray([int(src_length)]))
                scores, seqs, finished = np.zeros(1), [[]], []
                tok = np.array([self.bos])
                live = np.arange(1)
                for step in range(max_len):
                    logits, state = self._step(tok, state, enc_out, mask, ctx)
                    total = (scores[:, None] + log_softmax(logits)).ravel()
                    order = np.argsort(-total, kind="stable")[:width]
                    beam_idx, toks = np.divmod(order, logits.shape[1])
                    scores = total[order]
                    seqs = [seqs[b] + [int(t)] for b, t in zip(beam_idx, toks)]
                    ended = toks == self.eos
                    finished += [(scores[i] / len(seqs[i]) ** alpha, seqs[i][:-1])
                                 for i in np.flatnonzero(ended)]
                    live = np.flatnonzero(~ended)
                    if live.size == 0 or step == max_len - 1:
                        break
                    seqs, scores, tok = [seqs[i] for i in live], scores[live], toks[live]
                    state = _select_state(state, beam_idx[live])
                    rows = np.zeros(live.size, dtype=np.int64)      # one source, repeated
                    enc_out, mask = enc_out[self._ids(rows)], mask[self._ids(rows)]
                    if ctx is not None:
                        ctx = ctx[self._ids(rows)]
                finished += [(scores[i] / len(seqs[i]) ** alpha, seqs[i]) for i in live]
        finally:
            self.train(was)
        return max(finished, key=lambda f: f[0])[1]
