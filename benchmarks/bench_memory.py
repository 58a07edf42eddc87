"""Backpropagation through time in bounded memory: memory kept against time, measured.

    python benchmarks/bench_memory.py --budgets 25 50 100          # T = 1,000 and 10,000
    python benchmarks/bench_memory.py --T 100000 --budgets 64 128  # added to the records
    python benchmarks/bench_memory.py --plot --write               # PNG and RESULTS.md

An LSTM, H = 256, D = 256, N = 16, float32, through the registry (``Cell.run`` with
``bptt_memory``, ``Cell.run_backward``: the path a layer takes, accelerated where it
pays): one forward and one backward per case, under

* full BPTT (``bptt_memory=None``), up to ``FULL_MAX_T`` steps; beyond, its memory
  and time are extrapolated linearly from the largest T measured (and marked so);
* the evenly spaced policy, ``'sqrt'`` (checkpoints every ceil(sqrt(T)) steps);
* Gruslys et al.'s BPTT-HSM policy (``bptt_policy.dp_policy``) at the sqrt policy's
  number of slots and at smaller budgets.

"Memory" is what is kept for the backward pass, measured for each case in a fresh
interpreter, in one traced run: tracemalloc's peak (NumPy reports its buffers to it)
and the peak resident size (VmHWM, reset before the run), each less what is there
before the run and less the outputs and dx (x and dout are made before the run).
Time is measured apart, all cases of one T interleaved in one process, the fastest
of ``--repeat`` runs (beyond ``FULL_MAX_T``: the traced run's time). Steps: the
forward steps the policy predicts (``predicted_steps``) and those actually run (the
cache's counters), the first forward pass included: full BPTT runs T.

The records go to ``benchmarks/memory_results.json`` (a later run replaces the cases
it measures again); ``--write`` puts their table into RESULTS.md, ``--plot`` draws
``benchmarks/memory_curves.png``. ``--lm STEPS ...`` measures the language model's
training step instead.
"""

import argparse
import json
import os
import subprocess
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


