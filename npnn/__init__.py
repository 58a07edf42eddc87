"""npnn: recurrent neural networks in NumPy/CuPy with hand-derived backpropagation.

``npnn.functional`` holds the pure forward/backward pairs, ``npnn.gradcheck``
the finite-difference checker, ``npnn.backend`` the NumPy/CuPy switch, and
the layers below wrap them with PyTorch's constructors, names and shapes.
"""

__version__ = "0.1.0"

from . import backend, functional  # noqa: E402,F401
from .layers import (CTRNN, AdditiveAttention, DotAttention, GRU, LSTM, RNN, Dropout, Embedding, GRUCell,  # noqa: E402
                     JordanRNN, Linear, LSTMCell, Module, MSELoss, PeepholeLSTM, Recurrent,
                     RNNCell,
                     Sequential, SoftmaxCrossEntropy, enable_grad, no_grad)

from . import data, metrics, models, optim  # noqa: E402,F401

__all__ = ["backend", "functional", "Module", "no_grad", "enable_grad", "Recurrent", "RNN", "LSTM", "GRU", "PeepholeLSTM",
           "CTRNN", "JordanRNN", "DotAttention", "AdditiveAttention", "RNNCell",
           "LSTMCell", "GRUCell", "Linear", "Embedding", "Dropout", "SoftmaxCrossEntropy",
           "MSELoss", "Sequential"]
