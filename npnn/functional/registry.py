"""The cell registry: every recurrent cell, described once.

A cell is its file in this package (the equations, the step and the sequence
op, forward and backward) plus one ``register`` line at the bottom of this
module saying what layers, models and tools need to know about it: how many
gate blocks its weights stack, which states it carries, which parameters it
takes and which extra options. Everything above the functional level (the
recurrent layers, the one-step cell layers, the language model, the
sequence models, the gradient analysis, the gradient-check cases) asks this
registry, so adding a seventh cell means one new file and one line here.

Every cell's state is a tuple of arrays, its first element the hidden state
that is also the output (h; y for the Jordan network); the LSTMs carry (h, c).

Sizes are symbols: D (input), H (hidden), G*H (the stacked gate blocks) and any
*size option* a cell declares (``sizes``: the projected LSTM's ``proj_size`` is
P). Parameter shapes, each state's size and the output size are written in them
and resolved by ``Cell.dims``. A cell may be a *variant* of another
(``variant_of``): the other cell's layer given the variant's size options
(nonzero) runs the variant, so ``npnn.LSTM(..., proj_size=P)`` runs 'lstmp' and
``proj_size=0`` the plain 'lstm' (PyTorch's one ``nn.LSTM``), with no branch
in any layer (``resolve``).

Recurrent dropout and zoneout (``regularisers``) are written into a cell's own
equations: a cell whose sequence ops (reference and acceleration) take
``recurrent_mask=`` and ``zoneout=`` says so (``regularisers=True``). Weight-drop
needs no op of its own, only the name of the cell's recurrent weight matrix
(``recurrent``: 'W_hh', the Jordan network's 'W_yh'; None for a cell without one).
"""

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import accel, bptt, ctrnn, gru, jordan, lstm, lstmp, peephole, rnn
from .regularisers import Zoneout, zone_forward
from .._checks import check_step_input
from .._typing import Array
def uniform(rng: np.random.Generator, shape: Tuple[int, ...], H: int) -> np.ndarray:
    """PyTorch's initialisation of every recurrent parameter: U(-1/sqrt(H), 1/sqrt(H))."""
    k = 1.0 / math.sqrt(H)
    return rng.uniform(-k, k, size=shape)


def log_tau(rng: np.random.Generator, shape: Tuple[int, ...], H: int,
            tau: float = 2.0) -> np.ndarray:
    """log(tau) everywhere (CTRNN's time constants; ``npnn.CTRNN`` passes its ``tau``);
    draws nothing from ``rng``."""
    return np.full(shape, math.log(tau))


#: Initialisers by name: ``f(rng, shape, H) -> float64 array``, ``rng`` a NumPy Generator.
Initializer = Callable[[np.random.Generator, Tuple[int, ...], int], np.ndarray]
INITIALIZERS: Dict[str, Initializer] = {"uniform": uniform, "log_tau": log_tau}


@dataclass(frozen=True)
class Param:
    """One parameter of one layer and direction.

    ``name`` is the layer's name for it (PyTorch's, where PyTorch has the cell:
    ``weight_ih``), ``arg`` the op's argument (``W_ih``), ``shape`` in terms of
    G*H, H, D and the cell's size symbols (P), ``bias`` whether it exists only
    with ``bias=True``, ``init`` the name of its initialiser in ``INITIALIZERS``.
    """
    name: str
    arg: str
    shape: Tuple[str, ...]
    bias: bool = False
    init: str = "uniform"

    def size(self, G: int, H: int, D: int, **symbols: int) -> Tuple[int, ...]:
        """The shape for gate count G, sizes H, D and any further symbols (P=...)."""
        sizes = {"G*H": G * H, "H": H, "D": D, **symbols}
        return tuple(sizes[s] for s in self.shape)


#: PyTorch's four parameters of a gated cell, ``nn.RNN``/``nn.LSTM``/``nn.GRU``.
STANDARD = (Param("weight_ih", "W_ih", ("G*H", "D")), Param("weight_hh", "W_hh", ("G*H", "H")),
            Param("bias_ih", "b_ih", ("G*H",), bias=True),
            Param("bias_hh", "b_hh", ("G*H",), bias=True))


