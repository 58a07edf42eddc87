"""Issue 11, "Data loss and hangs": each numbered item, reproduced as on the old main.

Every test here failed on the code before the fix (see the commit messages). They run
``npnn.training.cli.main`` in this process where they can (fast, and a traceback fails the
test), and a subprocess where a signal or a second process is the point.
"""

import io
import json
import os
import signal
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from _helpers import (TEXT, TINY, interrupted_run as stopped_run, main, npnn_process,
                      one_line_error, quiet, tiny_config, wait_for_line)
from npnn.training.trainer import CheckpointError, Trainer, load_model


@pytest.fixture
def long_text(tmp_path):
    """Long enough that an epoch of the TINY model takes many seconds."""
    path = tmp_path / "long.txt"
    path.write_text(TEXT * 60, encoding="utf-8")
    return path


def all_arrays_finite(path):
    with np.load(path) as data:
        return all(np.all(np.isfinite(data[k])) for k in data.files
                   if data[k].dtype.kind == "f")


def array_members(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# -- 1. non-finite weights never reach the checkpoint ----------------------------
def test_1_divergence_on_the_last_batch_writes_no_broken_checkpoint(tmp_path, capsys):
    """The issue's reproduction: one batch an epoch, so the weights become NaN on the
    last step of epoch 1 and the old code saved them at the epoch's end."""
    text = tmp_path / "forty.txt"
    text.write_text("abcdefghij klmnopqrst uvwxyzabcd efghijkl", encoding="utf-8")
    out = tmp_path / "run"
    rc, stdout, err = main(capsys, "train", "--text", text, "--hidden", 8, "--embedding", 4,
                           "--batch", 2, "--steps", 8, "--val-fraction", 0.2, "--epochs", 3,
                           "--optimizer", "adam", "--lr", 1e38, "--out", out, "--no-progress")
    assert rc == 2
    line = one_line_error(err, "diverged", "validation perplexity nan")
    assert "--lr" in line
    ckpt = out / "checkpoint.npz"
    assert not ckpt.exists() or all_arrays_finite(ckpt)


def test_1_divergence_keeps_the_previous_good_checkpoint(text_file, tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(text_file, epochs=1), out, log=quiet, progress=False).fit()
    good = (out / "checkpoint.npz").read_bytes()
    resumed = Trainer.resume(out, log=quiet, progress=False, epochs=3)
    resumed.optimizer.lr = 1e38                        # the next update breaks the weights
    with pytest.raises(FloatingPointError, match="diverged"):
        resumed.fit()
    assert (out / "checkpoint.npz").read_bytes() == good


# -- 2. a second run neither replaces a checkpoint nor runs beside the first ---------
def test_2_a_second_train_into_a_checkpoint_folder_is_refused(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--text", text_file, "--epochs", 1, "--out", out, *TINY]
    assert main(capsys, *args)[0] == 0
    before = (out / "checkpoint.npz").read_bytes()
    rc, stdout, err = main(capsys, *args)
    assert rc == 2
    one_line_error(err, "--resume", "--overwrite", "already holds a checkpoint")
    assert "epoch 1" not in stdout
    assert (out / "checkpoint.npz").read_bytes() == before
    rc, stdout, err = main(capsys, *args, "--overwrite")
    assert rc == 0, err and "epoch 1" in stdout


def test_2_two_runs_on_one_out_cannot_both_run(long_text, tmp_path, capsys):
    out = tmp_path / "run"
    first = npnn_process("train", "--text", long_text, "--epochs", 1000, "--out", out, *TINY)
    try:
        wait_for_line(first, "npnn ")                 # its header: it holds the folder now
        rc, stdout, err = main(capsys, "train", "--text", long_text, "--epochs", 1, "--out", out,
                               "--overwrite", *TINY)
        assert rc == 2
        one_line_error(err, "in use", f"pid {first.pid}")
        rc, stdout, err = main(capsys, "train", "--resume", out, "--no-progress")
        assert rc == 2
        one_line_error(err, "in use", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130                     # the first run was not disturbed


def test_2_a_lock_left_by_a_dead_run_is_taken_over(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"{dead.pid}\n")
    rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out,
                           *TINY)
    assert rc == 0, err
    assert sorted(os.listdir(out)) in (["checkpoint.npz"], ["checkpoint.npz", "history.png"])


def test_2_the_plot_has_no_fixed_temporary_name(text_file, tmp_path, capsys):
    """Another run's temporary plot (the old fixed name) must not make this one fail."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    (out / ".history.png.tmp").mkdir(parents=True)
    rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out,
                           *TINY)
    assert rc == 0, err
    assert (out / "history.png").exists()


# -- 3. every flag validated up front, naming the flag -----------------------------
BAD_FLAGS = [("--minutes", "nan"), ("--minutes", "inf"), ("--minutes", "-1"), ("--minutes", "0"),
             ("--clip", "nan"), ("--clip", "0"), ("--clip", "-1"), ("--max-tokens", "-5000"),
             ("--max-tokens", "0"), ("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"),
             ("--val-fraction", "1.5"), ("--val-fraction", "nan"), ("--dropout", "1"),
             ("--dropout", "nan"), ("--seed", "-1"), ("--hidden", "0"), ("--embedding", "-1"),
             ("--min-freq", "-1"), ("--sample-every", "0"), ("--batch", "0"), ("--steps", "0"),
             ("--layers", "0"), ("--epochs", "0")]


@pytest.mark.parametrize("flag,value", BAD_FLAGS)
def test_3_bad_flags_are_refused_up_front_naming_the_flag(text_file, tmp_path, capsys, flag,
                                                          value):
    out = tmp_path / "run"
    epochs = [] if flag == "--epochs" else ["--epochs", 1]
    rc, stdout, err = main(capsys, "train", "--text", text_file, *epochs, "--out", out, *TINY,
                           flag, value)
    assert rc == 2
    one_line_error(err, flag, value)
    assert not out.exists() and "epoch" not in stdout


# -- 4. a bad --out is found before training; a failed save is one line ------------
def test_4_out_is_a_file(text_file, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "under"):
        rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out,
                               *TINY)
        assert rc == 2
        one_line_error(err, "--out", str(afile))
        assert "epoch" not in stdout


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_4_out_is_read_only(text_file, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out,
                               *TINY)
    finally:
        out.chmod(0o755)
    assert rc == 2
    one_line_error(err, "--out", str(out))
    assert "epoch" not in stdout


def test_4_an_unwritable_out_is_found_before_training(text_file, tmp_path, capsys, monkeypatch):
    """As the read-only test, for a user (root) the permission bits do not stop: every
    attempt to create a file in the folder fails."""
    out = tmp_path / "ro"
    out.mkdir()
    real_open = os.open

    def refuse(path, *args, **kw):
        if os.path.dirname(os.path.abspath(path)) == str(out):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)
    monkeypatch.setattr(os, "open", refuse)
    rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out,
                           *TINY)
    assert rc == 2
    one_line_error(err, "--out", "Permission denied")
    assert "epoch" not in stdout


def test_4_disk_full_during_a_save_is_one_line_and_keeps_the_checkpoint(text_file, tmp_path,
                                                                         capsys, monkeypatch):
    out = tmp_path / "run"
    real_savez, saved = np.savez, []

    def savez(f, **arrays):
        if saved:                                       # the second save: the disk is full
            f.write(b"PK\x03\x04 half a zip")
            raise OSError(28, "No space left on device")
        real_savez(f, **arrays)
        f.flush()
        saved.append((out / "checkpoint.npz").exists())
    monkeypatch.setattr(np, "savez", savez)
    rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 3, "--out", out,
                           *TINY)
    assert rc == 2
    one_line_error(err, "No space left on device", "checkpoint")
    monkeypatch.undo()
    trainer = Trainer.resume(out, log=quiet, progress=False)   # the epoch-1 checkpoint
    assert trainer.state.epoch == 1
    trainer.close()
    assert [n for n in os.listdir(out) if "tmp" in n] == []


# -- 5. SIGTERM saves like Ctrl-C; temporary files of killed saves are removed ------
def test_5_sigterm_stops_after_the_step_and_saves(long_text, tmp_path):
    out = tmp_path / "run"
    proc = npnn_process("train", "--text", long_text, "--epochs", 1000, "--out", out, *TINY)
    wait_for_line(proc, "npnn ")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM: checkpoint saved" in stdout and "Traceback" not in stderr
    trainer = Trainer.resume(out, log=quiet, progress=False)
    assert trainer.state.epoch == 0 and trainer.state.batch >= 1       # mid-epoch, not lost
    trainer.close()


def test_5_stale_temporary_files_are_removed_when_a_run_opens_its_folder(text_file, tmp_path,
                                                                          capsys):
    out = tmp_path / "run"
    assert main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out, *TINY)[0] == 0
    stale = [".tmp-k2j3h4g5.npz", ".checkpoint.npz.tmp-a1b2c3d4", ".history.png.tmp-x9y8z7w6"]
    others = ["notes.tmp", ".tmp-notes.txt", "my.npz"]
    for name in stale + others:
        (out / name).write_bytes(b"x" * 1000)
    rc, stdout, err = main(capsys, "train", "--resume", out, "--epochs", 2, "--no-progress")
    assert rc == 0, err
    names = set(os.listdir(out))
    assert not names & set(stale)
    assert set(others) <= names


# -- 6. a damaged or foreign checkpoint is a CheckpointError ------------------------
def _edit_meta(path, edit):
    arrays = array_members(path)
    meta = json.loads(str(arrays["meta"]))
    meta = edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _model_section(meta):
    return meta["config"] if meta["format"] == 1 else meta["model"]


def _drop_config(meta):
    del meta["config" if meta["format"] == 1 else "model"]
    return meta


def _unknown_field(meta):
    _model_section(meta)["colour"] = "blue"
    return meta


def _no_data_generator(meta):
    if meta["format"] == 1:
        del meta["data_rng_state"]
    else:
        del meta["progress"]["rng"]
    return meta


def _carried_mismatch(meta):
    meta["carried"] = 1                     # the LSTM's checkpoint holds two state arrays
    return meta


def _vocab_entry(meta):
    meta["vocab"][3] = 7
    return meta


def _hidden_wrong(meta):
    _model_section(meta)["hidden"] = 17
    return meta


META_DAMAGE = {"no config": _drop_config, "meta is a list": lambda m: [m],
               "unknown config field": _unknown_field,
               "no data generator state": _no_data_generator,
               "carried does not match the state arrays": _carried_mismatch,
               "non-string vocabulary entry": _vocab_entry,
               "weights do not fit the config": _hidden_wrong}


@pytest.fixture
def interrupted_run(text_file, tmp_path):
    """A run stopped in the middle of epoch 2 (so the LSTM's carried state is saved)."""
    stopped_run(text_file, tmp_path / "run", at=8)
    return tmp_path / "run"


@pytest.mark.parametrize("damage", sorted(META_DAMAGE))
@pytest.mark.parametrize("command", ["generate", "resume"])
def test_6_damaged_meta_is_a_one_line_checkpoint_error(interrupted_run, capsys, damage, command):
    _edit_meta(interrupted_run / "checkpoint.npz", META_DAMAGE[damage])
    args = (["generate", interrupted_run, "-n", 5] if command == "generate" else
            ["train", "--resume", interrupted_run, "--no-progress"])
    rc, stdout, err = main(capsys, *args)
    assert rc == 2
    one_line_error(err, "checkpoint")


@pytest.mark.parametrize("command", ["generate", "resume"])
def test_6_random_bytes_are_not_an_npnn_checkpoint(tmp_path, capsys, command):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    args = (["generate", out] if command == "generate" else
            ["train", "--resume", out, "--no-progress"])
    rc, stdout, err = main(capsys, *args)
    assert rc == 2
    line = one_line_error(err, "not an npnn checkpoint")
    assert "pickle" not in line


def _zip_bomb(path, member_suffix="decoder.weight.npy", shape=(8192, 8192)):
    """Replace one array of the checkpoint by zeros of ``shape`` (256 MB for the default),
    compressed: a file of a few hundred kB that expands to the full size."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    (name,) = [n for n in members if n.endswith(member_suffix)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in members.items():
            if n != name:
                zf.writestr(n, data)
        with zf.open(name, "w", force_zip64=True) as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f4", "fortran_order": False, "shape": shape})
            f.write(header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(int(np.prod(shape)) * 4 >> 20):
                f.write(chunk)


@pytest.mark.parametrize("command", ["generate", "resume"])
def test_6_shapes_are_checked_before_arrays_are_allocated(interrupted_run, command):
    path = interrupted_run / "checkpoint.npz"
    _zip_bomb(path)
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="decoder.weight"):
            if command == "generate":
                load_model(interrupted_run)
            else:
                Trainer.resume(interrupted_run, log=quiet, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB allocated"


# -- 7. resume edge cases ------------------------------------------------------------
@pytest.fixture
def two_epochs(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(capsys, "train", "--text", text_file, "--epochs", 2, "--out", out, *TINY)[0] == 0
    return out


def test_7_out_elsewhere_with_resume_is_refused(two_epochs, tmp_path, capsys):
    rc, stdout, err = main(capsys, "train", "--resume", two_epochs, "--out", tmp_path / "other",
                           "--epochs", 3, "--no-progress")
    assert rc == 2
    one_line_error(err, "--out", "--resume")
    assert not (tmp_path / "other").exists()
    # the same folder, spelled differently, is fine
    rc, stdout, err = main(capsys, "train", "--resume", two_epochs, "--out",
                           str(two_epochs) + "/.", "--epochs", 3, "--no-progress")
    assert rc == 0, err


def test_7_epochs_below_the_epochs_done_is_refused(two_epochs, capsys):
    before = (two_epochs / "checkpoint.npz").read_bytes()
    rc, stdout, err = main(capsys, "train", "--resume", two_epochs, "--epochs", 1,
                           "--no-progress")
    assert rc == 2
    one_line_error(err, "--epochs", "1 is below the 2 epochs")
    assert (two_epochs / "checkpoint.npz").read_bytes() == before


def test_7_a_changed_text_is_refused_unless_allowed(two_epochs, text_file, capsys):
    text_file.write_text(TEXT.replace("times", "tides"), encoding="utf-8")
    rc, stdout, err = main(capsys, "train", "--resume", two_epochs, "--epochs", 3,
                           "--no-progress")
    assert rc == 2
    one_line_error(err, "changed", "--allow-changed-text")
    rc, stdout, err = main(capsys, "train", "--resume", two_epochs, "--epochs", 3,
                           "--allow-changed-text", "--no-progress")
    assert rc == 0, err and "epoch 3" in stdout


def test_7_a_relative_text_path_resumes_from_another_folder(text_file, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(text_file.parent)
    out = tmp_path / "run"
    assert main(capsys, "train", "--text", text_file.name, "--epochs", 1, "--out", out,
                *TINY)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, stdout, err = main(capsys, "train", "--resume", out, "--epochs", 2, "--no-progress")
    assert rc == 0, err
    assert "epoch 2" in stdout
