"""Issue 24, "Hardened against what an attacker tries next": each numbered item.

Every test here failed on the main of the day the issue was filed (see the commit
messages). A user's mistake ends in one line (exit status 2, ``CheckpointError`` or a
clear exception) and nothing is lost.
"""

import copy
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from _helpers import (ROOT, TEXT, TINY, main, npnn_process, one_line_error, quiet, tiny_config,
                      wait_for_line)
import npnn
from npnn.training import distributed, rundir
from npnn.training.checkpoint import CheckpointError, read_checkpoint
from npnn.training.rundir import RunBusyError, RunDir
from npnn.training.trainer import Trainer


@pytest.fixture
def long_text(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(TEXT * 60, encoding="utf-8")
    return path


@pytest.fixture
def run(text_file, tmp_path, capsys):
    """A finished one-epoch run folder."""
    out = tmp_path / "run"
    assert main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out, *TINY)[0] == 0
    return out


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _edit(path, edit=None, arrays=None):
    """Rewrite the checkpoint at ``path``: ``edit(meta)`` and/or ``arrays(dict)`` in place."""
    found = _arrays(path)
    meta = json.loads(str(found.pop("meta")))
    if edit is not None:
        meta = edit(meta) or meta
    if arrays is not None:
        arrays(found)
    found["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **found)


def _env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PYTHONUNBUFFERED": "1"}


def _npnn(*args, env=None, timeout=60, **kw):
    """``python -m npnn ARGS`` to its end: (status, stdout, stderr); a hang fails the test."""
    try:
        proc = subprocess.run([sys.executable, "-m", "npnn", *map(str, args)], env=env or _env(),
                              capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail(f"npnn {' '.join(map(str, args))} did not end in {timeout} s")
    return proc.returncode, proc.stdout, proc.stderr


# -- 1. deleting .lock lets no second run in; a run removes only its own lock ---------
def test_1_deleting_the_lock_lets_no_second_run_in(tmp_path):
    first = RunDir.open(tmp_path / "R")
    try:
        os.remove(tmp_path / "R" / ".lock")
        with pytest.raises(RunBusyError, match="in use by another npnn run"):
            RunDir.open(tmp_path / "R")
    finally:
        first.release()
    RunDir.open(tmp_path / "R").release()        # free again once the first is gone


def test_1_a_run_removes_only_a_lock_it_owns(tmp_path):
    first = RunDir.open(tmp_path / "R")
    lock = tmp_path / "R" / ".lock"
    os.remove(lock)
    lock.write_text("12345\n")                     # someone else's
    first.release()
    assert lock.read_text() == "12345\n"


# -- 2. a symlinked lock or checkpoint is never followed ------------------------------
def test_2_a_symlinked_lock_is_refused_and_its_target_kept(text_file, tmp_path, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    out = tmp_path / "R"
    out.mkdir()
    os.symlink(precious, out / ".lock")
    rc, _, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out", out, *TINY)
    assert rc == 2
    one_line_error(err, ".lock", "symbolic link")
    assert precious.read_text() == "keep me\n"


def test_2_a_symlinked_checkpoint_is_refused_and_its_target_kept(run, text_file, tmp_path,
                                                                 capsys):
    target = tmp_path / "kept.npz"
    shutil.move(run / "checkpoint.npz", target)
    os.symlink(target, run / "checkpoint.npz")
    before = target.read_bytes()
    rc, _, err = main(capsys, "train", "--resume", run, "--epochs", 2, "--no-progress")
    assert rc == 2
    one_line_error(err, "checkpoint.npz", "symbolic link")
    rc, _, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out",
                      run, "--overwrite", *TINY)
    assert rc == 2
    one_line_error(err, "checkpoint.npz", "symbolic link")
    assert os.path.islink(run / "checkpoint.npz") and target.read_bytes() == before


# -- 3. SIGHUP saves like SIGTERM; a signal during the final save is not lost ------
def test_3_sighup_stops_after_the_step_and_saves(long_text, tmp_path):
    out = tmp_path / "run"
    proc = npnn_process("train", "--text", long_text, "--epochs", 1000, "--out", out, *TINY)
    wait_for_line(proc, "npnn ")
    proc.send_signal(signal.SIGHUP)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP, stderr
    assert "stopped by SIGHUP: checkpoint saved" in stdout and "Traceback" not in stderr
    trainer = Trainer.resume(out, log=quiet, progress=False)
    assert trainer.state.batch >= 1 or trainer.state.epoch >= 1
    trainer.close()


def test_3_sigterm_during_the_final_save_ends_with_143(text_file, tmp_path, capsys,
                                                       monkeypatch):
    save = Trainer.save

    def late(self, state=None):
        os.kill(os.getpid(), signal.SIGTERM)
        return save(self, state)
    monkeypatch.setattr(Trainer, "save", late)
    rc, stdout, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out",
                           tmp_path / "run", *TINY)
    assert rc == 143, err
    assert read_checkpoint(tmp_path / "run").meta["progress"]["epoch"] == 1


# -- 4. declared shapes are checked against the zip's sizes before allocating ------
def _npy_bytes(array):
    import io
    f = io.BytesIO()
    np.save(f, array)
    return f.getvalue()


def _npy_header(shape, dtype="<f4"):
    """A bare .npy header declaring ``shape``, with no data behind it."""
    import io
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False,
                                             "shape": tuple(shape)})
    return f.getvalue()


