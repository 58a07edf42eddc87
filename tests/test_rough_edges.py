"""Issue 11, "Rough edges a user meets": each reproduced as on the old main.

Every test here failed on the code before the fix (see the commit messages).
"""

import re
import signal
import sys
import tracemalloc

import numpy as np
import pytest

import npnn
from _helpers import (TEXT, TINY, interrupted_run, main, one_line_error, quiet,
                      tiny_config)
from npnn import backend
from npnn.training import cli
from npnn.models import RNNLM
from npnn.training.trainer import Trainer


@pytest.fixture
def run(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(capsys, "train", "--text", text_file, "--epochs", 2, "--out", out, *TINY)[0] == 0
    return out


# -- every user error of train, generate and analyze: one line, exit 2 ---------------
@pytest.mark.parametrize("flag,value", [("--T", "0"), ("--hidden", "0"), ("--seed", "-1"),
                                        ("--train-steps", "-1"), ("--out", "AFILE")])
def test_analyze_errors_are_one_line_naming_the_flag(tmp_path, capsys, flag, value):
    afile = tmp_path / "afile"
    afile.write_text("x")
    value = str(afile) if value == "AFILE" else value
    args = {"--T": "5", "--hidden": "4", "--train-steps": "0", "--out": str(tmp_path / "a")}
    args[flag] = value
    rc, out, err = main(capsys, "analyze", *[x for kv in args.items() for x in kv])
    assert rc == 2
    one_line_error(err, flag, value)


@pytest.mark.parametrize("args,words", [
    (["--strategy", "greedy", "--top-k", "5"], ["--top-k", "greedy"]),
    (["--strategy", "beam", "--top-p", "0.5"], ["--top-p", "beam"]),
    (["--strategy", "greedy", "--temperature", "0.5"], ["--temperature", "greedy"]),
    (["--strategy", "sample", "--beam-width", "3"], ["--beam-width", "sample"]),
    (["--temperature", "0"], ["--temperature"]), (["--temperature", "nan"], ["--temperature"]),
    (["-n", "-1"], ["-n"]), (["--top-k", "0"], ["--top-k"]), (["--top-p", "1.5"], ["--top-p"]),
    (["--seed", "-3"], ["--seed"]), (["--strategy", "beam", "--beam-width", "0"], ["--beam-width"]),
    (["--prefix", ""], ["--prefix"]), (["--strategy", "beam", "--seed", "3"], ["--seed", "beam"]),
])
def test_generate_refuses_options_that_would_be_ignored_or_are_invalid(run, capsys, args, words):
    rc, out, err = main(capsys, "generate", run, "-n", 5, *args)
    assert rc == 2
    one_line_error(err, *words)


def test_argparse_errors_are_one_line_too(capsys):
    rc, out, err = main(capsys, "train", "--hidden", "many")
    assert rc == 2
    one_line_error(err, "--hidden", "many")


# -- the history plot ---------------------------------------------------------------
def test_a_run_stopped_inside_its_first_epoch_has_a_plot(text_file, tmp_path, capsys,
                                                         monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    used = []
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: used.append(a))
    long_text = tmp_path / "long.txt"
    long_text.write_text(TEXT * 200, encoding="utf-8")
    out = tmp_path / "run"
    rc, stdout, err = main(capsys, "train", "--text", long_text, "--minutes", 0.002, "--out", out,
                           *TINY)
    assert rc == 0, err
    assert "time budget" in stdout and "epoch 1:" not in stdout      # no epoch completed
    assert (out / "history.png").exists()
    assert used == []                                  # no global backend switch


def test_the_plot_shows_every_evaluation_with_markers(text_file, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    drawn = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kw):
        for ax in fig.axes:
            drawn.extend((line.get_label(), list(line.get_xdata()), line.get_marker())
                         for line in ax.get_lines())
        return real_savefig(fig, *args, **kw)
    monkeypatch.setattr(Figure, "savefig", savefig)
    trainer = Trainer(tiny_config(text_file, epochs=2), tmp_path / "run", log=quiet,
                      progress=False)
    trainer.fit()
    last = {label: (xs, marker) for label, xs, marker in drawn}
    assert last["train"][0] == [1, 2] and last["validation"][0] == [1, 2]
    assert last["train"][1] not in ("None", "", " ", None)


def test_a_failing_plot_does_not_stop_training(text_file, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    def broken(*args, **kw):
        raise RuntimeError("no fonts on this machine")
    monkeypatch.setattr(Figure, "savefig", broken)
    out = tmp_path / "run"
    rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 2, "--out", out,
                           *TINY)
    assert rc == 0, err
    assert "epoch 2:" in stdout and "no fonts on this machine" in stdout + err
    assert "Traceback" not in err


# -- progress bar and messages ------------------------------------------------------
def test_a_resumed_progress_bar_starts_at_the_resumed_batch(text_file, tmp_path, capsys):
    interrupted_run(text_file, tmp_path / "run", at=5)            # 4 batches of epoch 1 done
    capsys.readouterr()
    trainer = Trainer.resume(tmp_path / "run", log=quiet, progress=True, epochs=1)
    trainer.fit()
    err = capsys.readouterr().err
    first = re.split(r"[\r\n]", err.strip("\r\n"))[0]
    assert re.search(r"\b4/\d+", first), first


def test_the_interrupt_message_starts_a_new_line(text_file, tmp_path, capsys):
    interrupted_run(text_file, tmp_path / "run", at=5, progress=True,
                 log=lambda line: print(line, file=sys.stderr))
    err = capsys.readouterr().err
    segments = re.split(r"[\r\n]", err)
    (segment,) = [s for s in segments if "interrupted:" in s]
    assert segment.startswith("interrupted:"), segment


def _help_options(capsys, command):
    """{option: its help, on one line} from ``npnn COMMAND --help``."""
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    blocks = re.split(r"\n  (?=-)", text.split("options:", 1)[1])[1:]
    return {block.split()[0].rstrip(","): " ".join(block.split()) for block in blocks}


def test_every_option_of_every_subcommand_shows_its_default(capsys):
    switches = ("-h", "--no-progress", "--tie", "--overwrite", "--allow-changed-text")
    for command in ("train", "generate", "analyze"):
        for name, text in _help_options(capsys, command).items():
            if name not in switches:                    # switches: off unless given
                assert "default" in text, (command, text)


def test_help_of_minutes_says_what_epochs_does(capsys):
    minutes = _help_options(capsys, "train")["--minutes"]
    assert "--epochs" in minutes and "no time limit" in minutes, minutes


def test_top_level_help_lists_every_subcommand_and_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    description = text.split("positional arguments", 1)[0]
    for command in ("train", "generate", "analyze"):
        assert f"npnn {command}" in description
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"npnn {npnn.__version__}"


# -- generate -----------------------------------------------------------------------
def test_sampling_without_a_seed_differs_and_prints_its_seed(run, capsys):
    seeds = []
    for _ in range(2):
        rc, out, err = main(capsys, "generate", run, "--prefix", "It", "-n", 40)
        assert rc == 0, err
        seeds.append(int(re.search(r"--seed (\d+)", err).group(1)))
        text = out
    assert seeds[0] != seeds[1]
    rc, again, err = main(capsys, "generate", run, "--prefix", "It", "-n", 40, "--seed", seeds[1])
    assert again == text and "--seed" not in err


def test_unknown_prefix_characters_warn(run, capsys):
    rc, out, err = main(capsys, "generate", run, "--prefix", "It€ wÅs", "-n", 5, "--seed", 1)
    assert rc == 0
    assert "warning" in err and "'€'" in err and "'Å'" in err


def test_a_resumed_run_with_nothing_left_to_do_says_so(run, capsys):
    before = (run / "checkpoint.npz").read_bytes()
    rc, out, err = main(capsys, "train", "--resume", run, "--no-progress")
    assert rc == 0, err
    assert "nothing left to do" in out and "--epochs" in out
    assert (run / "checkpoint.npz").read_bytes() == before


# -- CuPy hint, one-hot inputs --------------------------------------------------------
def test_the_cupy_hint_names_an_installable_package(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(RuntimeError) as e:
        backend.get_backend("cupy")
    assert 'pip install -e ".[gpu]"' in str(e.value) and "cupy-cuda12x" in str(e.value)
    assert "npnn[gpu]" not in str(e.value)


def test_one_hot_inputs_do_not_build_an_identity_matrix():
    V = 8000
    model = RNNLM(V, 4, "rnn", embedding_dim=0, seed=0)
    X = np.random.default_rng(0).integers(0, V, size=(2, 3))
    tracemalloc.start()
    try:
        logits, _ = model(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB"     # eye(8000) alone is 244 MiB
    # and the inputs are the one-hot rows: the first layer sees column X of W_ih
    W = model.rnn.params["weight_ih_l0"]
    b = model.rnn.params["bias_ih_l0"] + model.rnn.params["bias_hh_l0"]
    h1 = np.tanh(W[:, X[:, 0]].T + b)                           # (N, H), the first step
    out, _ = model.rnn(model._inputs(X))
    np.testing.assert_allclose(out[0], h1, rtol=1e-6, atol=1e-6)


def test_sigint_handler_restored_after_fit(text_file, tmp_path):
    Trainer(tiny_config(text_file, epochs=1), tmp_path / "r", log=quiet, progress=False).fit()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("max_tokens", [-5000, 0, 2.5, True])
def test_text_corpus_refuses_a_max_tokens_that_would_slice_oddly(max_tokens):
    """-5000 dropped the *last* 5000 tokens, 0 meant all (the library side of
    --max-tokens)."""
    from npnn.training.data import TextCorpus
    with pytest.raises(ValueError, match="max_tokens"):
        TextCorpus.from_text(TEXT, max_tokens=max_tokens)
    assert len(TextCorpus.from_text(TEXT, max_tokens=50)) == 50
