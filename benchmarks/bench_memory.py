"""Backpropagation through time in bounded memory: memory kept against time, measured.

    python benchmarks/bench_memory.py                    # T = 1,000 and 10,000
    python benchmarks/bench_memory.py --T 1000 10000 100000 --write

An LSTM, H = 256, D = 256, N = 16, float32, through the registry (``Cell.run`` with
``bptt_memory``, ``Cell.run_backward``: the path a layer takes, accelerated where it
pays): one forward and one backward per case, under

* full BPTT (``bptt_memory=None``), up to ``FULL_MAX_T`` steps; beyond, its memory
  and time are extrapolated linearly from the largest T measured (and marked so);
* the evenly spaced policy, ``'sqrt'`` (checkpoints every ceil(sqrt(T)) steps);
* Gruslys et al.'s BPTT-HSM policy (``bptt_policy.dp_policy``) at the sqrt policy's
  number of slots and at smaller budgets.

"Memory" is what is kept for the backward pass: the traced peak (tracemalloc, which
NumPy reports its buffers to) minus the input, the outputs and their gradients,
which the caller holds anyway (x and dout are made before tracing starts; out and
dx, made inside, are subtracted). Time is the wall time of the same call, traced
(tracemalloc costs little here: a few large allocations a step). Steps: the forward
steps the policy predicts (``predicted_steps``) and those actually run
(the cache's counters), the first forward pass included: full BPTT runs T.
"""

import argparse
import os
import sys
import time
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from npnn.functional import bptt_policy  # noqa: E402
from npnn.functional.registry import CELLS  # noqa: E402
from bench_rnn import machine, write_section  # noqa: E402

N, D, H = 16, 256, 256
DTYPE = "float32"
FULL_MAX_T = 10_000
MB = 1e6


def case(T, seed=0):
    rng = np.random.default_rng(seed)
    cell = CELLS["lstm"]
    k = 1 / np.sqrt(H)
    params = {p.arg: rng.uniform(-k, k, shape).astype(DTYPE)
              for p, shape in cell.param_shapes(D, H)}
    x = rng.standard_normal((T, N, D), dtype=np.float32)
    dout = rng.standard_normal((T, N, H), dtype=np.float32)
    return cell, params, x, dout


def run(data, memory):
    """One forward + backward of ``data`` (a ``case``) under ``memory`` ->
    (seconds, bytes of out and dx, steps predicted, steps run)."""
    cell, params, x, dout = data
    start = time.perf_counter()
    out, finals, cache = cell.run(x, (None, None), params, None, bptt_memory=memory)
    dx, dinits, grads = cell.run_backward(dout, (None, None), cache)
    seconds = time.perf_counter() - start
    T = x.shape[0]
    if memory is None:
        predicted = steps = T
    else:
        predicted, steps = cache.plan.predicted_steps(), sum(cache.steps_run)
    return seconds, out.nbytes + dx.nbytes, predicted, steps


def kept(data, memory):
    """(bytes kept for the backward: the traced peak minus out and dx, x and dout having
    been made before tracing started; and ``run``'s seconds, steps predicted, steps run)."""
    tracemalloc.start()
    seconds, caller, predicted, steps = run(data, memory)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - caller, (seconds, caller, predicted, steps)


def policies(T, budgets):
    """[(label, bptt_memory, slots)] for one T; beyond FULL_MAX_T the sqrt policy alone
    (the others take too long on this machine)."""
    sqrt = bptt_policy.sqrt_policy(T)
    if T > FULL_MAX_T:
        return [("sqrt", "sqrt", sqrt.slots)]
    rows = [("full BPTT", None, T), ("sqrt", "sqrt", sqrt.slots),
            ("DP", sqrt.slots, sqrt.slots)]
    rows += [("DP", m, m) for m in budgets if m < sqrt.slots and T <= FULL_MAX_T]
    return rows


def lm_step(steps, memory, traced, V=100, batch=32):
    """One training step of ``npnn train``'s default model (LSTM H 256, embedding 64, a
    V-token vocabulary, float32) at ``--steps steps`` under ``memory`` -> seconds, or the
    traced peak of the whole step in bytes (logits and their gradients included)."""
    from npnn.layers import SoftmaxCrossEntropy
    from npnn.models import RNNLM

    rng = np.random.default_rng(0)
    model = RNNLM(V, 256, cell="lstm", embedding_dim=64, seed=0)
    model.rnn.bptt_memory = memory
    loss_fn = SoftmaxCrossEntropy()
    X, Y = rng.integers(0, V, (batch, steps)), rng.integers(0, V, (batch, steps))
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    logits, _ = model(X)
    loss_fn(logits, Y)
    model.zero_grad()
    model.backward(loss_fn.backward())
    seconds = time.perf_counter() - start
    if traced:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak
    return seconds


