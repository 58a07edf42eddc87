"""Data-parallel training step on MPI: where a step's time goes, measured, and a scaling model.

    python benchmarks/bench_mpi.py                 # 1, 2, 4 processes; default and large LSTM
    python benchmarks/bench_mpi.py --ranks 1,2 --sizes default --steps 5
    python benchmarks/bench_mpi.py --write         # also update benchmarks/RESULTS.md

Measured: for each size and number of processes P (launched with ``mpiexec -n P``),
one language-model training step with the global batch split over the processes,
in four parts, each the median over ``--steps`` steps (after one untimed step):

    compute    forward and backward of this rank's rows (batch / P of them)
    wait       the barrier after it: the slowest rank's lag (imbalance, shared cores)
    allreduce  the (loss, weight, stop) scalars and the gradient buckets, summed
    update     clipping and Adam

with the gradient bytes each rank sends into the allreduce. The BLAS threads per
process are the machine's cores divided by P (at least 1). On a machine with fewer
cores than processes, the processes share cores: compute and allreduce times then
measure the oversubscription, not a speed-up.

Modelled (not measured): the efficiency of weak scaling (each of P processes keeps
``batch`` rows, the global batch grows with P) on P = 8 ... 256 processes over two
networks, with a ring allreduce's alpha-beta cost, 2 (P - 1) alpha + 2 (P - 1) / P * n / beta
for n bytes, against this machine's measured one-process step:
efficiency = (compute + update) / (compute + update + allreduce), no overlap of the
allreduce with the backward (npnn's backward is one call). Also for a word-level LSTM,
whose dense embedding gradient dominates the bytes: what exchanging only the embedding
rows a batch touches (an allgather of (index, row) pairs) would send instead.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_rnn import blas_info, write_section  # noqa: E402

#: (cell, H, E, V, layers, batch, steps): the default model of ``npnn train`` (its corpus
#: has a vocabulary of about 100 characters) and a large one.
SIZES = {"default": ("lstm", 256, 64, 100, 1, 32, 64), "large": ("lstm", 1024, 64, 100, 1, 32, 64)}
#: A word-level LSTM (d2l's / Zaremba's scale): only its one-process step is measured.
WORD = ("lstm", 512, 512, 10000, 1, 32, 64)
#: (name, alpha seconds, beta bytes/second): per-message latency and bandwidth of MPI
NETWORKS = (("10 GbE (TCP)", 30e-6, 1.25e9 * 0.9), ("100 Gb InfiniBand", 2e-6, 12.5e9 * 0.9))
PROJECTED = (8, 16, 32, 64, 128, 256)


def build(size, rank_rows, seed=0):
    from npnn.models import RNNLM
    from npnn.optim import Adam
    cell, H, E, V, L, N, T = size
    model = RNNLM(V, H, cell, L, E, dtype="float32", seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, V, size=(rank_rows, T))
    Y = rng.integers(0, V, size=(rank_rows, T))
    return model, Adam(model, lr=1e-3), X, Y


def worker(args):
    """One rank of ``mpiexec -n P``: time the parts of ``args.steps`` steps; rank 0 prints
    one line, ``RESULT size P compute wait allreduce update bytes``."""
    from npnn.training import distributed
    from npnn.training.distributed import GradientBuckets, broadcast_parameters
    from npnn.layers import SoftmaxCrossEntropy
    from npnn.optim import clip_grad_norm
    w = distributed.world()
    size = SIZES[args.worker]
    model, optimizer, X, Y = build(size, size[5] // w.size, seed=w.rank)
    buckets = GradientBuckets(model, optimizer)
    broadcast_parameters(w, model, optimizer)
    loss_fn = SoftmaxCrossEntropy()
    parts = {k: [] for k in ("compute", "wait", "allreduce", "update")}
    for step in range(args.steps + 1):
        w.barrier()
        t0 = time.perf_counter()
        model.zero_grad()
        logits, _ = model(X)
        loss = float(loss_fn(logits, Y))
        model.backward(loss_fn.backward())
        t1 = time.perf_counter()
        w.barrier()
        t2 = time.perf_counter()
        scalars = np.array([loss * Y.size, Y.size, 0, 0, 0, 0, 0], dtype=np.float64)
        w.allreduce(scalars)
        buckets.scale(Y.size / scalars[1])
        buckets.allreduce(w)
        t3 = time.perf_counter()
        clip_grad_norm(model, 1.0)
        optimizer.step()
        t4 = time.perf_counter()
        if step:                                           # the first one is a warm-up
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[k].append(v)
    medians = {k: statistics.median(v) * 1e3 for k, v in parts.items()}
    slowest = w.gather(medians["compute"])
    if w.rank == 0:
        print("RESULT", args.worker, w.size, max(slowest), medians["wait"],
              medians["allreduce"], medians["update"], buckets.nbytes, flush=True)
    return 0


def measure(size, ranks, steps):
    """Launch the worker on ``ranks`` processes: (compute, wait, allreduce, update) ms and
    the gradient bytes."""
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads, "PYTHONPATH": os.path.join(HERE, "..")}
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    command = [mpiexec if os.path.exists(mpiexec) else "mpiexec", "-n", str(ranks),
               sys.executable, os.path.abspath(__file__), "--worker", size, "--steps", str(steps)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if run.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr}")
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))
    *_, compute, wait, allreduce, update, nbytes = line.split()
    return float(compute), float(wait), float(allreduce), float(update), int(nbytes), threads


def one_process_step(size, steps):
    """(compute + update ms, gradient bytes) of one process on ``size``'s whole batch."""
    from npnn.layers import SoftmaxCrossEntropy
    from npnn.optim import clip_grad_norm
    model, optimizer, X, Y = build(size, size[5])
    loss_fn = SoftmaxCrossEntropy()
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        model.zero_grad()
        logits, _ = model(X)
        loss_fn(logits, Y)
        model.backward(loss_fn.backward())
        clip_grad_norm(model, 1.0)
        optimizer.step()
        if step:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, sum(p.nbytes for p in model.parameters())


