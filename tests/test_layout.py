"""The layout of the accelerations' loops (``npnn/functional/accel/_layout.py``): how it
is chosen (timed once per shape, forced by ``NPNN_LAYOUT`` or ``use_layout``, CuPy and
tiny steps batch-major), and that the timed choice reaches the cells.

That both layouts give the reference's numbers is test_accel.py's and
test_regularisers.py's (each layout forced); a training run keeping its layout across a
resume is test_checkpoint.py's.
"""

import threading

import numpy as np
import pytest

from npnn import functional as F
from npnn.functional import accel
from npnn.functional.accel import _layout, _numba
from npnn.functional.accel._layout import BATCH, FEATURE, choose, use_layout


@pytest.fixture
def fresh(monkeypatch):
    """No layout forced, none chosen yet; timing replaced by ``timed[0]`` (batch s,
    feature s), calls counted in ``timed[1]``."""
    monkeypatch.delenv("NPNN_LAYOUT", raising=False)
    monkeypatch.setattr(_layout, "_CHOSEN", {})
    timed = [(1.0, 1.0), []]

    def time_trial(trial):
        timed[1].append(trial)
        return timed[0]
    monkeypatch.setattr(_layout, "time_trial", time_trial)
    return timed


def test_the_faster_layout_is_chosen_once_per_shape(fresh):
    fresh[0] = (2.0, 1.0)                               # feature-major twice as fast
    assert choose(np, 32, 256, 4, "float32", lambda: "trial") == FEATURE
    assert choose(np, 32, 256, 4, "float32", lambda: "trial") == FEATURE
    assert fresh[1] == ["trial"]                        # timed once, then remembered
    fresh[0] = (1.0, 2.0)
    assert choose(np, 32, 256, 4, "float64", lambda: "trial") == BATCH     # another dtype
    assert choose(np, 16, 256, 4, "float32", lambda: "trial") == BATCH     # another N
    assert len(fresh[1]) == 3
    numba = _numba.use(np, "float32")
    seq = _layout.SEQUENCES
    assert _layout.chosen() == {(32, 256, 4, "<f4", numba, seq): FEATURE,
                                (32, 256, 4, "<f8", _numba.use(np, "float64"), seq): BATCH,
                                (16, 256, 4, "<f4", numba, seq): BATCH}
    # forward-only steps are timed apart (no weight gradients to copy)
    assert choose(np, 32, 256, 4, "float32", lambda: "steps", _layout.STEPS) == BATCH
    assert fresh[1][-1] == "steps" and _layout.chosen()[
        (32, 256, 4, "<f4", numba, _layout.STEPS)] == BATCH


def test_the_choice_is_timed_for_each_kernel_set(fresh, monkeypatch):
    """NumPy's ufunc kernels and numba's may favour different layouts."""
    if _numba.numba() is None:
        pytest.skip("needs numba (pip install -e '.[fast]')")
    fresh[0] = (2.0, 1.0)
    monkeypatch.setenv("NPNN_NUMBA", "0")
    assert choose(np, 32, 256, 4, "float32", lambda: None) == FEATURE
    fresh[0] = (1.0, 2.0)
    monkeypatch.setenv("NPNN_NUMBA", "1")
    assert choose(np, 32, 256, 4, "float32", lambda: None) == BATCH
    assert len(fresh[1]) == 2


def test_a_tie_keeps_the_librarys_layout(fresh):
    """Feature-major must win by MARGIN: within it the copies it needs are not repaid."""
    fresh[0] = (1.0 * _layout.MARGIN * 0.999, 1.0)
    assert choose(np, 32, 256, 4, "float32", lambda: None) == BATCH


def test_cupy_and_tiny_steps_are_batch_major_untimed(fresh):
    fresh[0] = (2.0, 1.0)
    assert choose(object(), 32, 256, 4, "float32", lambda: None) == BATCH   # not NumPy
    small = _layout.MIN_TIMED // 8 - 1                  # G*H*N below MIN_TIMED
    assert choose(np, 2, small, 4, "float32", lambda: None) == BATCH
    row = _layout.MIN_TIMED_ROW // 4                    # one row: timed from MIN_TIMED_ROW
    assert choose(np, 1, row - 1, 4, "float32", lambda: None) == BATCH
    assert fresh[1] == []
    assert choose(np, 1, row, 4, "float32", lambda: "one row") == FEATURE
    assert fresh[1] == ["one row"]


