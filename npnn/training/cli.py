"""The npnn command line: train a language model, generate text, see why gradients vanish.

    npnn train                          the default model on the default corpus, ~3 minutes
    npnn train --text book.txt --cell gru --hidden 512 --epochs 20 --out runs/book
    npnn train --resume runs/book       continue exactly where it stopped
    npnn generate runs/book --prefix "It was" -n 200 --strategy sample --temperature 0.8
    npnn analyze --T 100                gradient norms through time: RNN vs LSTM vs GRU

A mistake in the arguments, or a problem with a file they name, is one line on
stderr and exit status 2. A training run stopped by Ctrl-C, SIGTERM or SIGHUP saves its
checkpoint and exits with 130, 143 or 129.

Under an MPI launcher (``mpiexec -n 8 npnn train ...``, ``srun``, ``python -m mpi4py
-m npnn train``) ``npnn train`` trains data-parallel over the processes
(``npnn.distributed``); only rank 0 prints. An error every process meets (a
setting, a file, divergence) is rank 0's one line and exit status 2 everywhere;
one that a single process meets ends the whole job (MPI_Abort, status 2).
"""

import argparse
import os
import secrets
import sys
import time

from .._version import __version__
from .._checks import DTYPES, int_at_least, positive_number, probability
from ..backend import BACKENDS, auto_threads, blas_threads, get_backend
from .checkpoint import CheckpointError, read_checkpoint
from .config import ITERATORS, PREPROCESS, ConfigError, TrainConfig
from . import distributed
from .data import TOKEN_MODES, Vocab
from ..functional.bptt_policy import check_memory
from ..functional.registry import INIT_CHOICES, cell_choices
from ..optim import OPTIMIZERS
from .rundir import RunBusyError, check_folder
from .trainer import Trainer, default_prefix, load_model

DEFAULT_OUT = "runs/default"
_STARTED = [None]
USER_ERRORS = (CheckpointError, RunBusyError, FloatingPointError, OSError, ValueError,
               RuntimeError)


