"""Data-parallel training on MPI (issue 13): P processes reproduce one process with the same
global batch; checkpoints move between numbers of processes; a failing process ends the
job; a signal or a time budget stops every process after the same step.

The MPI tests launch ``mpiexec -n P python tests/mpi_worker.py CASE ...`` (or ``npnn
train``) with a timeout; they skip where mpiexec or mpi4py is missing (pip install -e
".[mpi]" installs both). Oversubscribing 4 processes on 2 cores is fine for correctness.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from _helpers import ROOT, TEXT, one_line_error, quiet, stop_at
import fit_models
import mpi_worker
from npnn.training import distributed
from npnn.training.checkpoint import read_checkpoint
from npnn.training.distributed import GradientBuckets, World, from_root, all_ok, jump_generators
from npnn.training.loop import Hooks
from npnn.models import RNNLM
from npnn.optim import Adam
from npnn.training.trainer import Trainer

TESTS = os.path.join(ROOT, "tests")
WORKER = os.path.join(TESTS, "mpi_worker.py")
MPIEXEC = next((p for p in (os.path.join(os.path.dirname(sys.executable), "mpiexec"),
                            shutil.which("mpiexec")) if p and os.path.isfile(p)), None)
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs mpiexec and mpi4py: pip install -e \".[mpi]\"")
RTOL = 1e-9


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, TESTS, os.environ.get(
        "PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1",
        # Open MPI's mpiexec, if that is the one found: as root, and 4 ranks on 2 cores
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def _launch(n, *args):
    command = [sys.executable, *map(str, args)]
    if n:
        command = [MPIEXEC, "-n", str(n)] + command
    return subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # mpiexec and every process it started
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not end within {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def mpirun(n, *args, timeout=180, check=True):
    """``mpiexec -n n python ARGS`` (``n`` 0: plain ``python ARGS``), killed at ``timeout``."""
    run = _finish(_launch(n, *args), timeout)
    if check:
        assert run.returncode == 0, f"{run.args} -> {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run


def worker(n, case, out, *args, **kw):
    return mpirun(n, WORKER, case, out, *args, **kw)


def close(a, b, what=""):
    """``a`` equals ``b`` within RTOL, relative to the largest magnitude of ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, what
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = float(np.max(np.abs(a - b))) if b.size else 0.0
    assert err <= RTOL * scale, f"{what}: differs by {err:.3g}, {err / scale:.3g} relative"


def ranks(out, n):
    """Every rank's record (mpi_worker.write_rank); asserts they agree and returns one."""
    records = []
    for r in range(n):
        with open(os.path.join(out, f"rank{r}.json")) as f:
            records.append(json.load(f))
    assert all(rec == records[0] for rec in records), records
    assert records[0]["size"] == n
    return records[0]


# -- P processes against one, with the same global batch ---------------------------------
@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    """The CONFIGS runs in one process and on 2 and 4 (computed once)."""
    text = tmp_path_factory.mktemp("text") / "tiny.txt"
    text.write_text(TEXT, encoding="utf-8")
    if MPIEXEC is None or importlib.util.find_spec("mpi4py") is None:
        pytest.skip("needs mpiexec and mpi4py")
    results = {}
    for n in (0, 2, 4):
        out = tmp_path_factory.mktemp(f"equivalence{n}")
        worker(n, "equivalence", out, text)
        with np.load(out / "results.npz") as data:
            results[n] = {k: data[k] for k in data.files}
    return results


@needs_mpi
@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("cell,tie,iterator", mpi_worker.CONFIGS)
def test_processes_reproduce_one_process_with_the_same_global_batch(equivalence, n, cell, tie,
                                                                    iterator):
    """float64: every step's loss and the final parameters within 1e-9 (relative)."""
    name = f"{cell}-{'tied' if tie else 'untied'}-{iterator}"
    one, many = equivalence[0], equivalence[n]
    losses = one[f"{name}/losses"]
    assert losses.size >= 40 and losses[-1] < 0.8 * losses[0]        # it trained
    close(many[f"{name}/losses"], losses, "losses")
    params = [k for k in one if k.startswith(name + "/") and not k.endswith("/losses")]
    assert len(params) >= 5
    for k in params:
        close(many[k], one[k], k)


