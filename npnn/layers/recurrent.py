"""``npnn.RNN``, ``npnn.LSTM``, ``npnn.GRU``: PyTorch's recurrent layers, with a backward.

One layer class, ``Recurrent``, stacks any cell of the registry
(``npnn.functional.registry``); ``RNN``, ``LSTM``, ``GRU``, ``PeepholeLSTM``,
``CTRNN`` and ``JordanRNN`` name its cells with PyTorch's signatures.
Stacking, both directions, dropout between layers and variable lengths are
composition here; the maths stays in ``npnn.functional``:

* layer l > 0 reads the (dropped-out) output of layer l - 1, both directions
  concatenated: (T, N, num_directions * H_out), H_out the cell's output size
  (H, or the projection P of ``npnn.LSTM(..., proj_size=P)``);
* the reverse direction runs the same kernel on each sequence reversed
  *within its length*, and its output is reversed back, so with ``lengths`` it
  starts at each sequence's last valid element (PyTorch's packed semantics);
* ``lengths`` becomes a (T, N) mask that holds the state after each
  sequence's end and zeroes its outputs (see ``functional/_recurrent.py``);
* recurrent dropout, zoneout and weight-drop (``recurrent_dropout=``, ``zoneout=``,
  ``weight_drop=``; ``functional/regularisers.py``) draw their masks here, in
  training mode only, from the layer's generator, one draw per forward and
  (layer, direction); the cells apply the first two inside their equations, and
  weight-drop is composition: the op runs with W_hh * M, and M scales the gradient.

Parameters are named and shaped as in PyTorch (``weight_ih_l0``,
``bias_hh_l1_reverse``, ...), so ``load_state_dict(torch_module.state_dict())``
and back moves weights unchanged. Sizes, initialisers and allowed option values
come from the registry: a layer holds no case of its own for any cell.
"""

import functools
import math
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Type, Union

import numpy as np
from numpy.typing import DTypeLike

from .. import functional as F
from .._checks import (check_bool, check_choice, check_dropout, check_dtype, check_float,
                       check_integer, check_layer_dtype, check_positive_int, check_same_backend,
                       check_shape)
from ..functional.bptt_policy import check_memory
from ..functional.regularisers import SPLITMIX_UNIFORM, Zoneout
from ..functional.registry import (INITIALIZERS, Cell, InitSpec, Param, as_states,
                                  check_forget_bias, from_states, get_cell, init_param,
                                  initializer_names, resolve, size_options)
from ..backend import backend_name, elementwise_kernel, get_array_module, is_array, to_backend
from .._typing import Array, ArrayModule, Seed, States
from .base import Module, make_rng


class _StackCache(NamedTuple):
    caches: List[Any]             # one kernel cache per (layer, direction)
    drops: List[Optional[Array]]  # dropout mask applied to each layer's output, or None
    rev: Optional[Array]          # (T, N) within-length reversal index, or None
    batched: bool
    T: int
    N: int
    # weight-drop's mask M of each (layer, direction)'s recurrent weight, or None
    weight_masks: Optional[List[Optional[Array]]] = None


#: A device's dropout mask in one kernel: element i is kept when u_i >= p, u_i in [0, 1)
#: the top 53 bits of splitmix64(key + i * golden), a counter-based hash: no generator
#: state on the device, and the same key gives the same mask on any device.
DROPOUT_KERNEL = ("uint64 key, float64 p, T scale", "T mask", """
    const unsigned long long c = (unsigned long long)i;""" + SPLITMIX_UNIFORM + """
    mask = u >= p ? scale : (T)0;
    """, "npnn_dropout_mask")


def dropout_mask(rng: np.random.Generator, shape: Tuple[int, ...], p: float,
                 like: Array) -> Array:
    """Inverted-dropout mask: 0 with probability p, else 1 / (1 - p), next to ``like``,
    reproducible from ``rng`` (a host generator, saved in checkpoints).

    On NumPy the mask is drawn from ``rng``. On a GPU it is made on the device by one
    kernel (``DROPOUT_KERNEL``) from a key drawn from ``rng``: no mask crosses the bus
    (a host mask of (100, 64, 512) took 21 ms to draw and copy, the LSTM's whole
    forward ~4 ms)."""
    xp = get_array_module(like)
    if xp is np:
        return (rng.random(shape) >= p).astype(like.dtype) / (1.0 - p)
    mask = xp.empty(shape, dtype=like.dtype)
    key = np.uint64(rng.integers(0, 2 ** 63))
    elementwise_kernel(*DROPOUT_KERNEL)(key, float(p), like.dtype.type(1.0 / (1.0 - p)), mask)
    return mask


