"""Before and after: the recurrent kernels of this checkout against another revision's,
side by side in one process.

    python benchmarks/bench_ab.py --base 1685527           # every cell and size
    python benchmarks/bench_ab.py --base main --cells lstm --sizes S,M --write

A change that touches a hot path shows its before/after table. Timing two runs
of ``bench_rnn.py`` one after the other measures the machine's drift as much as
the change (run-to-run swings of 20-30% were seen on a 2-core machine), so
this script imports both versions at once: the base revision's ``npnn`` package
is extracted with ``git archive`` into a temporary folder and imported as
``npnn_base`` (npnn imports itself only relatively), and the same call of each
version, and PyTorch's, is timed in blocks ordered a b c c b a
(``bench_rnn.median_ms``). Sizes and cells as in ``bench_rnn.py``; times are
forward+backward (or forward alone with ``--modes forward``), float32.
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_rnn import CELLS, MODES, SIZES, Case, machine, median_ms, write_section  # noqa: E402


def import_base(rev):
    """The ``npnn`` package of git revision ``rev``, imported as ``npnn_base``."""
    folder = tempfile.mkdtemp(prefix="npnn-base-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "npnn"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    os.rename(os.path.join(folder, "npnn"), os.path.join(folder, "npnn_base"))
    sys.path.insert(0, folder)
    return importlib.import_module("npnn_base.functional")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the git revision to compare with")
    p.add_argument("--cells", default=",".join(CELLS))
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--modes", default="forward+backward")
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    import torch
    base = import_base(args.base)
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.base], check=True,
                         capture_output=True, text=True).stdout.strip()
    info = machine(torch) + "; this checkout with " + ", ".join(
        f"{k}={os.environ.get(k, 'unset')}" for k in ("NPNN_ACCEL", "NPNN_NUMBA"))
    print(info)
    rows = ["| cell | size | mode | after ms | before ms | after/before | after/PyTorch | "
            "before/PyTorch |", "|" + "---|" * 8]
    for cell in args.cells.split(","):
        name = {"rnn_tanh": "rnn"}.get(cell, cell)
        for size in args.sizes.split(","):
            for mode in args.modes.split(","):
                if mode not in MODES:
                    raise SystemExit(f"--modes: expected forward or forward+backward, got {mode}")
                case = Case(cell, size, mode, "float32", np, torch, "cpu")
                before = Case(cell, size, mode, "float32", np, None, "cpu")
                # the accelerated entry on both sides: ``functional.fast`` where the base
                # has it; before it (ab31415 and older) ``functional.<cell>_forward`` was
                # that entry, choosing the acceleration itself
                entry = getattr(base, "fast", base)
                before.forward = getattr(entry, f"{name}_forward")
                before.backward = getattr(entry, f"{name}_backward")
                after_ms, before_ms, torch_ms = median_ms(
                    [case.time_npnn, before.time_npnn, case.time_torch], args.repeat,
                    budget_s=2.0)
                rows.append(f"| {cell} | {size} | {mode} | {after_ms:.2f} | {before_ms:.2f} | "
                            f"{after_ms / before_ms:.3f} | {after_ms / torch_ms:.2f} | "
                            f"{before_ms / torch_ms:.2f} |")
                print(rows[-1], flush=True)
    table = "\n".join(rows)
    print()
    print(table)
    if args.write:
        section = (f"## Before and after: this checkout against {rev}\n\n"
                   f"`python benchmarks/bench_ab.py --base {rev}` — {info}. Both versions "
                   "imported in one process and timed in blocks ordered a b c c b a (medians "
                   f"of at least {args.repeat} runs, about 2 s of each), float32.\n\n"
                   + table + "\n")
        write_section(os.path.join(HERE, "RESULTS.md"), f"bench_ab:{args.base}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
