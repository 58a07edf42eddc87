"""The layer API without traps: caches that cannot leak or mismatch, a thread-local
no_grad, custom layers, exact interop (each numbered defect of the report has a test
that failed before its fix)."""

import threading
import warnings

import numpy as np
import pytest

import npnn
from npnn import functional as F
from npnn.gradcheck import check_gradients, check_module
from npnn.models import RNNLM


# -- 1. memory stays bounded in an evaluation loop without no_grad ----------------------
def test_eval_mode_forwards_keep_no_cache():
    """A PyTorch-style validation loop (model.eval(), no no_grad) must not grow memory."""
    model = RNNLM(11, 8, cell="lstm", embedding_dim=4, seed=0).eval()
    X = np.random.default_rng(0).integers(0, 11, size=(2, 5))
    for _ in range(50):
        model(X)
    assert all(len(m._caches) == 0 for _, m in model.named_modules())


def test_a_backward_after_an_eval_forward_says_how_to_get_one():
    layer = npnn.LSTM(3, 4).eval()
    out, _ = layer(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(RuntimeError, match="eval mode.*enable_grad"):
        layer.backward(out)
    with npnn.enable_grad():
        out, _ = layer(np.zeros((2, 1, 3), np.float32))
    dx, _ = layer.backward(out)
    assert dx.shape == (2, 1, 3)


def test_forwards_never_backpropagated_in_training_mode_warn_once():
    lin = npnn.Linear(2, 2)
    x = np.zeros((1, 2), np.float32)
    with pytest.warns(RuntimeWarning, match="Linear keeps 1000 caches"):
        for _ in range(1000):
            lin(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lin(x)                                          # once per module


def test_stepping_a_cell_by_hand_still_backpropagates_in_reverse():
    cell = npnn.GRUCell(3, 4, dtype="float64", seed=0)
    xs = np.random.default_rng(0).standard_normal((5, 2, 3))
    h = None
    for x in xs:
        h = cell(x, h)
    d = np.ones_like(h)
    for _ in xs:
        _, d = cell.backward(d)
    assert not cell._caches


# -- 2. a backward rejected by validation does not consume the cache ---------------------
def test_a_rejected_backward_leaves_the_cache():
    lin = npnn.Linear(3, 2, seed=0)
    x1 = np.ones((4, 3), np.float32)
    x2 = 2 * np.ones((4, 3), np.float32)
    lin(x1)
    lin(x2)
    with pytest.raises(TypeError):
        lin.backward(np.ones((4, 2), np.float64))      # wrong dtype: rejected
    lin.zero_grad()
    lin.backward(np.ones((4, 2), np.float32))          # the retry gets x2's gradient
    np.testing.assert_allclose(lin.grads["weight"], np.full((2, 3), 8.0))
    layer = npnn.GRU(3, 4)
    out, _ = layer(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError):
        layer.backward(np.zeros((2, 1, 5), np.float32))
    layer.backward(out)                                 # the forward is still there


# -- 3. no_grad is local to a thread -----------------------------------------------------
def test_no_grad_in_one_thread_does_not_disable_another():
    lin = npnn.Linear(3, 2, seed=0)
    inside, done = threading.Event(), threading.Event()

    def inference():
        with npnn.no_grad():
            inside.set()
            done.wait(5)
    t = threading.Thread(target=inference)
    t.start()
    inside.wait(5)
    try:
        for _ in range(20):
            lin(np.ones((1, 3), np.float32))
            lin.backward(np.ones((1, 2), np.float32))
    finally:
        done.set()
        t.join(5)


# -- 4. backward calls in the wrong order are reported where detectable --------------------
def test_backward_for_the_wrong_forward_is_named():
    layer = npnn.LSTM(3, 4)
    out_a, _ = layer(np.zeros((5, 2, 3), np.float32))
    layer(np.zeros((7, 2, 3), np.float32))
    with pytest.raises(ValueError, match="most recent forward.*last in, first out"):
        layer.backward(out_a)
    assert "last in, first out" in npnn.LSTM.backward.__doc__


# -- 5. tied-weight state dicts move in strict mode, both ways ---------------------------
def test_tied_weights_state_dict_has_both_names_and_loads_strictly():
    lm = RNNLM(9, 4, cell="lstm", embedding_dim=4, tie_weights=True, seed=0)
    sd = lm.state_dict()
    assert "embedding.weight" in sd and "decoder.weight" in sd
    np.testing.assert_array_equal(sd["embedding.weight"], sd["decoder.weight"])
    other = RNNLM(9, 4, cell="lstm", embedding_dim=4, tie_weights=True, seed=1)
    other.load_state_dict(sd)                           # strict: both names expected
    np.testing.assert_array_equal(other.decoder.params["weight"], sd["embedding.weight"])
    bad = dict(sd, **{"decoder.weight": sd["decoder.weight"] + 1})
    with pytest.raises(ValueError, match="tied"):
        other.load_state_dict(bad)
    only_one = {k: v for k, v in sd.items() if k != "decoder.weight"}
    other.load_state_dict(only_one)                     # an old npnn file: one name suffices


def test_tied_weights_match_a_pytorch_language_model():
    torch = pytest.importorskip("torch")

    class TorchLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(9, 4)
            self.rnn = torch.nn.LSTM(4, 4)
            self.decoder = torch.nn.Linear(4, 9)
            self.decoder.weight = self.embedding.weight
    theirs = TorchLM()
    ours = RNNLM(9, 4, cell="lstm", embedding_dim=4, tie_weights=True, seed=0)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})


