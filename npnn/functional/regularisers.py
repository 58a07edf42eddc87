"""Recurrent dropout, zoneout and weight-drop: the masks, and how each cell takes them.

Three regularisers of recurrent networks act *inside* the recurrence, where the
dropout between layers cannot reach. Each cell's file writes them into its own
equations (its docstring numbers them); this module makes their masks, the same
way on NumPy and on a GPU, as pure functions of a key, so that a recomputed
segment of a checkpointed forward (``bptt``) replays exactly the masks of the
first pass without any of them being stored.

Recurrent (variational) dropout, Gal & Ghahramani (2016): one mask m (N, S) per
sequence and forward, m = b / (1 - p), b ~ Bernoulli(1 - p), on the state that
enters the recurrent product (h_{t-1}; the Jordan network's y_{t-1}), the same
at every step:

    (R1) z_t = x_t W_ih^T + b_ih + (m * h_{t-1}) W_hh^T + b_hh
    (R2) dh_{t-1}^next = (dz_t W_hh) * m  (+ the cell's other paths from h_{t-1},
         unmasked: the GRU's z_t * dh_t, the CTRNN's leak)
    (R3) dW_hh = sum_t dz_t^T (m * h_{t-1})

Zoneout, Krueger et al. (2017): per step, unit and state a mask d_t (N, S),
d = 1 with probability p (the unit keeps its previous value), applied after the
cell's step has made its candidate states s~_t; the output is the zoned state:

    (R4) s_t = d_t * s_{t-1} + (1 - d_t) * s~_t           (training)
         s_t = p * s_{t-1} + (1 - p) * s~_t              (eval: the expectation of d)
    (R5) ds~_t = (1 - d_t) * ds_t,   ds_{t-1}^next += d_t * ds_t
         (d_t replaced by p in eval mode)

A padded step (a valid mask, ``_recurrent``) keeps its state by selection after
(R4), so nothing of its candidate reaches a valid value.

Weight-drop (DropConnect on the recurrent weights), Merity et al. (2018): one
mask M (shaped like W_hh) per forward, M = B / (1 - p):

    (R6) W'_hh = M * W_hh                 the cell runs with W'_hh
    (R7) dW_hh = M * dW'_hh               the gradient goes to the unmasked weight

(R6)-(R7) live in the layer (``layers/recurrent.py``): the masked weight is the
op's input, so weight-drop works for every cell with a recurrent weight matrix
(the registry's ``Cell.recurrent`` names it) and every path of that cell.

The masks here are made from a *counter-based* hash (splitmix64 of key + c *
golden, the top 53 bits as u in [0, 1)): element c of a stream is a pure
function of (key, c), on NumPy by vectorised uint64 arithmetic and on a GPU by one
kernel each, bit for bit the same. A zoneout mask of step t (the step's index in
the whole sequence), state k of K and element j of its N * S is element
c = (t * K + k) * N * S + j: ``Zoneout(rates, key, start)`` gives the masks of any
steps [start, start + T) without the others. Layers draw one key per forward and
(layer, direction) from their generator, which checkpoints save, so a resumed run
draws the same keys.
"""

from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from .._typing import Array, ArrayModule
from ..backend import elementwise_kernel

GOLDEN = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB

#: The hash in CUDA C, shared by the device kernels: from ``c`` (unsigned long long, the
#: element's counter) and ``key``, ``u`` (double) in [0, 1), as ``hash_uniform`` computes it.
SPLITMIX_UNIFORM = """
    unsigned long long z = key + c * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    const double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
"""

#: Zoneout's keep-masks of steps [start, start + T) for state k of K, one kernel:
#: element i (of T * NS) is step start + i / NS, counter ((t * K + k) * NS + i % NS).
ZONEOUT_KERNEL = ("uint64 key, int64 start, int64 K, int64 k, int64 NS, float64 p", "T keep", """
    const long long t = start + (long long)(i / NS), j = (long long)(i % NS);
    const unsigned long long c = (unsigned long long)((t * K + k) * NS + j);""" +
                  SPLITMIX_UNIFORM + """
    keep = u < p ? (T)1 : (T)0;
    """, "npnn_zoneout_mask")


def hash_uniform(key: int, counters: np.ndarray) -> np.ndarray:
    """u in [0, 1) (float64) at each of ``counters`` (uint64) of the stream ``key``:
    the top 53 bits of splitmix64(key + c * golden), as the device kernels compute it."""
    z = np.uint64(key) + counters.astype(np.uint64) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def zoneout_mask(xp: ArrayModule, key: int, start: int, T: int, K: int, k: int, N: int, S: int,
                 p: float, dtype: DTypeLike) -> Array:
    """d (T, N, S) of ``dtype``: 1 where a unit keeps its previous value (probability p),
    else 0, for steps [start, start + T) of state k of K (see the module's docstring);
    made where ``xp`` computes (one kernel on a GPU), the same numbers on either."""
    if xp is np:
        NS = N * S
        t = np.arange(start, start + T, dtype=np.int64)[:, None]
        c = (t * K + k) * NS + np.arange(NS, dtype=np.int64)[None, :]      # (T, NS)
        with np.errstate(over="ignore"):
            u = hash_uniform(key, c)
        return (u < p).astype(dtype).reshape(T, N, S)
    out = xp.empty((T, N, S), dtype=dtype)
    elementwise_kernel(*ZONEOUT_KERNEL)(np.uint64(key), np.int64(start), np.int64(K),
                                        np.int64(k), np.int64(N * S), float(p), out)
    return out


