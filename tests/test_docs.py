"""The documentation's sources, checked without Sphinx (tests/test_docs_site.py builds
the site and opens it in a browser).

* The API reference's generator (docs/_ext/npnn_api.py) covers every public name:
  every public module with an ``__all__`` is a page, and every name of its ``__all__``
  an entry on that page.
* docs/derivations.md numbers every cell's equations exactly as the cell's file does.
"""

import importlib
import pathlib
import re
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
EXT = DOCS / "_ext"
#: each cell file, the heading of its section in docs/derivations.md, and how many of
#: the docstring's numbered equations, (1)..(n), are the cell's own forward and backward
#: (those the section derives; later numbers, such as a regulariser's, may be derived in
#: a section of their own)
CELL_SECTIONS = {"rnn": ("Vanilla RNN (`rnn.py`)", 8), "lstm": ("LSTM (`lstm.py`)", 14),
                 "lstmp": ("LSTM with projections (`lstmp.py`)", 17),
                 "gru": ("GRU (`gru.py`)", 15),
                 "peephole": ("Peephole LSTM (`peephole.py`)", 12),
                 "jordan": ("Jordan network (`jordan.py`)", 7),
                 "ctrnn": ("Continuous-time RNN (`ctrnn.py`)", 9),
                 "layernorm_lstm": ("Layer-normalised LSTM (`layernorm_lstm.py`)", 17),
                 "layernorm_gru": ("Layer-normalised GRU (`layernorm_gru.py`)", 17)}


@pytest.fixture(scope="module")
def npnn_api():
    if not (EXT / "npnn_api.py").exists():
        pytest.skip("docs/_ext is not beside these tests")
    sys.path.insert(0, str(EXT))
    try:
        yield importlib.import_module("npnn_api")
    finally:
        sys.path.remove(str(EXT))


def test_every_public_module_with_all_has_a_page(npnn_api):
    missing = sorted(set(npnn_api.public_modules_with_all()) - set(npnn_api.PAGES))
    assert not missing, f"add these modules to docs/_ext/npnn_api.py's MODULES: {missing}"


def test_every_name_in_every_all_has_an_entry(npnn_api, tmp_path):
    npnn_api.write_pages(str(tmp_path))
    missing = []
    for module_name in npnn_api.public_modules_with_all():
        page = (tmp_path / f"{module_name}.rst").read_text(encoding="utf-8")
        for name in importlib.import_module(module_name).__all__:
            obj = getattr(importlib.import_module(module_name), name)
            entries = (f":: {module_name}.{name}\n", f":: {name}\n   :module: {module_name}\n",
                       f"``{name}``: the module :py:mod:`{getattr(obj, '__name__', '')}`")
            if not any(e in page for e in entries):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"names without an entry in the API reference: {missing}"


def test_plain_docstrings_become_valid_rst(npnn_api):
    """An indented block after a line is shown as written (a literal block); | and *
    are escaped outside ``literals``; bullet lists stay lists."""
    lines = ["Args:", "    x: the input, |x| < 1", "    y: a * b", "Returns ``a*b``:",
             "", "* one", "  two", "* three"]
    assert npnn_api.plain_text_to_rst(lines) == [
        "Args::", "", "    x: the input, |x| < 1", "    y: a * b", "",
        "Returns ``a*b``:", "", "* one", "  two", "* three"]
    assert npnn_api.plain_text_to_rst(["a |b| and 2 * 3"]) == ["a \\|b\\| and 2 \\* 3"]


def _section(text, heading):
    """The body of the section under ``heading`` (any level), up to the next heading of
    the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\n", text, flags=re.M)
    assert match, f"docs/derivations.md has no section {heading!r}"
    level = len(match[1])
    end = re.compile(rf"^#{{1,{level}}} ", flags=re.M).search(text, match.end())
    return text[match.end():end.start() if end else len(text)]


@pytest.mark.parametrize("cell", sorted(CELL_SECTIONS))
def test_derivations_number_each_cells_equations_as_its_docstring(cell):
    """The cell's own equations in its file's docstring, "(1) ..." to "(n) ..." at the
    start of indented lines, are the displayed equations of its section, tagged (1) to
    (n) in that order, and the section tags nothing else; it links to the file."""
    derivations = (DOCS / "derivations.md")
    if not derivations.exists():
        pytest.skip("docs/ is not beside these tests")
    heading, own = CELL_SECTIONS[cell]
    section = _section(derivations.read_text(encoding="utf-8"), heading)
    doc = importlib.import_module(f"npnn.functional.{cell}").__doc__
    in_docstring = [int(n) for n in re.findall(r"^ {4}\((\d+)\) ", doc, flags=re.M)]
    tagged = [int(n) for n in re.findall(r"\\tag\{(\d+)\}", section)]
    assert in_docstring[:own] == list(range(1, own + 1)), in_docstring
    assert tagged == in_docstring[:own], (tagged, in_docstring)
    assert f"(../npnn/functional/{cell}.py)" in section
