"""Big texts: peak memory and time of tokenising, and of a ``--minutes``-bounded run.

    python benchmarks/bench_bigtext.py                 10, 100 and 200 MB
    python benchmarks/bench_bigtext.py --sizes 10 100  some of them

params: the text's size in MB (random words of a 5,000-word vocabulary over
letters, spaces and newlines, generated in a temporary folder); for each size,
two measurements, each in a fresh process whose peak resident memory (RSS) is
its ``ru_maxrss`` (``os.wait4``):

* tokenise: ``read_text`` + ``load_corpus`` (character tokens, the default) + the
  text's SHA-256, as a run's set-up does them;
* run: ``npnn train --text T --minutes M`` with the issue's small model (hidden 16,
  embedding 8, batch 4, steps 16, one thread): the whole command's wall time against
  its budget (set-up, training, the last validation and the save).

Prints the machine line and a table last.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOKENISE = """
import sys, time
t0 = time.perf_counter()
from npnn.training.config import TrainConfig
from npnn.training.data import read_text
from npnn.training.trainer import load_corpus
from npnn.training.checkpoint import text_digest
config = TrainConfig(text=sys.argv[1])
text = read_text(config.text)
digest = text_digest(text)
corpus = load_corpus(config, None, text)
del text
print(time.perf_counter() - t0, len(corpus), corpus.ids.dtype, len(corpus.vocab))
"""


def make_text(path, megabytes, seed=0):
    """Random words (2-9 letters) of a 5,000-word vocabulary, lines of about 12 words."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    words = [letters[rng.integers(0, 26, rng.integers(2, 10))].tobytes() for _ in range(5000)]
    target = megabytes * 10 ** 6
    with open(path, "wb") as f:
        written = 0
        while written < target:
            picks = rng.integers(0, len(words), 120_000)
            block = b"\n".join(b" ".join(words[i] for i in picks[j:j + 12])
                               for j in range(0, picks.size, 12)) + b"\n"
            block = block[:target - written]
            f.write(block)
            written += len(block)


def measure(argv, env):
    """(wall seconds, peak RSS in MB, stdout, status) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out_text = proc.stdout.read()
    err_text = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2 ** 20
    if proc.returncode not in (0,):
        print(err_text[-2000:], file=sys.stderr)
    return wall, peak, out_text, proc.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 200])
    parser.add_argument("--minutes", type=float, default=0.25)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for mb in args.sizes:
            path = os.path.join(folder, f"text{mb}.txt")
            make_text(path, mb)
            size = os.path.getsize(path) / 1e6
            wall, peak, out, rc = measure([sys.executable, "-c", TOKENISE, path], env)
            tok_s, tokens, dtype = (out.split()[:3] + ["?"] * 3)[:3] if rc == 0 else ("-",) * 3
            run_wall, run_peak, _, run_rc = measure(
                [sys.executable, "-m", "npnn", "train", "--text", path, "--minutes",
                 str(args.minutes), "--hidden", "16", "--embedding", "8", "--batch", "4",
                 "--steps", "16", "--threads", "1", "--no-progress", "--out",
                 os.path.join(folder, f"run{mb}")], env)
            rows.append((size, tokens, dtype, float(tok_s) if tok_s != "-" else float("nan"),
                         peak, peak / size, run_wall, 60 * args.minutes, run_peak, run_rc))
            os.remove(path)
            print(f"{size:.0f} MB done", file=sys.stderr)
    import numpy
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, NumPy {numpy.__version__}, one BLAS thread")
    print(f"| text (MB) | tokens | ids | tokenise (s) | tokenise peak RSS (MB) | x file | "
          f"run --minutes {args.minutes:g} (s) | budget (s) | run peak RSS (MB) | exit |")
    print("|---:|---:|:--|---:|---:|---:|---:|---:|---:|---:|")
    for size, tokens, dtype, tok_s, peak, ratio, wall, budget, run_peak, rc in rows:
        print(f"| {size:.0f} | {int(tokens):,} | {dtype} | {tok_s:.1f} | {peak:.0f} | "
              f"{ratio:.1f} | {wall:.1f} | {budget:.0f} | {run_peak:.0f} | {rc} |")


if __name__ == "__main__":
    main()
