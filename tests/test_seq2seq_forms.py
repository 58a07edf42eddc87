"""Seq2Seq's forms and options: Luong's attention next to Bahdanau's, peeky output,
dot attention's scale, fixed-length sequences, source reversal, the decoder's start;
the attention backward split for step-wise decoders; training through npnn.fit."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import npnn
from npnn import functional as F
from npnn.gradcheck import check_gradients, check_module
from npnn.models import Seq2Seq
from npnn.training.seq2seq import exact_match, fit_seq2seq, seq2seq_batches, teacher_forcing

from conftest import assert_close, to_numpy

seeds = st.integers(0, 2**32 - 1)
#: (name, Seq2Seq options) of every form the tests run
FORMS = [
    ("luong-dot", dict(context="luong", attention="dot", scale=1.0)),
    ("luong-scaled", dict(context="luong", attention="dot")),
    ("luong-additive", dict(context="luong", attention="additive")),
    ("bahdanau-dot-output", dict(context="attention", attention="dot", scale=0.5,
                                 output_context=True)),
    ("bahdanau-additive", dict(context="attention", attention="additive")),
    ("peeky", dict(context="concat", output_context=True)),
    ("init-h-reversed", dict(context="init", decoder_init="h", reverse_source=True)),
    ("luong-h-reversed", dict(context="luong", attention="dot", decoder_init="h",
                              reverse_source=True)),
]


def _batch(rng, N=3, S=5, T=4, V_src=9, V_tgt=7, pad=0):
    src = rng.integers(3, V_src, size=(N, S))
    lengths = rng.integers(1, S + 1, size=N)
    lengths[0] = S
    src[np.arange(S)[None, :] >= lengths[:, None]] = pad
    return src, lengths, rng.integers(3, V_tgt, size=(N, T))


def _model(options, cell="lstm", E=3, H=4, layers=1, seed=0, bidirectional=False, **kw):
    model = Seq2Seq(9, 7, E, H, layers, cell, bidirectional, dtype="float64", seed=seed,
                    **{**options, **kw})
    att = getattr(model, "attention", None)
    if att is not None and "w_v" in att.params:     # see test_seq2seq._sharpen
        att.params["w_v"] *= 10
        att.params["W_q"] *= 10
        att.params["W_k"] *= 3
    return model


# -- gradients ------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", FORMS, ids=[f[0] for f in FORMS])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forms_finite_differences(backend, name, options, cell):
    """Padded sources with lengths, and (without a padding id) fixed-length ones."""
    rng = np.random.default_rng(3)
    src, lengths, tgt = _batch(rng)
    check_module(_model(options, cell).to(backend), (src, lengths, tgt),
                 arg_names=["src", "lengths", "tgt"], raise_on_failure=True)
    src, _, tgt = _batch(rng, pad=5)
    check_module(_model(options, cell, pad=None, eos=None).to(backend), (src, None, tgt),
                 arg_names=["src", "lengths", "tgt"], raise_on_failure=True)


@settings(max_examples=10, deadline=None)
@given(form=st.sampled_from(FORMS), bidirectional=st.booleans(), layers=st.integers(1, 2),
       N=st.integers(1, 3), S=st.integers(1, 5), T=st.integers(1, 4), E=st.integers(1, 3),
       H=st.integers(1, 4), seed=seeds)
@example(form=FORMS[0], bidirectional=False, layers=1, N=1, S=1, T=1, E=1, H=1, seed=0)
@example(form=FORMS[0], bidirectional=True, layers=2, N=1, S=1, T=2, E=2, H=1, seed=0)
def test_forms_finite_differences_drawn_shapes(form, bidirectional, layers, N, S, T, E, H,
                                               seed):
    _, options = form
    if bidirectional and options.get("attention") == "dot":
        options = {**options, "attention": "additive", "scale": None}
    if options.get("attention") == "additive":
        # with one additive unit (A = H = 1) W_q's gradient is ~1e-7 of the loss (W_q q
        # shifts every score alike; see test_seq2seq._sharpen), below what central
        # differences resolve; the op itself is checked from A = 1 in test_gradients.py
        H = max(H, 2)
    rng = np.random.default_rng(seed)
    src, lengths, tgt = _batch(rng, N, S, T)
    model = _model(options, "lstm", E, H, layers, seed % 1000, bidirectional)
    # eps 1e-5: through two layers of H = 1 some gradients are ~1e-5 of the loss, where
    # the rounding error of central differences, ~1e-16 |L| / eps, is ~1e-6 of them at 1e-6
    check_module(model, (src, lengths, tgt), arg_names=["src", "lengths", "tgt"], eps=1e-5,
                 raise_on_failure=True)


# -- PyTorch: the same model from PyTorch's modules and ops ------------------------------
def _torch_logits(torch, model, src, lengths, tgt_in):
    """npnn's Seq2Seq (unidirectional) written with torch.nn.LSTM/GRU on packed
    sequences, F.embedding, scaled_dot_product_attention (or the additive score) and
    the output layer, on npnn's weights -> logits (N, T, V), the weights by name."""
    nnf = torch.nn.functional
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[model.cell]
    H, L = model.hidden_size, model.num_layers

    def rnn(prefix, D):
        mod = cls(D, H, num_layers=L, dtype=torch.float64)
        params = {k: sd[prefix + k] for k, _ in mod.named_parameters()}
        return lambda *args: torch.func.functional_call(mod, params, args)
    src = np.asarray(src)
    N, S = src.shape
    lens = np.full(N, S) if lengths is None else np.asarray(lengths)
    if model.reverse_source:
        s = np.arange(S)[None, :]
        src = np.take_along_axis(src, np.where(s < lens[:, None], lens[:, None] - 1 - s, s), 1)
    emb = nnf.embedding(torch.tensor(src.T), sd["src_embedding.weight"], padding_idx=model.pad)
    E = emb.shape[2]
    packed = torch.nn.utils.rnn.pack_padded_sequence(emb, torch.tensor(lens),
                                                     enforce_sorted=False)
    out, state = rnn("encoder.", E)(packed)
    K = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=S)[0].transpose(0, 1)
    mask = torch.tensor(np.arange(S)[None, :] < lens[:, None])          # (N, S)
    if model.cell == "lstm" and model.decoder_init == "h":
        state = (state[0], torch.zeros_like(state[1]))
    h_top = (state[0] if model.cell == "lstm" else state)[-1]             # (N, H)

    def attend(q):                                                        # q (N, Lq, H)
        if "w_v" not in model.attention.params:
            return nnf.scaled_dot_product_attention(q, K, K, attn_mask=mask[:, None, :],
                                                    scale=model.attention.scale)
        u = torch.tanh((q @ sd["attention.W_q"].T)[:, :, None, :]
                       + (K @ sd["attention.W_k"].T)[:, None, :, :])
        scores = (u @ sd["attention.w_v"]).masked_fill(~mask[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1) @ K

    e = nnf.embedding(torch.tensor(np.asarray(tgt_in).T), sd["tgt_embedding.weight"],
                      padding_idx=model.pad)                              # (T, N, E)
    T, ctx = e.shape[0], None
    if model.context == "init":
        dec_out, _ = rnn("decoder.", E)(e, state)
    elif model.context == "concat":
        ctx = h_top.expand(T, N, H)
        dec_out, _ = rnn("decoder.", E + H)(torch.cat([e, ctx], dim=2), state)
    elif model.context == "luong":
        dec_out, _ = rnn("decoder.", E)(e, state)
        ctx = attend(dec_out.transpose(0, 1)).transpose(0, 1)
    else:                                                                  # Bahdanau
        step, outs, ctxs = rnn("decoder.", H + E), [], []
        for t in range(T):
            query = (state[0] if model.cell == "lstm" else state)[-1]
            c = attend(query[:, None, :])[:, 0]
            out, state = step(torch.cat([c, e[t]], dim=1)[None], state)
            outs.append(out[0])
            ctxs.append(c)
        dec_out, ctx = torch.stack(outs), torch.stack(ctxs)
    head = torch.cat([ctx, dec_out], dim=2) if model.output_context else dec_out
    return (head @ sd["out.weight"].T + sd["out.bias"]).transpose(0, 1), sd


@pytest.mark.parametrize("name,options", FORMS, ids=[f[0] for f in FORMS])
@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("gru", 1), ("lstm", 2)])
@pytest.mark.parametrize("fixed", [False, True])
def test_forms_match_pytorch(name, options, cell, layers, fixed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    src, lengths, tgt_in = _batch(rng, N=4, S=6, T=5, pad=5 if fixed else 0)
    if fixed:
        lengths = None
    model = _model(options, cell, E=3, H=5, layers=layers,
                   **({"pad": None, "eos": None} if fixed else {}))
    logits = model(src, lengths, tgt_in)
    dlogits = rng.standard_normal(logits.shape)
    model.zero_grad()
    model.backward(dlogits)
    tlogits, sd = _torch_logits(torch, model, src, lengths, tgt_in)
    (tlogits * torch.tensor(dlogits)).sum().backward()
    assert_close(logits, tlogits.detach().numpy(), 1e-12, "logits")
    for k, g in model.named_gradients():
        assert_close(g, sd[k].grad.numpy(), 1e-10, k)


# -- the options -----------------------------------------------------------------------
@pytest.mark.parametrize("name,options", FORMS, ids=[f[0] for f in FORMS])
def test_a_full_length_batch_takes_the_unmasked_path(name, options):
    """Lengths that are all S give the results of no lengths, bit for bit, without a mask."""
    rng = np.random.default_rng(5)
    src, _, tgt = _batch(rng)
    model = _model(options)
    full_lengths = np.full(len(src), src.shape[1])
    assert model.encode(src, full_lengths)[3] is None                 # no key mask
    model.clear_caches()
    full = model(src, full_lengths, tgt)
    assert model.encoder._caches[-1].rev is None                     # no length bookkeeping
    model.clear_caches()
    np.testing.assert_array_equal(full, model(src, None, tgt))


def test_reverse_source_reverses_each_source_within_its_length():
    rng = np.random.default_rng(6)
    src, lengths, tgt = _batch(rng, N=4, S=6)
    options = dict(context="luong", attention="additive")
    model, plain = _model(options, reverse_source=True), _model(options)
    plain.load_state_dict(model.state_dict())
    by_hand = src.copy()
    for i, n in enumerate(lengths):
        by_hand[i, :n] = src[i, :n][::-1]
    np.testing.assert_array_equal(model(src, lengths, tgt), plain(by_hand, lengths, tgt))
    np.testing.assert_array_equal(model(src, None, tgt), plain(src[:, ::-1], None, tgt))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_decoder_init_h_starts_from_h_and_zero_cell_state(cell):
    rng = np.random.default_rng(7)
    src, lengths, _ = _batch(rng)
    model = _model({"context": "init"}, cell, decoder_init="h")
    _, enc_state, start, _ = model.encode(src, lengths)
    if cell == "lstm":
        np.testing.assert_array_equal(start[0], enc_state[0])
        np.testing.assert_array_equal(start[1], np.zeros_like(enc_state[1]))
    else:
        np.testing.assert_array_equal(start, enc_state)
    state_model = _model({"context": "init"}, cell)                   # the default: all states
    assert state_model.decoder_init == "state"
    _, enc_state, start, _ = state_model.encode(src, lengths)
    for a, b in zip(start, enc_state):
        np.testing.assert_array_equal(a, b)


def test_bidirectional_decoder_init_h_has_one_bridge():
    model = Seq2Seq(9, 7, 3, 4, 1, "lstm", True, "init", decoder_init="h", seed=0)
    assert [n for n, _ in model.named_modules() if "bridge" in n] == ["bridge."]
    assert len(Seq2Seq(9, 7, 3, 4, 1, "lstm", True, "init", seed=0)._bridges()) == 2


# -- decoding ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", FORMS, ids=[f[0] for f in FORMS])
@pytest.mark.parametrize("fixed", [False, True])
def test_greedy_decoding_agrees_with_the_teacher_forced_forward(backend, name, options, fixed):
    """Fed its own greedy output, the teacher-forced forward predicts that output: the
    decoding step (the cell's step called directly) computes what forward computes."""
    rng = np.random.default_rng(8)
    src, lengths, _ = _batch(rng, N=5, pad=5 if fixed else 0)
    kw = {"pad": None, "eos": None} if fixed else {"eos": 2}
    model = Seq2Seq(9, 7, 4, 6, 2, "lstm", False, seed=1, **options, **kw).to(backend)
    lengths = None if fixed else lengths
    out = model.greedy_decode(src, lengths, max_len=6)
    for i, seq in enumerate(out):
        if fixed:
            assert len(seq) == 6                                      # no end id: max_len
        toks = seq + ([] if fixed or len(seq) == 6 else [model.eos])
        tgt_in = np.array([[model.bos] + toks[:-1]])
        with npnn.no_grad():
            logits = model(src[i:i + 1], None if lengths is None else lengths[i:i + 1], tgt_in)
        assert to_numpy(logits[0].argmax(axis=1)).tolist() == toks
        assert model.beam_decode(src[i], None if lengths is None else lengths[i],
                                 beam_width=1, max_len=6) == seq


def test_beam_search_without_an_end_id_returns_max_len_tokens():
    model = Seq2Seq(9, 7, 4, 6, 1, "lstm", context="luong", attention="dot", pad=None,
                    eos=None, seed=0)
    src = np.random.default_rng(0).integers(0, 9, size=5)
    assert len(model.beam_decode(src, beam_width=3, max_len=4)) == 4


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,match", [
    (dict(context="init", scale=1.0), "scale only with dot attention"),
    (dict(context="luong", attention="additive", scale=1.0), "scale only with dot attention"),
    (dict(context="luong", attention="dot", scale=-1.0), "positive, finite"),
    (dict(context="luong", output_context=False), "output_context=True"),
    (dict(context="init", output_context=True), "output_context only with"),
    (dict(context="concat", decoder_init="c"), "decoder_init"),
    (dict(context="bahdanau"), "context"),
    (dict(bos=None), "bos to be a non-negative integer"),
    (dict(eos=-1), "eos to be a non-negative integer or None"),
])
def test_bad_options_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        Seq2Seq(9, 7, 3, 4, **kw)


