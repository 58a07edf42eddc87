"""What every recurrent cell's sequence op shares: the input product before the time
loop, the weight-gradient products after it, the gradients a backward starts from,
and masks (their argument checks live with every other rule, in ``npnn._checks``).

A *mask* ``m (T, N)`` marks the valid steps of each sequence (True valid,
False padding). Padded steps are handled by *selection*, never by arithmetic:

    forward:   s_t = s_new   where m_t,   s_{t-1} elsewhere     (the state is carried over)
               out_t = h_t   where m_t,   0 elsewhere
    backward:  a padded step passes the gradient of its state straight back to
               s_{t-1} and adds nothing to any other gradient.

Selecting (``where``) rather than blending (``m * s_new + (1 - m) * s_old``)
matters: whatever the padding holds, NaN or inf included, never reaches a valid
output, state or gradient, since 0 * NaN is NaN but ``where`` does not look at
the value it drops. It also makes an all-valid mask give exactly the results
of no mask. With ``m`` from ``length_mask(lengths, T)`` this is PyTorch's
packed-sequence semantics: each sequence's final state is its state at its
last valid step.
"""

from typing import Dict, List, Optional, Sequence, Tuple

from numpy.typing import DTypeLike

from .._checks import check_float, check_integer, check_shape
from .._typing import Array, ArrayModule
from ..backend import get_array_module


def output_grads(x: Array, m: Optional[Array], S: int, dout: Optional[Array],
                 finals: Dict[str, Optional[Array]],
                 copy: bool = False) -> Tuple[ArrayModule, Optional[Array], List[Array]]:
    """Where a backward starts: the gradients of the outputs, checked.

    ``dout`` (T, N, S) or None (the outputs do not reach the loss) comes back
    with its padded steps zeroed (a padded step outputs a constant 0; ``m``
    (T, N, 1) is the valid-step mask or None). ``finals`` maps each final
    state's name ('dh_n', ...) to its gradient (N, S) or None, which comes back
    as zeros; with ``copy`` the given ones come back as copies, for code that
    updates them in place. S is the size of the states and outputs.
    Returns (xp, dout, list of the final states' gradients).
    """
    xp = get_array_module(x)
    T, N = x.shape[:2]
    starts = state_grads(x, N, S, finals, copy)
    if dout is not None:
        check_float("dout", dout, x.dtype)
        check_shape("dout", dout, (T, N, S))
        dout = valid_only(xp, dout, m)
    return xp, dout, starts


def state_grads(x: Array, N: int, S: int, grads: Dict[str, Optional[Array]],
                copy: bool = False) -> List[Array]:
    """The gradients of states (a dict name -> (N, S) array or None), checked against
    x's dtype; None comes back as zeros, the others as copies with ``copy``."""
    xp = get_array_module(x)
    out = []
    for name, d in grads.items():
        if d is None:
            out.append(xp.zeros((N, S), dtype=x.dtype))
        else:
            check_float(name, d, x.dtype)
            check_shape(name, d, (N, S))
            out.append(d.copy() if copy else d)
    return out


def length_mask(lengths: Array, T: int) -> Array:
    """Mask (T, N) that is True at steps t < lengths[n].

    ``lengths`` is an integer array of N sequence lengths in 1..T (any order).
    """
    check_integer("lengths", lengths)
    check_shape("lengths", lengths, (None,), "N")
    xp = get_array_module(lengths)
    bad = (lengths < 1) | (lengths > T)
    if bool(xp.any(bad)):
        raise ValueError(f"expected lengths between 1 and T={T} (the number of time steps), "
                         f"got {int(lengths[bad].ravel()[0])}")
    return xp.arange(T)[:, None] < lengths[None, :]  # (T, N)


# -- pieces of every sequence op --------------------------------------------------------

def split_gates(z: Array, G: int) -> Tuple[Array, ...]:
    """The G gate blocks of z (..., G*H), in their stacking order, as views (..., H)."""
    H = z.shape[-1] // G
    return tuple(z[..., k * H:(k + 1) * H] for k in range(G))


