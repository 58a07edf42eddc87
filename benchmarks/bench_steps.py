"""Step-wise use, npnn against a textbook NumPy step and PyTorch, side by side in one process.

    python benchmarks/bench_steps.py            # every case
    python benchmarks/bench_steps.py --write    # also update benchmarks/RESULTS.md

What a decoder, a sampler or a hand-written loop does: one time step at a time.

* Cells: ``npnn.RNNCell``/``LSTMCell``/``GRUCell`` stepped ``STEPS`` times
  forward and backpropagated in reverse, against (a) the same loop written as a
  textbook NumPy step (CS231n's ``lstm_step_forward``/``backward``: the
  equations with NumPy, weight gradients accumulated per step, nothing else)
  and (b) PyTorch's ``nn.RNNCell``/``LSTMCell``/``GRUCell`` loop with autograd.
  Times per step, forward alone (npnn and PyTorch without caches / autograd)
  and forward + backward, at (N, H) = (1, 512) and (32, 256), D = H.
* ``RNNLM.generate``: characters per second, greedy, the default model of
  ``npnn train`` (LSTM, H 256, embedding 64) with a 100-token vocabulary,
  against the same model in PyTorch (its weights copied) decoded with the
  same loop; both must pick the same characters.
* ``Seq2Seq.greedy_decode``: sequences per second, one source at a time
  (batch 1) and a batch of 64, GRU encoder-decoder with additive attention
  (embedding 16, hidden 128, sources of 12, answers of 10 tokens), against
  the same model in PyTorch decoded step by step; both must decode alike.

* ``--crossover``: where the acceleration starts to pay. For each cell, input
  and hidden size, batch N and length T, the time of a sequence forward +
  backward on the reference path divided by the accelerated path's (both
  forced): below 1 the reference is faster. ``accel.MIN_STEPS``,
  ``accel.MIN_ROWS`` and ``accel.ROWS_PER_WIDTH`` are read off this table.

Times are medians of blocks ordered a b c c b a (see bench_rnn.median_ms), about
``BUDGET_S`` seconds of each.
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import npnn  # noqa: E402
from npnn.functional import accel  # noqa: E402
from npnn.functional.activations import sigmoid  # noqa: E402
from npnn.functional.registry import CELLS as REGISTRY  # noqa: E402
from npnn.models import RNNLM, Seq2Seq  # noqa: E402
from bench_rnn import machine, median_ms, write_section  # noqa: E402

STEPS = 20
#: Seconds of timed calls per function and case (more than bench_rnn's 1 s: steps are
#: short, and a 2-core machine's drift swung 20-step loops by 30% at 1 s).
BUDGET_S = 3.0
SIZES = ((1, 512), (32, 256))
CELLS = ("rnn", "lstm", "gru")


# -- the textbook step, written as a course would write it ---------------------------
def textbook_forward(cell, x, state, W_ih, W_hh, b):
    """One step, CS231n style: returns the new state and the step's cache."""
    h = state[0]
    if cell == "rnn":
        h1 = np.tanh(x @ W_ih.T + h @ W_hh.T + b)
        return (h1,), (x, h, h1)
    if cell == "lstm":
        c = state[1]
        H = h.shape[1]
        z = x @ W_ih.T + h @ W_hh.T + b
        i, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])
        g, o = np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        c1 = f * c + i * g
        tc = np.tanh(c1)
        return (o * tc, c1), (x, h, c, i, f, g, o, tc)
    H = h.shape[1]
    gi = x @ W_ih.T + b[0]
    gh = h @ W_hh.T + b[1]
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return ((1 - z) * n + z * h,), (x, h, r, z, n, gh[:, 2 * H:])


def textbook_backward(cell, d, cache, W_ih, W_hh, grads):
    """One step back: d (gradients of the new state) -> (dx, gradients of the old state);
    the weight gradients accumulate in ``grads`` (dW_ih, dW_hh, db)."""
    if cell == "rnn":
        x, h, h1 = cache
        da = d[0] * (1 - h1 * h1)
        dgi = dgh = da
        dprev = (da @ W_hh,)
    elif cell == "lstm":
        x, h, c, i, f, g, o, tc = cache
        dh, dc = d
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        dz = np.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g * g),
                             do * o * (1 - o)], axis=1)
        dgi = dgh = dz
        dprev = (dz @ W_hh, dc * f)
    else:
        x, h, r, z, n, gh_n = cache
        dh = d[0]
        da_n = dh * (1 - z) * (1 - n * n)
        da_r = da_n * gh_n * r * (1 - r)
        da_z = dh * (h - n) * z * (1 - z)
        dgi = np.concatenate([da_r, da_z, da_n], axis=1)
        dgh = np.concatenate([da_r, da_z, da_n * r], axis=1)
        dprev = (dh * z + dgh @ W_hh,)
    grads[0] += np.dot(dgi.T, x)
    grads[1] += np.dot(dgh.T, h)
    grads[2] += dgi.sum(axis=0)
    return dgi @ W_ih, dprev


