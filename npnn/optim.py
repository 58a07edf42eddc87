"""Optimizers, gradient clipping and learning-rate schedules.

Each optimizer follows ``torch.optim``'s update rule (so the two agree step
for step on the same gradients) and updates parameters *in place*. It takes a
model (its ``parameters()`` beside its ``gradients()``) or a list of
(parameter, gradient) pairs; parameters and gradients keep their identity, so
create optimizers after ``model.to(...)``. ``state_dict()``/``load_state_dict()`` save and
restore the step count and every buffer (momentum, moments), for exact resumption.
"""

import math
from typing import Any, Dict, Iterable, List, Mapping, Protocol, Sequence, Tuple, Union

from ._checks import check_range
from ._typing import Array
from .backend import backend_name, get_array_module, is_array, to_backend, to_numpy


class HasGradients(Protocol):
    """A model: its ``parameters()`` beside its ``gradients()`` (``npnn.Module``)."""

    def parameters(self) -> Iterable[Array]: ...

    def gradients(self) -> Iterable[Array]: ...


#: A (parameter, gradient) pair: a tuple or list of two arrays.
Pair = Sequence[Array]
#: What optimizers and clipping take: a model, or (parameter, gradient) pairs.
Params = Union[HasGradients, Iterable[Pair]]


def _pairs(params: Params) -> List[Pair]:
    """(parameter, gradient) pairs: a module's ``parameters()`` beside its ``gradients()``,
    or a list of such pairs."""
    pairs: List[Pair]
    if hasattr(params, "gradients") and hasattr(params, "parameters"):
        pairs = list(zip(params.parameters(), params.gradients()))
    else:
        pairs = list(params)
    if not pairs:
        raise ValueError("expected at least one (parameter, gradient) pair, got none")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            hint = ("; pass the model itself (npnn keeps each gradient beside its parameter, "
                    "in model.gradients()) or zip(model.parameters(), model.gradients())"
                    if is_array(pair) else "")
            raise TypeError(f"expected (parameter, gradient) pairs, got {type(pair).__name__} "
                            f"at position {i}" + hint)
    return pairs


