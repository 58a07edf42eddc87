"""Models built from npnn's layers."""

from .lm import RNNLM, sampling_probs
from .seq2seq import Seq2Seq

__all__ = ["RNNLM", "Seq2Seq", "sampling_probs"]
