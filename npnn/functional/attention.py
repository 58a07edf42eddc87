"""Attention over encoder outputs: dot-product (Luong, optionally scaled) and
additive (Bahdanau), with a key mask for padded source positions.

Shapes: N batch, L queries per sequence (decoder steps; 1 when stepping),
S keys (source positions), E query/key size, Ev value size, A additive size.
``mask`` (N, S) is True at valid keys (as PyTorch's boolean ``attn_mask``).
Every sequence needs one valid key: a NumPy mask without one is refused; a
device mask is not read back to check (that would cost a sync per decoder
token), and a row without a valid key gives NaN weights there, as in PyTorch.

Dot-product attention, ``scale`` = 1/sqrt(E) by default (PyTorch's
``scaled_dot_product_attention``), 1 for Luong's plain dot score:

    (1) s = scale * q K^T                          (N, L, S) scores
    (2) s = -inf where the key is padding
    (3) alpha = softmax(s) over S                  (N, L, S) attention weights
    (4) c = alpha V                                (N, L, Ev) context

Backward, from dc (docs/derivations.md, section "Attention"):

    (5) dalpha = dc V^T
    (6) ds = alpha * (dalpha - sum_S alpha * dalpha)       (zero at padding: alpha = 0)
    (7) dV = alpha^T dc
    (8) dq = scale * ds K,    dK = scale * ds^T q

Additive attention (Bahdanau; d2l's ``AdditiveAttention``), parameters in
PyTorch's Linear layout W_q (A, E), W_k (A, Ek), w_v (A,), no biases:

    (9)  u = q W_q^T (broadcast over S) + K W_k^T (broadcast over L)   (N, L, S, A)
    (10) e = tanh(u)
    (11) s = e w_v                                  then (2)-(4)

    (12) dw_v = sum_{N,L,S} ds * e,   du = ds w_v * (1 - e^2)
    (13) dq = (sum_S du) W_q,   dW_q = sum (sum_S du)^T q
    (14) dK = (sum_L du) W_k,   dW_k = sum (sum_L du)^T K

The key half of (9), P = K W_k^T (N, S, A), does not depend on the query: a
decoder that attends once per step projects the keys once per sequence
(``additive_attention_projected_*`` take P), and ``additive_attention_*`` are
that projection composed with the projected op.

The L queries are independent of each other, so the L steps of a decoder can
attend in one call with L = T (Luong's form, where the decoder's outputs are
the queries), and every gradient but dq is a sum over the queries. A decoder
whose queries depend on earlier contexts (Bahdanau's form: the query of step
t is the state that read c_{t-1}) must attend step by step, L = 1, and needs
dq at every step of its backward loop; the rest can wait. Its backward
therefore splits:

* ``*_query_backward(dc_t, cache_t)`` -> dq_t, every step: (5), (6) and the
  query half of (8) or (13), products that contract over Ev, S or A, never
  over the single query;
* ``concat_attention_caches(caches)`` makes one L = T cache of the steps'
  caches, and the op's ``*_backward`` on it, with the steps' dc stacked along
  L, gives dK (or dP), dV and the parameters' gradients of all steps at once:
  (7), (8), (12)-(14) contract over the T steps in one batched product, not
  over a length-1 query axis at every step (outer products, which NumPy's
  batched matmul forms without BLAS).
"""

import math
from typing import Any, Dict, Iterable, NamedTuple, Optional, Tuple, Union

import numpy as np

from .._checks import check_array, check_float, check_same_backend, check_shape
from .._typing import Array, ArrayModule
from ..backend import get_array_module
from .activations import log_softmax


