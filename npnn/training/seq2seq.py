"""Training and evaluating a ``npnn.models.Seq2Seq`` through the generic loop.

Teacher forcing: the decoder reads <bos> y_1 .. y_{T-1} and is scored on
y_1 .. y_T with cross-entropy that ignores padding; after every epoch, the
exact-match accuracy of greedy decoding on a test set.
"""

import numpy as np

from .._checks import check_integer, check_positive_int, check_shape
from ..backend import to_backend, to_numpy
from ..layers import SoftmaxCrossEntropy
from ..optim import Adam
from .loop import Hooks, fit


def teacher_forcing(tgt, bos):
    """Targets y_1 .. y_T (N, T) -> the decoder's inputs <bos> y_1 .. y_{T-1} (N, T)."""
    tgt = np.asarray(to_numpy(tgt))
    check_integer("tgt", tgt)
    if tgt.ndim != 2:
        check_shape("tgt", tgt, (None, None), "NT")
    return np.concatenate([np.full((tgt.shape[0], 1), bos, dtype=tgt.dtype), tgt[:, :-1]],
                          axis=1)


def seq2seq_batches(src, tgt, bos, batch_size, src_lengths=None, world=None, backend="numpy"):
    """``batches(rng)`` for ``npnn.training.fit``: every epoch a fresh permutation, the last
    partial minibatch dropped, each minibatch ((src, src_lengths, tgt_in), tgt) with
    teacher forcing; padded sources are cut to the minibatch's longest, targets are
    on ``backend`` (the loss's). With ``world`` (data parallel) each process keeps its
    rows of every minibatch."""
    src, tgt = np.asarray(to_numpy(src)), np.asarray(to_numpy(tgt))
    lengths = None if src_lengths is None else np.asarray(to_numpy(src_lengths))
    if len(src) != len(tgt) or (lengths is not None and len(lengths) != len(src)):
        raise ValueError(f"expected as many targets and lengths as sources ({len(src)}), "
                         f"got {len(tgt)} and {None if lengths is None else len(lengths)}")
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > len(src):
        raise ValueError(f"expected batch_size at most the number of sequences ({len(src)}), "
                         f"got {batch_size}")
    rows = slice(None) if world is None else world.rows(batch_size)
    tgt_in = teacher_forcing(tgt, bos)

    def batches(rng):
        order = rng.permutation(len(src))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[i:i + batch_size]
            idx = batch[rows]                               # this process's rows
            target = to_backend(tgt[idx], backend)
            if lengths is None:
                yield (src[idx], None, tgt_in[idx]), target
            else:
                S = int(lengths[batch].max())               # the same on every process
                yield (src[idx, :S], lengths[idx], tgt_in[idx]), target
    return batches


def exact_match(model, src, tgt, src_lengths=None, batch_size=1000):
    """Share of sources whose greedy decoding is exactly the target (ids, up to <eos>,
    which is excluded), decoded ``batch_size`` at a time; ``max_len`` is T (+1 for <eos>)."""
    src, tgt = np.asarray(to_numpy(src)), np.asarray(to_numpy(tgt))
    lengths = None if src_lengths is None else np.asarray(to_numpy(src_lengths))
    right = 0
    for i in range(0, len(src), batch_size):
        part = slice(i, i + batch_size)
        out = model.greedy_decode(src[part], None if lengths is None else lengths[part],
                                  max_len=tgt.shape[1])
        for got, want in zip(out, tgt[part].tolist()):
            if model.eos is not None and model.eos in want:
                want = want[:want.index(model.eos)]
            right += got == want
    return right / len(src)


def fit_seq2seq(model, train, test=None, *, epochs, batch_size=128, lr=1e-3, clip=5.0,
                optimizer=None, rng=None, eval_batch=1000, log=print, progress=False,
                world=None):
    """Train ``model`` with teacher forcing through ``npnn.training.fit``: Adam (or
    ``optimizer``), cross-entropy ignoring ``model.pad``, global-norm clipping, and
    after every epoch the exact-match accuracy on ``test`` (batched greedy decoding).

    ``train`` and ``test`` are (src (N, S), tgt (N, T)) or (src, tgt, src_lengths)
    with targets y_1 .. y_T (ending in <eos> if the model has one). ``world``
    (``npnn.training.distributed.world()``) trains data-parallel: each process keeps its
    rows of every minibatch and evaluates the whole test set. Returns the
    ``TrainState``; its history records hold 'test_exact_match'.
    """
    src, tgt, *lengths = train
    batches = seq2seq_batches(src, tgt, model.bos, batch_size, *lengths, world=world,
                              backend=model.backend)
    hooks = None
    if test is not None:
        t_src, t_tgt, *t_lengths = test
        hooks = Hooks(evaluate=lambda state, record: {"test_exact_match": exact_match(
            model, t_src, t_tgt, *t_lengths, batch_size=eval_batch)})
    loss = SoftmaxCrossEntropy(ignore_index=-100 if model.pad is None else model.pad)
    return fit(model, loss, batches, optimizer or Adam(model, lr=lr), epochs=epochs, clip=clip,
               rng=rng, hooks=hooks, log=log, progress=progress, world=world)
