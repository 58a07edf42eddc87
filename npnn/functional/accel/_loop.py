"""The accelerations' sequence loops: one forward, one backward, for every cell and
every kernel set (``_common.Kernels``).

A cell's accel file prepares its weights and buffers (its own layout), then hands
the loop what is its own: the recurrent products of a step, and its kernels bound
to the step's slices of its buffers. The loops do the rest, the same way for
every cell. Masks are valid masks m (T, N, 1), True at valid steps (``_recurrent``).

Forward, for t = 1 .. T (the input half was computed before, one product):

    rec = h_{t-1} W                       each recurrent product of the cell
    kernel(t)                             the step's elementwise work
    s_t = s_{t-1} at padded rows          every state, by selection

Backward, for t = T .. 1:

    dh_t += dout_t                        the output's gradient
    keep dh_t (and the carried gradients) what a padded step passes straight back
    kernel(t)                             dz_t, the carried gradients (dc), the direct path
    dz_t = 0 at padded rows
    flush dz_t (every FLUSH_EVERY steps)  ``_common.flush_subnormals`` (NumPy only; or in
                                          the kernel, every step)
    dh_{t-1} = dz_t W (+ direct path)     the product
    restore what padded rows pass back

then the weight gradients as single products over all T*N rows (``weight_grads``).

Recurrent dropout and zoneout (``regularisers``) are the loops' too, the same for
every cell: the products read m * h_{t-1} (one buffer, (R1)) and the gradient they
give back is scaled by m (R2); zoneout's keep-masks mix each state with its previous
value after the kernel (R4) and split the gradients reaching the states before it
(R5). Zoneout needs the kernel's inputs and outputs apart, so it runs with the
sets that do not fold (on a GPU the ufunc set: ``_common.kernel_set``).
A set that folds (``Kernels.folds``, the fused CUDA kernels) takes the output
gradient, the mask and what padded rows pass back (``carry``) inside its kernel:
the loop then only runs the products.

Both layouts (``_layout``) run these loops. Feature-major (``feature=True``), a state of
a step is (H, N) and a product W h_{t-1}^T (the weight on the left), its masks (T, 1, N)
and its recurrent-dropout mask (H, N); everything else is the same code.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule
from ...backend import get_array_module
from .._recurrent import valid_only
from ..regularisers import at_step
from . import _pool
from ._common import FLUSH_EVERY, Kernels, flush_subnormals
from ._layout import copy_blocks


def new_states(xp: ArrayModule, T: int, N: int, H: int, dtype: DTypeLike,
               initial: Sequence[Optional[Array]], feature: bool = False) -> List[Array]:
    """States stacked over time, s[0] the given initial state (or 0): for each of
    ``initial`` ((N, H) or None), an array (T + 1, N, H), or feature-major
    (T + 1, H, N)."""
    states = []
    for s0 in initial:
        s = _pool.empty(xp, (T + 1, H, N) if feature else (T + 1, N, H), dtype)
        s[0] = 0 if s0 is None else (s0.T if feature else s0)
        states.append(s)
    return states


def forward(xp: ArrayModule, kernels: Kernels, step: Callable[[int, Optional[Array]], Any],
            states: Sequence[Array], products: Sequence[Tuple[Array, Array]],
            m: Optional[Array], rm: Optional[Array] = None,
            zone: Optional[Tuple[Any, ...]] = None,
            candidates: Sequence[Optional[Array]] = (), feature: bool = False) -> None:
    """(T steps of) the forward loop.

    states: the cell's states, each (T + 1, N, H) from ``new_states``, the first the
    hidden state h that the products read; products: pairs (W (H, K), out) of the
    recurrent products h_{t-1} W, ``out`` (N, K) one buffer for all steps or
    (T, N, K) a slice per step (kept for the backward); step(t, m_t) runs the
    kernel set's forward on step t's slices (m_t the valid rows (N, 1) for a set
    that folds the mask, else None); m (T, N, 1) or None. rm (N, H) or None: the
    recurrent-dropout mask the products' h_{t-1} is scaled by; zone: zoneout per
    state (``regularisers.zoneout_states``) or None (then a set that does not fold),
    with ``candidates``, per state None or a (T, N, H) array that keeps s~_t.
    ``feature``: every array feature-major, the products W h_{t-1}^T with W (K, H)
    into ``out`` (K, N) or (T, K, N).
    """
    h = states[0]
    pad = None if m is None or kernels.folds else ~m           # the rows the loop holds
    folded = m if kernels.folds else None
    assert zone is None or not kernels.folds
    h_in = None if rm is None else xp.empty_like(h[0])
    for t in range(h.shape[0] - 1):
        src = h[t] if h_in is None else xp.multiply(h[t], rm, out=h_in)     # (R1)
        for W, out in products:
            if feature:
                xp.matmul(W, src, out=out if out.ndim == 2 else out[t])
            else:
                xp.matmul(src, W, out=out if out.ndim == 2 else out[t])
        step(t, None if folded is None else folded[t])
        if zone is not None:                                    # (R4)
            for k, (s, d) in enumerate(zip(states, at_step(zone, t))):
                if d is not None:
                    keep = candidates[k] if k < len(candidates) else None
                    if keep is not None:
                        keep[t] = s[t + 1]
                    s[t + 1] = d * s[t] + (1 - d) * s[t + 1]
        if pad is not None:                                     # padded steps keep s_{t-1}
            for s in states:
                xp.copyto(s[t + 1], s[t], where=pad[t])


def backward(xp: ArrayModule, kernels: Kernels,
             step: Callable[[int, Optional[Array], Optional[Array], Optional[Array]], Any],
             dz: Sequence[Array], W: Array, dh: Array, carried: Sequence[Array] = (),
             dout: Optional[Array] = None, m: Optional[Array] = None,
             direct: Optional[Array] = None, rm: Optional[Array] = None,
             zone: Optional[Tuple[Any, ...]] = None, feature: bool = False) -> Array:
    """(T steps of) the backward loop; returns the gradient of h_0 (N, H).

    dz: the step gradients the kernel writes, a tuple of (T, N, .) arrays whose first
    is the gradient of the recurrent product, multiplied by W (K, H) to reach
    h_{t-1}; dh (N, H) the gradient of h_T (a copy: updated in place); carried: the
    other states' gradients, updated in place by the kernel (the LSTM's dc); dout
    (T, N, H) or None, its padded rows zero; direct (N, H) or None: a gradient the
    kernel writes that reaches h_{t-1} besides the product (the GRU's dh z), zeros
    on entry. step(t, dout_t, m_t, carry) runs the kernel set's backward on step t
    (dout_t, m_t for a set that folds them, else None; ``carry`` the direct path or,
    for a set that folds the mask, what padded rows pass back). rm, zone as ``forward``
    takes them: dz_t W is scaled by rm (R2), and the gradients reaching the states are
    split before the kernel, the kept parts added after the product (R5).
    ``feature``: every array feature-major (dz (T, K, N), dh (H, N)), W (H, K) and the
    product W dz_t^T.
    """
    assert zone is None or not kernels.folds
    folds = kernels.folds
    own = kernels.own and zone is None and not folds    # the kernel adds dout_t, flushes
    carry = direct
    if folds and carry is None and m is not None:
        carry = xp.zeros_like(dh)
    pad = None if m is None or folds else ~m
    if pad is not None:
        reaching = tuple(xp.empty_like(d) for d in (dh, *carried))
    for t in range(dz[0].shape[0] - 1, -1, -1):
        if folds:
            step(t, None if dout is None else dout[t], None if m is None else m[t], carry)
        else:
            if dout is not None and not own:
                dh += dout[t]
            if pad is not None:                                 # what a padded step passes back
                for keep, d in zip(reaching, (dh, *carried)):
                    keep[...] = d
            if zone is not None:                                # (R5), split
                kept = []
                for g, d_t in zip((dh, *carried), at_step(zone, t)):
                    kept.append(None if d_t is None else d_t * g)
                    if d_t is not None:
                        g *= 1 - d_t
            step(t, None if dout is None or not own else dout[t], None, carry)
            if pad is not None:
                for d in dz:
                    xp.copyto(d[t], 0, where=pad[t])
            if t % FLUSH_EVERY == 0 and not own:
                for d in (*(d[t] for d in dz), *carried, *(() if direct is None else (direct,))):
                    flush_subnormals(xp, d)
        if feature:
            xp.matmul(W, dz[0][t], out=dh)
        else:
            xp.matmul(dz[0][t], W, out=dh)
        if rm is not None:
            dh *= rm                                            # (R2)
        if not folds:
            if direct is not None:
                dh += direct
            if zone is not None:                                # (R5), what passes straight
                for g, k in zip((dh, *carried), kept):
                    if k is not None:
                        g += k
            if pad is not None:
                for keep, d in zip(reaching, (dh, *carried)):
                    xp.copyto(d, keep, where=pad[t])
    return dh + carry if folds and carry is not None else dh


def weight_grads(x: Array, h: Array, W_ih: Array, dzi: Array, dzh: Array, has_bias: bool,
                 m: Optional[Array], rm: Optional[Array] = None,
                 feature: bool = False) -> Tuple[Array, Dict[str, Array]]:
    """After the loop, as single products over all T*N rows: dx (T, N, D) and
    {'W_ih', 'W_hh'} (and 'b_ih', 'b_hh' with biases) in the layout of dzi, dzh.

    dzi, dzh (T, N, K): the gradients of the input half and of the recurrent half
    (the same array where both enter one sum); x (T, N, D); h (T + 1, N, H) the
    states; m (T, N, 1) keeps whatever the padding of x holds out of dW_ih; rm (N, H)
    or None the recurrent-dropout mask the products read h_{t-1} through (R3).
    ``feature``: dzi, dzh (T, K, N), h (T + 1, H, N) and rm (H, N) feature-major
    (x and m as above); each is copied once to (K, T*N), the layout of one product."""
    xp = get_array_module(x)
    T, N, D = x.shape
    x2 = valid_only(xp, x, m).reshape(T * N, D)
    if feature:
        H = h.shape[1]
        h_prev = h[:-1] if rm is None else h[:-1] * rm
        hT, dziT = _transposed(xp, h_prev), _transposed(xp, dzi)
        dzhT = dziT if dzh is dzi else _transposed(xp, dzh)
        dx = _pool.matmul(xp, dziT.T, W_ih).reshape(T, N, D)
        grads = {"W_ih": dziT @ x2, "W_hh": dzhT @ hT.T}
        if has_bias:
            ones = xp.ones(T * N, dtype=x.dtype)    # sums over steps and sequences as GEMVs
            grads["b_ih"] = dziT @ ones
            grads["b_hh"] = grads["b_ih"].copy() if dzh is dzi else dzhT @ ones
        return dx, grads
    H, K = h.shape[2], dzi.shape[2]
    dzi2, dzh2 = dzi.reshape(T * N, K), dzh.reshape(T * N, dzh.shape[2])    # (T*N, K)
    dx = _pool.matmul(xp, dzi2, W_ih).reshape(T, N, D)
    grads = {"W_ih": dzi2.T @ x2,
             "W_hh": dzh2.T @ (h[:-1] if rm is None else h[:-1] * rm).reshape(T * N, H)}
    if has_bias:
        ones = xp.ones(T * N, dtype=x.dtype)        # sums over steps and sequences as GEMVs
        grads["b_ih"] = ones @ dzi2
        grads["b_hh"] = grads["b_ih"].copy() if dzh is dzi else ones @ dzh2
    return dx, grads


def _transposed(xp: ArrayModule, a: Array) -> Array:
    """(T, K, N) -> (K, T*N) contiguous: the steps of a feature-major array side by side."""
    T, K, N = a.shape
    out = _pool.empty(xp, (K, T, N), a.dtype)
    copy_blocks(xp, out, a.transpose(1, 0, 2))
    return out.reshape(K, T * N)
