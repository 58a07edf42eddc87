"""The ``npnn`` command line: ``npnn train`` and ``npnn generate``.

    npnn train                          the default model on the default corpus, ~3 minutes
    npnn train --text book.txt --cell gru --hidden 512 --epochs 20 --out runs/book
    npnn train --resume runs/book       continue exactly where it stopped
    npnn generate runs/book --prefix "It was" -n 200 --strategy sample --temperature 0.8
    npnn analyze --T 100                gradient norms through time: RNN vs LSTM vs GRU
"""

import argparse
import sys

from .backend import get_backend
from .train import CheckpointError, TrainConfig, Trainer, load_model

DEFAULT_OUT = "runs/default"


def _train_parser(sub):
    p = sub.add_parser("train", help="train a language model (default: 3 minutes on the "
                                     "embedded Python-source corpus)")
    d = TrainConfig()
    p.add_argument("--text", help="UTF-8 text file (default: the embedded corpus)")
    p.add_argument("--preprocess", choices=("none", "timemachine"),
                   help="'timemachine': d2l's letters-and-space cleaning")
    p.add_argument("--tokens", choices=("char", "word"), help=f"default {d.tokens}")
    p.add_argument("--min-freq", type=int, dest="min_freq")
    p.add_argument("--max-tokens", type=int, dest="max_tokens",
                   help="use only the first tokens of the text (d2l's Time Machine: 10000)")
    p.add_argument("--val-fraction", type=float, dest="val_fraction",
                   help=f"held-out share of the text, default {d.val_fraction:g}")
    p.add_argument("--cell", choices=("rnn", "lstm", "gru"), help=f"default {d.cell}")
    p.add_argument("--hidden", type=int, help=f"hidden size, default {d.hidden}")
    p.add_argument("--layers", type=int, help=f"default {d.layers}")
    p.add_argument("--embedding", type=int, help=f"embedding size, 0 for one-hot; "
                                                 f"default {d.embedding}")
    p.add_argument("--dropout", type=float)
    p.add_argument("--tie", action="store_const", const=True, help="tie embedding and decoder")
    p.add_argument("--batch", type=int, help=f"default {d.batch}")
    p.add_argument("--steps", type=int, help=f"BPTT steps per batch, default {d.steps}")
    p.add_argument("--iterator", choices=("sequential", "random"))
    p.add_argument("--epochs", type=int, help="number of epochs (the run ends at the first of "
                                              "--epochs and --minutes)")
    p.add_argument("--minutes", type=float, help=f"time budget, default {d.minutes:g}")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "adagrad", "rmsprop"))
    p.add_argument("--lr", type=float, help=f"default {d.lr:g}")
    p.add_argument("--clip", type=float, help=f"global gradient-norm clip, default {d.clip:g}")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", choices=("float32", "float64"))
    p.add_argument("--backend", choices=("numpy", "cupy"))
    p.add_argument("--sample-every", type=int, dest="sample_every")
    p.add_argument("--prefix", help="prompt of the samples shown during training")
    p.add_argument("--out", help=f"run directory, default {DEFAULT_OUT}")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _generate_parser(sub):
    p = sub.add_parser("generate", help="generate text with a trained model")
    p.add_argument("dir", help="run directory (holding checkpoint.npz)")
    p.add_argument("--prefix", default=None, help="text to continue (default: 'def ')")
    p.add_argument("-n", type=int, default=200, help="tokens to generate")
    p.add_argument("--strategy", choices=("greedy", "sample", "beam"), default="sample")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, dest="top_k")
    p.add_argument("--top-p", type=float, dest="top_p")
    p.add_argument("--beam-width", type=int, default=4, dest="beam_width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npnn", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _generate_parser(sub)
    sub.add_parser("analyze", add_help=False,
                   help="why gradients vanish: gradient norms and step-Jacobian spectra of "
                        "RNN, LSTM, GRU (npnn analyze --help)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["analyze"]:          # its own parser (npnn.analysis) takes the rest
        from .analysis import main as analyze_main
        return analyze_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        return _generate(args)
    except (CheckpointError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"npnn {args.command}: error: {e}", file=sys.stderr)
        return 2


def _train(args):
    fields = {f for f in TrainConfig.__dataclass_fields__}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    progress = False if args.no_progress else None
    if args.resume:
        trainer = Trainer.resume(args.resume, progress=progress, **given)
    else:
        out = args.out or DEFAULT_OUT
        config = TrainConfig(**given)
        if args.epochs is not None and args.minutes is None:
            config.minutes = None             # --epochs alone: no time limit
        trainer = Trainer(config, out, progress=progress)
    trainer.fit()
    print("\n--- generated text ---")
    print(trainer.sample(n=trainer.config.sample_length * 2))
    history = trainer.history
    if history:
        last = history[-1]
        print(f"--- after {last['epoch']} epochs: train perplexity {last['train_ppl']:.3f}, "
              f"validation perplexity {last['val_ppl']:.3f}, {last['tokens_per_s']:,.0f} tokens/s")
    print(f"--- checkpoint: {trainer.out_dir}/checkpoint.npz; more text: npnn generate "
          f"{trainer.out_dir}")
    return 130 if trainer.interrupted else 0


def _generate(args):
    get_backend(args.backend)
    model = load_model(args.dir, args.backend)
    prefix = args.prefix if args.prefix is not None else "def "
    print(model.generate(prefix, args.n, strategy=args.strategy, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, beam_width=args.beam_width,
                         seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