@dataclass(frozen=True)
class Cell:
    """What the rest of npnn needs to know about one recurrent cell.

    ``forward(x, *states0, **params, mask=..., **options) -> out, *finals, cache`` and
    ``backward(dout, *dfinals, cache) -> dx, *dinits, grads`` are the cell's
    sequence ops (the reference, in the cell's file); ``options`` maps each extra
    keyword option to its default; ``accelerated`` is the module of
    ``functional/accel`` with the same ops made faster (its ``forward``,
    ``backward``, cache type ``Cache`` and ``Prepared``), or None. The methods
    below are the one place that chooses between the two: the acceleration where
    ``accel.pays`` for the input, and the backward that matches the forward's cache.
    ``step_forward(x, *states, **params, **options) -> *new_states, cache`` and
    ``step_backward(*dstates, cache) -> dx, *dprev, grads``, where given, take
    one step directly (a cell without them steps as a sequence of one).

    ``choices`` maps an option to its allowed values (``nonlinearity``: 'tanh',
    'relu'), for layers, config and CLI to take. ``sizes`` maps each size option
    to its symbol (``{"proj_size": "P"}``): a positive integer smaller than H that
    the layer takes and resolves; the op itself reads it off the weights.
    ``state_sizes`` gives each state's size symbol (default H for all) and
    ``output`` the output's (default H). ``variant_of`` names the cell whose layer
    runs this one when given this one's size options (see ``resolve``).
    ``recurrent`` is the argument name of the cell's recurrent weight matrix (the one
    weight-drop masks; None: the cell has none) and ``regularisers`` whether its
    sequence ops take ``recurrent_mask=`` and ``zoneout=`` (``regularisers``).
    """
    name: str
    gates: int
    states: Tuple[str, ...]
    params: Tuple[Param, ...]
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    accelerated: Optional[ModuleType] = None
    step_forward: Optional[Callable[..., Any]] = None
    step_backward: Optional[Callable[..., Any]] = None
    choices: Mapping[str, Tuple[Any, ...]] = field(default_factory=dict)
    sizes: Mapping[str, str] = field(default_factory=dict)
    state_sizes: Optional[Tuple[str, ...]] = None
    output: str = "H"
    variant_of: Optional[str] = None
    recurrent: Optional[str] = "W_hh"
    regularisers: bool = False

    def __post_init__(self) -> None:
        if self.state_sizes is None:
            object.__setattr__(self, "state_sizes", ("H",) * len(self.states))

    def __reduce__(self) -> Tuple[Callable[[str], "Cell"], Tuple[str]]:
        """A registered cell pickles (and deep-copies) as its name: the copy is the
        registry's cell (its functions and acceleration module are no data to copy)."""
        if CELLS.get(self.name) is not self:
            raise TypeError(f"cannot pickle cell {self.name!r}: it is not the registered one")
        return get_cell, (self.name,)

    @property
    def n_states(self) -> int:
        return len(self.states)

    # Any: 'D' is None where D is (the state and output sizes, which never read it)
    def dims(self, D: Optional[int], H: int, **sizes: int) -> Dict[str, Any]:
        """Symbol -> size for input size D, hidden size H and the cell's size options
        (``proj_size=3`` -> P = 3): 'D', 'H', 'G*H' and each size symbol."""
        missing = sorted(set(self.sizes) - set(sizes))
        if missing:
            raise TypeError(f"cell '{self.name}' needs the size option(s) {', '.join(missing)}")
        return {"D": D, "H": H, "G*H": self.gates * H,
                **{self.sizes[name]: value for name, value in sizes.items()}}

    def param_shapes(self, D: int, H: int, bias: bool = True,
                     **sizes: int) -> List[Tuple[Param, Tuple[int, ...]]]:
        """[(Param, shape)] of one layer and direction with input size D (and the
        cell's size options, ``proj_size=...``)."""
        dims = self.dims(D, H, **sizes)
        return [(p, tuple(dims[s] for s in p.shape)) for p in self.params if bias or not p.bias]

    def state_shapes(self, N: int, H: int, **sizes: int) -> List[Tuple[int, int]]:
        """[(N, S)] of each state, S its size (H, or the size option's value)."""
        dims = self.dims(None, H, **sizes)
        # union-attr: state_sizes is None only until __post_init__ fills it
        return [(N, dims[s]) for s in self.state_sizes]  # type: ignore[union-attr]

    def output_size(self, H: int, **sizes: int) -> int:
        """The size of each step's output: H, or the size option's value (P)."""
        return self.dims(None, H, **sizes)[self.output]

    def run(self, x: Array, states: Sequence[Array], params: Dict[str, Array],
            mask: Optional[Array] = None, bptt_memory: Union[int, str, None] = None,
            **options: Any) -> Tuple[Array, Tuple[Array, ...], Any]:
        """x (T, N, D), a tuple of initial states (each (N, H) or None), the op's
        parameters by argument name -> out (T, N, H), tuple of final states, cache.
        The acceleration's forward where it pays (``accel.pays``), else the reference.
        ``bptt_memory`` (slots or 'sqrt', ``bptt_policy``) keeps states at checkpoints
        only and recomputes the segments in the backward (``bptt``); None keeps all.
        ``options`` may hold ``recurrent_mask`` and ``zoneout`` for a cell with
        ``regularisers`` (``functional/regularisers.py``)."""
        if bptt_memory is not None:
            return bptt.checkpointed_forward(self, x, states, params, mask, bptt_memory,
                                             **options)
        forward = self.forward
        if self.accelerated is not None and accel.pays(x, _hidden(params)):
            forward = self.accelerated.forward      # (it checks its arguments as forward does)
        out, *finals, cache = forward(x, *states, **params, mask=mask, **options)
        return out, tuple(finals), cache

    def run_backward(self, dout: Optional[Array], dfinals: Sequence[Array],
                     cache: Any) -> Tuple[Array, Tuple[Array, ...], Dict[str, Array]]:
        """-> dx (T, N, D), tuple of initial-state gradients, parameter gradients by argument;
        by the acceleration's backward where its forward made the cache (recomputing the
        segments of a checkpointed forward)."""
        if isinstance(cache, bptt.CheckpointedCache):
            return bptt.checkpointed_backward(self, dout, dfinals, cache)
        backward = self.backward
        if self.accelerated is not None and isinstance(cache, self.accelerated.Cache):
            backward = self.accelerated.backward
        dx, *dinits, grads = backward(dout, *dfinals, cache)
        return dx, tuple(dinits), grads

    def run_step(self, x: Array, states: Sequence[Array], params: Dict[str, Array],
                 **options: Any) -> Tuple[Tuple[Array, ...], Any]:
        """One step: x (N, D) -> tuple of new states (N, H), cache."""
        if self.step_forward is not None:
            *new, cache = self.step_forward(x, *states, **params, **options)
            return tuple(new), cache
        _, finals, cache = self.run(check_step_input(x)[None], states, params, **options)
        return finals, cache

    def run_inference(self, x: Array, states: Sequence[Array], params: Dict[str, Array],
                      mask: Optional[Array] = None,
                      **options: Any) -> Tuple[Array, Tuple[Array, ...]]:
        """``run`` for a forward that will never be backpropagated (it keeps no cache):
        the acceleration's prepared steps where its sequence forward does not pay, else
        ``run``. -> out (T, N, H), tuple of final states."""
        prepared = self.prepare(params, x, **options)
        if prepared is None:
            out, finals, _ = self.run(x, states, params, mask, **options)
            return out, finals
        return prepared.sequence(x, tuple(states), mask)

    def stepper(self, params: Dict[str, Array],
                **options: Any) -> Callable[[Array, Sequence[Array]], Tuple[Array, ...]]:
        """A function (x (N, D), tuple of states) -> tuple of new states for forward-only
        stepping (a decoder, generation), its preparation paid once here: the
        acceleration's prepared step, or ``run_step`` where there is none (no acceleration,
        or the accelerations switched off).
        Make it for one run of steps: it may keep what it derived from ``params`` (the
        biases' sum), so it does not follow later updates of the parameters."""
        if options.get("recurrent_mask") is not None or _eval_zoneout(
                options.get("zoneout")) is False:
            raise ValueError("a stepper takes zoneout's eval form only (regularisers.Zoneout "
                             "with key=None) and no recurrent_mask")
        prepared = self.prepare(params, **options)
        if prepared is not None:
            return prepared.step
        zone = _eval_zoneout(options.pop("zoneout", None))
        options.pop("recurrent_mask", None)
        if not isinstance(zone, tuple):         # None (False was refused above)
            return lambda x, states: self.run_step(x, states, params, **options)[0]
        rates = zone

        def step(x: Array, states: Sequence[Array]) -> Tuple[Array, ...]:
            new = self.run_step(x, states, params, **options)[0]
            old = tuple(s if s is not None else n * 0 for s, n in zip(states, new))
            return zone_forward(rates, new, old)            # regularisers (R4), eval
        return step

    def prepare(self, params: Dict[str, Array], x: Optional[Array] = None,
                **options: Any) -> Any:
        """The acceleration's ``Prepared`` steps for forward-only use, or None where they
        should not run: no acceleration, the accelerations switched off, or, given a
        whole sequence x (T, N, D), where its sequence forward pays."""
        if self.accelerated is None or not accel.enabled() or (
                x is not None and accel.pays(x, _hidden(params))):
            return None
        rm, zone = options.pop("recurrent_mask", None), _eval_zoneout(options.pop("zoneout", None))
        if rm is not None or zone is False:     # masks drawn: the sequence op applies them
            return None
        prepared = self.accelerated.Prepared(**params, **options)
        prepared.zone = zone
        return prepared

    def run_step_backward(self, dstates: Sequence[Array],
                          cache: Any) -> Tuple[Array, Tuple[Array, ...], Dict[str, Array]]:
        """Gradients of a step's new states (each (N, H) or None) -> dx (N, D), tuple of
        the previous states' gradients, parameter gradients."""
        if self.step_backward is not None:
            dx, *dprev, grads = self.step_backward(*dstates, cache)
            return dx, tuple(dprev), grads
        dx, dprev, grads = self.run_backward(None, dstates, cache)
        return dx[0], dprev, grads


