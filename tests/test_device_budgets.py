"""Budgets of the device path, counted on the strict CuPy stand-in.

* No synchronisation inside any time loop: a sequence op, forward and backward,
  every cell, masked or not, reads nothing back from the device.
* Kernel launches per time step and cell (``LAUNCHES``: matrix products and fused
  kernels; the GRU's two products forward), the same masked or not, and no
  implicit copy (an operand CuPy must make contiguous, an input overlapping out=).
* A language model's training step synchronises ``STEP_SYNCS`` times: the loss as
  a float, the gradient norm of the clip, the one finiteness check after the
  update, and the embedding's deterministic backward (the number of distinct ids).
* Validation reads one value back per group of pieces; ids, targets and lengths
  given on the host are checked there (no device check, one copy each).
* Dropout masks are made on the device from a host-drawn key: no copy, one launch,
  reproducible, and a run with dropout resumes bit for bit.

The defects these budgets pin are listed in issue 14; each test failed on the code
before it.
"""

import numpy as np
import pytest

import npnn
from npnn import optim
from npnn.backend import scatter_add, to_backend, to_numpy
from npnn.functional import embedding_forward, softmax_cross_entropy
from npnn.functional.accel import use_acceleration, use_reference
from npnn.functional.registry import CELLS
from npnn.layers.recurrent import DROPOUT_KERNEL, dropout_mask, layer_class
from npnn.models import ConditionalDecoder, SequenceClassifier, SequenceTagger
from npnn.training.trainer import Trainer

from _helpers import TEXT, quiet, tiny_config
from test_accel import VARIANTS, make_case

#: launches a time step (forward, backward) of the fused path, masked or not
LAUNCHES = {"rnn_tanh": (2, 2), "rnn_relu": (2, 2), "lstm": (2, 2), "gru": (3, 2)}
#: synchronisations of one language-model training step (loss, clip, finite, embedding)
STEP_SYNCS = 4
CELL_OPS = {**{v: VARIANTS[v][:2] for v in VARIANTS}, "peephole_lstm": ("peephole_lstm", {}),
            "ctrnn": ("ctrnn", {}), "jordan": ("jordan", {})}


def _case(variant, T, masked, grads, N=3, D=4, H=5):
    if variant in VARIANTS:
        return make_case(variant, T, N, D, H, "float32", True, masked, True, grads, False, 0,
                         "cupy")
    cell = CELL_OPS[variant][0]
    rng = np.random.default_rng(0)
    spec = CELLS[cell]
    dev = lambda a: to_backend(np.asarray(a, "float32"), "cupy")  # noqa: E731
    lengths = rng.integers(1, T + 1, size=N)
    return dict(x=dev(rng.standard_normal((T, N, D))),
                states=tuple(dev(rng.standard_normal((N, H))) for _ in spec.states),
                params={p.arg: dev(0.5 * rng.standard_normal(s))
                        for p, s in spec.param_shapes(D, H, True)},
                mask=to_backend(np.arange(T)[:, None] < lengths[None, :], "cupy") if masked else None,
                dout=dev(rng.standard_normal((T, N, H))) if grads != "final" else None,
                dfinals=tuple(dev(rng.standard_normal((N, H))) for _ in spec.states),
                options=CELL_OPS[variant][1])


def _counts(strict, variant, T, masked, grads="both", path=use_acceleration):
    cell = CELL_OPS[variant][0]
    case = _case(variant, T, masked, grads)
    with path(), strict.counting() as fwd:
        out, finals, cache = CELLS[cell].run(case["x"], case["states"], case["params"],
                                             case["mask"], **case["options"])
    with strict.counting() as bwd:
        CELLS[cell].run_backward(case["dout"], case["dfinals"], cache)
    return fwd, bwd


@pytest.mark.parametrize("variant", sorted(CELL_OPS))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("path", ["accelerated", "reference"])
def test_no_sync_inside_any_time_loop(strict, variant, masked, path):
    for T in (1, 6):
        fwd, bwd = _counts(strict, variant, T, masked,
                           path=use_acceleration if path == "accelerated" else use_reference)
        assert fwd.syncs == [] and bwd.syncs == [], (fwd.sites("sync"), bwd.sites("sync"))


@pytest.mark.parametrize("variant", sorted(LAUNCHES))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("grads", ["final", "both"])
def test_launches_per_time_step(strict, variant, masked, grads):
    short, long = (_counts(strict, variant, T, masked, grads) for T in (4, 8))
    per_step = tuple((len(b.launches) - len(a.launches)) / 4 for a, b in zip(short, long))
    assert per_step == LAUNCHES[variant], (long[0].sites("launch"), long[1].sites("launch"))
    copies = [[e for e in c.launches if "copied" in e.what or "a copy" in e.what]
              for c in short + long]           # (weights transposed once a call are fine)
    assert copies[:2] == copies[2:], copies   # none a step


def test_a_layer_with_lengths_in_both_directions_never_synchronises(strict):
    layer = layer_class("lstm")(4, 5, num_layers=2, bidirectional=True, seed=0).to("cupy")
    x = to_backend(np.random.default_rng(0).standard_normal((6, 3, 4)).astype("float32"), "cupy")
    with strict.counting() as c:
        out, _ = layer(x, lengths=np.array([6, 2, 4]))         # lengths on the host
        layer.backward(out)
    assert c.syncs == [], c.sites("sync")


