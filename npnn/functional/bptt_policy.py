"""Checkpoint policies for memory-bounded backpropagation through time.

``bptt.py`` runs a sequence op under a memory budget of m *slots*; this module
decides where it keeps states and what it recomputes. A slot holds one step's
cache (what the backward of one step needs: its gates, its states, its input
product); a stored checkpoint state also takes a slot (it is smaller than a step's
cache, so this over-counts, on the safe side). Costs are counted in *forward
steps* run, the first forward pass included: full BPTT costs T.

A schedule backpropagates t steps from a state held at their start, with m slots
free, in one of three ways:

* a *leaf* (t <= m): run the t steps keeping their cache, backpropagate them;
  cost t;
* a *split* at y (1 <= y < t): advance y steps keeping nothing (in chunks that
  fit the m slots), store the state reached (one slot), backpropagate the last
  t - y steps with m - 1 slots, then the first y steps with m slots;
* a *restart* (m = 1): no state can be stored; backpropagate the last step by
  running the t - 1 before it from the start, then the first t - 1 steps the
  same way.

Gruslys et al. 2016 ("Memory-Efficient Backpropagation Through Time", BPTT-HSM:
hidden-state memorisation) choose the split by dynamic programming. With C(t, m)
the fewest forward steps that backpropagate t steps with m slots:

    (1) C(t, m) = t                                          t <= m     (leaf)
    (2) C(t, 1) = t (t + 1) / 2                              t > 1      (restart)
    (3) C(t, m) = min_{1 <= y < t}  y + C(t - y, m - 1) + C(y, m)   t > m >= 2

and the optimal y* (the smallest minimiser) for each (t, m). (1) is where this
differs from the paper, whose leaves are single steps: npnn's ops keep a whole
segment's cache, so a segment that fits runs once, and m >= T is full BPTT
(cost T, the same operations, bit for bit the same numbers). ``dp_policy(T, m)``
tabulates (3) once per (T, m) (``functools.lru_cache``): exactly for T * m up
to ``EXACT_CELLS``; beyond, on a grid of units of q steps (the splits at
multiples of q, the leaves still any length that fits), which is optimal among
the schedules on that grid. Either way the policy keeps the cheaper of the table
and the evenly spaced schedule with the same m slots, so it never runs more
steps than that one.

The baseline (Chen et al. 2016), ``evenly_spaced(T, L)``: checkpoints every L
steps, each segment recomputed once, L = ceil(sqrt(T)) for ``"sqrt"``:

    (4) cost = T + (T - L_last),   slots = (ceil(T / L) - 1) + L

L_last the length of the last segment, whose cache the first pass keeps.

A policy answers ``split(t, m)`` for every sub-problem of its schedule:
``(0, m)`` a leaf, ``(y, m - 1)`` a split, ``(t - 1, m)`` a restart (its last
step a leaf of one step); ``predicted_steps(T)`` is the cost its schedule runs.
docs/derivations.md ("Backpropagation through time in bounded memory") works a
small example.
"""

import functools
import math
from typing import Any, Optional, Tuple, Union

import numpy as np

#: The exact table (3) is computed up to T * m cells; larger ones on a grid.
EXACT_CELLS = 200_000
SQRT = "sqrt"


def check_memory(memory: Any) -> Union[int, str, None]:
    """``bptt_memory``: None (keep everything), a positive int of slots, or 'sqrt'."""
    if memory is None or memory == SQRT:
        return memory
    if isinstance(memory, bool) or not isinstance(memory, (int, np.integer)) or memory < 1:
        raise ValueError(f"expected bptt_memory to be None, a positive number of slots or "
                         f"'sqrt', got {memory!r}")
    return int(memory)


class Policy:
    """A schedule for T steps: ``split(t, m) -> (y, slots right)`` (y = 0: leaf).

    ``slots`` is the budget it was made for, ``name`` 'leaf', 'sqrt', 'even' or 'dp'.
    """
    name = "policy"

    def __init__(self, T: int, slots: int) -> None:
        self.T, self.slots = T, slots

    def split(self, t: int, m: int) -> Tuple[int, int]:
        raise NotImplementedError

    def predicted_steps(self, T: Optional[int] = None, m: Optional[int] = None) -> int:
        """Forward steps the schedule runs for t = T steps with m = ``slots`` slots,
        the first forward pass included (C(T, m) of (1)-(3) for the 'dp' table)."""
        T, m = (self.T if T is None else T), (self.slots if m is None else m)
        total, stack = 0, [(T, m)]
        while stack:                  # the same walk as bptt.py, counting instead of running
            t, m = stack.pop()
            y, right = self.split(t, m)
            if y == 0:
                total += t
            else:
                total += y
                stack += [(y, m), (t - y, right)]
        return total

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T}, slots={self.slots})"