# -- 6. cross-entropy rejects negative weights ---------------------------------------------
def test_negative_loss_weights_are_rejected():
    with pytest.raises(ValueError, match="weights >= 0"):
        F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), np.array([1.0, -1.0]))


# -- 7. the gradient checker: any memory layout, recurrent layers, a readable report --------
def test_check_gradients_perturbs_a_transposed_input():
    rng = np.random.default_rng(0)

    def f(x, W):
        y, cache = F.linear_forward(x, W)

        def vjp(dy):
            dx, grads = F.linear_backward(dy, cache)
            return {"x": dx, "W": grads["W"]}
        return y, vjp
    W = rng.standard_normal((3, 5)).T                   # (5, 3), F-ordered
    report = check_gradients(f, {"x": rng.standard_normal((4, 3)), "W": W})
    assert report.passed, report


def test_check_module_takes_a_recurrent_layer_with_x_alone():
    x = np.random.default_rng(0).standard_normal((3, 2, 2))
    check_module(npnn.LSTM(2, 3, dtype="float64", seed=0), (x,), raise_on_failure=True)


def test_the_report_shows_both_values_at_the_worst_element():
    def f(x):
        return 2 * x, lambda d: {"x": d}                 # wrong by a factor of 2
    report = check_gradients(f, {"x": np.ones(3)})
    assert not report.passed
    assert "analytic" in report.table() and "numeric" in report.table()
    assert "2" in report.table().splitlines()[2]


# -- 8. generate's end_token is a token of the vocabulary -----------------------------------
def test_generate_stops_at_a_string_end_token():
    from npnn.training.data import Vocab
    vocab = Vocab(list("ab\n"))
    lm = RNNLM(len(vocab), 8, cell="gru", embedding_dim=4, seed=0, vocab=vocab)
    text = lm.generate("a", 30, strategy="sample", end_token="\n", seed=0)
    assert "\n" not in text[1:-1]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        lm.generate("a", 3, end_token="z")


# -- 9. CTRNN's time constants stay positive under any optimizer step -----------------------
def test_ctrnn_time_constants_stay_positive():
    """A gradient step of any size leaves a valid tau (it used to make tau <= 0, and the
    next forward raised)."""
    layer = npnn.CTRNN(2, 3, tau=2.0, seed=0)
    assert "log_tau_l0" in layer.params
    layer.params["log_tau_l0"] -= 10.0                  # tau: 2.0 -> 9e-5, still > 0
    layer.params["log_tau_l0"][0] += 30.0               # tau: 2.0 -> 1e9
    out, _ = layer(np.ones((4, 1, 2), np.float32))
    assert np.all(np.exp(layer.params["log_tau_l0"]) > 0) and out.shape == (4, 1, 3)
    check_module(npnn.CTRNN(2, 3, dtype="float64", seed=0),
                 (np.random.default_rng(0).standard_normal((3, 2, 2)),), raise_on_failure=True)


# -- what a PyTorch user expects ------------------------------------------------------------
def test_a_custom_layer_with_public_registration():
    class Affine(npnn.Module):
        def __init__(self):
            super().__init__()
            self.register_parameter("scale", np.full(3, 2.0))
            self.add_module("inner", npnn.Linear(3, 3, dtype="float64", seed=0))

        def forward(self, x):
            self._push(x)
            return self.inner(x) * self.params["scale"]

        def backward(self, dy):
            x = self._pop()
            self.grads["scale"] += (dy * (x @ self.inner.params["weight"].T
                                          + self.inner.params["bias"])).sum(axis=0)
            return self.inner.backward(dy * self.params["scale"])
    m = Affine()
    assert [n for n, _ in m.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    check_module(m, (np.random.default_rng(0).standard_normal((4, 3)),), raise_on_failure=True)


def test_backward_takes_none_for_outputs_that_do_not_reach_the_loss():
    layer = npnn.LSTM(3, 4, num_layers=2, dtype="float64", seed=0)
    out, (h_n, c_n) = layer(np.ones((5, 2, 3)))
    dx, _ = layer.backward(None, (np.ones_like(h_n), None))
    assert dx.shape == (5, 2, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: npnn.LSTM(3, 4, dropout=0.5), "dropout.*num_layers greater than 1"),
])
def test_pytorch_warnings(make, match):
    with pytest.warns(UserWarning, match=match):
        make()