def _check_qkv(q: Array, K: Array, V: Array, mask: Optional[Array],
               E_key: Optional[int] = None) -> Tuple[ArrayModule, int, int, int]:
    """q (N, L, E), K (N, S, Ek), V (N, S, Ev), mask (N, S) -> (xp, N, L, S)."""
    check_float("q", q)
    check_float("K", K, q.dtype)
    check_float("V", V, q.dtype)
    if q.ndim != 3:
        check_shape("q", q, (None, None, None), ("N", "L", "E"))
    N, L, E = q.shape
    check_shape("K", K, (N, None, E if E_key is None else E_key), ("N", "S", "E"))
    S = K.shape[1]
    check_shape("V", V, (N, S, None), ("N", "S", "Ev"))
    if L < 1 or S < 1:
        raise ValueError(f"expected at least one query and one key, got L={L}, S={S}")
    xp = get_array_module(q)
    if mask is not None:
        check_array("mask", mask)
        check_shape("mask", mask, (N, S), "NS")
        if mask.dtype.kind != "b":
            raise TypeError(f"expected mask to be a boolean array, got dtype {mask.dtype}")
        if isinstance(mask, np.ndarray):    # on a GPU this would read the device per call
            empty = ~mask.any(axis=1)       # (a decoder attends once per token): not there
            if empty.any():
                raise ValueError(f"expected at least one valid key per sequence, got none "
                                 f"for sequence {int(np.flatnonzero(empty)[0])}")
    check_same_backend(q=q, K=K, V=V, mask=mask)
    return xp, N, L, S


def _masked_softmax(xp: ArrayModule, s: Array, mask: Optional[Array]) -> Array:
    """(2)-(3): softmax over the last axis with padded keys at -inf (weight exactly 0)."""
    if mask is not None:
        s = xp.where(mask[:, None, :], s, -xp.inf)
    return xp.exp(log_softmax(s))


def _softmax_backward(dalpha: Array, alpha: Array) -> Array:
    """(6)"""
    return alpha * (dalpha - (dalpha * alpha).sum(axis=-1, keepdims=True))


def _scores_backward(dc: Array, V: Array, alpha: Array) -> Array:
    """(5)-(6): dc (N, L, Ev) -> ds (N, L, S), contracting over Ev."""
    return _softmax_backward(dc @ V.transpose(0, 2, 1), alpha)


def _check_dc(dc: Array, q: Array, V: Array) -> None:
    check_float("dc", dc, q.dtype)
    check_shape("dc", dc, (q.shape[0], q.shape[1], V.shape[2]))


class DotAttentionCache(NamedTuple):
    q: Any
    K: Any
    V: Any
    alpha: Any          # (N, L, S)
    scale: float


def dot_attention_forward(q: Array, K: Array, V: Array, mask: Optional[Array] = None,
                          scale: Optional[float] = None) -> Tuple[Array, Array, DotAttentionCache]:
    """Dot-product attention (1)-(4).

    Args:
        q: (N, L, E) queries, K: (N, S, E) keys, V: (N, S, Ev) values.
        mask: optional (N, S) boolean, True at valid keys.
        scale: score factor; None means 1/sqrt(E) (scaled), 1.0 gives Luong's dot.

    Returns:
        context (N, L, Ev), weights alpha (N, L, S), cache.
    """
    xp, N, L, S = _check_qkv(q, K, V, mask)
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    s = (q @ K.transpose(0, 2, 1)) * scale                 # (1) (N, L, S)
    alpha = _masked_softmax(xp, s, mask)                   # (2)-(3)
    c = alpha @ V                                          # (4)
    return c, alpha, DotAttentionCache(q, K, V, alpha, scale)


def dot_attention_backward(dc: Array, cache: DotAttentionCache) -> Tuple[Array, Array, Array]:
    """(5)-(8): dc (N, L, Ev) -> dq, dK, dV."""
    q, K, V, alpha, scale = cache
    _check_dc(dc, q, V)
    ds = _scores_backward(dc, V, alpha)                    # (5)-(6)
    dV = alpha.transpose(0, 2, 1) @ dc                     # (7)
    dq = (ds @ K) * scale                                  # (8)
    dK = (ds.transpose(0, 2, 1) @ q) * scale
    return dq, dK, dV


def dot_attention_query_backward(dc: Array, cache: DotAttentionCache) -> Array:
    """(5), (6) and dq of (8) alone: dc (N, L, Ev) -> dq (N, L, E); for a decoder's
    steps (see the module docstring)."""
    q, K, V, alpha, scale = cache
    _check_dc(dc, q, V)
    return (_scores_backward(dc, V, alpha) @ K) * scale     # (5), (6), (8)


