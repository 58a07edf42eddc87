"""Pure forward/backward pairs: ``out, cache = op_forward(...)`` and
``grads = op_backward(dout, cache)``. No state, no call-order protocol.

The ops here are the references, the textbook; ``fast`` has the recurrent
sequence ops with the same arguments, accelerated where it pays.

Every module numbers its equations in its docstring; backward comments cite
them, and docs/derivations.md derives them with the same names.
"""

from ._recurrent import length_mask
from .activations import (log_softmax, relu, relu_backward, sigmoid, sigmoid_backward,
                          softmax, softmax_backward, tanh, tanh_backward)
from .attention import (AdditiveAttentionCache, AdditiveProjectedCache, DotAttentionCache,
                        additive_attention_backward, additive_attention_forward,
                        additive_attention_projected_backward,
                        additive_attention_projected_forward,
                        additive_attention_projected_query_backward, concat_attention_caches,
                        dot_attention_backward, dot_attention_forward,
                        dot_attention_query_backward)
from .ctrnn import CTRNNCache, ctrnn_backward, ctrnn_forward
from .gru import GRUCache, gru_backward, gru_forward, gru_step_backward, gru_step_forward
from .jordan import JordanCache, jordan_backward, jordan_forward
from .layernorm import layer_norm, layer_norm_backward
from .layernorm_gru import LayerNormGRUCache, layernorm_gru_backward, layernorm_gru_forward
from .layernorm_lstm import LayerNormLSTMCache, layernorm_lstm_backward, layernorm_lstm_forward
from .linear import (EmbeddingCache, LinearCache, embedding_backward, embedding_forward,
                     linear_backward, linear_forward)
from .losses import (CrossEntropyCache, MSECache, mse_loss, mse_loss_backward,
                     softmax_cross_entropy, softmax_cross_entropy_backward)
from .lstm import LSTMCache, lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from .lstmp import LSTMPCache, lstmp_backward, lstmp_cell, lstmp_cell_backward, lstmp_forward
from .peephole import PeepholeLSTMCache, peephole_lstm_backward, peephole_lstm_forward
from .rnn import RNNCache, rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward
from . import fast  # noqa: E402  (the sequence ops accelerated where it pays, via the registry)
from . import bptt  # noqa: E402  (any sequence op in bounded memory: checkpointed_forward)

__all__ = [
    "fast", "bptt", "length_mask",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "relu", "relu_backward",
    "log_softmax", "softmax", "softmax_backward",
    "rnn_forward", "rnn_backward", "rnn_step_forward", "rnn_step_backward", "RNNCache",
    "lstm_forward", "lstm_backward", "lstm_step_forward", "lstm_step_backward", "LSTMCache",
    "lstmp_forward", "lstmp_backward", "lstmp_cell", "lstmp_cell_backward", "LSTMPCache",
    "gru_forward", "gru_backward", "gru_step_forward", "gru_step_backward", "GRUCache",
    "linear_forward", "linear_backward", "LinearCache",
    "embedding_forward", "embedding_backward", "EmbeddingCache",
    "softmax_cross_entropy", "softmax_cross_entropy_backward", "CrossEntropyCache",
    "mse_loss", "mse_loss_backward", "MSECache",
    "ctrnn_forward", "ctrnn_backward", "CTRNNCache",
    "jordan_forward", "jordan_backward", "JordanCache",
    "peephole_lstm_forward", "peephole_lstm_backward", "PeepholeLSTMCache",
    "layer_norm", "layer_norm_backward",
    "layernorm_lstm_forward", "layernorm_lstm_backward", "LayerNormLSTMCache",
    "layernorm_gru_forward", "layernorm_gru_backward", "LayerNormGRUCache",
    "dot_attention_forward", "dot_attention_backward", "dot_attention_query_backward",
    "DotAttentionCache",
    "additive_attention_forward", "additive_attention_backward", "AdditiveAttentionCache",
    "additive_attention_projected_forward", "additive_attention_projected_backward",
    "additive_attention_projected_query_backward", "AdditiveProjectedCache",
    "concat_attention_caches",
]
