"""Every op of ``npnn.functional`` wrapped for ``check_gradients``.

Each ``*_case`` builder takes a ``numpy.random.Generator`` and sizes and
returns ``(f, inputs)``: ``f(**inputs) -> (outputs, vjp)``. The test suite
draws the sizes with Hypothesis; ``python -m npnn.gradcheck`` uses
``builtin_cases`` with one fixed set. Values are drawn from N(0, 0.5^2) so
that no gate saturates and finite differences stay accurate.
"""

import contextlib
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from .. import functional as F
from .._typing import Array, CheckedFunction, Vjp
from ..backend import to_backend
from ..functional.accel import use_acceleration, use_reference
from ..functional.layernorm import layer_norm, layer_norm_backward
from ..functional.registry import CELLS

#: A case: the checked function and its inputs by name.
Case = Tuple[CheckedFunction, Dict[str, Any]]


_PATHS = {"auto": contextlib.nullcontext, "reference": use_reference,
          "accelerated": use_acceleration}


def _normal(rng: np.random.Generator, shape: Tuple[int, ...], backend: str,
            scale: float = 0.5) -> Array:
    return to_backend(scale * rng.standard_normal(shape), backend)


def cell_sizes(cell: str, H: int, sizes: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """The size options of a registered cell (``proj_size`` of 'lstmp'): ``sizes`` where
    given, else each H - 1 (at least 1), so that a mix-up with H shows."""
    return {name: max(1, H - 1) for name in CELLS[cell].sizes} if sizes is None else sizes


def _recurrent_params(rng: np.random.Generator, cell: str, D: int, H: int, bias: bool, backend: str,
                      sizes: Optional[Dict[str, int]] = None) -> Dict[str, Array]:
    """The op's parameters of a registered cell, by argument name; time constants
    (CTRNN's log_tau) drawn so that tau lies in [0.8, 3]."""
    params = {}
    for p, shape in CELLS[cell].param_shapes(D, H, bias, **cell_sizes(cell, H, sizes)):
        params[p.arg] = (to_backend(np.log(rng.uniform(0.8, 3.0, size=shape)), backend)
                         if p.arg == "log_tau"
                         else _normal(rng, shape, backend))
    return params


def _random_mask(rng: np.random.Generator, T: int, N: int, backend: str) -> Array:
    """A length mask with lengths drawn from 1..T, at least one full length."""
    lengths = rng.integers(1, T + 1, size=N)
    lengths[rng.integers(N)] = T
    return F.length_mask(to_backend(lengths, backend), T)


def recurrent_case(rng: np.random.Generator, cell: str, T: int = 3, N: int = 2, D: int = 4,
                   H: int = 3, bias: bool = True, masked: bool = False, backend: str = "numpy",
                   path: str = "auto", sizes: Optional[Dict[str, int]] = None,
                   **options: Any) -> Case:
    """The sequence op of any registered cell: gradients of (out, final states) w.r.t.
    x, the initial states (``h0``, ``c0``, ...) and every parameter. ``path``:
    'auto' (what runs by default), 'reference' or 'accelerated' (forced, where the
    cell has an acceleration); ``sizes`` the cell's size options (``cell_sizes``)."""
    spec, sizes = CELLS[cell], cell_sizes(cell, H, sizes)
    mask = _random_mask(rng, T, N, backend) if masked else None
    initial = [state + "0" for state in spec.states]
    inputs = {"x": _normal(rng, (T, N, D), backend, 1.0),
              **{name: _normal(rng, shape, backend)
                 for name, shape in zip(initial, spec.state_shapes(N, H, **sizes))},
              **_recurrent_params(rng, cell, D, H, bias, backend, sizes)}

    def f(x: Array, **rest: Array) -> Tuple[Tuple[Array, ...], Vjp]:
        states = tuple(rest.pop(name) for name in initial)
        with _PATHS[path]():
            out, finals, cache = spec.run(x, states, rest, mask, **options)

        def vjp(d: Any) -> Dict[str, Array]:
            dx, dinits, grads = spec.run_backward(d[0], d[1:], cache)
            return {"x": dx, **dict(zip(initial, dinits)), **grads}
        return (out,) + finals, vjp
    return f, inputs


def rnn_case(rng: np.random.Generator, T: int = 3, N: int = 2, D: int = 4, H: int = 3,
             bias: bool = True, nonlinearity: str = "tanh", masked: bool = False,
             backend: str = "numpy", path: str = "auto") -> Case:
    """Sequence RNN: gradients of (out, h_n) w.r.t. x, h0 and every parameter."""
    return recurrent_case(rng, "rnn", T, N, D, H, bias, masked, backend, path,
                          nonlinearity=nonlinearity)


def jordan_case(rng: np.random.Generator, T: int = 3, N: int = 2, D: int = 4, H: int = 3,
                O: int = 2, bias: bool = True, masked: bool = False,
                backend: str = "numpy") -> Case:
    """Jordan network with an output size O of its own: gradients w.r.t. x, y0 and every
    weight (the registry's Jordan layer has O = H; the op allows any O)."""
    mask = _random_mask(rng, T, N, backend) if masked else None
    inputs = {"x": _normal(rng, (T, N, D), backend, 1.0), "y0": _normal(rng, (N, O), backend),
              "W_ih": _normal(rng, (H, D), backend), "W_yh": _normal(rng, (H, O), backend),
              "W_hy": _normal(rng, (O, H), backend)}
    if bias:
        inputs.update({"b_h": _normal(rng, (H,), backend), "b_y": _normal(rng, (O,), backend)})

    def f(x: Array, y0: Array, W_ih: Array, W_yh: Array, W_hy: Array, b_h: Optional[Array] = None,
          b_y: Optional[Array] = None) -> Tuple[Tuple[Array, ...], Vjp]:
        out, y_n, cache = F.jordan_forward(x, y0, W_ih, W_yh, W_hy, b_h, b_y, mask)

        def vjp(d: Any) -> Dict[str, Array]:
            dx, dy0, grads = F.jordan_backward(d[0], d[1], cache)
            return {"x": dx, "y0": dy0, **grads}
        return (out, y_n), vjp
    return f, inputs


def step_case(rng: np.random.Generator, cell: str, N: int = 2, D: int = 4, H: int = 3,
              bias: bool = True, backend: str = "numpy", sizes: Optional[Dict[str, int]] = None,
              **options: Any) -> Case:
    """One step of any registered cell: gradients of its new states w.r.t. x, the
    previous states (``h``, ``c``, ...) and every parameter."""
    spec, sizes = CELLS[cell], cell_sizes(cell, H, sizes)
    inputs = {"x": _normal(rng, (N, D), backend, 1.0),
              **{state: _normal(rng, shape, backend)
                 for state, shape in zip(spec.states, spec.state_shapes(N, H, **sizes))},
              **_recurrent_params(rng, cell, D, H, bias, backend, sizes)}

    def f(x: Array, **rest: Array) -> Tuple[Tuple[Array, ...], Vjp]:
        states = tuple(rest.pop(state) for state in spec.states)
        new, cache = spec.run_step(x, states, rest, **options)

        def vjp(d: Any) -> Dict[str, Array]:
            dx, dprev, grads = spec.run_step_backward(d, cache)
            return {"x": dx, **dict(zip(spec.states, dprev)), **grads}
        return new, vjp
    return f, inputs


def linear_case(rng: np.random.Generator, lead: Tuple[int, ...] = (2, 3), D: int = 4, O: int = 3,
                bias: bool = True, backend: str = "numpy") -> Case:
    """Affine map over any leading dimensions."""
    inputs = {"x": _normal(rng, tuple(lead) + (D,), backend, 1.0),
              "W": _normal(rng, (O, D), backend)}
    if bias:
        inputs["b"] = _normal(rng, (O,), backend)

    def f(x: Array, W: Array, b: Optional[Array] = None) -> Tuple[Array, Vjp]:
        y, cache = F.linear_forward(x, W, b)

        def vjp(dy: Any) -> Dict[str, Array]:
            dx, grads = F.linear_backward(dy, cache)
            return {"x": dx, **grads}
        return y, vjp
    return f, inputs


def embedding_case(rng: np.random.Generator, lead: Tuple[int, ...] = (3, 2), V: int = 5, E: int = 3,
                   padding_idx: Optional[int] = None, backend: str = "numpy",
                   dropout: float = 0.0) -> Case:
    """Embedding lookup; indices repeat, so the scatter-add is exercised. With ``dropout``
    p, embedding dropout's row scale (0 or 1 / (1 - p) per word), drawn once and fixed."""
    idx = to_backend(rng.integers(0, V, size=tuple(lead)), backend)
    inputs = {"W": _normal(rng, (V, E), backend, 1.0)}
    row_scale = None if not dropout else to_backend(
        (rng.random(V) >= dropout) / (1.0 - dropout), backend)              # (V,)

    frozen = None if padding_idx is None else inputs["W"][padding_idx].copy()

    def f(W: Array) -> Tuple[Array, Vjp]:
        if padding_idx is not None:  # the padding row is a constant: no gradient by design
            W = W.copy()
            W[padding_idx] = frozen
        y, cache = F.embedding_forward(idx, W, padding_idx, row_scale)

        def vjp(dy: Any) -> Dict[str, Array]:
            return F.embedding_backward(dy, cache)
        return y, vjp
    return f, inputs


def cross_entropy_case(rng: np.random.Generator, lead: Tuple[int, ...] = (3, 2), C: int = 5,
                       reduction: str = "mean", label_smoothing: float = 0.0, ignore: bool = True,
                       weighted: bool = False, backend: str = "numpy") -> Case:
    """Softmax cross-entropy with ignored positions and optional per-position weights."""
    target = rng.integers(0, C, size=tuple(lead))
    if ignore and target.size > 1:
        target.reshape(-1)[rng.integers(target.size)] = -100
    target = to_backend(target, backend)
    weights = to_backend(rng.uniform(0.5, 2.0, size=tuple(lead)), backend) if weighted else None
    inputs = {"logits": _normal(rng, tuple(lead) + (C,), backend, 2.0)}

    def f(logits: Array) -> Tuple[Array, Vjp]:
        loss, cache = F.softmax_cross_entropy(logits, target, weights, reduction=reduction,
                                              label_smoothing=label_smoothing)
        return loss, lambda d: {"logits": F.softmax_cross_entropy_backward(d, cache)}
    return f, inputs


def mse_case(rng: np.random.Generator, shape: Tuple[int, ...] = (3, 2), reduction: str = "mean",
             backend: str = "numpy") -> Case:
    """Mean-squared error."""
    target = _normal(rng, shape, backend, 1.0)
    inputs = {"pred": _normal(rng, shape, backend, 1.0)}

    def f(pred: Array) -> Tuple[Array, Vjp]:
        loss, cache = F.mse_loss(pred, target, reduction)
        return loss, lambda d: {"pred": F.mse_loss_backward(d, cache)}
    return f, inputs


def activation_case(rng: np.random.Generator, name: str, shape: Tuple[int, ...] = (3, 4),
                    backend: str = "numpy") -> Case:
    """sigmoid, tanh, relu, softmax through their ``*_backward`` helpers."""
    forward = {"sigmoid": F.sigmoid, "tanh": F.tanh, "relu": F.relu, "softmax": F.softmax}[name]
    backward = {"sigmoid": F.sigmoid_backward, "tanh": F.tanh_backward,
                "relu": F.relu_backward, "softmax": F.softmax_backward}[name]
    inputs = {"a": _normal(rng, shape, backend, 2.0)}

    def f(a: Array) -> Tuple[Array, Vjp]:
        y = forward(a)
        return y, lambda dy: {"a": backward(dy, y)}
    return f, inputs


def layer_norm_case(rng: np.random.Generator, lead: Tuple[int, ...] = (2, 3), K: int = 4,
                    beta: bool = True, backend: str = "numpy") -> Case:
    """Layer normalisation over the last axis (``functional/layernorm.py``): gradients
    w.r.t. the input, the gain and the bias. The input's spread (0.01) is of the order of
    sqrt(eps): eps matters in (L3), and K = 2 stays well conditioned (for a spread much
    larger than sqrt(eps), a_hat is +-1 up to O(eps) there, and da is O(eps), at the
    finite differences' rounding level)."""
    inputs = {"a": _normal(rng, tuple(lead) + (K,), backend, 0.01),
              "gamma": _normal(rng, (K,), backend, 1.0)}
    if beta:
        inputs["beta"] = _normal(rng, (K,), backend)

    def f(a: Array, gamma: Array, beta: Optional[Array] = None) -> Tuple[Array, Vjp]:
        y, a_hat, rstd = layer_norm(a, gamma, beta)

        def vjp(dy: Array) -> Dict[str, Array]:
            da, dgamma, dbeta = layer_norm_backward(dy, a_hat, rstd, gamma)
            return {"a": da, "gamma": dgamma, **({"beta": dbeta} if beta is not None else {})}
        return y, vjp
    return f, inputs


def _key_mask(rng: np.random.Generator, N: int, S: int, backend: str) -> Array:
    """Random valid-key mask (N, S) with at least one valid key per row."""
    lengths = rng.integers(1, S + 1, size=N)
    return to_backend(np.arange(S)[None, :] < lengths[:, None], backend)


def attention_case(rng: np.random.Generator, kind: str = "dot", N: int = 2, L: int = 3, S: int = 4,
                   E: int = 3, Ev: int = 2, A: int = 3, masked: bool = True,
                   scale: Optional[float] = None, backend: str = "numpy") -> Case:
    """Dot-product (``kind='dot'``), additive, or additive on projected keys
    (``kind='projected'``, K then holds P = K W_k^T) attention with a key mask."""
    mask = _key_mask(rng, N, S, backend) if masked else None
    Ek = E if kind == "dot" else E + 1
    inputs = {"q": _normal(rng, (N, L, E), backend, 1.0), "K": _normal(rng, (N, S, Ek), backend, 1.0),
              "V": _normal(rng, (N, S, Ev), backend, 1.0)}
    if kind == "dot":
        def f_dot(q: Array, K: Array, V: Array) -> Tuple[Array, Vjp]:
            c, alpha, cache = F.dot_attention_forward(q, K, V, mask, scale)

            def vjp(d: Any) -> Dict[str, Array]:
                dq, dK, dV = F.dot_attention_backward(d, cache)
                return {"q": dq, "K": dK, "V": dV}
            return c, vjp
        return f_dot, inputs
    if kind == "projected":       # additive attention on projected keys P (N, S, A)
        inputs.update({"K": _normal(rng, (N, S, A), backend, 1.0),
                       "W_q": _normal(rng, (A, E), backend), "w_v": _normal(rng, (A,), backend)})

        def f_projected(q: Array, K: Array, V: Array, W_q: Array, w_v: Array) -> Tuple[Array, Vjp]:
            c, alpha, cache = F.additive_attention_projected_forward(q, K, V, W_q, w_v, mask)

            def vjp(d: Any) -> Dict[str, Array]:
                dq, dP, dV, grads = F.additive_attention_projected_backward(d, cache)
                return {"q": dq, "K": dP, "V": dV, **grads}
            return c, vjp
        return f_projected, inputs
    inputs.update({"W_q": _normal(rng, (A, E), backend), "W_k": _normal(rng, (A, Ek), backend),
                   "w_v": _normal(rng, (A,), backend)})

    def f(q: Array, K: Array, V: Array, W_q: Array, W_k: Array, w_v: Array) -> Tuple[Array, Vjp]:
        c, alpha, cache = F.additive_attention_forward(q, K, V, W_q, W_k, w_v, mask)

        def vjp(d: Any) -> Dict[str, Array]:
            dq, dK, dV, grads = F.additive_attention_backward(d, cache)
            return {"q": dq, "K": dK, "V": dV, **grads}
        return c, vjp
    return f, inputs


def builtin_cases(rng: np.random.Generator, backend: str = "numpy") -> Iterator[Tuple[str, Case]]:
    """(name, (f, inputs)) for every op, at fixed small sizes."""
    b = backend
    for name, spec in CELLS.items():
        variants = ([{"nonlinearity": v} for v in spec.choices["nonlinearity"]]
                    if "nonlinearity" in spec.choices else [{}])
        # a cell with an acceleration: both paths, each forced
        for path in ("accelerated", "reference") if spec.accelerated else ("reference",):
            tag = f" [{path}]" if spec.accelerated else ""
            for opts in variants:
                label = name + "".join(f"_{v}" for v in opts.values())
                yield label + tag, recurrent_case(rng, name, T=4, N=3, D=3, H=4, backend=b,
                                                  path=path, **opts)
            yield f"{name}(masked){tag}", recurrent_case(rng, name, T=4, N=3, D=3, H=4,
                                                         masked=True, backend=b, path=path)
            yield f"{name}(no bias){tag}", recurrent_case(rng, name, T=3, N=2, D=3, H=2,
                                                          bias=False, backend=b, path=path)
        yield f"{name}_step", step_case(rng, name, backend=b)
    # the registry's Jordan layer feeds back an output of size H; the op allows any O
    yield "jordan(O != H, masked)", jordan_case(rng, T=4, N=3, D=3, H=4, O=2, masked=True,
                                               backend=b)
    yield "linear", linear_case(rng, backend=b)
    yield "embedding", embedding_case(rng, padding_idx=0, backend=b)
    yield "embedding(dropout)", embedding_case(rng, V=8, dropout=0.5, backend=b)
    for reduction in ("mean", "sum", "none"):
        yield f"cross_entropy({reduction})", cross_entropy_case(rng, reduction=reduction,
                                                               label_smoothing=0.1, backend=b)
    yield "cross_entropy(weights)", cross_entropy_case(rng, weighted=True, backend=b)
    yield "mse", mse_case(rng, backend=b)
    yield "layer_norm", layer_norm_case(rng, backend=b)
    yield "attention(scaled dot, masked)", attention_case(rng, "dot", backend=b)
    yield "attention(dot)", attention_case(rng, "dot", scale=1.0, masked=False, backend=b)
    yield "attention(additive, masked)", attention_case(rng, "additive", backend=b)
    yield "attention(additive on projected keys)", attention_case(rng, "projected", backend=b)
    for name in ("sigmoid", "tanh", "relu", "softmax"):
        yield name, activation_case(rng, name, backend=b)
