"""The README's Python blocks run as written (GPU blocks only where a GPU is), and so do
those of the site's pages that the README's sections moved to."""

import pathlib
import re

import pytest

from npnn.backend import cupy_available

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
DOCS = README.parent / "docs"
#: the site's pages whose Python blocks run as written (each page on its own)
PAGES = ("layers.md", "mpi.md", "speed.md")


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _blocks(path=README):
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert len(_blocks()) >= 2


def _run_blocks(path):
    namespace = {"__name__": "__readme__"}
    ran = 0
    for block in _blocks(path):
        if '"cupy"' in block and not cupy_available():
            continue
        if "import torch" in block and not _torch_available():
            continue
        exec(compile(block, str(path), "exec"), namespace)
        ran += 1
    return ran


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run_blocks(README) >= 4


@pytest.mark.parametrize("page", PAGES)
def test_site_page_python_blocks_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run_blocks(DOCS / page) >= (0 if page == "speed.md" else 1)


def test_readme_test_module_for_your_own_cell_passes_under_pytest(tmp_path):
    """The whole test module of docs/testing.md (the README links to it), saved as the
    file it names and run by pytest with npnn's plugin (its entry point where npnn is
    installed), as a user would."""
    import os
    import subprocess
    import sys
    from importlib.metadata import entry_points

    import npnn
    block = next(b for b in _blocks(DOCS / "testing.md") if b.startswith("# test_my_cell.py"))
    (tmp_path / "test_my_cell.py").write_text(block, encoding="utf-8")
    root = os.path.dirname(os.path.dirname(os.path.abspath(npnn.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    registered = any(ep.name == "npnn" for ep in entry_points(group="pytest11"))
    plugin = [] if registered else ["-p", "npnn.testing.plugin"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          *plugin, "test_my_cell.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    expected = "7 passed" if cupy_available() else "5 passed, 2 skipped"
    assert expected in run.stdout, run.stdout
