"""Constants and helpers the accelerated cells share: the tanh form of the sigmoid,
the sizes from which an acceleration pays, the choice of a kernel set, the
subnormal flush and the forward-only ``Prepared`` steps."""

import os
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule
from ...backend import cupy_module
from .._recurrent import initial_state, input_half, keep_padded, masked_output, step_mask
from ..regularisers import zone_forward
from . import _numba

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
#: Shorter sequences of many rows pay too: the set-up copies (D + H) x G*H weight
#: numbers once, each step's cheaper elementwise work saves in proportion to N x H,
#: so the crossover in T falls as N grows and rises with D + H. From the same table,
#: at N = 32 the acceleration paid from T = 2 to 4 at D, H = 64, 256 and from
#: T = 8 to 16 at 512, 512: it runs from two steps once T * N >= this x (D + H)
#: (a seq2seq batch of 128 sequences, H = 128 or 256: every encoder and decoder).
ROWS_PER_WIDTH = 0.4
#: ... and never below this many rows (the fixed costs of a call: allocations and
#: Python, whatever the weights' size; at N = 4 the acceleration paid from T = 8).
MIN_SHORT_ROWS = 32

#: The backward loops flush every FLUSH_EVERY steps: a flushed gradient is exact zeros
#: and stays zero (0 W = 0), so a gradient decaying through the slow range costs at
#: most this many slow steps, and the flush's own cost is spread over as many.
FLUSH_EVERY = 8


def fused(xp: ArrayModule) -> bool:
    """True when the fused GPU kernels should run for arrays of module ``xp``:
    on CuPy, unless the environment sets ``NPNN_FUSED=0``."""
    return xp is not np and xp is cupy_module() and os.environ.get("NPNN_FUSED", "1") != "0"


def flush_subnormals(xp: ArrayModule, a: Array) -> Array:
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


class Kernels(NamedTuple):
    """One cell's kernel set: its step's elementwise work, written once per kind of
    arrays (NumPy ufuncs, numba, fused CUDA), each set with the same three functions
    and the same arguments (the cell's accel file documents them).

    ``forward`` runs one forward step after the loop's recurrent products;
    ``backward`` one backward step before the loop's product dz_t W_hh;
    ``prepared`` one forward-only step (``Prepared``). ``folds`` is True for a set
    whose kernels take the valid mask and the output gradient of the step themselves
    (the fused ones: fewer launches); the loops (``_loop``) do that work for the others,
    which are then given None for those arguments. ``bias``: the forward kernel adds the
    summed biases itself (one pass less over the gates of every step), else the cell
    adds them to the input half first and gives the kernel None. ``own``: the backward
    kernel takes the step's output gradient (unless zoneout splits the gradient first)
    and flushes what it writes (``flush_subnormals``, every step) itself, so the loop
    does neither (the numba set)."""
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    prepared: Callable[..., Any]
    folds: bool = False
    bias: bool = False
    own: bool = False


def kernel_set(xp: ArrayModule, dtype: DTypeLike, fused_set: Kernels,
               numba_set: Callable[[], Kernels], ufunc_set: Callable[[], Kernels],
               folding: bool = True) -> Kernels:
    """The kernel set for arrays of module ``xp`` and ``dtype``: ``fused_set`` on CuPy
    (``fused``), ``numba_set()`` where numba runs (``_numba.use``), else ``ufunc_set()``
    (the last two are functions, so that only the chosen set is made). Without
    ``folding`` (zoneout: the loop works between the kernel's steps), never a set that
    folds: on CuPy the ufunc set."""
    if fused(xp) and folding:
        return fused_set
    if _numba.use(xp, dtype):
        return numba_set()
    return ufunc_set()


class Prepared:
    """A cell's weights prepared once for forward-only use: decoding, generation,
    evaluation, anything whose result is never backpropagated.

    The reference re-validates its arguments at each call, takes a ufunc pass per
    gate and keeps every gate for the backward; a decoder calling it token by token
    pays that per token. Here the biases are summed once, a step's gates take one
    tanh pass over their block (``SIGMOID_SCALE``), and nothing is kept. Preparing
    copies nothing (the products read the weights transposed, as BLAS allows), so
    it pays from the first step. Subclasses (one per accelerated cell) set
    ``W_ih`` (G*H, D), ``W_hh`` (G*H, H), ``b_in`` (G*H,) or None (added to the
    input half) and ``xp`` (their array module), and define ``cell(xw, states)``.
    Arguments are not checked: the layer or model calling this has checked them.
    A cell's ``cell`` runs its kernel set's ``prepared`` step after the product.
    """

    # Set by each subclass (see above), declared for the type checker.
    W_ih: Array
    W_hh: Array
    b_in: Optional[Array]
    xp: ArrayModule
    #: (xw (N, G*H): the step's input half, states) -> the new states.
    cell: Callable[[Array, Tuple[Array, ...]], Tuple[Array, ...]]
    #: zoneout's eval form, p per state (None: none), set by ``Cell.prepare``: each step's
    #: new states become p * s_{t-1} + (1 - p) * s~_t (``regularisers`` (R4)).
    zone: Optional[Tuple[Optional[float], ...]] = None

    def start(self, states: Sequence[Optional[Array]], N: int,
              dtype: DTypeLike) -> Tuple[Array, ...]:
        """Initial states (each (N, H) or None for zeros) -> a tuple of arrays."""
        H = self.W_hh.shape[1]
        return tuple(initial_state(self.xp, s, N, H, dtype) for s in states)

    def step(self, x: Array, states: Sequence[Optional[Array]]) -> Tuple[Array, ...]:
        """One step: x (N, D), a tuple of states (each (N, H) or None) -> new states."""
        old = self.start(states, x.shape[0], x.dtype)
        new = self.cell(input_half(x, self.W_ih, self.b_in), old)
        return new if self.zone is None else zone_forward(self.zone, new, old)

    def sequence(self, x: Array, states: Sequence[Optional[Array]],
                 mask: Optional[Array] = None) -> Tuple[Array, Tuple[Array, ...]]:
        """x (T, N, D), a tuple of initial states, mask (T, N) or None -> out (T, N, H)
        and the tuple of final states, as the cell's reference forward returns them
        (padded steps keep the state, by selection, and output 0)."""
        xp = self.xp
        T, N, _ = x.shape
        m = step_mask(mask)
        xw = input_half(x, self.W_ih, self.b_in)             # (T, N, G*H), one product
        states = self.start(states, N, x.dtype)
        out = xp.empty((T, N, self.W_hh.shape[1]), dtype=x.dtype)
        for t in range(T):
            new = self.cell(xw[t], states)
            if self.zone is not None:
                new = zone_forward(self.zone, new, states)
            states = new if m is None else keep_padded(xp, m[t], new, states)
            out[t] = states[0]
        return masked_output(xp, out, m), states