def ring_allreduce_s(nbytes, P, alpha, beta):
    return 2 * (P - 1) * alpha + 2 * (P - 1) / P * nbytes / beta


def allgather_s(nbytes_per_rank, P, alpha, beta):
    """A ring allgather of ``nbytes_per_rank`` from every rank: (P - 1) steps."""
    return (P - 1) * alpha + (P - 1) * nbytes_per_rank / beta


def word_rows_touched(size, samples=20):
    """Distinct tokens in a batch of the default corpus read as words (vocabulary cut to
    the V most frequent): the embedding rows a sparse exchange would send."""
    from npnn.training.data import TextCorpus, Vocab, default_corpus, seq_data_iter_random
    corpus = TextCorpus.from_text(default_corpus(), "word", val_fraction=0.0)
    vocab = Vocab.from_tokens_list(corpus.vocab.idx_to_token[:size[3]])
    ids = np.minimum(corpus.ids, size[3] - 1)     # rarer words: one id (<unk>-like)
    rng = np.random.default_rng(0)
    counts = [len(np.unique(X)) for _, (X, _) in zip(range(samples),
              seq_data_iter_random(ids, size[5], size[6], rng))]
    return int(np.median(counts)), len(vocab)


def describe(size):
    cell, H, E, V, L, N, T = size
    return f"{cell.upper()} H {H}, E {E}, V {V:,}, batch {N} x {T}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--sizes", default="default,large")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--write", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    info = (f"{os.cpu_count()} cores; numpy {np.__version__}; BLAS {blas_info()}; MPI: "
            f"{mpi_library()}; float32")
    print(info)
    measured = ["| model | processes | BLAS threads each | rows each | compute ms | wait ms | "
                "allreduce ms | update ms | gradient MB | allreduce GB/s (2n/t) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.sizes.split(","):
        for ranks in map(int, args.ranks.split(",")):
            c, wt, ar, up, nbytes, threads = measure(name, ranks, args.steps)
            rate = 2 * nbytes / (ar / 1e3) / 1e9 if ranks > 1 else float("nan")
            measured.append(f"| {name}: {describe(SIZES[name])} | {ranks} | {threads} | "
                            f"{SIZES[name][5] // ranks} | {c:.1f} | {wt:.1f} | {ar:.2f} | "
                            f"{up:.1f} | {nbytes / 1e6:.2f} | {rate:.2f} |")
            print(measured[-1], flush=True)
    projection = ["| model | gradient MB | one-process step ms | network | "
                  + " | ".join(f"P={P}" for P in PROJECTED)
                  + f" | step for 90% at P={PROJECTED[-1]} |",
                  "|---|---|---|---|" + "---|" * (len(PROJECTED) + 1)]
    models = [("char " + describe(SIZES[n]), SIZES[n]) for n in ("default", "large")]
    models.append(("word " + describe(WORD), WORD))
    steps = {}
    for label, size in models:
        steps[label] = one_process_step(size, max(2, args.steps // 2))
        ms, nbytes = steps[label]
        for net, alpha, beta in NETWORKS:
            eff = [ms / (ms + 1e3 * ring_allreduce_s(nbytes, P, alpha, beta)) for P in PROJECTED]
            need = 9e3 * ring_allreduce_s(nbytes, PROJECTED[-1], alpha, beta)   # ms
            projection.append(f"| {label} | {nbytes / 1e6:.1f} | {ms:.0f} | {net} | "
                              + " | ".join(f"{100 * e:.0f}%" for e in eff) + f" | {need:.0f} ms |")
            print(projection[-1], flush=True)
    # the word model: dense embedding gradient against the rows one batch touches
    rows, V = word_rows_touched(WORD)
    ms, nbytes = steps[models[-1][0]]
    embedding = WORD[3] * WORD[2] * 4
    sparse = rows * (WORD[2] * 4 + 8)                       # rows and their int64 indices
    sparse_lines = ["| network | P | dense allreduce ms (all gradients) | of which embedding "
                    "ms | sparse embedding allgather ms | step efficiency dense | sparse |",
                    "|---|---|---|---|---|---|---|"]
    for net, alpha, beta in NETWORKS:
        for P in PROJECTED:
            dense = ring_allreduce_s(nbytes, P, alpha, beta)
            emb = ring_allreduce_s(embedding, P, alpha, beta)
            rest = ring_allreduce_s(nbytes - embedding, P, alpha, beta)
            sp = allgather_s(sparse, P, alpha, beta)
            sparse_lines.append(
                f"| {net} | {P} | {1e3 * dense:.1f} | {1e3 * emb:.1f} | {1e3 * sp:.1f} | "
                f"{100 * ms / (ms + 1e3 * dense):.0f}% | "
                f"{100 * ms / (ms + 1e3 * (rest + sp)):.0f}% |")
    text = "\n".join(measured) + "\n\n" + "\n".join(projection) + "\n\n" + "\n".join(sparse_lines)
    print(text)
    print(f"word model: {rows} distinct tokens (embedding rows) per batch of "
          f"{WORD[5]} x {WORD[6]} of {V:,}; embedding gradient {embedding / 1e6:.1f} MB dense, "
          f"{sparse / 1e6:.2f} MB as rows")
    if args.write:
        write_section(os.path.join(HERE, "RESULTS.md"), "bench_mpi", section(
            info, args, text, rows, embedding, sparse))
    return 0


def mpi_library():
    try:
        out = subprocess.run([sys.executable, "-c", "from mpi4py import MPI; "
                              "print(MPI.Get_library_version().splitlines()[0])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
        return out or "mpi4py not installed"
    except Exception as e:
        return f"unknown ({e})"


def section(info, args, text, rows, embedding, sparse):
    measured, projection, sparse_table = text.split("\n\n")
    return f"""## Data parallelism on MPI (`python benchmarks/bench_mpi.py`)

{info}. **Measured** (first table): one training step with the global batch split
over P processes launched by `mpiexec -n P` on this machine, the median of {args.steps}
steps of each part (see the script's docstring). This machine has
{os.cpu_count()} cores: with 4 processes they share the cores (oversubscription), so
the 4-process rows measure that, and none of these rows is a speed-up claim.
*Compute* is the slowest rank's, *wait* the barrier after it, *allreduce* the
scalars and the gradient buckets (25 MB each) through MPICH's shared memory.

{measured}

**Modelled, not measured**: weak scaling, each process keeping the batch of the
first table, so the one-process step (measured here, 2 cores) is each process's
compute + update at any P; a ring allreduce costs 2(P-1)α + 2(P-1)/P·n/β for n
gradient bytes (α = 30 µs, β = 90% of 1.25 GB/s for 10 GbE over TCP; α = 2 µs,
β = 90% of 12.5 GB/s for 100 Gb InfiniBand), not overlapped with the backward.
Efficiency = step / (step + allreduce). A faster processor (a GPU) shortens the
step and lowers every efficiency: the last column is the step time at which 256
processes would still reach 90% (nine times the allreduce).

{projection}

The word-level LSTM's bytes are mostly its embedding ({embedding / 1e6:.1f} MB of
gradient, dense after the scatter-add), yet a batch touches {rows} rows of it (the
default corpus read as words): exchanging those rows (allgather of (index, row) pairs,
{sparse / 1e6:.2f} MB from each process, P - 1 ring steps) instead of allreducing the
dense embedding gradient (modelled):

{sparse_table}

An allgather's bytes grow with P, the ring allreduce's do not: the rows win while
(P - 1) x {sparse / 1e6:.2f} MB stays below twice {embedding / 1e6:.1f} MB, and lose beyond
(there an allreduce of the rows' union, or a tied, smaller vocabulary, is the way).
"""


if __name__ == "__main__":
    sys.exit(main())
