"""benchmarks/bench_seq2seq.py: its textbook peer computes the book's model (its loss and
gradients equal PyTorch's on the same weights), and the script runs (its figures are not
checked: timing belongs in benchmarks/RESULTS.md)."""

import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "benchmarks")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)              # as when run as a script
    spec = importlib.util.spec_from_file_location("bench_seq2seq",
                                                  os.path.join(BENCH, "bench_seq2seq.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import bench_rnn
    monkeypatch.setattr(bench_rnn, "PAUSE_S", 0.0)
    return module


def _torch_from_textbook(torch, bench, peer, V, H, form):
    """The PyTorch model of ``form`` with the textbook peer's weights (its gate blocks
    f g i o and (in, out) layouts rearranged to PyTorch's i f g o, (out, in))."""
    model = bench.torch_model(torch, V, H, form).double()
    order = [2, 0, 1, 3]                           # PyTorch's i f g o among f g i o

    def gates(W):                                  # (in, 4H) -> (4H, in)
        return np.concatenate([W[:, k * H:(k + 1) * H] for k in order], axis=1).T

    def load(lstm, time_lstm):
        Wx, Wh, b = time_lstm.params
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(torch.tensor(gates(Wx)))
            lstm.weight_hh_l0.copy_(torch.tensor(gates(Wh)))
            lstm.bias_ih_l0.copy_(torch.tensor(gates(b[None])[:, 0]))
            lstm.bias_hh_l0.zero_()
    load(model.encoder, peer.enc_lstm)
    load(model.decoder, peer.dec_lstm)
    with torch.no_grad():
        model.src_embed.weight.copy_(torch.tensor(peer.enc_embed.params[0]))
        model.tgt_embed.weight.copy_(torch.tensor(peer.dec_embed.params[0]))
        model.out.weight.copy_(torch.tensor(peer.affine.params[0].T))
        model.out.bias.copy_(torch.tensor(peer.affine.params[1]))
    return model, gates


@pytest.mark.parametrize("kind,form", [("plain", "plain"), ("peeky", "peeky"),
                                       ("attention", "luong")])
def test_the_textbook_peer_computes_the_books_model(bench, kind, form):
    torch = pytest.importorskip("torch")
    V, D, H, N, S, T = 11, bench.EMBED, 6, 5, 7, 4
    rng = np.random.default_rng(0)
    peer = bench.TextbookSeq2Seq(V, D, H, kind, rng)
    xs, ts = rng.integers(0, V, size=(N, S)), rng.integers(0, V, size=(N, T + 1))
    loss = peer.forward(xs, ts)
    peer.backward()
    model, gates = _torch_from_textbook(torch, bench, peer, V, H, form)
    scores = model(torch.tensor(xs), torch.tensor(ts[:, :-1]))
    t_loss = torch.nn.functional.cross_entropy(scores.reshape(-1, V), torch.tensor(ts[:, 1:])
                                               .reshape(-1))
    t_loss.backward()
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-5)
    pairs = [(peer.enc_embed.grads[0], model.src_embed.weight.grad),
             (peer.dec_embed.grads[0], model.tgt_embed.weight.grad),
             (peer.affine.grads[0], model.out.weight.grad.T),
             (peer.affine.grads[1], model.out.bias.grad)]
    for time_lstm, lstm in ((peer.enc_lstm, model.encoder), (peer.dec_lstm, model.decoder)):
        dWx, dWh, db = time_lstm.grads
        pairs += [(gates(dWx), lstm.weight_ih_l0.grad), (gates(dWh), lstm.weight_hh_l0.grad),
                  (gates(db[None])[:, 0], lstm.bias_ih_l0.grad)]
    for mine, theirs in pairs:
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-3, atol=1e-6)
    generated = peer.generate(xs, 3, T)
    np.testing.assert_array_equal(generated, model.generate(torch.tensor(xs), 3, T).numpy())


def test_the_data_have_the_books_layout(bench):
    task = bench.addition_task(n=300, n_test=30)
    assert task.x_train.shape == (270, 7) and task.t_train.shape == (270, 5)
    assert (task.t_train[:, 0] == task.start).all()
    q, a = task.text(task.x_test[0]), task.text(task.t_test[0])
    left, right = q.strip().split("+")
    assert a == "_" + str(int(left) + int(right)).ljust(4)


@pytest.mark.parametrize("torch_peer", [False, True])
def test_bench_seq2seq_runs(bench, monkeypatch, capsys, torch_peer):
    if torch_peer:
        pytest.importorskip("torch")
    small = bench.addition_task(n=1000, n_test=100)
    monkeypatch.setitem(bench.TASKS, "addition", lambda: small)
    args = ["--tasks", "addition", "--variants", "plain,attention: Bahdanau (npnn's form)",
            "--repeat", "1", "--single", "2", "--decode-batch", "8"]
    assert bench.main(args + ([] if torch_peer else ["--no-torch"])) == 0
    out = capsys.readouterr().out
    assert "| addition | plain |" in out and "| addition | attention: Bahdanau" in out
    assert bench.main(["--tasks", "addition", "--variants", "reversed", "--accuracy", "1",
                       "--peer-accuracy", "--no-torch"]) == 0
    assert "| addition | reversed | 1 |" in capsys.readouterr().out


def test_bench_seq2seq_attention_table(bench, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "attention_split_table",
                        lambda repeat, f=bench.attention_split_table: f(repeat, 4, 5, 6, 3))
    monkeypatch.setattr(bench, "HERE", str(tmp_path))       # --write: RESULTS.md there
    assert bench.main(["--attention", "--repeat", "1", "--no-torch", "--write"]) == 0
    out = capsys.readouterr().out
    assert "| dot |" in out and "| additive |" in out
    written = (tmp_path / "RESULTS.md").read_text()
    assert "## The attention backward of a step-wise (Bahdanau) decoder" in written
    assert "`python benchmarks/bench_seq2seq.py --attention --repeat 1 --no-torch --write`" \
        in written and "| additive |" in written
