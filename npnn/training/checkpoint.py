"""Checkpoints: one ``.npz`` file, nested names, one schema validated in one place.

A checkpoint is a zip of ``.npy`` arrays (``np.savez``, written atomically) whose
names are paths, ``model/rnn.weight_ih_l0``, ``optimizer/0/exp_avg``,
``carried/0``, plus one ``meta`` array that holds a JSON object:

    format       2
    npnn         the version that wrote it
    model        ModelConfig: what build_model needs
    vocab        the vocabulary (idx_to_token: strings), len == model.vocab_size
    run          the run's other settings (TrainConfig.run_settings)
    text_sha256  SHA-256 of the text (run.text, an absolute path, or the default
                 corpus), to notice a changed text on resume; None in format 1
    progress     TrainState: position, data-order generator, totals, history
    module_rngs  states of the model's random generators (dropout), in module order
    optimizer    {"step_count", "lr"}; its buffers are the optimizer/<i>/<name> arrays
    carried      the number of carried/<i> arrays: the recurrent state between batches
    layout       the layout the accelerations' loops ran in, 'batch' or 'feature'
                 (``npnn.functional.accel.use_layout``): a resumed run keeps it; None (or
                 absent, written before layouts were chosen) is 'batch'

``read_checkpoint`` checks the file (a regular file: a FIFO or a device is refused
before it is read; each member's declared size, from its ``.npy`` header, must be
what the zip directory says the member holds, so a small file cannot declare
big arrays) and validates the meta (``validate_meta``: the schema, every number
bounded, at most ``META_DEPTH`` levels of nesting); ``Checkpoint.restore`` checks
every array's shape against the model and the optimizer, and the optimizer's
buffers against the names it keeps (``Optimizer.buffer_names``), *before* it
decompresses any array (a small file cannot make it allocate gigabytes). Every
problem is a ``CheckpointError`` with a one-line reason. Format 1 (npnn 0.1.0) is
read by converting its meta and its array names to format 2 (``_upgrade_format1``);
its text was not hashed.
"""

import dataclasses
import hashlib
import json
import math
import os
import stat
import zipfile

import numpy as np

from .._version import __version__
from ..backend import to_numpy
from .config import MODEL_FIELDS, ConfigError, ModelConfig, RUN_FIELDS, TrainConfig
from ..durable import atomic_savez

NAME = "checkpoint.npz"
FORMAT = 2
READS = (1, 2)
_META_LIMIT = 64 * 2 ** 20       # bytes of JSON: far above any real meta
#: Levels of nesting a meta may have (a real one has 5: module_rngs[0].state.state).
META_DEPTH = 16
#: The largest count (epochs, batches, steps): exact in a float64.
MAX_COUNT = 2 ** 53
#: The largest integer anywhere in the meta (a PCG64 state is below 2^128).
MAX_INT = 2 ** 128


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, foreign or not matching."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact."""