class Recurrent(Module):
    """A stack of recurrent layers of any registered cell.

    ``npnn.Recurrent(cell, input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, dtype='float32', seed=None,
    bptt_memory=None, init=None, forget_bias=None, **options)``, ``cell`` a name from
    ``npnn.functional.registry.CELLS`` and ``options`` that cell's extra options (e.g.
    ``nonlinearity`` for 'rnn') and size options (``proj_size`` for 'lstm', which then
    runs the variant 'lstmp': ``functional.registry.resolve``). The named subclasses
    below fix the cell and take PyTorch's signatures, plus ``bptt_memory``, ``init`` and
    ``forget_bias``.

    ``init`` chooses the initialisers (``functional.registry.initializer_names``): None,
    each parameter's own (PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for the weights and biases,
    1 and 0 for layer-norm gains and biases); a name ('orthogonal', 'xavier_uniform',
    'xavier_normal', 'uniform', 'zeros', 'ones') for every weight matrix; or a mapping from
    parameter names to names, e.g. ``{'weight_hh': 'orthogonal', 'weight_ih':
    'xavier_uniform'}`` (Keras's defaults). 'orthogonal' draws each gate's H x H (or H x D)
    block of a stacked weight orthogonal on its own. ``forget_bias`` (cells with a forget
    gate: the LSTMs) is added to the forget gate's slice of every ``bias_ih`` after it is
    drawn, so b_ih + b_hh starts that much higher for f (Jozefowicz et al. 2015: 1.0);
    ``bias_hh`` is left as drawn. Cells without a forget gate refuse it.

    ``recurrent_dropout``, ``zoneout`` and ``weight_drop`` (each a probability in [0, 1),
    default 0: off) regularise inside the recurrence (``functional/regularisers.py``,
    docs/derivations.md, "Recurrent dropout, zoneout and weight-drop"):

    * ``recurrent_dropout=p``: one mask m (N, S) per sequence, layer and direction,
      1/(1 - p) or 0, on the state where it enters the recurrent product (Gal and
      Ghahramani's variational dropout), the same at every step;
    * ``zoneout=p`` (or one p per state, ``(p_h, p_c)`` for the LSTMs): each unit of
      each state keeps its previous value with probability p at each step (Krueger
      et al.); the output is the zoned state; in eval mode the expectation,
      s_t = p s_{t-1} + (1 - p) s~_t;
    * ``weight_drop=p``: the recurrent weight matrix (``weight_hh``; the Jordan
      network's ``weight_yh``) masked once per forward, W * M, M 1/(1 - p) or 0 (Merity
      et al.'s AWD-LSTM); its gradient goes to the unmasked weight, dW = M * dW'.
      A cell with no recurrent weight matrix refuses it.

    All three draw their masks only in training mode (``train()``, the default), from
    the layer's generator (``rng``, saved in checkpoints: a resumed run draws the same
    masks), on the arrays' device; in eval mode recurrent dropout and weight-drop are
    the identity and zoneout its expectation. A forward-only ``stepper`` always runs
    the eval form (it is for decoding and generation).

    ``bptt_memory`` bounds what a forward keeps for the backward (``functional/bptt.py``):
    None keeps every step's cache (full BPTT), an int m keeps states at the checkpoints
    of Gruslys et al.'s optimal schedule for m slots (one slot: one step's cache) and
    recomputes the rest in the backward, 'sqrt' checkpoints every ceil(sqrt(T)) steps.
    The gradients are full BPTT's (bit for bit where m >= T, within 1e-12 relative
    otherwise); the dropout between layers, weight-drop and recurrent dropout are
    drawn here, outside the recomputed op, and zoneout's masks are regenerated from
    their key for each recomputed segment, so nothing is stored for a replay. It may
    be changed between forwards (``layer.bptt_memory``).

    To step the cell by hand (a decoder, a gradient analysis): ``spec`` is the registry
    ``Cell``, ``cell_params(layer, direction)`` its parameters by argument name,
    ``cell_options`` its options, ``stepper(layer, direction)`` a forward-only step.
    """
    cell: Optional[str] = None  # a subclass's registry name

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if type(self).cell is None:             # Recurrent(cell, input_size, ...)
            if not args:
                raise TypeError("Recurrent() needs the cell's name as its first argument")
            cell, args = args[0], args[1:]
        else:
            cell = type(self).cell
        self._build(get_cell(cell), *args, **kwargs)

    def _build(self, cell: Cell, input_size: int, hidden_size: int, num_layers: int = 1,
               bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
               bidirectional: bool = False, dtype: DTypeLike = "float32", seed: Seed = None,
               bptt_memory: Union[int, str, None] = None, init: InitSpec = None,
               forget_bias: Optional[float] = None, recurrent_dropout: float = 0.0,
               zoneout: Union[float, Sequence[float]] = 0.0, weight_drop: float = 0.0,
               **options: Any) -> None:
        super().__init__()
        self.bptt_memory = check_memory(bptt_memory)
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        base = cell            # 'lstm' with proj_size > 0 runs its variant 'lstmp'
        cell, self.sizes, options = resolve(base.name, self.hidden_size, options)
        self.spec = cell
        unknown = sorted(set(options) - set(cell.options))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected option(s) {', '.join(unknown)} "
                            f"for cell '{cell.name}' (its options: "
                            f"{', '.join(cell.options) or 'none'})")
        for name, value in options.items():
            if name in cell.choices:
                check_choice(name, value, cell.choices[name])
        self.options = {**cell.options, **options}
        for name in size_options(base.name):        # PyTorch's attributes: lstm.proj_size
            setattr(self, name, self.sizes.get(name, 0))
        self.output_size = cell.output_size(self.hidden_size, **self.sizes)
        self.state_sizes = tuple(S for _, S in cell.state_shapes(1, self.hidden_size,
                                                                 **self.sizes))
        self._check_regularisers(recurrent_dropout, zoneout, weight_drop)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.init = init
        self._inits = initializer_names(cell, init)         # parameter name -> initialiser
        self.forget_bias = check_forget_bias(cell, forget_bias, self.bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.dropout = check_dropout(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={self.dropout} and num_layers=1", UserWarning, stacklevel=3)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.dtype = check_dtype(dtype)
        self.rng = make_rng(seed)
        self.num_directions = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            d_in = self.input_size if layer == 0 else self.output_size * self.num_directions
            for direction in range(self.num_directions):
                sfx = self._suffix(layer, direction)
                for p, shape in self._param_shapes(d_in):
                    self._add_param(p.name + sfx, self._init_param(p, shape))

    def _check_regularisers(self, recurrent_dropout: Any, zoneout: Any, weight_drop: Any) -> None:
        """Check and keep ``recurrent_dropout``, ``zoneout`` (one p, or one per state) and
        ``weight_drop``; refuse those the cell cannot take."""
        cell = self.spec
        self.recurrent_dropout = check_dropout(recurrent_dropout, "recurrent_dropout")
        self.weight_drop = check_dropout(weight_drop, "weight_drop")
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != cell.n_states:
                raise ValueError(f"expected zoneout to be one probability or one per state "
                                 f"({', '.join(cell.states)}) of cell '{cell.name}', "
                                 f"got {len(zoneout)}: {tuple(zoneout)!r}")
            rates = tuple(check_dropout(p, f"zoneout[{k}]") for k, p in enumerate(zoneout))
            self.zoneout: Union[float, Tuple[float, ...]] = rates
        else:
            self.zoneout = check_dropout(zoneout, "zoneout")
        if (self.recurrent_dropout or any(self._zoneout_rates)) and not cell.regularisers:
            raise ValueError(f"cell '{cell.name}' does not take recurrent_dropout or zoneout "
                             f"(its ops have no recurrent_mask= and zoneout=)")
        if self.weight_drop and cell.recurrent is None:
            raise ValueError(f"weight_drop masks the recurrent weight matrix, and cell "
                             f"'{cell.name}' has none: got weight_drop={self.weight_drop}")

    @property
    def _zoneout_rates(self) -> Tuple[float, ...]:
        """Zoneout's p per state (``zoneout`` may be one p for all)."""
        z = self.zoneout
        return tuple(z) if isinstance(z, tuple) else (z,) * self.spec.n_states

    def _draw_regularisers(self, weights: Dict[str, Array], like: Array, N: int
                           ) -> Tuple[Dict[str, Array], Dict[str, Any], Optional[Array]]:
        """One (layer, direction)'s masks for this forward: the weights it runs with
        (weight-drop's W * M), the op's options (``recurrent_mask``, ``zoneout``) and M.
        Training mode draws, in this order, M, the recurrent mask and zoneout's key from
        ``rng``; eval mode draws nothing (zoneout's expectation only)."""
        noise: Dict[str, Any] = {}
        M = None
        if self.training:
            rec = self.spec.recurrent
            if self.weight_drop and rec is not None:
                W = weights[rec]
                M = dropout_mask(self.rng, tuple(W.shape), self.weight_drop, W)
                weights = {**weights, rec: W * M}               # (R6)
            if self.recurrent_dropout:
                noise["recurrent_mask"] = dropout_mask(self.rng, (N, self.state_sizes[0]),
                                                       self.recurrent_dropout, like)
            if any(self._zoneout_rates):
                noise["zoneout"] = Zoneout(self._zoneout_rates,
                                           int(self.rng.integers(0, 2 ** 63)))
        elif any(self._zoneout_rates):
            noise["zoneout"] = Zoneout(self._zoneout_rates)
        return weights, noise, M

    @property
    def n_states(self) -> int:
        return self.spec.n_states

    def _param_shapes(self, d_in: int) -> List[Tuple[Param, Tuple[int, ...]]]:
        """[(registry Param, shape)] of one layer and direction's parameters."""
        return self.spec.param_shapes(d_in, self.hidden_size, self.bias, **self.sizes)

    def _init_param(self, p: Param, shape: Tuple[int, ...]) -> Array:
        """Parameter ``p`` (a registry Param) drawn by its initialiser (``init``; by default
        PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for all of PyTorch's parameters) from
        ``self.rng``, ``forget_bias`` added where it goes."""
        return init_param(self.spec, p, shape, self.rng, self.hidden_size, self._inits[p.name],
                          self.forget_bias).astype(self.dtype)

    def _op_options(self, xp: ArrayModule) -> Dict[str, Any]:
        """The cell options passed to its op with every call."""
        return self.options

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def _weights(self, layer: int, direction: int) -> Dict[str, Array]:
        """Op argument name -> parameter array, for one layer and direction."""
        sfx, params = self._suffix(layer, direction), self.params
        return {arg: params[name + sfx] for arg, name in self._arg_names}

    # -- stepping the cell by hand: decoders, analyses -----------------------------------
    def cell_params(self, layer: int = 0, direction: int = 0) -> Dict[str, Array]:
        """The parameters of one layer (0 to num_layers - 1) and direction (0 forward, 1
        reverse) by the cell op's argument names, e.g. ``{'W_ih': weight_ih_l0, ...}``:
        the arrays themselves, not copies. With ``spec`` (the registry ``Cell``) and
        ``cell_options``, ``layer.spec.run_step(x, states, layer.cell_params(),
        **layer.cell_options)`` steps the cell once and ``layer.spec.run_step_backward``
        backpropagates that step."""
        check_choice("layer", layer, range(self.num_layers))
        check_choice("direction", direction, range(self.num_directions))
        return self._weights(layer, direction)

    @property
    def cell_options(self) -> Dict[str, Any]:
        """The options the cell's ops take with every call (e.g. ``nonlinearity``; the
        fixed ``log_tau`` of a CTRNN that does not learn it), on the layer's backend."""
        return self._op_options(get_array_module(*self.params.values()))

    def stepper(self, layer: int = 0, direction: int = 0
                ) -> Callable[[Array, Sequence[Array]], Tuple[Array, ...]]:
        """A forward-only step of one layer and direction (no cache, no dropout): a
        function (x (N, D_l), tuple of states each (N, H)) -> tuple of new states, D_l
        the layer's input size. Make one per run of steps (a decoding): it may keep what
        it derived from the parameters, so it does not follow later updates."""
        options = self.cell_options
        if any(self._zoneout_rates):                # zoneout's eval form (its expectation)
            options = {**options, "zoneout": Zoneout(self._zoneout_rates)}
        return self.spec.stepper(self.cell_params(layer, direction), **options)

    @functools.cached_property
    def _arg_names(self) -> List[Tuple[str, str]]:
        """[(op argument name, parameter name without its suffix)], every layer alike."""
        return [(p.arg, p.name) for p, _ in self._param_shapes(self.input_size)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if type(self).cell is None:
            s = f"'{self.spec.name}', " + s
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        for name, value in self.sizes.items():
            s += f", {name}={value}"
        for name in ("recurrent_dropout", "zoneout", "weight_drop"):
            if getattr(self, name):
                s += f", {name}={getattr(self, name)!r}"
        if self.bptt_memory is not None:
            s += f", bptt_memory={self.bptt_memory!r}"
        for name in ("init", "forget_bias"):
            if getattr(self, name) is not None:
                s += f", {name}={getattr(self, name)!r}"
        for name, default in self.spec.options.items():
            if self.options[name] != default:
                s += f", {name}={self.options[name]!r}"
        return s

    # -- argument handling ---------------------------------------------------
    def _layout(self) -> str:
        return "(N, T, {D})" if self.batch_first else "(T, N, {D})"

    def _check_x(self, x: Array) -> Tuple[Array, bool]:
        """-> time-major (T, N, D) input and whether the input was batched."""
        check_float("x", x)
        D = self.input_size
        check_layer_dtype("x", x, self.dtype)
        check_same_backend(x=x, weights=self.params["weight_ih_l0"])
        if x.ndim not in (2, 3) or x.shape[-1] != D:
            raise ValueError(f"expected x of shape {self._layout().format(D=D)} or (T, {D}), "
                             f"got {tuple(x.shape)}")
        if 0 in x.shape:
            raise ValueError(f"expected x with at least one time step (T >= 1) and one sequence, "
                             f"got shape {tuple(x.shape)} for the layout "
                             f"{self._layout().format(D=D)}")
        if x.ndim == 2:
            return x[:, None, :], False
        return (x.transpose(1, 0, 2) if self.batch_first else x), True

    def _check_states(self, name: str, states: Optional[Array], N: int, batched: bool,
                      H: int) -> Optional[Array]:
        """None, or an array (L*dirs, N, H) ((L*dirs, H) unbatched), H the state's size
        -> batched array or None."""
        if states is None:
            return None
        LD = self.num_layers * self.num_directions
        check_float(name, states, self.dtype)
        check_same_backend(**{name: states, "weights": self.params["weight_ih_l0"]})
        if batched:
            check_shape(name, states, (LD, N, H))
            return states
        check_shape(name, states, (LD, H))
        return states[:, None, :]

    def _split_states(self, name: str, hx: States, N: int,
                      batched: bool) -> List[Optional[Array]]:
        """hx (an array for one state, a tuple for several, or None) -> list of
        n_states arrays or Nones."""
        if self.n_states == 1:
            return [self._check_states(name, hx, N, batched, self.state_sizes[0])]
        if hx is None:
            return [None] * self.n_states
        states = "(" + ", ".join(self.spec.states) + ")"
        if not (isinstance(hx, (tuple, list)) and len(hx) == self.n_states):
            raise TypeError(f"expected {name} to be a tuple {states} or None, "
                            f"got {type(hx).__name__}")
        if name == "hx" and any(s is None for s in hx):
            raise TypeError(f"expected hx = {states} with every array given")
        return [self._check_states(f"{name}[{i}]", s, N, batched, S)
                for i, (s, S) in enumerate(zip(hx, self.state_sizes))]

    def _check_lengths(self, lengths: Any, T: int, N: int, batched: bool,
                       xp: ArrayModule) -> Tuple[Array, Array]:
        if not batched:
            raise ValueError("expected batched input (with an N axis) when lengths are given, "
                             "got unbatched x of shape (T, D)")
        if hasattr(lengths, "detach"):
            lengths = lengths.detach().cpu().numpy()
        arr = lengths if is_array(lengths) else np.asarray(lengths)
        check_integer("lengths", arr)
        check_shape("lengths", arr, (N,), "N")
        mask = F.length_mask(arr, T)      # (T, N), checked where the lengths are: host ones
        arr = to_backend(arr, backend_name(xp))        # (the usual case) cost no sync
        mask = to_backend(mask, backend_name(xp))
        t = xp.arange(T)[:, None]
        rev = xp.where(t < arr[None, :], arr[None, :] - 1 - t, t)        # (T, N)
        return mask, rev

    def _check_backward(self, c: _StackCache, d_out: Optional[Array],
                        d_hn: States) -> Tuple[Array, List[Optional[Array]]]:
        """The gradients of a backward, checked against the forward of cache ``c`` ->
        time-major d_out (T, N, dirs*H_out) and the list of final-state gradients."""
        H, dirs = self.output_size, self.num_directions
        # the parameters' backend (a registered cell's cache is its own business: any type)
        xp = get_array_module(next(iter(self.params.values())))
        shape = (c.T, c.N, dirs * H)
        if d_out is None:
            d_layer = xp.zeros(shape, dtype=self.dtype)
        else:
            check_float("d_out", d_out, self.dtype)
            expected = ((c.T, dirs * H) if not c.batched else
                        (c.N, c.T, dirs * H) if self.batch_first else shape)
            if tuple(d_out.shape) != expected:
                raise self._mismatch("d_out", d_out.shape, expected)
            d_layer = (d_out[:, None, :] if not c.batched else
                       d_out.transpose(1, 0, 2) if self.batch_first else d_out)
        return d_layer, self._split_states("d_hn", d_hn, c.N, c.batched)

    @staticmethod
    def _reverse(a: Array, rev: Optional[Array]) -> Array:
        """Reverse each sequence in time (within its length when ``rev`` is given)."""
        if rev is None:
            return a[::-1]
        xp = get_array_module(a)
        return a[rev, xp.arange(a.shape[1])[None, :]]

    # -- forward and backward -----------------------------------------------
    def forward(self, x: Array, hx: States = None,
                lengths: Any = None) -> Tuple[Array, States]:
        """Run the stack over a batch of sequences.

        Args:
            x: (T, N, D), (N, T, D) with ``batch_first``, or unbatched (T, D).
            hx: initial states (L * num_directions, N, H) or None for zeros;
                a tuple for cells with several states ((h0, c0) for LSTM).
            lengths: optional N sequence lengths in 1..T, any order.

        Returns:
            out (T, N, num_directions * H_out) (batch-first or unbatched like x),
            h_n (L * num_directions, N, H) (a tuple, (h_n, c_n), for cells with
            several states). Entry layer * num_directions + direction is that
            layer's and direction's final state (direction 1 the reverse one).
            H_out and each state's size are H except where the cell says
            otherwise (``proj_size=P``: out and h_n of size P, c_n of size H).
        """
        x, batched = self._check_x(x)
        xp = get_array_module(x)
        T, N, _ = x.shape
        init = self._split_states("hx", hx, N, batched)
        mask, rev = (None, None) if lengths is None else self._check_lengths(
            lengths, T, N, batched, xp)
        dirs = self.num_directions
        keep = self.keeps_caches()
        caches, drops, weight_masks = [], [], []
        finals: List[List[Array]] = [[] for _ in range(self.n_states)]
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(dirs):
                idx = layer * dirs + direction
                xin = layer_in if direction == 0 else self._reverse(layer_in, rev)
                s0 = [None if s is None else s[idx] for s in init]
                weights, options = self._weights(layer, direction), self._op_options(xp)
                weights, noise, M = self._draw_regularisers(weights, x, N)
                options = {**options, **noise}
                weight_masks.append(M)
                if keep:
                    out, final, cache = self.spec.run(xin, s0, weights, mask,
                                                      bptt_memory=self.bptt_memory, **options)
                else:                       # nothing will be backpropagated: no cache
                    (out, final), cache = self.spec.run_inference(xin, s0, weights, mask,
                                                                  **options), None
                outs.append(out if direction == 0 else self._reverse(out, rev))
                for k in range(self.n_states):
                    finals[k].append(final[k])
                caches.append(cache)
            # a copy: out and h_n may be views of one buffer (and of the cache), and the
            # caller or the dropout below may write into out
            layer_out = outs[0].copy() if dirs == 1 else xp.concatenate(outs, axis=2)
            drop = None
            if layer < self.num_layers - 1 and self.training and self.dropout > 0:
                drop = dropout_mask(self.rng, layer_out.shape, self.dropout, layer_out)
                layer_out *= drop
            drops.append(drop)
            layer_in = layer_out
        self._push(_StackCache(caches, drops, rev, batched, T, N, weight_masks))
        h_n = [xp.stack(f) for f in finals]                  # (L*dirs, N, H) each, copies
        out = layer_in
        if not batched:
            out, h_n = out[:, 0], [h[:, 0] for h in h_n]
        elif self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, from_states(h_n)

    def backward(self, d_out: Optional[Array], d_hn: States = None) -> Tuple[Array, States]:
        """Backpropagation through time, through every layer and direction.

        Args:
            d_out: gradient of ``out`` (same shape), or None when the outputs do
                not reach the loss (training from ``h_n`` alone).
            d_hn: gradient of ``h_n`` (for cells with several states a tuple,
                (d_hn, d_cn) for LSTM, any of them may be None), or None.

        Returns:
            dx (shaped like x) and dhx (shaped like hx; a tuple for several states).
            Parameter gradients are added to ``self.grads``.

        Each backward consumes the most recent forward not yet backpropagated
        (last in, first out): after ``out_a = layer(a)``, ``out_b = layer(b)``, the
        first backward is b's. Gradients that cannot belong to that forward (another
        shape, dtype or batch) are refused, and the forward stays for a corrected
        call; gradients of the same shape for another forward cannot be told apart.
        """
        with self._consume() as c:
            d_layer, d_final = self._check_backward(c, d_out, d_hn)
        H, dirs, L = self.output_size, self.num_directions, self.num_layers
        xp = get_array_module(d_layer)
        d_init = [xp.empty((L * dirs, c.N, S), dtype=self.dtype) for S in self.state_sizes]
        for layer in range(L - 1, -1, -1):
            if c.drops[layer] is not None:
                d_layer = d_layer * c.drops[layer]
            dx_layer = None
            for direction in range(dirs):
                idx = layer * dirs + direction
                d = d_layer[:, :, direction * H:(direction + 1) * H]
                if direction == 1:
                    d = self._reverse(d, c.rev)
                dfin = [None if s is None else s[idx] for s in d_final]
                dx, dinit, grads = self.spec.run_backward(d, dfin, c.caches[idx])
                if direction == 1:
                    dx = self._reverse(dx, c.rev)
                sfx = self._suffix(layer, direction)
                d_in = self.params["weight_ih" + sfx].shape[1]
                M = None if c.weight_masks is None else c.weight_masks[idx]
                rec = self.spec.recurrent
                if M is not None and rec is not None:
                    grads = {**grads, rec: grads[rec] * M}                      # (R7)
                for p, _ in self._param_shapes(d_in):   # fixed (non-parameter) inputs skipped
                    self._accumulate(p.name + sfx, grads[p.arg])
                for k in range(self.n_states):
                    d_init[k][idx] = dinit[k]
                dx_layer = dx if dx_layer is None else dx_layer + dx
            d_layer = dx_layer
        dx = d_layer
        if not c.batched:
            dx, d_init = dx[:, 0], [d[:, 0] for d in d_init]
        elif self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, from_states(d_init)



class RNN(Recurrent):
    """Elman RNN, ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or relu).

    ``npnn.RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, dtype='float32', seed=None,
    bptt_memory=None, init=None, recurrent_dropout=0.0, zoneout=0.0, weight_drop=0.0)``
    (``forget_bias``: refused, it has no forget gate)
    """
    cell = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: DTypeLike = "float32",
                 seed: Seed = None, bptt_memory: Union[int, str, None] = None,
                 init: InitSpec = None, forget_bias: Optional[float] = None,
                 recurrent_dropout: float = 0.0, zoneout: Union[float, Sequence[float]] = 0.0,
                 weight_drop: float = 0.0) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, bptt_memory, init, forget_bias,
                         recurrent_dropout, zoneout, weight_drop, nonlinearity=nonlinearity)

    @property
    def nonlinearity(self) -> str:
        return self.options["nonlinearity"]


class LSTM(Recurrent):
    """LSTM with gate order i, f, g, o; ``hx`` and ``h_n`` are tuples (h, c).

    ``npnn.LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, dtype='float32', seed=None, bptt_memory=None,
    recurrent_dropout=0.0, zoneout=0.0, weight_drop=0.0, proj_size=0)``; ``zoneout`` may
    be a pair (p_h, p_c) for h and c.

    With ``0 < proj_size < hidden_size`` it is PyTorch's LSTM with projections (the
    registry's 'lstmp', ``functional/lstmp.py``): h = W_hr (o * tanh(c)) of size P =
    proj_size, so out is (T, N, dirs * P), h_n (L*dirs, N, P), c_n (L*dirs, N, H), and
    each layer and direction has ``weight_hr_l{k}`` (P, H) besides PyTorch's others.
    """
    cell = "lstm"


class GRU(Recurrent):
    """GRU with gate order r, z, n and PyTorch's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.

    ``npnn.GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, dtype='float32', seed=None, bptt_memory=None,
    recurrent_dropout=0.0, zoneout=0.0, weight_drop=0.0)``
    """
    cell = "gru"


class PeepholeLSTM(Recurrent):
    """LSTM whose gates also see the cell state (``functional/peephole.py``); extra
    parameters ``weight_ci``, ``weight_cf``, ``weight_co`` (H,) per layer and direction.
    PyTorch has no counterpart, so its state dicts do not transfer."""
    cell = "peephole_lstm"


class CTRNN(Recurrent):
    """Continuous-time RNN (``functional/ctrnn.py``): h += dt/tau * (-h + tanh(...)).

    ``npnn.CTRNN(input_size, hidden_size, num_layers=1, dt=1.0, tau=2.0, learn_tau=True,
    ...)``; with ``learn_tau`` the time constants are learnt through their logarithms,
    a parameter ``log_tau_l0`` (H,) initialised to log(``tau``), so that tau =
    exp(log_tau) stays positive after any optimizer step; otherwise they stay fixed
    at ``tau``."""
    cell = "ctrnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dt: float = 1.0,
                 tau: float = 2.0, learn_tau: bool = True, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = "float32", seed: Seed = None,
                 bptt_memory: Union[int, str, None] = None, init: InitSpec = None,
                 forget_bias: Optional[float] = None, recurrent_dropout: float = 0.0,
                 zoneout: Union[float, Sequence[float]] = 0.0, weight_drop: float = 0.0) -> None:
        if not float(dt) > 0 or not float(tau) > 0:
            raise ValueError(f"expected dt > 0 and tau > 0, got dt={dt!r}, tau={tau!r}")
        self.tau, self.learn_tau = float(tau), bool(learn_tau)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, bptt_memory, init, forget_bias,
                         recurrent_dropout, zoneout, weight_drop, dt=float(dt))

    @property
    def dt(self) -> float:
        return self.options["dt"]

    def _param_shapes(self, d_in: int) -> List[Tuple[Param, Tuple[int, ...]]]:
        shapes = super()._param_shapes(d_in)
        return shapes if self.learn_tau else [(p, s) for p, s in shapes if p.name != "log_tau"]

    def _init_param(self, p: Param, shape: Tuple[int, ...]) -> Array:
        if self._inits[p.name] == "log_tau":
            draw = INITIALIZERS["log_tau"]
            # INITIALIZERS' type is the common (rng, shape, H); 'log_tau' also takes tau
            init = draw(self.rng, shape, self.hidden_size, self.tau)  # type: ignore[call-arg]
            return init.astype(self.dtype)
        return super()._init_param(p, shape)

    def _op_options(self, xp: ArrayModule) -> Dict[str, Any]:
        if self.learn_tau:
            return self.options
        return {**self.options,
                "log_tau": xp.full(self.hidden_size, math.log(self.tau), dtype=self.dtype)}


