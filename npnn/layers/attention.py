"""Attention layers over encoder outputs, wrapping ``functional/attention.py``.

``context = layer(q, K, V, mask=None)`` with q (N, E) for one decoder step or
(N, L, E) for L queries, K (N, S, Ek), V (N, S, Ev), mask (N, S) True at valid
keys; ``layer.weights`` holds the last attention weights (for plotting).
``dq, dK, dV = layer.backward(dcontext)``.

A decoder that attends once per step splits the call so that whatever depends
only on the keys is done once per sequence:

    keys = layer.project(K)                         # once
    c_t = layer.attend(q_t, keys, V, mask)          # every step
    ...
    dq_t, dkeys_t, dV_t = layer.backward(dc_t)      # every step, in reverse
    dK = layer.project_backward(sum_t dkeys_t)      # once, last

(the identity for dot-product attention; the key half K W_k^T of the
additive score for additive attention).
"""

import math

from .. import functional as F
from .base import Module, check_dtype, check_positive_int, make_rng


class _Attention(Module):
    weights = None

    def _split(self, q):
        return (q[:, None, :], True) if q.ndim == 2 else (q, False)

    def project(self, K):
        """What the scores need of the keys alone; the keys themselves here."""
        return K

    def project_backward(self, dkeys):
        return dkeys

    def attend(self, q, keys, V, mask=None):
        """One attention call on keys from ``project``."""
        return self.forward(q, keys, V, mask)


class DotAttention(_Attention):
    """Dot-product attention; ``scale=None`` is 1/sqrt(E) (scaled), 1.0 Luong's dot."""

    def __init__(self, scale=None):
        super().__init__()
        self.scale = scale

    def extra_repr(self):
        return "scaled" if self.scale is None else f"scale={self.scale}"

    def forward(self, q, K, V, mask=None):
        q3, single = self._split(q)
        c, self.weights, cache = F.dot_attention_forward(q3, K, V, mask, self.scale)
        self._push((cache, single))
        return c[:, 0] if single else c

    def backward(self, dc):
        with self._consume() as (cache, single):
            dq, dK, dV = F.dot_attention_backward(dc[:, None, :] if single else dc, cache)
        return (dq[:, 0] if single else dq), dK, dV


class AdditiveAttention(_Attention):
    """Bahdanau's additive attention with parameters ``W_q`` (A, E), ``W_k`` (A, Ek),
    ``w_v`` (A,), initialised like PyTorch's bias-free Linear layers."""

    def __init__(self, query_size, key_size, hidden_size, dtype="float32", seed=None):
        super().__init__()
        E = check_positive_int("query_size", query_size)
        Ek = check_positive_int("key_size", key_size)
        A = check_positive_int("hidden_size", hidden_size)
        dtype = check_dtype(dtype)
        rng = make_rng(seed)
        for name, shape, fan_in in (("W_q", (A, E), E), ("W_k", (A, Ek), Ek), ("w_v", (A,), A)):
            k = 1.0 / math.sqrt(fan_in)
            self._add_param(name, rng.uniform(-k, k, shape).astype(dtype))

    def extra_repr(self):
        A, E = self.params["W_q"].shape
        return f"query_size={E}, key_size={self.params['W_k'].shape[1]}, hidden_size={A}"

    def forward(self, q, K, V, mask=None):
        q3, single = self._split(q)
        p = self.params
        c, self.weights, cache = F.additive_attention_forward(q3, K, V, p["W_q"], p["W_k"],
                                                              p["w_v"], mask)
        self._push(("full", cache, single))
        return c[:, 0] if single else c

    def project(self, K):
        """P = K W_k^T (N, S, A), the key half of the additive score."""
        P, cache = F.linear_forward(K, self.params["W_k"])
        self._push(("project", cache, None))
        return P

    def attend(self, q, P, V, mask=None):
        q3, single = self._split(q)
        c, self.weights, cache = F.additive_attention_projected_forward(
            q3, P, V, self.params["W_q"], self.params["w_v"], mask)
        self._push(("attend", cache, single))
        return c[:, 0] if single else c

    def backward(self, dc):
        """dq, dK (dP after ``attend``), dV; the parameters' gradients accumulate."""
        with self._consume() as (kind, cache, single):
            if kind == "project":
                raise RuntimeError("AdditiveAttention.backward() reached the key projection: "
                                   "backpropagate it with project_backward()")
            dc = dc[:, None, :] if single else dc
            backward = (F.additive_attention_backward if kind == "full"
                        else F.additive_attention_projected_backward)
            dq, dK, dV, grads = backward(dc, cache)
        for k, g in grads.items():
            self._accumulate(k, g)
        return (dq[:, 0] if single else dq), dK, dV

    def project_backward(self, dP):
        """dP (N, S, A), summed over every ``attend`` -> dK; adds to grads['W_k']."""
        with self._consume() as (kind, cache, _):
            if kind != "project":
                raise RuntimeError("AdditiveAttention.project_backward() called while attention "
                                   "steps are still to be backpropagated")
            dK, grads = F.linear_backward(dP, cache)
        self._accumulate("W_k", grads["W"])
        return dK
