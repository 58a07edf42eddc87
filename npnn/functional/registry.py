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

from . import (accel, bptt, ctrnn, gru, jordan, layernorm_gru, layernorm_lstm, lstm, lstmp,
               peephole, rnn)
from .regularisers import Zoneout, zone_forward
from .._checks import check_choice, check_step_input
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


def zeros(rng: np.random.Generator, shape: Tuple[int, ...], H: int) -> np.ndarray:
    """0 everywhere (the layer normalisations' biases); draws nothing from ``rng``."""
    return np.zeros(shape)


def ones(rng: np.random.Generator, shape: Tuple[int, ...], H: int) -> np.ndarray:
    """1 everywhere (the layer normalisations' gains); draws nothing from ``rng``."""
    return np.ones(shape)


def _check_matrix(name: str, shape: Tuple[int, ...]) -> Tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"initialiser {name!r} is for weight matrices, got a parameter of "
                         f"shape {shape}")
    return shape[0], shape[1]


def orthogonal(rng: np.random.Generator, shape: Tuple[int, ...], H: int) -> np.ndarray:
    """Orthogonal blocks, as ``torch.nn.init.orthogonal_`` draws one matrix (Saxe et al. 2014).

    A (G*H, C) weight (rows a multiple of H: W_ih, W_hh) is G gate blocks (H, C), each
    drawn orthogonal on its own, so that every gate's map is; another matrix (H, C),
    (P, H) is one block. A block (R, C) is Q of the QR factorisation of a standard normal
    (R, C) (of its transpose when R < C), its columns' signs fixed by diag(R): Haar
    distributed, with orthonormal columns (R >= C) or rows (R < C)."""
    rows, cols = _check_matrix("orthogonal", shape)
    block = H if rows % H == 0 else rows
    out = np.empty(shape)
    for k in range(rows // block):
        a = rng.standard_normal((block, cols))
        if block < cols:
            a = a.T
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))                        # (R, C) or (C, R): the Haar measure
        out[k * block:(k + 1) * block] = q.T if block < cols else q
    return out


def xavier_uniform(rng: np.random.Generator, shape: Tuple[int, ...], H: int) -> np.ndarray:
    """U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio 2010), the fans those of
    the whole (rows, cols) matrix (fan_in = cols, fan_out = rows), as
    ``torch.nn.init.xavier_uniform_`` gives a stacked (G*H, D) weight."""
    rows, cols = _check_matrix("xavier_uniform", shape)
    a = math.sqrt(6.0 / (rows + cols))
    return rng.uniform(-a, a, size=shape)


def xavier_normal(rng: np.random.Generator, shape: Tuple[int, ...], H: int) -> np.ndarray:
    """N(0, s^2), s = sqrt(2 / (fan_in + fan_out)), the fans as ``xavier_uniform``'s."""
    rows, cols = _check_matrix("xavier_normal", shape)
    return math.sqrt(2.0 / (rows + cols)) * rng.standard_normal(shape)


#: Initialisers by name: ``f(rng, shape, H) -> float64 array``, ``rng`` a NumPy Generator.
Initializer = Callable[[np.random.Generator, Tuple[int, ...], int], np.ndarray]
INITIALIZERS: Dict[str, Initializer] = {
    "uniform": uniform, "log_tau": log_tau, "zeros": zeros, "ones": ones,
    "orthogonal": orthogonal, "xavier_uniform": xavier_uniform, "xavier_normal": xavier_normal}
#: The initialisers a layer's ``init=`` may name (log_tau is the CTRNN's own).
INIT_CHOICES = ("uniform", "orthogonal", "xavier_uniform", "xavier_normal", "zeros", "ones")
#: Those that need a matrix.
MATRIX_INITS = ("orthogonal", "xavier_uniform", "xavier_normal")
#: A layer's ``init=``: None (each parameter's own), one name for every weight matrix,
#: or a mapping from parameter names ('weight_hh') to initialiser names.
InitSpec = Union[None, str, Mapping[str, str]]


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
    ``forget_gate`` is the index of the forget gate's block among the G stacked gate
    blocks (1 in i, f, g, o), or None for a cell without one: a layer's ``forget_bias``
    goes there (``forget_bias_slice``).
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
    forget_gate: Optional[int] = None
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

    def layout(self, N: int, H: int, dtype: Any, xp: Any = np) -> str:
        """The layout ('batch' or 'feature', ``accel._layout``) this cell's accelerated
        sequences of N rows and hidden size H run in (timed on first use; 'batch' for a
        cell without acceleration unless one is forced). A training run keeps it for its
        whole life (``accel.use_layout``)."""
        return accel.layout_for(self.accelerated, N, H, dtype, xp)

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