@needs_mpi
@pytest.mark.parametrize("n", [2, 4])
def test_the_generic_loop_is_data_parallel_too(tmp_path, monkeypatch, n):
    """Seq2Seq on padded batches (each rank's mean is over its own number of target tokens:
    the average is weighted) and a regressor, through npnn.fit(world=...)."""
    out = tmp_path / "out"
    worker(n, "fit", out)
    with np.load(out / "results.npz") as data:
        many = {k: data[k] for k in data.files}
    for name in fit_models.MODELS:
        losses = []
        monkeypatch.setattr(Hooks, "reduce", Hooks.reduce)
        mpi_worker.record_losses(losses, Hooks)
        params = fit_models.run(name)
        assert len(losses) == 10 and np.all(np.isfinite(losses)), name
        close(many[f"{name}/losses"], losses, f"{name} losses")
        for k, v in params.items():
            close(many[f"{name}/{k}"], v, f"{name} {k}")


# -- checkpoints between numbers of processes --------------------------------------------
@needs_mpi
def test_a_checkpoint_moves_from_2_to_1_to_4_processes(text_file, tmp_path):
    """Stopped mid-epoch on 2 processes (SIGINT to one of them), resumed on 1, stopped
    mid-epoch again, finished on 4 by ``npnn train --resume``: the uninterrupted
    one-process run's parameters and history, within 1e-9."""
    config = mpi_worker.lm_config(text_file, epochs=3)
    straight = Trainer(config, tmp_path / "straight", log=quiet, progress=False)
    straight.fit()
    run, out = tmp_path / "run", tmp_path / "out"

    worker(2, "sigint", out, text_file, run, 1, 30, "epochs=3")      # rank 1 alone, step 30
    assert ranks(out, 2) == {"size": 2, "step_count": 30, "position": [0, 30],
                             "stopped": "SIGINT"}
    assert read_checkpoint(run).meta["carried"] == 2                  # the LSTM's h and c

    one = stop_at(Trainer.resume(run, log=quiet, progress=False), 25, signal.SIGINT)
    one.fit()
    assert one.state.stopped == "SIGINT" and 0 < one.state.batch and one.state.epoch == 1

    four = mpirun(4, "-m", "npnn", "train", "--resume", run, "--no-progress")
    assert four.stdout.count("--- generated text ---") == 1           # rank 0 alone prints
    ckpt = read_checkpoint(run)
    assert ckpt.meta["progress"]["epoch"] == 3
    model = RNNLM(**{"vocab_size": ckpt.model_config.vocab_size, "hidden_size": 8,
                     "cell": "lstm", "embedding_dim": 8, "dtype": "float64"})
    ckpt.restore(model)
    for k, v in straight.model.state_dict().items():
        close(model.state_dict()[k], v, k)
    history = ckpt.meta["progress"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for h, s in zip(history, straight.history):
        for key in ("train_loss", "val_ppl"):
            close(h[key], s[key], f"epoch {s['epoch']} {key}")


@needs_mpi
def test_with_dropout_a_run_resumes_exactly_on_the_same_number_of_processes(text_file,
                                                                          tmp_path):
    """Each rank draws its rows' dropout masks from its own stream (rank 0's, jumped
    ``rank`` times); rank 0's state in the checkpoint gives every rank's back, so on the
    same number of processes the resumed run is bit for bit the uninterrupted one."""
    settings = ("epochs=2", "dropout=0.3", "layers=2")
    worker(2, "sigint", tmp_path / "o1", text_file, tmp_path / "straight", 0, 0, *settings)
    worker(2, "sigint", tmp_path / "o2", text_file, tmp_path / "cut", 0, 50, *settings)
    cut = ranks(tmp_path / "o2", 2)
    assert cut["step_count"] == 50 and cut["position"][0] == 1 and cut["position"][1] > 0
    worker(2, "resume", tmp_path / "o3", tmp_path / "cut", 2)
    straight, resumed = read_checkpoint(tmp_path / "straight"), read_checkpoint(tmp_path / "cut")
    model_a = RNNLM(resumed.model_config.vocab_size, 8, "lstm", 2, 8, dtype="float64")
    model_b = RNNLM(resumed.model_config.vocab_size, 8, "lstm", 2, 8, dtype="float64")
    straight.restore(model_a)
    resumed.restore(model_b)
    for k, v in model_a.state_dict().items():
        assert np.array_equal(model_b.state_dict()[k], v), k
    def losses(ckpt):
        return [(h["train_loss"], h["val_ppl"]) for h in ckpt.meta["progress"]["history"]]
    assert losses(straight) == losses(resumed)


# -- stopping together --------------------------------------------------------------------
@needs_mpi
def test_a_time_budget_stops_every_process_after_the_same_step(text_file, tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    worker(2, "budget", out, text_file, run)
    record = ranks(out, 2)                      # every rank: the same step and position
    assert record["stopped"] == "time" and record["step_count"] > 0
    progress = read_checkpoint(run).meta["progress"]
    assert [progress["epoch"], progress["batch"]] == record["position"]


@needs_mpi
def test_rank_0_chooses_the_layout_of_every_process(text_file, tmp_path):
    """The layouts round differently: every process runs in rank 0's choice, and the
    checkpoint keeps it for a resume."""
    run, out = tmp_path / "run", tmp_path / "out"
    worker(2, "layout", out, text_file, run)
    record = ranks(out, 2)                      # every rank: the same layout, in every step
    assert record["layout"] == "feature" and record["seen"] == ["feature"]
    assert read_checkpoint(run).meta["layout"] == "feature"


@needs_mpi
def test_ctrl_c_on_mpiexec_stops_every_process_and_saves(text_file, tmp_path):
    """mpiexec forwards SIGINT to every process; they agree to stop after one step."""
    run = tmp_path / "run"
    proc = _launch(2, "-m", "npnn", "train", "--text", text_file, "--hidden", "8",
                   "--embedding", "4", "--batch", "4", "--steps", "10", "--epochs", "100000",
                   "--no-progress", "--out", run)
    try:
        line = ""
        while not line.startswith("epoch 1:"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
    finally:
        result = _finish(proc, 120)
    assert result.returncode == 130, result.stderr
    assert "interrupted: checkpoint saved" in result.stdout
    assert read_checkpoint(run).meta["progress"]["epoch"] >= 1


@needs_mpi
def test_a_process_that_fails_alone_ends_the_job(text_file, tmp_path):
    """No hang: ``npnn train`` whose process 1 raises mid-training aborts every process."""
    run = worker(2, "cli_fails", tmp_path / "out", text_file, 1, timeout=120, check=False)
    assert run.returncode != 0
    assert "process 1 of 2" in run.stderr and "a fault of this process alone" in run.stderr


@needs_mpi
def test_an_uncaught_exception_on_one_process_aborts_the_job(tmp_path):
    run = worker(2, "uncaught", tmp_path / "out", 1, timeout=120, check=False)
    assert run.returncode != 0 and "uncaught on one process" in run.stderr


# -- the command line ---------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("launcher", [(), ("-m", "mpi4py")])
def test_npnn_train_under_mpiexec_then_generate(text_file, tmp_path, launcher):
    run = tmp_path / "mpi"
    train = mpirun(2, *launcher, "-m", "npnn", "train", "--text", text_file, "--hidden", "8",
                   "--embedding", "4", "--batch", "4", "--steps", "10", "--minutes", "0.05",
                   "--no-progress", "--out", run)
    assert train.stdout.count("npnn 0.1.0:") == 1 and "2 processes x 2 rows" in train.stdout
    assert train.stdout.count("--- generated text ---") == 1
    gen = mpirun(0, "-m", "npnn", "generate", run, "-n", "20", "--seed", "1")
    assert len(gen.stdout.strip()) >= 20


@needs_mpi
def test_a_batch_that_does_not_split_over_the_processes_is_one_line_and_status_2(text_file,
                                                                                 tmp_path):
    run = mpirun(2, "-m", "npnn", "train", "--text", text_file, "--batch", "5", "--out",
                 tmp_path / "run", check=False)
    assert run.returncode == 2
    one_line_error(run.stderr, "--batch", "multiple of the 2 processes", "got 5")
    assert not (tmp_path / "run").exists()          # found before the folder was made
    mpirun(0, "-m", "npnn", "train", "--text", text_file, "--hidden", "8", "--embedding", "4",
           "--batch", "4", "--steps", "10", "--epochs", "1", "--no-progress", "--out",
           tmp_path / "run")
    run = mpirun(3, "-m", "npnn", "train", "--resume", tmp_path / "run", "--epochs", "2",
                 check=False)
    assert run.returncode == 2
    one_line_error(run.stderr, "this run's --batch 4 does not split evenly over 3 processes")


@needs_mpi
@pytest.mark.parametrize("example,header", [("classify.py", "| pooling |"),
                                            ("sine.py", "| forecast of x_t |")])
def test_the_examples_run_data_parallel(tmp_path, example, header):
    out = ["--out", tmp_path] if example == "sine.py" else []
    run = mpirun(2, os.path.join(ROOT, "examples", example), "--smoke", *out, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count(header) == 1                   # rank 0 alone prints


# -- without MPI --------------------------------------------------------------------------
def _model(tie=False):
    return RNNLM(11, 6, "lstm", embedding_dim=6, tie_weights=tie, dtype="float64", seed=0)


@pytest.mark.parametrize("tie", [False, True])
def test_gradients_become_views_into_buckets_in_reverse_order(tie):
    model = _model(tie)
    optimizer = Adam(model)
    rng = np.random.default_rng(0)
    for g in model.gradients():
        g[...] = rng.standard_normal(g.shape)
    before = [g.copy() for g in model.gradients()]
    params = list(model.parameters())
    itemsize = 8
    cap = itemsize * max(p.size for p in params) + itemsize         # several buckets
    buckets = GradientBuckets(model, optimizer, bucket_bytes=cap)
    assert len(buckets.buckets) > 1
    assert buckets.nbytes == itemsize * sum(p.size for p in params)
    flat = np.concatenate(buckets.buckets)
    order = list(model.gradients())[::-1]                         # the last parameter first
    assert np.array_equal(flat, np.concatenate([g.ravel() for g in order]))
    for g, old in zip(model.gradients(), before):
        assert np.array_equal(g, old)
        assert any(np.shares_memory(g, b) for b in buckets.buckets)
    assert [id(g) for _, g in optimizer.pairs] == [id(g) for g in model.gradients()]
    if tie:
        assert model.decoder.grads["weight"] is model.embedding.grads["weight"]
    buckets.scale(0.5)
    for g, old in zip(model.gradients(), before):
        assert np.array_equal(g, 0.5 * old)
    with pytest.raises(ValueError, match="bucket_bytes"):
        GradientBuckets(model, bucket_bytes=0)


def test_a_process_takes_an_equal_share_of_the_rows():
    class Rank(World):
        def __init__(self, rank, size):
            self.rank, self.size = rank, size
    assert [Rank(r, 4).rows(8) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6),
                                                       slice(6, 8)]
    assert World().rows(5) == slice(0, 5)
    with pytest.raises(ValueError, match=r"multiple of 4\), got 6"):
        Rank(1, 4).rows(6)


def test_jumped_generators_stay_each_others_jumps_after_equal_draws():
    """Why rank 0's generator state alone resumes every rank's dropout masks."""
    rank0, rank3 = np.random.default_rng(5), np.random.default_rng(5)
    jump_generators([rank3], 3)
    assert rank3.random() != rank0.random()
    for shape in [(4, 3), (7,), (2, 2, 5)]:
        rank0.random(shape)
        rank3.random(shape)
    again = np.random.default_rng()
    again.bit_generator.state = rank0.bit_generator.state
    jump_generators([again], 3)
    assert np.array_equal(again.random(6), rank3.random(6))


def test_the_launcher_is_read_from_the_environment():
    assert distributed.launched_size({}) is None
    assert distributed.launched_size({"PMI_SIZE": "4", "PMI_RANK": "2"}) == 4
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "8"}) == 8
    assert distributed.launched_size({"PMIX_RANK": "0"}) == 0             # ask MPI
    assert distributed.launched_rank({"PMI_RANK": "3"}) == 3
    assert distributed.launched_rank({}) == 0


def test_one_process_runs_the_same_code():
    w = distributed.LOCAL
    a = np.arange(3.0)
    assert w.allreduce(a) is a and np.array_equal(a, [0, 1, 2])
    assert from_root(w, lambda: 7) == 7 and all_ok(w, lambda: 8) == 8
    assert w.allgather(1) == [1] and w.bcast("x") == "x"
    with pytest.raises(KeyError):
        from_root(w, lambda: {}["missing"])


def test_a_launch_without_mpi4py_or_without_srun_mpi_says_what_to_do(monkeypatch):
    monkeypatch.setattr(distributed, "_WORLD", [])
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mpi4py" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"PMI_SIZE=2.*mpi4py is not installed.*\[mpi\]"):
        distributed.world({"PMI_SIZE": "2", "PMI_RANK": "0"})
    with pytest.raises(RuntimeError, match="srun started 4 tasks.*--mpi=pmi2"):
        distributed.world({"SLURM_STEP_NUM_TASKS": "4"})
    assert distributed.world({"SLURM_STEP_NUM_TASKS": "1"}) is distributed.LOCAL
