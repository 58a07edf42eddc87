"""Softmax cross-entropy from logits, and mean-squared error.

Cross-entropy, for logits z (..., C) and integer targets y (...); M positions,
each with a weight w_m (1 unless ``weights`` is given; 0 where y_m == ignore_index):

    (1) log p_m = log_softmax(z_m) = z_m - max(z_m) - log sum_c exp(z_mc - max(z_m))
    (2) q_m = (1 - eps) onehot(y_m) + eps / C          (label smoothing eps)
    (3) l_m = -sum_c q_mc log p_mc
    (4) reduction: 'none' -> w_m l_m,  'sum' -> sum_m w_m l_m,
        'mean' -> sum_m w_m l_m / sum_m w_m
    (5) dz_m = s_m w_m (p_m - q_m),  s_m = dL/d(output) (divided by sum w for 'mean')

Shifting by the max in (1) keeps every exp in (0, 1]: logits of +-1e4 give
finite losses and gradients. Unlike PyTorch, the class axis is the *last*
one (RNN outputs are (T, N, V)), and a 'mean' over zero total weight is 0
rather than NaN.

Mean-squared error, for predictions and targets of one shape (M elements):

    (6) l = (yhat - y)^2;   'mean' -> sum l / M,   'sum' -> sum l,   'none' -> l
    (7) dyhat = 2 (yhat - y) * s   (s divided by M for 'mean')
"""

from typing import Any, NamedTuple, Optional, Tuple

from .._checks import (check_choice, check_float, check_indices, check_integer,
                       check_same_backend, check_shape)
from .._typing import Array
from ..backend import get_array_module

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropyCache(NamedTuple):
    p: Any                  # (..., C) softmax probabilities
    target: Any             # (...) targets with ignored positions set to 0
    w: Any                  # (...) effective weights (0 at ignored positions)
    total_weight: Any       # sum of w (0-d array)
    label_smoothing: float
    reduction: str


def _check_reduction(reduction: str) -> None:
    check_choice("reduction", reduction, REDUCTIONS)


def softmax_cross_entropy(logits: Array, target: Array, weights: Optional[Array] = None,
                          ignore_index: int = -100, reduction: str = "mean",
                          label_smoothing: float = 0.0) -> Tuple[Array, CrossEntropyCache]:
    """Cross-entropy of ``softmax(logits)`` against integer ``target``.

    Args:
        logits: (..., C) unnormalised scores.
        target: (...) integers in [0, C), or ``ignore_index`` (on the host or the logits'
            backend: host targets are checked there and copied, with no synchronisation).
        weights: optional (...) per-position weights or mask (bool or float).
        ignore_index: target value whose positions are left out.
        reduction: 'mean', 'sum' or 'none'.
        label_smoothing: eps in [0, 1].

    Returns:
        loss (0-d array, or (...) for 'none'), cache.
    """
    _check_reduction(reduction)
    check_float("logits", logits)
    if logits.ndim < 1:
        raise ValueError(f"expected logits of shape (..., C), got {tuple(logits.shape)}")
    C = logits.shape[-1]
    check_integer("target", target)
    target = check_indices("target", target, 0, C, logits, allowed=ignore_index)
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        hint = ""
        if logits.ndim >= 2 and tuple(target.shape) == (logits.shape[0],) + logits.shape[2:]:
            hint = (" (the class axis is last in npnn: logits (..., C); logits in PyTorch's "
                    "(N, C, ...) layout move there with np.moveaxis(logits, 1, -1))")
        raise ValueError(f"expected target of shape {tuple(logits.shape[:-1])} to match "
                         f"logits of shape {tuple(logits.shape)} with the class axis last, "
                         f"got {tuple(target.shape)}{hint}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"expected label_smoothing in [0, 1], got {label_smoothing!r}")
    check_same_backend(logits=logits, target=target, weights=weights)
    xp = get_array_module(logits)
    dt = logits.dtype
    valid = target != ignore_index
    w = valid.astype(dt)
    if weights is not None:
        if weights.dtype.kind == "b":
            weights = weights.astype(dt)
        check_float("weights", weights)
        check_shape("weights", weights, tuple(target.shape))
        if bool(xp.any(weights < 0)):
            raise ValueError("expected weights >= 0 (a position's share of the loss), got a "
                             f"negative one: {float(weights.min())}")
        w = w * weights.astype(dt)
    y = xp.where(valid, target, 0)
    # every (..., C) array below is made like the logits (xp.empty_like keeps their memory
    # layout), so the gradient of transposed logits comes back transposed: no copy
    like = lambda: xp.empty_like(logits)                                # noqa: E731
    shifted = xp.subtract(logits, logits.max(axis=-1, keepdims=True), out=like())  # (1)
    e = xp.exp(shifted)                   # the one exp: log p below, and p for (5)
    sum_e = e.sum(axis=-1, keepdims=True)
    logp = xp.subtract(shifted, xp.log(sum_e), out=like())              # (1)
    nll = -xp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]      # (3), eps = 0 part
    eps = float(label_smoothing)
    loss_m = (1 - eps) * nll - (eps / C) * logp.sum(axis=-1) if eps else nll  # (2)-(3)
    weighted = w * loss_m
    total = w.sum()
    if reduction == "none":                                             # (4)
        loss = weighted
    elif reduction == "sum":
        loss = weighted.sum()
    else:
        loss = weighted.sum() / xp.maximum(total, xp.finfo(dt).tiny)
    cache = CrossEntropyCache(xp.divide(e, sum_e, out=e), y, w, total, eps, reduction)  # p
    return loss, cache


