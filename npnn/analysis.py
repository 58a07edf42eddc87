"""Why gradients vanish: per-step gradient norms, step Jacobians, and the adding problem.

``gradient_norms`` runs a single-layer RNN/LSTM/GRU step by step with the
hand-written step functions and backpropagates a loss on the *last* state,
recording ||dL/dh_t|| at every step t: the quantity that decays geometrically
in a plain RNN (docs/derivations.md, "Why gradients vanish").

``step_jacobians`` forms J_t = d state_t / d state_{t-1} at every step (for
the LSTM the state is (h, c), 2H wide) from the step backward with an identity
matrix of output gradients, and returns its singular values.

The adding problem (Hochreiter & Schmidhuber, 1997): a sequence of T pairs
(value in [0, 1), marker); exactly two markers are 1, one in each half; the
target is the sum of the two marked values. Predicting the mean (1.0) scores
MSE = 2 * (1/12) = 0.167; solving it needs memory over about T steps.

``npnn analyze`` (and ``python -m npnn.analysis``) prints the table of both and
saves PNG plots when matplotlib is installed. The tools work on NumPy layers
(analysis is a CPU job; move a GPU model with ``.to('numpy')`` first).
"""

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._typing import Array, Seed
from .backend import to_numpy
from .functional.registry import as_states, from_states
from .layers import Linear, MSELoss, Module
from .durable import atomic_write
from .layers.recurrent import Recurrent, layer_class
from .optim import Adam, clip_grad_norm

CELLS = ("rnn", "lstm", "gru")       # the cells the report compares
BASELINE_MSE = 1.0 / 6.0
#: Where progress lines go (``print``, a logger's method).
Log = Callable[[str], Any]
#: The report's results: cell -> {"norms": (T+1,), "sv": (T, S), "mse": float}.
Results = Dict[str, Dict[str, Any]]


