"""Attention layers over encoder outputs, wrapping ``functional/attention.py``.

``context = layer(q, K, V, mask=None)`` with q (N, E) for one decoder step or
(N, L, E) for L queries (all the steps of a Luong decoder at once), K (N, S, Ek),
V (N, S, Ev), mask (N, S) True at valid keys; ``layer.weights`` holds the last
attention weights (for plotting). ``dq, dK, dV = layer.backward(dcontext)``.

A decoder that attends once per step (Bahdanau's form: each query depends on
the previous step's context) splits the call so that whatever depends only on
the keys is done once per sequence, forward and backward:

    keys = layer.project(K)                         # once
    c_t = layer.attend(q_t, keys, V, mask)          # every step
    ...
    dq_t = layer.attend_backward(dc_t)              # every step, in reverse: dq_t alone
    dK, dV = layer.project_backward()               # once, last: all the steps' dK, dV

``project`` is the identity for dot-product attention and the key half K W_k^T
of the additive score for additive attention. ``attend_backward`` computes only
what the decoder's backward loop needs at once, the query's gradient;
``project_backward`` computes the keys', values' and parameters' gradients of
every step since ``project`` in one batched product over the steps
(``functional.concat_attention_caches``).
"""

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

from numpy.typing import DTypeLike

from .. import functional as F
from ..backend import get_array_module
from .._checks import check_dtype, check_positive_int, check_scale
from .._typing import Array, Seed
from .base import Module, make_rng


class _Projection:
    """``project``'s record on the cache stack: its cache and, as the decoder's loop
    backpropagates them, the (dc, cache) of each ``attend`` that used its keys."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.steps: List[Tuple[Array, Any]] = []


class _Attention(Module):
    weights = None
    # Each subclass's hooks (declared for the type checker; their caches are its own):
    #: (q3, keys, V, mask) -> context, weights, cache
    _attend: Callable[[Array, Array, Array, Optional[Array]], Tuple[Array, Array, Any]]
    #: (dc, an attend's cache) -> dq
    _query_backward: Callable[[Array, Any], Array]
    #: (dc, the steps' joined cache, the projection's cache) -> dK, dV, parameter grads
    _keys_backward: Callable[[Array, Any, Any], Tuple[Array, Array, Dict[str, Array]]]

    def _split(self, q: Array) -> Tuple[Array, bool]:
        return (q[:, None, :], True) if q.ndim == 2 else (q, False)

    def _project(self, K: Array) -> Tuple[Array, Any]:
        """-> keys, cache (the keys themselves, no cache, by default)."""
        return K, None

    def project(self, K: Array) -> Array:
        """What the scores need of the keys alone, once per sequence (see the module
        docstring); each later ``attend`` reads it."""
        keys, cache = self._project(K)
        self._push(_Projection(cache))
        return keys

    def attend(self, q: Array, keys: Array, V: Array, mask: Optional[Array] = None) -> Array:
        """One attention call on keys from ``project``: q (N, E) or (N, L, E) -> context."""
        q3, single = self._split(q)
        c, self.weights, cache = self._attend(q3, keys, V, mask)
        self._push(("attend", cache, single))
        return c[:, 0] if single else c

    def attend_backward(self, dc: Array) -> Array:
        """dc of the most recent ``attend`` (N, Ev) or (N, L, Ev) -> dq. The keys',
        values' and parameters' gradients wait for ``project_backward``."""
        with self._consume() as record:
            if not (isinstance(record, tuple) and record[0] == "attend"):
                raise RuntimeError(f"{type(self).__name__}.attend_backward() expects the most "
                                   "recent forward to be an attend() call, got "
                                   + ("project()" if isinstance(record, _Projection)
                                      else "a full forward (use backward())"))
            _, cache, single = record
            dc3 = dc[:, None, :] if single else dc
            dq = self._query_backward(dc3, cache)
            projection = self._open_projection()
        projection.steps.append((dc3, cache))
        return dq[:, 0] if single else dq

    def _open_projection(self) -> _Projection:
        for i in range(len(self._caches) - 2, -1, -1):  # [-1]: the attend being consumed
            if isinstance(self._caches[i], _Projection):
                return self._caches[i]
        raise RuntimeError(f"{type(self).__name__}.attend_backward() found no project() "
                           "before the attend() calls: project the keys first")

    def project_backward(self) -> Tuple[Array, Array]:
        """After ``attend_backward`` of every ``attend`` since ``project``: -> dK (N, S, Ek)
        and dV (N, S, Ev), the sums over those steps; the parameters' gradients
        accumulate."""
        with self._consume() as record:
            if not isinstance(record, _Projection):
                raise RuntimeError(f"{type(self).__name__}.project_backward() called while "
                                   "attention steps are still to be backpropagated "
                                   "(attend_backward, most recent first)")
            if not record.steps:
                raise RuntimeError(f"{type(self).__name__}.project_backward() called with no "
                                   "attend_backward() since project()")
            steps = record.steps[::-1]                  # forward order
            xp = get_array_module(steps[0][0])
            dc = xp.concatenate([d for d, _ in steps], axis=1)                 # (N, T, Ev)
            cache = F.concat_attention_caches([c for _, c in steps])
            dK, dV, grads = self._keys_backward(dc, cache, record.cache)
        for k, g in grads.items():
            self._accumulate(k, g)
        return dK, dV


class DotAttention(_Attention):
    """Dot-product attention; ``scale=None`` is 1/sqrt(E) (scaled), 1.0 Luong's dot."""

    def __init__(self, scale: Optional[float] = None) -> None:
        super().__init__()
        self.scale = check_scale(scale)

    def extra_repr(self) -> str:
        return "scaled" if self.scale is None else f"scale={self.scale}"

    def forward(self, q: Array, K: Array, V: Array, mask: Optional[Array] = None) -> Array:
        q3, single = self._split(q)
        c, self.weights, cache = F.dot_attention_forward(q3, K, V, mask, self.scale)
        self._push(("full", cache, single))
        return c[:, 0] if single else c

    def backward(self, dc: Array) -> Tuple[Array, Array, Array]:
        with self._consume() as record:
            _check_full(self, record)
            _, cache, single = record
            dq, dK, dV = F.dot_attention_backward(dc[:, None, :] if single else dc, cache)
        return (dq[:, 0] if single else dq), dK, dV

    def _attend(self, q3: Array, keys: Array, V: Array,
                mask: Optional[Array]) -> Tuple[Array, Array, F.DotAttentionCache]:
        return F.dot_attention_forward(q3, keys, V, mask, self.scale)

    def _query_backward(self, dc: Array, cache: F.DotAttentionCache) -> Array:
        return F.dot_attention_query_backward(dc, cache)

    def _keys_backward(self, dc: Array, cache: F.DotAttentionCache,
                       _: Any) -> Tuple[Array, Array, Dict[str, Array]]:
        _, dK, dV = F.dot_attention_backward(dc, cache)
        return dK, dV, {}


