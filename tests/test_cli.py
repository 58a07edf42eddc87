"""The command line end to end, through subprocesses: train, resume, generate, Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

import pytest

TEXT = ("Call me Ishmael. Some years ago, never mind how long precisely, having little or no "
        "money in my purse, and nothing particular to interest me on shore. ") * 10


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def npnn(*args, **kw):
    """``npnn ARGS`` in a new process, this checkout first on its path."""
    return subprocess.run([sys.executable, "-m", "npnn", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=ENV, **kw)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


SMALL = ["--hidden", 16, "--embedding", 8, "--batch", 4, "--steps", 10, "--no-progress"]


def test_train_resume_generate(text_file, tmp_path):
    run = tmp_path / "run"
    r = npnn("train", "--text", text_file, "--epochs", 2, "--out", run, "--sample-every", 1, *SMALL)
    assert r.returncode == 0, r.stderr
    assert "epoch 2: train perplexity" in r.stdout and "sample: " in r.stdout
    assert "--- generated text ---" in r.stdout and (run / "checkpoint.npz").exists()
    r = npnn("train", "--resume", run, "--epochs", 3, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "epoch 3: train perplexity" in r.stdout and "epoch 1:" not in r.stdout
    for strategy in ("greedy", "sample", "beam"):
        r = npnn("generate", run, "--prefix", "Call me", "-n", 30, "--strategy", strategy)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("Call me")
    again = npnn("generate", run, "--prefix", "Call", "-n", 30, "--seed", 7)
    assert again.stdout == npnn("generate", run, "--prefix", "Call", "-n", 30, "--seed", 7).stdout


def test_clear_errors(tmp_path, text_file):
    r = npnn("train", "--text", tmp_path / "missing.txt", "--epochs", 1, "--out", tmp_path / "x")
    assert r.returncode == 2 and "corpus file not found" in r.stderr and "Traceback" not in r.stderr
    r = npnn("generate", tmp_path)
    assert r.returncode == 2 and "no checkpoint at" in r.stderr
    r = npnn("train", "--text", text_file, "--epochs", 1, "--batch", 500, "--out", tmp_path / "y")
    assert r.returncode == 2 and "too few for batch 500" in r.stderr


def test_ctrl_c_saves_and_exits_cleanly(text_file, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "npnn", "train", "--text", str(text_file),
                             "--epochs", "100000", "--out", str(run), *map(str, SMALL)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while not (run / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint saved" in out and "Traceback" not in err
    r = npnn("train", "--resume", run, "--minutes", 0.02, "--no-progress")
    assert r.returncode == 0, r.stderr


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "npnn")
    if not os.path.exists(exe):
        pytest.skip("npnn is not installed as a console script in this environment")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "generate" in r.stdout
