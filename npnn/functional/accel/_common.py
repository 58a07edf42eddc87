"""Constants and helpers the accelerated cells share."""

import os

import numpy as np

from ...backend import cupy_module

#: sigmoid(a) = SIGMOID_SCALE * tanh(SIGMOID_SCALE * a) + SIGMOID_SHIFT, i.e.
#: (1 + tanh(a / 2)) / 2. Every gate is then y = s tanh(s a) + b, with
#: (s, b) = (SIGMOID_SCALE, SIGMOID_SHIFT) on a sigmoid gate and (1, 0) on a
#: tanh one, so all gates of a step take one tanh pass over one block, and the
#: factor s inside tanh can be folded into the weights once per call. The
#: derivative, from the output y, is the same expression for every gate:
#: dy/da = s^2 - (y - b)^2  (= y (1 - y) for a sigmoid, 1 - y^2 for tanh).
SIGMOID_SCALE = 0.5
SIGMOID_SHIFT = 0.5

#: On NumPy, sequences with fewer steps, or fewer rows (steps x sequences), than
#: these run the reference: an acceleration's set-up (scaling and transposing the
#: weights, allocating buffers) costs more than its faster steps save. Measured
#: with benchmarks/bench_steps.py --crossover (RESULTS.md, "When the acceleration
#: pays"): below them the reference was as fast or faster at every size tried.
MIN_STEPS = 16
MIN_ROWS = 128

#: The backward loops flush every FLUSH_EVERY steps: a flushed gradient is exact zeros
#: and stays zero (0 W = 0), so a gradient decaying through the slow range costs at
#: most this many slow steps, and the flush's own cost is spread over as many.
FLUSH_EVERY = 8


def fused(xp):
    """True when the fused GPU kernels should run for arrays of module ``xp``:
    on CuPy, unless the environment sets ``NPNN_FUSED=0``."""
    return xp is not np and xp is cupy_module() and os.environ.get("NPNN_FUSED", "1") != "0"


def flush_subnormals(xp, a):
    """Zero the entries of ``a`` below tiny / eps, in place (1e-31 in float32, 1e-292 in
    float64; tiny is the smallest normal number, eps the machine epsilon).

    BPTT over long sequences lets gradients vanish towards the subnormal range, and
    x86 CPUs run arithmetic that reads *or produces* subnormals through slow
    microcode: OpenBLAS's products then take 5 to 100 times longer (measured: a
    16x128 by 128x512 product, 24 us normal, 2.4 ms subnormal; an LSTM backward
    at T = 400 slowing from 18 to 100-150 us per step). Flushing at tiny / eps,
    not just at tiny, keeps the products of flushed arrays with weights down to eps
    normal. The values removed are below the float's relative resolution of any
    quantity of size 1, as in the CPU's flush-to-zero mode, which NumPy cannot set.
    GPUs treat subnormals at full speed, so only NumPy arrays are flushed.
    """
    if xp is np:
        info = np.finfo(a.dtype)
        xp.copyto(a, 0, where=xp.abs(a) < info.tiny / info.eps)
    return a


def padding(mask):
    """Mask (T, N) -> (T, N, 1) boolean, True at *padded* steps (None without a mask)."""
    return None if mask is None else ~mask.astype(bool)[:, :, None]


def hold(xp, s, t, pad):
    """Forward, at step t: padded rows of s[t + 1] take s[t] (selection, in place)."""
    xp.copyto(s[t + 1], s[t], where=pad[t])


def masked_output(xp, h, pad):
    """out_t = h_t at valid steps, 0 at padded ones."""
    return h if pad is None else xp.where(pad, 0, h)


def valid_rows(xp, a, pad):
    """``a`` (T, N, .) with padded rows zeroed (a new array; ``a`` itself without a mask)."""
    return a if pad is None else xp.where(pad, 0, a)
