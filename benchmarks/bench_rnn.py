"""Recurrent kernels, npnn against PyTorch, side by side in one process.

    python benchmarks/bench_rnn.py                       # CPU, every cell and size
    python benchmarks/bench_rnn.py --sizes S,L --cells gru --repeat 9
    python benchmarks/bench_rnn.py --backend cupy        # GPU: npnn on CuPy vs cuDNN
    python benchmarks/bench_rnn.py --write               # also update benchmarks/RESULTS.md

asv-shaped: parameters (cell x size x mode x dtype), a setup per case, and
time functions for npnn and for the peer; the table comes last. Times are
medians of npnn, its BLAS floor, its reference path and PyTorch timed in blocks
ordered a b c c b a, so that the machine's drifts fall on all of them alike (at least ``--repeat``
runs, more for short cases: about a second of each), with device synchronisation on
GPU (CUDA events for both sides, cuDNN with TF32 off, npnn in full fp32).
FLOPs of one layer: forward 2*T*N*G*H*(D+H), forward+backward three times that.

The *reference* column times the same call on the reference path (the cell's
textbook file, ``NPNN_ACCEL=0``): what the accelerations buy. On NumPy npnn is
timed with NumPy alone (``NPNN_NUMBA=0``) and, when numba is installed
(``pip install -e ".[fast]"``), with its compiled step kernels, side by side.

The *BLAS floor* is also measured in the same run: the matrix products npnn's
kernel makes (the input product for all steps, T recurrent products each way,
the input-gradient and two weight-gradient products), on operands of the same
shapes, with no elementwise work, in each of the two layouts the accelerations
can keep their states in (``npnn/functional/accel/_layout.py``): batch-major,
h_{t-1} W^T on (N, H) states, and feature-major, W h_{t-1}^T on (H, N) states.
The floor is the faster of the two (the table shows both). No implementation built
from these BLAS calls can be faster, so floor/PyTorch is the best ratio within
reach of NumPy on this machine; npnn minus floor is the elementwise work and
the interpreter. The *layout* column says which layout npnn's timed choice took
(NumPy alone / with numba).
The GEMM roofline is measured in the same run: the throughput of one large
matrix product of the same dtype, the best a matmul-bound kernel could reach.
Memory: peak bytes allocated by npnn's training step (tracemalloc, NumPy) and
the minimal cache BPTT must keep, T*N*(G*H + S*H) values (gates and states).
"""

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import npnn.functional as F  # noqa: E402
from npnn.backend import get_backend, to_backend  # noqa: E402
from npnn.functional.accel import use_reference  # noqa: E402

SIZES = {"S": (32, 35, 28, 256), "M": (64, 100, 512, 512), "L": (16, 200, 128, 128),
         "XL": (128, 50, 1024, 1024)}                                   # (N, T, D, H)
CELLS = {"rnn_tanh": (1, 1), "lstm": (4, 2), "gru": (3, 1)}             # G, states
MODES = ("forward", "forward+backward")


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}), "
                         f"{i.get('num_threads')} threads" for i in threadpool_info()
                         if i.get("user_api") == "blas")
    except ImportError:
        cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
        blas = cfg.get("Build Dependencies", {}).get("blas", {}) if cfg else {}
        return (f"{blas.get('name', '?')} {blas.get('version', '')}, OPENBLAS_NUM_THREADS="
                f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")


def machine(torch):
    core = os.environ.get("OPENBLAS_CORETYPE", "unset")
    t = f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else \
        ", torch not installed"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy "
            f"{np.__version__}; BLAS {blas_info()}; OPENBLAS_CORETYPE={core}{t}")


