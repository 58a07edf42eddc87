"""N -> N: part-of-speech-like tagging with a bidirectional GRU.

    python examples/tag.py [--smoke]

Sentences come from a small grammar, DET (ADJ) NOUN VERB DET (ADJ) NOUN (ADV),
whose vocabulary has ambiguous words: "light", "fast", "run", "book" can be a
noun, a verb or an adjective (or adverb) depending on where they stand, so a
word alone does not give its tag. Reports token accuracy overall and on the
ambiguous tokens, for a bidirectional and a left-to-right tagger, against the
baseline of each word's most frequent tag.
"""

import argparse
import sys

import numpy as np

from _common import pad, train
from npnn.models import SequenceTagger

TAGS = ["<pad>", "DET", "ADJ", "NOUN", "VERB", "ADV"]
WORDS = {"DET": ["the", "a", "every"], "ADJ": ["big", "red", "old", "light", "fast"],
         "NOUN": ["dog", "cat", "light", "run", "book", "house"],
         "VERB": ["sees", "likes", "run", "book", "light"], "ADV": ["quickly", "fast", "today"]}
VOCAB = ["<pad>"] + sorted({w for ws in WORDS.values() for w in ws})
AMBIGUOUS = {w for w in VOCAB if sum(w in ws for ws in WORDS.values()) > 1}


def sentence(rng):
    tags = ["DET"] + (["ADJ"] if rng.random() < 0.5 else []) + ["NOUN", "VERB", "DET"] + \
        (["ADJ"] if rng.random() < 0.5 else []) + ["NOUN"] + (["ADV"] if rng.random() < 0.5 else [])
    words = [WORDS[t][rng.integers(len(WORDS[t]))] for t in tags]
    return [VOCAB.index(w) for w in words], [TAGS.index(t) for t in tags]


def sample(rng, N):
    pairs = [sentence(rng) for _ in range(N)]
    X, L = pad([p[0] for p in pairs])
    Y, _ = pad([p[1] for p in pairs])
    return X, L, Y


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="training steps (minibatches of 32)")
    p.add_argument("--smoke", action="store_true", help="10 steps (CI)")
    args = p.parse_args(argv)
    steps = 10 if args.smoke else args.steps
    rng = np.random.default_rng(0)
    X, L, Y = sample(np.random.default_rng(1), 2000)
    valid = Y > 0
    amb = valid & np.isin(X, [VOCAB.index(w) for w in AMBIGUOUS])
    # baseline: each word's most frequent tag in training-like data
    Xb, _, Yb = sample(np.random.default_rng(2), 5000)
    counts = np.zeros((len(VOCAB), len(TAGS)))
    np.add.at(counts, (Xb[Yb > 0], Yb[Yb > 0]), 1)
    base = counts.argmax(axis=1)[X]
    print(f"ambiguous words: {sorted(AMBIGUOUS)}")
    print("| tagger | token accuracy | accuracy on ambiguous tokens |\n|---|---|---|")
    print(f"| most frequent tag per word | {100 * np.mean(base[valid] == Y[valid]):.2f}% | "
          f"{100 * np.mean(base[amb] == Y[amb]):.2f}% |")
    for bidirectional in (True, False):
        model = SequenceTagger(len(VOCAB), len(TAGS), 16, 32, bidirectional=bidirectional, seed=0)

        def batch(rng):
            Xt, Lt, Yt = sample(rng, 32)
            return (Xt, Lt), Yt
        name = "bidirectional GRU" if bidirectional else "left-to-right GRU"
        train(model, batch, steps, rng, lr=1e-2, ignore_index=0, name=name)
        pred = model.predict(X, L)
        print(f"| {name} | {100 * np.mean(pred[valid] == Y[valid]):.2f}% | "
              f"{100 * np.mean(pred[amb] == Y[amb]):.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
