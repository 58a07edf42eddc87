"""Shared by the examples: a minibatch training loop for npnn models."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npnn  # noqa: E402
from npnn.optim import Adam, clip_grad_norm  # noqa: E402


def fit(model, batches, steps, lr=5e-3, ignore_index=-100, clip=1.0):
    """Adam on ``batches()`` -> (inputs tuple, targets); returns the last 20 losses' mean."""
    opt, ce = Adam(model, lr=lr), npnn.SoftmaxCrossEntropy(ignore_index=ignore_index)
    losses = []
    for _ in range(steps):
        inputs, targets = batches()
        losses.append(float(ce(model(*inputs), targets)))
        model.zero_grad()
        model.backward(ce.backward())
        clip_grad_norm(model, clip)
        opt.step()
    return float(np.mean(losses[-20:]))


def pad(seqs, value=0):
    """List of id lists -> (N, T) array padded with ``value`` and lengths (N,)."""
    lengths = np.array([len(s) for s in seqs])
    out = np.full((len(seqs), lengths.max()), value)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lengths