class CellCase:
    """STEPS steps of one cell at one size, three ways."""

    def __init__(self, cell, N, H, torch):
        self.cell, self.N, self.H = cell, N, H
        rng = np.random.default_rng(0)
        D = H
        self.layer = {"rnn": npnn.RNNCell, "lstm": npnn.LSTMCell, "gru": npnn.GRUCell}[cell](
            D, H, seed=0)
        p = self.layer.params
        self.W = (p["weight_ih"], p["weight_hh"])
        self.b = (p["bias_ih"], p["bias_hh"]) if cell == "gru" else p["bias_ih"] + p["bias_hh"]
        self.n_states = 2 if cell == "lstm" else 1
        self.xs = rng.standard_normal((STEPS, N, D)).astype(np.float32)
        self.ds = rng.standard_normal((STEPS, N, H)).astype(np.float32)
        self.state0 = tuple(np.zeros((N, H), np.float32) for _ in range(self.n_states))
        self.grads = [np.zeros_like(self.W[0]), np.zeros_like(self.W[1]),
                      np.zeros(self.W[0].shape[0], np.float32)]
        self.torch = torch
        if torch is not None:
            cls = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}
            self.tmod = cls[cell](D, H)
            with torch.no_grad():
                for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(self.tmod, k).copy_(torch.from_numpy(p[k]))
            self.txs = torch.from_numpy(self.xs)
            self.tds = torch.from_numpy(self.ds)

    def _state(self, s):
        return s if self.n_states > 1 else s[0]

    # npnn's cell layer
    def npnn_forward(self):
        with npnn.no_grad():
            s = self._state(self.state0)
            for t in range(STEPS):
                s = self.layer(self.xs[t], s)

    def npnn_both(self):
        s = self._state(self.state0)
        for t in range(STEPS):
            s = self.layer(self.xs[t], s)
        d = None
        for t in range(STEPS - 1, -1, -1):
            dh = self.ds[t] if d is None else self.ds[t] + d[0]
            if self.n_states > 1:
                _, d = self.layer.backward(dh, None if d is None else d[1])
            else:
                _, d = self.layer.backward(dh)
                d = (d,)

    # the textbook step
    def textbook_forward(self):
        s = self.state0
        for t in range(STEPS):
            s, _ = textbook_forward(self.cell, self.xs[t], s, *self.W, self.b)

    def textbook_both(self):
        s, caches = self.state0, []
        for t in range(STEPS):
            s, cache = textbook_forward(self.cell, self.xs[t], s, *self.W, self.b)
            caches.append(cache)
        d = tuple(np.zeros_like(a) for a in s)
        for t in range(STEPS - 1, -1, -1):
            d = (d[0] + self.ds[t],) + d[1:]
            _, d = textbook_backward(self.cell, d, caches[t], *self.W, self.grads)

    # PyTorch
    def torch_forward(self):
        with self.torch.no_grad():
            s = None
            for t in range(STEPS):
                s = self.tmod(self.txs[t], s)

    def torch_both(self):
        s, loss = None, 0
        for t in range(STEPS):
            s = self.tmod(self.txs[t], s)
            h = s[0] if isinstance(s, tuple) else s
            loss = loss + (h * self.tds[t]).sum()
        loss.backward()


# -- generation -----------------------------------------------------------------------
def lm_case(torch, V=100, n=200):
    lm = RNNLM(V, 256, "lstm", 1, embedding_dim=64, seed=0)
    prefix = list(range(10))

    def ours():
        return lm.generate(prefix, n)
    if torch is None:
        return ours, None, n
    emb = torch.nn.Embedding(V, 64)
    rnn = torch.nn.LSTM(64, 256)
    dec = torch.nn.Linear(256, V)
    sd = lm.state_dict()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(sd["embedding.weight"]))
        for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(rnn, k).copy_(torch.from_numpy(sd["rnn." + k]))
        dec.weight.copy_(torch.from_numpy(sd["decoder.weight"]))
        dec.bias.copy_(torch.from_numpy(sd["decoder.bias"]))

    def theirs():
        with torch.no_grad():
            out, state = rnn(emb(torch.tensor(prefix)[:, None]))
            tok = int(dec(out[-1, 0]).argmax())
            toks = list(prefix) + [tok]
            for _ in range(n - 1):
                out, state = rnn(emb(torch.tensor([[tok]])), state)
                tok = int(dec(out[0, 0]).argmax())
                toks.append(tok)
            return toks
    return ours, theirs, n


