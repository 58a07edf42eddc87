"""Shared by the training and command-line tests: a small text, a tiny model's flags,
running ``npnn`` in this process or in another, and stopping a run at a given step."""

import os
import subprocess
import sys
import time

from npnn.training import cli
from npnn.training.trainer import TrainConfig, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief. ") * 12
TINY = ["--hidden", "8", "--embedding", "4", "--batch", "4", "--steps", "10", "--no-progress"]


def quiet(*_):
    pass


def main(capsys, *args):
    """Run ``npnn ARGS`` in this process: (exit status, stdout, stderr)."""
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err, *words):
    """``err`` is one line, no traceback, holding every one of ``words``; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def npnn_process(*args):
    """``npnn ARGS`` in a new process (this checkout first on its path), unbuffered."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "npnn", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc, start, timeout=120):
    """Read the process's stdout until a line starts with ``start``; returns the lines."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(start):
            return lines
    proc.kill()
    raise AssertionError(f"no line starting with {start!r}: {lines}")


def tiny_config(text, **kw):
    """A run of the tiny LSTM on ``text`` (a path), 3 epochs, no time limit."""
    base = dict(text=str(text), hidden=8, embedding=4, batch=4, steps=10, epochs=3,
                minutes=None, sample_every=100)
    base.update(kw)
    return TrainConfig(**base)


def stop_at(trainer, n, signum=None):
    """Make the ``n``-th training step of ``trainer`` raise KeyboardInterrupt before it
    runs (Ctrl-C where no handler is installed) or, with ``signum``, send that signal
    to this process as it starts (the step then completes)."""
    count, step = [0], trainer.train_step

    def stopping(*args):
        count[0] += 1
        if count[0] == n:
            if signum is None:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
        return step(*args)
    trainer.train_step = stopping
    return trainer


def interrupted_run(text, out, at, progress=False, log=quiet, **kw):
    """A tiny run stopped by Ctrl-C before its ``at``-th step; returns the Trainer."""
    trainer = stop_at(Trainer(tiny_config(text, **kw), out, log=log, progress=progress), at)
    trainer.fit()
    return trainer


__all__ = ["ROOT", "TEXT", "TINY", "quiet", "main", "one_line_error", "npnn_process",
           "wait_for_line", "tiny_config", "stop_at", "interrupted_run"]