def softmax_cross_entropy_backward(dloss: Optional[Array], cache: CrossEntropyCache) -> Array:
    """(5) Gradient w.r.t. the logits; ``dloss`` is a scalar (or (...) for 'none'),
    None meaning 1."""
    p, y, w, total, eps, reduction = cache
    xp = get_array_module(p)
    C = p.shape[-1]
    if dloss is None:
        dloss = 1.0
    if reduction == "none":
        if getattr(dloss, "ndim", 0):
            check_shape("dloss", dloss, tuple(y.shape))
        s = dloss
    else:
        if getattr(dloss, "size", 1) != 1:
            raise ValueError(f"expected dloss to be a scalar, got shape "
                             f"{tuple(dloss.shape)}")  # type: ignore[union-attr]  # an array here
        s = dloss / xp.maximum(total, xp.finfo(p.dtype).tiny) if reduction == "mean" else dloss
    q = (xp.arange(C) == y[..., None]) * p.dtype.type(1 - eps)         # (2), in p's dtype
    if eps:
        q += p.dtype.type(eps / C)
    dz = xp.subtract(p, q, out=xp.empty_like(p))                        # (5), p's layout
    dz *= (w * s).astype(p.dtype, copy=False)[..., None]
    return dz


class MSECache(NamedTuple):
    diff: Any           # yhat - y
    reduction: str


def mse_loss(pred: Array, target: Array, reduction: str = "mean") -> Tuple[Array, MSECache]:
    """(6) Mean-squared error between ``pred`` and ``target`` of the same shape."""
    _check_reduction(reduction)
    check_float("pred", pred)
    check_float("target", target, pred.dtype)
    check_shape("target", target, tuple(pred.shape))
    check_same_backend(pred=pred, target=target)
    diff = pred - target
    sq = diff * diff
    loss = sq if reduction == "none" else (sq.sum() if reduction == "sum" else sq.mean())
    return loss, MSECache(diff, reduction)


def mse_loss_backward(dloss: Optional[Array], cache: MSECache) -> Array:
    """(7) Gradient w.r.t. the predictions; ``dloss`` None means 1."""
    diff, reduction = cache
    if dloss is None:
        dloss = 1.0
    if reduction == "none" and hasattr(dloss, "ndim") and dloss.ndim:
        check_shape("dloss", dloss, tuple(diff.shape))
    scale = 2.0 / max(diff.size, 1) if reduction == "mean" else 2.0
    return (diff * (scale * dloss)).astype(diff.dtype, copy=False)
