"""Configuration is data: the language model's configuration apart from the run's settings.

As nanoGPT keeps ``GPTConfig`` (the model) apart from its training settings,
``ModelConfig`` holds what ``build_model`` needs (and, with the vocabulary, all
that ``npnn generate`` needs), and ``TrainConfig`` holds every setting of a run,
one field per ``npnn train`` flag. A checkpoint stores the two parts separately
(``TrainConfig.model_config`` and ``TrainConfig.run_settings``).

Every field has one rule in ``RULES``, used by both classes; a value out of its
range raises ``ConfigError`` naming the field (the command line turns the field
into its flag: ``argument --max-tokens: expected a positive integer, got -5000``).
"""

import dataclasses
from typing import Optional

from .._checks import (DTYPES, boolean, finite_number, fraction, int_at_least,
                       non_empty_string, one_of, optional, positive_number)
from ..backend import BACKENDS
from ..functional.bptt_policy import check_memory
from ..functional.registry import CELLS, INIT_CHOICES, cell_choices, get_cell
from ..optim import OPTIMIZERS
from .data import TOKEN_MODES


class ConfigError(ValueError):
    """A setting out of range. ``field`` names it (None: not one setting), ``detail``
    says what was expected and what came."""

    def __init__(self, field, detail):
        self.field, self.detail = field, detail
        super().__init__(detail if field is None else f"{field}: {detail}")

    @property
    def flag(self):
        """The command-line flag of the field: max_tokens -> --max-tokens."""
        return None if self.field is None else "--" + self.field.replace("_", "-")


# -- the rules: npnn._checks's settings rules; ConfigError names the field ------------------
PREPROCESS = ("none", "timemachine")
ITERATORS = ("sequential", "random")

RULES = {
    # the model
    "vocab_size": int_at_least(1), "cell": one_of(*cell_choices()), "hidden": int_at_least(1),
    "layers": int_at_least(1), "embedding": int_at_least(0), "dropout": fraction,
    "embedding_dropout": fraction, "recurrent_dropout": fraction, "zoneout": fraction,
    "weight_drop": fraction,
    "tie": boolean, "dtype": one_of(*DTYPES), "tokens": one_of(*TOKEN_MODES),
    "forget_bias": optional(finite_number), "init": optional(one_of(*INIT_CHOICES)),
    # the data
    "text": optional(non_empty_string), "preprocess": one_of(*PREPROCESS),
    "min_freq": int_at_least(0), "max_tokens": optional(int_at_least(1)),
    "val_fraction": fraction, "batch": int_at_least(1), "steps": int_at_least(1),
    "iterator": one_of(*ITERATORS), "bptt_memory": check_memory,
    # the optimisation and the budget
    "epochs": optional(int_at_least(1)), "minutes": optional(positive_number),
    "optimizer": one_of(*OPTIMIZERS), "lr": positive_number, "clip": optional(positive_number),
    "seed": int_at_least(0), "backend": one_of(*BACKENDS),
    # the samples shown during training
    "sample_every": int_at_least(1), "sample_length": int_at_least(1),
    "prefix": optional(non_empty_string),
}


def check_setting(name, rule, value):
    """``rule(value)`` (a settings rule of ``npnn._checks``), its ValueError turned into a
    ConfigError naming the field ``name``; returns ``value``."""
    try:
        rule(value)
    except ValueError as e:
        raise ConfigError(name, str(e)) from None
    return value