def test_bad_sources_and_lengths_are_refused():
    model = Seq2Seq(9, 7, 3, 4, context="luong", attention="dot", seed=0)
    src, tgt = np.ones((2, 3), dtype=int), np.ones((2, 2), dtype=int)
    with pytest.raises(ValueError, match=r"src_lengths of shape \(2,\)"):
        model(src, np.array([3]), tgt)
    with pytest.raises(ValueError, match="lengths between 1 and T=3"):
        model(src, np.array([3, 4]), tgt)
    with pytest.raises(TypeError, match="src to be an integer array"):
        model(src.astype(float), None, tgt)
    with pytest.raises(ValueError, match=r"src of shape \(N, S\)"):
        model(src[0], None, tgt)
    with pytest.raises(ValueError, match=r"tgt_in of shape \(2, T\), got \(3, 2\)"):
        model(src, None, np.ones((3, 2), dtype=int))


# -- training through npnn.fit -------------------------------------------------------------
def test_fit_seq2seq_learns_to_reverse_fixed_length_sequences():
    """Fixed-length data (no padding, no end id), Luong's form, through npnn.fit: the
    test accuracy is recorded after every epoch and ends high."""
    rng = np.random.default_rng(0)
    src = rng.integers(1, 6, size=(1200, 4))
    tgt = src[:, ::-1].copy()
    model = Seq2Seq(6, 6, 8, 32, cell="lstm", context="luong", attention="dot", scale=1.0,
                    pad=None, bos=0, eos=None, seed=0)
    lines = []
    state = fit_seq2seq(model, (src[:1000], tgt[:1000]), (src[1000:], tgt[1000:]), epochs=6,
                        batch_size=32, lr=1e-2, rng=np.random.default_rng(0), log=lines.append)
    accs = [r["test_exact_match"] for r in state.history]
    assert len(accs) == 6 and accs[-1] >= 0.9, accs
    assert "test_exact_match" in lines[-1]
    assert exact_match(model, src[1000:], tgt[1000:]) == accs[-1]