def _eval_zoneout(zoneout: Any) -> Union[None, bool, Tuple[Optional[float], ...]]:
    """An op's ``zoneout`` -> None (none), its expectations p per state (the eval form, a
    ``Zoneout`` without key), or False (masks drawn or given: only a sequence op runs it)."""
    if zoneout is None:
        return None
    if isinstance(zoneout, Zoneout) and zoneout.key is None:
        rates = tuple(float(p) if p else None for p in zoneout.rates)
        return None if all(p is None for p in rates) else rates
    return False


def _hidden(params: Mapping[str, Array]) -> Optional[int]:
    """H, from W_hh (G*H, H) among a cell's parameters, or None."""
    W_hh = params.get("W_hh")
    # union-attr: ndim == 2 rules out the None that .get may give
    return None if getattr(W_hh, "ndim", None) != 2 else W_hh.shape[1]  # type: ignore[union-attr]


CELLS: Dict[str, Cell] = {}


def register(cell: Cell) -> Cell:
    """Add a cell to ``CELLS`` (its name must be new)."""
    if cell.name in CELLS:
        raise ValueError(f"a cell named {cell.name!r} is already registered")
    CELLS[cell.name] = cell
    return cell


def get_cell(name: Optional[str]) -> Cell:
    """The registered cell called ``name``, with a clear error for an unknown one."""
    if name not in CELLS:
        raise ValueError(f"expected cell to be one of {', '.join(map(repr, CELLS))}, got {name!r}")
    return CELLS[name]


