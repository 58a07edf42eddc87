"""Layers: thin stateful wrappers around ``npnn.functional``."""

from .attention import AdditiveAttention, DotAttention
from .base import Module, enable_grad, no_grad
from .basic import Dropout, Embedding, Linear, MSELoss, Sequential, SoftmaxCrossEntropy
from .cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RNNCell
from .recurrent import (CTRNN, GRU, LSTM, RNN, JordanRNN, LayerNormGRU, LayerNormLSTM,
                        PeepholeLSTM, Recurrent)

__all__ = ["Module", "no_grad", "enable_grad", "Recurrent", "RNN", "LSTM", "GRU", "PeepholeLSTM",
           "CTRNN", "JordanRNN", "LayerNormLSTM", "LayerNormGRU", "RNNCell", "LSTMCell", "GRUCell",
           "LayerNormLSTMCell", "LayerNormGRUCell", "DotAttention",
           "AdditiveAttention", "Linear", "Embedding", "Dropout", "SoftmaxCrossEntropy",
           "MSELoss", "Sequential"]
