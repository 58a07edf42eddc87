"""The README's Python blocks run as written (GPU blocks only where a GPU is)."""

import pathlib
import re


from npnn.backend import cupy_available

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert len(_blocks()) >= 2


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    ran = 0
    for block in _blocks():
        if '"cupy"' in block and not cupy_available():
            continue
        if "import torch" in block and not _torch_available():
            continue
        exec(compile(block, str(README), "exec"), namespace)
        ran += 1
    assert ran >= 4


def test_readme_test_module_for_your_own_cell_passes_under_pytest(tmp_path):
    """The "Testing your own layer" block, saved as the file it names and run by pytest
    with npnn's plugin (its entry point where npnn is installed), as a user would."""
    import os
    import subprocess
    import sys
    from importlib.metadata import entry_points

    import npnn
    block = next(b for b in _blocks() if b.startswith("# test_my_cell.py"))
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