class Case:
    """One (cell, size, mode, dtype) on one backend."""

    def __init__(self, cell, size, mode, dtype, xp, torch, device):
        self.cell, self.size, self.mode, self.dtype = cell, size, mode, dtype
        N, T, D, H = SIZES[size]
        G, S = CELLS[cell]
        self.flops = 2 * T * N * G * H * (D + H) * (3 if mode == "forward+backward" else 1)
        self.min_cache = T * N * (G * H + S * H) * np.dtype(dtype).itemsize
        rng = np.random.default_rng(0)
        k = 1 / np.sqrt(H)
        W = [rng.uniform(-k, k, s).astype(dtype) for s in ((G * H, D), (G * H, H), (G * H,), (G * H,))]
        x = rng.standard_normal((T, N, D)).astype(dtype)
        dout = rng.standard_normal((T, N, H)).astype(dtype)
        self.np_args = (x, W, dout)
        be = "cupy" if device == "cuda" else "numpy"
        self.x, self.W, self.dout = (to_backend(x, be), [to_backend(w, be) for w in W],
                                     to_backend(dout, be))
        self.xp = xp
        name = {"rnn_tanh": "rnn"}.get(cell, cell)      # the accelerated entry (F.fast)
        self.forward = getattr(F.fast, f"{name}_forward")
        self.backward = getattr(F.fast, f"{name}_backward")
        self.states = [None] * S
        self.torch = torch
        if torch is not None:
            cls = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
            tdtype = getattr(torch, dtype)
            self.tmod = cls(D, H, dtype=tdtype, device=device)
            with torch.no_grad():
                for name, w in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), W):
                    getattr(self.tmod, name).copy_(torch.tensor(w))
            self.tx = torch.tensor(x, device=device, requires_grad=mode != "forward")
            self.tdout = torch.tensor(dout, device=device)

    def time_npnn(self):
        *res, cache = self.forward(self.x, *self.states, *self.W)
        if self.mode == "forward+backward":
            self.backward(self.dout, *self.states, cache)

    def time_reference(self):
        """The same call on the reference path (the cell's textbook file, no acceleration)."""
        with use_reference():
            self.time_npnn()

    def time_torch(self):
        if self.mode == "forward":
            with self.torch.no_grad():
                self.tmod(self.tx)
        else:
            out, _ = self.tmod(self.tx)
            out.backward(self.tdout)

    def _operands(self):
        """(xp, x, W_ih, W_hh, the forward's row blocks of W_hh) of the floors: the GRU
        runs r, z apart from n (see gru.py)."""
        W_hh = self.W[1]
        GH, H = W_hh.shape
        blocks = [(0, 2 * H), (2 * H, GH)] if self.cell == "gru" else [(0, GH)]
        return self.xp, self.x, self.W[0], W_hh, blocks

    def time_blas(self):
        """The products of ``time_npnn`` alone (see the module docstring)."""
        xp, x, W_ih, W_hh, blocks = self._operands()
        (T, N, D), (GH, H) = x.shape, W_hh.shape
        if not hasattr(self, "_blas"):
            self._blas = ([xp.ascontiguousarray(W_hh[a:b].T) for a, b in blocks],
                          [xp.empty((N, b - a), dtype=x.dtype) for a, b in blocks],
                          xp.zeros((T + 1, N, H), dtype=x.dtype), xp.empty((N, H), dtype=x.dtype),
                          xp.full((T, N, GH), 0.01, dtype=x.dtype))
        W_hh_T, rec, h, dh, dz = self._blas
        x2 = x.reshape(T * N, D)
        for a, b in blocks:
            x2 @ W_ih[a:b].T                        # input half, every step at once
        for t in range(T):
            for W_k, rec_k in zip(W_hh_T, rec):
                xp.matmul(h[t], W_k, out=rec_k)     # recurrent half, step by step
        if self.mode == "forward+backward":
            for t in range(T - 1, -1, -1):
                xp.matmul(dz[t], W_hh, out=dh)      # gradient to h_{t-1}
            dz2 = dz.reshape(T * N, GH)
            dz2 @ W_ih                              # dx
            dz2.T @ x2                              # dW_ih
            dz2.T @ h[:-1].reshape(T * N, H)        # dW_hh

    def time_blas_feature(self):
        """The products of ``time_blas`` feature-major: the states (H, N), each step's
        product W h_{t-1}^T, the gradients (G*H, N) and, for the products over all steps,
        the steps side by side (as ``accel._loop.weight_grads`` gets them)."""
        xp, x, W_ih, W_hh, blocks = self._operands()
        (T, N, D), (GH, H) = x.shape, W_hh.shape
        if not hasattr(self, "_blas_f"):
            self._blas_f = ([xp.ascontiguousarray(W_hh[a:b]) for a, b in blocks],
                            [xp.empty((b - a, N), dtype=x.dtype) for a, b in blocks],
                            xp.zeros((T + 1, H, N), dtype=x.dtype),
                            xp.empty((H, N), dtype=x.dtype),
                            xp.full((T, GH, N), 0.01, dtype=x.dtype),
                            xp.ascontiguousarray(W_hh.T))
        W_k, rec, h, dh, dz, W_hh_T = self._blas_f
        x2 = x.reshape(T * N, D)
        for a, b in blocks:
            W_ih[a:b] @ x2.T                        # input half, every step at once
        for t in range(T):
            for W_b, rec_b in zip(W_k, rec):
                xp.matmul(W_b, h[t], out=rec_b)     # recurrent half, step by step
        if self.mode == "forward+backward":
            for t in range(T - 1, -1, -1):
                xp.matmul(W_hh_T, dz[t], out=dh)    # gradient to h_{t-1}, W^T contiguous
            dzT = xp.ascontiguousarray(dz.transpose(1, 0, 2)).reshape(GH, T * N)
            hT = xp.ascontiguousarray(h[:-1].transpose(1, 0, 2)).reshape(H, T * N)
            dzT.T @ W_ih                            # dx
            dzT @ x2                                # dW_ih
            dzT @ hT.T                              # dW_hh

    def layout(self):
        """The layout npnn's timed choice takes for this case (NumPy arrays)."""
        from npnn.functional.accel import _layout
        G = CELLS[self.cell][0]
        N, T, D, H = SIZES[self.size]
        if _layout.too_small(N, H, G):
            return "batch"                          # too small to be timed
        return _layout.chosen().get((N, H, G, np.dtype(self.dtype).str, _numba_use(self.dtype),
                                     _layout.SEQUENCES), "-")

    def peak_memory(self):
        """Peak bytes allocated during one npnn training step (NumPy only), with the
        accelerations' pool off (``accel/_pool.py``: with it on, a step's arrays come
        from buffers allocated before tracing began)."""
        old = os.environ.get("NPNN_POOL")
        os.environ["NPNN_POOL"] = "0"
        try:
            tracemalloc.start()
            tracemalloc.reset_peak()
            self.time_npnn()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        finally:
            if old is None:
                del os.environ["NPNN_POOL"]
            else:
                os.environ["NPNN_POOL"] = old
        return peak


