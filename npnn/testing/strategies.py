"""Hypothesis strategies for recurrent layers, built on ``hypothesis.extra.numpy``.

Every dimension may be 1 (T=1, N=1, D=1, H=1 are the classic bug-finders), and values
are bounded float64 so that no gate saturates and central differences stay accurate::

    from hypothesis import given
    from npnn.testing import strategies as nst

    @given(nst.sequences(max_T=4, max_N=3, D=5))
    def test_my_layer(x):                        # x (T, N, 5) float64
        ...

Needs Hypothesis (``pip install hypothesis``, or npnn's ``test`` extra).
"""

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as error:       # pragma: no cover - exercised without Hypothesis
    raise ImportError("npnn.testing.strategies needs Hypothesis: pip install hypothesis "
                      "(or pip install 'npnn[test]')") from error

from typing import Any, Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

#: Values stay within [-BOUND, BOUND]: with weights of PyTorch's initial size, the
#: gates' pre-activations stay in sigmoid's and tanh's non-saturated range.
BOUND = 1.0


def values(bound: float = BOUND, dtype: DTypeLike = np.float64) -> st.SearchStrategy[float]:
    """Finite floats in [-bound, bound] (no NaN, no infinity), of ``dtype``."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                     width=np.dtype(dtype).itemsize * 8)  # type: ignore[arg-type]  # 16, 32, 64


def dims(max_value: int, min_value: int = 1) -> st.SearchStrategy[int]:
    """One dimension: an integer in [min_value, max_value] (1 allowed by default)."""
    return st.integers(min_value, max_value)


def _dim(d: Optional[int], max_d: int) -> st.SearchStrategy[int]:
    return st.just(d) if d is not None else dims(max_d)


def arrays(shape: Union[Tuple[int, ...], st.SearchStrategy[Tuple[int, ...]]], bound: float = BOUND,
           dtype: DTypeLike = np.float64) -> st.SearchStrategy[NDArray[Any]]:
    """Arrays of ``shape`` (a tuple, or a strategy of tuples) with bounded values."""
    return hnp.arrays(np.dtype(dtype), shape, elements=values(bound, dtype))


@st.composite
def sequences(draw: st.DrawFn, T: Optional[int] = None, N: Optional[int] = None,
              D: Optional[int] = None, *, max_T: int = 5, max_N: int = 4, max_D: int = 4,
              bound: float = BOUND, dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """Time-major sequences (T, N, D): a dimension given is fixed, one left None drawn
    from 1..max_*."""
    shape = (draw(_dim(T, max_T)), draw(_dim(N, max_N)), draw(_dim(D, max_D)))
    return draw(arrays(shape, bound, dtype))


def lengths(N: int, T: int) -> st.SearchStrategy[NDArray[np.int64]]:
    """Valid ``lengths`` for a batch of N sequences padded to T steps: N integers in
    1..T, in any order (npnn, like ``pack_padded_sequence(enforce_sorted=False)``,
    needs no sorting)."""
    return hnp.arrays(np.int64, (N,), elements=st.integers(1, T))


@st.composite
def layer_inputs(draw: st.DrawFn, layer: Any, *, max_T: int = 5, max_N: int = 4, hx: bool = True,
                 bound: float = BOUND) -> Tuple[NDArray[Any], Any]:
    """Positional arguments ``(x, hx)`` for an npnn recurrent layer or cell, shaped by
    it: a sequence layer (``npnn.RNN``, ``npnn.LSTM``, ``npnn.Recurrent``) gets x (T, N, D)
    (or (N, T, D) with ``batch_first``) and hx (L * directions, N, H); a one-step cell
    (``npnn.GRUCell``...) x (N, D) and hx (N, H). hx is a tuple for a cell with several
    states ((h0, c0) for LSTM), None when ``hx`` is False."""
    spec, D, H = layer.spec, layer.input_size, layer.hidden_size
    N = draw(dims(max_N))
    dtype = np.dtype(getattr(layer, "dtype", np.float64))
    if hasattr(layer, "num_layers"):
        T = draw(dims(max_T))
        x = draw(arrays((N, T, D) if layer.batch_first else (T, N, D), bound, dtype))
        state_shape: Tuple[int, ...] = (layer.num_layers * layer.num_directions, N, H)
    else:
        x = draw(arrays((N, D), bound, dtype))
        state_shape = (N, H)
    if not hx:
        return x, None
    states = tuple(draw(arrays(state_shape, bound, dtype)) for _ in spec.states)
    return x, (states[0] if len(states) == 1 else states)