def variants(name: str) -> List[Cell]:
    """The registered cells that are variants of ``name`` (by their names)."""
    return [c for c in CELLS.values() if c.variant_of == name]


def size_options(name: str) -> Dict[str, str]:
    """The size options a layer of cell ``name`` takes: its own and its variants'."""
    cell = get_cell(name)
    return {**cell.sizes, **{k: v for c in variants(name) for k, v in c.sizes.items()}}


def resolve(name: Optional[str], H: int, options: Mapping[str, Any]
            ) -> Tuple[Cell, Dict[str, int], Dict[str, Any]]:
    """The cell a layer of cell ``name`` and hidden size H runs with ``options``.

    Size options (``proj_size``) are split off and checked: each a positive integer
    smaller than H, or 0 (none) where ``name`` is the base of the variant that takes
    it. Given nonzero, they select that variant ('lstm' with proj_size > 0 is
    'lstmp'). Returns (cell, its size options, the other options).
    """
    cell = get_cell(name)
    known = size_options(cell.name)
    sizes = {k: v for k, v in options.items() if k in known}
    rest = {k: v for k, v in options.items() if k not in known}
    for k, v in sizes.items():
        optional = k not in cell.sizes
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not (
                (0 if optional else 1) <= v < H):
            zero = ", or 0 for none" if optional else ""
            raise ValueError(f"expected {k} to be a positive integer smaller than hidden_size="
                             f"{H}{zero}, got {v!r}")
    given = {k: int(v) for k, v in sizes.items() if v}
    if any(k not in cell.sizes for k in given):
        cell = next(c for c in variants(cell.name) if set(given) <= set(c.sizes))
    return cell, {k: given[k] for k in cell.sizes if k in given}, rest


