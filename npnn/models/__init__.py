"""Models built from npnn's layers."""

from .lm import RNNLM, sampling_probs

__all__ = ["RNNLM", "sampling_probs"]
