"""Elementwise activations and their derivatives, stable for any finite input.

    (1) sigmoid(a) = 1 / (1 + exp(-a)) = (1 + tanh(a / 2)) / 2
    (2) tanh(a)
    (3) relu(a)    = max(a, 0)
    (4) log_softmax(a)_k = a_k - m - log sum_j exp(a_j - m),   m = max_j a_j
    (5) softmax(a) = exp(log_softmax(a))

Each derivative is written in terms of the activation's *output* y, which is
what the recurrent ops keep in their caches:

    sigmoid'(a) = y (1 - y),   tanh'(a) = 1 - y^2,   relu'(a) = [y > 0]

Sigmoid goes through tanh (1): ``exp(-a)`` overflows for a < -709 in float64
(and a < -88 in float32), tanh saturates cleanly to +-1 and costs one ufunc
call less than the exp form.
"""

from typing import Optional

from .._typing import Array
from ..backend import get_array_module


def sigmoid(a: Array, out: Optional[Array] = None) -> Array:
    """(1) Logistic sigmoid, finite for every finite ``a``; ``out`` may alias ``a``."""
    xp = get_array_module(a)
    out = xp.multiply(a, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def sigmoid_backward(dy: Array, y: Array) -> Array:
    """dL/da from dL/dy and the output y = sigmoid(a)."""
    return dy * y * (1 - y)


def tanh(a: Array, out: Optional[Array] = None) -> Array:
    """(2) Hyperbolic tangent."""
    return get_array_module(a).tanh(a, out=out)


def tanh_backward(dy: Array, y: Array) -> Array:
    """dL/da from dL/dy and the output y = tanh(a)."""
    return dy * (1 - y * y)


def relu(a: Array, out: Optional[Array] = None) -> Array:
    """(3) Rectified linear unit."""
    return get_array_module(a).maximum(a, 0, out=out)


def relu_backward(dy: Array, y: Array) -> Array:
    """dL/da from dL/dy and the output y = relu(a) (subgradient 0 at a = 0)."""
    return dy * (y > 0)


def log_softmax(a: Array, axis: int = -1) -> Array:
    """(4) Log-softmax along ``axis``, shifted by the max so exp never overflows."""
    xp = get_array_module(a)
    shifted = a - a.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(a: Array, axis: int = -1) -> Array:
    """(5) Softmax along ``axis``."""
    xp = get_array_module(a)
    return xp.exp(log_softmax(a, axis=axis))


def softmax_backward(dy: Array, y: Array, axis: int = -1) -> Array:
    """dL/da from dL/dy and y = softmax(a): y * (dy - sum(dy * y))."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))
