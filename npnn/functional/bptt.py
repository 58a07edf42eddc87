"""Backpropagation through time in bounded memory: any cell's sequence op, checkpointed.

Full BPTT keeps every step's cache, so its memory grows as T. Under a budget of m
slots (``bptt_policy``: a slot is one step's cache) the forward keeps only the
states at the checkpoints its policy chooses, plus the cache of the last segment;
the backward recomputes each segment's cache from its checkpoint and
backpropagates through it, carrying the final-state gradients (dh, dc) from
segment to segment (Chen et al. 2016; Gruslys et al. 2016):

    (1) forward:  s_a --run x[a:b]--> s_b          for each segment [a, b),
                  storing s_a where the policy splits
    (2) backward: cache_[a,b) = run(x[a:b], s_a)    (recomputed)
                  dx[a:b], ds_a, grads_[a,b) = run_backward(dout[a:b], ds_b, cache_[a,b))
    (3) grads = sum over segments of grads_[a,b)

A segment is the cell's own sequence op on x[a:b] from the checkpointed states
(``Cell.run``: the reference or the acceleration, as the registry chooses), and
its backward the cell's own (``Cell.run_backward``), so every registered cell,
masks (sliced with the steps) and both array backends work with nothing
cell-specific here. The input product x W_ih^T, dz and the weight-gradient
products are formed per segment, so nothing of size T * G * H is kept; the
caller keeps x, the outputs and their gradients (T rows each) anyway.

Exactness (tests/test_bptt.py, float64):

* where the policy keeps everything (m >= T), the op is one segment: the same
  operations as full BPTT, bit for bit the same outputs, states and gradients;
* otherwise the recurrence runs the same steps in the same order, but the products
  over steps (the input product, dx, the weight gradients) are formed per segment
  and the weight gradients summed over segments, which may round differently:
  every result within 1e-12 of full BPTT's, relative to its largest value, not
  bit for bit. In auto mode a short segment may also run the reference where the
  whole sequence ran the acceleration (``accel.pays``), which stays as close.

Dropout between layers and weight-drop are drawn by the layers outside this op,
and recurrent dropout's one mask per sequence is an argument of every segment, so
none of them needs a replay. Zoneout's per-step masks are not stored: a
``regularisers.Zoneout`` is a key, and each segment [a, b) runs it shifted to a
(``regularisers.segment_options``), which regenerates exactly the first pass's
masks of those steps from (key, step index).

No value goes from the device to the host: the schedule depends on T and m only.
"""

from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Protocol, Sequence, Tuple,
                    Union)

from ..backend import get_array_module
from .._typing import Array
from .bptt_policy import Policy, check_memory, policy
from .regularisers import segment_options

#: A cell's states, one array (N, S) each (an initial state or a gradient may be None:
#: zeros; ``Array`` is ``Any``, so the name says it and the checker lets it pass).
StateTuple = Tuple[Array, ...]
#: A sub-problem left for the backward: (start a, steps t, slots m, states at a).
Pending = Tuple[int, int, int, StateTuple]


class SequenceCell(Protocol):
    """What this module runs of a registry ``Cell`` (a protocol: the registry imports this
    module, so this one names the two methods instead of importing the class)."""

    def run(self, x: Array, states: Sequence[Array], params: Dict[str, Array],
            mask: Optional[Array] = None, bptt_memory: Union[int, str, None] = None,
            **options: Any) -> Tuple[Array, StateTuple, Any]: ...

    def run_backward(self, dout: Optional[Array], dfinals: Sequence[Array],
                     cache: Any) -> Tuple[Array, StateTuple, Dict[str, Array]]: ...


class CheckpointedCache(NamedTuple):
    """What ``checkpointed_backward`` needs: the input, the checkpoints and the cache of
    the last segment (the only cache the forward keeps)."""
    x: Array                    # (T, N, D) input (the caller's; not copied)
    params: Dict[str, Array]    # the op's parameters by argument name
    mask: Optional[Array]       # (T, N) valid-step mask, or None
    options: Dict[str, Any]     # the cell's options
    plan: Policy                # the bptt_policy.Policy
    pending: Tuple[Pending, ...]    # ((a, t, m, states at a), ...): the sub-problems left
    tail: Tuple[int, Any]       # (a, cache) of the last segment [a, T)
    steps_run: List[int]        # [forward steps, recomputed steps]: counters


def _slice(mask: Optional[Array], a: int, b: int) -> Optional[Array]:
    return None if mask is None else mask[a:b]


