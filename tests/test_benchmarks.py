"""The benchmark scripts run (their figures are not checked: timing belongs in
benchmarks/RESULTS.md, not in assertions)."""

import functools
import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "benchmarks")


def _load(name, monkeypatch):
    monkeypatch.syspath_prepend(BENCH)              # as when run as a script
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench_rnn(monkeypatch):
    module = _load("bench_rnn", monkeypatch)
    monkeypatch.setattr(module, "PAUSE_S", 0.0)
    return module


def test_bench_rnn_runs_without_pytorch(bench_rnn, capsys):
    assert bench_rnn.main(["--sizes", "S", "--cells", "gru", "--repeat", "1", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "| cell | size | mode | npnn ms | npnn/PyTorch |" in out
    assert "| PyTorch ms |" in out and "| reference ms |" in out
    assert "| gru | S | forward |" in out and "| gru | S | forward+backward |" in out


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_blas_floor_runs_the_kernels_products(bench_rnn, cell):
    case = bench_rnn.Case(cell, "S", "forward+backward", "float32", np, None, "cpu")
    case.time_blas()                                # out= shapes must fit the cell's
    case.time_blas()                                # and its buffers be reusable


def test_median_ms_times_every_function_in_blocks(bench_rnn):
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = bench_rnn.median_ms(fns, repeat=4, budget_s=0.0)
    assert len(times) == 2 and all(t >= 0 for t in times)
    # warm-up a b, then blocks a b | b a, each block after one untimed call
    assert "".join(calls) == "ab" + "aaa" + "bbb" + "bbb" + "aaa"


def test_write_section_replaces_its_block_and_appends_new_ones(bench_rnn, tmp_path):
    path = str(tmp_path / "RESULTS.md")
    bench_rnn.write_section(path, "k1", "one\n")
    bench_rnn.write_section(path, "k2", "two\n")
    bench_rnn.write_section(path, "k1", "uno\n")
    text = open(path).read()
    assert "uno" in text and "one" not in text and "two" in text
    assert text.index("uno") < text.index("two")


def test_bench_lm_runs(monkeypatch, capsys):
    module = _load("bench_lm", monkeypatch)
    monkeypatch.setattr(module, "PAUSE_S", 0.0)
    assert module.main(["--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "| d2l GRU" in out and "| default LSTM" in out


@pytest.mark.parametrize("torch_peer", [False, True])
def test_bench_steps_runs(monkeypatch, capsys, torch_peer):
    if torch_peer:
        pytest.importorskip("torch")
    module = _load("bench_steps", monkeypatch)
    median_ms = module.median_ms
    monkeypatch.setattr(module, "median_ms",
                        lambda fns, repeat, budget_s: median_ms(fns, 1, budget_s=0.0))
    monkeypatch.setattr(module, "STEPS", 2)
    monkeypatch.setattr(module, "SIZES", ((1, 8), (3, 4)))
    monkeypatch.setattr(module, "lm_case", functools.partial(module.lm_case, n=5))
    monkeypatch.setattr(module, "seq2seq_case", functools.partial(module.seq2seq_case, S=4,
                                                                  max_len=3))
    import bench_rnn
    monkeypatch.setattr(bench_rnn, "PAUSE_S", 0.0)
    assert module.main(["--repeat", "1"] + ([] if torch_peer else ["--no-torch"])) == 0
    out = capsys.readouterr().out
    assert "| lstm | 1, 8 |" in out and "| gru | 3, 4 |" in out
    assert "RNNLM.generate" in out and "Seq2Seq.greedy_decode, batch 64" in out
    if torch_peer:      # the PyTorch peers decode exactly as npnn does
        rows = [r for r in out.splitlines() if "generate" in r or "greedy_decode" in r]
        assert rows and all(r.endswith("| yes |") for r in rows)


def test_lm_timemachine_runs_on_the_shipped_text(monkeypatch, tmp_path, capsys):
    """Issue 21: the d2l reproduction reads The Time Machine shipped with npnn; it used to
    print 'skipped' and do nothing where ../shared/data held no copy."""
    from npnn.training.data import TIME_MACHINE
    lm = _load("lm_timemachine", monkeypatch)
    assert lm.DEFAULT_TEXT == TIME_MACHINE
    monkeypatch.setitem(lm.MODELS, "rnn", ("rnn", 16) + lm.MODELS["rnn"][2:])   # (H 512)
    results = tmp_path / "RESULTS.md"
    assert lm.main(["--models", "rnn", "--epochs", "1", "--out", str(tmp_path / "runs"),
                    "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out and "vocabulary 28, 10,000 training" in out
    assert "| rnn (H 16, 1 layer) | 1 |" in results.read_text()


def test_bench_memory_measures_a_case_in_a_fresh_process(monkeypatch):
    bench = _load("bench_memory", monkeypatch)
    full, bounded = bench.measure(60, None), bench.measure(60, 3)
    assert (full["steps"], full["predicted"]) == (60, 60)
    assert bounded["steps"] == bounded["predicted"] > 2 * 60
    for r in (full, bounded):
        assert r["seconds"] > 0 and r["rss"] > 0 and len(r["times"]) == 1
    # tracemalloc counts bytes: 3 slots keep less than 60 steps' caches
    assert bounded["tracemalloc"] < full["tracemalloc"]


def test_bench_memory_records_tables_and_extrapolates(monkeypatch, tmp_path, capsys):
    bench = _load("bench_memory", monkeypatch)
    # each case in this process (the fresh process is the test above)
    monkeypatch.setattr(bench, "measure", bench.one)
    monkeypatch.setattr(bench, "FULL_MAX_T", 30)
    for name, size in (("N", 2), ("D", 3), ("H", 4)):
        monkeypatch.setattr(bench, name, size)
    results = str(tmp_path / "memory.json")
    assert bench.main(["--T", "30", "--budgets", "3", "--repeat", "2", "--json", results]) == 0
    sqrt = bench.bptt_policy.sqrt_policy(30).slots
    cases = {(r["T"], r["memory"]): r for r in bench.load(results)["records"]}
    assert set(cases) == {(30, None), (30, "sqrt"), (30, sqrt), (30, 3)}
    assert all(len(r["times"]) == 2 for r in cases.values())     # timed, interleaved
    # a later run adds its cases and replaces those it measures again; beyond FULL_MAX_T
    # there is no full BPTT run: the table extrapolates it, and says so
    assert bench.main(["--T", "40", "--budgets", "3", "--repeat", "1", "--json", results]) == 0
    assert bench.main(["--T", "30", "--budgets", "3", "--repeat", "1", "--json", results]) == 0
    records = bench.load(results)["records"]
    assert sorted((r["T"], str(r["memory"])) for r in records) == sorted(
        [(30, "None"), (30, "sqrt"), (30, str(sqrt)), (30, "3"), (40, "sqrt"), (40, "3")])
    table = bench.table(records)
    assert "| 30 | full BPTT | 30 |" in table and "| 40 | DP | 3 |" in table
    assert "| 40 | full BPTT (extrapolated from T = 30) | 40 |" in table


def test_bench_memory_plot(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    bench = _load("bench_memory", monkeypatch)
    monkeypatch.setattr(bench, "measure", bench.one)
    for name, size in (("N", 2), ("D", 3), ("H", 4)):
        monkeypatch.setattr(bench, name, size)
    results = str(tmp_path / "memory.json")
    assert bench.main(["--T", "20", "--budgets", "2", "--repeat", "1", "--json", results]) == 0
    png = tmp_path / "curves.png"
    bench.plot(bench.load(results)["records"], str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_bptt_figure_draws_what_the_checkpointed_op_runs(monkeypatch):
    """docs/figures/bptt_schedule.py records the calls of bptt.py's own checkpointed op:
    the worked example of docs/derivations.md, T = 6 steps in m = 3 slots."""
    path = os.path.join(HERE, "..", "docs", "figures", "bptt_schedule.py")
    if not os.path.exists(path):
        pytest.skip("docs/ is not beside these tests")
    spec = importlib.util.spec_from_file_location("bptt_schedule", path)
    figure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figure)
    calls, first_pass, stored, plan = figure.schedule(6, 3)
    # the first pass: steps 1-2 and 3-4 advanced (caches dropped), 5 advanced, 6 kept;
    # then 6 backpropagated, 5 recomputed from s_4, 3-4 from s_2, 1-2 from s_0
    assert [tuple(c) for c in calls] == [
        ("run", 0, 2, False), ("run", 2, 4, False), ("run", 4, 5, False), ("run", 5, 6, True),
        ("back", 5, 6, False), ("run", 4, 5, True), ("back", 4, 5, False),
        ("run", 2, 4, True), ("back", 2, 4, False), ("run", 0, 2, True), ("back", 0, 2, False)]
    assert first_pass == 4 and stored == [2, 4]
    assert sum(b - a for kind, a, b, _ in calls if kind == "run") == 11 == plan.predicted_steps()


def test_awd_lm_runs_reads_back_and_writes_its_section(monkeypatch, capsys, tmp_path):
    """benchmarks/awd_lm.py on a tiny model: every configuration trains, a second call
    reads the runs back instead of training again, and --write fills its section."""
    module = _load("awd_lm", monkeypatch)
    monkeypatch.setitem(module.BASE, "hidden", 8)
    monkeypatch.setitem(module.BASE, "embedding", 4)
    monkeypatch.setitem(module.BASE, "batch", 4)
    monkeypatch.setitem(module.BASE, "steps", 5)
    monkeypatch.setitem(module.BASE, "min_freq", 1)
    text = tmp_path / "tm.txt"
    text.write_text("The Time Traveller (for so it will be convenient to speak of him) was "
                    "expounding a recondite matter to us.\n" * 30, encoding="utf-8")
    results = tmp_path / "RESULTS.md"
    args = ["--text", str(text), "--seeds", "0,1", "--epochs", "2", "--out",
            str(tmp_path / "runs"), "--results", str(results), "--write"]
    assert module.main(args) == 0
    out = capsys.readouterr().out
    for name in module.CONFIGS:
        assert f"| {name.replace('_', ' ')} |" in out
    assert "the target (lower by more than the seed spread) is" in out
    section = results.read_text()
    assert "<!-- awd:begin -->" in section and "npnn train --text" in section
    from npnn.training import trainer

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(trainer, "Trainer", no_training)    # the runs are read back
    assert module.main(args) == 0
    again = capsys.readouterr().out
    table = out[out.index("## AWD-style"):out.rindex("s in all)")]
    assert again.startswith("## AWD-style") and table.rsplit("(", 1)[0] in again


def test_awd_lm_skips_cleanly_without_the_text(monkeypatch, capsys, tmp_path):
    module = _load("awd_lm", monkeypatch)
    assert module.main(["--text", str(tmp_path / "missing.txt")]) == 0
    assert capsys.readouterr().out.startswith("skipped: The Time Machine not found")


def test_bench_layout_products_agree_in_both_layouts(monkeypatch):
    """The two layouts' products are the same numbers, transposed (what bench_layout
    times is the same work), and the script runs."""
    bench = _load("bench_layout", monkeypatch)
    for N, H, G in ((1, 3, 4), (5, 2, 3), (4, 6, 1)):
        fns, (z, zT, dh, dhT) = bench.products(N, H, G, dtype="float64")
        for fn in fns:
            fn()
        np.testing.assert_allclose(z, zT.T, rtol=1e-12)
        np.testing.assert_allclose(dh, dhT.T, rtol=1e-12)
    monkeypatch.setattr(bench, "SHAPES", [("tiny", 2, 3, 4)])
    assert bench.main(["--repeat", "2", "--no-torch"]) == 0
