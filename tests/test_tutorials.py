"""The tutorials (docs/tutorials/*.md, MyST notebooks) run from top to bottom, each within
two minutes: every code cell executes in a fresh kernel, and their own asserts (the
gradient checks pass, the perplexity falls, attention beats the fixed context, ...)
hold. Independent of the documentation site, which executes them again to show them.

Needs jupytext, nbclient, ipykernel and matplotlib (``pip install jupytext nbclient
ipykernel matplotlib``); skipped without them. Marked ``tutorials``: ``-m "not
tutorials"`` leaves them out (about two and a half minutes on the 2-core machine).

The kernel runs in this interpreter, imports the npnn under test (this checkout, or the
installed package under NPNN_TEST_INSTALLED) and runs its BLAS on one thread unless the environment says
otherwise: on a shared machine, idle OpenBLAS threads spinning against other
processes made a notebook several times slower.
"""

import os
import sys
import time

import pytest

import npnn

HERE = os.path.dirname(os.path.abspath(__file__))
TUTORIALS = os.path.join(os.path.dirname(HERE), "docs", "tutorials")
NOTEBOOKS = ["01-rnn-by-hand.md", "02-vanishing-gradients.md", "03-char-lm.md",
             "04-seq2seq.md", "05-variants.md", "06-your-own-cell.md"]
#: Seconds a whole notebook may take.
BUDGET = 120

pytestmark = pytest.mark.tutorials


def test_every_tutorial_is_listed_here_and_on_the_index():
    found = sorted(f for f in os.listdir(TUTORIALS) if f[:2].isdigit() and f.endswith(".md"))
    assert found == NOTEBOOKS
    with open(os.path.join(TUTORIALS, "index.md"), encoding="utf-8") as f:
        index = f.read()
    assert all(f"({name})" in index and name[:-3] in index for name in NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs(name, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext", reason="the tutorials need jupytext")
    nbclient = pytest.importorskip("nbclient", reason="the tutorials need nbclient")
    pytest.importorskip("ipykernel", reason="the tutorials need ipykernel")
    pytest.importorskip("matplotlib", reason="the tutorials need matplotlib")
    nb = jupytext.read(os.path.join(TUTORIALS, name))
    assert nb.metadata["kernelspec"]["name"] == "python3"
    root = os.path.dirname(os.path.dirname(os.path.abspath(npnn.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name="python3")
    km.kernel_spec.argv[0] = sys.executable         # the kernel runs in this interpreter
    client = nbclient.NotebookClient(nb, km=km, timeout=BUDGET,
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.monotonic()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            left = BUDGET - (time.monotonic() - start)
            if left <= 0:
                pytest.fail(f"{name} took more than {BUDGET} s (stopped before cell {index})")
            client.timeout = int(left) + 1          # the notebook's budget, not the cell's
            client.execute_cell(cell, index)        # raises CellExecutionError on an error
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells
                 if cell.cell_type == "code" for out in cell.outputs)
    assert images >= 1, f"{name} shows no plot"
