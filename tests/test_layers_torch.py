"""PyTorch parity of the layers: same weights, same outputs, states and every
gradient (float64, max abs diff < 1e-10), over Hypothesis-drawn configurations."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import npnn
from npnn.backend import to_backend, to_numpy

from conftest import assert_close

torch = pytest.importorskip("torch")
from torch.func import functional_call  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

TOL = 1e-10
NPNN = {"rnn": npnn.RNN, "lstm": npnn.LSTM, "gru": npnn.GRU}
TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
small = st.integers(1, 4)


def _kwargs(cell, nonlinearity, P=0):
    """The cell's options for both libraries: nonlinearity (RNN), proj_size (LSTM)."""
    return {"nonlinearity": nonlinearity} if cell == "rnn" else {"proj_size": P} if P else {}


def _torch_run(mod, params, x, hx, lengths, batch_first, T):
    if lengths is None:
        return functional_call(mod, params, (x, hx))
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                  enforce_sorted=False)
    out, hn = functional_call(mod, params, (packed, hx))
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return out, hn


def _torch_reference(cell, cfg, leaves, x, hx, lengths, drops, T):
    """PyTorch's module itself without dropout; with dropout, the same stack built from
    single-layer torch modules with npnn's masks applied between layers."""
    L, bidir, bias, bf = cfg["num_layers"], cfg["bidirectional"], cfg["bias"], cfg["batch_first"]
    options = _kwargs(cell, cfg["nonlinearity"], cfg.get("P", 0))
    if drops is None:
        mod = TORCH[cell](cfg["D"], cfg["H"], L, bias=bias, batch_first=bf, bidirectional=bidir,
                          dtype=torch.float64, **options)
        return _torch_run(mod, leaves, x, hx, lengths, bf, T)
    dirs = 2 if bidir else 1
    inp, finals = x, []
    for layer in range(L):
        d_in = cfg["D"] if layer == 0 else dirs * (cfg.get("P", 0) or cfg["H"])
        mod = TORCH[cell](d_in, cfg["H"], 1, bias=bias, batch_first=bf, bidirectional=bidir,
                          dtype=torch.float64, **options)
        params = {k: leaves[k.replace("_l0", f"_l{layer}")] for k in mod.state_dict()}
        sl = slice(layer * dirs, (layer + 1) * dirs)
        h = None if hx is None else (tuple(s[sl] for s in hx) if cell == "lstm" else hx[sl])
        out, hn = _torch_run(mod, params, inp, h, lengths, bf, T)
        finals.append(hn)
        if layer < L - 1:
            m = drops[layer]                     # (T, N, dirs*H_out), time-major
            m = m[:, 0] if x.dim() == 2 else (m.transpose(1, 0, 2) if bf else m)
            inp = out * torch.tensor(m)
        else:
            inp = out
    if cell == "lstm":
        return inp, tuple(torch.cat([f[k] for f in finals]) for k in range(2))
    return inp, torch.cat(finals)


@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), num_layers=st.integers(1, 3),
       bidirectional=st.booleans(), bias=st.booleans(), batch_first=st.booleans(),
       nonlinearity=st.sampled_from(["tanh", "relu"]), unbatched=st.booleans(),
       given_hx=st.booleans(), use_lengths=st.booleans(),
       dropout=st.sampled_from([0.0, 0.0, 0.4]), T=small, N=small, D=small, H=small,
       seed=st.integers(0, 2**32 - 1))
@example(cell="lstm", num_layers=2, bidirectional=True, bias=True, batch_first=True,
         nonlinearity="tanh", unbatched=False, given_hx=True, use_lengths=True, dropout=0.4,
         T=4, N=3, D=2, H=2, seed=0)
def test_layer_matches_torch(backend, cell, num_layers, bidirectional, bias, batch_first,
                             nonlinearity, unbatched, given_hx, use_lengths, dropout,
                             T, N, D, H, seed):
    _compare_with_torch(backend, cell, num_layers, bidirectional, bias, batch_first,
                        nonlinearity, unbatched, given_hx, use_lengths, dropout, T, N, D, H, 0,
                        seed)