def rss(field):
    """``field`` of /proc/self/status (VmRSS: resident now, VmHWM: its peak) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss():
    """Set VmHWM to the current resident size (Linux: 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def one(T, memory):
    """One case's memory, measured in this process (``--one``; ``main`` starts a fresh
    process per case, so that the peak RSS of one case is not another's): after warming
    up, one traced run gives the tracemalloc peak, the peak RSS (VmHWM, reset before
    the run, less the resident size before it) and the steps -> a dict of the record
    ("seconds": that run's time; ``main`` times the cases apart, interleaved). The
    accelerations' memory pool is off here (``NPNN_POOL=0``): buffers it kept from the
    warm-up would be resident before the run, and hide the run's own peak."""
    os.environ["NPNN_POOL"] = "0"
    run(case(50), None), run(case(50), 7)       # compile and warm up before measuring
    data = case(T)
    if memory is not None:
        bptt_policy.policy(T, memory)           # the schedule, made once per (T, m), cached
    base = rss("VmRSS")
    reset_peak_rss()
    traced_kept, (seconds, caller, predicted, steps) = kept(data, memory)
    return {"T": T, "memory": memory, "tracemalloc": traced_kept,
            "rss": rss("VmHWM") - base - caller, "seconds": seconds, "times": [seconds],
            "predicted": predicted, "steps": steps}


def policies(T, budgets):
    """[(label, bptt_memory, slots)] for one T: full BPTT up to FULL_MAX_T, the sqrt
    policy, the DP at the sqrt policy's slots and at each smaller budget."""
    sqrt = bptt_policy.sqrt_policy(T)
    rows = [("full BPTT", None, T)] if T <= FULL_MAX_T else []
    rows += [("sqrt", "sqrt", sqrt.slots)]
    if T <= FULL_MAX_T:                         # beyond, the DP at the sqrt slots is the
        rows += [("DP", sqrt.slots, sqrt.slots)]    # evenly spaced schedule itself
    rows += [("DP", m, m) for m in budgets if m < sqrt.slots]
    return rows


def measure(T, memory):
    """``one`` in a fresh interpreter -> its record."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", str(T),
           "none" if memory is None else str(memory)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(T, memories, repeat):
    """The fastest of ``repeat`` runs of each of ``memories`` at T, interleaved in this
    process (drift hits every case alike) -> [seconds, ...]."""
    run(case(50), None), run(case(50), 7)
    data = case(T)
    for memory in memories:
        if memory is not None:
            bptt_policy.policy(T, memory)
    times = [[] for _ in memories]
    for _ in range(repeat):
        for i, memory in enumerate(memories):
            times[i].append(run(data, memory)[0])
    return times


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


def load(path):
    """The records measured so far ({"machine": ..., "records": [...]}), or none."""
    if not os.path.exists(path):
        return {"records": []}
    with open(path) as f:
        return json.load(f)


def label_of(memory):
    return "full BPTT" if memory is None else "sqrt" if memory == "sqrt" else "DP"


def table(records):
    """The markdown table of ``records``, by T then policy; full BPTT beyond the largest
    T measured is extrapolated linearly from it (and marked so)."""
    lines = ["| T | policy | slots | kept, tracemalloc (MB) | kept, peak RSS (MB) | vs full "
             "| time (s) | vs full | steps predicted | steps run | steps / T |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    full = {r["T"]: r for r in records if r["memory"] is None}
    order = {None: 0, "sqrt": 1}
    for T in sorted({r["T"] for r in records}):
        rows = sorted((r for r in records if r["T"] == T),
                      key=lambda r: (order.get(r["memory"], 2), -(r["slots"])))
        if T not in full:
            base = full[max(full)]
            k = T / base["T"]
            full[T] = {"tracemalloc": base["tracemalloc"] * k, "rss": base["rss"] * k,
                       "seconds": base["seconds"] * k}
            lines.append(f"| {T:,} | full BPTT (extrapolated from T = {base['T']:,}) | {T:,} | "
                         f"{full[T]['tracemalloc'] / MB:,.1f} | {full[T]['rss'] / MB:,.1f} | "
                         f"1.000 | {full[T]['seconds']:,.1f} | 1.00x | {T:,} | - | 1.000 |")
        ref = full[T]
        for r in rows:
            lines.append(
                f"| {T:,} | {label_of(r['memory'])} | {r['slots']:,} | "
                f"{r['tracemalloc'] / MB:,.1f} | {r['rss'] / MB:,.1f} | "
                f"{r['tracemalloc'] / ref['tracemalloc']:.3f} | {r['seconds']:,.2f} | "
                f"{r['seconds'] / ref['seconds']:.2f}x | {r['predicted']:,} | {r['steps']:,} | "
                f"{r['steps'] / T:.3f} |")
    return "\n".join(lines) + "\n"


def model_curve(T, slots):
    """Forward steps / T the DP and the best evenly spaced schedule predict at each of
    ``slots`` (None where no evenly spaced schedule fits)."""
    dp, even = [], []
    for m in slots:
        dp.append(bptt_policy.dp_policy(T, m).predicted_steps() / T)
        e = bptt_policy.best_even(T, m)
        even.append(None if e is None else e.predicted_steps() / T)
    return dp, even


def plot(records, path):
    """The cost curves: memory kept against T; time against memory saved, with Gruslys
    et al.'s figure for T = 1,000; the model's forward steps against slots, with the
    steps counted in the runs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.8))
    full = {r["T"]: r for r in records if r["memory"] is None}
    Ts = sorted({r["T"] for r in records})
    big = max(full)
    fT = sorted(full)
    a1.plot(fT, [full[t]["tracemalloc"] / MB for t in fT], "o-", color="k", label="full BPTT")
    rest = [t for t in Ts if t > big]
    if rest:
        a1.plot([big] + rest, [full[big]["tracemalloc"] / MB * t / big for t in [big] + rest],
                "--", color="k", label="full BPTT, extrapolated")
    groups = {}
    for r in records:
        if r["memory"] is not None:
            key = "sqrt policy" if r["memory"] == "sqrt" else f"DP, {r['memory']} slots"
            groups.setdefault(key, []).append(r)
    for key in sorted(groups, key=lambda k: (k != "sqrt policy", len(k), k)):
        rs = sorted(groups[key], key=lambda r: r["T"])
        a1.plot([r["T"] for r in rs], [r["tracemalloc"] / MB for r in rs],
                "s-" if key == "sqrt policy" else "^:", label=key)
    a1.set(xscale="log", yscale="log", xlabel="sequence length T",
           ylabel="memory kept for the backward (MB, tracemalloc)",
           title=f"Memory kept (LSTM, N {N}, H {H}, {DTYPE})")
    a1.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)

    for T in Ts:
        ref = full.get(T) or {"tracemalloc": full[big]["tracemalloc"] * T / big,
                              "seconds": full[big]["seconds"] * T / big}
        rs = [r for r in records if r["T"] == T and r["memory"] is not None]
        a2.plot([100 * (1 - r["tracemalloc"] / ref["tracemalloc"]) for r in rs],
                [r["seconds"] / ref["seconds"] for r in rs], "o",
                label=f"T = {T:,}" + ("" if T in full else " (vs extrapolated full)"))
        for r in rs:
            a2.annotate("sqrt" if r["memory"] == "sqrt" else str(r["memory"]),
                        (100 * (1 - r["tracemalloc"] / ref["tracemalloc"]),
                         r["seconds"] / ref["seconds"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
    a2.plot([95], [1.33], "*", ms=14, color="crimson", label="Gruslys et al., T = 1,000")
    a2.axhline(1, color="k", lw=0.8)
    a2.set(xlabel="memory saved (% of full BPTT's)", ylabel="time / full BPTT's time",
           title="Time paid for memory saved (measured; labels: slots)")
    a2.grid(True, alpha=0.3)
    a2.legend(fontsize=8)

    for T, colour in zip([t for t in Ts if t <= FULL_MAX_T], ["tab:blue", "tab:orange",
                                                              "tab:green"]):
        slots = sorted({int(round(v)) for v in np.geomspace(4, min(T, 2000), 14)})
        dp, even = model_curve(T, slots)
        a3.plot(slots, dp, "-", color=colour, label=f"DP model, T = {T:,}")
        a3.plot([m for m, e in zip(slots, even) if e is not None],
                [e for e in even if e is not None], "--", color=colour,
                label=f"evenly spaced model, T = {T:,}")
        rs = [r for r in records if r["T"] == T and r["memory"] is not None]
        a3.plot([r["slots"] for r in rs], [r["steps"] / T for r in rs], "x", color=colour,
                ms=9, mew=2, label=f"steps run, T = {T:,}")
    a3.set(xscale="log", xlabel="slots (one step's cache each)",
           ylabel="forward steps / T (first pass included)",
           title="Recomputation: the model and the runs")
    a3.grid(True, which="both", alpha=0.3)
    a3.legend(fontsize=8)
    plain = ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for ax in (a1, a3):
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, nargs="+",
                   help="lengths to measure (default: 1,000 and 10,000; none with --plot/--write)")
    p.add_argument("--budgets", type=int, nargs="+", default=[25, 50],
                   help="DP budgets (slots) below the sqrt policy's")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per case, interleaved (beyond FULL_MAX_T: the traced run)")
    p.add_argument("--lm", type=int, nargs="+", metavar="STEPS",
                   help="instead: the language model's training step at these --steps")
    p.add_argument("--one", nargs=2, metavar=("T", "MEMORY"), help=argparse.SUPPRESS)
    p.add_argument("--json", default=os.path.join(HERE, "memory_results.json"),
                   help="the records: new cases replace those of the same T and budget")
    p.add_argument("--plot", action="store_true",
                   help="draw benchmarks/memory_curves.png from the records (matplotlib)")
    p.add_argument("--write", action="store_true",
                   help="update benchmarks/RESULTS.md's table from the records")
    args = p.parse_args(argv)
    if args.one:
        T, memory = int(args.one[0]), args.one[1]
        memory = None if memory == "none" else memory if memory == "sqrt" else int(memory)
        print(json.dumps(one(T, memory)))
        return 0
    if args.lm:
        info = machine(None) + "; npnn train's default model (LSTM H 256, embedding 64), " \
            "batch 32, vocabulary 100, float32"
        print(info)
        lm = lm_table(args.lm, ("sqrt", 64))
        if args.write:
            section = ("### The language model's step under a budget (bench_memory.py --lm)\n\n"
                       f"{info}. One step (forward, loss, backward) per row, timed once and "
                       "traced once; the peak is the whole step's (logits, their gradients "
                       "and the embedding included). The machine was shared (2 cores).\n\n"
                       + lm)
            write_section(os.path.join(HERE, "RESULTS.md"), "bench_memory_lm", section)
        return 0
    store = load(args.json)
    info = machine(None) + f"; LSTM N {N}, D {D}, H {H}, {DTYPE}"
    print(info)
    Ts = args.T if args.T is not None else [] if (args.plot or args.write) else [1000, 10_000]
    for T in Ts:
        rows = policies(T, args.budgets)
        found = []
        for label, memory, slots in rows:       # memory: a fresh process per case
            rec = measure(T, memory)
            rec.update(slots=slots, label=label, machine=info)
            found.append(rec)
            print(f"T {T:,} {label} {slots:,} slots: kept {rec['tracemalloc'] / MB:,.1f} MB "
                  f"(peak RSS {rec['rss'] / MB:,.1f} MB), {rec['steps']:,} steps "
                  f"({rec['predicted']:,} predicted), traced run {rec['seconds']:,.2f} s",
                  flush=True)
        if T <= FULL_MAX_T and args.repeat > 0:  # time: interleaved, in one process
            for rec, times in zip(found, timed(T, [m for _, m, _ in rows], args.repeat)):
                rec.update(seconds=min(times), times=times)
                print(f"T {T:,} {rec['label']}: {min(times):,.2f} s (fastest of {times})",
                      flush=True)
        keys = {(T, r["memory"]) for r in found}
        store["records"] = [r for r in store["records"]
                            if (r["T"], r["memory"]) not in keys] + found
        with open(args.json, "w") as f:
            json.dump(store, f, indent=1)
    print(table(store["records"]))
    if args.plot:
        plot(store["records"], os.path.join(HERE, "memory_curves.png"))
    if args.write:
        machines = sorted({r["machine"] for r in store["records"]})
        write_section(os.path.join(HERE, "RESULTS.md"), "bench_memory",
                      "; ".join(machines) + ".\n\n" + table(store["records"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
