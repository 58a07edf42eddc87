"""``npnn.RNNCell``, ``npnn.LSTMCell``, ``npnn.GRUCell``: one time step, PyTorch's signatures.

For models that step by hand (decoders, generation): call ``forward`` once per
step, then ``backward`` once per step in reverse order; each backward consumes
the most recent forward's cache. Parameters: ``weight_ih`` (G*H, D),
``weight_hh`` (G*H, H), ``bias_ih``, ``bias_hh`` (G*H,), initialised
U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch.
"""

import math

from .. import functional as F
from .._checks import check_choice, check_float, check_same_backend, check_shape
from .base import Module, check_dtype, check_positive_int, make_rng
from .recurrent import _check_bool

_PARAM_NAMES = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


class _Cell(Module):
    gates = 1
    n_states = 1

    def __init__(self, input_size, hidden_size, bias=True, dtype="float32", seed=None):
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.bias = _check_bool("bias", bias)
        self.dtype = check_dtype(dtype)
        rng = make_rng(seed)
        G, H, D = self.gates, self.hidden_size, self.input_size
        k = 1.0 / math.sqrt(H)
        shapes = [("weight_ih", (G * H, D)), ("weight_hh", (G * H, H))]
        if self.bias:
            shapes += [("bias_ih", (G * H,)), ("bias_hh", (G * H,))]
        for name, shape in shapes:
            self._add_param(name, rng.uniform(-k, k, size=shape).astype(self.dtype))

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _weights(self):
        p = self.params
        return (p["weight_ih"], p["weight_hh"],
                p.get("bias_ih"), p.get("bias_hh"))

    def _check_x(self, x):
        check_float("x", x)
        if x.dtype != self.dtype:
            raise TypeError(f"expected x of dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        check_same_backend(x=x, weights=self.params["weight_ih"])
        D = self.input_size
        if x.ndim not in (1, 2) or x.shape[-1] != D:
            raise ValueError(f"expected x of shape (N, {D}) or ({D},), got {tuple(x.shape)}")
        return (x, True) if x.ndim == 2 else (x[None], False)

    def _check_state(self, name, s, N, batched):
        if s is None:
            return None
        check_float(name, s, self.dtype)
        H = self.hidden_size
        if batched:
            return check_shape(name, s, (N, H))
        check_shape(name, s, (H,))
        return s[None]

    def _grads(self, grads):
        for k, g in grads.items():
            self._accumulate(_PARAM_NAMES[k], g)

    @staticmethod
    def _unbatch(a, batched):
        return a if batched else a[0]


class _SingleStateCell(_Cell):
    """Cells whose state is one array h (RNN, GRU); subclasses give the step pair."""

    def forward(self, x, hx=None):
        """x (N, D) or (D,), hx (N, H)/(H,) or None -> h' (N, H)/(H,)."""
        x, batched = self._check_x(x)
        h = self._check_state("hx", hx, x.shape[0], batched)
        h1, cache = self._step_forward(x, h)
        self._push((cache, batched))
        return self._unbatch(h1.copy(), batched)

    def backward(self, dh):
        """dh shaped like h' -> dx (like x), dhx (like hx)."""
        cache, batched = self._pop()
        dh = self._check_state("dh", dh, cache.x.shape[1], batched)
        dx, dh0, grads = self._step_backward(dh, cache)
        self._grads(grads)
        return self._unbatch(dx, batched), self._unbatch(dh0, batched)


class RNNCell(_SingleStateCell):
    """``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype="float32", seed=None):
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, F.rnn.NONLINEARITIES)
        super().__init__(input_size, hidden_size, bias, dtype, seed)

    def _step_forward(self, x, h):
        return F.rnn_step_forward(x, h, *self._weights(), self.nonlinearity)

    def _step_backward(self, dh, cache):
        return F.rnn_step_backward(dh, cache)


class GRUCell(_SingleStateCell):
    """PyTorch's GRU step, gate order r, z, n."""
    gates = 3

    def _step_forward(self, x, h):
        return F.gru_step_forward(x, h, *self._weights())

    def _step_backward(self, dh, cache):
        return F.gru_step_backward(dh, cache)


class LSTMCell(_Cell):
    """PyTorch's LSTM step, gate order i, f, g, o; states are tuples (h, c)."""
    gates = 4

    def forward(self, x, hx=None):
        """x (N, D) or (D,), hx = (h, c) or None -> (h', c')."""
        x, batched = self._check_x(x)
        N = x.shape[0]
        if hx is None:
            h = c = None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h = self._check_state("hx[0]", hx[0], N, batched)
            c = self._check_state("hx[1]", hx[1], N, batched)
        else:
            raise TypeError(f"expected hx to be a tuple (h, c) or None, got {type(hx).__name__}")
        h1, c1, cache = F.lstm_step_forward(x, h, c, *self._weights())
        self._push((cache, batched))
        return self._unbatch(h1.copy(), batched), self._unbatch(c1.copy(), batched)

    def backward(self, dh, dc=None):
        """dh, dc shaped like h', c' (either may be None) -> dx, (dh0, dc0)."""
        cache, batched = self._pop()
        N = cache.x.shape[1]
        dh = self._check_state("dh", dh, N, batched)
        dc = self._check_state("dc", dc, N, batched)
        dx, dh0, dc0, grads = F.lstm_step_backward(dh, dc, cache)
        self._grads(grads)
        return self._unbatch(dx, batched), (self._unbatch(dh0, batched), self._unbatch(dc0, batched))