class Optimizer:
    """Base class: ``step()`` updates every parameter, ``zero_grad()`` clears gradients."""

    buffers: Tuple[str, ...] = ()   # names of the per-parameter state arrays

    def __init__(self, params: Params, lr: float) -> None:
        self.pairs = _pairs(params)
        self.lr = check_range("lr", lr)
        self.step_count = 0
        self.state: List[Dict[str, Array]] = [{} for _ in self.pairs]
        # work arrays of in-place updates (not state: never saved)
        self._work: Dict[int, Array] = {}

    def zero_grad(self) -> None:
        for _, g in self.pairs:
            g[...] = 0

    def _scratch(self, i: int, like: Array) -> Array:
        """A work array like parameter i, kept between steps but not part of the state."""
        work = self._work.get(i)
        if work is None or work.shape != like.shape or work.dtype != like.dtype:
            work = self._work[i] = get_array_module(like).empty_like(like)
        return work

    def _buffer(self, i: int, name: str, like: Array, fill: float = 0.0) -> Array:
        s = self.state[i]
        if name not in s:
            s[name] = get_array_module(like).full_like(like, fill)
        return s[name]

    def step(self) -> None:
        self.step_count += 1
        for i, (p, g) in enumerate(self.pairs):
            self._update(i, p, g)

    def _update(self, i: int, p: Array, g: Array) -> None:
        raise NotImplementedError

    def buffer_names(self) -> Tuple[str, ...]:
        """The names of the buffers every parameter holds after a step (a checkpoint's
        optimizer state must have exactly these)."""
        return tuple(self.buffers)

    def state_dict(self) -> Dict[str, Any]:
        """Step count, learning rate and every buffer (as NumPy arrays)."""
        return {"step_count": self.step_count, "lr": self.lr,
                "state": [{k: to_numpy(v) for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["state"]) != len(self.pairs):
            raise ValueError(f"expected optimizer state for {len(self.pairs)} parameters, "
                             f"got {len(state['state'])}")
        restored = []
        for i, (s, (p, _)) in enumerate(zip(state["state"], self.pairs)):
            entry: Dict[str, Array] = {}
            for k, v in s.items():
                if tuple(v.shape) != tuple(p.shape):
                    raise ValueError(f"expected optimizer buffer {k} of parameter {i} of shape "
                                     f"{tuple(p.shape)}, got {tuple(v.shape)}")
                entry[k] = to_backend(v, backend_name(get_array_module(p))).astype(p.dtype)
            restored.append(entry)
        self.state = restored
        self.step_count = int(state["step_count"])
        self.lr = float(state["lr"])


class SGD(Optimizer):
    """SGD with optional momentum, dampening, Nesterov momentum and weight decay (L2)."""

    def __init__(self, params: Params, lr: float = 0.1, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, lr)
        self.momentum = check_range("momentum", momentum)
        self.dampening = check_range("dampening", dampening)
        self.weight_decay = check_range("weight_decay", weight_decay)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("expected momentum > 0 and dampening = 0 with nesterov=True, got "
                             f"momentum={momentum}, dampening={dampening}")
        self.nesterov = bool(nesterov)

    def buffer_names(self) -> Tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    def _update(self, i: int, p: Array, g: Array) -> None:
        d = g + self.weight_decay * p if self.weight_decay else g
        if self.momentum:
            if "momentum" not in self.state[i]:
                self.state[i]["momentum"] = d.copy()
            else:
                buf = self.state[i]["momentum"]
                buf *= self.momentum
                buf += (1 - self.dampening) * d
            buf = self.state[i]["momentum"]
            d = d + self.momentum * buf if self.nesterov else buf
        p -= self.lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is L2 added to the gradient."""

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.beta1 = check_range("betas[0]", betas[0], 0.0, 1.0)
        self.beta2 = check_range("betas[1]", betas[1], 0.0, 1.0)
        self.eps = check_range("eps", eps)
        self.weight_decay = check_range("weight_decay", weight_decay)

    def _decay(self, p: Array, g: Array) -> Array:
        return g + self.weight_decay * p if self.weight_decay else g

    def _update(self, i: int, p: Array, g: Array) -> None:
        xp = get_array_module(p)
        g = self._decay(p, g)
        m = self._buffer(i, "exp_avg", p)
        v = self._buffer(i, "exp_avg_sq", p)
        s = self._scratch(i, p)               # in place, one work array: no allocation
        t = self.step_count
        bias1 = 1 - self.beta1 ** t
        bias2 = 1 - self.beta2 ** t
        xp.multiply(g, 1 - self.beta1, out=s)          # m = beta1 m + (1 - beta1) g
        m *= self.beta1
        m += s
        xp.multiply(g, g, out=s)                       # v = beta2 v + (1 - beta2) g^2
        s *= 1 - self.beta2
        v *= self.beta2
        v += s
        xp.sqrt(v, out=s)                              # denom = sqrt(v) / sqrt(bias2) + eps
        s /= math.sqrt(bias2)
        s += self.eps
        xp.divide(m, s, out=s)                         # p -= lr / bias1 * m / denom
        s *= self.lr / bias1
        p -= s


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * wd first."""

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, p: Array, g: Array) -> Array:
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay
        return g


class Adagrad(Optimizer):
    """Adagrad (as in min-char-rnn): p -= lr g / (sqrt(sum of g^2) + eps)."""

    buffers = ("sum",)

    def __init__(self, params: Params, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10) -> None:
        super().__init__(params, lr)
        self.lr_decay = check_range("lr_decay", lr_decay)
        self.weight_decay = check_range("weight_decay", weight_decay)
        self.initial = check_range("initial_accumulator_value", initial_accumulator_value)
        self.eps = check_range("eps", eps)

    def _update(self, i: int, p: Array, g: Array) -> None:
        xp = get_array_module(p)
        if self.weight_decay:
            g = g + self.weight_decay * p
        acc = self._buffer(i, "sum", p, self.initial)
        acc += g * g
        clr = self.lr / (1 + (self.step_count - 1) * self.lr_decay)
        p -= clr * g / (xp.sqrt(acc) + self.eps)


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering, PyTorch's form."""

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        super().__init__(params, lr)
        self.alpha = check_range("alpha", alpha)
        self.eps = check_range("eps", eps)
        self.weight_decay = check_range("weight_decay", weight_decay)
        self.momentum = check_range("momentum", momentum)
        self.centered = bool(centered)

    def buffer_names(self) -> Tuple[str, ...]:
        return ("square_avg",) + (("grad_avg",) if self.centered else ()) + (
            ("momentum_buffer",) if self.momentum else ())

    def _update(self, i: int, p: Array, g: Array) -> None:
        xp = get_array_module(p)
        if self.weight_decay:
            g = g + self.weight_decay * p
        sq = self._buffer(i, "square_avg", p)
        sq *= self.alpha
        sq += (1 - self.alpha) * g * g
        if self.centered:
            ga = self._buffer(i, "grad_avg", p)
            ga *= self.alpha
            ga += (1 - self.alpha) * g
            avg = xp.sqrt(sq - ga * ga) + self.eps
        else:
            avg = xp.sqrt(sq) + self.eps
        if self.momentum:
            buf = self._buffer(i, "momentum_buffer", p)
            buf *= self.momentum
            buf += g / avg
            p -= self.lr * buf
        else:
            p -= self.lr * g / avg


#: The optimizers by name, the one list of them: the configuration, the command line's
#: choices and the trainer read it.
OPTIMIZERS: Dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW,
                                           "adagrad": Adagrad, "rmsprop": RMSprop}


