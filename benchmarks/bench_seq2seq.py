"""Seq2seq training and decoding, npnn against a textbook NumPy peer and PyTorch.

    python benchmarks/bench_seq2seq.py                  # timing, both tasks, every variant
    python benchmarks/bench_seq2seq.py --write          # also update benchmarks/RESULTS.md
    python benchmarks/bench_seq2seq.py --accuracy 25 --tasks addition   # accuracy runs

The peer is the encoder-decoder of "Deep Learning from Scratch 2" (Koki Saito,
ch. 7-8; github.com/oreilly-japan/deep-learning-from-scratch-2), written afresh
here in that book's style (``Textbook*`` below): hand-written time layers, an
LSTM looping over time with a step object per step, attention as elementwise
products and sums, its own Adam and clipping. Its two tasks, with data generated
here from a seed:

* addition (``examples/addition.py``'s generator): "16+75" -> "91", questions
  padded with spaces to 7 characters, answers to 4 (after the start symbol "_"),
  50,000 distinct pairs of 0..999, 45,000 to train and 5,000 to test; hidden
  size 128;
* dates: ``examples/dates.py``'s generator (one of 14 human formats -> ISO),
  questions padded to 29 characters, answers of 10; 45,000 / 5,000 dates (test
  days unseen in training); hidden size 256.

The model and its settings are the book's for all three: LSTM encoder and
decoder, embedding 16, one shared character vocabulary, batch 128 (the last
partial batch dropped), Adam (lr 1e-3), gradient-norm clip 5, float32, the
decoder starting from the encoder's final h with c = 0 (npnn:
``decoder_init='h'``), fixed-length sequences (npnn: ``pad=None, eos=None``, no
lengths), greedy decoding of a fixed number of characters. Each library keeps
its own weight initialisation. Variants (npnn's options in brackets):

* plain (``context='init'``); peeky (``'concat'``, ``output_context=True``);
  reversed (``reverse_source=True``; the peers reverse the arrays);
* attention in the peer's form, Luong's (``context='luong'``, dot scores with
  ``scale=1.0``), and in npnn's Bahdanau form (``context='attention'``, dot,
  ``scale=1.0``), whose decoder steps one step at a time; the textbook has one
  form, so both rows compare with it; PyTorch runs each form.

Timing: seconds per epoch = the median time of one training step (forward,
backward, clip, Adam; npnn's through ``npnn.fit``, with its finiteness checks)
times the steps of an epoch (351), the steps timed in blocks ordered a b c c b a
(``bench_rnn.median_ms``). Decoding: ms per question, greedy, one question at a
time (the book's ``generate``) and a batch of ``--decode-batch`` questions at once.
One BLAS thread: run as a script, this file sets OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS and MKL_NUM_THREADS to 1 (unless set) before NumPy is imported,
and PyTorch runs with ``torch.set_num_threads(1)``.

``--accuracy E`` trains npnn (and with ``--peer-accuracy`` the textbook peer) for
E epochs per variant and reports the exact-match accuracy on the test set.
"""

import os

if __name__ == "__main__":      # one BLAS thread, set before NumPy is imported
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

import npnn  # noqa: E402
from npnn.training.loop import fit  # noqa: E402
from npnn.functional.accel import use_acceleration  # noqa: E402
from npnn.models import Seq2Seq  # noqa: E402
from npnn.training.seq2seq import fit_seq2seq  # noqa: E402
from npnn.optim import Adam  # noqa: E402
from bench_rnn import machine, median_ms, write_section  # noqa: E402

BATCH, EMBED, LR, CLIP = 128, 16, 1e-3, 5.0
HIDDEN = {"addition": 128, "dates": 256}
#: variant -> (npnn's Seq2Seq options, the textbook's decoder, PyTorch's decoder, reversed)
VARIANTS = {
    "plain": ({"context": "init"}, "plain", "plain", False),
    "peeky": ({"context": "concat", "output_context": True}, "peeky", "peeky", False),
    "reversed": ({"context": "init"}, "plain", "plain", True),
    "reversed+peeky": ({"context": "concat", "output_context": True}, "peeky", "peeky", True),
    "attention: Luong (the peer's form)": (
        {"context": "luong", "attention": "dot", "scale": 1.0}, "attention", "luong", False),
    "attention: Bahdanau (npnn's form)": (
        {"context": "attention", "attention": "dot", "scale": 1.0}, "attention", "bahdanau",
        False),
}
#: the variants timed per task (dates: the book reverses every source)
TASK_VARIANTS = {
    "addition": ["plain", "peeky", "reversed", "reversed+peeky",
                 "attention: Luong (the peer's form)", "attention: Bahdanau (npnn's form)"],
    "dates": ["reversed", "reversed+peeky", "reversed+attention: Luong (the peer's form)",
              "reversed+attention: Bahdanau (npnn's form)"],
}


