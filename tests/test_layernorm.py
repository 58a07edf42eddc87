"""The layer-normalised LSTM and GRU (``functional/layernorm_lstm.py``, ``layernorm_gru.py``):
their equations written with torch ops and autograd give the same outputs, states and
every gradient (float64), with recurrent dropout and zoneout too; two chunks equal one
sequence; and through the registry they run in every layer, cell layer, model and the
command line. (Finite differences: test_gradients.py, with the masks
test_regularisers.py; padding and masks: test_masks.py; checkpointed BPTT: test_bptt.py.)"""

import json

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import npnn
from npnn.backend import to_backend, to_numpy
from npnn.functional.registry import CELLS
from npnn.gradcheck import check_module
from npnn.gradcheck.cases import recurrent_case
from npnn.models import RNNLM, Seq2Seq, SequenceClassifier
from npnn.training.checkpoint import read_checkpoint
from npnn.training.trainer import Trainer

from _helpers import quiet, tiny_config
from conftest import assert_close

CELL_NAMES = ["layernorm_lstm", "layernorm_gru"]
dims = st.integers(1, 5)
TOL = 1e-10


def _torch_formulation(torch, cell, x, states, p, mask, recurrent_mask=None, zoneout=None):
    """The cell's equations (its module docstring) in torch ops, eps = 1e-5 as
    torch.nn.LayerNorm: -> out (T, N, H) and the final states. ``recurrent_mask`` (N, H)
    scales h_{t-1} where it enters the recurrent product, before its layer norm (18);
    ``zoneout`` (one per state: keep-masks (T, N, H) or an expectation p) mixes each
    carried state, c un-normalised, with its previous value (19)."""
    ln = torch.nn.functional.layer_norm
    T, H = x.shape[0], p["W_hh"].shape[1]
    G = 4 if cell == "layernorm_lstm" else 3
    zero = lambda k: torch.zeros(k, dtype=x.dtype)  # noqa: E731
    b_ih, b_hh = p.get("b_ih", zero(G * H)), p.get("b_hh", zero(G * H))
    h, c = states[0], states[1] if cell == "layernorm_lstm" else None
    outs = []
    zone = lambda d, t: d if isinstance(d, float) else d[t]  # noqa: E731
    for t in range(T):
        h_in = h if recurrent_mask is None else recurrent_mask * h
        gi = ln(x[t] @ p["W_ih"].T, (G * H,), p["gamma_ih"], p.get("beta_ih"), 1e-5) + b_ih
        gh = ln(h_in @ p["W_hh"].T, (G * H,), p["gamma_hh"], p.get("beta_hh"), 1e-5) + b_hh
        if cell == "layernorm_lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c_new = f * c + i * g                        # carried un-normalised
            h_new = o * torch.tanh(ln(c_new, (H,), p["gamma_c"], p.get("beta_c"), 1e-5))
        else:
            (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, dim=1), gh.chunk(3, dim=1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)                # h_n normalised before r multiplies it
            h_new = (1 - z) * n + z * h                  # h_{t-1} unmasked here
        if zoneout is not None:
            d = zone(zoneout[0], t)
            h_new = d * h + (1 - d) * h_new
            if cell == "layernorm_lstm":
                d = zone(zoneout[1], t)
                c_new = d * c + (1 - d) * c_new
        if mask is None:
            outs.append(h_new)
        else:
            m = mask[t][:, None]
            outs.append(torch.where(m, h_new, torch.zeros_like(h_new)))
            h_new = torch.where(m, h_new, h)
            if cell == "layernorm_lstm":
                c_new = torch.where(m, c_new, c)
        h = h_new
        if cell == "layernorm_lstm":
            c = c_new
    return torch.stack(outs), (h, c) if cell == "layernorm_lstm" else (h,)


@pytest.mark.parametrize("cell", CELL_NAMES)
@given(T=dims, N=dims, D=dims, H=dims, bias=st.booleans(), masked=st.booleans(),
       regularised=st.sampled_from([None, "train", "eval"]), seed=st.integers(0, 2**32 - 1))