#: Pause before each block of timed calls, longer than OpenBLAS's default spin
#: time of its idle worker threads (2^28 cycles, about 0.1 s).
PAUSE_S = 0.3


def median_ms(fns, repeat, sync=None, budget_s=1.0, max_runs=50):
    """Median time in ms of each of ``fns``, timed in blocks in the order
    a b c c b a, so that a slow or fast spell of the machine falls on all alike.

    Calls are not interleaved one by one: after a call, OpenBLAS's worker
    threads keep spinning on the cores for a while (and so do PyTorch's), which
    slowed the other library's next calls by up to 2.5x when tried. Each block
    starts after a pause of ``PAUSE_S`` and one untimed call. Each function gets
    about ``budget_s`` seconds, at least ``repeat`` and at most ``max_runs``
    timed calls.
    """
    def once(fn):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        return time.perf_counter() - t0
    first = [once(fn) for fn in fns]
    runs = max(repeat, min(max_runs, int(budget_s / max(max(first), 1e-9))))
    per_block = [runs // 2, runs - runs // 2]
    times = [[] for _ in fns]
    for block, order in zip(per_block, (range(len(fns)), reversed(range(len(fns))))):
        for k in order:
            time.sleep(PAUSE_S)                             # let spinning threads sleep
            once(fns[k])                                    # untimed: the switch
            times[k].extend(once(fns[k]) for _ in range(block))
    return [1e3 * statistics.median(ts) for ts in times]


def gemm_gflops(xp, dtype, sync, n=2048):
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)).astype(dtype))
    ms, = median_ms([lambda: a @ a], 5, sync)
    return 2 * n ** 3 / (ms * 1e-3) / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", default=",".join(CELLS))
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="npnn-only figures")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    p.add_argument("--label", default="", help="a note for the RESULTS.md heading")
    args = p.parse_args(argv)
    xp = get_backend(args.backend)
    device = "cuda" if args.backend == "cupy" else "cpu"
    torch = None
    if not args.no_torch:
        try:
            import torch
            if device == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
        except ImportError:
            print("PyTorch is not installed: npnn-only figures")
    sync = None
    if device == "cuda":
        def sync():
            xp.cuda.runtime.deviceSynchronize()
            if torch is not None:
                torch.cuda.synchronize()
    info = machine(torch)
    print(info)
    roof = gemm_gflops(xp, args.dtype, sync)
    print(f"GEMM roofline ({args.dtype}, 2048^3 on {args.backend}): {roof:.0f} GFLOP/s")
    from npnn.functional.accel import _numba
    numba = args.backend == "numpy" and _numba.numba() is not None
    if numba:
        info += f"; numba {_numba.numba().__version__}"
    header = ["cell", "size", "mode", "npnn ms", "npnn/PyTorch"]
    header += ["npnn + numba ms", "npnn + numba/PyTorch"] if numba else []
    header += ["PyTorch ms", "BLAS floor ms (batch / feature)", "floor/PyTorch", "layout",
               "reference ms", "reference/PyTorch", "npnn GFLOP/s", "% of GEMM roofline",
               "peak mem / min cache"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    nan = float("nan")
    for cell in args.cells.split(","):
        for size in args.sizes.split(","):
            for mode in args.modes.split(","):
                case = Case(cell, size, mode, args.dtype, xp, torch, device)
                fns = ([with_kernels(case.time_npnn, numba=False)]
                       + ([with_kernels(case.time_npnn, numba=True)] if numba else [])
                       + [case.time_blas, case.time_blas_feature, case.time_reference]
                       + ([case.time_torch] if torch else []))
                times = median_ms(fns, args.repeat, sync)
                ours, fast = times[0], (times[1] if numba else nan)
                floor_b, floor_f, ref = times[-4:-1] if torch else times[-3:]
                floor = min(floor_b, floor_f)
                theirs = times[-1] if torch else nan
                layouts = "/".join(with_kernels(case.layout, numba=k)()
                                   for k in ((False, True) if numba else (False,)))
                gflops = case.flops / (ours * 1e-3) / 1e9
                mem = ""
                if mode == "forward+backward" and args.backend == "numpy":
                    mem = f"{case.peak_memory() / case.min_cache:.1f}x"
                row = [cell, size, mode, f"{ours:.2f}", f"{ours / theirs:.2f}"]
                row += [f"{fast:.2f}", f"{fast / theirs:.2f}"] if numba else []
                row += [f"{theirs:.2f}", f"{floor_b:.2f} / {floor_f:.2f}",
                        f"{floor / theirs:.2f}", layouts, f"{ref:.2f}", f"{ref / theirs:.2f}",
                        f"{gflops:.1f}", f"{100 * gflops / roof:.0f}%", mem]
                lines.append("| " + " | ".join(row) + " |")
                print(lines[-1], flush=True)
    table = "\n".join(lines)
    print()
    print(table)
    if args.write:
        section = (f"## Recurrent kernels vs PyTorch ({args.backend}, {args.dtype}"
                   f"{', ' + args.label if args.label else ''})\n\n"
                   f"`python benchmarks/bench_rnn.py` — {info}. GEMM roofline "
                   f"{roof:.0f} GFLOP/s. Medians of at least {args.repeat} runs in blocks "
                   "ordered a b c c b a; sizes (N, T, D, H): "
                   + ", ".join(f"{k} {v}" for k, v in SIZES.items()) + ".\n\n" + table + "\n")
        write_section(os.path.join(HERE, "RESULTS.md"),
                      f"bench_rnn:{args.backend}:{os.environ.get('OPENBLAS_CORETYPE', 'default')}",
                      section)
    return 0


def _numba_use(dtype):
    from npnn.functional.accel import _numba
    return _numba.use(np, dtype)


def with_kernels(fn, numba):
    """``fn`` run with numba's step kernels switched on or off (``NPNN_NUMBA``)."""
    def run():
        old = os.environ.get("NPNN_NUMBA")
        os.environ["NPNN_NUMBA"] = "1" if numba else "0"
        try:
            return fn()
        finally:
            if old is None:
                del os.environ["NPNN_NUMBA"]
            else:
                os.environ["NPNN_NUMBA"] = old
    return run


def write_section(path, key, section):
    """Replace (or append) the block between markers ``key`` in RESULTS.md."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    old = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    if begin in old:
        head, rest = old.split(begin, 1)
        new = head + begin + "\n" + section + end + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + begin + "\n" + section + end + "\n"
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    sys.exit(main())