def test_host_ids_and_targets_are_checked_on_the_host(strict):
    W = to_backend(np.ones((7, 3), "float32"), "cupy")
    ids = np.array([[1, 2], [3, 6]])
    with strict.counting() as c:
        y, _ = embedding_forward(ids, W)
        loss, _ = softmax_cross_entropy(y, ids % 3)
    assert c.syncs == [] and len(c.h2d) == 2
    with pytest.raises(ValueError, match=r"expected idx in \[0, 7\), got 7"):
        embedding_forward(ids + 1, W)
    with strict.counting() as c:                     # ids already on the device: one read
        embedding_forward(to_backend(ids, "cupy"), W)
    assert len(c.syncs) == 1


def test_models_keep_ids_where_they_are(strict):
    """Host ids: no read-back forward (they were copied device -> host -> device and
    checked on the device); backward, the one read of each embedding's deterministic
    scatter."""
    rng = np.random.default_rng(0)
    X, lengths = rng.integers(1, 9, size=(3, 5)), np.array([5, 2, 3])
    cond = to_backend(rng.standard_normal((3, 4)).astype("float32"), "cupy")
    runs = [(SequenceClassifier(9, 3, 4, 5, seed=0), (X, lengths)),
            (SequenceTagger(9, 4, 4, 5, seed=0), (X, lengths)),
            (ConditionalDecoder(4, 7, 3, 5, seed=0), (cond, X[:, :4] % 7))]
    for model, args in runs:
        model.to("cupy")
        with strict.counting() as forward:
            out = model(*args)
        with strict.counting() as backward:
            model.backward(to_backend(np.ones(out.shape, "float32"), "cupy"))
        assert forward.syncs == [], forward.sites("sync")
        assert [e.what for e in backward.syncs] == ["flatnonzero"], backward.sites("sync")


def test_clip_grad_norm_reads_one_value(strict):
    model = npnn.Sequential(npnn.Linear(3, 4), npnn.Linear(4, 2)).to("cupy")
    for g in model.gradients():
        g += 1.0
    with strict.counting() as c:
        norm = optim.clip_grad_norm_(model, 0.1)
    assert len(c.syncs) == 1 and norm == pytest.approx(np.sqrt(4 * 3 + 4 + 2 * 4 + 2))


def _trainer(tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    return Trainer(tiny_config(text, backend="cupy", clip=1.0, **kw), tmp_path / "run",
                   log=quiet, progress=False)


def test_a_training_step_synchronises_a_stated_number_of_times(strict, tmp_path):
    from npnn.training.loop import TrainState, train_epoch
    t = _trainer(tmp_path)
    batches = list(t._batches(np.random.default_rng(0)))[:3]
    with strict.counting() as c:
        train_epoch(t.model, t._step, batches, t.optimizer, TrainState(), clip=1.0)
    t.close()
    assert len(c.syncs) == 3 * STEP_SYNCS, c.sites("sync")


def test_validation_reads_one_value_per_group_of_pieces(strict, tmp_path):
    t = _trainer(tmp_path)
    with strict.counting() as c:
        t.validation_perplexity()
    t.close()
    assert len(c.syncs) == 1, c.sites("sync")


def _hash_mask(key, size, p, scale):
    """``DROPOUT_KERNEL``'s mask, in NumPy (splitmix64 of key + i * golden)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + np.arange(size, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / 2.0 ** 53
    return np.where(u >= p, scale, 0).astype(np.float32)


def test_dropout_masks_are_made_on_the_device_reproducibly(strict):
    like = to_backend(np.zeros(1, "float32"), "cupy")
    with strict.counting() as c:
        mask = dropout_mask(np.random.default_rng(5), (100, 8, 16), 0.3, like)
    assert c.h2d == [] and [e.what for e in c.launches] == [f"kernel {DROPOUT_KERNEL[3]}"]
    key = np.random.default_rng(5).integers(0, 2 ** 63)
    expected = _hash_mask(key, mask.size, 0.3, np.float32(1 / 0.7)).reshape(mask.shape)
    np.testing.assert_array_equal(to_numpy(mask), expected)
    assert abs(float((mask > 0).mean()) - 0.7) < 0.01
    again = dropout_mask(np.random.default_rng(5), (100, 8, 16), 0.3, like)
    np.testing.assert_array_equal(to_numpy(again), to_numpy(mask))


def test_a_run_with_dropout_on_the_device_resumes_bit_for_bit(strict, tmp_path):
    straight = _trainer(tmp_path / "a", epochs=2, dropout=0.3, layers=2)
    straight.fit()
    first = _trainer(tmp_path / "b", epochs=1, dropout=0.3, layers=2)
    first.fit()
    resumed = Trainer.resume(tmp_path / "b" / "run", log=quiet, progress=False, epochs=2)
    resumed.fit()
    for k, v in straight.model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(resumed.model.state_dict()[k]), to_numpy(v))


def test_the_embedding_backward_is_deterministic_on_the_device(strict):
    """Sorted and segment-summed: no atomics (cupyx.scatter_add, add.at), one read."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 5, size=40)
    values = rng.standard_normal((40, 3))
    target = to_backend(np.zeros((5, 3)), "cupy")
    with strict.counting() as c:
        scatter_add(target, to_backend(idx, "cupy"), to_backend(values, "cupy"))
    assert not any("scatter_add" in e.what or ".at" in e.what for e in c.launches)
    assert len(c.syncs) == 1
    expected = np.zeros((5, 3))
    np.add.at(expected, idx, values)
    np.testing.assert_allclose(to_numpy(target), expected, rtol=1e-12)
