"""The API reference, generated from the docstrings at every build.

One page per public module (``docs/api/<module>.rst``, written at ``builder-inited``,
never committed). A module with ``__all__`` gets one entry for every name in it, in
its order; a module without one gets ``automodule`` with its public members. A name
exported by several modules (``npnn.LSTM`` is ``npnn.layers.LSTM``) is documented in
full under the first module of ``MODULES`` that exports it, and briefly, with a link
there, under the others. ``sphinx.ext.viewcode`` links every entry to its source lines.
tests/test_docs.py checks that every module's ``__all__`` is covered.
"""

import importlib
import inspect
import os
import pkgutil
import re
import functools
from typing import Any, Dict, List, Tuple

#: The pages, in the order of the reference's table of contents: (module, one line).
MODULES: List[Tuple[str, str]] = [
    ("npnn", "the package's face: the layers, the training loop and the modules"),
    ("npnn.functional", "the pure ops, the reference: one file per cell"),
    ("npnn.functional.fast", "the same ops, accelerated where it pays"),
    ("npnn.functional.registry", "the cell registry"),
    ("npnn.functional.accel", "the accelerations and the switch between them"),
    ("npnn.functional.bptt", "backpropagation through time in bounded memory"),
    ("npnn.functional.bptt_policy", "where to keep checkpoints in bounded-memory BPTT"),
    ("npnn.layers", "PyTorch's layers, with a backward"),
    ("npnn.models", "language model, encoder-decoder, classifier, tagger"),
    ("npnn.optim", "optimizers and gradient clipping"),
    ("npnn.gradcheck", "the finite-difference gradient checker"),
    ("npnn.testing", "the testing kit for your own layers"),
    ("npnn.testing.strategies", "Hypothesis strategies"),
    ("npnn.testing.strict_cupy", "the strict CuPy stand-in"),
    ("npnn.testing.plugin", "the pytest plugin"),
    ("npnn.analysis", "gradient norms and Jacobians through time"),
    ("npnn.metrics", "BLEU and friends"),
    ("npnn.backend", "the NumPy/CuPy switch"),
    ("npnn.durable", "atomic, fsynced writes"),
    ("npnn.training", "the training wing"),
    ("npnn.training.loop", "the generic training loop"),
    ("npnn.training.trainer", "the language model's trainer"),
    ("npnn.training.seq2seq", "training an encoder-decoder"),
    ("npnn.training.checkpoint", "the checkpoint format"),
    ("npnn.training.config", "the model's and the run's configuration"),
    ("npnn.training.rundir", "the run folder and its lock"),
    ("npnn.training.data", "text, vocabularies, corpora and iterators"),
    ("npnn.training.plot", "training curves as PNG"),
    ("npnn.training.distributed", "data parallelism over MPI"),
    ("npnn.training.cli", "the npnn command"),
]
PAGES = [name for name, _ in MODULES]


def public_modules_with_all() -> List[str]:
    """Every public module of npnn (no part of its name private, no ``__main__``) that
    has an ``__all__``: each must be a page of ``MODULES``."""
    import npnn
    names = ["npnn"] + [m.name for m in pkgutil.walk_packages(npnn.__path__, "npnn.")
                        if not any(part.startswith("_") for part in m.name.split("."))]
    return [name for name in names if hasattr(importlib.import_module(name), "__all__")]


