"""What tests/test_distributed.py runs under ``mpiexec -n P``: ``python tests/mpi_worker.py
CASE OUT [ARGS]``. Each case writes what the test compares into the folder OUT (rank 0's
results, and ``rank<r>.json`` from every rank where ranks must agree)."""

import json
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _helpers import quiet, tiny_config  # noqa: E402
from npnn.training import distributed  # noqa: E402
from npnn.training.distributed import DataParallel  # noqa: E402
from npnn.training.loop import Hooks  # noqa: E402
from npnn.training.trainer import Trainer  # noqa: E402

#: (cell, tie, iterator) of the equivalence runs
CONFIGS = [(cell, tie, iterator) for cell in ("lstm", "gru") for tie in (False, True)
           for iterator in ("sequential", "random")]


def lm_config(text, cell="lstm", tie=False, iterator="sequential", **kw):
    """A float64 language model small enough for a test, 2 epochs; batch 4 (1 row a rank on 4)."""
    base = dict(cell=cell, tie=tie, iterator=iterator, hidden=8, embedding=8, dtype="float64",
                epochs=2, lr=0.02, seed=3, val_fraction=0.1)
    base.update(kw)
    return tiny_config(text, **base)


def record_losses(losses, cls):
    """Keep every step's global loss in ``losses``, as ``cls.reduce`` returns it
    (``DataParallel`` under MPI, ``Hooks`` in one process); returns the original."""
    original = cls.reduce

    def reduce(self, model, loss, weight, stop):
        out = original(self, model, loss, weight, stop)
        losses.append(out[0])
        return out
    cls.reduce = reduce
    return original


LOSSES = []


def lm_run(text, out, **kw):
    """Train ``lm_config(text, **kw)`` in ``out``: (step losses, parameters)."""
    del LOSSES[:]
    trainer = Trainer(lm_config(text, **kw), out, log=quiet, progress=False,
                      world=distributed.world())
    trainer.fit()
    return list(LOSSES), {k: v.copy() for k, v in trainer.model.state_dict().items()}


def stop_on_rank(trainer, rank, at, signum):
    """The ``at``-th step of rank ``rank`` sends ``signum`` to its own process (the step
    then completes): a signal that one process alone receives."""
    count, step = [0], trainer.train_step

    def stopping(*args):
        count[0] += 1
        if count[0] == at and trainer.world.rank == rank:
            os.kill(os.getpid(), signum)
        return step(*args)
    trainer.train_step = stopping
    return trainer


def write_rank(out, trainer, **extra):
    w = trainer.world
    with open(os.path.join(out, f"rank{w.rank}.json"), "w") as f:
        json.dump({"size": w.size, "step_count": trainer.optimizer.step_count,
                   "position": [trainer.state.epoch, trainer.state.batch],
                   "stopped": trainer.state.stopped, **extra}, f)


def case_equivalence(out, text):
    """Every CONFIGS run: rank 0 saves the step losses and final parameters."""
    results = {}
    for cell, tie, iterator in CONFIGS:
        name = f"{cell}-{'tied' if tie else 'untied'}-{iterator}"
        losses, params = lm_run(text, os.path.join(out, name), cell=cell, tie=tie,
                                iterator=iterator)
        results[f"{name}/losses"] = np.array(losses)
        results.update({f"{name}/{k}": v for k, v in params.items()})
    if distributed.world().rank == 0:
        np.savez(os.path.join(out, "results.npz"), **results)


def case_sigint(out, text, run, rank, at, *settings):
    """A run in ``run`` whose rank ``rank`` alone receives SIGINT at its step ``at``
    (``settings``: key=value of the config, e.g. dropout=0.2)."""
    kw = dict(s.split("=") for s in settings)
    kw = {k: (float(v) if k == "dropout" else int(v) if v.isdigit() else v) for k, v in kw.items()}
    trainer = Trainer(lm_config(text, **kw), run, log=quiet, progress=False,
                      world=distributed.world())
    stop_on_rank(trainer, int(rank), int(at), signal.SIGINT)
    trainer.fit()
    write_rank(out, trainer)


def case_resume(out, run, epochs):
    """Resume ``run`` to ``epochs`` epochs; rank 0 saves the parameters."""
    trainer = Trainer.resume(run, log=quiet, progress=False, world=distributed.world(),
                             epochs=int(epochs))
    trainer.fit()
    write_rank(out, trainer)
    if trainer.world.rank == 0:
        np.savez(os.path.join(out, "params.npz"), **trainer.model.state_dict())


def case_layout(out, text, run):
    """Each rank's timing would choose another layout (rank 0 'feature', the others
    'batch'): every rank must run in rank 0's, and the checkpoint must say it."""
    from npnn.functional.accel import _layout
    from npnn.functional.registry import Cell
    rank = distributed.world().rank
    Cell.layout = lambda self, N, H, dtype, xp: "feature" if rank == 0 else "batch"
    trainer = Trainer(lm_config(text, epochs=1), run, log=quiet, progress=False,
                      world=distributed.world())
    seen, step = set(), trainer.train_step

    def spying(*args):
        seen.add(_layout.forced())
        return step(*args)
    trainer.train_step = spying
    trainer.fit()
    write_rank(out, trainer, layout=trainer.layout, seen=sorted(seen))


def case_budget(out, text, run):
    """A time budget far below the run's epochs: every rank must stop after the same step."""
    trainer = Trainer(lm_config(text, epochs=1000, minutes=0.02), run, log=quiet,
                      progress=False, world=distributed.world())
    trainer.fit()
    write_rank(out, trainer)


def case_cli_fails(out, text, rank):
    """``npnn train`` in which rank ``rank`` raises inside its third step."""
    from npnn.training import cli
    original = Trainer.train_step

    def failing(self, *args):
        self._steps = getattr(self, "_steps", 0) + 1
        if self._steps == 3 and self.world.rank == int(rank):
            raise RuntimeError("a fault of this process alone")
        return original(self, *args)
    Trainer.train_step = failing
    return cli.main(["train", "--text", text, "--hidden", "8", "--embedding", "4", "--batch",
                     "4", "--steps", "10", "--epochs", "50", "--no-progress", "--out",
                     os.path.join(out, "run")])


def case_uncaught(out, rank):
    """A script whose rank ``rank`` raises while the other waits in a collective."""
    w = distributed.world()
    if w.rank == int(rank):
        raise RuntimeError("uncaught on one process")
    w.allreduce(np.ones(3))
    return 0


def case_fit(out):
    """The generic loop, data parallel: a Seq2Seq on padded batches with ignored targets
    (ranks with unequal token counts) and a regressor with MSE; rank 0 saves the step
    losses and final parameters of both."""
    import fit_models
    results = {}
    for name in fit_models.MODELS:
        del LOSSES[:]
        params = fit_models.run(name, distributed.world())
        results[f"{name}/losses"] = np.array(LOSSES)
        results.update({f"{name}/{k}": v for k, v in params.items()})
    if distributed.world().rank == 0:
        np.savez(os.path.join(out, "results.npz"), **results)


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    record_losses(LOSSES, DataParallel if distributed.world().size > 1 else Hooks)
    case, out, *args = sys.argv[1:]
    os.makedirs(out, exist_ok=True)
    status = CASES[case](out, *args)
    sys.exit(status or 0)
