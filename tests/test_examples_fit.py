"""The examples train through npnn.fit; the regression example beats its baseline.

(tests/test_models_extra.py runs every other example with --smoke.)"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _mse_table(stdout):
    rows = dict(re.findall(r"^\| (.+?) \| ([0-9.]+) \|$", stdout, flags=re.M))
    (baseline,) = [float(v) for k, v in rows.items() if "baseline" in k]
    (model,) = [float(v) for k, v in rows.items() if "baseline" not in k]
    return baseline, model


def test_the_sine_forecast_beats_the_last_value_baseline(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, os.path.join(EXAMPLES, "sine.py"), "--smoke", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    baseline, model = _mse_table(run.stdout)
    assert model < baseline
    assert "epoch 5: train loss" in run.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "loss.png").exists()


def test_the_sine_example_runs_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # import fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.syspath_prepend(EXAMPLES)
    spec = importlib.util.spec_from_file_location("sine", os.path.join(EXAMPLES, "sine.py"))
    sine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sine)
    assert sine.main(["--smoke", "--epochs", "2", "--out", str(tmp_path)]) == 0
    baseline, model = _mse_table(capsys.readouterr().out)
    assert model < baseline and not (tmp_path / "loss.png").exists()


@pytest.mark.parametrize("name", ["addition", "classify", "conditional", "dates", "sine",
                                  "tag"])
def test_no_example_copies_a_training_loop(name):
    """They train through npnn.fit: no optimizer step or clipping of their own."""
    with open(os.path.join(EXAMPLES, f"{name}.py"), encoding="utf-8") as f:
        source = f.read()
    assert "fit(" in source or "train(" in source
    for own_loop in (".step()", "clip_grad_norm", "zero_grad"):
        assert own_loop not in source, own_loop
