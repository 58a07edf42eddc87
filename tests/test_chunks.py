"""The chunk test: T steps at once equal two chunks with the state carried
over, forward and backward (the truncated-BPTT contract)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npnn import functional as F
from npnn.backend import to_backend

from conftest import assert_close

ATOL = 1e-12


def _params(rng, G, D, H, backend):
    return [to_backend(0.5 * rng.standard_normal(s), backend)
            for s in ((G * H, D), (G * H, H), (G * H,), (G * H,))]


@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), T=st.integers(2, 8), N=st.integers(1, 4),
       D=st.integers(1, 5), H=st.integers(1, 5), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_two_chunks_equal_one_sequence(backend, cell, T, N, D, H, data, seed):
    k = data.draw(st.integers(1, T - 1), label="split")
    rng = np.random.default_rng(seed)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    W = _params(rng, G, D, H, backend)
    x = to_backend(rng.standard_normal((T, N, D)), backend)
    states = [to_backend(0.5 * rng.standard_normal((N, H)), backend)
              for _ in range(2 if cell == "lstm" else 1)]
    dout = to_backend(rng.standard_normal((T, N, H)), backend)
    dfinal = [to_backend(rng.standard_normal((N, H)), backend) for _ in states]
    # the ops as layers run them: accelerated where it pays (on a device, from two steps)
    forward, backward = getattr(F.fast, f"{cell}_forward"), getattr(F.fast, f"{cell}_backward")

    def run(xs, init):
        *res, cache = forward(xs, *init, *W)
        return res[0], res[1:], cache

    out, final, cache = run(x, states)
    out1, mid, cache1 = run(x[:k], states)
    out2, final2, cache2 = run(x[k:], [s.copy() for s in mid])
    assert_close(out[:k], out1, ATOL, "out[:k]")
    assert_close(out[k:], out2, ATOL, "out[k:]")
    for a, b in zip(final, final2):
        assert_close(a, b, ATOL, "final state")

    *g_full, grads = backward(dout, *dfinal, cache)
    *g2, grads2 = backward(dout[k:], *dfinal, cache2)
    dx2, dmid = g2[0], g2[1:]
    *g1, grads1 = backward(dout[:k], *dmid, cache1)
    assert_close(g_full[0][:k], g1[0], ATOL, "dx[:k]")
    assert_close(g_full[0][k:], dx2, ATOL, "dx[k:]")
    for a, b in zip(g_full[1:], g1[1:]):
        assert_close(a, b, ATOL, "d initial state")
    for name in grads:
        assert_close(grads[name], grads1[name] + grads2[name], ATOL, name)
