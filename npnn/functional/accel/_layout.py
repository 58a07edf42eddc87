"""The layout a sequence's accelerated loop keeps its states and gates in, and the
choice between the two.

**Batch-major** (the library's layout, the reference's): a state is (N, H), a step's
gate pre-activations (N, G*H), and a step's recurrent product is

    z = h_{t-1} W_hh^T         (N, H) @ (H, G*H)

**Feature-major**: the same numbers kept transposed, a state (H, N), the gates
(G*H, N), and the products

    z^T = W_hh h_{t-1}^T       (G*H, H) @ (H, N)         forward
    dh^T = W_hh^T dz^T         (H, G*H) @ (G*H, N)       backward, W_hh^T copied
                                                         contiguous once a call

They are the same sums, but a BLAS runs them with different kernels: OpenBLAS 0.3.31's
SkylakeX kernels ran the feature-major products 1.2x to 2.4x faster at the sizes of
benchmarks/bench_layout.py (RESULTS.md), and which one wins depends on the BLAS, the
CPU and the shape. So the layout is chosen by measurement, as cuDNN chooses an
algorithm:

* ``choose(xp, N, H, G, dtype, trial)`` times a short sequence of the cell (its
  forward and backward, ``TRIAL_STEPS`` steps: the products, the kernels and the
  copies that the layout changes) in both layouts the first time a shape is met (tens
  of milliseconds for a small model, about 5 s at N 128, H 1024) and keeps the faster,
  by ``MARGIN`` at least, for that (N, H, G, dtype, kernel set) for the
  life of the process. The products alone are not a fair test: timed in a loop of their
  own they ran 1.5x faster feature-major at LSTM L here, inside the cell's loop (the
  kernels between them evicting the weights from cache) 1.2-1.4x, and the copies that
  feature-major needs took the rest of the gain (benchmarks/RESULTS.md, issue 26);
* forward-only steps (``_common.Prepared``: decoders, generation, eval) are timed apart,
  on trials of their own: steps taken one call at a time (``STEPS``) and sequences
  (``FORWARD``); the training loops' choice is ``SEQUENCES``. With no weight gradients
  to copy, feature-major ran 1.2-2x faster a step here at N 8 to 64; at N = 1 equal a
  step, and 1.1-1.3x faster over a sequence (benchmarks/RESULTS.md);
* ``NPNN_LAYOUT=batch|feature`` in the environment forces one layout (on NumPy);
* ``use_layout("batch"|"feature")`` forces one within a block (this thread or task;
  it wins over the environment): the tests run each layout this way, and a training
  run keeps its choice for its whole life with it (``npnn.training``: the choice is
  stored in the checkpoint, reused on resume, and made by rank 0 for every process);
* on CuPy the layout is batch-major: its fused kernels are written for it, and no GPU
  measurement of the other has been made.

The two layouts give the same numbers up to rounding (the products sum in another
order); the loops and the elementwise kernels are the same code in both
(``_loop``: a feature-major state of a step, (H, N) contiguous, is handed to the
kernels as one row of H*N values, and every gate block of (G*H, N) is then one
contiguous run of H*N values, the layout the kernels vectorise best). What changes
is the order of each product's operands, and one transposing copy per sequence of
the inputs and outputs that the caller sees batch-major.
"""

import contextlib
import contextvars
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule
from . import _numba, _pool

BATCH, FEATURE = "batch", "feature"
LAYOUTS = (BATCH, FEATURE)
#: What a choice is for: a training loop's sequences (forward and backward), forward-only
#: steps taken one call at a time (a decoder's: the states moved back to (N, H) after
#: each), or forward-only sequences (``_common.Prepared``: no weight gradients to copy)
SEQUENCES, STEPS, FORWARD = "sequences", "steps", "forward"

_FORCED: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("npnn_layout",
                                                                        default=None)
#: (N, H, G, dtype, numba's kernels or not, SEQUENCES, STEPS or FORWARD) -> the layout
#: timed faster in this process
_CHOSEN: Dict[Tuple[int, int, int, str, bool, str], str] = {}

#: Feature-major must be this much faster in the trial to be chosen: a tie keeps the
#: library's own layout. The trial's few steps understate the transposing copies of a
#: long sequence (measured: GRU at N 128, H 1024, the trial 4 steps long chose
#: feature-major, which ran 50 steps 6% slower).
MARGIN = 1.08
#: The steps of a trial of the cell (``time_trial``), and its budget in seconds (at
#: least 3 runs of each layout).
TRIAL_STEPS = 8
TRIAL_BUDGET_S = 0.05
#: Fewer gate values a step than this (G*H*N) run batch-major untimed: the copies that
#: feature-major needs would cost more than any product could gain.
MIN_TIMED = 8192
#: ... except one row (N = 1), timed from this many (an LSTM from H = 256): its two
#: layouts hold the same memory, (1, H) or (H, 1), and differ only in the orientation
#: of the products' matrix-vector calls, W^T dz^T on a contiguous W^T running 1.3x
#: faster than dz W at H = 512 here (benchmarks/RESULTS.md, issue 26).
MIN_TIMED_ROW = 1024