@example(T=1, N=1, D=1, H=1, bias=True, masked=False, regularised=None, seed=0)
@example(T=4, N=3, D=2, H=3, bias=False, masked=True, regularised=None, seed=1)
@example(T=4, N=3, D=2, H=3, bias=True, masked=True, regularised="train", seed=2)
@example(T=3, N=2, D=2, H=2, bias=True, masked=False, regularised="eval", seed=3)
def test_the_equations_in_torch_give_the_same_numbers(backend, cell, T, N, D, H, bias, masked,
                                                     regularised, seed):
    """With ``regularised``, recurrent dropout and zoneout: fixed masks ('train', the mask
    m (N, H) and 0/1 keep-masks per state) or zoneout's eval form ('eval', p = 0.3)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    _, inputs = recurrent_case(rng, cell, T, N, D, H, bias, masked)
    spec = CELLS[cell]
    names = [s + "0" for s in spec.states]
    params = {k: v for k, v in inputs.items() if k != "x" and k not in names}
    lengths = rng.integers(1, T + 1, size=N)
    mask = np.arange(T)[:, None] < lengths[None, :] if masked else None
    dout = rng.standard_normal((T, N, H))
    dfinals = [rng.standard_normal((N, H)) for _ in spec.states]
    rm, zone = None, None
    if regularised == "train":
        rm = (rng.random((N, H)) >= 0.4) / 0.6
        zone = tuple((rng.random((T, N, H)) < 0.3).astype(np.float64) for _ in names)
    elif regularised == "eval":
        zone = (0.3,) * len(names)

    dev = lambda a: to_backend(a, backend)  # noqa: E731
    options = {} if regularised is None else {
        "recurrent_mask": None if rm is None else dev(rm),
        "zoneout": tuple(d if isinstance(d, float) else dev(d) for d in zone)}
    out, finals, cache = spec.run(dev(inputs["x"]), [dev(inputs[n]) for n in names],
                                  {k: dev(v) for k, v in params.items()},
                                  None if mask is None else dev(mask), **options)
    dx, dinits, grads = spec.run_backward(dev(dout), [dev(d) for d in dfinals], cache)

    leaf = lambda a: torch.tensor(a, requires_grad=True)  # noqa: E731
    tx, tp = leaf(inputs["x"]), {k: leaf(v) for k, v in params.items()}
    tstates = [leaf(inputs[n]) for n in names]
    tout, tfinals = _torch_formulation(
        torch, cell, tx, tstates, tp, None if mask is None else torch.tensor(mask),
        None if rm is None else torch.tensor(rm),
        None if zone is None else tuple(d if isinstance(d, float) else torch.tensor(d)
                                        for d in zone))
    loss = (tout * torch.tensor(dout)).sum() + sum(
        (f * torch.tensor(d)).sum() for f, d in zip(tfinals, dfinals))
    loss.backward()

    assert_close(out, tout.detach().numpy(), TOL, "out")
    for k, (a, b) in enumerate(zip(finals, tfinals)):
        assert_close(a, b.detach().numpy(), TOL, f"final state {k}")
    assert_close(dx, tx.grad.numpy(), TOL, "dx")
    for k, (a, b) in enumerate(zip(dinits, tstates)):
        assert_close(a, b.grad.numpy(), TOL, f"d initial state {k}")
    assert set(grads) == set(params)
    for k, g in grads.items():
        assert_close(g, tp[k].grad.numpy(), TOL, k)


@pytest.mark.parametrize("cell", CELL_NAMES)
@given(T=st.integers(2, 6), N=dims, D=dims, H=dims, data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_two_chunks_equal_one_sequence(cell, T, N, D, H, data, seed):
    """The state carried from chunk to chunk (c un-normalised) is all a chunk needs."""
    a = data.draw(st.integers(1, T - 1), label="a")
    rng = np.random.default_rng(seed)
    _, inputs = recurrent_case(rng, cell, T, N, D, H)
    spec = CELLS[cell]
    names = [s + "0" for s in spec.states]
    params = {k: v for k, v in inputs.items() if k != "x" and k not in names}
    x, states = inputs["x"], [inputs[n] for n in names]
    dout, dfinals = rng.standard_normal((T, N, H)), [rng.standard_normal((N, H)) for _ in names]
    out, finals, cache = spec.run(x, states, params)
    dx, dinits, grads = spec.run_backward(dout, dfinals, cache)
    out1, mid, cache1 = spec.run(x[:a], states, params)
    out2, finals2, cache2 = spec.run(x[a:], mid, params)
    dx2, dmid, grads2 = spec.run_backward(dout[a:], dfinals, cache2)
    dx1, dinits1, grads1 = spec.run_backward(dout[:a], dmid, cache1)
    np.testing.assert_allclose(np.concatenate([out1, out2]), out, rtol=0, atol=1e-13)
    for s, s2 in zip(finals, finals2):
        np.testing.assert_allclose(s2, s, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([dx1, dx2]), dx, rtol=0, atol=1e-12)
    for d, d1 in zip(dinits, dinits1):
        np.testing.assert_allclose(d1, d, rtol=0, atol=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads1[k] + grads2[k], grads[k], rtol=0, atol=1e-12)


def test_the_carried_cell_state_is_not_normalised():
    """Ba et al.'s variant: c_t = f c_{t-1} + i g is carried; LN(c_t) only reaches h_t.
    With a gain of 2 on LN(c), the carried c_n is not LN(c_n)'s, and h_n = o tanh(LN(c_n))."""
    rng = np.random.default_rng(0)
    layer = npnn.LayerNormLSTM(3, 5, dtype="float64", seed=0)
    layer.params["ln_c_weight_l0"][...] = 2.0
    x = rng.standard_normal((4, 2, 3))
    _, (h, c) = layer(x)
    c_n = c[0]
    c_hat = (c_n - c_n.mean(1, keepdims=True)) / np.sqrt(c_n.var(1, keepdims=True) + 1e-5)
    assert not np.allclose(c_n, 2 * c_hat)
    out_gate = layer._caches[-1].caches[0].o[-1]
    np.testing.assert_allclose(h[0], out_gate * np.tanh(2 * c_hat), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls, cell_cls", [(npnn.LayerNormLSTM, npnn.LayerNormLSTMCell),
                                           (npnn.LayerNormGRU, npnn.LayerNormGRUCell)])
