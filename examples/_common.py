"""Shared by the examples: training on freshly sampled minibatches, through npnn.fit."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npnn  # noqa: E402
from npnn.fit import fit  # noqa: E402
from npnn.optim import Adam  # noqa: E402


def train(model, sample, steps, rng, lr=5e-3, ignore_index=-100, clip=1.0, name=""):
    """Adam and cross-entropy on ``steps`` minibatches ``sample(rng)`` -> (inputs tuple,
    targets), as one epoch of ``npnn.fit.fit``; returns its TrainState."""
    return fit(model, npnn.SoftmaxCrossEntropy(ignore_index=ignore_index),
               lambda r: (sample(r) for _ in range(steps)), Adam(model, lr=lr), epochs=1,
               clip=clip, rng=rng, log=lambda line: print(f"  [{name}] {line}"))


def pad(seqs, value=0):
    """List of id lists -> (N, T) array padded with ``value`` and lengths (N,)."""
    lengths = np.array([len(s) for s in seqs])
    out = np.full((len(seqs), lengths.max()), value)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lengths
