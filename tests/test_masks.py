"""Variable-length batches: padding is handled by selection, never by arithmetic.

Whatever the padding holds (NaN and inf included: data from pandas is often
padded with NaN) never reaches a valid output, a final state or any gradient,
and an all-valid mask gives bit for bit the results of no mask. Every cell of
the registry, on both paths (the accelerations and the reference).
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from npnn import functional as F
from npnn.functional.registry import CELLS, as_states
from npnn.gradcheck.cases import cell_sizes
from npnn.layers.recurrent import layer_class

from conftest import PATHS, on_path

CELL_NAMES = sorted(CELLS)


def _arrays(cell, T, N, D, H, seed):
    spec, sizes = CELLS[cell], cell_sizes(cell, H)
    rng = np.random.default_rng(seed)
    params = {p.arg: (np.log(rng.uniform(0.8, 3.0, shape)) if p.arg == "log_tau"
                      else 0.5 * rng.standard_normal(shape))
              for p, shape in spec.param_shapes(D, H, **sizes)}
    x = rng.standard_normal((T, N, D))
    shapes = spec.state_shapes(N, H, **sizes)
    states = tuple(0.5 * rng.standard_normal(shape) for shape in shapes)
    dout = rng.standard_normal((T, N, spec.output_size(H, **sizes)))
    dfinals = tuple(rng.standard_normal(shape) for shape in shapes)
    return spec, params, x, states, dout, dfinals


def _run(spec, x, states, params, dout, dfinals, mask=None, path="accelerated"):
    with on_path(path):
        out, finals, cache = spec.run(x, states, params, mask)
    dx, dinits, grads = spec.run_backward(dout, dfinals, cache)
    return out, finals, dx, dinits, grads


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELL_NAMES)
@given(T=st.integers(1, 5), N=st.integers(1, 4), D=st.integers(1, 3), H=st.integers(1, 3),
       fill=st.sampled_from([np.nan, np.inf, -np.inf, 1e300]), seed=st.integers(0, 2**32 - 1))
@example(T=4, N=2, D=3, H=4, fill=np.nan, seed=0)      # the reported case: x[2, 1] = nan, length 2
def test_padding_never_reaches_valid_results(path, cell, T, N, D, H, fill, seed):
    """Each sequence of a padded batch gives what it gives alone, cut to its length."""
    spec, params, x, states, dout, dfinals = _arrays(cell, T, N, D, H, seed)
    rng = np.random.default_rng(seed + 1)
    lengths = rng.integers(1, T + 1, size=N)
    if T == 4 and N == 2 and seed == 0:
        lengths = np.array([4, 2])
    mask = F.length_mask(lengths, T)
    x[~mask] = fill
    out, finals, dx, dinits, grads = _run(spec, x, states, params, dout, dfinals, mask, path)
    for a in (out, *finals, dx, *dinits, *grads.values()):
        assert np.all(np.isfinite(a))
    total = {k: np.zeros_like(g) for k, g in grads.items()}
    for n, L in enumerate(lengths):
        one = _run(spec, x[:L, n:n + 1], tuple(s[n:n + 1] for s in states), params,
                   dout[:L, n:n + 1], tuple(d[n:n + 1] for d in dfinals), path=path)
        o, f, g, di, gr = one
        np.testing.assert_allclose(out[:L, n:n + 1], o, rtol=1e-12, atol=1e-12)
        assert not out[L:, n].any()                               # outputs past the end: 0
        for a, b in zip(finals, f):
            np.testing.assert_allclose(a[n:n + 1], b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx[:L, n:n + 1], g, rtol=1e-12, atol=1e-12)
        assert not dx[L:, n].any()                                # padding gets no gradient
        for a, b in zip(dinits, di):
            np.testing.assert_allclose(a[n:n + 1], b, rtol=1e-12, atol=1e-12)
        for k in total:
            total[k] += gr[k]
    for k in grads:
        np.testing.assert_allclose(grads[k], total[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELL_NAMES)
@given(T=st.integers(1, 5), N=st.integers(1, 4), D=st.integers(1, 3), H=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_an_all_valid_mask_is_bit_identical_to_no_mask(path, cell, T, N, D, H, seed):
    spec, params, x, states, dout, dfinals = _arrays(cell, T, N, D, H, seed)
    full = np.ones((T, N), dtype=bool)
    plain = _run(spec, x, states, params, dout, dfinals, path=path)
    masked = _run(spec, x, states, params, dout, dfinals, full, path)
    flat = lambda r: [r[0], *r[1], r[2], *r[3], *(r[4][k] for k in sorted(r[4]))]  # noqa: E731
    for a, b in zip(flat(plain), flat(masked)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_nan_in_padding_through_the_layers(path, cell, bidirectional):
    """The report's reproduction: x[2, 1] = nan in the padding of a length-2 sequence."""
    rng = np.random.default_rng(0)
    layer = layer_class(cell)(3, 4, num_layers=2, bidirectional=bidirectional, dtype="float64",
                              seed=0, **cell_sizes(cell, 4))
    x = rng.standard_normal((4, 2, 3))
    lengths = np.array([4, 2])
    clean = x.copy()
    clean[2:, 1] = 0.0
    x[2, 1] = np.nan
    results = []
    for inp in (x, clean):
        layer.zero_grad()
        with on_path(path):
            out, h_n = layer(inp, lengths=lengths)
        d_h = tuple(np.ones_like(s) for s in as_states(h_n))
        dx, dhx = layer.backward(np.ones_like(out), d_h if len(d_h) > 1 else d_h[0])
        results.append([out, *as_states(h_n), dx, *as_states(dhx),
                        *(g.copy() for g in layer.grads.values())])
    for a, b in zip(*results):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)