def initializer_names(cell: Cell, init: InitSpec = None) -> Dict[str, str]:
    """Parameter name -> initialiser name for a layer of ``cell`` given ``init``: each
    parameter's own (``Param.init``) where ``init`` is None; one name of
    ``INIT_CHOICES`` for every weight matrix (the 2-D parameters; biases, gains and time
    constants keep theirs); or a mapping from some of the cell's parameter names
    ('weight_hh', 'weight_ih', ...) to names, the others keeping theirs."""
    names = {p.name: p.init for p in cell.params}
    matrices = {p.name for p in cell.params if len(p.shape) == 2}
    if init is None:
        return names
    if isinstance(init, str):
        check_choice("init", init, INIT_CHOICES)
        return {k: init if k in matrices else v for k, v in names.items()}
    if not isinstance(init, Mapping):
        raise TypeError(f"expected init to be None, an initialiser's name or a mapping from "
                        f"parameter names to initialisers' names, got {type(init).__name__}")
    for k, v in init.items():
        check_choice(f"a key of init (cell '{cell.name}')", k, tuple(names))
        check_choice(f"init[{k!r}]", v, INIT_CHOICES)
        if v in MATRIX_INITS and k not in matrices:
            raise ValueError(f"expected init[{k!r}] to be an initialiser for vectors "
                             f"({k} is not a matrix), got {v!r}")
    return {**names, **init}


def check_forget_bias(cell: Cell, forget_bias: Optional[float], bias: bool) -> Optional[float]:
    """A layer's ``forget_bias``: None, or a finite number for a cell with a forget gate and
    biases (it is added to the forget gate's slice of bias_ih: ``forget_bias_slice``)."""
    if forget_bias is None:
        return None
    if cell.forget_gate is None:
        raise ValueError(f"expected forget_bias=None for cell '{cell.name}', which has no "
                         f"forget gate, got {forget_bias!r}")
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float, np.floating,
                                                                     np.integer)) \
            or not math.isfinite(forget_bias):
        raise ValueError(f"expected forget_bias to be a finite number or None, "
                         f"got {forget_bias!r}")
    if not bias:
        raise ValueError(f"expected bias=True with forget_bias={forget_bias!r} (it is added to "
                         f"bias_ih), got bias=False")
    return float(forget_bias)


def forget_bias_slice(cell: Cell, H: int) -> slice:
    """The forget gate's rows of a (G*H,) bias: where ``forget_bias`` goes."""
    if cell.forget_gate is None:
        raise ValueError(f"cell '{cell.name}' has no forget gate")
    return slice(cell.forget_gate * H, (cell.forget_gate + 1) * H)


def init_param(cell: Cell, p: Param, shape: Tuple[int, ...], rng: np.random.Generator, H: int,
               init: Optional[str] = None, forget_bias: Optional[float] = None) -> np.ndarray:
    """Parameter ``p`` of ``cell`` (float64) drawn from ``rng`` by the initialiser ``init``
    (its own, ``p.init``, where None), with ``forget_bias`` added to the forget gate's slice
    where ``p`` is bias_ih: b_ih + b_hh then starts forget_bias above the other gates'
    (Gers et al. 2000; Jozefowicz et al. 2015 set the forget gate's bias to 1)."""
    value = INITIALIZERS[init or p.init](rng, shape, H)
    if forget_bias is not None and p.name == "bias_ih":
        value[forget_bias_slice(cell, H)] += forget_bias
    return value


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
              step_backward=lstm.lstm_step_backward, forget_gate=1, regularisers=True))
register(Cell("gru", 3, ("h",), STANDARD, gru.gru_forward, gru.gru_backward,
              accelerated=accel.gru, step_forward=gru.gru_step_forward,
              step_backward=gru.gru_step_backward, regularisers=True))
register(Cell("peephole_lstm", 4, ("h", "c"),
              STANDARD + (Param("weight_ci", "w_ci", ("H",)), Param("weight_cf", "w_cf", ("H",)),
                          Param("weight_co", "w_co", ("H",))),
              peephole.peephole_lstm_forward, peephole.peephole_lstm_backward, forget_gate=1,
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
              state_sizes=("P", "H"), output="P", variant_of="lstm", forget_gate=1,
              regularisers=True))
register(Cell("layernorm_lstm", 4, ("h", "c"),
              STANDARD + (Param("ln_ih_weight", "gamma_ih", ("G*H",), init="ones"),
                          Param("ln_ih_bias", "beta_ih", ("G*H",), bias=True, init="zeros"),
                          Param("ln_hh_weight", "gamma_hh", ("G*H",), init="ones"),
                          Param("ln_hh_bias", "beta_hh", ("G*H",), bias=True, init="zeros"),
                          Param("ln_c_weight", "gamma_c", ("H",), init="ones"),
                          Param("ln_c_bias", "beta_c", ("H",), bias=True, init="zeros")),
              layernorm_lstm.layernorm_lstm_forward, layernorm_lstm.layernorm_lstm_backward,
              forget_gate=1, regularisers=True))
register(Cell("layernorm_gru", 3, ("h",),
              STANDARD + (Param("ln_ih_weight", "gamma_ih", ("G*H",), init="ones"),
                          Param("ln_ih_bias", "beta_ih", ("G*H",), bias=True, init="zeros"),
                          Param("ln_hh_weight", "gamma_hh", ("G*H",), init="ones"),
                          Param("ln_hh_bias", "beta_hh", ("G*H",), bias=True, init="zeros")),
              layernorm_gru.layernorm_gru_forward, layernorm_gru.layernorm_gru_backward,
              regularisers=True))