def public_names(module_name: str) -> List[str]:
    """The names a module's page documents: its ``__all__``, or else the public names
    defined in it (not imported into it)."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and getattr(obj, "__module__", None) == module_name
            and (inspect.isclass(obj) or inspect.isfunction(obj))]


def canonical_homes() -> Dict[int, str]:
    """id(object) -> the full name under which it is documented in full."""
    homes: Dict[int, str] = {}
    for module_name in PAGES:
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj):
                homes.setdefault(id(obj), f"{module_name}.{name}")
    return homes


def _entry(module_name: str, name: str, homes: Dict[int, str]) -> str:
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    full = f"{module_name}.{name}"
    if inspect.ismodule(obj):
        if obj.__name__ in PAGES:
            return f"* ``{name}``: the module :py:mod:`{obj.__name__}`\n"
        raise ValueError(f"{full} is a module without a page: add it to npnn_api.MODULES")
    home = homes.get(id(obj), full)
    if inspect.isclass(obj):
        directive = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        if home == full:
            return f".. {directive}:: {full}\n   :members:\n   :show-inheritance:\n"
        kind = "exception" if directive == "autoexception" else "class"
        return (f".. py:{kind}:: {name}\n   :module: {module_name}\n\n"
                f"   The same class as :py:class:`{home}`, documented there.\n")
    if callable(obj):
        if home == full:
            return f".. autofunction:: {full}\n"
        return (f".. py:function:: {name}\n   :module: {module_name}\n\n"
                f"   The same function as :py:func:`{home}`, documented there.\n")
    return f".. autodata:: {full}\n   :no-value:\n"


def write_pages(outdir: str) -> List[str]:
    """Write docs/api/<module>.rst for every page; returns the files written."""
    os.makedirs(outdir, exist_ok=True)
    homes = canonical_homes()
    written = []
    for module_name, line in MODULES:
        module = importlib.import_module(module_name)
        title = f"``{module_name}``: {line}"
        parts = [f"{title}\n{'=' * len(title)}\n",
                 f".. automodule:: {module_name}\n   :no-members:\n"]
        if hasattr(module, "__all__"):
            parts.append(f"The public names of ``{module_name}`` (its ``__all__``):\n")
            for name in module.__all__:
                parts.append(_entry(module_name, name, homes))
        else:
            for name in public_names(module_name):
                parts.append(_entry(module_name, name, homes))
        path = os.path.join(outdir, f"{module_name}.rst")
        text = "\n".join(parts)
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if text != old:                       # unchanged pages keep their mtime
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        written.append(path)
    for stale in set(os.listdir(outdir)) - {os.path.basename(p) for p in written}:
        os.remove(os.path.join(outdir, stale))
    return written


def _generate(app: Any) -> None:
    write_pages(os.path.join(app.srcdir, "api"))


@functools.lru_cache(maxsize=None)
def _aliases() -> List[Tuple[str, str]]:
    """The long unions that the annotations' aliases evaluate to, and the names to show
    instead (the annotations are evaluated, so autodoc sees only the unions)."""
    import numpy.typing as npt
    from sphinx.util.typing import stringify_annotation

    from npnn import _typing
    names = {"DTypeLike": npt.DTypeLike, "Seed": _typing.Seed, "States": _typing.States}
    pairs = [(stringify_annotation(alias, mode), name) for name, alias in names.items()
             for mode in ("smart", "fully-qualified-except-typing")]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def _process_signature(app: Any, what: str, name: str, obj: Any, options: Any,
                       signature: Any, return_annotation: Any) -> Any:
    if not name.startswith("npnn"):
        return None
    aliases = _aliases()
    for long, short in aliases:
        signature = signature.replace(long, short) if signature else signature
        return_annotation = return_annotation.replace(long, short) \
            if return_annotation else return_annotation
    return signature, return_annotation


def setup(app: Any) -> Dict[str, Any]:
    app.connect("builder-inited", _generate)
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-process-signature", _process_signature)
    return {"parallel_read_safe": True, "version": "1"}


# ---------------------------------------------------------------------------------------
# npnn's docstrings are plain text that reads well in an editor: equations and option
# lists are indented blocks after a colon, |x| is an absolute value, * a product. Read
# as reStructuredText as they stand, those are errors; ``plain_text_to_rst`` makes each
# indented block after a line a literal block (shown as written, in monospace) and
# escapes | and *, keeping ``literals`` and bullet lists as they are.

_BULLET = re.compile(r"^(\s*)([*+-]|\d+[.)]|\(\d+\))\s+")
_LITERAL_SPAN = re.compile(r"(``.+?``)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape(text: str) -> str:
    bullet = _BULLET.match(text)
    head, body = (text[:bullet.end()], text[bullet.end():]) if bullet else ("", text)
    pieces = _LITERAL_SPAN.split(body)
    for k in range(0, len(pieces), 2):            # outside ``...`` only
        pieces[k] = re.sub(r"(?<!\\)([|*])", r"\\\1", pieces[k])
    return head + "".join(pieces)


def plain_text_to_rst(lines: List[str]) -> List[str]:
    out: List[str] = []
    literal_at = None            # indentation of the paragraph that opened a literal block
    prev = ""                    # the last non-blank line written
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        indent = _indent(line)
        if literal_at is not None:
            if indent > literal_at:
                out.append(line)
                prev = line
                continue
            literal_at = None
            if out and out[-1].strip():
                out.append("")
        if prev:
            bullet = _BULLET.match(prev)
            continues = bool(bullet) and indent == bullet.end() or \
                (not bullet and indent == _indent(prev))
            if indent > _indent(prev) and not continues:
                k = len(out) - 1
                while not out[k].strip():
                    k -= 1
                if not out[k].rstrip().endswith("::"):
                    out[k] = out[k].rstrip() + (":" if out[k].rstrip().endswith(":")
                                                else " ::")
                literal_at = _indent(out[k]) if not _BULLET.match(out[k]) \
                    else _BULLET.match(out[k]).end()
                if out[-1].strip():
                    out.append("")
                out.append(line)
                prev = line
                continue
            if indent < _indent(prev) and out[-1].strip() and not _BULLET.match(line) \
                    and not (_BULLET.match(prev) is None and indent >= _nearest_bullet(out)):
                out.append("")
        if line.rstrip().endswith("::"):
            literal_at = indent if not _BULLET.match(line) else _BULLET.match(line).end()
            out.append(_escape(line[:-2]) + "::")
        else:
            out.append(_escape(line))
        prev = line
    return out


def _nearest_bullet(out: List[str]) -> int:
    """The text offset of the list item the lines above belong to (a huge number if none),
    so that a dedent back to an item's text is a continuation, not a new paragraph."""
    for line in reversed(out):
        if not line.strip():
            return 10 ** 6
        bullet = _BULLET.match(line)
        if bullet:
            return bullet.end()
    return 10 ** 6


def _process_docstring(app: Any, what: str, name: str, obj: Any, options: Any,
                       lines: List[str]) -> None:
    if (getattr(obj, "__module__", None) or name).startswith("npnn") or name.startswith("npnn"):
        lines[:] = plain_text_to_rst(lines)