#: A state's zoneout in an op: None (none), a number p (eval: the expectation), or the
#: keep-masks d (T, N, S) of the op's steps.
StateZoneout = Union[None, float, Array]


class Zoneout(NamedTuple):
    """Zoneout of a sequence op, described rather than drawn: ``rates`` p per state (0:
    none), ``key`` the stream its training masks come from (None: eval mode, the
    expectation p), ``start`` the index in the whole sequence of the op's first step
    (a recomputed segment [a, b) of ``bptt`` runs ``shifted(a)``)."""
    rates: Tuple[float, ...]
    key: Optional[int] = None
    start: int = 0

    def shifted(self, a: int) -> "Zoneout":
        return self._replace(start=self.start + a)

    def masks(self, xp: ArrayModule, T: int, N: int, sizes: Sequence[int],
              dtype: DTypeLike) -> Tuple[StateZoneout, ...]:
        """Per state (size S each of ``sizes``): None, p, or its keep-masks (T, N, S)."""
        K = len(self.rates)
        if self.key is None:
            return tuple(p if p else None for p in self.rates)
        return tuple(zoneout_mask(xp, self.key, self.start, T, K, k, N, S, p, dtype) if p
                     else None for k, (p, S) in enumerate(zip(self.rates, sizes)))


def zoneout_states(zoneout: Any, xp: ArrayModule, T: int, N: int, sizes: Sequence[int],
                   dtype: DTypeLike) -> Optional[Tuple[StateZoneout, ...]]:
    """An op's ``zoneout`` argument -> None (no zoneout at all) or a tuple with one entry
    per state (``StateZoneout``). The argument is None, a ``Zoneout`` (its masks are
    made here, for the op's T steps) or already that tuple (masks fixed by the caller,
    as the gradient tests fix them; a per-step mask must be (T, N, S))."""
    if zoneout is None:
        return None
    if isinstance(zoneout, Zoneout):
        if len(zoneout.rates) != len(sizes):
            raise ValueError(f"expected zoneout rates for {len(sizes)} state(s), "
                             f"got {len(zoneout.rates)}")
        zoneout = zoneout.masks(xp, T, N, sizes, dtype)
    zoneout = tuple(zoneout)
    if len(zoneout) != len(sizes):
        raise ValueError(f"expected zoneout for {len(sizes)} state(s), got {len(zoneout)}")
    for k, (d, S) in enumerate(zip(zoneout, sizes)):
        if d is not None and not isinstance(d, (int, float)) and tuple(d.shape) != (T, N, S):
            raise ValueError(f"expected zoneout[{k}] of shape (T, N, S) = {(T, N, S)}, "
                             f"got {tuple(d.shape)}")
    return None if all(d is None for d in zoneout) else zoneout


def check_recurrent_mask(recurrent_mask: Optional[Array], N: int, S: int) -> None:
    """A recurrent-dropout mask must be (N, S), S the size of the state it scales."""
    if recurrent_mask is not None and tuple(recurrent_mask.shape) != (N, S):
        raise ValueError(f"expected recurrent_mask of shape (N, S) = {(N, S)}, "
                         f"got {tuple(recurrent_mask.shape)}")


def at_step(zone: Optional[Tuple[StateZoneout, ...]], t: int) -> Tuple[Any, ...]:
    """Step t's d per state (None, p, or the (N, S) slice)."""
    assert zone is not None
    return tuple(d if d is None or isinstance(d, (int, float)) else d[t] for d in zone)


def zone_forward(d_t: Sequence[Any], new: Sequence[Array],
                 old: Sequence[Array]) -> Tuple[Array, ...]:
    """(R4): s_t = d * s_{t-1} + (1 - d) * s~_t for each state with zoneout."""
    return tuple(s if d is None else d * s_old + (1 - d) * s
                 for d, s, s_old in zip(d_t, new, old))


def zone_backward(d_t: Sequence[Any],
                  ds: Sequence[Array]) -> Tuple[Tuple[Array, ...], Tuple[Any, ...]]:
    """(R5): the gradients reaching s_t -> (those of the candidates s~_t, the parts
    that pass straight to s_{t-1}: None where a state has no zoneout)."""
    cand = tuple(g if d is None else (1 - d) * g for d, g in zip(d_t, ds))
    kept = tuple(None if d is None else d * g for d, g in zip(d_t, ds))
    return cand, kept


def add_kept(dprev: Sequence[Array], kept: Sequence[Any]) -> Tuple[Array, ...]:
    """(R5): ds_{t-1}^next += d * ds_t."""
    return tuple(g if k is None else g + k for g, k in zip(dprev, kept))


def masked_input(h_prev: Array, recurrent_mask: Optional[Array]) -> Array:
    """(R1): the state as the recurrent product reads it, m * h_{t-1} (any leading axes)."""
    return h_prev if recurrent_mask is None else h_prev * recurrent_mask


def segment_options(options: Dict[str, Any], a: int, b: int) -> Dict[str, Any]:
    """A sequence op's options for its steps [a, b) run apart (a ``bptt`` segment): a
    ``Zoneout`` shifted to start at a, fixed per-step masks sliced; the rest as given."""
    zoneout = options.get("zoneout")
    if zoneout is None:
        return options
    if isinstance(zoneout, Zoneout):
        zoneout = zoneout.shifted(a)
    else:
        zoneout = tuple(d if d is None or isinstance(d, (int, float)) else d[a:b]
                        for d in zoneout)
    return {**options, "zoneout": zoneout}