def check_layout(layout: str, where: str = "layout") -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"expected {where} 'batch' or 'feature', got {layout!r}")
    return layout


@contextlib.contextmanager
def use_layout(layout: Optional[str]) -> Iterator[None]:
    """Within this block (this thread or task), accelerated sequences run in ``layout``
    ('batch' or 'feature'; None: as outside the block). Wins over ``NPNN_LAYOUT``."""
    if layout is None:
        yield
        return
    token = _FORCED.set(check_layout(layout))
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced() -> Optional[str]:
    """The layout forced by ``use_layout`` or ``NPNN_LAYOUT``, or None (timed)."""
    layout = _FORCED.get()
    if layout is not None:
        return layout
    env = os.environ.get("NPNN_LAYOUT", "")
    return check_layout(env, "NPNN_LAYOUT to be") if env else None


def in_block() -> Optional[str]:
    """The layout forced by the innermost ``use_layout`` block, or None (cheap: no
    environment read)."""
    return _FORCED.get()


def too_small(N: int, H: int, G: int) -> bool:
    """Whether a step of N rows, hidden size H, G gate blocks runs batch-major untimed:
    too few gate values to repay a copy (``MIN_TIMED``; one row: ``MIN_TIMED_ROW``)."""
    return G * H * N < MIN_TIMED and not (N == 1 and G * H >= MIN_TIMED_ROW)


def choose(xp: ArrayModule, N: int, H: int, G: int, dtype: DTypeLike,
           make_trial: Optional[Callable[[], Callable[[str], None]]] = None,
           kind: str = SEQUENCES) -> str:
    """The layout for a sequence of N rows, hidden size H, G gate blocks: on CuPy
    batch-major, whatever is forced; else forced, or batch-major where a step's gates
    are too few to repay a copy (G*H*N < ``MIN_TIMED``; one row: G*H <
    ``MIN_TIMED_ROW``), or the faster of the two on this machine, timed once per
    (N, H, G, dtype, kernel set: numba's or the ufuncs, ``kind``: SEQUENCES, STEPS or
    FORWARD) and kept for the process.
    ``make_trial()`` makes a function that runs a short sequence of the cell in a given
    layout (``trial``, timed by ``time_trial``; made only when a shape is timed);
    without it, a shape not yet timed stays batch-major."""
    if xp is not np:            # CuPy: its fused kernels (masks folded in) are batch-major
        return BATCH
    layout = forced()
    if layout is not None:
        return layout
    if too_small(N, H, G):
        return BATCH
    key = (int(N), int(H), int(G), np.dtype(dtype).str, _numba.use(xp, dtype), kind)
    if key not in _CHOSEN:
        if make_trial is None:                  # nothing to time: the library's layout
            return BATCH
        batch, feature = time_trial(make_trial())
        _CHOSEN[key] = FEATURE if batch > MARGIN * feature else BATCH
    return _CHOSEN[key]


def for_cell(xp: ArrayModule, forward: Callable[..., Any], backward: Callable[..., Any],
             G: int, S: int, N: int, H: int, dtype: DTypeLike) -> str:
    """``choose`` for an accelerated cell (its sequence ``forward`` and ``backward``, G gate
    blocks, S states), timing it with ``trial`` where a shape is new."""
    return choose(xp, N, H, G, dtype, lambda: trial(forward, backward, G, S, N, H, dtype))


def _best_of(fns: Sequence[Callable[[], None]], budget_s: float,
             runs: int = 64) -> List[float]:
    """The best time of each of ``fns`` in seconds, over alternating runs (a b, b a, ...)
    after one untimed call each; at least 3 runs each, then until ``budget_s``."""
    for fn in fns:
        fn()
    best = [np.inf] * len(fns)
    start = time.perf_counter()
    for run in range(runs):
        order = range(len(fns)) if run % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            best[k] = min(best[k], time.perf_counter() - t0)
        if run >= 2 and time.perf_counter() - start > budget_s:
            break
    return best


def time_trial(trial: Callable[[str], None], budget_s: float = TRIAL_BUDGET_S) -> Tuple[
        float, float]:
    """Seconds of ``trial`` (a short forward and backward of the cell, or forward-only
    steps) in each layout, (batch, feature): everything the layout changes, copies and
    kernels included."""
    best = _best_of([lambda: trial(BATCH), lambda: trial(FEATURE)], budget_s)
    return best[0], best[1]


def trial(forward: Callable[..., Any], backward: Callable[..., Any], G: int, S: int, N: int,
          H: int, dtype: DTypeLike) -> Callable[[str], None]:
    """A trial for ``time_trial``: ``TRIAL_STEPS`` steps of an accelerated cell's
    ``forward`` and ``backward`` (S states, G gate blocks; D = H, biases on) in a given
    layout, on random numbers made once."""
    rng = np.random.default_rng(0)
    k = 1 / np.sqrt(H)
    x = rng.standard_normal((TRIAL_STEPS, N, H)).astype(dtype)
    W = [rng.uniform(-k, k, shape).astype(dtype)
         for shape in ((G * H, H), (G * H, H), (G * H,), (G * H,))]
    dout = rng.standard_normal((TRIAL_STEPS, N, H)).astype(dtype)
    none = (None,) * S

    def run(layout: str) -> None:
        with use_layout(layout):
            *_, cache = forward(x, *none, *W)
            backward(dout, *none, cache)
    return run


