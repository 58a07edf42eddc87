"""Models built from npnn's layers."""

from .lm import RNNLM, sampling_probs
from .seq2seq import Seq2Seq
from .sequence import ConditionalDecoder, SequenceClassifier, SequenceTagger

__all__ = ["RNNLM", "Seq2Seq", "SequenceClassifier", "SequenceTagger", "ConditionalDecoder",
           "sampling_probs"]
