"""The accelerations' reused memory (``npnn/functional/accel/_pool.py``): a buffer is
handed out again only when no array made from it is alive, the pool stays within its
limit, and it can be switched off."""

import gc
import weakref

import numpy as np
import pytest

from npnn.functional import accel
from npnn.functional.accel import _pool


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(_pool, "_BUFFERS", [])
    monkeypatch.delenv("NPNN_POOL", raising=False)
    monkeypatch.delenv("NPNN_POOL_MB", raising=False)
    return _pool


def base(a):
    while a.base is not None:
        a = a.base
    return a


def test_a_buffer_is_reused_only_when_nothing_refers_to_it(pool):
    shape = (pool.MIN_BYTES // 4 + 2,)                 # 5 values past the first 5 a row
    a = pool.empty(np, shape, np.float32)
    assert a.shape == shape and a.dtype == np.float32 and a.ctypes.data % pool.ALIGN == 0
    a[:] = 1
    view = a[5:].reshape(-1, 5)[::2]                    # a view of a view keeps it too
    del a
    b = pool.empty(np, shape, np.float32)
    assert not np.shares_memory(b, view) and len(pool._BUFFERS) == 2
    assert np.all(view == 1)
    del view
    gc.collect()
    c = pool.empty(np, shape, np.float32)               # the first buffer, free again
    assert len(pool._BUFFERS) == 2 and not np.shares_memory(c, b)
    assert pool.kept() == (2 * shape[0] * 4, 2 * shape[0] * 4)
    del b, c
    assert pool.kept()[1] == 0
    pool.release()
    assert pool.kept() == (0, 0)


def test_small_arrays_and_cupy_are_not_pooled_and_the_switch_turns_it_off(pool, monkeypatch):
    small = pool.empty(np, (10, 10), np.float64)
    assert small.shape == (10, 10) and pool._BUFFERS == []

    class FakeModule:
        def empty(self, shape, dtype):
            return ("device", shape, dtype)
    assert pool.empty(FakeModule(), (1 << 20,), np.float32)[0] == "device"
    monkeypatch.setenv("NPNN_POOL", "0")
    big = pool.empty(np, (1 << 20,), np.float32)
    assert big.shape == (1 << 20,) and pool._BUFFERS == []


def test_the_pool_keeps_within_its_limit(pool, monkeypatch):
    monkeypatch.setenv("NPNN_POOL_MB", "1")             # 1 MiB
    quarter = (1 << 18) // 4                            # float32: 256 KiB
    held = [pool.empty(np, (quarter,), np.float32) for _ in range(4)]
    assert pool.kept() == (1 << 20, 1 << 20)
    extra = pool.empty(np, (quarter,), np.float32)      # over the limit: a plain array
    assert base(extra) is not None and pool.kept()[0] == 1 << 20
    assert not any(np.shares_memory(extra, h) for h in held)
    del held[:2]
    big = pool.empty(np, (2 * quarter,), np.float32)    # the free buffers dropped for it
    assert pool.kept() == (1 << 20, 1 << 20) and len(pool._BUFFERS) == 3
    assert not any(np.shares_memory(big, h) for h in held)
    monkeypatch.setenv("NPNN_POOL_MB", "lots")
    with pytest.raises(ValueError, match="expected NPNN_POOL_MB to be a number of megabytes, "
                                         "got 'lots'"):
        pool.empty(np, (quarter,), np.float32)


def test_a_miss_drops_the_free_buffers_nobody_asked_for_lately(pool):
    """The pool keeps no stock of sizes nobody asks for any more: at a miss, the free
    buffers no request took in the last STALE go."""
    a = pool.empty(np, (1 << 16,), np.float32)          # 256 KiB
    b = pool.empty(np, (1 << 17,), np.float32)          # 512 KiB
    del a, b
    assert pool.kept() == (3 << 18, 0)
    c = pool.empty(np, (1 << 19,), np.float32)          # 2 MiB: fits neither, both recent
    assert pool.kept() == (3 << 18 | 1 << 21, 1 << 21) and len(pool._BUFFERS) == 3
    for _ in range(pool.STALE):                         # c asked for again and again
        del c
        c = pool.empty(np, (1 << 19,), np.float32)
    d = pool.empty(np, (1 << 20,), np.float32)          # 4 MiB: a miss, a and b stale
    assert pool.kept() == (1 << 21 | 1 << 22, 1 << 21 | 1 << 22) and len(pool._BUFFERS) == 2
    del c, d


def test_a_step_whose_arrays_come_and_go_gets_its_buffers_back(pool):
    """Every request of a repeated step is served from the pool from the second step on,
    whatever the order: here a small array freed before a large one misses (the
    language model's step got 7 new buffers a step when a miss dropped every free
    buffer)."""
    made = []
    real = pool._new
    pool_new = lambda size: made.append(size) or real(size)  # noqa: E731
    pool._new = pool_new
    try:
        for _ in range(3):
            made.clear()
            held = pool.empty(np, (1 << 17,), np.float32)   # kept across the step (a cache)
            w = pool.empty(np, (1 << 16,), np.float32)      # freed within the step
            del w
            dz = pool.empty(np, (1 << 18,), np.float32)     # a miss on the first step
            del held, dz
    finally:
        pool._new = real
    assert made == []
    assert pool.kept() == ((1 << 19) + (1 << 18) + (1 << 20), 0)


def test_a_kept_result_is_never_overwritten_by_the_next_call(pool):
    """A caller keeps the outputs and the cache of one call; the next calls (same shapes,
    other numbers) must find other memory for theirs."""
    rng = np.random.default_rng(0)
    T, N, D, H = 20, 32, 8, 64                          # arrays above MIN_BYTES
    W = [0.1 * rng.standard_normal(s).astype(np.float32)
         for s in ((4 * H, D), (4 * H, H), (4 * H,), (4 * H,))]
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    with accel.use_acceleration():
        out, h, c, cache = accel.lstm.forward(x, None, None, *W)
        kept = [a.copy() for a in (out, h, c)]
        grads = accel.lstm.backward(np.ones_like(out), None, None, cache)
        kept_grads = [g.copy() for g in (grads[0], *grads[3].values())]
        for _ in range(3):
            o2, h2, c2, cache2 = accel.lstm.forward(-x, None, None, *W)
            accel.lstm.backward(-np.ones_like(o2), None, None, cache2)
    for a, b in zip((out, h, c), kept):
        np.testing.assert_array_equal(a, b)
    for a, b in zip((grads[0], *grads[3].values()), kept_grads):
        np.testing.assert_array_equal(a, b)
    assert pool.kept()[0] > 0


def test_a_buffer_held_long_is_not_stale_when_it_comes_back(pool):
    """Staleness counts from the last request that found a buffer in use: a cache held
    over more than STALE requests, freed just before a miss, is kept for the next step."""
    made = []
    real = pool._new
    pool._new = lambda size: made.append(size) or real(size)
    try:
        for step in range(3):
            made.clear()
            cache = pool.empty(np, (1 << 18,), np.float32)          # 1 MiB, held long
            for _ in range(pool.STALE + 6):
                pool.empty(np, (1 << 16,), np.float32)              # freed at once
            del cache
            pool.empty(np, ((1 << 17) + 1024 * step,), np.float32)  # a new size each step
            if step:
                assert made == [(1 << 19) + 4096 * step], step      # only the new size
    finally:
        pool._new = real


def test_over_the_limit_the_longest_unused_free_buffers_go_and_only_to_make_room(pool,
                                                                              monkeypatch):
    monkeypatch.setenv("NPNN_POOL_MB", "4")
    quarter = (1 << 18) // 4                                        # 256 KiB of float32
    a, b, c = (pool.empty(np, ((k + 1) * quarter,), np.float32) for k in range(3))
    bases = [weakref.ref(base(v)) for v in (a, b, c)]              # (holding none of them)
    del a, b, c
    pool.empty(np, (quarter,), np.float32)                          # a's buffer, taken again
    assert pool.kept() == (6 << 18, 0)
    huge = pool.empty(np, (1 << 21,), np.float32)                   # 8 MiB: never fits
    assert all(base(huge) is not v() for v in bases)
    assert pool.kept() == (6 << 18, 0)                              # and the stock is kept
    d = pool.empty(np, (3 << 18,), np.float32)      # 3 MiB: 0.5 MiB over; b's goes, last
    assert [v() is not None for v in bases] == [True, False, True]  # in use longest ago,
    assert len(pool._BUFFERS) == 3                                  # and only b's
    assert pool.kept() == (4 << 20, 3 << 20)
    del d