def test_they_run_in_every_layer_and_model(cls, cell_cls):
    rng = np.random.default_rng(0)
    name = cls.cell
    assert getattr(npnn, cls.__name__) is cls and getattr(npnn, cell_cls.__name__) is cell_cls
    assert npnn.layers.recurrent.layer_class(name) is cls
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    x = rng.standard_normal((5, 2, 3))
    out, _ = layer(x, lengths=[5, 3])
    assert out.shape == (5, 2, 8) and np.all(out[3:, 1] == 0)
    layer.clear_caches()
    check_module(cls(2, 2, num_layers=2, bidirectional=True, dtype="float64", seed=1),
                 (rng.standard_normal((4, 2, 2)), None), {"lengths": [4, 2]},
                 raise_on_failure=True)
    # bounded-memory BPTT through the layer: the gradients of full BPTT
    full, ckpt = (cls(3, 4, dtype="float64", seed=2, bptt_memory=m) for m in (None, 2))
    x = rng.standard_normal((7, 2, 3))
    d = rng.standard_normal((7, 2, 4))
    for layer in (full, ckpt):
        layer(x)
        layer.backward(d)
    for k in full.grads:
        np.testing.assert_allclose(ckpt.grads[k], full.grads[k], rtol=1e-12, atol=1e-14)
    # the cell layer steps what the layer runs
    step = cell_cls(3, 4, dtype="float64", seed=0)
    seq = cls(3, 4, dtype="float64", seed=3)
    step.load_state_dict({k[:-3]: v for k, v in seq.state_dict().items()})
    out, _ = seq(x[:3])
    state = None
    for t in range(3):
        state = step(x[t], state)
        h = state[0] if isinstance(state, tuple) else state
        np.testing.assert_allclose(h, out[t], rtol=1e-12, atol=1e-14)
    check_module(cell_cls(2, 3, dtype="float64", seed=1), (rng.standard_normal((2, 2)), None),
                 raise_on_failure=True)
    # the models
    lm = RNNLM(7, 8, cell=name, embedding_dim=4, num_layers=2, seed=0, forget_bias=None,
               init="orthogonal")
    logits, _ = lm(rng.integers(0, 7, size=(2, 5)))
    assert logits.shape == (2, 5, 7) and isinstance(lm.rnn, cls)
    assert len(lm.generate([1, 2], 5, strategy="beam")) == 7
    SequenceClassifier(7, 3, cell=name, seed=0)(rng.integers(1, 7, size=(2, 4)), [4, 2])
    s2s = Seq2Seq(7, 7, 4, 6, cell=name, bidirectional=True, seed=0)
    assert len(s2s.greedy_decode(rng.integers(3, 7, size=(2, 4)), [4, 2], max_len=3)) == 2


