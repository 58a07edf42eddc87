"""Tokens per second of a whole language-model training step, npnn vs PyTorch.

    python benchmarks/bench_lm.py [--write] [--steps 30]

A step: input (one-hot or embedding) -> GRU/LSTM -> linear decoder -> softmax
cross-entropy -> backward -> clip the global gradient norm to 1 -> optimizer.
Configurations: d2l's (GRU H 256, one-hot vocabulary 28, batch 32 x 35 steps,
SGD lr 1) and npnn's default main job (LSTM H 256, embedding 64, vocabulary
160, batch 32 x 64, Adam). Both libraries run the same model with the same
threads, state carried between steps, median of ``--steps`` timed steps.
npnn is timed twice: with NumPy alone (``NPNN_NUMBA=0``) and, when numba is
installed (``pip install -e ".[fast]"``), with its compiled step kernels.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import npnn  # noqa: E402
from npnn.models import RNNLM  # noqa: E402
from npnn.optim import SGD, Adam, clip_grad_norm  # noqa: E402

from bench_rnn import machine, with_kernels, write_section  # noqa: E402

CONFIGS = {
    "d2l GRU": dict(cell="gru", H=256, E=0, V=28, N=32, T=35, opt="sgd", lr=1.0),
    "default LSTM": dict(cell="lstm", H=256, E=64, V=160, N=32, T=64, opt="adam", lr=2e-3),
}


def npnn_step(cfg, seed=0):
    model = RNNLM(cfg["V"], cfg["H"], cfg["cell"], embedding_dim=cfg["E"], seed=seed)
    opt = (SGD if cfg["opt"] == "sgd" else Adam)(model, lr=cfg["lr"])
    ce = npnn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    X = rng.integers(0, cfg["V"], size=(cfg["N"], cfg["T"]))
    Y = rng.integers(0, cfg["V"], size=(cfg["N"], cfg["T"]))
    state = [None]

    def step():
        logits, state[0] = model(X, state[0])
        ce(logits, Y)
        model.zero_grad()
        model.backward(ce.backward())
        clip_grad_norm(model, 1.0)
        opt.step()
    return step


def torch_step(cfg, torch, seed=0):
    nn = torch.nn
    torch.manual_seed(seed)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(cfg["V"], cfg["E"]) if cfg["E"] else None
            rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg["cell"]]
            self.rnn = rnn(cfg["E"] or cfg["V"], cfg["H"])
            self.dec = nn.Linear(cfg["H"], cfg["V"])

        def forward(self, X, state):
            x = self.emb(X.T) if self.emb is not None else \
                nn.functional.one_hot(X.T, cfg["V"]).float()
            out, state = self.rnn(x, state)
            return self.dec(out), state

    model = LM()
    opt = (torch.optim.SGD if cfg["opt"] == "sgd" else torch.optim.Adam)(model.parameters(),
                                                                         lr=cfg["lr"])
    rng = np.random.default_rng(seed)
    X = torch.tensor(rng.integers(0, cfg["V"], size=(cfg["N"], cfg["T"])))
    Y = torch.tensor(rng.integers(0, cfg["V"], size=(cfg["N"], cfg["T"])))
    state = [None]

    def step():
        s = state[0]
        if s is not None:
            s = tuple(x.detach() for x in s) if isinstance(s, tuple) else s.detach()
        logits, state[0] = model(X, s)
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg["V"]), Y.T.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


#: Pause before each block of steps (see bench_rnn.PAUSE_S).
PAUSE_S = 0.3


def tokens_per_s(steps_fns, tokens, steps):
    """Tokens/s of each training step in ``steps_fns``, from the median of ``steps``
    timed steps, taken in two blocks ordered a b b a (three untimed steps start
    each block: switching libraries costs the first steps)."""
    times = [[] for _ in steps_fns]
    for block, order in zip((steps // 2, steps - steps // 2),
                            (range(len(steps_fns)), reversed(range(len(steps_fns))))):
        for k in order:
            time.sleep(PAUSE_S)             # idle BLAS/OpenMP threads stop spinning
            for _ in range(3):
                steps_fns[k]()
            for _ in range(block):
                t0 = time.perf_counter()
                steps_fns[k]()
                times[k].append(time.perf_counter() - t0)
    return [tokens / statistics.median(ts) for ts in times]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: npnn-only figures")
    from npnn.functional.accel import _numba
    has_numba = _numba.numba() is not None
    info = machine(torch) + ("; numba " + _numba.numba().__version__ if has_numba else
                             "; numba not installed")
    print(info)
    lines = ["| configuration | npnn tokens/s, NumPy alone | npnn tokens/s, with numba | "
             "PyTorch tokens/s | npnn/PyTorch, NumPy alone | npnn/PyTorch, with numba |",
             "|---|---|---|---|---|---|"]
    for name, cfg in CONFIGS.items():
        tokens = cfg["N"] * cfg["T"]
        step = npnn_step(cfg)
        fns = [with_kernels(step, False)] + ([with_kernels(step, True)] if has_numba else [])
        fns += [torch_step(cfg, torch)] if torch else []
        rates = tokens_per_s(fns, tokens, args.steps)
        ours = rates[0]
        fast = rates[1] if has_numba else float("nan")
        theirs = rates[-1] if torch else float("nan")
        print(f"{name}: npnn {ours:,.0f} tok/s (numba {fast:,.0f}), PyTorch {theirs:,.0f} "
              f"tok/s, throughput ratios {ours / theirs:.2f} ({fast / theirs:.2f})")
        lines.append(f"| {name} ({cfg['cell'].upper()} H {cfg['H']}, "
                     f"{'one-hot' if not cfg['E'] else 'embedding ' + str(cfg['E'])}, V {cfg['V']}, "
                     f"batch {cfg['N']} x {cfg['T']}, {cfg['opt']}) | {ours:,.0f} | {fast:,.0f} | "
                     f"{theirs:,.0f} | {ours / theirs:.2f} | {fast / theirs:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(os.path.join(HERE, "RESULTS.md"), "bench_lm",
                      "## Language-model training step\n\n`python benchmarks/bench_lm.py` — "
                      f"{info}. Median of {args.steps} steps in blocks ordered a b c c b a "
                      "(npnn with NumPy alone, npnn with numba, PyTorch).\n\n"
                      f"{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