# -- nested names ----------------------------------------------------------------
def flatten(tree, prefix=""):
    """Nested dicts of arrays -> one level, names joined by '/':
    {'model': {'rnn.w': a}, 'optimizer': {0: {'m': b}}} -> {'model/rnn.w': a, 'optimizer/0/m': b}."""
    flat = {}
    for key, value in tree.items():
        key = str(key)
        if not key or "/" in key:
            raise ValueError(f"expected names without '/', got {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def unflatten(flat):
    """The inverse of ``flatten`` (keys stay strings)."""
    tree = {}
    for name, value in flat.items():
        *groups, leaf = name.split("/")
        node = tree
        for g in groups:
            node = node.setdefault(g, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"array {name!r} lies under another array")
        if leaf in node:
            raise CheckpointError(f"array {name!r} is also a group of arrays")
        node[leaf] = value
    return tree


# -- the meta schema ---------------------------------------------------------------
class Nullable:
    def __init__(self, schema):
        self.schema = schema


class ListOf:
    def __init__(self, schema):
        self.schema = schema


class DictOf:
    """A dict with any string keys, every value matching ``schema``."""

    def __init__(self, schema):
        self.schema = schema


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _count(v, where):
    if not _is_count(v):
        raise CheckpointError(f"{where}: expected a non-negative integer, got {_short(v)}")
    if v > MAX_COUNT:
        raise CheckpointError(f"{where}: {_short(v)} is too large (at most 2^53)")


def _number(v, where):
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise CheckpointError(f"{where}: expected a number, got {_short(v)}")
    if isinstance(v, int) and abs(v) > MAX_COUNT:
        raise CheckpointError(f"{where}: {_short(v)} is too large (at most 2^53)")


def _short(v):
    """``repr(v)``, cut to 40 characters (a number of 400 digits is not a message)."""
    text = repr(v) if not (isinstance(v, int) and abs(v) > 10 ** 40) else \
        f"an integer of {len(str(abs(v)))} digits"
    return text if len(text) <= 40 else text[:37] + "..."


def _bounds(meta):
    """Every integer of the meta below 2^128 and at most ``META_DEPTH`` levels of
    nesting (checked without recursion); raises CheckpointError."""
    stack = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > META_DEPTH:
                raise CheckpointError(f"its meta nests deeper than {META_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict)
                                                   else value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INT:
            raise CheckpointError(f"its meta holds a number too large ({_short(value)})")


def _finite(v, where):
    _number(v, where)
    if not math.isfinite(v):
        raise CheckpointError(f"{where}: expected a finite number, got {v!r}")


def _string(v, where):
    if not isinstance(v, str):
        raise CheckpointError(f"{where}: expected a string, got {v!r}")


def _layout(v, where):
    if v not in ("batch", "feature"):
        raise CheckpointError(f"{where}: expected 'batch' or 'feature', got {_short(v)}")


def _rng(v, where):
    """A numpy PCG64 state (``default_rng().bit_generator.state``)."""
    try:
        np.random.PCG64().state = v
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"{where}: expected a PCG64 generator state ({e})") from None


def _totals(v, where):
    if not isinstance(v, list) or len(v) != 2:
        raise CheckpointError(f"{where}: expected [loss sum, count], got {v!r}")
    for i, x in enumerate(v):
        _finite(x, f"{where}[{i}]")


def _sha256(v, where):
    if not (isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)):
        raise CheckpointError(f"{where}: expected a SHA-256 hex digest, got {v!r}")


def _record(v, where):
    """An evaluation record of the history: numbers, with at least these three."""
    _check(v, DictOf(_number), where)
    for key in ("epoch", "train_loss", "train_ppl"):
        if key not in v:
            raise CheckpointError(f"{where}: missing field {key!r}")


def _fields(names):
    """A dict schema whose keys are exactly ``names``; values are checked by the config."""
    return {name: (lambda v, where: None) for name in names}


#: Model settings added after format 2 was fixed: a checkpoint without them had them off.
MODEL_DEFAULTS_ADDED = ("embedding_dropout", "recurrent_dropout", "zoneout", "weight_drop")

PROGRESS = {"epoch": _count, "batch": _count, "rng": _rng, "epoch_rng": Nullable(_rng),
            "totals": _totals, "history": ListOf(_record), "mid_epoch": ListOf(_record),
            "elapsed": _finite}

SCHEMA = {
    "format": _count, "npnn": _string,
    "model": _fields(f.name for f in dataclasses.fields(ModelConfig)),
    "vocab": ListOf(_string),
    "run": _fields(RUN_FIELDS),
    "text_sha256": Nullable(_sha256),
    "progress": PROGRESS,
    "module_rngs": ListOf(_rng),
    "optimizer": {"step_count": _count, "lr": _finite},
    "carried": _count,
    "layout": Nullable(_layout),
}


def _check(value, schema, where):
    where = where or "meta"
    if isinstance(schema, Nullable):
        if value is not None:
            _check(value, schema.schema, where)
    elif isinstance(schema, ListOf):
        if not isinstance(value, list):
            raise CheckpointError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check(item, schema.schema, f"{where}[{i}]")
    elif isinstance(schema, DictOf):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: expected an object, got {type(value).__name__}")
        for k, item in value.items():
            _check(item, schema.schema, f"{where}.{k}")
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: expected an object, got {type(value).__name__}")
        unknown = [k for k in value if k not in schema]
        missing = [k for k in schema if k not in value]
        if unknown:
            raise CheckpointError(f"{where}: unknown field {unknown[0]!r}")
        if missing:
            raise CheckpointError(f"{where}: missing field {missing[0]!r}")
        for k, sub in schema.items():
            _check(value[k], sub, k if where == "meta" else f"{where}.{k}")
    else:
        schema(value, where)