def test_batches_teacher_forcing_and_exact_match_with_padding_and_eos():
    src = np.array([[3, 4, 0], [5, 0, 0], [6, 7, 8]])
    lengths = np.array([2, 1, 3])
    tgt = np.array([[4, 3, 2], [5, 2, 0], [8, 7, 2]])               # eos 2, pad 0
    np.testing.assert_array_equal(teacher_forcing(tgt, 1), [[1, 4, 3], [1, 5, 2], [1, 8, 7]])
    batches = list(seq2seq_batches(src, tgt, 1, 2, lengths)(np.random.default_rng(0)))
    assert len(batches) == 1                                         # the partial one dropped
    (b_src, b_len, b_in), b_out = batches[0]
    assert b_src.shape[1] == b_len.max()                             # cut to the longest
    for row, n, t_in, t_out in zip(b_src, b_len, b_in, b_out):
        i = int(np.flatnonzero(lengths == n)[0])
        np.testing.assert_array_equal(row[:n], src[i, :n])
        np.testing.assert_array_equal(t_out, tgt[i])
        np.testing.assert_array_equal(t_in, teacher_forcing(tgt[i:i + 1], 1)[0])
    model = Seq2Seq(9, 9, 3, 4, context="luong", attention="dot", seed=0)
    out = model.greedy_decode(src, lengths, max_len=3)
    want = sum(o == [t for t in row[:list(row).index(2)]] for o, row in zip(out, tgt.tolist()))
    assert exact_match(model, src, tgt, lengths) == want / 3
    with pytest.raises(ValueError, match="as many targets and lengths"):
        seq2seq_batches(src, tgt[:2], 1, 2)
    with pytest.raises(ValueError, match="batch_size at most"):
        seq2seq_batches(src, tgt, 1, 4)


