"""What ``import npnn`` costs: this checkout against another revision, side by side.

    python benchmarks/bench_import.py --base ab31415 [--runs 5] [--write]

Each statement runs in a fresh interpreter that has already imported NumPy (every
user of npnn has it), so the time measured is npnn's own share: its modules and
what they import beyond NumPy. The two revisions alternate (a b b a ...) so that
the machine's drift falls on both; the table gives the median of ``--runs`` runs
and the number of npnn modules each statement loads. The base revision is
extracted with ``git archive`` into a temporary folder and imported from there
under its own name, ``npnn``, in its own processes.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_rnn import write_section  # noqa: E402

STATEMENTS = ("import npnn", "import npnn.functional", "import npnn.gradcheck",
              "import npnn; npnn.LSTM", "import npnn; npnn.fit")

PROBE = """import sys, time
import numpy
t0 = time.perf_counter()
{statement}
t1 = time.perf_counter()
mods = [m for m in sys.modules if m == "npnn" or m.startswith("npnn.")]
training = [m for m in mods if m.startswith("npnn.training") or m.split(".")[1:2] in (
    ["fit"], ["train"], ["distributed"], ["checkpoint"], ["data"], ["cli"], ["config"])]
print((t1 - t0) * 1e3, len(mods), len(training))
"""


def extract(rev):
    """The package of git revision ``rev`` in a temporary folder (returned)."""
    folder = tempfile.mkdtemp(prefix="npnn-import-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "npnn"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def probe(folder, statement):
    """(ms, npnn modules loaded, of which training modules) for one fresh run."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(statement=statement)],
                         cwd=folder, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": folder}).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the git revision to compare with")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    base = extract(args.base)
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.base], check=True,
                         capture_output=True, text=True).stdout.strip()
    rows = ["| statement | after ms | before ms | after/before | npnn modules after, before | "
            "training-wing modules after, before |", "|" + "---|" * 6]
    for statement in STATEMENTS:
        runs = {ROOT: [], base: []}
        for k in range(args.runs):
            for folder in ((ROOT, base) if k % 2 == 0 else (base, ROOT)):
                runs[folder].append(probe(folder, statement))
        after, before = (statistics.median(r[0] for r in runs[f]) for f in (ROOT, base))
        (_, na, ta), (_, nb, tb) = runs[ROOT][0], runs[base][0]
        rows.append(f"| `{statement}` | {after:.1f} | {before:.1f} | {after / before:.2f} | "
                    f"{na}, {nb} | {ta}, {tb} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    print()
    print(table)
    if args.write:
        section = (f"## Import time: this checkout against {rev}\n\n"
                   f"`python benchmarks/bench_import.py --base {rev} --runs {args.runs}` — "
                   f"Python {sys.version.split()[0]}, {os.cpu_count()} cores. Milliseconds "
                   "after NumPy is imported (npnn's own share), medians of "
                   f"{args.runs} fresh interpreters, the two revisions alternating.\n\n"
                   + table + "\n")
        write_section(os.path.join(HERE, "RESULTS.md"), f"bench_import:{args.base}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