@given(num_layers=st.integers(1, 3), bidirectional=st.booleans(), bias=st.booleans(),
       batch_first=st.booleans(), unbatched=st.booleans(), given_hx=st.booleans(),
       use_lengths=st.booleans(), dropout=st.sampled_from([0.0, 0.0, 0.4]), T=small, N=small,
       D=small, P=st.integers(1, 3), more=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@example(num_layers=2, bidirectional=True, bias=True, batch_first=True, unbatched=False,
         given_hx=True, use_lengths=True, dropout=0.0, T=4, N=3, D=2, P=1, more=1, seed=0)
def test_projected_lstm_matches_torch(backend, num_layers, bidirectional, bias, batch_first,
                                      unbatched, given_hx, use_lengths, dropout, T, N, D, P,
                                      more, seed):
    """``npnn.LSTM(proj_size=P)`` against ``torch.nn.LSTM(proj_size=P)``, H = P + more:
    out (T, N, dirs*P), h_n (L*dirs, N, P), c_n (L*dirs, N, H) and every gradient."""
    _compare_with_torch(backend, "lstm", num_layers, bidirectional, bias, batch_first, "tanh",
                        unbatched, given_hx, use_lengths, dropout, T, N, D, P + more, P, seed)


def _compare_with_torch(backend, cell, num_layers, bidirectional, bias, batch_first,
                        nonlinearity, unbatched, given_hx, use_lengths, dropout, T, N, D, H, P,
                        seed):
    rng = np.random.default_rng(seed)
    cfg = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias,
               batch_first=batch_first, nonlinearity=nonlinearity, D=D, H=H, P=P)
    layer = NPNN[cell](D, H, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
                       bidirectional=bidirectional, dtype="float64", seed=seed,
                       **_kwargs(cell, nonlinearity, P)).to(backend)
    dirs = 2 if bidirectional else 1
    LD = num_layers * dirs
    x = rng.standard_normal((T, D) if unbatched else ((N, T, D) if batch_first else (T, N, D)))
    n_states = 2 if cell == "lstm" else 1
    sizes = [P or H, H][:n_states]                       # h of size P with a projection
    sshapes = [(LD, S) if unbatched else (LD, N, S) for S in sizes]
    states = [rng.standard_normal(sshape) if given_hx else np.zeros(sshape)
              for sshape in sshapes]
    lengths = None
    if use_lengths and not unbatched:
        lengths = rng.integers(1, T + 1, size=N)
    dev = lambda a: to_backend(a, backend)  # noqa: E731

    hx = None if not given_hx else (tuple(map(dev, states)) if cell == "lstm" else dev(states[0]))
    out, hn = layer(dev(x), hx, lengths=lengths)
    drops = [to_numpy(d) if d is not None else None for d in layer._caches[-1].drops]
    d_out = rng.standard_normal(out.shape)
    d_states = [rng.standard_normal(sshape) for sshape in sshapes]
    dx, dhx = layer.backward(dev(d_out), tuple(map(dev, d_states)) if cell == "lstm"
                             else dev(d_states[0]))

    leaves = {k: torch.tensor(to_numpy(v), requires_grad=True) for k, v in layer.params.items()}
    tx = torch.tensor(x, requires_grad=True)
    tstates = [torch.tensor(s, requires_grad=True) for s in states]
    thx = tuple(tstates) if cell == "lstm" else tstates[0]
    tout, thn = _torch_reference(cell, cfg, leaves, tx, thx, lengths,
                                 drops if dropout > 0 and num_layers > 1 else None, T)
    thn = list(thn) if cell == "lstm" else [thn]
    loss = (tout * torch.tensor(d_out)).sum() + sum(
        (h * torch.tensor(d)).sum() for h, d in zip(thn, d_states))
    loss.backward()

    hn = list(hn) if cell == "lstm" else [hn]
    dhx = list(dhx) if cell == "lstm" else [dhx]
    assert_close(out, tout.detach().numpy(), TOL, "out")
    for a, b in zip(hn, thn):
        assert_close(a, b.detach().numpy(), TOL, "h_n")
    assert_close(dx, tx.grad.numpy(), TOL, "dx")
    for a, b in zip(dhx, tstates):
        assert_close(a, b.grad.numpy(), TOL, "dhx")
    for k, leaf in leaves.items():
        expected = leaf.grad.numpy() if leaf.grad is not None else np.zeros(leaf.shape)
        assert_close(layer.grads[k], expected, TOL, k)


@pytest.mark.parametrize("cell, options", [("rnn", {}), ("lstm", {}), ("gru", {}),
                                           ("lstm", {"proj_size": 3}), ("lstm", {"proj_size": 1})])