# -- the attention backward split ------------------------------------------------------------
def _attention_steps(rng, kind, N, T, S, E, Ev, A, masked, scale):
    """T single-query calls on the same keys -> (forward of q (N, T, E) and the rest,
    split backward), for check_gradients: dq step by step (*_query_backward), dK/dP,
    dV and the parameters' gradients from one backward on the concatenated caches."""
    mask = None
    if masked:
        mask = np.arange(S)[None, :] < rng.integers(1, S + 1, size=N)[:, None]
    inputs = {"q": rng.standard_normal((N, T, E)), "K": rng.standard_normal((N, S, E)),
              "V": rng.standard_normal((N, S, Ev))}
    if kind == "additive":
        inputs.update({"K": rng.standard_normal((N, S, A)),
                       "W_q": 0.5 * rng.standard_normal((A, E)),
                       "w_v": 0.5 * rng.standard_normal(A)})

    def f(q, K, V, W_q=None, w_v=None):
        calls = [F.dot_attention_forward(q[:, t:t + 1], K, V, mask, scale) if kind == "dot" else
                 F.additive_attention_projected_forward(q[:, t:t + 1], K, V, W_q, w_v, mask)
                 for t in range(T)]
        c = np.concatenate([call[0] for call in calls], axis=1)

        def vjp(dc):
            query = (F.dot_attention_query_backward if kind == "dot"
                     else F.additive_attention_projected_query_backward)
            dq = np.concatenate([query(dc[:, t:t + 1], calls[t][2]) for t in range(T)], axis=1)
            cache = F.concat_attention_caches([call[2] for call in calls])
            if kind == "dot":
                _, dK, dV = F.dot_attention_backward(dc, cache)
                return {"q": dq, "K": dK, "V": dV}
            _, dP, dV, grads = F.additive_attention_projected_backward(dc, cache)
            return {"q": dq, "K": dP, "V": dV, **grads}
        return c, vjp
    return f, inputs


