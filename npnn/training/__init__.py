"""The training wing: everything that trains, saves and resumes, above the library.

* ``loop``: ``fit``, the generic training loop over (model, loss, batches), with
  ``Hooks``, ``TrainState`` and ``Diverged``;
* ``trainer``: the language-model trainer behind ``npnn train`` (``Trainer``,
  ``load_model``);
* ``checkpoint``, ``rundir``, ``config``: a run's checkpoint, its folder and lock,
  its settings;
* ``data``: text, tokens, vocabularies, the d2l iterators, the embedded corpus and
  *The Time Machine* (``time_machine()``, shipped with npnn);
* ``plot``: training curves; ``distributed``: data-parallel training over MPI;
* ``seq2seq``: teacher-forced training of ``npnn.models.Seq2Seq`` (``fit_seq2seq``);
* ``cli``: the ``npnn`` command.

The layers and models import nothing from here. Each module is loaded when first
asked for (``import npnn.training.loop`` loads the loop alone; MPI is not on its
path: ``distributed`` wraps the loop's hooks where a data-parallel run starts).
"""

import importlib

_NAMES = {
    "fit": "loop", "Hooks": "loop", "TrainState": "loop", "Diverged": "loop",
    "loss_step": "loop",
    "Trainer": "trainer", "load_model": "trainer",
    "CheckpointError": "checkpoint", "read_checkpoint": "checkpoint",
    "ConfigError": "config", "ModelConfig": "config", "TrainConfig": "config",
    "RunDir": "rundir", "RunBusyError": "rundir",
    "Vocab": "data", "TextCorpus": "data", "tokenize": "data", "read_text": "data",
    "default_corpus": "data", "time_machine": "data", "seq_data_iter_random": "data",
    "seq_data_iter_sequential": "data",
    "plot_curves": "plot", "world": "distributed",
    "fit_seq2seq": "seq2seq", "teacher_forcing": "seq2seq", "seq2seq_batches": "seq2seq",
    "exact_match": "seq2seq",
    "main": "cli",
}
_SUBMODULES = ("loop", "trainer", "checkpoint", "rundir", "config", "data", "plot",
               "distributed", "seq2seq", "cli")

__all__ = [*_NAMES, *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_SUBMODULES))
