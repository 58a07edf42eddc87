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