def test_4_a_checkpoint_bomb_is_refused_before_allocating(run, tmp_path, capsys):
    """Members that are bare headers declaring a model of hidden size 2000 (a 128 MB
    model from a file of a few KB)."""
    from npnn.functional.registry import CELLS
    path = run / "checkpoint.npz"
    meta = json.loads(str(_arrays(path)["meta"]))
    H = meta["model"]["hidden"] = 2000
    V, E = meta["model"]["vocab_size"], meta["model"]["embedding"]
    shapes = {"embedding.weight": (V, E), "decoder.weight": (V, H), "decoder.bias": (V,)}
    shapes.update({f"rnn.{p.name}_l0": shape
                   for p, shape in CELLS[meta["model"]["cell"]].param_shapes(E, H)})
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w") as zf:
        for name, shape in shapes.items():
            zf.writestr(f"model/{name}.npy", _npy_header(shape))
        zf.writestr("meta.npy", _npy_bytes(np.array(json.dumps(meta))))
    os.replace(bomb, path)
    assert path.stat().st_size < 64 * 1024
    tracemalloc.start()
    try:
        rc, _, err = main(capsys, "generate", run, "-n", 5, "--seed", 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 2
    one_line_error(err, "checkpoint", "declares")
    assert peak < 64 * 2 ** 20
    with pytest.raises(CheckpointError, match="declares"):
        read_checkpoint(run)



# -- 5. impossible progress is refused ---------------------------------------------------
@pytest.mark.parametrize("edit, words", [
    (lambda m: m["progress"].update(batch=1000000, epoch_rng=m["progress"]["rng"]),
     ("batch 1000000", "epoch")),
    (lambda m: m["progress"].update(history=[]), ("history",)),
    (lambda m: m["optimizer"].update(step_count=1), ("step",)),
    (lambda m: m["optimizer"].update(step_count=10 ** 6), ("step",)),
], ids=["batch-beyond-the-epoch", "no-history-after-an-epoch", "too-few-steps",
        "too-many-steps"])
def test_5_impossible_progress_is_refused(run, capsys, edit, words):
    _edit(run / "checkpoint.npz", edit)
    before = (run / "checkpoint.npz").read_bytes()
    rc, _, err = main(capsys, "train", "--resume", run, "--epochs", 3, "--no-progress")
    assert rc == 2
    one_line_error(err, "checkpoint", *words)
    assert (run / "checkpoint.npz").read_bytes() == before


# -- 6. the optimizer's buffers match its parameters exactly --------------------------
def _adam_run(text_file, tmp_path, capsys):
    out = tmp_path / "adam"
    assert main(capsys, "train", "--text", text_file, "--epochs", 1, "--optimizer", "adam",
                "--out", out, *TINY)[0] == 0
    return out


@pytest.mark.parametrize("change, words", [
    (lambda a: [a.pop(k) for k in list(a) if k.startswith("optimizer/")], ("optimizer/0/",)),
    (lambda a: a.pop("optimizer/0/exp_avg"), ("optimizer/0/exp_avg",)),
    (lambda a: a.__setitem__("optimizer/0/bogus", a["optimizer/0/exp_avg"]), ("bogus",)),
], ids=["every-buffer-missing", "one-missing", "one-extra"])
def test_6_missing_or_extra_optimizer_buffers_are_refused(text_file, tmp_path, capsys, change,
                                                          words):
    out = _adam_run(text_file, tmp_path, capsys)
    _edit(out / "checkpoint.npz", arrays=change)
    rc, _, err = main(capsys, "train", "--resume", out, "--epochs", 2, "--no-progress")
    assert rc == 2
    one_line_error(err, "checkpoint", *words)


# -- 7. every number of the meta is bounded ------------------------------------------------
@pytest.mark.parametrize("edit", [
    lambda m: m["optimizer"].update(step_count=10 ** 400),
    lambda m: m["progress"].update(epoch=10 ** 400),
    lambda m: m["progress"]["history"][0].update(train_ppl=10 ** 400),
], ids=["step_count", "epoch", "record"])
def test_7_unbounded_numbers_are_refused(text_file, tmp_path, capsys, edit):
    out = _adam_run(text_file, tmp_path, capsys)
    _edit(out / "checkpoint.npz", edit)
    with pytest.raises(CheckpointError, match="too large|expected"):
        read_checkpoint(out)
    rc, _, err = main(capsys, "train", "--resume", out, "--epochs", 2, "--no-progress")
    assert rc == 2
    one_line_error(err, "checkpoint")


# -- 8. deep JSON, a vocabulary without <unk>, a read-only folder -------------------------
def test_8_deeply_nested_meta_is_a_checkpoint_error(run):
    arrays = _arrays(run / "checkpoint.npz")
    arrays["meta"] = np.array('{"format": 2, "x": ' + "[" * 100000 + "]" * 100000 + "}")
    with open(run / "checkpoint.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match="nest"):
        read_checkpoint(run)


def test_8_a_vocabulary_without_unk_is_refused(run):
    _edit(run / "checkpoint.npz", lambda m: m.update(vocab=["?"] + m["vocab"][1:]))
    with pytest.raises(CheckpointError, match="<unk>"):
        read_checkpoint(run)


def test_8_resuming_from_a_read_only_folder_does_not_blame_out(run, capsys, monkeypatch):
    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(rundir, "_lock", read_only)
    rc, _, err = main(capsys, "train", "--resume", run, "--epochs", 2, "--no-progress")
    assert rc == 2
    line = one_line_error(err, "Read-only file system", "--resume")
    assert "--out" not in line


# -- 9. special files: FIFOs, /dev/zero, /dev/fd ---------------------------------------------
def test_9_a_fifo_as_text_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rc, _, err = _npnn("train", "--text", fifo, "--out", tmp_path / "R", *TINY, timeout=60)
    assert rc == 2
    one_line_error(err, "regular file")


def test_9_a_fifo_as_checkpoint_is_refused_at_once(tmp_path):
    (tmp_path / "R").mkdir()
    os.mkfifo(tmp_path / "R" / "checkpoint.npz")
    rc, _, err = _npnn("generate", tmp_path / "R", "-n", 3, timeout=60)
    assert rc == 2
    one_line_error(err, "regular file")


def _limited_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2 ** 30, 3 * 2 ** 30))


