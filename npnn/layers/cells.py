"""``npnn.RNNCell``, ``npnn.LSTMCell``, ``npnn.GRUCell``: one time step, PyTorch's signatures.

For models that step by hand (decoders, generation): call ``forward`` once per
step, then ``backward`` once per step in reverse order; each backward consumes
the most recent forward's cache. Parameters: ``weight_ih`` (G*H, D),
``weight_hh`` (G*H, H), ``bias_ih``, ``bias_hh`` (G*H,), initialised
U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch (``init`` and ``forget_bias`` as for the
recurrent layers, ``npnn.Recurrent``). A step is the registry cell's step
(``npnn.functional.registry``), so every registered cell could have one; its
parameters' initialisers, its states' sizes and its options' allowed values
come from there too.
"""

from typing import Any, Dict, Optional, Tuple

from numpy.typing import DTypeLike

from .._checks import (check_bool, check_choice, check_dtype, check_float, check_layer_dtype,
                       check_positive_int, check_same_backend, check_shape)
from .._typing import Array, Seed, States
from ..functional.registry import (InitSpec, check_forget_bias, from_states, init_param,
                                  initializer_names, resolve)
from .base import Module, make_rng


class _Cell(Module):
    """One step of a registered cell; subclasses set ``cell``."""
    cell: Optional[str] = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: DTypeLike = "float32", seed: Seed = None, init: InitSpec = None,
                 forget_bias: Optional[float] = None, **options: Any) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.spec, self.sizes, options = resolve(self.cell, self.hidden_size, options)
        for name, value in options.items():
            if name in self.spec.choices:
                check_choice(name, value, self.spec.choices[name])
        self.options = {**self.spec.options, **options}
        self.state_sizes = tuple(S for _, S in self.spec.state_shapes(1, self.hidden_size,
                                                                      **self.sizes))
        self.bias = check_bool("bias", bias)
        self.init = init
        inits = initializer_names(self.spec, init)          # parameter name -> initialiser
        self.forget_bias = check_forget_bias(self.spec, forget_bias, self.bias)
        self.dtype = check_dtype(dtype)
        rng = make_rng(seed)
        shapes = self.spec.param_shapes(self.input_size, self.hidden_size, self.bias,
                                        **self.sizes)
        for p, shape in shapes:
            value = init_param(self.spec, p, shape, rng, self.hidden_size, inits[p.name],
                               self.forget_bias)
            self._add_param(p.name, value.astype(self.dtype))
        self._args = {p.arg: p.name for p, _ in shapes}     # op argument -> parameter name

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
        for name in ("init", "forget_bias"):
            if getattr(self, name) is not None:
                s += f", {name}={getattr(self, name)!r}"
        return s

    def _weights(self) -> Dict[str, Array]:
        """Op argument name -> parameter."""
        return {arg: self.params[name] for arg, name in self._args.items()}

    def _check_x(self, x: Array) -> Tuple[Array, bool]:
        check_float("x", x)
        check_layer_dtype("x", x, self.dtype)
        check_same_backend(x=x, weights=self.params["weight_ih"])
        D = self.input_size
        if x.ndim not in (1, 2) or x.shape[-1] != D:
            raise ValueError(f"expected x of shape (N, {D}) or ({D},), got {tuple(x.shape)}")
        return (x, True) if x.ndim == 2 else (x[None], False)

    def _check_state(self, name: str, s: Optional[Array], N: int, batched: bool,
                     H: int) -> Optional[Array]:
        """A state (N, H) ((H,) unbatched), H its size."""
        if s is None:
            return None
        check_float(name, s, self.dtype)
        if batched:
            return check_shape(name, s, (N, H))
        check_shape(name, s, (H,))
        return s[None]

    def _check_state_grad(self, name: str, g: Optional[Array], N: int, batched: bool,
                          H: int) -> Optional[Array]:
        """A state's gradient (its size H), checked against the most recent forward (see
        _Cell.backward)."""
        if g is None:
            return None
        check_float(name, g, self.dtype)
        expected = (N, H) if batched else (H,)
        if tuple(g.shape) != expected:
            raise self._mismatch(name, g.shape, expected)
        return g if batched else g[None]

    def _split(self, name: str, states: States, N: int,
               batched: bool) -> Tuple[Optional[Array], ...]:
        """An array (one state), a tuple (several), or None -> tuple of checked (N, H) or None."""
        n = self.spec.n_states
        if states is None:
            return (None,) * n
        if n == 1:
            return (self._check_state(name, states, N, batched, self.state_sizes[0]),)
        if not (isinstance(states, (tuple, list)) and len(states) == n):
            raise TypeError(f"expected {name} to be a tuple ({', '.join(self.spec.states)}) "
                            f"or None, got {type(states).__name__}")
        return tuple(self._check_state(f"{name}[{i}]", s, N, batched, S)
                     for i, (s, S) in enumerate(zip(states, self.state_sizes)))

    def forward(self, x: Array, hx: States = None) -> States:
        """x (N, D) or (D,), hx (N, H)/(H,), a tuple of them for several states, or None
        -> the new state(s), shaped like hx."""
        x, batched = self._check_x(x)
        N = x.shape[0]
        states = self._split("hx", hx, N, batched)
        if not self.keeps_caches():     # nothing to backpropagate: the forward-only step
            new = self.spec.stepper(self._weights(), **self.options)(x, states)
            return from_states(tuple(s if batched else s[0] for s in new))   # new arrays
        new, cache = self.spec.run_step(x, states, self._weights(), **self.options)
        self._push((cache, batched, N))
        # copies: the cache holds the new state, and a caller may change what it gets
        return from_states(tuple((s if batched else s[0]).copy() for s in new))

    def backward(self, dh: Optional[Array], *d_other: Optional[Array]) -> Tuple[Array, States]:
        """The gradients of the new state(s) (``dh``; for LSTMCell also ``dc``, either may
        be None) -> dx (like x), the gradient(s) of hx (an array, or a tuple for several).

        Each backward consumes the most recent forward not yet backpropagated (last in,
        first out): step forward t = 1..T, then backward t = T..1."""
        names = ["d" + s for s in self.spec.states]
        given = (dh,) + d_other
        if len(given) > len(names):
            raise TypeError(f"{type(self).__name__}.backward takes the gradients of "
                            f"{', '.join(self.spec.states)}: {len(names)}, got {len(given)}")
        given += (None,) * (len(names) - len(given))
        with self._consume() as (cache, batched, N):
            d = tuple(self._check_state_grad(n, g, N, batched, S)
                      for n, g, S in zip(names, given, self.state_sizes))
        dx, dprev, grads = self.spec.run_step_backward(d, cache)
        for arg, name in self._args.items():
            self._accumulate(name, grads[arg])
        unbatch = (lambda a: a) if batched else (lambda a: a[0])
        return unbatch(dx), from_states(tuple(unbatch(g) for g in dprev))