def test_parameters_names_and_initial_values():
    layer = npnn.LayerNormLSTM(3, 4, bidirectional=True, seed=0)
    names = {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_ih_weight", "ln_ih_bias",
             "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias"}
    assert set(layer.params) == {n + s for n in names for s in ("_l0", "_l0_reverse")}
    assert layer.params["ln_ih_weight_l0"].shape == (16,)
    assert layer.params["ln_c_bias_l0"].shape == (4,)
    for k, v in layer.params.items():
        if k.startswith("ln_"):
            assert np.all(v == (1 if "_weight" in k else 0)), k
    gru = npnn.LayerNormGRU(3, 4, bias=False, seed=0)
    assert set(gru.params) == {"weight_ih_l0", "weight_hh_l0", "ln_ih_weight_l0",
                               "ln_hh_weight_l0"}
    # an nn.LSTM's (or npnn.LSTM's) weights move in; the layer norms keep theirs
    lstm = npnn.LSTM(3, 4, seed=5)
    missing, unexpected = layer.load_state_dict(lstm.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("ln_") or k.endswith("_reverse") for k in missing)
    np.testing.assert_array_equal(layer.params["weight_hh_l0"], lstm.params["weight_hh_l0"])


def test_bad_parameters_are_named():
    from npnn.functional.layernorm_lstm import layernorm_lstm_forward
    from npnn.functional.layernorm_gru import layernorm_gru_forward
    rng = np.random.default_rng(0)
    x, W_ih, W_hh = rng.standard_normal((2, 1, 3)), np.ones((8, 3)), np.ones((8, 2))
    g8, g2 = np.ones(8), np.ones(2)
    with pytest.raises(ValueError, match=r"expected gamma_c of shape \(H\) = \(2\)|gamma_c of "
                                         r"shape \(2,\)"):
        layernorm_lstm_forward(x, None, None, W_ih, W_hh, g8, g8, g8)
    with pytest.raises(ValueError, match="beta_hh of shape"):
        layernorm_lstm_forward(x, None, None, W_ih, W_hh, g8, g8, g2, beta_hh=g2)
    with pytest.raises(TypeError, match="gamma_ih of dtype float64"):
        layernorm_gru_forward(x, None, np.ones((6, 3)), np.ones((6, 2)), np.ones(6, "float32"),
                              np.ones(6))


def test_the_command_line_trains_resumes_and_carries_the_options(text_file, tmp_path):
    """npnn train --cell layernorm_lstm --forget-bias 1 --init orthogonal: the checkpoint
    keeps both options, and resuming between epochs is bit-identical to running on."""
    from _helpers import main
    kw = dict(cell="layernorm_lstm", forget_bias=1.0, init="orthogonal")
    straight = Trainer(tiny_config(text_file, epochs=2, **kw), tmp_path / "a", log=quiet,
                       progress=False)
    straight.fit()
    first = Trainer(tiny_config(text_file, epochs=1, **kw), tmp_path / "b", log=quiet,
                    progress=False)
    first.fit()
    meta = read_checkpoint(tmp_path / "b").meta["model"]
    assert (meta["cell"], meta["forget_bias"], meta["init"]) == ("layernorm_lstm", 1.0,
                                                                 "orthogonal")
    resumed = Trainer.resume(tmp_path / "b", log=quiet, progress=False, epochs=2)
    assert resumed.model.rnn.forget_bias == 1.0 and resumed.model.rnn.init == "orthogonal"
    resumed.fit()
    for k, v in straight.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], v)
    json.dumps(meta)


@pytest.mark.parametrize("args, words", [
    (["--cell", "layernorm_gru", "--forget-bias", "1"], ["--forget-bias", "no forget gate"]),
    (["--init", "glorot"], ["--init", "invalid choice"]),
])
def test_the_command_line_refuses_what_does_not_fit(capsys, text_file, tmp_path, args, words):
    from _helpers import TINY, main, one_line_error
    try:
        rc, _, err = main(capsys, "train", "--text", text_file, "--epochs", 1, "--out",
                          tmp_path / "r", *TINY, *args)
    except SystemExit as e:                     # argparse's own refusals exit
        rc, err = e.code, capsys.readouterr().err
    assert rc == 2
    one_line_error(err, *words)