def lm_table(all_steps, budgets):
    """Rows of the language model's step at each ``--steps``, with and without a budget."""
    lines = ["| --steps | --bptt-memory | peak of the step (MB) | vs none | time (s) | vs none |",
             "|---|---|---|---|---|---|"]
    lm_step(16, None, False), lm_step(16, 4, False)            # warm up
    for steps in all_steps:
        base = None
        for memory in (None,) + tuple(budgets):
            seconds = lm_step(steps, memory, False)
            peak = lm_step(steps, memory, True)
            base = base or (peak, seconds)
            row = (f"| {steps:,} | {memory or 'none'} | {peak / MB:,.1f} | "
                   f"{peak / base[0]:.3f} | {seconds:,.2f} | {seconds / base[1]:.2f}x |")
            print(row, flush=True)
            lines.append(row)
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[1000, 10_000])
    p.add_argument("--budgets", type=int, nargs="+", default=[25, 50],
                   help="DP budgets (slots) below the sqrt policy's")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per case, interleaved (one beyond FULL_MAX_T)")
    p.add_argument("--lm", type=int, nargs="+", metavar="STEPS",
                   help="instead: the language model's training step at these --steps")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if args.lm:
        info = machine(None) + "; npnn train's default model (LSTM H 256, embedding 64), " \
            "batch 32, vocabulary 100, float32"
        print(info)
        table = lm_table(args.lm, ("sqrt", 64))
        if args.write:
            section = ("### The language model's step under a budget (bench_memory.py --lm)\n\n"
                       f"{info}. One step (forward, loss, backward) per row, timed once and "
                       "traced once; the peak is the whole step's (logits, their gradients "
                       "and the embedding included). The machine was shared (2 cores).\n\n"
                       + table)
            write_section(os.path.join(HERE, "RESULTS.md"), "bench_memory_lm", section)
        return 0
    info = machine(None) + f"; LSTM N {N}, D {D}, H {H}, {DTYPE}"
    print(info)
    lines = ["| T | policy | slots | memory kept (MB) | vs full | time (s) | vs full | "
             "steps predicted | steps run | steps / T |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    run(case(50), None), run(case(50), 7)       # compile and warm up before timing
    full = {}
    for T in args.T:
        data = case(T)
        rows = [r for r in policies(T, args.budgets) if r[1] is not None or T <= FULL_MAX_T]
        for _, memory, _ in rows:
            if memory is not None:
                bptt_policy.policy(T, memory)   # the schedule, made once per (T, m) and cached
        times = {i: [] for i in range(len(rows))}
        for _ in range(args.repeat if T <= FULL_MAX_T else 0):
            for i, (_, memory, _) in enumerate(rows):      # interleaved: drift hits all alike
                times[i].append(run(data, memory))
        if T > FULL_MAX_T:
            if not full:                        # nothing measured in this run: T = 1,000
                small = case(1000)
                full[1000] = (kept(small, None)[0], min(run(small, None)[0] for _ in range(3)))
                del small
            base = max(t for t in full if t <= FULL_MAX_T)
            full[T] = (full[base][0] * T / base, full[base][1] * T / base)
            row = (f"| {T:,} | full BPTT (extrapolated from T = {base:,}) | {T:,} | "
                   f"{full[T][0] / MB:,.1f} | 1.000 | {full[T][1]:,.2f} | 1.00x | {T:,} | - "
                   f"| 1.000 |")
            print(row, flush=True)
            lines.append(row)
        for i, (label, memory, slots) in enumerate(rows):
            memory_kept, traced = kept(data, memory)
            if T > FULL_MAX_T:                  # there, the traced run is the one run
                times[i].append(traced)
            seconds = min(t[0] for t in times[i])
            _, _, predicted, steps = times[i][0]
            if memory is None:
                full[T] = (memory_kept, seconds)
            ref = full[T]
            row = (f"| {T:,} | {label} | {slots:,} | {memory_kept / MB:,.1f} | "
                   f"{memory_kept / ref[0]:.3f} | {seconds:,.2f} | {seconds / ref[1]:.2f}x | "
                   f"{predicted:,} | {steps:,} | {steps / T:.3f} |")
            print(row, flush=True)
            lines.append(row)
        del data
    table = "\n".join(lines) + "\n"
    if args.write:
        section = ("## Backpropagation through time in bounded memory (bench_memory.py)\n\n"
                   f"{info}. Time: the fastest of {args.repeat} interleaved runs (at T > "
                   f"{FULL_MAX_T:,} the traced run's); memory: one traced run. The machine was shared with "
                   "other work (2 cores), so times carry its noise.\n\n" + table)
        write_section(os.path.join(HERE, "RESULTS.md"), "bench_memory", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