def test_9_dev_zero_as_text_is_refused(tmp_path):
    rc, _, err = _npnn("train", "--text", "/dev/zero", "--out", tmp_path / "R", *TINY,
                       preexec_fn=_limited_memory)
    assert rc == 2
    one_line_error(err, "/dev/zero", "regular file")


def test_9_a_checkpoint_naming_dev_zero_is_refused(run):
    _edit(run / "checkpoint.npz", lambda m: m["run"].update(text="/dev/zero"))
    rc, _, err = _npnn("train", "--resume", run, "--epochs", 2, "--no-progress",
                       preexec_fn=_limited_memory)
    assert rc == 2
    one_line_error(err, "/dev/zero", "regular file")


def test_9_a_pipe_as_text_is_refused_as_it_cannot_be_resumed(tmp_path):
    r, w = os.pipe()
    os.write(w, TEXT.encode())
    os.close(w)
    try:
        rc, _, err = _npnn("train", "--text", f"/dev/fd/{r}", "--epochs", 1,
                           "--out", tmp_path / "R", *TINY, pass_fds=(r,))
    finally:
        os.close(r)
    assert rc == 2
    one_line_error(err, "regular file", "resume")


# -- 10. big texts: compact ids, rank 0 tokenises, the whole run within --minutes -------------
def test_10_the_corpus_is_a_compact_integer_array(tmp_path):
    from npnn.training.data import TextCorpus
    corpus = TextCorpus.from_text("abcabcab" * 100, "char", val_fraction=0.1)
    assert corpus.ids.dtype == np.uint8
    words = TextCorpus.from_text(" ".join(f"w{i}" for i in range(300)), "word")
    assert words.ids.dtype == np.uint16