class TorchSeq2Seq:
    """npnn's Seq2Seq (GRU, additive attention, context='attention', one encoder
    direction) rebuilt from PyTorch modules with the same weights."""

    def __init__(self, torch, model):
        self.torch = torch
        sd = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
        E, H = model.src_embedding.params["weight"].shape[1], model.hidden_size
        self.src_emb = torch.nn.Embedding.from_pretrained(sd["src_embedding.weight"])
        self.tgt_emb = torch.nn.Embedding.from_pretrained(sd["tgt_embedding.weight"])
        self.enc = torch.nn.GRU(E, H)
        self.dec = torch.nn.GRU(E + H, H)
        with torch.no_grad():
            for mod, prefix in ((self.enc, "encoder."), (self.dec, "decoder.")):
                for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                    getattr(mod, k).copy_(sd[prefix + k])
        self.W_q, self.W_k, self.w_v = (sd["attention." + k] for k in ("W_q", "W_k", "w_v"))
        self.out_W, self.out_b = sd["out.weight"], sd["out.bias"]
        self.bos, self.eos = model.bos, model.eos

    def decode(self, src, max_len):
        torch = self.torch
        with torch.no_grad():
            src = torch.from_numpy(np.asarray(src)).T                 # (S, N)
            enc_out, h = self.enc(self.src_emb(src))                  # (S, N, H)
            K = enc_out.transpose(0, 1)                               # (N, S, H)
            P = K @ self.W_k.T                                        # (N, S, A)
            tok = torch.full((src.shape[1],), self.bos)
            outs = []
            for _ in range(max_len):
                u = torch.tanh(P + (h[-1] @ self.W_q.T)[:, None, :])
                alpha = torch.softmax(u @ self.w_v, dim=1)            # (N, S)
                ctx = (alpha[:, :, None] * K).sum(1)
                x = torch.cat([ctx, self.tgt_emb(tok)], dim=1)[None]
                out, h = self.dec(x, h)
                tok = (out[0] @ self.out_W.T + self.out_b).argmax(1)
                outs.append(tok)
            return torch.stack(outs, 1).numpy()


def seq2seq_case(torch, batch, S=12, max_len=10, V=40):
    model = Seq2Seq(V, V, 16, 128, cell="gru", context="attention", seed=0)
    rng = np.random.default_rng(0)
    src = rng.integers(3, V, size=(batch, S))
    lengths = np.full(batch, S)

    def ours():
        return model.greedy_decode(src, lengths, max_len=max_len)
    if torch is None:
        return ours, None, batch
    peer = TorchSeq2Seq(torch, model)

    def theirs():
        return peer.decode(src, max_len)
    return ours, theirs, batch, model