# -- the adding problem ----------------------------------------------------------
def adding_problem(rng: np.random.Generator, N: int,
                   T: int) -> Tuple[NDArray[np.float32], NDArray[np.float32]]:
    """x (T, N, 2) and targets (N, 1): values, markers at one step in each half."""
    values = rng.random((T, N))
    markers = np.zeros((T, N))
    half = max(T // 2, 1)
    first = rng.integers(0, half, size=N)
    second = rng.integers(half, T, size=N) if T > 1 else first
    markers[first, np.arange(N)] = 1
    markers[second, np.arange(N)] = 1
    x = np.stack([values, markers], axis=2)
    y = (values[first, np.arange(N)] + values[second, np.arange(N)] * (T > 1))[:, None]
    return x.astype(np.float32), y.astype(np.float32)


class LastStateRegressor(Module):
    """A recurrent layer read out by a linear map of its final state: x (T, N, D) -> (N, O)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int = 1,
                 dtype: DTypeLike = "float32", seed: Seed = None) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.rnn = layer_class(cell)(input_size, hidden_size, dtype=dtype, seed=rng)
        self.head = Linear(hidden_size, output_size, dtype=dtype, seed=rng)

    def forward(self, x: Array) -> Array:
        _, h_n = self.rnn(x)
        states = as_states(h_n)
        self._push(len(states))
        return self.head(states[0][-1])

    def backward(self, dy: Array) -> None:
        with self._consume() as n_states:
            dh = self.head.backward(dy)[None]             # (1, N, H): the top layer's h_T
        self.rnn.backward(None, from_states((dh,) + (None,) * (n_states - 1)))


def train_adding(cell: str, T: int, hidden: int = 64, steps: int = 2000, batch: int = 64,
                 lr: float = 2e-3, seed: int = 0, log: Optional[Log] = None,
                 eval_every: int = 250,
                 stop_below: Optional[float] = None) -> Tuple[LastStateRegressor, float]:
    """Train a LastStateRegressor on the adding problem; returns (model, test MSE).

    With ``stop_below``, training stops early once the test MSE (checked every
    ``eval_every`` steps) is below it."""
    rng = np.random.default_rng(seed)
    model = LastStateRegressor(cell, 2, hidden, seed=seed)
    opt, mse = Adam(model, lr=lr), MSELoss()
    for step in range(steps):
        x, y = adding_problem(rng, batch, T)
        loss = float(mse(model(x), y))
        model.zero_grad()
        model.backward(mse.backward())
        clip_grad_norm(model, 1.0)
        opt.step()
        if (step + 1) % eval_every == 0:
            test = evaluate_adding(model, T, seed + 1)
            if log:
                log(f"  {cell} T={T} step {step + 1}: train MSE {loss:.4f}, test MSE {test:.4f}")
            if stop_below is not None and test < stop_below:
                break
    return model, evaluate_adding(model, T, seed + 1)


def evaluate_adding(model: Module, T: int, seed: int, N: int = 1000) -> float:
    x, y = adding_problem(np.random.default_rng(seed), N, T)
    was = model.training
    model.eval()
    pred = to_numpy(model(x))
    model.clear_caches()
    model.train(was)
    return float(np.mean((pred - y) ** 2))


# -- gradients through time --------------------------------------------------------
def _stepper(layer: Recurrent) -> Tuple[Any, Dict[str, Array], Dict[str, Any]]:
    """(cell spec, op parameters, options) of a single-layer recurrent layer's first layer."""
    return layer.spec, layer.cell_params(0, 0), layer.cell_options


def _run_steps(layer: Recurrent, x: NDArray[Any]) -> Tuple[List[Any], Tuple[Array, ...]]:
    spec, W, options = _stepper(layer)
    N, H = x.shape[1], layer.hidden_size
    states = tuple(np.zeros((N, H), dtype=x.dtype) for _ in spec.states)
    caches: List[Any] = []
    for t in range(x.shape[0]):
        states, cache = spec.run_step(x[t], states, W, **options)
        caches.append(cache)
    return caches, states


def gradient_norms(cell: str, layer: Recurrent, x: NDArray[Any],
                   d_last: Optional[NDArray[Any]] = None) -> NDArray[np.float64]:
    """||dL/dh_t|| for t = 0..T (h_0 the initial state) with L = <d_last, h_T>.

    ``layer`` is a single-layer npnn recurrent layer of the cell ``cell`` (any
    registered one), x (T, N, D); the norms are averaged over the batch.
    ``d_last`` (N, H) defaults to ones / sqrt(H). For cells with several
    states (the LSTM's (h, c)) the norm of the hidden state h_t's gradient is
    reported; the others' gradients flow alongside."""
    _check_cell(cell, layer)
    caches, final = _run_steps(layer, x)
    spec = layer.spec
    N, H = final[0].shape
    dh = np.full((N, H), 1.0 / np.sqrt(H), dtype=x.dtype) if d_last is None else d_last
    d = (dh,) + tuple(np.zeros_like(dh) for _ in final[1:])
    norms = [float(np.linalg.norm(d[0], axis=1).mean())]
    for cache in reversed(caches):
        _, d, _ = spec.run_step_backward(d, cache)
        norms.append(float(np.linalg.norm(d[0], axis=1).mean()))
    return np.array(norms[::-1])                     # index t: ||dL/dh_t||


def step_jacobians(cell: str, layer: Recurrent, x: NDArray[Any]) -> NDArray[np.float64]:
    """Singular values of J_t = d state_t / d state_{t-1}, t = 1..T, for the first
    sequence of x: array (T, S) with S = H per state (2H for the LSTM's (h, c)),
    descending."""
    _check_cell(cell, layer)
    spec, W, options = _stepper(layer)
    H = layer.hidden_size
    S = spec.n_states * H
    x1 = x[:, :1]
    states = tuple(np.zeros((1, H), dtype=x.dtype) for _ in spec.states)
    eye = np.eye(S, dtype=x.dtype)
    out = []
    for t in range(x.shape[0]):
        # the same step for S copies of the state, backpropagating the rows of I:
        # row k of the result is d state_t[k] / d state_{t-1}, i.e. row k of J_t
        xs = np.repeat(x1[t], S, axis=0)
        copies = tuple(np.repeat(s, S, axis=0) for s in states)
        _, cache = spec.run_step(xs, copies, W, **options)
        rows = tuple(eye[:, k * H:(k + 1) * H] for k in range(spec.n_states))
        _, d_prev, _ = spec.run_step_backward(rows, cache)
        J = np.concatenate(d_prev, axis=1)
        states, _ = spec.run_step(x1[t], states, W, **options)
        out.append(np.linalg.svd(J.astype(np.float64), compute_uv=False))
    return np.array(out)


def _check_cell(cell: str, layer: Recurrent) -> None:
    if layer.spec.name != cell or layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(f"expected a single-layer, one-direction {cell!r} layer, got {layer!r}")


# -- the report ------------------------------------------------------------------
def analyze(T: int = 100, hidden: int = 32, train_steps: int = 300, seed: int = 0,
            out_dir: Optional[str] = None, log: Log = print) -> Tuple[Results, str]:
    """Gradient norms and Jacobian spectra of RNN, LSTM and GRU on the adding problem,
    after ``train_steps`` steps of training each (0: at initialisation)."""
    x, _ = adding_problem(np.random.default_rng(seed + 7), 32, T)
    results: Results = {}
    for cell in CELLS:
        model, mse = (train_adding(cell, T, hidden, train_steps, seed=seed) if train_steps else
                      (LastStateRegressor(cell, 2, hidden, seed=seed), float("nan")))
        norms = gradient_norms(cell, model.rnn, x)
        sv = step_jacobians(cell, model.rnn, x)
        results[cell] = {"norms": norms, "sv": sv, "mse": mse}
    steps = sorted({0, T // 4, T // 2, 3 * T // 4, T - 10 if T > 10 else 0, T})
    lines = [f"||dL/dh_t|| for a loss on h_T (T = {T}, H = {hidden}, after {train_steps} training "
             "steps on the adding problem; batch mean)", "",
             "| t | " + " | ".join(c.upper() for c in CELLS) + " |", "|---" * (len(CELLS) + 1) + "|"]
    for t in steps:
        lines.append(f"| {t} | " + " | ".join(f"{results[c]['norms'][t]:.2e}" for c in CELLS) + " |")
    lines += ["", "Step Jacobians d state_t / d state_{t-1}: largest singular value (median over "
              "steps) and median singular value", "", "| cell | median max sv | median sv |",
              "|---|---|---|"]
    for c in CELLS:
        sv = results[c]["sv"]
        lines.append(f"| {c.upper()} | {np.median(sv[:, 0]):.3f} | {np.median(sv):.3f} |")
    table = "\n".join(lines)
    log(table)
    if out_dir:
        _plot(results, T, out_dir, log)
    return results, table


def _plot(results: Results, T: int, out_dir: str, log: Log) -> None:
    """Both panels on a ``matplotlib.figure.Figure`` of their own (no pyplot, no global
    backend switch), written atomically; a failing plot is reported, not raised."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log('(matplotlib not installed: no plots; pip install -e ".[plot]")')
        return
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for cell, r in results.items():
        axes[0].semilogy(np.arange(T + 1), r["norms"], label=cell.upper())
        axes[1].plot(np.arange(1, T + 1), r["sv"][:, 0], label=cell.upper())
    axes[0].set_xlabel("step t")
    axes[0].set_ylabel("||dL/dh_t||  (loss on h_T)")
    axes[0].set_title("gradient reaching each step")
    axes[1].set_xlabel("step t")
    axes[1].set_ylabel("largest singular value of d state_t / d state_{t-1}")
    axes[1].set_title("step Jacobians")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, "gradient_norms.png")
    try:
        os.makedirs(out_dir, exist_ok=True)
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
    except (OSError, ValueError) as e:
        log(f"(could not write the plot {path}: {e})")
        return
    log(f"plots: {path}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="npnn analyze", description="Why gradients vanish: "
                                "gradient norms through time and step-Jacobian spectra of "
                                "RNN, LSTM and GRU on the adding problem")
    p.add_argument("--T", type=int, default=100, help="sequence length")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=300, dest="train_steps",
                   help="training steps before measuring (0: at initialisation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/analysis", help="folder for the PNG plots")
    args = p.parse_args(argv)
    analyze(args.T, args.hidden, args.train_steps, args.seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