class RNNCell(_Cell):
    """``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu)."""
    cell = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype: DTypeLike = "float32",
                 seed: Seed = None, init: InitSpec = None,
                 forget_bias: Optional[float] = None) -> None:
        super().__init__(input_size, hidden_size, bias, dtype, seed, init, forget_bias,
                         nonlinearity=nonlinearity)

    @property
    def nonlinearity(self) -> str:
        return self.options["nonlinearity"]


class GRUCell(_Cell):
    """PyTorch's GRU step, gate order r, z, n."""
    cell = "gru"


class LSTMCell(_Cell):
    """PyTorch's LSTM step, gate order i, f, g, o; states are tuples (h, c).
    ``backward(dh, dc=None)`` -> dx, (dh0, dc0)."""
    cell = "lstm"

    # narrower than _Cell.backward(dh, *d_other) on purpose: an LSTM step has two states
    def backward(self, dh: Optional[Array],  # type: ignore[override]
                 dc: Optional[Array] = None) -> Tuple[Array, States]:
        return super().backward(dh, dc)


class LayerNormLSTMCell(LSTMCell):
    """One step of ``npnn.LayerNormLSTM`` (``functional/layernorm_lstm.py``); states are
    tuples (h, c), c un-normalised. Parameters: PyTorch's four and ``ln_ih_weight``,
    ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (4H,), ``ln_c_weight``, ``ln_c_bias``
    (H,). ``backward(dh, dc=None)`` -> dx, (dh0, dc0)."""
    cell = "layernorm_lstm"


class LayerNormGRUCell(_Cell):
    """One step of ``npnn.LayerNormGRU`` (``functional/layernorm_gru.py``), gate order r, z, n.
    Parameters: PyTorch's four and ``ln_ih_weight``, ``ln_ih_bias``, ``ln_hh_weight``,
    ``ln_hh_bias`` (3H,)."""
    cell = "layernorm_gru"
