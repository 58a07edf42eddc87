"""The adding problem (Hochreiter & Schmidhuber 1997): which cells remember over T steps?

    python benchmarks/adding_problem.py                       # T = 50, 100, 200, 400
    python benchmarks/adding_problem.py --lengths 50 --cells lstm --steps 500

Each cell (tanh RNN, LSTM, GRU; H 64) is trained with Adam (lr 2e-3, clip 1,
batch 64) on fresh random sequences until its test MSE falls below 0.001 or
the step budget ends; the table gives the final test MSE (1000 sequences)
against the baseline 0.167 of always predicting 1. Written to RESULTS.md with
--write.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from npnn.analysis import BASELINE_MSE, train_adding  # noqa: E402

from bench_rnn import write_section  # noqa: E402

BUDGET = {50: 3000, 100: 5000, 200: 8000, 400: 6000}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="50,100,200,400")
    p.add_argument("--cells", default="rnn,lstm,gru")
    p.add_argument("--steps", type=int, default=None, help="step budget (default per length)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    lengths = [int(t) for t in args.lengths.split(",")]
    cells = args.cells.split(",")
    results = {}
    for T in lengths:
        for cell in cells:
            t0 = time.perf_counter()
            steps = args.steps or BUDGET.get(T, 4000)
            _, mse = train_adding(cell, T, args.hidden, steps, seed=args.seed, stop_below=1e-3,
                                  log=lambda line: print(line, flush=True))
            results[(T, cell)] = mse
            print(f"T={T} {cell}: test MSE {mse:.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    lines = ["| T | " + " | ".join(c.upper() for c in cells) + " | baseline |",
             "|---" * (len(cells) + 2) + "|"]
    for T in lengths:
        lines.append(f"| {T} | " + " | ".join(
            f"{results[(T, c)]:.4f}{' ✓' if results[(T, c)] < 0.01 else ''}" for c in cells)
            + f" | {BASELINE_MSE:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        full = args.lengths == "50,100,200,400" and args.cells == "rnn,lstm,gru"
        write_section(os.path.join(HERE, "RESULTS.md"),
                      "adding" if full else f"adding:{args.lengths}:{args.cells}",
                      f"## The adding problem (lengths {args.lengths}, cells {args.cells})\n\n"
                      "`python benchmarks/adding_problem.py` — test MSE (1000 sequences) after "
                      "training until MSE < 0.001 or the step budget "
                      f"({', '.join(f'T={t}: {BUDGET.get(t)}' for t in lengths)} steps of batch "
                      f"64; H {args.hidden}, Adam 2e-3, clip 1); ✓ marks MSE < 0.01 (solved).\n\n"
                      + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