def crossover_table(repeat, cells=CELLS, sizes=((64, 256), (512, 512)), batches=(1, 4, 32),
                    lengths=(2, 4, 8, 16, 32, 64)):
    """Reference / accelerated time of a forward + backward, both forced."""
    rows = ["| cell | D, H | N | " + " | ".join(f"T={T}" for T in lengths) + " |",
            "|" + "---|" * (3 + len(lengths))]
    for cell in cells:
        spec = REGISTRY[cell]
        for D, H in sizes:
            for N in batches:
                ratios = []
                for T in lengths:
                    rng = np.random.default_rng(0)
                    k = 1 / np.sqrt(H)
                    params = {p.arg: rng.uniform(-k, k, shape).astype(np.float32)
                              for p, shape in spec.param_shapes(D, H)}
                    x = rng.standard_normal((T, N, D)).astype(np.float32)
                    dout = rng.standard_normal((T, N, H)).astype(np.float32)
                    states = (None,) * spec.n_states

                    def run(force):
                        with force():
                            _, _, cache = spec.run(x, states, params)
                        spec.run_backward(dout, states, cache)
                    ref, fast = median_ms([lambda: run(accel.use_reference),
                                           lambda: run(accel.use_acceleration)], repeat,
                                          budget_s=0.3)
                    ratios.append(ref / fast)
                rows.append(f"| {cell} | {D}, {H} | {N} | "
                            + " | ".join(f"{r:.2f}" for r in ratios) + " |")
                print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    p.add_argument("--crossover", action="store_true",
                   help="only the table of where the acceleration pays")
    args = p.parse_args(argv)
    if args.crossover:
        print(machine(None))
        table = crossover_table(args.repeat)
        print()
        print(table)
        if args.write:
            section = ("## When the acceleration pays\n\n"
                       f"`python benchmarks/bench_steps.py --crossover` — {machine(None)}. "
                       "Time of a sequence forward + backward (float32) on the reference path "
                       "divided by the accelerated path's, both forced; below 1 the reference "
                       "is faster. `accel.pays` lets the acceleration run on NumPy only from "
                       f"T >= {accel.MIN_STEPS} and T * N >= {accel.MIN_ROWS}, or T >= 2 and "
                       f"T * N >= max({accel.MIN_SHORT_ROWS}, {accel.ROWS_PER_WIDTH} (D + H)).\n\n"
                       + table + "\n")
            write_section(os.path.join(HERE, "RESULTS.md"), "bench_steps:crossover", section)
        return 0
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch is not installed: npnn-only figures")
    info = machine(torch)
    print(info)
    rows = ["| cell | N, H | forward: npnn us/step | textbook | PyTorch | fwd+bwd: npnn us/step | "
            "textbook | PyTorch | npnn/textbook (fwd, fwd+bwd) | npnn/PyTorch (fwd, fwd+bwd) |",
            "|" + "---|" * 10]
    for cell in CELLS:
        for N, H in SIZES:
            c = CellCase(cell, N, H, torch)
            fns = [c.npnn_forward, c.textbook_forward] + ([c.torch_forward] if torch else [])
            f = [ms * 1e3 / STEPS for ms in median_ms(fns, args.repeat, budget_s=BUDGET_S)]
            fns = [c.npnn_both, c.textbook_both] + ([c.torch_both] if torch else [])
            b = [ms * 1e3 / STEPS for ms in median_ms(fns, args.repeat, budget_s=BUDGET_S)]
            tf, tb = (f[2], b[2]) if torch else (float("nan"),) * 2
            rows.append(f"| {cell} | {N}, {H} | {f[0]:.1f} | {f[1]:.1f} | {tf:.1f} | {b[0]:.1f} | "
                        f"{b[1]:.1f} | {tb:.1f} | {f[0] / f[1]:.2f}, {b[0] / b[1]:.2f} | "
                        f"{f[0] / tf:.2f}, {b[0] / tb:.2f} |")
            print(rows[-1], flush=True)
    rows += ["", "| task | npnn per second | PyTorch per second | npnn/PyTorch (time) | same output |",
             "|---|---|---|---|---|"]
    ours, theirs, n = lm_case(torch)
    same = "" if theirs is None else ("yes" if ours() == theirs() else "no")
    ms = median_ms([ours] + ([theirs] if theirs else []), args.repeat, budget_s=BUDGET_S)
    peer = f"{n / ms[1] * 1e3:.0f}" if theirs else "-"
    ratio = f"{ms[0] / ms[1]:.2f}" if theirs else "-"
    rows.append(f"| RNNLM.generate, greedy (chars) | {n / ms[0] * 1e3:.0f} | {peer} | {ratio} | "
                f"{same} |")
    print(rows[-1], flush=True)
    for batch in (1, 64):
        ours, theirs, n, *model = seq2seq_case(torch, batch)
        same = ""
        if theirs is not None:
            mine = ours()
            same = "yes" if all(list(r[:len(m)]) == m for r, m in zip(theirs().tolist(), mine)) \
                else "no"
        ms = median_ms([ours] + ([theirs] if theirs else []), args.repeat, budget_s=BUDGET_S)
        peer = f"{n / ms[1] * 1e3:.0f}" if theirs else "-"
        ratio = f"{ms[0] / ms[1]:.2f}" if theirs else "-"
        rows.append(f"| Seq2Seq.greedy_decode, batch {batch} (sequences) | {n / ms[0] * 1e3:.0f} "
                    f"| {peer} | {ratio} | {same} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    print()
    print(table)
    if args.write:
        section = ("## Step-wise use: cells, generation, decoding\n\n"
                   f"`python benchmarks/bench_steps.py` — {info}. {STEPS} steps per timed call; "
                   "medians of blocks ordered a b c c b a. The textbook step is the same loop "
                   "written as a course writes it (equations in NumPy, nothing else).\n\n"
                   + table + "\n")
        write_section(os.path.join(HERE, "RESULTS.md"), "bench_steps", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