class UsageError(Exception):
    """A mistake in the arguments; the message is one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):             # one line, not usage + error
        raise UsageError(f"{message} (see {self.prog} --help)")


def _type(rule, convert):
    """An argparse type: ``convert`` the text, then check it with a settings rule of
    ``npnn._checks``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            rule(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value
    parse.__name__ = convert.__name__
    return parse


def _bptt_memory(text):
    """--bptt-memory: 'sqrt' or a positive integer of slots."""
    try:
        return check_memory(text if text == "sqrt" else int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'sqrt', "
                                         f"got {text!r}") from None


# -- npnn train --------------------------------------------------------------------
def _train_parser(sub):
    d = TrainConfig()
    p = sub.add_parser("train", help="train a language model (default: 3 minutes on the "
                                     "embedded Python-source corpus)",
                       description="Train a character- or word-level language model; the "
                                   "checkpoint is saved after every epoch and when the run "
                                   "stops (time budget, Ctrl-C, SIGTERM, SIGHUP).")
    a = p.add_argument
    a("--text", help="UTF-8 text file (default: the embedded corpus of Python source)")
    a("--preprocess", choices=PREPROCESS,
      help=f"'timemachine': d2l's letters-and-space cleaning (default: {d.preprocess})")
    a("--tokens", choices=TOKEN_MODES, help=f"(default: {d.tokens})")
    a("--min-freq", type=int, dest="min_freq",
      help=f"drop tokens seen fewer times (default: {d.min_freq})")
    a("--max-tokens", type=int, dest="max_tokens",
      help="use only the first tokens of the text, d2l's Time Machine: 10000 (default: all)")
    a("--val-fraction", type=float, dest="val_fraction",
      help=f"held-out share of the text, in [0, 1) (default: {d.val_fraction:g})")
    a("--cell", choices=cell_choices(), help=f"(default: {d.cell})")
    a("--hidden", type=int, help=f"hidden size (default: {d.hidden})")
    a("--layers", type=int, help=f"stacked recurrent layers (default: {d.layers})")
    a("--embedding", type=int,
      help=f"embedding size, 0 for one-hot inputs (default: {d.embedding})")
    a("--dropout", type=float, help=f"between layers and before the decoder, in [0, 1) "
                                    f"(default: {d.dropout:g})")
    a("--embedding-dropout", type=float, dest="embedding_dropout", metavar="P",
      help="drop whole words: each batch, each row of the embedding with this probability, in "
           f"[0, 1) (AWD-LSTM's embedding dropout; default: {d.embedding_dropout:g})")
    a("--recurrent-dropout", type=float, dest="recurrent_dropout", metavar="P",
      help="dropout on the recurrent state where it enters the next step, one mask per "
           f"sequence (Gal and Ghahramani), in [0, 1) (default: {d.recurrent_dropout:g})")
    a("--zoneout", type=float, metavar="P",
      help="each unit keeps its previous value with this probability at each step, in "
           f"[0, 1) (Krueger et al.; eval: the expectation; default: {d.zoneout:g})")
    a("--weight-drop", type=float, dest="weight_drop", metavar="P",
      help="DropConnect on the recurrent weight matrix, one mask per batch, in [0, 1) "
           f"(AWD-LSTM's weight-drop; default: {d.weight_drop:g})")
    a("--tie", action="store_const", const=True,
      help="tie the embedding and the decoder (needs --embedding equal to --hidden)")
    a("--forget-bias", type=float, dest="forget_bias",
      help="added to the forget gate's bias (bias_ih) of the LSTM cells, e.g. 1 (default: "
           "none)")
    a("--init", choices=INIT_CHOICES,
      help="initialiser of every weight matrix, e.g. orthogonal (per gate block) (default: "
           "PyTorch's uniform)")
    a("--batch", type=int, help=f"sequences per batch (default: {d.batch})")
    a("--steps", type=int, help=f"BPTT steps per batch (default: {d.steps})")
    a("--bptt-memory", type=_bptt_memory, dest="bptt_memory",
      help="keep states for the backward in this many step slots, or 'sqrt', and recompute "
           "the rest: the same gradients in bounded memory, for long --steps (default: keep "
           "everything)")
    a("--iterator", choices=ITERATORS,
      help=f"d2l's two minibatch schemes (default: {d.iterator})")
    a("--epochs", type=int, help="epochs in all; the run ends at the first of --epochs and "
                                 "--minutes (default: no limit)")
    a("--minutes", type=float,
      help=f"time budget of this session, in minutes (default: {d.minutes:g}; with --epochs "
           "and without --minutes: no time limit)")
    a("--optimizer", choices=tuple(OPTIMIZERS),
      help=f"(default: {d.optimizer})")
    a("--lr", type=float, help=f"learning rate (default: {d.lr:g})")
    a("--clip", type=float, help=f"global gradient-norm clip (default: {d.clip:g})")
    a("--seed", type=int, help=f"of the initial weights, data order and dropout "
                               f"(default: {d.seed})")
    a("--dtype", choices=DTYPES, help=f"(default: {d.dtype})")
    a("--backend", choices=BACKENDS, help=f"(default: {d.backend})")
    a("--sample-every", type=int, dest="sample_every",
      help=f"show a sample after the first epoch, then every so many epochs (default: "
           f"{d.sample_every})")
    a("--sample-length", type=int, dest="sample_length",
      help=f"tokens of each sample (default: {d.sample_length})")
    a("--prefix", help="prompt of the samples (default: the text's first characters; 'def ' "
                       "for the default corpus)")
    a("--out", help=f"run folder (default: {DEFAULT_OUT})")
    a("--resume", metavar="DIR", help="continue the run saved in DIR; only --epochs, "
                                      "--minutes, --backend and the samples' flags may be "
                                      "given with it (default: start a new run)")
    a("--overwrite", action="store_true",
      help="start a new run in a folder that holds a checkpoint, replacing it")
    a("--allow-changed-text", action="store_true", dest="allow_changed_text",
      help="resume although the text changed since the run started")
    a("--no-progress", action="store_true", help="no progress bar")
    return p


def _same_folder(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _train(args):
    given = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__
             if getattr(args, k) is not None}
    if "epochs" in given and "minutes" not in given:
        given["minutes"] = None                   # --epochs alone: no time limit
    progress = False if args.no_progress else None
    if args.resume:
        if args.out is not None and not _same_folder(args.out, args.resume):
            raise UsageError(f"argument --out: {args.out} is not the folder of the run given to "
                             f"--resume ({args.resume}); a resumed run continues in its own "
                             "folder: drop --out")
        if args.overwrite:
            raise UsageError("argument --overwrite: not allowed with --resume")
    elif args.allow_changed_text:
        raise UsageError("argument --allow-changed-text: only with --resume")
    world = distributed.world()
    if args.resume:
        trainer = Trainer.resume(args.resume, progress=progress,
                                 allow_changed_text=args.allow_changed_text, world=world,
                                 started=_STARTED[0], **given)
    else:
        trainer = Trainer(TrainConfig(**given), args.out or DEFAULT_OUT, progress=progress,
                          overwrite=args.overwrite, world=world, started=_STARTED[0])
    with trainer:
        trainer.fit()
    if trainer.nothing_to_do or world.rank:
        return 0 if trainer.nothing_to_do else _exit_status(trainer)
    print("\n--- generated text ---")
    print(trainer.sample(n=trainer.config.sample_length * 2))
    last = trainer.last_evaluation()        # what the time-budget line above says too
    if last is not None:
        print(f"--- {last}")
    print(f"--- checkpoint: {trainer.out_dir}/checkpoint.npz; more text: npnn generate "
          f"{trainer.out_dir}")
    return _exit_status(trainer)


def _exit_status(trainer):
    return {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}.get(trainer.state.stopped, 0)


# -- npnn generate -----------------------------------------------------------------
SAMPLING = ("temperature", "top_k", "top_p", "seed")


def _generate_parser(sub):
    p = sub.add_parser("generate", help="generate text with a trained model",
                       description="Continue a prompt with the model of a run folder.")
    a = p.add_argument
    a("dir", help="run folder (holding checkpoint.npz)")
    a("--prefix", help="text to continue (default: the run's sample prompt)")
    a("-n", type=_type(int_at_least(0), int), default=200,
      help="tokens to generate (default: 200)")
    a("--strategy", choices=("greedy", "sample", "beam"), default="sample",
      help="(default: sample)")
    a("--temperature", type=_type(positive_number, float),
      help="sample only: divides the logits (default: 1)")
    a("--top-k", type=_type(int_at_least(1), int), dest="top_k",
      help="sample only: draw among the k most likely tokens (default: all)")
    a("--top-p", type=_type(probability, float), dest="top_p",
      help="sample only: draw among the fewest tokens of probability p, in (0, 1] "
           "(default: 1, all)")
    a("--beam-width", type=_type(int_at_least(1), int), dest="beam_width",
      help="beam only: hypotheses kept (default: 4)")
    a("--seed", type=_type(int_at_least(0), int),
      help="sample only: the generator's seed (default: fresh, and printed)")
    a("--backend", choices=BACKENDS, default=BACKENDS[0], help=f"(default: {BACKENDS[0]})")
    return p


def _generate(args):
    for name in SAMPLING:
        if getattr(args, name) is not None and args.strategy != "sample":
            raise UsageError(f"argument --{name.replace('_', '-')}: only applies to --strategy "
                             f"sample, not {args.strategy}")
    if args.beam_width is not None and args.strategy != "beam":
        raise UsageError(f"argument --beam-width: only applies to --strategy beam, not "
                         f"{args.strategy}")
    if distributed.launched_rank() != 0:       # under mpiexec: rank 0 alone generates
        return 0
    get_backend(args.backend)
    ckpt = read_checkpoint(args.dir)
    model = load_model(ckpt, args.backend)
    vocab = Vocab.from_tokens_list(ckpt.vocab)
    prefix = args.prefix if args.prefix is not None else default_prefix(ckpt.config, vocab)
    tokens = list(prefix) if ckpt.model_config.tokens == "char" else prefix.split()
    if not tokens:
        raise UsageError(f"argument --prefix: expected at least one token, got {prefix!r}")
    unknown = [t for t in dict.fromkeys(tokens) if t not in vocab.token_to_idx]
    if unknown:
        print(f"npnn generate: warning: not in the model's vocabulary, read as <unk>: "
              f"{', '.join(map(repr, unknown))}", file=sys.stderr)
    seed = args.seed
    if args.strategy == "sample" and seed is None:
        seed = secrets.randbelow(2 ** 32)
        print(f"npnn generate: sampling with --seed {seed} (give it to get this text again)",
              file=sys.stderr)
    print(model.generate(prefix, args.n, strategy=args.strategy,
                         temperature=1.0 if args.temperature is None else args.temperature,
                         top_k=args.top_k, top_p=args.top_p,
                         beam_width=4 if args.beam_width is None else args.beam_width,
                         seed=seed))
    return 0


# -- npnn analyze ------------------------------------------------------------------
def _analyze_parser(sub):
    p = sub.add_parser("analyze", help="why gradients vanish: gradient norms and step-Jacobian "
                                       "spectra of RNN, LSTM, GRU",
                       description="Gradient norms through time and step-Jacobian spectra of "
                                   "RNN, LSTM and GRU on the adding problem.")
    a = p.add_argument
    a("--T", type=_type(int_at_least(1), int), default=100, help="sequence length (default: 100)")
    a("--hidden", type=_type(int_at_least(1), int), default=32, help="hidden size (default: 32)")
    a("--train-steps", type=_type(int_at_least(0), int), default=300, dest="train_steps",
      help="training steps before measuring, 0: at initialisation (default: 300)")
    a("--seed", type=_type(int_at_least(0), int), default=0, help="(default: 0)")
    a("--out", default="runs/analysis", help="folder for the PNG plots (default: runs/analysis)")
    return p


def _analyze(args):
    out = check_folder(args.out, "out")
    from ..analysis import analyze
    analyze(args.T, args.hidden, args.train_steps, args.seed, out)
    return 0


COMMANDS = {"train": _train, "generate": _generate, "analyze": _analyze}


def build_parser():
    parser = _Parser(prog="npnn", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"npnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,generate,analyze}")
    for command in (_train_parser(sub), _generate_parser(sub), _analyze_parser(sub)):
        command.add_argument(
            "--threads", type=_threads, default="auto",
            help="BLAS threads: a number, or 'auto': one per core that no other process "
                 "keeps busy when the command starts (default: auto)")
    return parser


def _threads(text):
    """--threads: a positive integer or 'auto'."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return n


def main(argv=None):
    """Run the command line; returns the exit status."""
    _STARTED[0] = time.perf_counter()       # --minutes counts from here
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    prog = f"npnn {argv[0]}" if argv and argv[0] in COMMANDS else "npnn"
    try:
        args = build_parser().parse_args(argv)
        with blas_threads(auto_threads() if args.threads == "auto" else args.threads):
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:       # before training started, or while generating
        print(f"{prog}: interrupted", file=sys.stderr)
        _abort_others(130)
        return 130
    except UsageError as e:         # the same arguments in every process: no abort
        error, message = None, str(e)
    except ConfigError as e:
        error, message = e, f"argument {e.flag}: {e.detail}" if e.flag else e.detail
    except MemoryError as e:
        error, message = e, f"out of memory ({e})"
    except USER_ERRORS as e:
        error, message = e, str(e) or type(e).__name__
    message = f"{prog}: error: " + message.replace("\n", " ")
    world = distributed.current()
    if world.size > 1 and error is not None and not distributed.agreed(error):
        print(f"{message} (process {world.rank} of {world.size}; ending every process)",
              file=sys.stderr)
        world.abort(2)
    if (world.rank if world.size > 1 else distributed.launched_rank()) == 0:
        print(message, file=sys.stderr)
    return 2


def _abort_others(code):
    """Under MPI, processes may wait for this one in a collective: end them all."""
    world = distributed.current()
    if world.size > 1:
        world.abort(code)


if __name__ == "__main__":
    sys.exit(main())