def validate_meta(meta):
    """Check a (format 2) meta against ``SCHEMA`` and its fields against each other;
    returns the TrainConfig it describes. Raises CheckpointError."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"its meta is a JSON {type(meta).__name__}, not an object")
    if isinstance(meta, dict):                  # written before layouts were chosen
        meta.setdefault("layout", None)
    if isinstance(meta.get("run"), dict):       # written before --bptt-memory: keep all
        meta["run"].setdefault("bptt_memory", None)
    if isinstance(meta.get("model"), dict):     # written before --forget-bias and --init
        meta["model"].setdefault("forget_bias", None)
        meta["model"].setdefault("init", None)
        for name in MODEL_DEFAULTS_ADDED:        # written before the AWD regularisers: none
            meta["model"].setdefault(name, 0.0)
    _check(meta, SCHEMA, "")
    try:
        model = ModelConfig(**meta["model"]).validate()
        config = TrainConfig.from_parts(model, meta["run"]).validate()
    except ConfigError as e:
        raise CheckpointError(f"its settings are invalid: {e}") from None
    vocab = meta["vocab"]
    if len(vocab) != model.vocab_size:
        raise CheckpointError(f"its vocabulary has {len(vocab)} tokens, its model "
                              f"{model.vocab_size}")
    if len(set(vocab)) != len(vocab):
        raise CheckpointError("its vocabulary repeats a token")
    if not vocab or vocab[0] != "<unk>":
        raise CheckpointError("its vocabulary does not start with <unk>, the token that "
                              "every unknown token is read as")
    progress = meta["progress"]
    if len(progress["history"]) != progress["epoch"]:
        raise CheckpointError(f"progress: {progress['epoch']} epochs done, but a history of "
                              f"{len(progress['history'])} records")
    if meta["progress"]["batch"] and meta["progress"]["epoch_rng"] is None:
        raise CheckpointError("progress: a position inside an epoch needs the epoch's "
                              "generator state (epoch_rng)")
    return config


def _upgrade_format1(meta):
    """Format 1 (npnn 0.1.0): one flat 'config', the progress at the top level, arrays
    named param/, optim/, state/. Returns (format-2 meta, {new group: old group})."""
    old = ("config", "vocab", "epoch", "batch", "epoch_rng_state", "data_rng_state",
           "model_rng_state", "carried", "totals", "history", "elapsed", "optimizer")
    for key in old:
        if key not in meta:
            raise CheckpointError(f"its meta (format 1) has no {key!r}")
    config = meta["config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"config: expected an object, got {type(config).__name__}")
    vocab = meta["vocab"]
    model = {k: config[k] for k in MODEL_FIELDS if k in config}
    model["vocab_size"] = len(vocab) if isinstance(vocab, list) else 0
    new = {"format": FORMAT, "npnn": meta.get("npnn", "0.1.0"), "model": model, "vocab": vocab,
           "run": {k: v for k, v in config.items() if k not in MODEL_FIELDS},
           "text_sha256": None,
           "progress": {"epoch": meta["epoch"], "batch": meta["batch"],
                        "rng": meta["data_rng_state"], "epoch_rng": meta["epoch_rng_state"],
                        "totals": meta["totals"], "history": _upgrade_history(meta["history"]),
                        "mid_epoch": [],
                        "elapsed": meta["elapsed"]},
           "module_rngs": [meta["model_rng_state"]], "optimizer": meta["optimizer"],
           "carried": meta["carried"]}
    return new, {"model": "param", "optimizer": "optim", "carried": "state"}


def _upgrade_history(history):
    """Format 1's records have train_ppl but not train_loss (its logarithm)."""
    if not isinstance(history, list):
        return history
    return [{**r, "train_loss": math.log(r["train_ppl"])}
            if isinstance(r, dict) and isinstance(r.get("train_ppl"), (int, float))
            and not isinstance(r.get("train_ppl"), bool) and r["train_ppl"] > 0 else r
            for r in history]


# -- reading -----------------------------------------------------------------------
def _header(f):
    """(shape, dtype) from an open .npy member, reading nothing but the header."""
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = read(f)
    return tuple(shape), np.dtype(dtype)


