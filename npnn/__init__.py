"""npnn: recurrent neural networks in NumPy/CuPy with hand-derived backpropagation.

The package is a house of one ground floor and two wings:

* the ground floor (the core): ``npnn.functional``, the reference cells, each the
  textbook of its equations, with their accelerations (``npnn.functional.accel``),
  the cell registry that chooses between them (``npnn.functional.registry``) and the
  accelerated entry (``npnn.functional.fast``); ``npnn.gradcheck``, the
  finite-difference checker; ``npnn.backend``, the NumPy/CuPy switch; and the homes of
  argument validation (``npnn._checks``) and of durable writes (``npnn.durable``);
* the library wing: ``npnn.layers`` (PyTorch's constructors, names and shapes),
  ``npnn.optim``, ``npnn.models`` (no training code in them), ``npnn.analysis`` and
  ``npnn.metrics``;
* the training wing, ``npnn.training``: the generic loop (``fit``), the
  language-model trainer, checkpoints, the run folder, configuration, data and
  corpora, plots, data-parallel training and the command line.

Nothing is imported until it is asked for (PEP 562): ``import npnn.functional`` loads
the ground floor alone, ``npnn.LSTM`` the layers, and ``npnn.fit``, ``npnn.Trainer``,
``npnn.load_model``, ``npnn.data`` or ``npnn.distributed`` the training wing.
"""

import importlib
from typing import Any, List

from ._version import __version__

#: Public names of the library wing and where they live.
_LIBRARY = {name: "npnn.layers" for name in (
    "Module", "no_grad", "enable_grad", "Recurrent", "RNN", "LSTM", "GRU", "PeepholeLSTM",
    "CTRNN", "JordanRNN", "LayerNormLSTM", "LayerNormGRU", "DotAttention", "AdditiveAttention",
    "RNNCell", "LSTMCell", "GRUCell", "LayerNormLSTMCell", "LayerNormGRUCell", "Linear", "Embedding", "Dropout", "SoftmaxCrossEntropy", "MSELoss",
    "Sequential")}

#: Public names of the training wing (reached lazily, never by ``import npnn``).
_TRAINING = {
    "fit": "npnn.training.loop", "Hooks": "npnn.training.loop",
    "TrainState": "npnn.training.loop", "Diverged": "npnn.training.loop",
    "Trainer": "npnn.training.trainer", "load_model": "npnn.training.trainer",
    "fit_seq2seq": "npnn.training.seq2seq",
}

#: Modules reachable as attributes: the package's own, and the training wing's under the
#: names they had before it existed (``npnn.data``, ``npnn.distributed``, ...).
_MODULES = {name: f"npnn.{name}" for name in (
    "backend", "functional", "gradcheck", "durable", "layers", "optim", "models", "analysis",
    "metrics", "training")}
_MODULES.update({name: f"npnn.training.{name}" for name in (
    "data", "distributed", "checkpoint", "config", "rundir", "plot", "cli")})

__all__ = ["__version__", *_LIBRARY, *_TRAINING, "backend", "functional", "gradcheck",
           "layers", "optim", "models", "training"]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _LIBRARY or name in _TRAINING:
        value = getattr(importlib.import_module(_LIBRARY.get(name) or _TRAINING[name]), name)
    else:
        raise AttributeError(f"module 'npnn' has no attribute {name!r}")
    globals()[name] = value                 # found once; later look-ups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LIBRARY) | set(_TRAINING) | set(_MODULES))