def variant(name):
    """'reversed+X' is X with a reversed source."""
    if name in VARIANTS:
        return VARIANTS[name]
    base = name.split("+", 1)[1]
    options, peer, torch_form, _ = VARIANTS[base]
    return options, peer, torch_form, True


# -- the data ------------------------------------------------------------------------
class Task:
    """Fixed-width questions and answers as ids of one shared vocabulary: x (N, S),
    t (N, 1 + M) starting with the start symbol '_' (the book's layout)."""

    def __init__(self, name, pairs_train, pairs_test):
        self.name = name
        chars = sorted({c for q, a in pairs_train + pairs_test for c in q + a})
        self.chars, self.ids = chars, {c: i for i, c in enumerate(chars)}
        self.start = self.ids["_"]
        self.x_train, self.t_train = self._encode(pairs_train)
        self.x_test, self.t_test = self._encode(pairs_test)

    def _encode(self, pairs):
        return (np.array([[self.ids[c] for c in q] for q, _ in pairs]),
                np.array([[self.ids[c] for c in a] for _, a in pairs]))

    @property
    def V(self):
        return len(self.chars)

    def text(self, ids):
        return "".join(self.chars[i] for i in ids)


def addition_task(seed=1984, n=50000, n_test=5000):
    """examples/addition.py's questions: "a+b" padded to 7, "_" + (a + b) padded to 5."""
    import addition
    train, test = addition.make_data(n, n_test, seed)
    return Task("addition", train, test)


def dates_task(seed=0, n_train=45000, n_test=5000):
    """examples/dates.py's dates: the human form padded to 29, "_" + the ISO date."""
    import dates
    train, test = dates.make_data(n_train, n_test, seed)
    width = max(len(h) for h, _ in train + test)
    return Task("dates", [(h.ljust(width), "_" + iso) for h, iso in train],
                [(h.ljust(width), "_" + iso) for h, iso in test])


TASKS = {"addition": addition_task, "dates": dates_task}


# -- (a) the textbook peer ------------------------------------------------------------
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


class TextbookEmbedding:
    """Looked up one time step at a time; ids (N, T) -> (N, T, D)."""

    def __init__(self, W):
        self.params, self.grads = [W], [np.zeros_like(W)]

    def forward(self, ids):
        W, = self.params
        self.ids = ids
        out = np.empty(ids.shape + (W.shape[1],), dtype="f")
        for t in range(ids.shape[1]):
            out[:, t, :] = W[ids[:, t]]
        return out

    def backward(self, dout):
        dW, = self.grads
        dW[...] = 0
        for t in range(dout.shape[1]):
            np.add.at(dW, self.ids[:, t], dout[:, t, :])


class TextbookLSTMStep:
    """One time step; weights Wx (D, 4H), Wh (H, 4H), b (4H,), gate blocks f g i o."""

    def __init__(self, params):
        self.params = params

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        H = h_prev.shape[1]
        a = np.dot(x, Wx) + np.dot(h_prev, Wh) + b
        f, g = _sigmoid(a[:, :H]), np.tanh(a[:, H:2 * H])
        i, o = _sigmoid(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
        c = f * c_prev + g * i
        h = o * np.tanh(c)
        self.cache = (x, h_prev, c_prev, f, g, i, o, c)
        return h, c

    def backward(self, dh, dc):
        Wx, Wh, b = self.params
        x, h_prev, c_prev, f, g, i, o, c = self.cache
        tanh_c = np.tanh(c)
        ds = dc + dh * o * (1 - tanh_c ** 2)
        da = np.hstack((ds * c_prev * f * (1 - f), ds * i * (1 - g ** 2),
                        ds * g * i * (1 - i), dh * tanh_c * o * (1 - o)))
        self.grads = [np.dot(x.T, da), np.dot(h_prev.T, da), da.sum(axis=0)]
        return np.dot(da, Wx.T), np.dot(da, Wh.T), ds * f


class TextbookTimeLSTM:
    """The LSTM over a sequence (N, T, D) -> (N, T, H), a step object per step; a
    stateful one starts from ``set_state`` (c = 0 when none is given)."""

    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(p) for p in self.params]
        self.stateful, self.h, self.c, self.dh = stateful, None, None, None

    def set_state(self, h, c=None):
        self.h, self.c = h, c

    def forward(self, xs):
        N, T, _ = xs.shape
        H = self.params[1].shape[0]
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), dtype="f")
        if not self.stateful or self.c is None:
            self.c = np.zeros((N, H), dtype="f")
        hs = np.empty((N, T, H), dtype="f")
        self.steps = []
        for t in range(T):
            step = TextbookLSTMStep(self.params)
            self.h, self.c = step.forward(xs[:, t, :], self.h, self.c)
            hs[:, t, :] = self.h
            self.steps.append(step)
        return hs

    def backward(self, dhs):
        N, T, _ = dhs.shape
        dxs = np.empty((N, T, self.params[0].shape[0]), dtype="f")
        dh, dc, sums = 0, 0, [0, 0, 0]
        for t in reversed(range(T)):
            step = self.steps[t]
            dxs[:, t, :], dh, dc = step.backward(dhs[:, t, :] + dh, dc)
            for k, g in enumerate(step.grads):
                sums[k] += g
        for mine, s in zip(self.grads, sums):
            mine[...] = s
        self.dh = dh
        return dxs


