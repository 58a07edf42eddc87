"""1 -> N: write the English name of a number from a vector, with a conditioned decoder.

    python examples/conditional.py [--smoke]

The condition is a 20-dimensional vector (one-hot tens digit, one-hot units
digit) of a number 0..99; the decoder writes its name character by character
("forty two", "seventeen"). 15 numbers are held out: writing their names needs
the composition the decoder learned from the others. The two schemes of the
seeds: the vector as the decoder's initial state, or fed with every input.
Reports exact match on the training and the held-out numbers.
"""

import argparse
import sys

import numpy as np

from _common import pad, train
from npnn.models import ConditionalDecoder

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
CHARS = ["<pad>", "<bos>", "<eos>"] + sorted(set("".join(ONES + TENS) + " "))


def name(n):
    if n < 20:
        return ONES[n]
    return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])


def condition(numbers):
    c = np.zeros((len(numbers), 20), dtype=np.float32)
    c[np.arange(len(numbers)), np.asarray(numbers) // 10] = 1
    c[np.arange(len(numbers)), 10 + np.asarray(numbers) % 10] = 1
    return c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="training steps (minibatches of 32)")
    p.add_argument("--smoke", action="store_true", help="10 steps (CI)")
    args = p.parse_args(argv)
    steps = 10 if args.smoke else args.steps
    rng = np.random.default_rng(0)
    held_out = sorted(rng.choice(np.arange(21, 100), size=15, replace=False).tolist())
    numbers = [n for n in range(100) if n not in held_out]
    print(f"held-out numbers: {held_out}")
    print("| scheme | exact match, training numbers | exact match, held-out numbers |\n"
          "|---|---|---|")
    for scheme in ("init", "input"):
        model = ConditionalDecoder(20, len(CHARS), 16, 64, "gru", scheme, seed=0)

        def batch(rng):
            nums = rng.choice(numbers, size=32)
            tgt, _ = pad([[CHARS.index(ch) for ch in name(n)] + [2] for n in nums])
            tgt_in = np.concatenate([np.ones((32, 1), dtype=tgt.dtype), tgt[:, :-1]], axis=1)
            return (condition(nums), tgt_in), tgt
        train(model, batch, steps, rng, lr=1e-2, ignore_index=0, name=scheme)

        def exact(nums):
            outs = model.generate(condition(nums), max_len=20)
            return np.mean(["".join(CHARS[i] for i in o) == name(n) for o, n in zip(outs, nums)])
        print(f"| {scheme} | {100 * exact(numbers):.1f}% | {100 * exact(held_out):.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