@pytest.mark.parametrize("call, exc, match", [
    (lambda: npnn.GRU(3, 4, nonlinearity="relu"), TypeError, r"^GRU\b"),
    (lambda: npnn.GRU(3, 4, batch_first=True)(np.zeros((2, 0, 3), np.float32)), ValueError,
     "at least one time step"),
    (lambda: npnn.GRU(3, 4)(np.zeros((4, 2, 3), np.float32), lengths=[5, 1]), ValueError,
     "between 1 and T=4"),
    (lambda: npnn.GRU(3, 4)(np.zeros((4, 2, 3))), TypeError, r"astype\(np.float32\)"),
    (lambda: npnn.SoftmaxCrossEntropy()(np.zeros((2, 5, 3)), np.zeros((2, 3), int)), ValueError,
     "class axis last"),
])
def test_messages_a_pytorch_user_can_act_on(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_clipping_has_pytorch_names():
    from npnn import optim
    assert optim.clip_grad_norm_ is optim.clip_grad_norm
    assert optim.clip_grad_value_ is optim.clip_grad_value


# -- parameters and gradients as PyTorch (and JAX) users reach for them ----------------
def test_named_parameters_are_pairs_with_pytorchs_names():
    lstm = npnn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    params = dict(lstm.named_parameters())
    assert params["weight_ih_l0"] is lstm.params["weight_ih_l0"]
    assert list(params) == [f"{w}_{k}_l{layer}{sfx}" for layer in range(2)
                            for sfx in ("", "_reverse") for w in ("weight", "bias")
                            for k in ("ih", "hh")]
    torch = pytest.importorskip("torch")
    theirs = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    assert list(params) == [n for n, _ in theirs.named_parameters()]
    assert {n: tuple(p.shape) for n, p in params.items()} == \
        {n: tuple(p.shape) for n, p in theirs.named_parameters()}


def test_parameters_are_the_arrays():
    model = RNNLM(11, 8, cell="gru", embedding_dim=4, seed=0)
    arrays = list(model.parameters())
    assert all(isinstance(p, np.ndarray) for p in arrays)
    assert [id(p) for p in arrays] == [id(p) for _, p in model.named_parameters()]
    assert sum(p.size for p in arrays) == model.num_parameters()


@pytest.mark.parametrize("tie", [False, True])
def test_gradients_mirror_parameters(tie):
    model = RNNLM(11, 8, cell="lstm", embedding_dim=8 if tie else 4, tie_weights=tie, seed=0,
                  dtype="float64")
    params, grads = dict(model.named_parameters()), dict(model.named_gradients())
    assert list(grads) == list(params)
    for name, p in params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype
    assert [id(g) for g in model.gradients()] == [id(g) for g in grads.values()]
    X = np.random.default_rng(0).integers(0, 11, size=(2, 5))
    logits, _ = model(X)
    model.backward(np.ones_like(logits))
    assert any(np.any(g != 0) for g in model.gradients())
    model.zero_grad()
    assert not any(np.any(g != 0) for g in model.gradients())


def test_an_optimizer_given_the_arrays_alone_says_to_pass_the_model():
    model = npnn.Linear(3, 2)
    with pytest.raises(TypeError, match="pass the model itself"):
        npnn.optim.SGD(model.parameters(), lr=0.1)
    npnn.optim.SGD(zip(model.parameters(), model.gradients()), lr=0.1)


# -- stepping a layer's cell by hand with public names ---------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stepping_each_layer_equals_the_layer(cell):
    layer = npnn.Recurrent(cell, 3, 4, num_layers=2, dtype="float64", seed=0).eval()
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, _ = layer(x)
    steps = [layer.stepper(i) for i in range(2)]
    states = [tuple(np.zeros((2, 4)) for _ in layer.spec.states) for _ in steps]
    for t in range(5):
        h = x[t]
        for i, step in enumerate(steps):
            states[i] = step(h, states[i])
            h = states[i][0]
        np.testing.assert_allclose(h, out[t], rtol=0, atol=1e-12)


def test_cell_params_are_the_layers_arrays_and_steps_backpropagate():
    layer = npnn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    params = layer.cell_params(1, 1)
    assert {id(a) for a in params.values()} == \
        {id(layer.params[n]) for n in layer.params if n.endswith("_l1_reverse")}
    x, states = np.ones((2, 8)), (np.zeros((2, 4)), np.zeros((2, 4)))
    new, cache = layer.spec.run_step(x, states, params, **layer.cell_options)
    dx, dprev, grads = layer.spec.run_step_backward((np.ones((2, 4)), None), cache)
    assert dx.shape == (2, 8) and set(grads) == set(params)
    with pytest.raises(ValueError, match="expected layer to be one of 0, 1, got 2"):
        layer.cell_params(2)


def test_cell_options_carry_a_fixed_time_constant():
    layer = npnn.CTRNN(3, 4, tau=3.0, learn_tau=False, seed=0)
    assert "log_tau" not in layer.cell_params()
    np.testing.assert_allclose(layer.cell_options["log_tau"], np.log(3.0))