class Leaf(Policy):
    """Everything fits (m >= T): one segment, full BPTT."""
    name = "leaf"

    def split(self, t: int, m: int) -> Tuple[int, int]:
        return 0, m


class EvenlySpaced(Policy):
    """Checkpoints every L steps (4); slots = (ceil(T / L) - 1) + L."""
    name = "even"

    def __init__(self, T: int, L: int) -> None:
        self.L = max(1, min(int(L), T))
        super().__init__(T, even_slots(T, self.L))

    def split(self, t: int, m: int) -> Tuple[int, int]:
        return (0, m) if t <= self.L else (self.L, m - 1)


class HSM(Policy):
    """Gruslys et al.'s BPTT-HSM table (1)-(3), on a grid of q steps (q = 1: exact)."""
    name = "dp"

    def __init__(self, T: int, slots: int, q: int, choice: np.ndarray) -> None:
        super().__init__(T, slots)
        self.q, self.choice = q, choice     # choice (slots + 1, K + 1): y* in units, -1 restart

    def split(self, t: int, m: int) -> Tuple[int, int]:
        if t <= m:
            return 0, m
        y = int(self.choice[m, -(-t // self.q)])
        if y < 0:                                   # (2), or a grid too coarse for m
            return t - 1, m
        return y * self.q, m - 1


def even_slots(T: int, L: int) -> int:
    """Slots the evenly spaced schedule with segments of L steps uses, (4)."""
    return (-(-T // L) - 1) + L


def sqrt_policy(T: int) -> EvenlySpaced:
    """The evenly spaced schedule with L = ceil(sqrt(T)): about 2 sqrt(T) slots."""
    return EvenlySpaced(T, math.isqrt(T - 1) + 1 if T > 1 else 1)


def even_steps(T: int, L: int) -> int:
    """Forward steps the evenly spaced schedule with segments of L steps runs, (4)."""
    return T if T <= L else 2 * T - (T - (-(-T // L) - 1) * L)


def best_even(T: int, m: int) -> Optional[EvenlySpaced]:
    """The cheapest evenly spaced schedule that fits in m slots, or None."""
    fits = [L for L in range(1, min(T, m) + 1) if even_slots(T, L) <= m]
    return None if not fits else EvenlySpaced(T, min(fits, key=lambda L: even_steps(T, L)))


@functools.lru_cache(maxsize=32)
def hsm_table(K: int, m: int, q: int) -> Tuple[np.ndarray, np.ndarray]:
    """(cost C (m + 1, K + 1), choice (m + 1, K + 1)) of (1)-(3) for K units of q steps
    and up to m slots; choice is y* in units, 0 for a leaf, -1 for a restart."""
    INF = np.iinfo(np.int64).max // 4
    steps = np.arange(K + 1, dtype=np.int64) * q                  # (K + 1,)
    cost = np.full((m + 1, K + 1), INF, dtype=np.int64)
    choice = np.zeros((m + 1, K + 1), dtype=np.int32)
    for s in range(1, m + 1):
        leaf = steps <= s
        cost[s, leaf] = steps[leaf]                               # (1)
        if s == 1 or s < q:                                       # (2): no unit split fits
            rest = ~leaf
            cost[s, rest] = steps[rest] * (steps[rest] + 1) // 2
            choice[s, rest] = -1
            continue
        prev, row = cost[s - 1], cost[s]
        for k in range(int(np.count_nonzero(leaf)), K + 1):       # (3), y = 1 .. k - 1
            total = steps[1:k] + prev[k - 1:0:-1] + row[1:k]
            y = int(np.argmin(total))
            row[k], choice[s, k] = total[y], y + 1
    return cost, choice


@functools.lru_cache(maxsize=64)
def dp_policy(T: int, m: int) -> Policy:
    """The BPTT-HSM policy for T steps and m slots (exact where T * m <= EXACT_CELLS),
    or the evenly spaced one where that runs fewer steps."""
    if m >= T:
        return Leaf(T, m)
    K = T if T * m <= EXACT_CELLS else max(2, EXACT_CELLS // m)
    q = -(-T // K)
    K = -(-T // q)
    _, choice = hsm_table(K, m, q)
    dp = HSM(T, m, q, choice)
    even = best_even(T, m)
    if even is not None and even.predicted_steps() < dp.predicted_steps():
        return even
    return dp


def policy(T: int, memory: Union[int, str, None]) -> Policy:
    """The policy for T steps under ``memory`` (an int of slots or 'sqrt')."""
    memory = check_memory(memory)
    if memory == SQRT:
        return sqrt_policy(T)
    return dp_policy(T, memory)
