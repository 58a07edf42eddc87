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
* the fused CuPy kernels: each step's elementwise work as one GPU kernel.

Selection happens here, in ``select``, and nowhere else:

* ``NPNN_ACCEL=0`` in the environment, or the block ``with use_reference():``,
  runs every op's reference;
* sequences shorter than ``MIN_STEPS`` run the reference: an acceleration's
  set-up (scaling the weights, allocating buffers) costs more than it saves
  on one or two steps, and a step taken by hand (``LSTMCell``, generation, a
  decoder) is a sequence of one;
* on CuPy, the fused kernels, unless ``NPNN_FUSED=0`` (then the ufunc path).
"""

import contextlib
import contextvars
import os

from ._common import MIN_STEPS

_FORCE_REFERENCE = contextvars.ContextVar("npnn_force_reference", default=False)


def enabled():
    """True unless ``NPNN_ACCEL=0`` or inside ``use_reference()``."""
    return os.environ.get("NPNN_ACCEL", "1") != "0" and not _FORCE_REFERENCE.get()


@contextlib.contextmanager
def use_reference():
    """Within this block (this thread or task only), every op runs its reference."""
    token = _FORCE_REFERENCE.set(True)
    try:
        yield
    finally:
        _FORCE_REFERENCE.reset(token)


def select(cell, x):
    """The acceleration module of the registered cell ``cell`` for input x (T, N, D),
    or None when the reference should run (the cell has no acceleration, it is
    switched off, or the sequence is too short to pay)."""
    if not enabled() or x.shape[0] < MIN_STEPS:
        return None
    from ..registry import CELLS        # at call time: the registry imports the cells
    return CELLS[cell].accelerated


from . import gru, lstm, rnn  # noqa: E402,F401  (the accelerated cells)
