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
mode or under ``no_grad``) keeps nothing for a backward; ``prepare`` gives it
the cell's ``Prepared`` steps (biases summed once, one tanh pass for a step's
gates, no checks, no cache) wherever ``select`` would have run the reference,
and under the same switches (``_common.Prepared``).
"""

import contextlib
import contextvars
import os

import numpy as np

from ._common import MIN_ROWS, MIN_SHORT_ROWS, MIN_STEPS, ROWS_PER_WIDTH

_FORCE = contextvars.ContextVar("npnn_accel_force", default=None)


def mode():
    """'reference', 'accelerated' or 'auto': what ``select`` does now."""
    forced = _FORCE.get()
    if forced is not None:
        return forced
    return "reference" if os.environ.get("NPNN_ACCEL", "1") == "0" else "auto"


@contextlib.contextmanager
def _force(value):
    token = _FORCE.set(value)
    try:
        yield
    finally:
        _FORCE.reset(token)


def use_reference():
    """Within this block (this thread or task only), every op runs its reference."""
    return _force("reference")


def use_acceleration():
    """Within this block (this thread or task only), every op that has an acceleration
    runs it, however short its sequence."""
    return _force("accelerated")


def select(cell, x, H=None):
    """The acceleration module of the registered cell ``cell`` for input x (T, N, D)
    (and hidden size H, when known), or None when the reference should run (the
    cell has no acceleration, it is switched off, or the sequence is too short to
    pay)."""
    now = mode()
    if now == "reference":
        return None
    T, N = x.shape[0], x.shape[1]
    if now == "auto":
        if isinstance(x, np.ndarray):
            many = (H is not None and T >= 2 and
                    T * N >= max(MIN_SHORT_ROWS, ROWS_PER_WIDTH * (x.shape[2] + H)))
            if (T < MIN_STEPS or T * N < MIN_ROWS) and not many:
                return None
        elif T < 2:
            return None
    from ..registry import CELLS        # at call time: the registry imports the cells
    return CELLS[cell].accelerated


def prepare(cell, params, x=None, **options):
    """Forward-only use of the registered cell ``cell`` with parameters ``params``
    (op argument name -> array): its acceleration's ``Prepared`` steps, or None
    where they should not run: in reference mode, for a cell without acceleration,
    and, given a whole sequence x (T, N, D), where ``select`` picks the
    acceleration's own sequence forward (long NumPy sequences; CuPy's fused
    kernels)."""
    W_hh = params.get("W_hh")
    H = None if W_hh is None else W_hh.shape[1]
    if mode() == "reference" or (x is not None and select(cell, x, H) is not None):
        return None
    from ..registry import CELLS
    prepared = getattr(CELLS[cell].accelerated, "Prepared", None)
    return None if prepared is None else prepared(**params, **options)


from . import gru, lstm, rnn  # noqa: E402,F401  (the accelerated cells)