def chosen() -> Dict[Tuple[int, int, int, str, bool, str], str]:
    """The layouts timed so far in this process (a copy), by (N, H, G, dtype, whether the
    numba kernels run, SEQUENCES, STEPS or FORWARD)."""
    return dict(_CHOSEN)


# -- moving arrays between the layouts (one transposing copy each) -----------------------

def to_feature(xp: ArrayModule, a: Optional[Array]) -> Optional[Array]:
    """(..., N, S) -> (..., S, N), contiguous (None stays None)."""
    return None if a is None else _swapped(xp, a)


def to_batch(xp: ArrayModule, a: Array) -> Array:
    """(..., S, N) -> (..., N, S), contiguous."""
    return _swapped(xp, a)


def _swapped(xp: ArrayModule, a: Array) -> Array:
    view = xp.swapaxes(a, -1, -2)
    out = _pool.empty(xp, view.shape, a.dtype)
    out[...] = view
    return out


def rows(a: Array) -> Array:
    """A feature-major step's block (K, N), contiguous, as the kernels take it: one row
    of K*N values (a view; a stacked (T, K, N) array becomes (T, 1, K*N))."""
    return a.reshape(a.shape[:-2] + (1, a.shape[-2] * a.shape[-1]))


def input_half(xp: ArrayModule, x: Array, W: Array) -> Array:
    """W x_t^T for every step: x (T, N, D), W (K, D) -> (T, K, N) contiguous, as one
    (K, D) x (D, T*N) product and one copy that moves blocks of N values."""
    T, N, D = x.shape
    K = W.shape[0]
    out = _pool.empty(xp, (T, K, N), x.dtype)
    copy_blocks(xp, out, _pool.matmul(xp, W, x.reshape(T * N, D).T).reshape(K, T, N)
                .transpose(1, 0, 2))
    return out


def copy_blocks(xp: ArrayModule, out: Array, src: Array) -> None:
    """out[...] = src, for arrays of the same shape (the steps of a feature-major array
    moved side by side and back): on NumPy, where both have one dtype and a contiguous
    last axis, each run of N values is moved as one element of N * itemsize bytes, 2-5x
    faster than NumPy's copy of N values at a time (measured at (T, K, N) = (64, 1024, 32),
    (200, 512, 16)); else a plain copy."""
    N = out.shape[-1]
    size = out.dtype.itemsize
    if xp is np and N > 1 and src.dtype == out.dtype and out.strides[-1] == size and \
            src.strides[-1] == size:
        block = np.dtype((np.void, N * size))
        out.view(block)[..., 0][...] = src.view(block)[..., 0]
    else:
        out[...] = src


def zone_to_feature(xp: ArrayModule, zone: Optional[Tuple[object, ...]]) -> Optional[
        Tuple[object, ...]]:
    """Zoneout per state (``regularisers.zoneout_states``), its (T, N, S) masks as
    (T, S, N); rates and None as they are."""
    if zone is None:
        return None
    return tuple(d if d is None or isinstance(d, (int, float)) else to_feature(xp, d)
                 for d in zone)


def rows_of(view: Callable[[Array], Array], a: Optional[Array]) -> Optional[Array]:
    """``view(a)`` (``kernel_rows``' view), None staying None."""
    return None if a is None else view(a)


def same(a: Array) -> Array:
    """Batch-major arrays go to the kernels as they are."""
    return a


def kernel_rows(feature: bool, N: int, H: int) -> Tuple[Callable[[Array], Array], int, int]:
    """How the kernels see a step's arrays: (the view to take of each, its rows R, the
    width C of a state's row): feature-major ``rows``, 1, H*N; batch-major as they
    are, N, H. A kernel set sized (R, C) then serves either layout."""
    return (rows, 1, H * N) if feature else (same, N, H)


def kernel_bias(xp: ArrayModule, kernels: Any, bias: Optional[Array], parts: Sequence[Array],
                feature: bool, N: int) -> Optional[Array]:
    """The summed biases (K,) of the input half (None: zeros) as a kernel set's forward
    takes them: where the set adds them itself (``Kernels.bias``), in the kernels' row
    form (feature-major each repeated N times: one row of K*N values); else added now to
    the input half, ``parts`` its arrays ((T, N, K_i), feature-major (T, K_i, N)) whose
    K_i add up to K, and None for the kernels."""
    if not kernels.bias:
        start = 0
        for z in parts:
            K = z.shape[-2] if feature else z.shape[-1]
            if bias is not None:
                z += bias[start:start + K, None] if feature else bias[start:start + K]
            start += K
        return None
    if bias is None:
        K = sum(z.shape[-2] if feature else z.shape[-1] for z in parts)
        bias = xp.zeros(K, dtype=parts[0].dtype)
    return xp.repeat(bias, N) if feature else bias