class TextbookAffine:
    def __init__(self, W, b):
        self.params, self.grads = [W, b], [np.zeros_like(W), np.zeros_like(b)]

    def forward(self, x):
        W, b = self.params
        N, T, D = x.shape
        self.x = x
        return (np.dot(x.reshape(N * T, D), W) + b).reshape(N, T, -1)

    def backward(self, dout):
        W, _ = self.params
        N, T, D = self.x.shape
        d = dout.reshape(N * T, -1)
        self.grads[0][...] = np.dot(self.x.reshape(N * T, D).T, d)
        self.grads[1][...] = d.sum(axis=0)
        return np.dot(d, W.T).reshape(N, T, D)


class TextbookSoftmaxLoss:
    """Mean cross-entropy over (N, T) targets; -1 is ignored."""

    def forward(self, scores, ts):
        N, T, V = scores.shape
        y = _softmax(scores.reshape(N * T, V))
        ts = ts.reshape(N * T)
        mask = ts != -1
        loss = -np.sum(np.log(y[np.arange(N * T), ts]) * mask) / mask.sum()
        self.cache = (y, ts, mask, scores.shape)
        return loss

    def backward(self):
        y, ts, mask, shape = self.cache
        d = y.copy()
        d[np.arange(len(ts)), ts] -= 1
        d *= (mask / mask.sum())[:, None]
        return d.reshape(shape)


class TextbookAttentionStep:
    """Dot attention of one decoder output h (N, H) over hs (N, S, H), written as the
    book writes it: elementwise products and sums, its weights and its weighted sum."""

    def forward(self, hs, h):
        a = _softmax((hs * h[:, None, :]).sum(axis=2))      # (N, S)
        self.cache = (hs, h, a)
        return (hs * a[:, :, None]).sum(axis=1)             # (N, H)

    def backward(self, dc):
        hs, h, a = self.cache
        N, S, H = hs.shape
        dt = dc[:, None, :].repeat(S, axis=1)               # the weighted sum's backward
        dhs = dt * a[:, :, None]
        da = (dt * hs).sum(axis=2)
        ds = a * da
        ds -= a * ds.sum(axis=1, keepdims=True)             # the softmax's
        dt = ds[:, :, None].repeat(H, axis=2)               # the weights'
        dhs += dt * h[:, None, :]
        return dhs, (dt * hs).sum(axis=1)


class TextbookTimeAttention:
    """Every decoder output attends over all encoder outputs, one step at a time."""

    def forward(self, hs_enc, hs_dec):
        out = np.empty_like(hs_dec)
        self.steps = []
        for t in range(hs_dec.shape[1]):
            step = TextbookAttentionStep()
            out[:, t, :] = step.forward(hs_enc, hs_dec[:, t, :])
            self.steps.append(step)
        return out

    def backward(self, dout):
        dhs_enc, dhs_dec = 0, np.empty_like(dout)
        for t, step in enumerate(self.steps):
            dhs, dhs_dec[:, t, :] = step.backward(dout[:, t, :])
            dhs_enc = dhs_enc + dhs
        return dhs_enc, dhs_dec