def test_the_environment_and_use_layout_force_a_layout(fresh, monkeypatch):
    fresh[0] = (2.0, 1.0)
    monkeypatch.setenv("NPNN_LAYOUT", "batch")
    assert choose(np, 32, 256, 4, "float32", lambda: None) == BATCH
    with use_layout("feature"):                         # the block wins over the environment
        assert choose(np, 32, 256, 4, "float32", lambda: None) == FEATURE
        assert choose(object(), 32, 256, 4, "float32") == BATCH     # CuPy: batch-major
        with use_layout(None):                          # None: as outside the block
            assert choose(np, 32, 256, 4, "float32", lambda: None) == FEATURE
    with use_layout(None):
        assert choose(np, 32, 256, 4, "float32", lambda: None) == BATCH
    assert fresh[1] == []
    monkeypatch.setenv("NPNN_LAYOUT", "rows")
    with pytest.raises(ValueError, match="expected NPNN_LAYOUT to be 'batch' or 'feature', "
                                         "got 'rows'"):
        choose(np, 32, 256, 4, "float32")
    with pytest.raises(ValueError, match="expected layout 'batch' or 'feature', got 'Feature'"):
        with use_layout("Feature"):
            pass


def test_use_layout_is_local_to_its_thread():
    seen = []
    with use_layout("feature"):
        worker = threading.Thread(target=lambda: seen.append(_layout._FORCED.get()))
        worker.start()
        worker.join()
        assert _layout._FORCED.get() == FEATURE
    assert seen == [None]


@pytest.mark.parametrize("fast", [BATCH, FEATURE])
def test_the_timed_choice_reaches_the_cells(fresh, fast):
    """Untouched by ``use_layout``, an accelerated sequence runs in the layout timed
    faster for its shape, and gives the reference's numbers in it."""
    fresh[0] = (2.0, 1.0) if fast == FEATURE else (1.0, 2.0)
    rng = np.random.default_rng(0)
    T, N, D, H = 5, 8, 3, 300                           # 4 * H * N above MIN_TIMED
    x = rng.standard_normal((T, N, D))
    W = [0.1 * rng.standard_normal(s) for s in ((4 * H, D), (4 * H, H), (4 * H,), (4 * H,))]
    with accel.use_acceleration():
        out, h, c, cache = F.fast.lstm_forward(x, None, None, *W)
    assert cache.feature == (fast == FEATURE) and len(fresh[1]) == 1
    with accel.use_reference():
        ref = F.lstm_forward(x, None, None, *W)
    for a, b in zip((out, h, c), ref[:3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_a_trial_runs_the_cell_in_the_layout_it_is_given(monkeypatch):
    seen = []
    real = _layout.choose

    def spy(xp, N, H, G, dtype, make_trial=None, kind=_layout.SEQUENCES):
        layout = real(xp, N, H, G, dtype, make_trial, kind)
        seen.append(layout)
        return layout
    monkeypatch.setattr(_layout, "choose", spy)
    trial = _layout.trial(accel.gru.forward, accel.gru.backward, 3, 1, 4, 5, "float64")
    trial(FEATURE)
    trial(BATCH)
    assert seen == [FEATURE, BATCH]                     # (the backward follows the cache)
    b, f = _layout.time_trial(trial, budget_s=0.001)
    assert 0 < b < 1 and 0 < f < 1


@pytest.mark.parametrize("fast", [BATCH, FEATURE])
def test_the_timed_choice_reaches_the_prepared_steps(fresh, fast):
    """Forward-only steps (a decoder's, ``Prepared``) are timed as steps, apart from the
    training loops, and run in the layout timed faster, with the reference's numbers."""
    fresh[0] = (2.0, 1.0) if fast == FEATURE else (1.0, 2.0)
    rng = np.random.default_rng(0)
    N, D, H = 8, 3, 300                                 # 4 * H * N above MIN_TIMED
    W = [0.1 * rng.standard_normal(s) for s in ((4 * H, D), (4 * H, H), (4 * H,), (4 * H,))]
    prepared = accel.lstm.Prepared(*W)
    x, h0 = rng.standard_normal((N, D)), rng.standard_normal((N, H))
    h, c = prepared.step(x, (h0, None))
    assert prepared.feature(N, "float64") == (fast == FEATURE) and len(fresh[1]) == 1
    numba = _numba.use(np, "float64")
    assert _layout.chosen() == {(N, H, 4, "<f8", numba, _layout.STEPS): fast}
    out, (h2, c2) = prepared.sequence(x[None], (h0, None))      # timed apart, as sequences
    assert len(fresh[1]) == 2
    assert _layout.chosen()[(N, H, 4, "<f8", numba, _layout.FORWARD)] == fast
    with accel.use_reference():
        ref = F.lstm_forward(x[None], h0, None, *W)
    for a, b in ((h, ref[1]), (c, ref[2]), (out, ref[0]), (h2, ref[1]), (c2, ref[2])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_a_prepared_trial_steps_in_the_layout_it_is_given(monkeypatch):
    rng = np.random.default_rng(0)
    W = [rng.standard_normal(s) for s in ((9, 2), (9, 3), (9,), (9,))]
    prepared = accel.gru.Prepared(*W)
    seen = []
    cell = prepared.cell
    monkeypatch.setattr(prepared, "cell", lambda xw, s, feature=False: (
        seen.append((feature, xw.shape)) or cell(xw, s, feature)))
    steps = _layout.TRIAL_STEPS
    for kind in (_layout.STEPS, _layout.FORWARD):
        seen.clear()
        trial = prepared.trial(4, "float64", kind)
        trial(FEATURE)
        trial(BATCH)
        assert seen == [(True, (9, 4))] * steps + [(False, (4, 9))] * steps, kind


@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 7, 1), (1, 1, 3), (4, 6, 2)])
def test_copy_blocks_moves_the_same_values_as_a_copy(shape):
    """The steps of a feature-major array moved side by side as runs of N values (one
    element each) and back: the values of a plain copy, in either direction, for N = 1
    too, from views whose last axis alone is contiguous."""
    T, K, N = shape
    a = np.arange(T * K * N, dtype=np.float32).reshape(shape) - 7.5
    side = np.empty((K, T, N), np.float32)
    _layout.copy_blocks(np, side, a.transpose(1, 0, 2))
    np.testing.assert_array_equal(side, a.transpose(1, 0, 2))
    back = np.empty(shape, np.float32)
    _layout.copy_blocks(np, back, side.transpose(1, 0, 2))
    np.testing.assert_array_equal(back, a)
    nan = np.full(shape, np.nan, np.float64)            # NaN and float64 move as they are
    out = np.zeros((K, T, N))
    _layout.copy_blocks(np, out, nan.transpose(1, 0, 2))
    assert np.isnan(out).all()
    _layout.copy_blocks(np, out, a.transpose(1, 0, 2))  # another dtype: converted, as
    np.testing.assert_array_equal(out, a.transpose(1, 0, 2))    # a plain copy does
    strided = np.empty((K, T, 2 * N), np.float32)[..., ::2]      # a strided last axis
    _layout.copy_blocks(np, strided, a.transpose(1, 0, 2))
    np.testing.assert_array_equal(strided, a.transpose(1, 0, 2))


