"""Add two numbers written as text, "16+75" -> "91", with an encoder-decoder (N -> M).

    python examples/addition.py                 # four variants, 25 epochs each
    python examples/addition.py --smoke         # a few seconds, for CI

The task of "Deep Learning from Scratch 2" (Koki Saito, ch. 7), generated here
from a seed: 50,000 distinct pairs a, b of 0..999, the question "a+b" padded
with spaces to 7 characters, the answer a + b padded to 4 characters after the
start symbol "_"; 5,000 pairs are held out. All sequences have the same length,
so the model needs no padding id, no end id and no lengths (``pad=None,
eos=None``), and decoding writes 4 characters. The book's settings: LSTM,
embedding 16, hidden 128, batch 128, Adam (lr 1e-3), gradient clip 5, the
decoder starting from the encoder's h (``decoder_init='h'``). Variants: plain,
the source reversed (Sutskever et al.'s trick), reversed and "peeky" (the source
summary at every decoder input and at the output layer), and Luong's attention.
Training runs through ``fit_seq2seq`` (``npnn.fit``); the report is the exact
match on the held-out questions after every epoch.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import WORLD  # noqa: E402  (data parallel under mpiexec; rank 0 prints)
from npnn.models import Seq2Seq  # noqa: E402
from npnn.training.seq2seq import fit_seq2seq  # noqa: E402

CHARS = " +0123456789_"
START = CHARS.index("_")
VARIANTS = {
    "plain": {"context": "init"},
    "reversed": {"context": "init", "reverse_source": True},
    "reversed+peeky": {"context": "concat", "output_context": True, "reverse_source": True},
    "luong": {"context": "luong", "attention": "dot", "scale": 1.0},
}


def make_data(n=50000, n_test=5000, seed=1984):
    """(train, test) lists of (question, answer): "16+75  " and "_91  " (fixed widths)."""
    codes = np.random.default_rng(seed).choice(1000 * 1000, size=n, replace=False)
    pairs = [(f"{a}+{b}".ljust(7), "_" + str(a + b).ljust(4))
             for a, b in zip(*np.divmod(codes, 1000))]
    return pairs[n_test:], pairs[:n_test]


def encode(pairs):
    """-> questions (N, 7) and answers without the start symbol (N, 4), as ids of CHARS."""
    ids = {c: i for i, c in enumerate(CHARS)}
    return (np.array([[ids[c] for c in q] for q, _ in pairs]),
            np.array([[ids[c] for c in a[1:]] for _, a in pairs]))


def train(options, train_pairs, test_pairs, epochs, hidden, seed=0, batch=128, log=print):
    """-> the model and its exact match on the test pairs after each epoch."""
    model = Seq2Seq(len(CHARS), len(CHARS), 16, hidden, cell="lstm", pad=None, bos=START,
                    eos=None, decoder_init="h", seed=seed, **options)
    state = fit_seq2seq(model, encode(train_pairs), encode(test_pairs), epochs=epochs,
                        batch_size=batch, lr=1e-3, clip=5.0, rng=np.random.default_rng(seed),
                        log=log, world=WORLD)
    return model, [r["test_exact_match"] for r in state.history]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--seed", type=int, default=0, help="of the weights and the order")
    p.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    args = p.parse_args(argv)
    n, n_test = 50000, 5000
    if args.smoke:
        n, n_test, args.epochs, args.hidden = 1200, 200, 1, 16
    train_pairs, test_pairs = make_data(n, n_test)
    print(f"{len(train_pairs)} training / {len(test_pairs)} test questions, e.g. "
          f"{train_pairs[0][0]!r} -> {train_pairs[0][1][1:]!r}")
    results = {}
    for name in args.variants.split(","):
        model, accs = train(VARIANTS[name], train_pairs, test_pairs, args.epochs, args.hidden,
                            args.seed, log=lambda line, name=name: print(f"  [{name}] {line}"))
        results[name] = accs
        q = encode(test_pairs[:1])[0]
        answer = "".join(CHARS[i] for i in model.greedy_decode(q, max_len=4)[0])
        print(f"{name}: exact match {100 * accs[-1]:.1f}% after {args.epochs} epochs "
              f"({test_pairs[0][0].strip()!r} -> {answer.strip()!r})")
    print("| variant | exact match (held-out) | epochs |\n|---|---|---|")
    for name, accs in results.items():
        print(f"| {name} | {100 * accs[-1]:.1f}% | {len(accs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