class AdditiveAttention(_Attention):
    """Bahdanau's additive attention with parameters ``W_q`` (A, E), ``W_k`` (A, Ek),
    ``w_v`` (A,), initialised like PyTorch's bias-free Linear layers."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int,
                 dtype: DTypeLike = "float32", seed: Seed = None) -> None:
        super().__init__()
        E = check_positive_int("query_size", query_size)
        Ek = check_positive_int("key_size", key_size)
        A = check_positive_int("hidden_size", hidden_size)
        dtype = check_dtype(dtype)
        rng = make_rng(seed)
        for name, shape, fan_in in (("W_q", (A, E), E), ("W_k", (A, Ek), Ek), ("w_v", (A,), A)):
            k = 1.0 / math.sqrt(fan_in)
            self._add_param(name, rng.uniform(-k, k, shape).astype(dtype))

    def extra_repr(self) -> str:
        A, E = self.params["W_q"].shape
        return f"query_size={E}, key_size={self.params['W_k'].shape[1]}, hidden_size={A}"

    def forward(self, q: Array, K: Array, V: Array, mask: Optional[Array] = None) -> Array:
        q3, single = self._split(q)
        p = self.params
        c, self.weights, cache = F.additive_attention_forward(q3, K, V, p["W_q"], p["W_k"],
                                                              p["w_v"], mask)
        self._push(("full", cache, single))
        return c[:, 0] if single else c

    def backward(self, dc: Array) -> Tuple[Array, Array, Array]:
        """dq, dK, dV of the most recent full forward; the parameters' gradients
        accumulate."""
        with self._consume() as record:
            _check_full(self, record)
            _, cache, single = record
            dq, dK, dV, grads = F.additive_attention_backward(
                dc[:, None, :] if single else dc, cache)
        for k, g in grads.items():
            self._accumulate(k, g)
        return (dq[:, 0] if single else dq), dK, dV

    def _project(self, K: Array) -> Tuple[Array, F.LinearCache]:
        """P = K W_k^T (N, S, A), the key half of the additive score."""
        return F.linear_forward(K, self.params["W_k"])

    def _attend(self, q3: Array, P: Array, V: Array,
                mask: Optional[Array]) -> Tuple[Array, Array, F.AdditiveProjectedCache]:
        return F.additive_attention_projected_forward(q3, P, V, self.params["W_q"],
                                                      self.params["w_v"], mask)

    def _query_backward(self, dc: Array, cache: F.AdditiveProjectedCache) -> Array:
        return F.additive_attention_projected_query_backward(dc, cache)

    def _keys_backward(self, dc: Array, cache: F.AdditiveProjectedCache,
                       projection: F.LinearCache) -> Tuple[Array, Array, Dict[str, Array]]:
        _, dP, dV, grads = F.additive_attention_projected_backward(dc, cache)
        dK, linear = F.linear_backward(dP, projection)
        grads["W_k"] = linear["W"]
        return dK, dV, grads


def _check_full(layer: Module, record: Any) -> None:
    """``backward`` pairs with a full forward, not with project/attend."""
    if not (isinstance(record, tuple) and record[0] == "full"):
        raise RuntimeError(f"{type(layer).__name__}.backward() reached a "
                           + ("project() call" if isinstance(record, _Projection)
                              else "attend() call")
                           + ": backpropagate the steps with attend_backward() and the keys "
                           "with project_backward()")