def cell_choices() -> Tuple[str, ...]:
    """The cells a model, config or CLI may offer: those that are no variant of another
    (a variant is reached through its base's size option: 'lstm' + proj_size)."""
    return tuple(name for name, c in CELLS.items() if c.variant_of is None)


def as_states(state: Any) -> Tuple[Array, ...]:
    """A layer's state (one array, or a tuple of arrays for cells with several) -> tuple."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def from_states(states: Sequence[Array]) -> Any:
    """Inverse of ``as_states``: one array stays an array (PyTorch's RNN/GRU), several a tuple."""
    return states[0] if len(states) == 1 else tuple(states)


register(Cell("rnn", 1, ("h",), STANDARD, rnn.rnn_forward, rnn.rnn_backward,
              {"nonlinearity": "tanh"}, accel.rnn, rnn.rnn_step_forward, rnn.rnn_step_backward,
              choices={"nonlinearity": rnn.NONLINEARITIES}, regularisers=True))
register(Cell("lstm", 4, ("h", "c"), STANDARD, lstm.lstm_forward, lstm.lstm_backward,
              accelerated=accel.lstm, step_forward=lstm.lstm_step_forward,
              step_backward=lstm.lstm_step_backward, regularisers=True))
register(Cell("gru", 3, ("h",), STANDARD, gru.gru_forward, gru.gru_backward,
              accelerated=accel.gru, step_forward=gru.gru_step_forward,
              step_backward=gru.gru_step_backward, regularisers=True))
register(Cell("peephole_lstm", 4, ("h", "c"),
              STANDARD + (Param("weight_ci", "w_ci", ("H",)), Param("weight_cf", "w_cf", ("H",)),
                          Param("weight_co", "w_co", ("H",))),
              peephole.peephole_lstm_forward, peephole.peephole_lstm_backward,
              regularisers=True))
register(Cell("ctrnn", 1, ("h",), STANDARD + (Param("log_tau", "log_tau", ("H",), init="log_tau"),),
              ctrnn.ctrnn_forward, ctrnn.ctrnn_backward, {"dt": 1.0}, regularisers=True))
register(Cell("jordan", 1, ("y",),
              (Param("weight_ih", "W_ih", ("H", "D")), Param("weight_yh", "W_yh", ("H", "H")),
               Param("weight_hy", "W_hy", ("H", "H")), Param("bias_h", "b_h", ("H",), bias=True),
               Param("bias_y", "b_y", ("H",), bias=True)),
              jordan.jordan_forward, jordan.jordan_backward, recurrent="W_yh",
              regularisers=True))
register(Cell("lstmp", 4, ("h", "c"), (STANDARD[0], Param("weight_hh", "W_hh", ("G*H", "P")))
              + STANDARD[2:] + (Param("weight_hr", "W_hr", ("P", "H")),),
              lstmp.lstmp_forward, lstmp.lstmp_backward, sizes={"proj_size": "P"},
              state_sizes=("P", "H"), output="P", variant_of="lstm", regularisers=True))