@given(kind=st.sampled_from(["dot", "additive"]), N=st.integers(1, 4), T=st.integers(1, 4),
       S=st.integers(1, 5), E=st.integers(1, 4), Ev=st.integers(1, 4), A=st.integers(1, 4),
       masked=st.booleans(), scaled=st.booleans(), seed=seeds)
@example(kind="additive", N=1, T=1, S=1, E=1, Ev=1, A=2, masked=True, scaled=True, seed=0)
@example(kind="dot", N=1, T=1, S=1, E=1, Ev=1, A=1, masked=True, scaled=False, seed=0)
def test_attention_steps_split_backward_finite_differences(kind, N, T, S, E, Ev, A, masked,
                                                           scaled, seed):
    if kind == "additive":
        # the query moves every additive score alike, so dq and dW_q exist only through
        # tanh's curvature; with one unit (A = 1) they can fall to ~1e-6 of the loss, the
        # rounding floor of central differences. A = 1 is checked against the full
        # backward below (to 1e-12) and by finite differences in test_gradients.py
        A = max(A, 2)
    rng = np.random.default_rng(seed)
    f, inputs = _attention_steps(rng, kind, N, T, S, E, Ev, A, masked, None if scaled else 1.0)
    check_gradients(f, inputs, tol=1e-6, seed=seed, raise_on_failure=True)