class TextbookSeq2Seq:
    """The book's Seq2seq ('plain'), PeekySeq2seq ('peeky': the encoder's h joins every
    decoder input and the output layer's input) and AttentionSeq2seq ('attention':
    Luong's form, the output layer reads [c_t; h_t]); the decoder starts from the
    encoder's last h (c = 0). ``forward(xs, ts)`` -> loss with ts = [start, y_1..y_T]."""

    def __init__(self, V, D, H, decoder, rng):
        def w(shape, fan_in):
            return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype("f")

        def lstm(D_in, stateful):
            return TextbookTimeLSTM(w((D_in, 4 * H), D_in), w((H, 4 * H), H),
                                    np.zeros(4 * H, dtype="f"), stateful)
        self.kind, self.H = decoder, H
        self.enc_embed = TextbookEmbedding((rng.standard_normal((V, D)) / 100).astype("f"))
        self.enc_lstm = lstm(D, False)
        self.dec_embed = TextbookEmbedding((rng.standard_normal((V, D)) / 100).astype("f"))
        self.dec_lstm = lstm(D + (H if decoder == "peeky" else 0), True)
        out_in = H if decoder == "plain" else 2 * H
        self.affine = TextbookAffine(w((out_in, V), out_in), np.zeros(V, dtype="f"))
        self.attention = TextbookTimeAttention() if decoder == "attention" else None
        self.loss = TextbookSoftmaxLoss()
        layers = [self.enc_embed, self.enc_lstm, self.dec_embed, self.dec_lstm, self.affine]
        self.params = [p for layer in layers for p in layer.params]
        self.grads = [g for layer in layers for g in layer.grads]

    def _decode(self, ids, hs, h):
        """Decoder over ids (N, T) from the encoder's outputs hs and last h -> scores."""
        T = ids.shape[1]
        x = self.dec_embed.forward(ids)
        if self.kind == "peeky":
            peek = np.repeat(h[:, None, :], T, axis=1)
            x = np.concatenate((peek, x), axis=2)
        out = self.dec_lstm.forward(x)
        if self.kind == "peeky":
            out = np.concatenate((peek, out), axis=2)
        elif self.kind == "attention":
            out = np.concatenate((self.attention.forward(hs, out), out), axis=2)
        return self.affine.forward(out)

    def forward(self, xs, ts):
        hs = self.enc_lstm.forward(self.enc_embed.forward(xs))
        self.hs_shape = hs.shape
        h = hs[:, -1, :]
        self.dec_lstm.set_state(h)
        return self.loss.forward(self._decode(ts[:, :-1], hs, h), ts[:, 1:])

    def backward(self):
        H = self.H
        d = self.affine.backward(self.loss.backward())
        dhs = np.zeros(self.hs_shape, dtype="f")
        if self.kind == "attention":
            dhs_att, d_dec = self.attention.backward(d[:, :, :H])
            dhs += dhs_att
            d = d[:, :, H:] + d_dec
        elif self.kind == "peeky":
            d_peek, d = d[:, :, :H], d[:, :, H:]
        dx = self.dec_lstm.backward(d)
        dh = self.dec_lstm.dh
        if self.kind == "peeky":
            dh = dh + (d_peek + dx[:, :, :H]).sum(axis=1)
            dx = dx[:, :, H:]
        self.dec_embed.backward(dx)
        dhs[:, -1, :] += dh
        self.enc_embed.backward(self.enc_lstm.backward(dhs))

    def generate(self, xs, start_id, length):
        """Greedy: xs (N, S) -> ids (N, length); the book's generate for N = 1."""
        hs = self.enc_lstm.forward(self.enc_embed.forward(xs))
        h = hs[:, -1, :]
        self.dec_lstm.set_state(h)
        ids = np.full((len(xs), 1), start_id)
        out = []
        for _ in range(length):
            ids = self._decode(ids, hs, h).argmax(axis=2)
            out.append(ids[:, 0])
        return np.stack(out, axis=1)


class TextbookAdam:
    """Adam with the bias correction folded into the step size, as the book writes it."""

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2, self.t, self.m, self.v = lr, beta1, beta2, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m += (1 - self.beta1) * (g - m)
            v += (1 - self.beta2) * (g ** 2 - v)
            p -= lr_t * m / (np.sqrt(v) + 1e-7)


def textbook_clip(grads, max_norm):
    norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
    rate = max_norm / (norm + 1e-6)
    if rate < 1:
        for g in grads:
            g *= rate