class Checkpoint:
    """A validated checkpoint file: ``meta`` (format 2), ``config`` (TrainConfig),
    ``model_config``, ``vocab`` (list of str), and ``shapes`` of its arrays by
    nested name, read from their headers. ``restore`` loads the arrays."""

    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            raise CheckpointError(f"no checkpoint at {path}")
        if os.path.isdir(path):
            raise CheckpointError(f"expected a checkpoint file, got a folder: {path}")
        with self._open() as file:
            magic = file.read(4)
            if magic != b"PK\x03\x04":
                raise self._error("is not an npnn checkpoint (not a zip archive of arrays)")
            file.seek(0)
            meta = self._read_directory(file)
        self._validate(meta)

    def _open(self):
        """The file, opened for reading if it is a regular file (never blocking on a FIFO)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) |
                         getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
        except OSError as e:
            raise self._error(f"cannot be read ({e.strerror or e})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._error("is not a regular file (a FIFO, a device or a socket?)")
        return os.fdopen(fd, "rb")

    def _read_directory(self, file):
        """The members' headers (``self._headers``) and the meta, a JSON value."""
        try:
            with zipfile.ZipFile(file) as zf:
                members = {}
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        raise self._error(f"is not an npnn checkpoint (it holds "
                                          f"{info.filename!r})")
                    with zf.open(info) as f:
                        shape, dtype = members[info.filename[:-4]] = _header(f)
                        declared = f.tell() + math.prod(shape) * dtype.itemsize
                    if declared != info.file_size:
                        raise self._error(f"is not an npnn checkpoint: its {info.filename} "
                                          f"declares {dtype} {shape}, {declared:,} bytes, but "
                                          f"holds {info.file_size:,}")
                if "meta" not in members:
                    raise self._error("is not an npnn checkpoint (it has no meta)")
                shape, dtype = members.pop("meta")
                if shape != () or dtype.kind != "U" or dtype.itemsize > _META_LIMIT:
                    raise self._error(f"is not an npnn checkpoint (its meta is {dtype} "
                                      f"{shape})")
                with zf.open("meta.npy") as f:
                    text = str(np.lib.format.read_array(f, allow_pickle=False))
        except CheckpointError:
            raise
        except Exception as e:   # zipfile.BadZipFile, EOFError, ValueError, zlib.error, ...
            raise self._error(f"is corrupt or incomplete ({type(e).__name__}: {e})") from None
        self._headers = members
        try:
            return json.loads(text)
        except ValueError as e:
            raise self._error(f"is corrupt: its meta is not JSON ({e})") from None
        except RecursionError:
            raise self._error(f"is not an npnn checkpoint: its meta nests deeper than "
                              f"{META_DEPTH} levels") from None

    def _validate(self, meta):
        members = self._headers
        groups = {}
        if not isinstance(meta, dict):
            raise self._error(f"is not an npnn checkpoint (its meta is a JSON "
                              f"{type(meta).__name__}, not an object)")
        self._wrap(_bounds, meta)
        if "format" not in meta:
            raise self._error("is not an npnn checkpoint (its meta has no format)")
        if not _is_count(meta["format"]) or meta["format"] not in READS:
            raise self._error(f"has format {meta['format']!r}, this npnn reads formats "
                              f"{' and '.join(map(str, READS))}")
        if meta["format"] == 1:
            meta, groups = self._wrap(_upgrade_format1, meta)
        self.config = self._wrap(validate_meta, meta)
        self.meta = meta
        self.model_config = ModelConfig(**meta["model"])
        self.vocab = meta["vocab"]
        # nested names of the arrays (format 1's groups renamed), and their members
        self._members, self.shapes = {}, {}
        renamed = {old: new for new, old in groups.items()}
        for member, header in members.items():
            group, _, rest = member.partition("/")
            name = f"{renamed.get(group, group)}/{rest}" if rest else member
            if name in self.shapes:
                raise self._error(f"holds {name} twice")
            self._members[name], self.shapes[name] = member + ".npy", header
        tree = self._wrap(unflatten, self.shapes)
        unknown = [g for g in tree if g not in ("model", "optimizer", "carried")
                   or not isinstance(tree[g], dict)]
        if unknown:
            raise self._error(f"holds arrays it should not: {sorted(unknown)[0]}")
        carried = sorted(tree.get("carried", {}))
        if carried != [str(i) for i in range(meta["carried"])]:
            raise self._error(f"says it carries {meta['carried']} state arrays but holds "
                              f"{len(carried)}")

    def _error(self, reason):
        return CheckpointError(f"checkpoint {self.path} {reason}")

    def _wrap(self, fn, *args):
        try:
            return fn(*args)
        except CheckpointError as e:
            raise self._error(f"is invalid: {e}") from None

    def restore(self, model, optimizer=None, carried_shapes=()):
        """Load the parameters into ``model`` (and, given ``optimizer``, its buffers);
        returns the carried state arrays (NumPy; none without ``optimizer``). Every
        shape is checked first: against the model, the optimizer's parameters and
        ``carried_shapes`` (the model's state arrays for one batch)."""
        groups = ("model",) if optimizer is None else ("model", "optimizer", "carried")
        expected = {f"model/{name}": tuple(p.shape) for name, p in model.named_parameters()}
        if optimizer is not None:
            # exactly the buffers a stepped optimizer keeps (none before its first step)
            names = optimizer.buffer_names() if self.meta["optimizer"]["step_count"] else ()
            for i, (p, _) in enumerate(optimizer.pairs):
                expected.update({f"optimizer/{i}/{b}": tuple(p.shape) for b in names})
            n = self.meta["carried"]
            if n not in (0, len(carried_shapes)):
                raise self._error(f"carries {n} state arrays, this model {len(carried_shapes)}")
            expected.update({f"carried/{i}": tuple(s) for i, s in enumerate(carried_shapes[:n])})
        missing = [name for name in expected if name not in self.shapes]
        if missing:
            raise self._error(f"does not match its own settings: it has no {missing[0]}")
        wanted = [name for name in self.shapes if name.split("/")[0] in groups]
        for name in wanted:
            shape, dtype = self.shapes[name]
            if name not in expected:
                raise self._error(f"does not match its own settings: unexpected {name}")
            if shape != expected[name] or dtype.kind != "f":
                raise self._error(f"does not match its own settings: {name} is {dtype} "
                                  f"{shape}, the model needs {expected[name]}")
        tree = unflatten(self._read(wanted))
        try:
            model.load_state_dict(tree["model"])
            if optimizer is not None:
                buffers = tree.get("optimizer", {})
                optimizer.load_state_dict({**self.meta["optimizer"], "state": [
                    buffers.get(str(i), {}) for i in range(len(optimizer.pairs))]})
        except ValueError as e:
            raise self._error(f"does not match its own settings: {e}") from None
        carried = tree.get("carried", {})
        return [carried[str(i)] for i in range(len(carried))]

    def _read(self, names):
        try:
            with self._open() as file, zipfile.ZipFile(file) as zf:
                out = {}
                for name in names:
                    with zf.open(self._members[name]) as f:
                        out[name] = np.lib.format.read_array(f, allow_pickle=False)
                return out
        except Exception as e:
            raise self._error(f"is corrupt or incomplete ({type(e).__name__}: {e})") from None


