"""The API reference's generator (docs/_ext/npnn_api.py) covers every public name.

Runs without Sphinx: the generator only imports npnn. Every public module with an
``__all__`` must be a page, and every name of its ``__all__`` an entry on that page
(tests/test_docs_site.py checks the built site's inventory as well).
"""

import importlib
import pathlib
import sys

import pytest

EXT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "_ext"


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
