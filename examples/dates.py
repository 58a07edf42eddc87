"""Translate human-written dates into ISO dates with an encoder-decoder (N -> M).

    python examples/dates.py                  # attention vs no attention, ~20k dates
    python examples/dates.py --smoke          # a few seconds, for CI

The data is generated with ``datetime`` from a seed, no download: a date
between 1950 and 2049 written in one of many formats ("5 March 2021",
"Fri, Mar 5 2021", "05.03.2021", "the 5th of march, 2021", "05-MAR-21", ...)
is the source, its ISO form "2021-03-05" the target. Test dates are calendar
days never seen in training. Characters are the tokens. The report is the
exact-match accuracy (whole date right) with attention in Bahdanau's form
('attention') and in Luong's ('luong'), and with the context only fed at every
step ('concat') or as the initial state ('init'). Training runs through
``npnn.training.fit_seq2seq`` (``npnn.fit`` with teacher forcing, clipping
and batched greedy evaluation after every epoch).
"""

import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import WORLD  # noqa: E402  (data parallel under mpiexec; rank 0 prints)
from npnn.training.data import Vocab  # noqa: E402
from npnn.models import Seq2Seq  # noqa: E402
from npnn.training.seq2seq import fit_seq2seq  # noqa: E402

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FIRST, LAST = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def human(d, style):
    """One of 14 human formats of date ``d``."""
    M, m3, W = MONTHS[d.month - 1], MONTHS[d.month - 1][:3], DAYS[d.weekday()]
    y2 = f"{d.year % 100:02d}"
    return [
        f"{d.day} {M} {d.year}",
        f"{d.day} {m3} {d.year}",
        f"{M} {d.day}, {d.year}",
        f"{m3} {d.day} {d.year}",
        f"{W}, {M} {d.day}, {d.year}",
        f"{W[:3]}, {m3} {d.day} {d.year}",
        f"{d.day:02d}.{d.month:02d}.{d.year}",
        f"{d.year}/{d.month:02d}/{d.day:02d}",
        f"the {ordinal(d.day)} of {M.lower()}, {d.year}",
        f"{M.lower()} {d.day} {d.year}",
        f"{d.day:02d}-{m3.upper()}-{y2}",
        f"{ordinal(d.day)} {M} {d.year}",
        f"{W.upper()} {d.day:02d} {m3.upper()} {d.year}",
        f"{d.year}, {M} {d.day}",
    ][style]


N_STYLES = 14


def make_data(n_train, n_test, seed):
    """(train, test) lists of (human, iso) pairs; test days are disjoint from training days."""
    rng = np.random.default_rng(seed)
    days = (LAST - FIRST).days + 1
    perm = rng.permutation(days)
    test_days, train_days = perm[:days // 10], perm[days // 10:]

    def sample(pool, n):
        out = []
        for k in rng.choice(pool, size=n):
            d = FIRST + datetime.timedelta(days=int(k))
            out.append((human(d, int(rng.integers(N_STYLES))), d.isoformat()))
        return out
    return sample(train_days, n_train), sample(test_days, n_test)


def encode(pairs, src_vocab, tgt_vocab):
    """Padded id arrays: src (N, S), lengths (N,), tgt_in (N, T) and tgt_out (N, T)."""
    S = max(len(h) for h, _ in pairs)
    T = max(len(iso) for _, iso in pairs) + 1
    pad, bos, eos = tgt_vocab[PAD], tgt_vocab[BOS], tgt_vocab[EOS]
    src = np.full((len(pairs), S), src_vocab[PAD])
    tgt = np.full((len(pairs), T), pad)
    lengths = np.empty(len(pairs), dtype=np.int64)
    for i, (h, iso) in enumerate(pairs):
        src[i, :len(h)] = src_vocab[list(h)]
        lengths[i] = len(h)
        tgt[i, :len(iso)] = tgt_vocab[list(iso)]
        tgt[i, len(iso)] = eos
    tgt_in = np.concatenate([np.full((len(pairs), 1), bos), tgt[:, :-1]], axis=1)
    return src, lengths, tgt_in, tgt


def train(context, train_pairs, test_pairs, vocabs, epochs, batch, hidden, lr, seed, log=print):
    """A bidirectional GRU encoder-decoder trained through fit_seq2seq -> (model, the
    exact match on the test dates after the last epoch)."""
    src_vocab, tgt_vocab = vocabs
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), embed_size=32, hidden_size=hidden,
                    bidirectional=True, context=context, pad=tgt_vocab[PAD], bos=tgt_vocab[BOS],
                    eos=tgt_vocab[EOS], seed=seed)
    src, lengths, _, tgt = encode(train_pairs, src_vocab, tgt_vocab)
    t_src, t_lengths, _, t_tgt = encode(test_pairs, src_vocab, tgt_vocab)
    state = fit_seq2seq(model, (src, tgt, lengths), (t_src, t_tgt, t_lengths), epochs=epochs,
                        batch_size=batch, lr=lr, clip=1.0, rng=np.random.default_rng(seed),
                        eval_batch=500, log=lambda line: log(f"  [{context}] {line}"),
                        world=WORLD)
    return model, state.history[-1]["test_exact_match"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", type=int, default=20000, help="training dates")
    p.add_argument("--test", type=int, default=2000, help="test dates (days unseen in training)")
    p.add_argument("--epochs", type=int, default=8, help="epochs")
    p.add_argument("--batch", type=int, default=64, help="dates per minibatch")
    p.add_argument("--hidden", type=int, default=64, help="hidden size of encoder and decoder")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="of the data, the weights and the order")
    p.add_argument("--contexts", default="attention,luong,concat,init",
                   help="how the decoder sees the source, comma-separated")
    p.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.train, args.test, args.epochs, args.hidden, args.batch = 256, 64, 1, 16, 32
    train_pairs, test_pairs = make_data(args.train, args.test, args.seed)
    chars = sorted({c for h, _ in train_pairs + test_pairs for c in h})
    vocabs = (Vocab(chars, reserved_tokens=[PAD]),
              Vocab(list("0123456789-"), reserved_tokens=[PAD, BOS, EOS]))
    print(f"{len(train_pairs)} training / {len(test_pairs)} test dates (test days unseen), "
          f"e.g. {train_pairs[0][0]!r} -> {train_pairs[0][1]!r}")
    results = {}
    for context in args.contexts.split(","):
        model, acc = train(context, train_pairs, test_pairs, vocabs, args.epochs, args.batch,
                           args.hidden, args.lr, args.seed)
        results[context] = acc
        example = test_pairs[0][0]
        src, lengths, _, _ = encode([test_pairs[0]], *vocabs)
        beam = "".join(vocabs[1].to_tokens(model.beam_decode(src[0], lengths[0], 3, 12)))
        print(f"{context}: exact match on held-out dates {100 * acc:.2f}%  "
              f"({example!r} -> beam {beam!r})")
    print("| context | exact match (held-out) |\n|---|---|")
    for context, acc in results.items():
        print(f"| {context} | {100 * acc:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