def test_weights_round_trip_bit_exactly(cell, options):
    layer = NPNN[cell](5, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1, **options)
    tmod = TORCH[cell](5, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **options)
    assert list(layer.state_dict()) == list(tmod.state_dict())   # weight_hr_l0(_reverse) too
    tmod.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    back = NPNN[cell](5, 4, num_layers=2, bidirectional=True, dtype="float64", seed=2, **options)
    back.load_state_dict(tmod.state_dict())            # torch tensors accepted as they are
    for k, v in layer.state_dict().items():
        assert np.array_equal(back.params[k], v), k
    # float32, the default: PyTorch's float32 weights come over bit for bit too
    t32 = TORCH[cell](5, 4, **options)
    n32 = NPNN[cell](5, 4, **options)
    n32.load_state_dict(t32.state_dict())
    for k, v in t32.state_dict().items():
        assert np.array_equal(n32.params[k], v.numpy()), k


@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), N=small, D=small, H=small,
       bias=st.booleans(), unbatched=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_cells_match_torch(backend, cell, N, D, H, bias, unbatched, seed):
    rng = np.random.default_rng(seed)
    ours = {"rnn": npnn.RNNCell, "lstm": npnn.LSTMCell, "gru": npnn.GRUCell}[cell](
        D, H, bias=bias, dtype="float64", seed=seed).to(backend)
    theirs = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell](
        D, H, bias=bias, dtype=torch.float64)
    theirs.load_state_dict({k: torch.tensor(to_numpy(v)) for k, v in ours.state_dict().items()})
    shape_x, shape_h = ((D,), (H,)) if unbatched else ((N, D), (N, H))
    x = rng.standard_normal(shape_x)
    hs = [rng.standard_normal(shape_h) for _ in range(2 if cell == "lstm" else 1)]
    ds = [rng.standard_normal(shape_h) for _ in hs]
    dev = lambda a: to_backend(a, backend)  # noqa: E731
    tx = torch.tensor(x, requires_grad=True)
    ths = [torch.tensor(h, requires_grad=True) for h in hs]
    if cell == "lstm":
        h1, c1 = ours(dev(x), tuple(map(dev, hs)))
        dx, (dh, dc) = ours.backward(dev(ds[0]), dev(ds[1]))
        th1, tc1 = theirs(tx, tuple(ths))
        ((th1 * torch.tensor(ds[0])).sum() + (tc1 * torch.tensor(ds[1])).sum()).backward()
        pairs = [(h1, th1), (c1, tc1), (dh, ths[0].grad), (dc, ths[1].grad)]
    else:
        h1 = ours(dev(x), dev(hs[0]))
        dx, dh = ours.backward(dev(ds[0]))
        th1 = theirs(tx, ths[0])
        (th1 * torch.tensor(ds[0])).sum().backward()
        pairs = [(h1, th1), (dh, ths[0].grad)]
    pairs.append((dx, tx.grad))
    for a, b in pairs:
        assert_close(a, b.detach().numpy(), TOL)
    for k, g in ours.grads.items():
        assert_close(g, getattr(theirs, k).grad.numpy(), TOL, k)


def test_linear_embedding_and_losses_match_torch():
    rng = np.random.default_rng(0)
    lin = npnn.Linear(4, 3, dtype="float64", seed=0)
    emb = npnn.Embedding(6, 4, padding_idx=0, dtype="float64", seed=0)
    tl = torch.nn.Linear(4, 3, dtype=torch.float64)
    te = torch.nn.Embedding(6, 4, padding_idx=0, dtype=torch.float64)
    tl.load_state_dict({k: torch.tensor(v) for k, v in lin.state_dict().items()})
    te.load_state_dict({k: torch.tensor(v) for k, v in emb.state_dict().items()})
    idx = rng.integers(0, 6, size=(5, 2))
    idx[0, 0] = 0
    target = rng.integers(0, 3, size=(5, 2))
    ce = npnn.SoftmaxCrossEntropy(label_smoothing=0.1)
    loss = ce(lin(emb(idx)), target)
    emb.backward(lin.backward(ce.backward()))
    tloss = torch.nn.functional.cross_entropy(tl(te(torch.tensor(idx))).reshape(-1, 3),
                                              torch.tensor(target).reshape(-1),
                                              label_smoothing=0.1)
    tloss.backward()
    assert_close(loss, tloss.detach().numpy(), TOL, "loss")
    for mod, tmod in ((lin, tl), (emb, te)):
        for k, g in mod.grads.items():
            assert_close(g, getattr(tmod, k).grad.numpy(), TOL, k)