class JordanRNN(Recurrent):
    """Jordan network (``functional/jordan.py``): the previous output y_{t-1} is fed back.

    The output size equals ``hidden_size``, so layers stack; the state ``hx``/``h_n``
    is the output y. Parameters per layer and direction: ``weight_ih`` (H, D),
    ``weight_yh`` (H, H), ``weight_hy`` (H, H), ``bias_h``, ``bias_y`` (H,)."""
    cell = "jordan"


class LayerNormLSTM(Recurrent):
    """Layer-normalised LSTM (Ba et al. 2016, ``functional/layernorm_lstm.py``), gate order
    i, f, g, o; ``hx`` and ``h_n`` are tuples (h, c), c carried un-normalised.

    ``npnn.LayerNormLSTM(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, dtype='float32', seed=None,
    bptt_memory=None, init=None, forget_bias=None, recurrent_dropout=0.0, zoneout=0.0,
    weight_drop=0.0)``; ``zoneout`` may be a pair (p_h, p_c), c the un-normalised cell
    state, and recurrent dropout masks h_{t-1} before the recurrent layer norm. Per layer
    and direction: PyTorch's ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (so an
    ``nn.LSTM``'s weights load with ``strict=False``) and the layer normalisations'
    ``ln_ih_weight``, ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (4H,),
    ``ln_c_weight``, ``ln_c_bias`` (H,), gains initialised to 1 and biases to 0.
    ``bias=False`` drops every bias.
    """
    cell = "layernorm_lstm"


