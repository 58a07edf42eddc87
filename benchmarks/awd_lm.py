"""AWD-LSTM's regularisers on a small word-level language model: which help, and by how much.

    python benchmarks/awd_lm.py --write            # the table of benchmarks/RESULTS.md
    python benchmarks/awd_lm.py --seeds 0 --epochs 5 --configs plain,all

One model size, a word-level LSTM language model on *The Time Machine* (d2l's
cleaning: letters and space, lower case; words seen at least twice, the others
read as <unk>; the last 10% of the text held out), trained with the same epochs,
optimizer and seeds plainly, with each regulariser of Merity et al.'s AWD-LSTM alone,
and with all of them together:

    plain                 none
    weight-drop           DropConnect on the hidden-to-hidden weights (--weight-drop)
    recurrent dropout     one mask per sequence on the recurrent state (--recurrent-dropout)
    embedding dropout     whole words dropped from the embedding (--embedding-dropout)
    zoneout               units keep their previous value at random (--zoneout)
    output dropout        dropout before the decoder (--dropout)
    all                   every one of them

Each configuration runs ``--seeds`` (three by default). The measure is the
best-epoch validation perplexity (small data overfits: the plain model's is its
best before it memorises), with the epoch where it occurs and the run's time. Every
run trains through ``npnn.Trainer`` into ``--out``/<config>-s<seed>/ (checkpoints
every epoch: an interrupted table continues with the same command; a finished run
is read back, not trained again: runs are known by their settings and the text's
SHA-256). The text is the copy shipped with npnn (``npnn.training.data.TIME_MACHINE``),
else ``../shared/data/timemachine.txt``; without either the script says so and exits
cleanly.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_rnn import write_section  # noqa: E402
from lm_timemachine import machine  # noqa: E402

ROOT = os.path.dirname(HERE)
SHARED_TEXT = os.path.join(ROOT, "..", "shared", "data", "timemachine.txt")

#: The model and its training, the same for every configuration.
BASE = dict(preprocess="timemachine", tokens="word", min_freq=2, val_fraction=0.1,
            cell="lstm", hidden=256, layers=1, embedding=128, batch=32, steps=35,
            iterator="sequential", optimizer="adam", lr=3e-3, clip=1.0, minutes=None,
            sample_every=10 ** 9, sample_length=20, prefix="the time traveller")
#: name -> (the settings it changes, how the table names them). Rates: AWD-LSTM's
#: (weight-drop 0.5, embedding dropout 0.1, output dropout 0.4), zoneout and recurrent
#: dropout as Krueger et al. and Gal & Ghahramani used on word-level models.
CONFIGS = {
    "plain": ({}, "none"),
    "weight_drop": ({"weight_drop": 0.5}, "--weight-drop 0.5"),
    "recurrent_dropout": ({"recurrent_dropout": 0.25}, "--recurrent-dropout 0.25"),
    "embedding_dropout": ({"embedding_dropout": 0.1}, "--embedding-dropout 0.1"),
    "zoneout": ({"zoneout": 0.1}, "--zoneout 0.1"),
    "output_dropout": ({"dropout": 0.4}, "--dropout 0.4"),
}
CONFIGS["all"] = ({k: v for settings, _ in CONFIGS.values() for k, v in settings.items()},
                  "all of the above")


def find_text():
    """The Time Machine shipped with npnn (``npnn.training.data.TIME_MACHINE``), else the
    shared copy beside this checkout or beside the main one of its git worktrees; None
    if there is none."""
    try:
        from npnn.training.data import TIME_MACHINE
        if os.path.exists(TIME_MACHINE):
            return TIME_MACHINE
    except ImportError:                   # an npnn from before the text was shipped
        pass
    for root in (ROOT, _main_checkout()):
        if root is not None:
            path = os.path.normpath(os.path.join(root, "..", "shared", "data", "timemachine.txt"))
            if os.path.exists(path):
                return path
    return None


def _main_checkout():
    """The main checkout of this repository when this one is a git worktree, else None."""
    import subprocess
    try:
        common = subprocess.run(["git", "-C", ROOT, "rev-parse", "--path-format=absolute",
                                 "--git-common-dir"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return os.path.dirname(common) if common.endswith(".git") else None


def _digest(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_one(name, seed, text, epochs, out_root, log=print):
    """Train (or read back) configuration ``name`` with ``seed``; returns its result."""
    from npnn.training.trainer import TrainConfig, Trainer, read_checkpoint
    out = os.path.join(out_root, f"{name}-s{seed}")
    path = os.path.join(out, "result.json")
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
        if (result["epochs"], result.get("text_sha256"), result["settings"], result["base"]) == (
                epochs, _digest(text), CONFIGS[name][0], BASE):
            return result
    settings = {**BASE, **CONFIGS[name][0]}
    config = TrainConfig(text=text, epochs=epochs, seed=seed, **settings)
    say = lambda line: log(f"[{name} s{seed}] {line}")  # noqa: E731
    trainer = None
    if os.path.exists(os.path.join(out, "checkpoint.npz")):   # an interrupted run: continue it
        try:
            saved = read_checkpoint(out).config
            if all(getattr(saved, k) == v for k, v in settings.items()) and \
                    (saved.seed, saved.text) == (seed, os.path.abspath(text)):
                trainer = Trainer.resume(out, log=say, progress=False, epochs=epochs)
        except ValueError as e:            # unreadable, or more epochs done: start again
            say(f"starting again ({e})")
    if trainer is None:
        trainer = Trainer(config, out, log=say, progress=False, overwrite=True)
    with trainer:
        trainer.fit()
    hist = trainer.history
    if len(hist) < epochs:
        raise RuntimeError(f"{name} seed {seed} stopped after {len(hist)} of {epochs} epochs")
    best = min(hist, key=lambda h: h["val_ppl"])
    result = {"config": name, "seed": seed, "epochs": len(hist), "text": os.path.abspath(text),
              "text_sha256": _digest(text),
              "settings": CONFIGS[name][0], "base": BASE, "best_val_ppl": best["val_ppl"],
              "best_epoch": best["epoch"], "train_ppl_at_best": best["train_ppl"],
              "final_val_ppl": hist[-1]["val_ppl"], "final_train_ppl": hist[-1]["train_ppl"],
              "val_ppl": [h["val_ppl"] for h in hist], "seconds": trainer.elapsed,
              "vocab": len(trainer.corpus.vocab), "train_tokens": len(trainer.corpus.train),
              "val_tokens": len(trainer.corpus.val),
              "parameters": trainer.model.num_parameters(), "machine": machine()}
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    say(f"best validation perplexity {result['best_val_ppl']:.2f} at epoch "
        f"{result['best_epoch']}, {result['seconds']:.0f} s")
    return result


def summary(results):
    """Per configuration: mean, min, max, std of the best perplexity, its epochs, time."""
    out = {}
    for name in CONFIGS:
        rows = [r for r in results if r["config"] == name]
        if not rows:
            continue
        best = [r["best_val_ppl"] for r in rows]
        out[name] = {"n": len(rows), "mean": statistics.fmean(best), "min": min(best),
                     "max": max(best), "std": statistics.stdev(best) if len(best) > 1 else 0.0,
                     "epochs": [r["best_epoch"] for r in rows],
                     "final": statistics.fmean(r["final_val_ppl"] for r in rows),
                     "train_at_best": statistics.fmean(r["train_ppl_at_best"] for r in rows),
                     "seconds": statistics.fmean(r["seconds"] for r in rows)}
    return out


def _source(text):
    """Where the text came from, for the table."""
    import npnn
    package = os.path.dirname(os.path.abspath(npnn.__file__))
    where = ("the copy shipped with npnn (npnn/training/timemachine.txt)"
             if os.path.abspath(text).startswith(package + os.sep) else f"`{text}`")
    return f"{where}, SHA-256 {_digest(text)[:12]}..."


def table(results, epochs, seeds, text):
    s = summary(results)
    first = results[0]
    lines = ["## AWD-style regularisers: a word-level LSTM on The Time Machine", "",
             f"`python benchmarks/awd_lm.py --write` (seeds {', '.join(map(str, seeds))}, "
             f"{epochs} epochs each). LSTM, 1 layer, H {BASE['hidden']}, embedding "
             f"{BASE['embedding']}, {first['parameters']:,} parameters; The Time Machine "
             f"cleaned as d2l does, words seen at least twice (vocabulary {first['vocab']:,}), "
             f"{first['train_tokens']:,} training and {first['val_tokens']:,} validation words "
             f"(the last 10%); batch {BASE['batch']} x {BASE['steps']} steps, state carried, "
             f"Adam lr {BASE['lr']:g}, clip {BASE['clip']:g}. The measure: the validation "
             "perplexity of each run's best epoch (mean over seeds; spread: min-max).", "",
             f"Text: {_source(text)}. Machine: {first['machine']}; shared with "
             "other jobs, so the times are rough.", "",
             "| configuration | flags | best val ppl, mean | min-max | std | vs plain | "
             "best epochs | train ppl at best | final val ppl | s per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    plain = s.get("plain")
    for name, v in s.items():
        vs = "" if plain is None or name == "plain" else \
            f"{v['mean'] - plain['mean']:+.1f} ({100 * (v['mean'] / plain['mean'] - 1):+.1f}%)"
        lines.append(f"| {name.replace('_', ' ')} | {CONFIGS[name][1]} | {v['mean']:.1f} | "
                     f"{v['min']:.1f}-{v['max']:.1f} | {v['std']:.1f} | {vs} | "
                     f"{', '.join(map(str, v['epochs']))} | {v['train_at_best']:.1f} | "
                     f"{v['final']:.1f} | {v['seconds']:.0f} |")
    lines.append("")
    if plain is not None:
        lines += ["Which help here (mean best-epoch perplexity against the plain model's; "
                  "'within the seed spread' where the difference is not larger than the "
                  "larger min-max spread of the two):", ""]
        for name, v in s.items():
            if name == "plain":
                continue
            gap = plain["mean"] - v["mean"]
            spread = max(plain["max"] - plain["min"], v["max"] - v["min"])
            verdict = ("helps" if gap > spread else "hurts" if -gap > spread else
                       "within the seed spread")
            lines.append(f"- {name.replace('_', ' ')} ({CONFIGS[name][1]}): {verdict}, "
                         f"{abs(gap):.1f} {'lower' if gap >= 0 else 'higher'} "
                         f"({100 * abs(gap) / plain['mean']:.1f}%; spread {spread:.1f}), "
                         f"best at epochs {', '.join(map(str, v['epochs']))} against "
                         f"{', '.join(map(str, plain['epochs']))}.")
        lines.append("")
    if plain is not None and "all" in s:
        a = s["all"]
        gap = plain["mean"] - a["mean"]
        spread = max(plain["max"] - plain["min"], a["max"] - a["min"])
        met = gap > spread
        lines.append(f"The combination against the plain model: {a['mean']:.1f} against "
                     f"{plain['mean']:.1f}, {gap:.1f} lower; the larger seed spread (min-max) "
                     f"of the two is {spread:.1f}: the target (lower by more than the seed "
                     f"spread) is {'met' if met else 'not met'}.")
        lines.append("")
    lines += ["Each row's runs are `npnn train` runs: the combination's seed 0 is", "",
              "    " + cli_command("all", 0, epochs), "",
              "(the same numbers with one BLAS thread; other rows: their flags in place of "
              "the regularisers'). The rates are AWD-LSTM's where it has one (weight-drop "
              "0.5, embedding dropout 0.1, output dropout 0.4), recurrent dropout 0.25 and "
              "zoneout 0.1, the same alone and combined, not tuned per regulariser.", ""]
    return "\n".join(lines) + "\n"


def cli_command(name, seed, epochs):
    """The ``npnn train`` command of one run (the text as the shared copy's path)."""
    flags = {"text": "npnn/training/timemachine.txt", **{k: v for k, v in BASE.items()
             if k not in ("minutes", "sample_every", "sample_length", "prefix", "cell",
                          "layers", "iterator", "optimizer", "clip")},
             **CONFIGS[name][0], "epochs": epochs, "seed": seed}
    return "npnn train " + " ".join(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float)
                                    else f"--{k.replace('_', '-')} {v}"
                                    for k, v in flags.items()) + " --threads 1"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", help="timemachine.txt (default: the copy shipped with npnn)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    p.add_argument("--epochs", type=int, default=16, help="epochs of every run (default: 16)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="comma-separated, of: " + ", ".join(CONFIGS))
    p.add_argument("--out", default=os.path.join(HERE, "runs", "awd"))
    p.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    p.add_argument("--write", action="store_true", help="update the awd section of --results")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default: 1)")
    args = p.parse_args(argv)
    names = args.configs.split(",")
    for name in names:
        if name not in CONFIGS:
            p.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    text = args.text or find_text()
    if text is None or not os.path.exists(text):
        print(f"skipped: The Time Machine not found ({text or SHARED_TEXT}); pass --text PATH")
        return 0
    from npnn.backend import blas_threads
    t0 = time.time()
    with blas_threads(args.threads):
        results = [run_one(name, seed, text, args.epochs, args.out)
                   for name in names for seed in seeds]
    section = table(results, args.epochs, seeds, text)
    print(section)
    print(f"({time.time() - t0:.0f} s in all)")
    if args.write:
        write_section(args.results, "awd", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