@given(kind=st.sampled_from(["dot", "additive"]), N=st.integers(1, 4), T=st.integers(1, 4),
       S=st.integers(1, 5), E=st.integers(1, 4), Ev=st.integers(1, 4), A=st.integers(1, 4),
       masked=st.booleans(), seed=seeds)
def test_split_backward_equals_the_full_backward_of_each_step(kind, N, T, S, E, Ev, A, masked,
                                                              seed):
    """dq step by step and the concatenated-cache backward equal the full backward of
    every step (dq) and its sum over the steps (the rest), to rounding."""
    rng = np.random.default_rng(seed)
    f, inputs = _attention_steps(rng, kind, N, T, S, E, Ev, A, masked, 0.7)
    c, vjp = f(**inputs)
    dc = rng.standard_normal(c.shape)
    split = vjp(dc)
    mask = None
    if masked:      # the same draw as _attention_steps made
        mask = np.arange(S)[None, :] < np.random.default_rng(seed).integers(
            1, S + 1, size=N)[:, None]
    want = {k: np.zeros_like(v) for k, v in inputs.items()}
    for t in range(T):
        q_t = inputs["q"][:, t:t + 1]
        if kind == "dot":
            _, _, cache = F.dot_attention_forward(q_t, inputs["K"], inputs["V"], mask, 0.7)
            dq, dK, dV = F.dot_attention_backward(dc[:, t:t + 1], cache)
            grads = {}
        else:
            _, _, cache = F.additive_attention_projected_forward(
                q_t, inputs["K"], inputs["V"], inputs["W_q"], inputs["w_v"], mask)
            dq, dK, dV, grads = F.additive_attention_projected_backward(dc[:, t:t + 1], cache)
        want["q"][:, t:t + 1] = dq
        want["K"] += dK
        want["V"] += dV
        for k, g in grads.items():
            want[k] += g
    for k, g in split.items():
        assert_close(g, want[k], 1e-12, k)


def test_concat_attention_caches_refuses_mixed_or_foreign_caches():
    rng = np.random.default_rng(0)
    q, K, V = rng.standard_normal((2, 1, 3)), rng.standard_normal((2, 4, 3)), \
        rng.standard_normal((2, 4, 2))
    a = F.dot_attention_forward(q, K, V)[2]
    b = F.dot_attention_forward(q, K.copy(), V)[2]
    add = F.additive_attention_projected_forward(q, K, V, rng.standard_normal((3, 3)),
                                                 rng.standard_normal(3))[2]
    with pytest.raises(ValueError, match="same K"):
        F.concat_attention_caches([a, b])
    with pytest.raises(TypeError, match="caches of one op"):
        F.concat_attention_caches([a, add])
    with pytest.raises(ValueError, match="at least one"):
        F.concat_attention_caches([])
    assert F.concat_attention_caches([a]) is a