# -- clipping ------------------------------------------------------------------
def clip_grad_norm(params: Params, max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the factor is max_norm / (norm + 1e-6),
    applied only when it is below 1. Returns the norm before clipping (a float: on a
    GPU the one synchronisation of the call; the sum of squares stays on the device).
    """
    max_norm = check_range("max_norm", max_norm, low_open=True)
    grads = [g for _, g in _pairs(params)]
    squares = [get_array_module(g).vdot(g.ravel(), g.ravel()).astype("float64") for g in grads]
    total = math.sqrt(float(sum(squares[1:], squares[0])))
    scale = max_norm / (total + eps)
    if scale < 1:
        for g in grads:
            g *= scale
    return total


def clip_grad_value(params: Params, clip_value: float) -> None:
    """Clip every gradient element to [-clip_value, clip_value], in place."""
    clip_value = check_range("clip_value", clip_value, low_open=True)
    for _, g in _pairs(params):
        get_array_module(g).clip(g, -clip_value, clip_value, out=g)


# -- schedules -----------------------------------------------------------------
class StepLR:
    """Multiply the learning rate by ``gamma`` every ``step_size`` calls of ``step()``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.optimizer, self.base_lr = optimizer, optimizer.lr
        self.step_size, self.gamma, self.last = int(step_size), float(gamma), 0

    def step(self) -> None:
        self.last += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.last // self.step_size)


class CosineAnnealingLR:
    """Cosine decay from the initial rate to ``eta_min`` over ``T_max`` calls of ``step()``."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.optimizer, self.base_lr = optimizer, optimizer.lr
        self.T_max, self.eta_min, self.last = int(T_max), float(eta_min), 0

    def step(self) -> None:
        self.last = min(self.last + 1, self.T_max)
        cos = (1 + math.cos(math.pi * self.last / self.T_max)) / 2
        self.optimizer.lr = self.eta_min + (self.base_lr - self.eta_min) * cos


def perplexity(mean_nll: float) -> float:
    """exp of the mean negative log-likelihood per token."""
    return math.exp(min(float(mean_nll), 700.0))


#: PyTorch's names (``torch.nn.utils.clip_grad_norm_``; the trailing underscore marks an
#: in-place operation, which both are here too).
clip_grad_norm_ = clip_grad_norm
clip_grad_value_ = clip_grad_value