class AdditiveProjectedCache(NamedTuple):
    q: Any
    V: Any
    e: Any              # (N, L, S, A) tanh features
    alpha: Any          # (N, L, S)
    W_q: Any
    w_v: Any


def additive_attention_projected_forward(q: Array, P: Array, V: Array, W_q: Array, w_v: Array,
                                         mask: Optional[Array] = None
) -> Tuple[Array, Array, AdditiveProjectedCache]:
    """Additive attention on projected keys P = K W_k^T: (9)-(11), (2)-(4).

    Args:
        q: (N, L, E), P: (N, S, A), V: (N, S, Ev), W_q: (A, E), w_v: (A,).
        mask: optional (N, S) boolean, True at valid keys.

    Returns:
        context (N, L, Ev), weights alpha (N, L, S), cache.
    """
    check_float("W_q", W_q)
    if W_q.ndim != 2:
        check_shape("W_q", W_q, (None, None), ("A", "E"))
    A = W_q.shape[0]
    xp, N, L, S = _check_qkv(q, P, V, mask, E_key=A)
    check_float("W_q", W_q, q.dtype)
    check_shape("W_q", W_q, (A, q.shape[2]), ("A", "E"))
    check_float("w_v", w_v, q.dtype)
    check_shape("w_v", w_v, (A,), "A")
    check_same_backend(q=q, W_q=W_q, w_v=w_v)
    u = (q @ W_q.T)[:, :, None, :] + P[:, None, :, :]             # (9) (N, L, S, A)
    e = xp.tanh(u, out=u)                                          # (10)
    s = e @ w_v                                                    # (11) (N, L, S)
    alpha = _masked_softmax(xp, s, mask)                           # (2)-(3)
    c = alpha @ V                                                  # (4)
    return c, alpha, AdditiveProjectedCache(q, V, e, alpha, W_q, w_v)


def additive_attention_projected_backward(dc: Array,
                                          cache: AdditiveProjectedCache
) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """(5)-(7), (12)-(13): dc (N, L, Ev) -> dq, dP, dV, grads {'W_q', 'w_v'}."""
    q, V, e, alpha, W_q, w_v = cache
    _check_dc(dc, q, V)
    xp = get_array_module(dc)
    A, E = W_q.shape
    ds = _scores_backward(dc, V, alpha)                    # (5)-(6) (N, L, S)
    dV = alpha.transpose(0, 2, 1) @ dc                     # (7)
    dw_v = xp.dot(ds.reshape(-1), e.reshape(-1, A))        # (12) sum_{N,L,S} ds * e
    du = _tanh_grad(e)                                     # (12) du = ds * (1 - e^2) * w_v,
    du *= ds[..., None]                                    #      w_v applied after the sums
    du_q = du.sum(axis=2) * w_v                            # (13) (N, L, A)
    dq = du_q @ W_q
    grads = {"W_q": xp.dot(du_q.reshape(-1, A).T, q.reshape(-1, E)), "w_v": dw_v}
    return dq, du.sum(axis=1) * w_v, dV, grads             # dP = sum_L du (N, S, A)


def additive_attention_projected_query_backward(dc: Array, cache: AdditiveProjectedCache) -> Array:
    """(5), (6) and dq of (13) alone: dc (N, L, Ev) -> dq (N, L, E); for a decoder's
    steps (see the module docstring)."""
    q, V, e, alpha, W_q, w_v = cache
    _check_dc(dc, q, V)
    ds = _scores_backward(dc, V, alpha)                    # (5)-(6) (N, L, S)
    # (13) sum_S du = w_v * sum_S ds (1 - e^2): one product per query over S
    du_q = (ds[:, :, None, :] @ _tanh_grad(e))[:, :, 0, :] * w_v      # (N, L, A)
    return du_q @ W_q