def _validate(obj):
    for f in dataclasses.fields(obj):
        check_setting(f.name, RULES[f.name], getattr(obj, f.name))
    if getattr(obj, "tie", False) and obj.embedding != obj.hidden:
        raise ConfigError("tie", f"expected --embedding equal to --hidden ({obj.hidden}) to tie "
                                 f"the embedding and the decoder, got --embedding {obj.embedding}")
    if getattr(obj, "forget_bias", None) is not None and get_cell(obj.cell).forget_gate is None:
        raise ConfigError("forget_bias", f"expected no --forget-bias for --cell {obj.cell}, which "
                                         f"has no forget gate, got {obj.forget_bias!r}")
    if getattr(obj, "embedding_dropout", 0) and not obj.embedding:
        raise ConfigError("embedding_dropout", f"expected an embedding (--embedding above 0) to "
                                               f"drop words of, got one-hot inputs (--embedding "
                                               f"{obj.embedding})")
    spec = CELLS.get(obj.cell)
    if spec is not None and not spec.regularisers:
        for name in ("recurrent_dropout", "zoneout"):
            if getattr(obj, name, 0):
                raise ConfigError(name, f"cell {obj.cell} does not take it (its ops have no "
                                        "recurrent mask or zoneout); expected 0")
    if spec is not None and spec.recurrent is None and getattr(obj, "weight_drop", 0):
        raise ConfigError("weight_drop", f"cell {obj.cell} has no recurrent weight matrix to "
                                         "drop from; expected 0")
    return obj


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The language model (``npnn.models.RNNLM``): ``build_model(ModelConfig(...))``."""
    vocab_size: int
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embedding: int = 64                 # 0: one-hot inputs (d2l)
    dropout: float = 0.0
    embedding_dropout: float = 0.0      # whole words dropped (AWD-LSTM's embedding dropout)
    recurrent_dropout: float = 0.0      # one mask per sequence on the recurrent state
    zoneout: float = 0.0                # units keep their previous value, every state alike
    weight_drop: float = 0.0            # DropConnect on the recurrent weight (AWD-LSTM)
    tie: bool = False                   # the decoder shares the embedding's weight
    dtype: str = "float32"
    tokens: str = "char"                # 'char' or 'word': how text becomes tokens
    forget_bias: Optional[float] = None  # added to the LSTMs' forget-gate bias_ih slice
    init: Optional[str] = None          # the weight matrices' initialiser; None: PyTorch's

    def validate(self):
        return _validate(self)


#: The fields of TrainConfig that are the model's (all of ModelConfig's but vocab_size).
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size")


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run, one per ``npnn train`` flag. Defaults: the README's command."""
    text: Optional[str] = None          # a UTF-8 file, or None for the default corpus
    preprocess: str = "none"            # 'none' or 'timemachine' (d2l: letters and space)
    tokens: str = "char"                # 'char' or 'word'
    min_freq: int = 0
    max_tokens: Optional[int] = None    # keep only the first tokens (d2l: 10,000)
    val_fraction: float = 0.05
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embedding: int = 64                 # 0: one-hot inputs (d2l)
    dropout: float = 0.0
    embedding_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    weight_drop: float = 0.0
    tie: bool = False
    forget_bias: Optional[float] = None  # LSTM cells: added to the forget gate's bias_ih
    init: Optional[str] = None          # every weight matrix's initialiser; None: PyTorch's
    batch: int = 32
    steps: int = 64
    iterator: str = "sequential"        # or 'random' (d2l's two schemes)
    bptt_memory: Optional[object] = None  # slots (int) or 'sqrt': recompute, keep less
    epochs: Optional[int] = None
    minutes: Optional[float] = 3.0      # per session; None: no time limit (needs epochs)
    optimizer: str = "adam"
    lr: float = 2e-3
    clip: Optional[float] = 1.0
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"
    sample_every: int = 5               # epochs
    sample_length: int = 200
    prefix: Optional[str] = None        # prompt of the samples; default from the corpus

    def validate(self):
        _validate(self)
        if self.epochs is None and self.minutes is None:
            raise ConfigError("minutes", "expected a budget: epochs or minutes (or both), got "
                                         "neither")
        return self

    def model_config(self, vocab_size):
        """The model's part of the settings, for a vocabulary of ``vocab_size``."""
        return ModelConfig(vocab_size=vocab_size,
                           **{k: getattr(self, k) for k in MODEL_FIELDS}).validate()

    def run_settings(self):
        """The settings that are not the model's, as a dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in MODEL_FIELDS}

    @classmethod
    def from_parts(cls, model, run):
        """The inverse of ``model_config`` and ``run_settings``."""
        return cls(**{k: getattr(model, k) for k in MODEL_FIELDS}, **run)


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in MODEL_FIELDS)