def test_10_tokenising_holds_a_few_times_the_text(tmp_path):
    from npnn.training.trainer import load_corpus
    path = tmp_path / "big.txt"
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghij klmnopqrstuvwxyz\n", dtype=np.uint8)
    path.write_bytes(letters[rng.integers(0, letters.size, 8 * 2 ** 20)].tobytes())
    tracemalloc.start()
    try:
        corpus = load_corpus(tiny_config(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(corpus) == 8 * 2 ** 20
    assert peak < 4 * 8 * 2 ** 20, peak / 2 ** 20


def test_10_the_whole_run_counts_against_minutes(long_text, tmp_path, monkeypatch):
    """Set-up and the final validation are inside the budget (within 10%)."""
    import npnn.training.trainer as trainer_module
    load = trainer_module.load_corpus

    def slow_load(*args, **kw):
        time.sleep(3.0)                              # a long tokenisation
        return load(*args, **kw)
    monkeypatch.setattr(trainer_module, "load_corpus", slow_load)
    validate = Trainer._piece_nll

    def slow_validation(self, *args):
        time.sleep(0.5)
        return validate(self, *args)
    monkeypatch.setattr(Trainer, "_piece_nll", slow_validation)
    t0 = time.perf_counter()
    trainer = Trainer(tiny_config(long_text, epochs=None, minutes=0.1, val_fraction=0.3),
                      tmp_path / "R", log=quiet, progress=False)
    trainer.fit()
    took = time.perf_counter() - t0
    assert trainer.state.stopped == "time"
    assert took <= 1.1 * 6.0, took


def test_10_rank_0_alone_tokenises(text_file, tmp_path, monkeypatch):
    """Under MPI the other ranks receive the token ids (here: a world of 2 where the
    broadcast is checked, and rank 1 must not call the tokeniser)."""
    import npnn.training.trainer as trainer_module
    calls = []
    load = trainer_module.load_corpus
    monkeypatch.setattr(trainer_module, "load_corpus",
                        lambda *a, **k: calls.append(1) or load(*a, **k))
    sent = {}

    class Rank1(distributed.World):
        rank, size = 1, 2

        def bcast(self, obj, root=0):        # rank 0's set-up first, then the same as here
            return sent.pop("obj") if "obj" in sent else obj

        def bcast_array(self, array, root=0):
            array[...] = sent["ids"][:array.size]
            return array

        def allgather(self, obj):
            return [None, obj]

    corpus = load(tiny_config(text_file))
    calls.clear()
    root = Trainer(tiny_config(text_file), tmp_path / "R0", log=quiet, progress=False)
    sent["obj"], sent["ids"] = root._shared, root.corpus.ids
    root.close()
    calls.clear()
    trainer = Trainer(tiny_config(text_file), tmp_path / "R1", log=quiet, progress=False,
                      world=Rank1())
    assert calls == []
    np.testing.assert_array_equal(trainer.corpus.ids, corpus.ids)


# -- 11. a vocabulary that cannot learn is refused ----------------------------------------------
def test_11_a_vocabulary_that_cannot_learn_is_refused(text_file, tmp_path, capsys):
    rc, _, err = main(capsys, "train", "--text", text_file, "--tokens", "word", "--min-freq",
                      100000, "--epochs", 1, "--out", tmp_path / "R", *TINY)
    assert rc == 2
    one_line_error(err, "--min-freq", "nothing to learn")
    assert not (tmp_path / "R" / "checkpoint.npz").exists()


# -- 12/13. the numba cache never stops a run ----------------------------------------------
_NUMBA_RUN = ("import numpy as np, warnings; warnings.simplefilter('always');"
              "from npnn.functional.accel import _numba as nb;"
              "from npnn.functional.accel import use_acceleration;"
              "import npnn; m = npnn.LSTM(3, 5, dtype='float32', seed=0);"
              "x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype('float32');"
              "ctx = use_acceleration(); ctx.__enter__(); out, _ = m(x);"
              "m.backward(np.ones_like(out)); print(repr(float(out.sum())), nb._COMPILED != {})")


def _numba_env(cache):
    return {**_env(), "NUMBA_CACHE_DIR": str(cache), "NPNN_NUMBA": "1"}


def test_12_a_corrupted_numba_cache_is_compiled_around(tmp_path):
    pytest.importorskip("numba")
    cache = tmp_path / "cache"
    first = subprocess.run([sys.executable, "-c", _NUMBA_RUN], env=_numba_env(cache),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    index = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs if f.endswith(".nbi")]
    data = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs if f.endswith(".nbc")]
    assert index and data
    for path in index[::2]:
        open(path, "wb").close()                           # emptied
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(max(1, os.path.getsize(path) // 3))  # truncated
    for _ in range(2):
        again = subprocess.run([sys.executable, "-c", _NUMBA_RUN], env=_numba_env(cache),
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert "Traceback" not in again.stderr
        assert again.stdout == first.stdout                  # bit for bit
        assert again.stderr.count("numba") <= 1 or "cache" in again.stderr


def test_13_no_cache_location_compiles_without_the_cache(monkeypatch, recwarn):
    numba = pytest.importorskip("numba")
    from npnn.functional.accel import _numba as nb
    real = numba.njit

    def njit(*args, **kw):
        decorate = real(*args, **kw)
        if not kw.get("cache"):
            return decorate

        def refuse(fn):
            raise RuntimeError(f"cannot cache function {fn.__name__!r}: no locator available "
                               f"for file {fn.__code__.co_filename!r}")
        return refuse
    monkeypatch.setattr(numba, "njit", njit)

    def kernel(a):
        return a + 1.0
    monkeypatch.setattr(nb, "_COMPILED", {})
    assert nb.jit(kernel)(1.0) == 2.0

    def other(a):
        return a * 2.0
    assert nb.jit(other)(2.0) == 4.0
    cache_warnings = [w for w in recwarn if "cache" in str(w.message)]
    assert len(cache_warnings) == 1


def test_13_npnn_train_runs_without_a_writable_cache(text_file, tmp_path, monkeypatch, capsys):
    numba = pytest.importorskip("numba")
    from npnn.functional.accel import _numba as nb
    real = numba.njit

    def njit(*args, **kw):
        if kw.get("cache"):
            def refuse(fn):
                raise RuntimeError("cannot cache function 'f': no locator available for file")
            return refuse
        return real(*args, **kw)
    monkeypatch.setattr(numba, "njit", njit)
    monkeypatch.setattr(nb, "_COMPILED", {})
    monkeypatch.setenv("NPNN_NUMBA", "1")
    with pytest.warns(RuntimeWarning, match="cache"):
        rc, _, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--dtype",
                          "float32", "--out", tmp_path / "R", *TINY)
    assert rc == 0, err


# -- 14. MPI: a broken mpi4py, a mismatched MPI, different versions, generate -------------------
def test_14_a_broken_mpi4py_is_one_line(text_file, tmp_path):
    fake = tmp_path / "fake"
    (fake / "mpi4py").mkdir(parents=True)
    (fake / "mpi4py" / "__init__.py").write_text("")
    (fake / "mpi4py" / "MPI.py").write_text(
        "raise ImportError('libmpi.so.12: cannot open shared object file')\n")
    env = {**_env(), "PMI_SIZE": "2", "PMI_RANK": "0"}
    env["PYTHONPATH"] = str(fake) + os.pathsep + env["PYTHONPATH"]
    rc, _, err = _npnn("train", "--text", text_file, "--epochs", 1, "--out", tmp_path / "R",
                       *TINY, env=env)
    assert rc == 2
    one_line_error(err, "mpi4py", "libmpi.so.12")


def test_14_a_launcher_of_another_mpi_is_refused(text_file, tmp_path):
    pytest.importorskip("mpi4py")
    env = {**_env(), "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}
    rc, _, err = _npnn("train", "--text", text_file, "--epochs", 1, "--out", tmp_path / "R",
                       *TINY, env=env, timeout=120)
    assert rc == 2
    one_line_error(err, "OMPI_COMM_WORLD_SIZE=2", "one process")


MPIEXEC = next((p for p in (os.path.join(os.path.dirname(sys.executable), "mpiexec"),
                            shutil.which("mpiexec")) if p and os.path.isfile(p)), None)
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec")


def _mpiexec(n, args, timeout=180):
    pytest.importorskip("mpi4py")
    try:
        proc = subprocess.run([MPIEXEC, "-n", str(n), *map(str, args)], env=_env(),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("mpiexec did not end")
    return proc.returncode, proc.stdout, proc.stderr


@needs_mpi
def test_14_different_npnn_versions_are_refused(text_file, tmp_path):
    script = tmp_path / "other_version.py"
    script.write_text(
        "import os, sys\n"
        "import npnn._version, npnn\n"
        "if os.environ.get('PMI_RANK') == '1':\n"
        "    npnn._version.__version__ = '0.0.1'\n"
        "from npnn.training import cli\n"
        "sys.exit(cli.main(sys.argv[1:]))\n")
    rc, _, err = _mpiexec(2, [sys.executable, script, "train", "--text", text_file, "--epochs",
                              1, "--out", tmp_path / "R", *TINY])
    assert rc == 2, err
    one_line_error(err, "version", "0.0.1")


@needs_mpi
def test_14_mpiexec_generate_prints_one_text(run):
    rc, out, err = _mpiexec(2, [sys.executable, "-m", "npnn", "generate", run, "--prefix",
                                "It was", "-n", 10, "--strategy", "greedy"])
    assert rc == 0, err
    assert out.count("It was") == 1, out


# -- 15. RNNLM.generate is thread-safe and leaves the mode alone ----------------------------
def _lm(**kw):
    from npnn.models import RNNLM
    return RNNLM(20, 12, cell="lstm", num_layers=2, embedding_dim=6, dropout=0.5, seed=3,
                 dtype="float64", **kw)


def test_15_generate_does_not_change_the_mode():
    model = _lm()

    def no(*_):
        raise AssertionError("generate changed the model's mode")
    model.eval = model.train = no
    model.generate([1, 2, 3], 5)
    assert model.training


def test_15_concurrent_generation_equals_sequential():
    model = _lm()
    jobs = [([1 + i % 7, 2, 3], strategy, i) for i in range(24)
            for strategy in ("greedy", "sample", "beam")][:36]
    expected = [model.generate(p, 8, strategy=s, seed=seed) for p, s, seed in jobs]
    got = [None] * len(jobs)

    def work(k):
        for i in range(k, len(jobs), 4):
            p, s, seed = jobs[i]
            got[i] = model.generate(p, 8, strategy=s, seed=seed)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
    assert model.training


def test_15_training_beside_generation():
    model = _lm()
    from npnn.layers import SoftmaxCrossEntropy
    loss_fn = SoftmaxCrossEntropy()
    stop, errors = threading.Event(), []
    X = np.random.default_rng(0).integers(0, 20, (2, 5))

    def generate():
        try:
            while not stop.is_set():
                model.generate([1, 2], 4, strategy="sample", seed=1)
        except Exception as e:          # pragma: no cover - the failure being tested
            errors.append(e)
    thread = threading.Thread(target=generate)
    thread.start()
    try:
        for _ in range(40):
            logits, _ = model(X)
            loss_fn(logits, X)
            model.backward(loss_fn.backward())
            model.zero_grad()
    finally:
        stop.set()
        thread.join()
    assert errors == []


# -- 16. every Module and optimizer deep-copies and pickles ----------------------------------
def _modules():
    from npnn import layers as L
    from npnn import models as M
    yield L.Recurrent("gru", 3, 4)
    for cls in (L.RNN, L.LSTM, L.GRU, L.PeepholeLSTM, L.CTRNN, L.JordanRNN, L.LayerNormLSTM,
                L.LayerNormGRU):
        yield cls(3, 4, num_layers=2, dropout=0.1, seed=0)
    yield L.LSTM(3, 4, proj_size=2)
    yield L.LSTM(3, 4, recurrent_dropout=0.2, zoneout=(0.1, 0.2), weight_drop=0.3, seed=0)
    for cls in (L.RNNCell, L.LSTMCell, L.GRUCell, L.LayerNormLSTMCell, L.LayerNormGRUCell):
        yield cls(3, 4)
    yield L.DotAttention()
    yield L.AdditiveAttention(4, 4, 5)
    yield L.Linear(3, 4)
    yield L.Embedding(5, 3)
    yield L.Dropout(0.5, seed=0)
    yield L.SoftmaxCrossEntropy()
    yield L.MSELoss()
    yield L.Sequential(L.Linear(3, 4), L.Linear(4, 2))
    yield M.RNNLM(10, 8, cell="lstm", embedding_dim=4)
    yield M.Seq2Seq(9, 7, 3, 4, 1, "gru", False, "attention", "dot", seed=0)
    yield M.SequenceClassifier(10, 3, embed_size=4, hidden_size=5)
    yield M.SequenceTagger(10, 3, embed_size=4, hidden_size=5)
    yield M.ConditionalDecoder(3, 7, embed_size=4, hidden_size=5)


def test_16_every_public_module_and_optimizer_is_covered():
    from npnn import layers as L
    from npnn import models as M
    covered = {type(m) for m in _modules()}
    public = {getattr(L, n) for n in L.__all__} | {getattr(M, n) for n in M.__all__}
    public = {c for c in public if isinstance(c, type) and issubclass(c, L.Module)}
    assert public - {L.Module} <= covered


@pytest.mark.parametrize("make", [lambda: copy.deepcopy, lambda: lambda m: pickle.loads(
    pickle.dumps(m))], ids=["deepcopy", "pickle"])
def test_16_every_module_copies(make):
    clone = make()
    for module in _modules():
        copied = clone(module)
        assert type(copied) is type(module)
        for (name, a), (_, b) in zip(module.named_parameters(), copied.named_parameters()):
            np.testing.assert_array_equal(a, b, err_msg=name)
            assert a is not b


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_16_every_optimizer_copies_with_its_model(name):
    from npnn.optim import OPTIMIZERS
    model = npnn.LSTM(3, 4, seed=0)
    opt = OPTIMIZERS[name](model, lr=0.01)
    x = np.ones((2, 1, 3), dtype=np.float32)
    out, _ = model(x)
    model.backward(np.ones_like(out))
    opt.step()
    for clone in (copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))):
        m2, o2 = clone((model, opt))
        assert o2.step_count == opt.step_count
        out2, _ = m2(x)
        m2.backward(np.ones_like(out2))
        o2.step()                                    # updates the copy's own parameters
        p2 = dict(m2.named_parameters())
        for n, p in model.named_parameters():
            assert not np.shares_memory(p, p2[n])


# -- 17. Seq2Seq decoding with max_len 0 or negative ------------------------------------------
def _seq2seq():
    return npnn.models.Seq2Seq(9, 7, 3, 4, 1, "gru", False, "attention", "dot", seed=0, eos=2)


def test_17_max_len_0_decodes_nothing():
    model = _seq2seq()
    src = np.array([[1, 2, 3], [3, 4, 5]])
    assert model.greedy_decode(src, max_len=0) == [[], []]
    assert model.beam_decode(src[0], max_len=0) == []


@pytest.mark.parametrize("max_len", [-1, 1.5, True])
def test_17_a_negative_max_len_is_refused(max_len):
    model = _seq2seq()
    with pytest.raises(ValueError, match="max_len"):
        model.greedy_decode(np.array([[1, 2, 3]]), max_len=max_len)
    with pytest.raises(ValueError, match="max_len"):
        model.beam_decode(np.array([1, 2, 3]), max_len=max_len)
