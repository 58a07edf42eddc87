"""Affine maps and embedding lookups.

Linear, over any leading dimensions (... stands for them, M = their product),
with PyTorch's ``nn.Linear`` layout W (O, D), b (O,):

    (1) y = x W^T + b                                   x (..., D) -> y (..., O)
    (2) dx = dy W,   dW = sum over ... of dy^T x,   db = sum over ... of dy

Embedding, PyTorch's ``nn.Embedding`` layout W (V, E):

    (3) y[...] = W[idx[...]]                            idx (...) -> y (..., E)
        (idx may live on the host next to W on a GPU: it is checked there and copied)
    (4) dW[v] = sum of dy[...] over the positions where idx[...] == v
        (a scatter-add: an index that occurs k times collects k gradients);
        the row ``padding_idx`` gets no gradient.

Embedding dropout (AWD-LSTM's ``embedded_dropout``, Gal & Ghahramani's word dropout):
a scale per row of W, m (V,), 0 for a dropped word and 1 / (1 - p) for a kept one,
so a dropped word's vector is zero at every position it occurs:

    (5) y[...] = m[idx[...]] W[idx[...]]                (the lookup of diag(m) W)
    (6) dW[v] = m[v] sum of dy[...] over the positions where idx[...] == v
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .._checks import check_float, check_indices, check_padding_idx, check_same_backend, check_shape
from .._typing import Array
from ..backend import get_array_module, scatter_add


class LinearCache(NamedTuple):
    x: Any          # (..., D)
    W: Any          # (O, D)
    has_bias: bool


def linear_forward(x: Array, W: Array, b: Array = None) -> Tuple[Array, LinearCache]:
    """(1) y = x W^T + b for x (..., D), W (O, D), b (O,) or None -> y (..., O), cache."""
    check_float("x", x)
    check_float("W", W, x.dtype)
    if W.ndim != 2:
        check_shape("W", W, (None, None), "OD")
    O, D = W.shape
    if x.ndim < 1 or x.shape[-1] != D:
        raise ValueError(f"expected x of shape (..., {D}), got {tuple(x.shape)}")
    if b is not None:
        check_float("b", b, x.dtype)
        check_shape("b", b, (O,))
    check_same_backend(x=x, W=W, b=b)
    lead = tuple(x.shape[:-1])
    y = x.reshape(-1, D) @ W.T                      # (M, O): one GEMM, not one per leading slice
    if b is not None:
        y += b
    return y.reshape(lead + (O,)), LinearCache(x, W, b is not None)


def linear_backward(dy: Array, cache: LinearCache) -> Tuple[Array, Dict[str, Array]]:
    """(2) dy (..., O) -> dx (..., D), grads {'W': (O, D), 'b': (O,)}."""
    x, W, has_bias = cache
    O, D = W.shape
    check_float("dy", dy, x.dtype)
    check_shape("dy", dy, tuple(x.shape[:-1]) + (O,))
    dy2 = dy.reshape(-1, O)                         # (M, O)
    dx = (dy2 @ W).reshape(tuple(x.shape[:-1]) + (D,))
    grads = {"W": dy2.T @ x.reshape(-1, D)}
    if has_bias:
        grads["b"] = dy2.sum(axis=0)
    return dx, grads


class EmbeddingCache(NamedTuple):
    idx: Any                     # (...) integer indices
    num_embeddings: int          # V
    W_dtype: Any
    padding_idx: Optional[int]
    row_scale: Any = None        # (V,) embedding dropout's m, or None


def embedding_forward(idx: Array, W: Array, padding_idx: Optional[int] = None,
                      row_scale: Optional[Array] = None) -> Tuple[Array, EmbeddingCache]:
    """(3) y = W[idx] for integer idx (...) and W (V, E) -> y (..., E), cache; with
    ``row_scale`` m (V,) (embedding dropout's mask: ``npnn.Embedding(dropout=p)`` draws it),
    (5) y = m[idx] W[idx]."""
    check_float("W", W)
    if W.ndim != 2:
        check_shape("W", W, (None, None), "VE")
    V = W.shape[0]
    idx = check_indices("idx", idx, 0, V, W)       # host ids: checked there, then copied
    if padding_idx is not None:
        padding_idx = check_padding_idx(padding_idx, V)
    y = W[idx]                                      # (..., E)
    if row_scale is not None:
        check_float("row_scale", row_scale, W.dtype)
        check_shape("row_scale", row_scale, (V,))
        check_same_backend(W=W, row_scale=row_scale)
        y = y * row_scale[idx][..., None]           # (5) (..., E)
    return y, EmbeddingCache(idx, V, W.dtype, padding_idx, row_scale)


def embedding_backward(dy: Array, cache: EmbeddingCache) -> Dict[str, Array]:
    """(4) dy (..., E) -> grads {'W': (V, E)} (indices have no gradient); (6) with a
    ``row_scale``."""
    idx, V, dtype, padding_idx, row_scale = cache
    check_float("dy", dy, dtype)
    E = dy.shape[-1] if dy.ndim else 0
    check_shape("dy", dy, tuple(idx.shape) + (E,))
    xp = get_array_module(dy)
    dW = xp.zeros((V, E), dtype=dtype)
    scatter_add(dW, idx.reshape(-1), dy.reshape(-1, E))
    if row_scale is not None:
        dW *= row_scale[:, None]                    # (6) (V, E): m[v] times row v's sum
    if padding_idx is not None:
        dW[padding_idx] = 0
    return {"W": dW}

