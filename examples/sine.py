"""Regression: forecast a noisy sine wave with an RNN, against the last-value baseline.

    python examples/sine.py [--smoke] [--out runs/sine]

d2l's sequence-model data (section 9.1): x_t = sin(0.01 t) + noise, the noise
normal with standard deviation 0.2, t = 1..1000. From the ``tau`` values before
it the model predicts x_t: an RNN reads the window and a linear head maps its
last state to the forecast (``npnn.analysis.LastStateRegressor``), trained with
the mean squared error and Adam through ``npnn.fit``. The first 600
windows train it, the other 384 test it. The baseline forecasts the last value,
x_{t-1}: its error is about twice the noise variance (0.08); the best possible
is about the noise variance (0.04), since the noise cannot be predicted.
Prints both test MSEs; with matplotlib, ``OUT/loss.png`` shows the training
loss and the test MSE after every epoch.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npnn  # noqa: E402
from _common import WORLD  # noqa: E402  (data parallel under mpiexec; rank 0 prints)
from npnn.analysis import LastStateRegressor  # noqa: E402
from npnn.training.loop import Hooks, fit  # noqa: E402
from npnn.optim import Adam  # noqa: E402
from npnn.training.plot import plot_curves  # noqa: E402

T, N_TRAIN, NOISE = 1000, 600, 0.2


def make_data(tau, seed):
    """Windows X (n, tau) and targets y (n,) of the noisy sine, in time order."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, T + 1)
    x = (np.sin(0.01 * t) + rng.normal(0.0, NOISE, T)).astype(np.float32)
    X = np.stack([x[i:T - tau + i] for i in range(tau)], axis=1)     # (T - tau, tau)
    return X, x[tau:]


def as_sequences(X):
    """(n, tau) windows -> (tau, n, 1): time-major, one feature."""
    return np.ascontiguousarray(X.T[:, :, None])


def mse(model, X, y):
    was = model.training
    with npnn.no_grad():
        pred = model.eval().forward(as_sequences(X))[:, 0]
    model.train(was)
    return float(np.mean((pred - y) ** 2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tau", type=int, default=16, help="length of the input window")
    p.add_argument("--hidden", type=int, default=16, help="hidden size")
    p.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="rnn", help="recurrent cell")
    p.add_argument("--epochs", type=int, default=30, help="epochs")
    p.add_argument("--batch", type=int, default=16, help="windows per minibatch")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="of the noise, the weights and the order")
    p.add_argument("--out", default="runs/sine", help="folder of loss.png")
    p.add_argument("--smoke", action="store_true", help="a few epochs (CI)")
    args = p.parse_args(argv)
    epochs = 5 if args.smoke else args.epochs
    X, y = make_data(args.tau, args.seed)
    X_train, y_train, X_test, y_test = X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]
    model = LastStateRegressor(args.cell, 1, args.hidden, seed=args.seed)

    def batches(rng):
        order = rng.permutation(N_TRAIN)
        for i in range(0, N_TRAIN - args.batch + 1, args.batch):
            idx = order[i:i + args.batch][WORLD.rows(args.batch)]      # this process's rows
            yield (as_sequences(X_train[idx]),), y_train[idx, None]   # (tau, N, 1), (N, 1)

    hooks = Hooks(evaluate=lambda state, record: {"test_mse": mse(model, X_test, y_test)})
    state = fit(model, npnn.MSELoss(), batches, Adam(model, lr=args.lr), epochs=epochs,
                clip=1.0, rng=np.random.default_rng(args.seed), hooks=hooks,
                log=lambda line: print(f"  [{args.cell}] {line}"), world=WORLD)
    baseline = float(np.mean((X_test[:, -1] - y_test) ** 2))
    model_mse = mse(model, X_test, y_test)
    print(f"{len(y_train)} training / {len(y_test)} test windows of {args.tau} values; "
          f"noise variance {NOISE ** 2:.3f}")
    print(f"| forecast of x_t | test MSE |\n|---|---|\n"
          f"| last value x_(t-1) (baseline) | {baseline:.4f} |\n"
          f"| {args.cell.upper()} H={args.hidden}, {state.epoch} epochs | {model_mse:.4f} |")
    epochs_done = [r["epoch"] for r in state.history]
    os.makedirs(args.out, exist_ok=True)
    path = WORLD.rank == 0 and plot_curves(os.path.join(args.out, "loss.png"),
                       {"training loss": (epochs_done, [r["train_loss"] for r in state.history]),
                        "test MSE": (epochs_done, [r["test_mse"] for r in state.history]),
                        "baseline test MSE": (epochs_done, [baseline] * len(epochs_done))},
                       "epoch", "mean squared error", "noisy sine, next-value forecast",
                       logy=True)
    if path:
        print(f"plot: {path}")
    if model_mse >= baseline:
        print(f"the {args.cell.upper()} does not beat the last-value baseline", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
