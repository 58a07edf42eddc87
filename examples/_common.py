"""Shared by the examples: training on freshly sampled minibatches, through npnn.fit.

Every example also runs data-parallel: ``mpiexec -n 4 python examples/classify.py``.
Each process draws every global minibatch from the shared generator and keeps its
rows (``WORLD.rows``); npnn.fit averages the gradients. Every process then computes
the same results; rank 0 alone prints them."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npnn  # noqa: E402
from npnn.training.distributed import world  # noqa: E402
from npnn.training.loop import fit  # noqa: E402
from npnn.optim import Adam  # noqa: E402

WORLD = world()        # the processes of mpiexec, or this one alone
if WORLD.rank:
    sys.stdout = open(os.devnull, "w")


def train(model, sample, steps, rng, lr=5e-3, ignore_index=-100, clip=1.0, name=""):
    """Adam and cross-entropy on ``steps`` minibatches ``sample(rng)`` -> (inputs tuple,
    targets), every array batch-first, as one epoch of ``npnn.fit`` (each process
    keeping its rows); returns its TrainState."""
    def batches(r):
        for _ in range(steps):
            inputs, targets = sample(r)
            rows = WORLD.rows(len(targets))
            yield tuple(a[rows] for a in inputs), targets[rows]
    return fit(model, npnn.SoftmaxCrossEntropy(ignore_index=ignore_index), batches,
               Adam(model, lr=lr), epochs=1, clip=clip, rng=rng,
               log=lambda line: print(f"  [{name}] {line}"), world=WORLD)


def pad(seqs, value=0):
    """List of id lists -> (N, T) array padded with ``value`` and lengths (N,)."""
    lengths = np.array([len(s) for s in seqs])
    out = np.full((len(seqs), lengths.max()), value)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lengths