def initial_state(xp: ArrayModule, s: Optional[Array], N: int, H: int, dtype: DTypeLike) -> Array:
    """The given initial state, or zeros (N, H)."""
    return xp.zeros((N, H), dtype=dtype) if s is None else s


def step_mask(mask: Optional[Array]) -> Optional[Array]:
    """Mask (T, N) -> boolean (T, N, 1), ready to select whole rows of (N, H) states."""
    return None if mask is None else mask.astype(bool)[:, :, None]


def input_half(x: Array, W_ih: Array, b_ih: Optional[Array] = None) -> Array:
    """x_t W_ih^T + b_ih for every step at once: x (T, N, D) (or one step's (N, D))
    -> (T, N, G*H), one (T*N, D) x (D, G*H) product."""
    D = x.shape[-1]
    xw = (x.reshape(-1, D) @ W_ih.T).reshape(x.shape[:-1] + (W_ih.shape[0],))
    return xw if b_ih is None else xw + b_ih


def keep_padded(xp: ArrayModule, m_t: Array, new: Sequence[Array],
                old: Sequence[Array]) -> Tuple[Array, ...]:
    """Forward, padded rows: each state of ``new`` where m_t, the old state elsewhere."""
    return tuple(xp.where(m_t, s_new, s_old) for s_new, s_old in zip(new, old))


def pass_padded(xp: ArrayModule, m_t: Array, through_cell: Sequence[Array],
                reaching: Sequence[Array]) -> Tuple[Array, ...]:
    """Backward, padded rows: the gradient that reached the state passes straight back."""
    return tuple(xp.where(m_t, d_cell, d) for d_cell, d in zip(through_cell, reaching))


def masked_output(xp: ArrayModule, h: Array, m: Optional[Array]) -> Array:
    """out_t = h_t at valid steps, 0 at padded ones (h (T, N, H), m (T, N, 1) or None)."""
    return h if m is None else xp.where(m, h, 0)


def valid_only(xp: ArrayModule, a: Array, m: Optional[Array]) -> Array:
    """The gradient ``a`` (T, N, .) with its padded rows set to zero."""
    return a if m is None else xp.where(m, a, 0)


def input_and_weight_grads(dxw: Array, dhw: Array, x: Array, h_prev: Array, W_ih: Array,
                           has_bias: bool,
                           m: Optional[Array] = None) -> Tuple[Array, Dict[str, Array]]:
    """What follows the backward loop, as single products over all T*N rows.

    dxw, dhw: (T, N, G*H) gradients of the input half x W_ih^T + b_ih and of
    the recurrent half h_{t-1} W_hh^T + b_hh (the same array for RNN and LSTM,
    where both halves enter one sum); x (T, N, D); h_prev (T, N, H) the states
    each step read (or, for one step, (N, .) arrays). Padded rows of dxw, dhw
    are zero; ``m`` also keeps whatever the padding of x holds out of dW_ih.

    Returns dx (shaped like x) and {'W_ih', 'W_hh'} (and 'b_ih', 'b_hh' with biases).
    """
    xp = get_array_module(x)
    D, GH, H = x.shape[-1], dxw.shape[-1], h_prev.shape[-1]
    dxw2, dhw2 = dxw.reshape(-1, GH), dhw.reshape(-1, GH)           # (T*N, G*H)
    dx = (dxw2 @ W_ih).reshape(x.shape)
    x2 = valid_only(xp, x, m).reshape(-1, D)
    # dot, not @: for a single row (T * N = 1, a step taken by hand) NumPy's matmul
    # forms the outer product without BLAS, 4-7 times slower than dot
    grads = {"W_ih": xp.dot(dxw2.T, x2), "W_hh": xp.dot(dhw2.T, h_prev.reshape(-1, H))}
    if has_bias:
        grads["b_ih"] = dxw2.sum(axis=0)
        grads["b_hh"] = dhw2.sum(axis=0)
    return dx, grads