def test_a_prepared_subclass_written_before_the_layouts_still_runs():
    """A ``Prepared`` of one's own acceleration that sets no gate count and whose ``cell``
    takes (xw, states) runs batch-major, as it did."""
    from npnn.functional.accel._common import Prepared

    class Old(Prepared):
        def __init__(self, W_ih, W_hh):
            self.xp, self.W_ih, self.W_hh, self.b_in = np, W_ih, W_hh, None

        def cell(self, xw, states):
            return (np.tanh(xw + states[0] @ self.W_hh.T),)
    rng = np.random.default_rng(0)
    W_ih, W_hh = rng.standard_normal((300, 3)), 0.1 * rng.standard_normal((300, 300))
    old = Old(W_ih, W_hh)
    x = rng.standard_normal((4, 30, 3))
    with use_layout("feature"):
        out, (h,) = old.sequence(x, (None,))
        (h1,) = old.step(x[0], (None,))
    with accel.use_reference():
        ref = F.rnn_forward(x, None, W_ih, W_hh)
    np.testing.assert_allclose(out, ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(h1, ref[0][0], rtol=0, atol=1e-12)


def test_prepared_steps_choose_once_per_shape_not_once_per_step(monkeypatch):
    """A decoder asks at every step: the choice (its environment reads) is made at the
    first step of each N and kind, and again only inside another ``use_layout`` block."""
    calls = []
    real = _layout.choose
    monkeypatch.setattr(_layout, "choose", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    rng = np.random.default_rng(0)
    W = [rng.standard_normal(s) for s in ((9, 2), (9, 3), (9,), (9,))]
    prepared = accel.gru.Prepared(*W)
    for N in (4, 4, 4, 2, 2):
        prepared.step(rng.standard_normal((N, 2)), (None,))
    assert calls == [4, 2]
    with use_layout(FEATURE):
        prepared.step(rng.standard_normal((4, 2)), (None,))
        prepared.step(rng.standard_normal((4, 2)), (None,))
    assert calls == [4, 2, 4]
