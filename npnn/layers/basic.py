"""Linear, Embedding, Dropout, the losses, and Sequential, as layers with a backward."""

import math
from typing import Optional

from numpy.typing import DTypeLike

from .. import functional as F
from .._checks import (check_choice, check_dropout, check_dtype, check_padding_idx,
                       check_positive_int)
from .._typing import Array, Seed
from .base import Module, make_rng
from .recurrent import dropout_mask


class Linear(Module):
    """``y = x W^T + b`` over any leading dims; weight (out, in), bias (out,).

    Initialised as PyTorch: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: DTypeLike = "float32", seed: Seed = None) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.dtype = check_dtype(dtype)
        rng = make_rng(seed)
        k = 1.0 / math.sqrt(self.in_features)
        self._add_param("weight", rng.uniform(-k, k, (self.out_features, self.in_features))
                        .astype(self.dtype))
        if bias:
            self._add_param("bias", rng.uniform(-k, k, self.out_features).astype(self.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + ("" if "bias" in self.params else ", bias=False"))

    def forward(self, x: Array) -> Array:
        """x (..., in) -> y (..., out)."""
        y, cache = F.linear_forward(x, self.params["weight"], self.params.get("bias"))
        self._push(cache)
        return y

    def backward(self, dy: Array) -> Array:
        """dy (..., out) -> dx (..., in); adds to grads['weight'], grads['bias'].

        Consumes the most recent forward not yet backpropagated (last in, first out)."""
        with self._consume() as cache:
            self._check_grad("dy", dy, tuple(cache.x.shape[:-1]) + (self.out_features,),
                             cache.x.dtype)
            dx, grads = F.linear_backward(dy, cache)
        self._accumulate("weight", grads["W"])
        if "b" in grads:
            self._accumulate("bias", grads["b"])
        return dx


class Embedding(Module):
    """Lookup table, weight (num_embeddings, embedding_dim) ~ N(0, 1) as PyTorch;
    the ``padding_idx`` row starts at zero and receives no gradient.

    ``dropout`` p is embedding dropout (AWD-LSTM's ``embedded_dropout``): in training, each
    forward drops whole rows of the weight, each with probability p (a dropped word's
    vector is zero wherever it occurs in the batch), and scales the others by
    1 / (1 - p); one mask (V,) per forward, drawn from the layer's generator; the
    backward masks and scales the weight's gradient alike. The identity in eval mode.
    (``functional.linear`` (5), (6).)"""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 dtype: DTypeLike = "float32", seed: Seed = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.dtype = check_dtype(dtype)
        if padding_idx is not None:
            padding_idx = check_padding_idx(padding_idx, self.num_embeddings)
        self.padding_idx = padding_idx
        self.dropout = check_dropout(dropout)
        self.rng = make_rng(seed)
        W = self.rng.standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            W[padding_idx] = 0
        self._add_param("weight", W.astype(self.dtype))

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        drop = f", dropout={self.dropout}" if self.dropout else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}{drop}"

    def forward(self, idx: Array) -> Array:
        """Integer idx (...) -> (..., embedding_dim)."""
        W = self.params["weight"]
        mask = dropout_mask(self.rng, (self.num_embeddings,), self.dropout, W) \
            if self.training and self.dropout else None                    # (V,)
        y, cache = F.embedding_forward(idx, W, self.padding_idx, mask)
        self._push(cache)
        return y

    def backward(self, dy: Array) -> None:
        """dy (..., embedding_dim) -> None (indices have no gradient); adds to grads['weight']."""
        with self._consume() as cache:
            self._check_grad("dy", dy, tuple(cache.idx.shape) + (self.embedding_dim,),
                             self.dtype)
            grads = F.embedding_backward(dy, cache)
        self._accumulate("weight", grads["W"])
        return None


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale
    the rest by 1 / (1 - p); the identity in eval mode. Backward reuses the mask."""

    def __init__(self, p: float = 0.5, seed: Seed = None) -> None:
        super().__init__()
        self.p = check_dropout(p)
        self.rng = make_rng(seed)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Array) -> Array:
        mask = dropout_mask(self.rng, x.shape, self.p, x) if self.training and self.p else None
        self._push((tuple(x.shape), mask))
        return x if mask is None else x * mask

    def backward(self, dy: Array) -> Array:
        with self._consume() as (shape, mask):
            self._check_grad("dy", dy, shape, None)
        return dy if mask is None else dy * mask


class SoftmaxCrossEntropy(Module):
    """Cross-entropy from logits (..., C) with class-last layout; see
    ``functional.softmax_cross_entropy``."""

    def __init__(self, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = check_choice("reduction", reduction, F.losses.REDUCTIONS)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"expected label_smoothing in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Array, target: Array, weights: Optional[Array] = None) -> Array:
        """logits (..., C), integer target (...), optional weights (...) -> loss."""
        loss, cache = F.softmax_cross_entropy(logits, target, weights, self.ignore_index,
                                              self.reduction, self.label_smoothing)
        self._push(cache)
        return loss

    def backward(self, dloss: Optional[Array] = None) -> Array:
        """-> dlogits; ``dloss`` None means 1."""
        with self._consume() as cache:
            return F.softmax_cross_entropy_backward(dloss, cache)


class MSELoss(Module):
    """Mean-squared error; see ``functional.mse_loss``."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, F.losses.REDUCTIONS)

    def forward(self, pred: Array, target: Array) -> Array:
        loss, cache = F.mse_loss(pred, target, self.reduction)
        self._push(cache)
        return loss

    def backward(self, dloss: Optional[Array] = None) -> Array:
        with self._consume() as cache:
            return F.mse_loss_backward(dloss, cache)


class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse. Children are
    named '0', '1', ... as in PyTorch, so state-dict keys match (``0.weight``)."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"expected npnn modules, got {type(m).__name__} at position {i}")
            setattr(self, str(i), m)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x: Array) -> Array:
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, dy: Array) -> Array:
        for m in reversed(list(self._modules.values())):
            dy = m.backward(dy)
        return dy
