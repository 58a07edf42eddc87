"""The recurrent product of one step in both layouts, timed on this machine (issue 26).

    python benchmarks/bench_layout.py            # the issue's sizes, float32
    python benchmarks/bench_layout.py --write    # and RESULTS.md's section

The accelerations keep a state h as (N, H) rows (batch-major) and form a step's
recurrent products as

    forward:   z = h W^T      (N, H) @ (H, G*H)      -> (N, G*H)
    backward:  dh = dz W      (N, G*H) @ (G*H, H)    -> (N, H)

Kept feature-major, as (H, N) columns, the same numbers are

    forward:   z^T = W h^T    (G*H, H) @ (H, N)      -> (G*H, N)
    backward:  dh^T = W^T dz^T  (H, G*H) @ (G*H, N)  -> (H, N)

Each product is timed as the loops call it: into a preallocated ``out``, every
operand C-contiguous in the layout it is kept in (the weights transposed once, as
the prepared weights are). Median ms of blocks ordered a b c c b a
(``bench_rnn.median_ms``), one process; PyTorch's ``torch.mm`` of the batch-major
forward beside them where PyTorch is installed. Which layout wins depends on the BLAS
and its kernels: measure before choosing (issue 26 asks for the choice to be timed).
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_rnn import machine, median_ms, write_section  # noqa: E402

#: (label, N, H, gates): the issue's table
SHAPES = [("LSTM S, the LM", 32, 256, 4), ("LSTM L", 16, 128, 4), ("LSTM M", 64, 512, 4),
          ("GRU S", 32, 256, 3), ("RNN S", 32, 256, 1), ("a generated token", 1, 512, 4)]


def products(N, H, G, dtype="float32", seed=0):
    """The four products of one step at (N, H, G), as zero-argument callables:
    (forward batch-major, forward feature-major, backward batch-major, backward
    feature-major), and the arrays they read, for checking that they agree."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((G * H, H)).astype(dtype)          # (G*H, H), PyTorch's layout
    Wt = np.ascontiguousarray(W.T)                               # (H, G*H), prepared once
    h = rng.standard_normal((N, H)).astype(dtype)
    hT = np.ascontiguousarray(h.T)                               # (H, N)
    dz = rng.standard_normal((N, G * H)).astype(dtype)
    dzT = np.ascontiguousarray(dz.T)                             # (G*H, N)
    z, zT = np.empty((N, G * H), dtype), np.empty((G * H, N), dtype)
    dh, dhT = np.empty((N, H), dtype), np.empty((H, N), dtype)
    fns = (lambda: np.matmul(h, Wt, out=z), lambda: np.matmul(W, hT, out=zT),
           lambda: np.matmul(dz, W, out=dh), lambda: np.matmul(Wt, dzT, out=dhT))
    return fns, (z, zT, dh, dhT)


def table(repeat, torch=None):
    rows = ["| N, H, gates | forward: h W^T | forward: W h^T | backward: dz W | "
            "backward: W^T dz^T |" + (" torch.mm, h W^T |" if torch else ""),
            "|---|---|---|---|---|" + ("---|" if torch else "")]
    for label, N, H, G in SHAPES:
        fns, _ = products(N, H, G)
        extra = []
        if torch:
            th = torch.randn(N, H)
            tW = torch.randn(H, G * H)
            tz = torch.empty(N, G * H)
            extra = [lambda: torch.mm(th, tW, out=tz)]
        ms = median_ms(list(fns) + extra, repeat)
        us = [1e3 * m for m in ms]
        cells = [f"{us[0]:.0f}", f"{us[1]:.0f} ({us[0] / us[1]:.2f}x)", f"{us[2]:.0f}",
                 f"{us[3]:.0f} ({us[2] / us[3]:.2f}x)"] + ([f"{us[4]:.0f}"] if torch else [])
        rows.append(f"| {N}, {H}, {G} ({label}) | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return "\n".join(rows) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=200, help="timed calls per product, at least")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    info = machine(torch)
    print(info)
    text = table(args.repeat, torch)
    if args.write:
        write_section(os.path.join(HERE, "RESULTS.md"), "bench_layout",
                      "## One step's recurrent product in both layouts (`python "
                      "benchmarks/bench_layout.py`, issue 26)\n\n"
                      f"{info}. µs per call, median; in brackets the batch-major time over "
                      "the feature-major one (above 1: feature-major is faster).\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
