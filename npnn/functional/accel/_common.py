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
from . import _layout, _numba

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
    input half), ``xp`` (their array module), ``G`` and ``S`` (gate blocks and
    states), and define ``cell(xw, states, feature)``.
    Arguments are not checked: the layer or model calling this has checked them.
    A cell's ``cell`` runs its kernel set's ``prepared`` step after the product.

    **Layout** (``_layout``). The steps run batch-major or feature-major, as
    ``_layout.choose`` times them for N rows the first time (forward-only steps and
    sequences, ``STEPS`` and ``FORWARD``, are timed apart from the training loops, which
    also pay for the weight gradients). Feature-major, a step's states are (H, N), its
    product W_hh h^T and its input half W_ih x^T; ``cell`` then takes and returns
    feature-major arrays.
    ``step`` moves the states between the layouts at every call (a decoder's caller
    holds them batch-major: at N = 1 that is a free reshape), ``sequence`` once.
    """

    # Set by each subclass (see above), declared for the type checker. A subclass that
    # sets no G (written before the layouts) runs batch-major, its cell(xw, states).
    W_ih: Array
    W_hh: Array
    b_in: Optional[Array]
    xp: ArrayModule
    G: int              # gate blocks
    S: int              # states
    #: (xw (N, G*H): the step's input half, states, feature-major?) -> the new states;
    #: feature-major xw (G*H, N) and the states (H, N).
    cell: Callable[..., Tuple[Array, ...]]
    #: zoneout's eval form, p per state (None: none), set by ``Cell.prepare``: each step's
    #: new states become p * s_{t-1} + (1 - p) * s~_t (``regularisers`` (R4)).
    zone: Optional[Tuple[Optional[float], ...]] = None

    def start(self, states: Sequence[Optional[Array]], N: int,
              dtype: DTypeLike) -> Tuple[Array, ...]:
        """Initial states (each (N, H) or None for zeros) -> a tuple of arrays."""
        H = self.W_hh.shape[1]
        return tuple(initial_state(self.xp, s, N, H, dtype) for s in states)

    def product(self, h: Array, feature: bool) -> Array:
        """The recurrent product of a step: h W_hh^T (N, G*H), feature-major
        W_hh h^T (G*H, N)."""
        return self.xp.dot(self.W_hh, h) if feature else self.xp.dot(h, self.W_hh.T)

    def feature(self, N: int, dtype: DTypeLike, kind: str = _layout.STEPS) -> bool:
        """Whether ``kind`` (``_layout.STEPS``: ``step``; ``_layout.FORWARD``:
        ``sequence``) of N rows runs feature-major (``_layout.choose``, timed on
        ``trial`` the first time for this shape). Like the kernel set, chosen when these
        steps were prepared, it is kept for their life: ``NPNN_LAYOUT`` and ``NPNN_NUMBA``
        are read at the first step of each N (``use_layout`` at every step)."""
        G = getattr(self, "G", None)
        if G is None:                       # a subclass from before the layouts: batch-major
            return False
        # asked at every step: the answer is kept per (N, dtype, kind, use_layout's block),
        # so that a step pays a dict lookup, not the choice's environment reads (5 us)
        key = (N, dtype, kind, _layout.in_block())
        known = self.__dict__.setdefault("_layouts", {})
        if key not in known:
            known[key] = _layout.choose(self.xp, N, self.W_hh.shape[1], G, dtype,
                                        lambda: self.trial(N, dtype, kind), kind)
        return known[key] == _layout.FEATURE

    def trial(self, N: int, dtype: DTypeLike,
              kind: str = _layout.STEPS) -> Callable[[str], None]:
        """``_layout.TRIAL_STEPS`` steps of N rows on random inputs in a given layout: one
        ``step`` call each (``_layout.STEPS``) or one ``sequence`` (``_layout.FORWARD``)."""
        rng = np.random.default_rng(0)
        x = self.xp.asarray(rng.standard_normal((_layout.TRIAL_STEPS, N,
                                                 self.W_ih.shape[1])).astype(dtype))
        states: Tuple[Optional[Array], ...] = (None,) * self.S

        def run(layout: str) -> None:
            with _layout.use_layout(layout):
                if kind == _layout.FORWARD:
                    self.sequence(x, states)
                    return
                s = states
                for x_t in x:
                    s = self.step(x_t, s)
        return run

    def step(self, x: Array, states: Sequence[Optional[Array]]) -> Tuple[Array, ...]:
        """One step: x (N, D), a tuple of states (each (N, H) or None) -> new states."""
        N = x.shape[0]
        old = self.start(states, N, x.dtype)
        if self.feature(N, x.dtype):
            xp = self.xp
            xw = self._input_half_t(x)
            new = self.cell(xw, tuple(xp.ascontiguousarray(s.T) for s in old), True)
            new = tuple(xp.ascontiguousarray(s.T) for s in new)
        else:
            new = self.cell(input_half(x, self.W_ih, self.b_in), old)
        return new if self.zone is None else zone_forward(self.zone, new, old)

    def _input_half_t(self, x: Array) -> Array:
        """W_ih x^T (+ b_in) for one step's x (N, D): (G*H, N)."""
        xw = self.xp.dot(self.W_ih, x.T)
        if self.b_in is not None:
            xw += self.b_in[:, None]
        return xw

    def sequence(self, x: Array, states: Sequence[Optional[Array]],
                 mask: Optional[Array] = None) -> Tuple[Array, Tuple[Array, ...]]:
        """x (T, N, D), a tuple of initial states, mask (T, N) or None -> out (T, N, H)
        and the tuple of final states, as the cell's reference forward returns them
        (padded steps keep the state, by selection, and output 0)."""
        xp = self.xp
        T, N, _ = x.shape
        H = self.W_hh.shape[1]
        m = step_mask(mask)
        held = self.start(states, N, x.dtype)
        feature = self.feature(N, x.dtype, _layout.FORWARD)
        if feature:       # (T, G*H, N), states (H, N), masks (T, 1, N); one copy each way
            xw = _layout.input_half(xp, x, self.W_ih)
            if self.b_in is not None:
                xw += self.b_in[:, None]
            held = tuple(xp.ascontiguousarray(s.T) for s in held)
            mk = None if m is None else m.transpose(0, 2, 1)
            out = xp.empty((T, H, N), dtype=x.dtype)
        else:
            xw = input_half(x, self.W_ih, self.b_in)             # (T, N, G*H), one product
            mk = m
            out = xp.empty((T, N, H), dtype=x.dtype)
        for t in range(T):
            new = self.cell(xw[t], held, True) if feature else self.cell(xw[t], held)
            if self.zone is not None:
                new = zone_forward(self.zone, new, held)
            held = new if mk is None else keep_padded(xp, mk[t], new, held)
            out[t] = held[0]
        if feature:
            out = xp.ascontiguousarray(out.transpose(0, 2, 1))
            held = tuple(xp.ascontiguousarray(s.T) for s in held)
        return masked_output(xp, out, m), held