# -- (b) PyTorch ----------------------------------------------------------------------
def torch_model(torch, V, H, form):
    """The same encoder-decoders from PyTorch modules: 'plain', 'peeky', 'luong' (the
    decoder LSTM over all steps, then one batched attention) or 'bahdanau' (an
    LSTMCell stepped, the previous h querying, the context joining its input)."""
    nn = torch.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed, self.tgt_embed = nn.Embedding(V, EMBED), nn.Embedding(V, EMBED)
            self.encoder = nn.LSTM(EMBED, H, batch_first=True)
            extra = H if form in ("peeky", "bahdanau") else 0
            if form == "bahdanau":
                self.cell = nn.LSTMCell(EMBED + extra, H)
            else:
                self.decoder = nn.LSTM(EMBED + extra, H, batch_first=True)
            self.out = nn.Linear(H if form in ("plain", "bahdanau") else 2 * H, V)

        def encode(self, src):
            hs, (h, c) = self.encoder(self.src_embed(src))
            return hs, (h, torch.zeros_like(c))

        def decode(self, ids, hs, state, peek):
            """ids (N, T) -> scores (N, T, V), the state after them."""
            x = self.tgt_embed(ids)
            if form == "bahdanau":
                h, c = state[0][0], state[1][0]
                outs = []
                for t in range(ids.shape[1]):
                    alpha = torch.softmax(torch.bmm(hs, h[:, :, None]), dim=1)   # (N, S, 1)
                    ctx = (alpha * hs).sum(dim=1)
                    h, c = self.cell(torch.cat([ctx, x[:, t]], dim=1), (h, c))
                    outs.append(h)
                return self.out(torch.stack(outs, dim=1)), (h[None], c[None])
            if form == "peeky":
                p = peek[:, None, :].expand(-1, ids.shape[1], -1)
                x = torch.cat([p, x], dim=2)
            out, state = self.decoder(x, state)
            if form == "peeky":
                out = torch.cat([p, out], dim=2)
            elif form == "luong":
                alpha = torch.softmax(out @ hs.transpose(1, 2), dim=2)            # (N, T, S)
                out = torch.cat([alpha @ hs, out], dim=2)
            return self.out(out), state

        def forward(self, src, tgt_in):
            hs, state = self.encode(src)
            return self.decode(tgt_in, hs, state, state[0][0])[0]

        @torch.no_grad()
        def generate(self, src, start_id, length):
            hs, state = self.encode(src)
            peek = state[0][0]
            ids = torch.full((src.shape[0], 1), start_id)
            out = []
            for _ in range(length):
                scores, state = self.decode(ids, hs, state, peek)
                ids = scores.argmax(dim=2)
                out.append(ids[:, 0])
            return torch.stack(out, dim=1)
    return Model()


