"""Accelerations: the same sequence ops as the reference cells, computed faster.

``functional/rnn.py``, ``lstm.py`` and ``gru.py`` write each cell's equations
as they stand. This package holds every trick that buys speed, one file per
cell, each next to the maths it speeds up and each tested against the
reference (tests/test_accel.py: equal to 1e-12 relative in float64):

* the NumPy/CuPy in-place path: each step's elementwise work as a few ufunc
  passes over contiguous blocks, written into buffers allocated once per call;
  sigmoid computed through tanh so that all gates of a step take one pass;
  gradients near the subnormal range flushed (x86 computes on subnormals
  through slow microcode);
* with numba (float32 by default, ``_numba``), each step's elementwise work
  on NumPy as one compiled loop;
* the fused CuPy kernels: each step's elementwise work as one GPU kernel.

Each cell file holds its cache, the preparation of its weights and its three
kernel sets (NumPy ufuncs, numba, fused CUDA: ``_common.Kernels``, the same
arguments in each); ``_loop`` runs every cell with every set, one loop each way.

This package says whether an acceleration pays (``pays``); the registry
(``functional/registry.py``) is the one place that chooses between a cell's
reference and its acceleration, and ``functional/fast.py`` the public face of
that choice. The rule here:

* ``NPNN_ACCEL=0`` in the environment, or the block ``with use_reference():``,
  runs every op's reference; ``with use_acceleration():`` runs the
  acceleration whenever the cell has one, whatever the size (for tests and
  benchmarks);
* otherwise (``auto``) a NumPy sequence runs its acceleration only when it
  is long enough to pay for the set-up (scaling and transposing the weights,
  allocating buffers): at least ``MIN_STEPS`` steps and ``MIN_ROWS`` rows
  (steps x sequences), or, from two steps, at least ``ROWS_PER_WIDTH`` x
  (D + H) rows and ``MIN_SHORT_ROWS`` (many sequences: the set-up is paid once
  for all of them). Other sequences, and every step taken by hand through a
  cell layer (``LSTMCell``...), run the reference, which is faster there (measured in benchmarks/RESULTS.md,
  "When the acceleration pays"). On CuPy, where the reference launches a
  dozen kernels per step and the fused path two, any sequence of two steps or
  more is accelerated;
* on CuPy, the fused kernels, unless ``NPNN_FUSED=0`` (then the ufunc path).

Forward-only work (a Seq2Seq decoder stepping token by token, a layer in eval
mode or under ``no_grad``) keeps nothing for a backward; the registry gives it
the cell's ``Prepared`` steps (biases summed once, one tanh pass for a step's
gates, no checks, no cache) wherever ``pays`` says no, unless ``enabled`` says
the accelerations are switched off (``_common.Prepared``).

A sequence's loop keeps its states batch-major, (N, H) as the library's layout, or
feature-major, (H, N), whichever runs faster on this machine for its shape
(``_layout``: timed once per shape; ``NPNN_LAYOUT=batch|feature`` or
``with use_layout(...)`` forces one; CuPy stays batch-major).

Each accelerated cell module offers ``forward`` (with the reference's arguments,
checked as the reference checks them), ``backward``, its cache type ``Cache``
and ``Prepared``.
"""

import contextlib
import contextvars
import os
from typing import Any, ContextManager, Iterator, Optional

import numpy as np
from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule
from ._common import MIN_ROWS, MIN_SHORT_ROWS, MIN_STEPS, ROWS_PER_WIDTH
from ._layout import use_layout  # noqa: F401  (the layout of the loops: forced in a block)

_FORCE: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("npnn_accel_force",
                                                                       default=None)


def mode() -> str:
    """'reference', 'accelerated' or 'auto': what ``pays`` answers now."""
    forced = _FORCE.get()
    if forced is not None:
        return forced
    return "reference" if os.environ.get("NPNN_ACCEL", "1") == "0" else "auto"


@contextlib.contextmanager
def _force(value: str) -> Iterator[None]:
    token = _FORCE.set(value)
    try:
        yield
    finally:
        _FORCE.reset(token)


def use_reference() -> ContextManager[None]:
    """Within this block (this thread or task only), every op runs its reference."""
    return _force("reference")


def use_acceleration() -> ContextManager[None]:
    """Within this block (this thread or task only), every op that has an acceleration
    runs it, however short its sequence."""
    return _force("accelerated")


def enabled() -> bool:
    """Whether the accelerations may run at all (not switched off by ``NPNN_ACCEL=0`` or
    ``use_reference``)."""
    return mode() != "reference"


def pays(x: Array, H: Optional[int] = None) -> bool:
    """Whether an acceleration pays for input x (T, N, D) (and hidden size H, when
    known): always when forced (``use_acceleration``), never when switched off; else
    on NumPy only for sequences long enough to pay for the set-up (``MIN_STEPS``,
    ``MIN_ROWS``, ``ROWS_PER_WIDTH``, ``MIN_SHORT_ROWS``), on CuPy from two steps.
    Anything that is not a (T, N, D) array is left to the reference (which says why)."""
    now = mode()
    if now == "reference" or getattr(x, "ndim", None) != 3:
        return False
    if now == "accelerated":
        return True
    T, N = x.shape[0], x.shape[1]
    if isinstance(x, np.ndarray):
        many = (H is not None and T >= 2 and
                T * N >= max(MIN_SHORT_ROWS, ROWS_PER_WIDTH * (x.shape[2] + H)))
        return (T >= MIN_STEPS and T * N >= MIN_ROWS) or many
    return T >= 2


from . import gru, lstm, rnn  # noqa: E402,F401  (the accelerated cells)
from . import _layout  # noqa: E402


def layout_for(cell: Any, N: int, H: int, dtype: DTypeLike, xp: ArrayModule = np) -> str:
    """The layout ('batch' or 'feature') an accelerated cell module (``lstm``, ``gru``,
    ``rnn``, or None for a cell without one) runs sequences of N rows, hidden size H in:
    ``_layout.choose``'s, timed now if this shape was not yet. A training run asks this
    once and keeps the answer (``use_layout``) for its whole life."""
    if cell is None:
        return _layout.forced() or _layout.BATCH
    return _layout.for_cell(xp, cell.forward, cell.backward, cell.GATES, cell.STATES, N, H,
                            dtype)