def _tanh_grad(e: Array) -> Array:
    """1 - e^2 for e = tanh(u), a new array."""
    g = e * e
    g *= -1
    g += 1
    return g


class AdditiveAttentionCache(NamedTuple):
    projected: AdditiveProjectedCache
    K: Any
    W_k: Any


def additive_attention_forward(q: Array, K: Array, V: Array, W_q: Array, W_k: Array, w_v: Array,
                               mask: Optional[Array] = None
) -> Tuple[Array, Array, AdditiveAttentionCache]:
    """Additive attention (9)-(11), (2)-(4).

    Args:
        q: (N, L, E), K: (N, S, Ek), V: (N, S, Ev).
        W_q: (A, E), W_k: (A, Ek), w_v: (A,).
        mask: optional (N, S) boolean, True at valid keys.

    Returns:
        context (N, L, Ev), weights alpha (N, L, S), cache.
    """
    check_float("W_k", W_k)
    if W_k.ndim != 2:
        check_shape("W_k", W_k, (None, None), ("A", "Ek"))
    _check_qkv(q, K, V, mask, E_key=W_k.shape[1])
    check_float("W_k", W_k, q.dtype)
    check_same_backend(q=q, W_k=W_k)
    P = K @ W_k.T                                                  # (9), key half (N, S, A)
    c, alpha, cache = additive_attention_projected_forward(q, P, V, W_q, w_v, mask)
    return c, alpha, AdditiveAttentionCache(cache, K, W_k)


def additive_attention_backward(dc: Array,
                                cache: AdditiveAttentionCache
) -> Tuple[Array, Array, Array, Dict[str, Array]]:
    """(5)-(7), (12)-(14): dc (N, L, Ev) -> dq, dK, dV, grads {'W_q', 'W_k', 'w_v'}."""
    projected, K, W_k = cache
    dq, dP, dV, grads = additive_attention_projected_backward(dc, projected)
    A = W_k.shape[0]
    dK = dP @ W_k                                          # (14)
    grads["W_k"] = dP.reshape(-1, A).T @ K.reshape(-1, K.shape[2])
    return dq, dK, dV, grads


#: A cache that ``concat_attention_caches`` joins: one of a dot or a projected additive call.
AttentionCache = Union[DotAttentionCache, AdditiveProjectedCache]


def concat_attention_caches(caches: Iterable[AttentionCache]) -> AttentionCache:
    """The caches of several calls of one op on the same keys and values (a decoder's
    steps) -> one cache with all their queries along L, in the given order.

    The op's backward on it, given the calls' dc concatenated along L, returns dK
    (dP), dV and the parameters' gradients summed over the calls, in one batched
    product per gradient; its dq are the calls' dq, concatenated."""
    caches = list(caches)
    if not caches:
        raise ValueError("expected at least one attention cache, got none")
    first = caches[0]
    kinds = (DotAttentionCache, AdditiveProjectedCache)
    if not isinstance(first, kinds) or any(type(c) is not type(first) for c in caches):
        raise TypeError("expected caches of one op: all from dot_attention_forward or all "
                        "from additive_attention_projected_forward, got "
                        + ", ".join(sorted({type(c).__name__ for c in caches})))
    same = ("K", "V") if isinstance(first, DotAttentionCache) else ("V", "W_q", "w_v")
    for i, c in enumerate(caches):
        for name in same:
            if getattr(c, name) is not getattr(first, name):
                raise ValueError(f"expected every call on the same {name} (one array), got "
                                 f"another one in call {i}")
    if len(caches) == 1:
        return first
    xp = get_array_module(first.q)

    def cat(name: str) -> Array:
        return xp.concatenate([getattr(c, name) for c in caches], axis=1)
    if isinstance(first, DotAttentionCache):
        # every c is a DotAttentionCache, as first (checked above)
        if any(c.scale != first.scale for c in caches):  # type: ignore[union-attr]
            raise ValueError("expected every call with the same scale")
        return first._replace(q=cat("q"), alpha=cat("alpha"))
    return first._replace(q=cat("q"), e=cat("e"), alpha=cat("alpha"))
