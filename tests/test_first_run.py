"""Issue 21, item 7: ``npnn train`` as a newcomer meets it. Each test failed before its fix.

* without matplotlib, the run says there is no plot (as ``npnn analyze`` does);
* the closing summary reports the same evaluation as the time-budget line above it;
* a short run (the default one: 3 minutes, one or two epochs) shows a sample;
* the perplexity plot's logarithmic axis is labelled in plain numbers.
"""

import re
import sys

import pytest

from _helpers import TEXT, TINY, main
from npnn.training.plot import plot_curves


def test_a_run_without_matplotlib_says_there_is_no_plot(text_file, tmp_path, capsys,
                                                        monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)          # import raises ImportError
    rc, out, err = main(capsys, "train", "--text", text_file, "--epochs", 2, "--out",
                        tmp_path / "run", *TINY)
    assert rc == 0, err
    said = [line for line in out.splitlines() if "matplotlib not installed" in line]
    assert len(said) == 1 and "history.png" in said[0], out        # once, naming the file
    assert not (tmp_path / "run" / "history.png").exists()


def test_the_closing_summary_agrees_with_the_time_budget_line(tmp_path, capsys):
    text = tmp_path / "long.txt"
    text.write_text(TEXT * 20, encoding="utf-8")
    out = tmp_path / "run"
    assert main(capsys, "train", "--text", text, "--epochs", 1, "--out", out, *TINY)[0] == 0
    # epoch 2 is stopped by the time budget after its first steps
    rc, stdout, err = main(capsys, "train", "--resume", out, "--epochs", 2, "--minutes", 0.002,
                           "--no-progress")
    assert rc == 0, err
    budget = re.search(r"^time budget of .* reached (at epoch 2, batch \d+: .*); checkpoint",
                       stdout, re.M)
    summary = re.search(r"^--- ((?:at|after) epoch .*)$", stdout, re.M)
    assert budget and summary, stdout
    assert summary.group(1) == budget.group(1)


def test_a_run_shorter_than_sample_every_shows_a_sample(text_file, tmp_path, capsys):
    rc, out, err = main(capsys, "train", "--text", text_file, "--epochs", 2, "--sample-every", 5,
                        "--out", tmp_path / "run", *TINY)
    assert rc == 0, err
    lines = out.splitlines()
    samples = [i for i, line in enumerate(lines) if line.startswith("sample: ")]
    first = next(i for i, line in enumerate(lines) if line.startswith("epoch 1:"))
    assert samples == [first + 1], out                   # after epoch 1, not after epoch 2


@pytest.mark.parametrize("values", [[20.83, 21.4], [6.7, 3.9, 3.46], [300.0, 20.8, 5.1, 1.3]])
def test_the_log_axis_is_labelled_in_plain_numbers(tmp_path, monkeypatch, values):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    labels = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kw):
        result = real_savefig(fig, *args, **kw)                # drawn: the labels are set
        for minor in (False, True):
            labels.extend(t.get_text() for t in fig.axes[0].get_yticklabels(minor=minor))
        return result
    monkeypatch.setattr(Figure, "savefig", savefig)
    xs = list(range(1, len(values) + 1))
    assert plot_curves(str(tmp_path / "p.png"), {"train": (xs, values)}, "epoch", "perplexity",
                       logy=True)
    shown = [s for s in labels if s]
    assert shown, labels
    for s in shown:                     # "20.8", not "$\\mathdefault{2.08\\times10^{1}}$"
        float(s.replace("\N{MINUS SIGN}", "-"))
    visible = [float(s.replace("\N{MINUS SIGN}", "-")) for s in shown
               if min(values) <= float(s.replace("\N{MINUS SIGN}", "-")) <= max(values)]
    assert len(visible) >= 2                        # labels inside the curve's own range