def read_checkpoint(path):
    """The ``Checkpoint`` at ``path``, a file or a run folder holding ``checkpoint.npz``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, NAME)
    return Checkpoint(path)


# -- writing -----------------------------------------------------------------------
def write_checkpoint(path, meta, model, optimizer, carried=()):
    """Write a checkpoint atomically: ``meta`` (every SCHEMA field but format, npnn,
    optimizer and carried, which this adds), the model's parameters, the optimizer's
    buffers and the ``carried`` state arrays. Raises CheckpointWriteError on an OSError."""
    opt = optimizer.state_dict()
    meta = {"format": FORMAT, "npnn": __version__, **meta,
            "optimizer": {"step_count": opt["step_count"], "lr": opt["lr"]},
            "carried": len(carried)}
    validate_meta(meta)
    # each parameter once (a tied one under its first name; load_state_dict accepts that)
    tree = {"model": {k: to_numpy(v) for k, v in model.named_parameters()},
            "optimizer": {i: s for i, s in enumerate(opt["state"]) if s},
            "carried": {i: to_numpy(s) for i, s in enumerate(carried)}}
    arrays = flatten(tree)
    arrays["meta"] = np.array(json.dumps(meta))
    try:
        atomic_savez(path, arrays)
    except OSError as e:
        raise CheckpointWriteError(f"could not write the checkpoint {path} ({e}); the previous "
                                   "checkpoint is unchanged") from None


# -- exact resumption of a model's random generators and of the text -----------------
def module_generators(model):
    """The distinct ``numpy.random.Generator`` objects held by the modules of ``model``
    (dropout masks, initialisation), in module order."""
    seen, out = set(), []
    for _, module in model.named_modules():
        for value in vars(module).values():
            if isinstance(value, np.random.Generator) and id(value) not in seen:
                seen.add(id(value))
                out.append(value)
    return out


def text_digest(text):
    """SHA-256 hex digest of a text (UTF-8), encoded a piece at a time (no copy of a big
    text)."""
    digest, piece = hashlib.sha256(), 2 ** 22
    for i in range(0, len(text), piece):
        digest.update(text[i:i + piece].encode("utf-8"))
    return digest.hexdigest()
