"""N -> 1: is a bracket string balanced? A GRU reads it and classifies its final state.

    python examples/classify.py [--smoke]

Strings of '(' and ')' of even length 6..20, half balanced, half not; the
unbalanced half has as many '(' as ')', starts with '(' and ends with ')' like a
balanced string, but closes too early somewhere in the middle, so neither
counting nor the ends give the answer: the network must track the depth. Variable lengths go
in as ``lengths`` (no sorting, packed semantics), and the classifier reads each
string's state at its own last character. Reports test accuracy, and the same
with mean pooling.
"""

import argparse
import sys

import numpy as np

from _common import pad, train
from npnn.models import SequenceClassifier

OPEN, CLOSE = 1, 2          # 0 is padding


def balanced(rng, n):
    s, depth, opens = [], 0, n // 2
    while len(s) < n:
        if opens and (depth == 0 or rng.random() < 0.5):
            s.append(OPEN); depth += 1; opens -= 1
        else:
            s.append(CLOSE); depth -= 1
    return s


def unbalanced(rng, n):
    """Same counts and same first and last characters as a balanced string, but the
    depth goes negative somewhere (needs n >= 6)."""
    while True:
        middle = list(rng.permutation([OPEN] * (n // 2 - 1) + [CLOSE] * (n // 2 - 1)))
        s = [OPEN] + middle + [CLOSE]
        if np.min(np.cumsum([1 if c == OPEN else -1 for c in s])) < 0:
            return s


def sample(rng, N, max_len=20):
    seqs, labels = [], rng.integers(0, 2, size=N)
    for y in labels:
        n = 2 * int(rng.integers(3, max_len // 2 + 1))
        seqs.append(balanced(rng, n) if y else unbalanced(rng, n))
    X, L = pad(seqs)
    return X, L, labels


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="training steps (minibatches of 64)")
    p.add_argument("--smoke", action="store_true", help="20 steps (CI)")
    args = p.parse_args(argv)
    steps = 20 if args.smoke else args.steps
    rng = np.random.default_rng(0)
    X_test, L_test, y_test = sample(np.random.default_rng(1), 2000)
    print("| pooling | test accuracy (2000 strings, lengths 6..20) |\n|---|---|")
    for pooling in ("last", "mean"):
        model = SequenceClassifier(3, 2, embed_size=8, hidden_size=32, cell="gru",
                                   pooling=pooling, seed=0)

        def batch(rng):
            X, L, y = sample(rng, 64)
            return (X, L), y
        train(model, batch, steps, rng, lr=5e-3, name=pooling)
        acc = float(np.mean(model.predict(X_test, L_test) == y_test))
        print(f"| {pooling} | {100 * acc:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