# -- the three trainers ---------------------------------------------------------------
class Runs:
    """One task and variant, three implementations with the same data; each ``*_step``
    trains on the next minibatch, each ``*_decode`` decodes questions."""

    def __init__(self, task, name, torch, seed=0):
        options, peer_kind, torch_form, reverse = variant(name)
        self.task, H, V = task, HIDDEN[task.name], task.V
        x = task.x_train[:, ::-1] if reverse else task.x_train   # the peers reverse the data
        self.x_test = task.x_test[:, ::-1] if reverse else task.x_test
        self.M = task.t_train.shape[1] - 1                      # answer length
        rng = np.random.default_rng(seed)
        self.order = rng.permutation(len(x))
        self.steps_per_epoch = len(x) // BATCH
        self.x, self.t = x, task.t_train
        self.k = 0
        # npnn: the unreversed data and reverse_source
        self.model = Seq2Seq(V, V, EMBED, H, cell="lstm", pad=None, bos=task.start, eos=None,
                             decoder_init="h", reverse_source=reverse, seed=seed, **options)
        self.optimizer = Adam(self.model, lr=LR)
        self.loss = npnn.SoftmaxCrossEntropy()
        self.peer = TextbookSeq2Seq(V, EMBED, H, peer_kind, np.random.default_rng(seed))
        self.peer_optimizer = TextbookAdam(LR)
        self.torch = torch
        if torch is not None:
            torch.manual_seed(seed)
            self.tmodel = torch_model(torch, V, H, torch_form)
            self.toptimizer = torch.optim.Adam(self.tmodel.parameters(), lr=LR)

    def _next(self):
        if self.k + BATCH > len(self.order):
            self.k = 0
        idx = self.order[self.k:self.k + BATCH]
        self.k += BATCH
        return idx

    def npnn_accel_step(self):
        """npnn's step with every sequence op on its acceleration (``accel.pays``
        keeps sequences under 16 steps on the reference)."""
        with use_acceleration():
            self.npnn_step()

    def npnn_step(self):
        idx = self._next()
        batch = ((self.task.x_train[idx], None, self.t[idx, :-1]), self.t[idx, 1:])
        fit(self.model, self.loss, lambda rng: [batch], self.optimizer, epochs=1, clip=CLIP,
            rng=np.random.default_rng(0), log=None, progress=False)

    def peer_step(self):
        idx = self._next()
        self.peer.forward(self.x[idx], self.t[idx])
        self.peer.backward()
        textbook_clip(self.peer.grads, CLIP)
        self.peer_optimizer.update(self.peer.params, self.peer.grads)

    def torch_step(self):
        torch = self.torch
        idx = self._next()
        x, t = torch.from_numpy(np.ascontiguousarray(self.x[idx])), torch.from_numpy(self.t[idx])
        self.toptimizer.zero_grad()
        scores = self.tmodel(x, t[:, :-1])
        loss = torch.nn.functional.cross_entropy(scores.reshape(-1, scores.shape[2]),
                                                 t[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.tmodel.parameters(), CLIP)
        self.toptimizer.step()

    # decoding: n questions from the test set, one at a time or as one batch
    def npnn_decode(self, n, batched):
        """(in eval mode, as a model serving questions is: greedy_decode would otherwise
        switch every submodule to eval and back at each call)"""
        src = self.task.x_test[:n]
        self.model.eval()
        try:
            if batched:
                return np.array(self.model.greedy_decode(src, max_len=self.M))
            return np.array([self.model.greedy_decode(src[i:i + 1], max_len=self.M)[0]
                             for i in range(n)])
        finally:
            self.model.train()

    def peer_decode(self, n, batched):
        src = self.x_test[:n]
        if batched:
            return self.peer.generate(src, self.task.start, self.M)
        return np.concatenate([self.peer.generate(src[i:i + 1], self.task.start, self.M)
                               for i in range(n)])

    def torch_decode(self, n, batched):
        src = self.torch.from_numpy(np.ascontiguousarray(self.x_test[:n]))
        if batched:
            return self.tmodel.generate(src, self.task.start, self.M).numpy()
        return np.concatenate([self.tmodel.generate(src[i:i + 1], self.task.start,
                                                    self.M).numpy() for i in range(n)])


def lstm_products(task, name):
    """A function making the matrix products of one training step's LSTMs, encoder
    and decoder, as npnn's kernels make them (``bench_rnn.Case.time_blas``: the input
    products, T recurrent products each way, the weight-gradient products), with no
    elementwise work: no implementation of the model built from these BLAS calls can
    train faster (the textbook makes the same products, in other shapes)."""
    import bench_rnn
    options, H = variant(name)[0], HIDDEN[task.name]
    D_dec = EMBED + (H if options["context"] in ("concat", "attention") else 0)
    cases = []
    for part, T, D in (("encoder", task.x_train.shape[1], EMBED),
                       ("decoder", task.t_train.shape[1] - 1, D_dec)):
        key = f"{task.name} {part}"
        bench_rnn.SIZES[key] = (BATCH, T, D, H)         # a size of bench_rnn's for a moment
        try:
            cases.append(bench_rnn.Case("lstm", key, "forward+backward", "float32", np, None,
                                        "cpu"))
        finally:
            del bench_rnn.SIZES[key]
    return lambda: [case.time_blas() for case in cases]


def time_variant(task, name, torch, repeat, n_single, n_batch):
    """Seconds per epoch of [npnn, npnn with the accelerations forced, textbook, PyTorch,
    the LSTMs' matrix products alone], then ms per question decoded one at a time and
    in a batch, [npnn, textbook, PyTorch] (NaN for PyTorch when it is not installed)."""
    runs = Runs(task, name, torch)
    impls = ["npnn", "peer"] + (["torch"] if torch is not None else [])
    nan = float("nan")
    steps = ([runs.npnn_step, runs.npnn_accel_step, runs.peer_step]
             + ([runs.torch_step] if torch is not None else []) + [lstm_products(task, name)])
    ms = median_ms(steps, repeat, budget_s=0.0)
    epoch = [t * 1e-3 * runs.steps_per_epoch for t in ms]
    if torch is None:
        epoch.insert(3, nan)
    decoded = []
    for n, batched in ((n_single, False), (n_batch, True)):
        fns = [lambda k=k: getattr(runs, f"{k}_decode")(n, batched) for k in impls]
        decoded.append([t / n for t in median_ms(fns, 11, budget_s=1.0)]
                       + [nan] * (3 - len(impls)))
    return epoch, decoded[0], decoded[1]


# -- the attention backward of a step-wise decoder -------------------------------------
def attention_split_table(repeat, N=128, S=29, H=256, T=10):
    """Bahdanau's decoder at the dates' sizes: T single-query attention calls, then their
    backward, per step (every gradient at every step, as npnn did before: products over
    the length-1 query axis) against the split (dq per step, the rest in one call)."""
    import npnn.functional as F
    rng = np.random.default_rng(0)
    K = (0.1 * rng.standard_normal((N, S, H))).astype("f")
    qs = (0.1 * rng.standard_normal((T, N, 1, H))).astype("f")
    dcs = rng.standard_normal((T, N, 1, H)).astype("f")
    W_q = (0.05 * rng.standard_normal((H, H))).astype("f")
    w_v = (0.1 * rng.standard_normal(H)).astype("f")
    P = K @ W_q.T
    ops = {"dot": (lambda q: F.dot_attention_forward(q, K, K, None, 1.0)[2],
                   F.dot_attention_backward, F.dot_attention_query_backward),
           "additive": (lambda q: F.additive_attention_projected_forward(q, P, K, W_q, w_v)[2],
                        F.additive_attention_projected_backward,
                        F.additive_attention_projected_query_backward)}
    rows = [f"| score | forward, {T} steps | backward per step (before) | "
            "backward split (dq per step, the rest once) | before/split |", "|---|---|---|---|---|"]
    for name, (forward, backward, query) in ops.items():
        caches = [forward(q) for q in qs]

        def per_step():
            for t in range(T - 1, -1, -1):
                backward(dcs[t], caches[t])

        def split():
            for t in range(T - 1, -1, -1):
                query(dcs[t], caches[t])
            backward(np.concatenate(list(dcs), axis=1), F.concat_attention_caches(caches))
        fwd, before, after = median_ms([lambda: [forward(q) for q in qs], per_step, split],
                                       repeat)
        rows.append(f"| {name} | {fwd:.2f} ms | {before:.2f} ms | {after:.2f} ms | "
                    f"{before / after:.1f} |")
        print(rows[-1], flush=True)
    return rows


# -- accuracy ---------------------------------------------------------------------------
def npnn_accuracy(task, name, epochs, decoder_init="h", log=print, seed=0):
    """Exact match on the test set after each epoch, npnn through fit_seq2seq."""
    options, _, _, reverse = variant(name)
    model = Seq2Seq(task.V, task.V, EMBED, HIDDEN[task.name], cell="lstm", pad=None,
                    bos=task.start, eos=None, decoder_init=decoder_init,
                    reverse_source=reverse, seed=seed, **options)
    t0 = time.perf_counter()
    state = fit_seq2seq(model, (task.x_train, task.t_train[:, 1:]),
                        (task.x_test, task.t_test[:, 1:]), epochs=epochs, batch_size=BATCH,
                        lr=LR, clip=CLIP, rng=np.random.default_rng(seed),
                        log=lambda line: log(f"  [npnn {task.name} {name}] {line}"))
    return ([r["test_exact_match"] for r in state.history],
            (time.perf_counter() - t0) / epochs, model)


def peer_accuracy(task, name, epochs, log=print, seed=0):
    """The same for the textbook peer, its own training loop (the book's Trainer)."""
    _, kind, _, reverse = variant(name)
    peer = TextbookSeq2Seq(task.V, EMBED, HIDDEN[task.name], kind, np.random.default_rng(seed))
    optimizer, rng = TextbookAdam(LR), np.random.default_rng(seed)
    x, t = (task.x_train[:, ::-1], task.x_test[:, ::-1]) if reverse else (task.x_train,
                                                                          task.x_test)
    accs, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        for i in range(len(x) // BATCH):
            idx = order[i * BATCH:(i + 1) * BATCH]
            peer.forward(x[idx], task.t_train[idx])
            peer.backward()
            textbook_clip(peer.grads, CLIP)
            optimizer.update(peer.params, peer.grads)
        guess = np.concatenate([peer.generate(t[i:i + 1000], task.start,
                                              task.t_test.shape[1] - 1)
                                for i in range(0, len(t), 1000)])
        accs.append(float((guess == task.t_test[:, 1:]).all(axis=1).mean()))
        log(f"  [peer {task.name} {name}] epoch {epoch + 1}: test exact match {accs[-1]:.4f}")
    return accs, (time.perf_counter() - t0) / epochs


# -- main ----------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="addition,dates")
    p.add_argument("--variants", default=None,
                   help="comma-separated variant names (default: every one of the task)")
    p.add_argument("--repeat", type=int, default=10, help="timed training steps per library")
    p.add_argument("--single", type=int, default=20, help="questions decoded one at a time")
    p.add_argument("--decode-batch", type=int, default=1000, help="questions in a batch")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--accuracy", type=int, default=0, metavar="EPOCHS",
                   help="instead of timing: train EPOCHS epochs and report test accuracy")
    p.add_argument("--peer-accuracy", action="store_true", help="also the peer's accuracy")
    p.add_argument("--decoder-init", default="h", choices=("h", "state"),
                   help="npnn's decoder_init in the accuracy runs (h: the textbook's)")
    p.add_argument("--attention", action="store_true",
                   help="only the table of a step-wise decoder's attention backward")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/bench_seq2seq.py"] + [shlex.quote(a) for a in argv])
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(1)
        except ImportError:
            print("PyTorch is not installed: no PyTorch column")
    info = machine(torch)
    from npnn.functional.accel import _numba
    if _numba.numba() is not None:
        info += f"; numba {_numba.numba().__version__} (the accelerations' step kernels)"
    print(info)
    if args.attention:
        return finish(attention_split_table(args.repeat), args, "bench_seq2seq:attention",
                      "The attention backward of a step-wise (Bahdanau) decoder",
                      f"`{command}` — {info}. N = 128 sequences, S = 29 keys, H = A = 256, "
                      "T = 10 decoder steps (the dates task), float32; medians of blocks "
                      "a b c c b a. Before: each step's backward computes every gradient, "
                      "with products over the single query; split: `*_query_backward` per "
                      "step, then one backward on `concat_attention_caches`.")
    tasks = {name: TASKS[name]() for name in args.tasks.split(",")}
    if args.accuracy:
        return accuracy_main(args, tasks, f"`{command}` — {info}")
    rows = ["| task | variant | npnn s/epoch | npnn, accelerations forced | textbook | "
            "PyTorch | LSTM products alone | textbook/npnn | PyTorch/npnn | textbook/products | "
            "decode 1 at a time, ms/question: npnn | textbook | PyTorch | "
            f"batch of {args.decode_batch}: npnn | textbook | PyTorch |", "|" + "---|" * 16]
    for task in tasks.values():
        names = args.variants.split(",") if args.variants else TASK_VARIANTS[task.name]
        for name in names:
            epoch, single, batched = time_variant(task, name, torch, args.repeat, args.single,
                                                  args.decode_batch)
            rows.append(f"| {task.name} | {name} | {epoch[0]:.1f} | {epoch[1]:.1f} | "
                        f"{epoch[2]:.1f} | {epoch[3]:.1f} | {epoch[4]:.1f} | "
                        f"{epoch[2] / epoch[0]:.2f} | {epoch[3] / epoch[0]:.2f} | "
                        f"{epoch[2] / epoch[4]:.2f} | {single[0]:.2f} | {single[1]:.2f} | "
                        f"{single[2]:.2f} | {batched[0]:.3f} | {batched[1]:.3f} | "
                        f"{batched[2]:.3f} |")
            print(rows[-1], flush=True)
    return finish(rows, args, "bench_seq2seq:" + ",".join(tasks),
                  "Seq2seq against the textbook (\"Deep Learning from Scratch 2\") and PyTorch "
                  f"({', '.join(tasks)})",
                  f"`{command}` — {info}; one BLAS thread (OPENBLAS_NUM_THREADS=1 set before "
                  "NumPy is imported; torch.set_num_threads(1)). Seconds per epoch: the median "
                  f"of {args.repeat} training steps per library, timed in blocks ordered "
                  "a b c c b a, times the 351 steps of an epoch (45,000 questions, batch 128). "
                  f"Decoding: greedy, {args.single} test questions one at a time and "
                  f"{args.decode_batch} as one batch, the median of at least 11 calls per "
                  "library in the same blocks (about a second each). \"npnn\" runs as installed "
                  "(`accel.pays` accelerates every encoder and decoder here: 128 sequences "
                  "are rows enough from two steps; decoding runs the cells' forward-only "
                  "steps, `Cell.prepare`); \"accelerations forced\" runs every "
                  "sequence op on its acceleration (`use_acceleration()`). \"LSTM products "
                  "alone\": the matrix products of the step's encoder and decoder LSTMs (input, "
                  "recurrent both ways, weight gradients) with no other work, timed in the same "
                  "blocks; textbook/products is the largest speed-up over the textbook that any "
                  "implementation making these products could reach. Settings in the script's "
                  "docstring.")


def finish(rows, args, key, heading, text):
    """Print the table; with ``--write`` also put it in RESULTS.md under ``key``."""
    table = "\n".join(rows)
    print()
    print(table)
    if args.write:
        write_section(os.path.join(HERE, "RESULTS.md"), key,
                      f"## {heading}\n\n{text}\n\n{table}\n")
    return 0


def accuracy_main(args, tasks, info):
    rows = ["| task | variant | epochs | npnn decoder_init | npnn test exact match | textbook | "
            "npnn s/epoch (with evaluation) | textbook |", "|" + "---|" * 8]
    peers = {}                  # the textbook's model and data of a variant: trained once
    for task in tasks.values():
        names = args.variants.split(",") if args.variants else TASK_VARIANTS[task.name]
        for name in names:
            accs, secs, _ = npnn_accuracy(task, name, args.accuracy, args.decoder_init)
            peer = ("-", "-")
            if args.peer_accuracy:
                key = (task.name,) + variant(name)[1::2]
                if key not in peers:
                    peers[key] = peer_accuracy(task, name, args.accuracy)
                p_accs, p_secs = peers[key]
                peer = (f"{100 * p_accs[-1]:.1f}%", f"{p_secs:.0f}")
            rows.append(f"| {task.name} | {name} | {args.accuracy} | {args.decoder_init} | "
                        f"{100 * accs[-1]:.1f}% | {peer[0]} | {secs:.0f} | {peer[1]} |")
            print(rows[-1], flush=True)
    start = "h, c = 0" if args.decoder_init == "h" else "the whole state (h, c)"
    return finish(rows, args, f"bench_seq2seq:accuracy:{','.join(tasks)}:{args.decoder_init}",
                  f"Seq2seq accuracy ({', '.join(tasks)}; npnn's decoder from {start})",
                  f"{info}. Exact match (the whole answer right) on the 5,000 test questions "
                  "after the last epoch, greedy decoding in batches.")


if __name__ == "__main__":
    sys.exit(main())
