"""Layers: thin stateful wrappers around ``npnn.functional``."""

from .attention import AdditiveAttention, DotAttention
from .base import Module, enable_grad, no_grad
from .basic import Dropout, Embedding, Linear, MSELoss, Sequential, SoftmaxCrossEntropy
from .cells import GRUCell, LSTMCell, RNNCell
from .recurrent import CTRNN, GRU, LSTM, RNN, JordanRNN, PeepholeLSTM, Recurrent

__all__ = ["Module", "no_grad", "enable_grad", "Recurrent", "RNN", "LSTM", "GRU", "PeepholeLSTM",
           "CTRNN", "JordanRNN", "RNNCell", "LSTMCell", "GRUCell", "DotAttention",
           "AdditiveAttention", "Linear", "Embedding", "Dropout", "SoftmaxCrossEntropy",
           "MSELoss", "Sequential"]
