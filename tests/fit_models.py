"""Two users of the generic loop, for the data-parallel tests (tests/test_distributed.py runs
them in one process, tests/mpi_worker.py under mpiexec): each process's ``batches`` keeps
its rows of every global batch, drawn from the shared generator (``world.rows``)."""

import numpy as np

import npnn
from npnn.analysis import LastStateRegressor
from npnn.training.distributed import LOCAL
from npnn.training.loop import fit
from npnn.models import Seq2Seq
from npnn.optim import Adam

MODELS = ("seq2seq", "regressor")
BATCH = 8               # global rows: 2 a rank on 4 processes
PAD, BOS, EOS = 0, 1, 2


def _seq2seq():
    """Padded sources of 1..6 tokens, targets their reverse: every batch's ranks hold
    different numbers of target tokens (the rest is padding, ignored by the loss)."""
    model = Seq2Seq(9, 9, embed_size=6, hidden_size=5, bidirectional=True, context="attention",
                    pad=PAD, bos=BOS, eos=EOS, dtype="float64", seed=4)

    def batches(rng, rows):
        for _ in range(5):
            lengths = rng.integers(1, 7, size=BATCH)
            src = np.full((BATCH, 6), PAD)
            tgt = np.full((BATCH, 7), PAD)
            for i, n in enumerate(lengths):
                seq = rng.integers(3, 9, size=n)
                src[i, :n], tgt[i, :n], tgt[i, n] = seq, seq[::-1], EOS
            tgt_in = np.concatenate([np.full((BATCH, 1), BOS), tgt[:, :-1]], axis=1)
            yield (src[rows], lengths[rows], tgt_in[rows]), tgt[rows]
    return model, npnn.SoftmaxCrossEntropy(ignore_index=PAD), batches


def _regressor():
    model = LastStateRegressor("lstm", 2, 6, dtype="float64", seed=2)

    def batches(rng, rows):
        for _ in range(5):
            x = rng.standard_normal((4, BATCH, 2))                      # (T, N, D)
            yield (x[:, rows],), x.sum(axis=(0, 2))[rows, None]          # targets (N, 1)
    return model, npnn.MSELoss(), batches


def run(name, world=None):
    """Train model ``name`` for 2 epochs (Adam, clipping) on ``world``; its parameters."""
    world = LOCAL if world is None else world
    model, loss, batches = {"seq2seq": _seq2seq, "regressor": _regressor}[name]()
    for p in model.parameters() if world.rank else ():
        p += 1.0                     # only rank 0's parameters count: fit broadcasts them
    rows = world.rows(BATCH)
    fit(model, loss, lambda rng: batches(rng, rows), Adam(model, lr=0.02), epochs=2, clip=0.5,
        rng=np.random.default_rng(7), log=None, progress=False, world=world)
    return {k: v.copy() for k, v in model.state_dict().items()}