def _advance(cell: SequenceCell, x: Array, states: StateTuple, params: Dict[str, Array],
             mask: Optional[Array], a: int, y: int, chunk: int, options: Dict[str, Any],
             write: Optional[Callable[[int, int, Array], None]] = None) -> StateTuple:
    """The states after steps [a, a + y) from ``states`` at a, run in chunks of at most
    ``chunk`` steps whose caches are dropped; each chunk's outputs go to ``write(s, e, o)``
    if given."""
    for s in range(a, a + y, chunk):
        e = min(s + chunk, a + y)
        o, states, _ = cell.run(x[s:e], states, params, _slice(mask, s, e),
                                **segment_options(options, s, e))
        if write is not None:
            write(s, e, o)
    return tuple(s.copy() for s in states)     # copies: the op's final states may be views
                                                # of its whole (T + 1, N, H) buffers


def checkpointed_forward(cell: SequenceCell, x: Array, states: Sequence[Array],
                         params: Dict[str, Array], mask: Optional[Array] = None,
                         memory: Union[int, str] = "sqrt",
                         **options: Any) -> Tuple[Array, StateTuple, CheckpointedCache]:
    """``cell.run`` (a registry ``Cell``) keeping states at checkpoints only.

    Args:
        cell: the registry ``Cell`` whose sequence op to run.
        x: (T, N, D) input; states: tuple of initial states, each (N, S) or None.
        params: the op's parameters by argument name; mask: optional (T, N).
        memory: slots (a positive int: m >= T keeps everything) or 'sqrt'
            (``bptt_policy``).
        options: the cell's options.

    Returns:
        out (T, N, H_out), tuple of final states (N, S), cache (``CheckpointedCache``).
    """
    T = x.shape[0]
    plan = policy(T, check_memory(memory))
    pending: List[Pending] = []
    a, t, m = 0, T, plan.slots
    y, right = plan.split(t, m)
    if y == 0:                                  # one segment: the op itself, bit for bit
        out, finals, cache = cell.run(x, tuple(states), params, mask, **options)
        return out, finals, CheckpointedCache(x, params, mask, options, plan, (), (0, cache),
                                              [T, 0])
    xp = get_array_module(x)
    full: List[Array] = []                      # (T, N, H_out), made at the first chunk

    def write(s: int, e: int, o: Array) -> None:
        if not full:
            full.append(xp.empty((T,) + o.shape[1:], dtype=o.dtype))
        full[0][s:e] = o

    states = tuple(states)
    while y != 0:                               # (1), the first pass: split after split
        mid = _advance(cell, x, states, params, mask, a, y, max(1, m), options, write)
        pending.append((a, y, m, states))
        a, t, m, states = a + y, t - y, right, mid
        y, right = plan.split(t, m)
    o, finals, cache = cell.run(x[a:], states, params, _slice(mask, a, T),
                                **segment_options(options, a, T))
    write(a, T, o)
    return full[0], finals, CheckpointedCache(x, params, mask, options, plan, tuple(pending),
                                              (a, cache), [T, 0])


def checkpointed_backward(cell: SequenceCell, dout: Optional[Array], dfinals: Sequence[Array],
                          cache: CheckpointedCache
                          ) -> Tuple[Array, StateTuple, Dict[str, Array]]:
    """Backward of ``checkpointed_forward``: recompute each segment, backpropagate it.

    Args:
        dout: (T, N, H_out) gradient of the outputs, or None.
        dfinals: tuple of the final states' gradients, each (N, S) or None.
        cache: from ``checkpointed_forward``.

    Returns:
        dx (T, N, D), tuple of initial-state gradients (N, S), parameter gradients by
        argument name (summed over segments).
    """
    x, params, mask, options, plan, pending, (a, tail), counts = cache
    T = x.shape[0]
    if not pending:
        return cell.run_backward(dout, tuple(dfinals), tail)
    xp = get_array_module(x)
    dx = xp.empty_like(x)
    grads: Dict[str, Array] = {}

    def leaf(a: int, b: int, cache_ab: Any, d: StateTuple) -> StateTuple:
        dx_ab, d, g = cell.run_backward(None if dout is None else dout[a:b], d, cache_ab)
        dx[a:b] = dx_ab
        for k, v in g.items():
            grads[k] = v if k not in grads else grads[k] + v          # (3)
        return d

    d = leaf(a, T, tail, tuple(dfinals))
    stack = list(pending)
    while stack:                                # sub-problems, last in time first
        a, t, m, states = stack.pop()
        y, right = plan.split(t, m)
        if y == 0:                              # (2): recompute the segment, backpropagate
            _, _, seg = cell.run(x[a:a + t], states, params, _slice(mask, a, a + t),
                                 **segment_options(options, a, a + t))
            counts[1] += t
            d = leaf(a, a + t, seg, d)
        else:                                   # advance, store, solve the right part first
            mid = _advance(cell, x, states, params, mask, a, y, max(1, m), options)
            counts[1] += y
            stack.append((a, y, m, states))
            stack.append((a + y, t - y, right, mid))
    return dx, d, grads