class LayerNormGRU(Recurrent):
    """Layer-normalised GRU (``functional/layernorm_gru.py``), gate order r, z, n, PyTorch's
    GRU with x W_ih^T and h W_hh^T each layer-normalised over its 3H features.

    ``npnn.LayerNormGRU(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, dtype='float32', seed=None,
    bptt_memory=None, init=None, recurrent_dropout=0.0, zoneout=0.0, weight_drop=0.0)``
    (recurrent dropout masks h_{t-1} before the recurrent layer norm). Per layer and
    direction: PyTorch's four parameters and ``ln_ih_weight``, ``ln_ih_bias``,
    ``ln_hh_weight``, ``ln_hh_bias`` (3H,), gains initialised to 1 and biases to 0.
    ``bias=False`` drops every bias.
    """
    cell = "layernorm_gru"


def layer_class(cell: str) -> Type[Recurrent]:
    """The layer class for a registered cell's name: its named class above, or
    ``Recurrent`` bound to it (a cell registered without a class of its own)."""
    get_cell(cell)
    for cls in Recurrent.__subclasses__():
        if cls.cell == cell:
            return cls
    return type(f"Recurrent_{cell}", (Recurrent,), {"cell": cell})


def select_state(state: States, idx: Any) -> States:
    """Rows ``idx`` (beams, sequences) of a recurrent layer's state: (L, N, H) -> (L, len(idx),
    H), or a tuple of them for a cell with several states (host or device ``idx``)."""
    states = as_states(state)
    idx = to_backend(np.asarray(idx), backend_name(get_array_module(states[0])))
    return from_states(tuple(s[:, idx] for s in states))
