"""The initialisers the registry carries (``functional.registry.INITIALIZERS``) and the
layers' ``init=`` and ``forget_bias=``: orthogonality to rounding, the other distributions'
moments within five standard errors of the sample (so a wrong scale fails and a right one
passes but once in millions of seeds), and the options' refusals."""

import math

import numpy as np
import pytest

import npnn
from npnn.functional.registry import CELLS, INITIALIZERS, initializer_names
from npnn.gradcheck.cases import cell_sizes
from npnn.layers.recurrent import layer_class
from npnn.training.config import ConfigError, ModelConfig

LSTMS = ["lstm", "peephole_lstm", "layernorm_lstm"]
NO_FORGET_GATE = ["rnn", "gru", "ctrnn", "jordan", "layernorm_gru"]


def _moments_match(w, mean, var, fourth):
    """Sample mean and variance of ``w`` within 5 standard errors of a distribution's
    (``fourth`` its fourth central moment: Var(s^2) = (mu_4 - var^2) / n)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    n = w.size
    assert abs(w.mean() - mean) <= 5 * math.sqrt(var / n), (w.mean(), mean)
    assert abs(w.var() - var) <= 5 * math.sqrt((fourth - var ** 2) / n), (w.var(), var)


def _blocks(W, H):
    return [W[k * H:(k + 1) * H] for k in range(W.shape[0] // H)]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "layernorm_lstm"])
@pytest.mark.parametrize("D, H", [(1, 1), (3, 5), (40, 16), (16, 16)])
def test_orthogonal_makes_every_gate_block_orthogonal(cell, D, H):
    layer = npnn.Recurrent(cell, D, H, num_layers=2, init="orthogonal", dtype="float64", seed=0)
    for layer_idx in range(2):
        for name in ("weight_hh", "weight_ih"):
            W = layer.params[f"{name}_l{layer_idx}"]
            blocks = _blocks(W, H)
            assert len(blocks) == CELLS[cell].gates
            for B in blocks:                    # orthonormal columns, or rows where fewer
                gram = B.T @ B if B.shape[0] >= B.shape[1] else B @ B.T
                np.testing.assert_allclose(gram, np.eye(len(gram)), rtol=0, atol=1e-12)
            if len(blocks) > 1 and H > 1:       # each gate drawn on its own
                assert not np.allclose(blocks[0], blocks[1])


def test_orthogonal_draws_from_the_haar_measure():
    """QR's signs fixed by diag(R): E[Q_00] = 0 (NumPy's unfixed QR gives Q_00 <= 0 always).
    For a 2 x 2 Haar rotation-or-reflection Q_00 = cos(theta), theta uniform: var 1/2,
    fourth moment 3/8."""
    rng = np.random.default_rng(0)
    q00 = [INITIALIZERS["orthogonal"](rng, (2, 2), 2)[0, 0] for _ in range(4000)]
    _moments_match(q00, 0.0, 0.5, 3 / 8)


def test_non_square_orthogonal_matrices_as_torch_draws_them():
    rng = np.random.default_rng(1)
    orthogonal = INITIALIZERS["orthogonal"]
    tall, wide = orthogonal(rng, (3, 7), 3), orthogonal(rng, (7, 3), 7)
    np.testing.assert_allclose(tall @ tall.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(wide.T @ wide, np.eye(3), atol=1e-12)
    lstmp = npnn.LSTM(3, 6, proj_size=2, init="orthogonal", dtype="float64", seed=0)
    W_hr = lstmp.params["weight_hr_l0"]                 # (P, H): one block, orthonormal rows
    np.testing.assert_allclose(W_hr @ W_hr.T, np.eye(2), atol=1e-12)


@pytest.mark.parametrize("name, moments", [
    ("xavier_uniform", lambda a: (0.0, a * a / 3, a ** 4 / 5)),
    ("xavier_normal", lambda s: (0.0, s * s, 3 * s ** 4)),
])
def test_xavier_moments(name, moments):
    D, H = 100, 64
    layer = npnn.LSTM(D, H, init=name, dtype="float64", seed=0)
    W = layer.params["weight_ih_l0"]                    # (4H, D): fan_in D, fan_out 4H
    scale = (math.sqrt(6 / (D + 4 * H)) if name == "xavier_uniform"
             else math.sqrt(2 / (D + 4 * H)))
    _moments_match(W, *moments(scale))
    if name == "xavier_uniform":
        assert np.abs(W).max() <= scale
    _moments_match(layer.params["weight_hh_l0"],
                   *moments(scale * math.sqrt((D + 4 * H) / (5 * H))))   # (4H, H)


def test_the_default_is_pytorchs_uniform():
    H = 64
    layer = npnn.GRU(50, H, dtype="float64", seed=0)
    k = 1 / math.sqrt(H)
    for W in layer.params.values():
        assert np.abs(W).max() <= k
    _moments_match(np.concatenate([W.ravel() for W in layer.params.values()]),
                   0.0, k * k / 3, k ** 4 / 5)
    assert layer.init is None and layer.forget_bias is None and "init" not in repr(layer)


def test_a_mapping_sets_each_kind_and_a_name_every_weight_matrix():
    H, D = 8, 5
    kw = dict(dtype="float64", seed=3)
    mapped = npnn.LayerNormLSTM(D, H, init={"weight_hh": "orthogonal",
                                            "weight_ih": "xavier_uniform"}, **kw)
    for B in _blocks(mapped.params["weight_hh_l0"], H):
        np.testing.assert_allclose(B.T @ B, np.eye(H), atol=1e-12)
    assert np.abs(mapped.params["weight_ih_l0"]).max() <= math.sqrt(6 / (D + 4 * H))
    zeros = npnn.LayerNormLSTM(D, H, init="zeros", **kw)
    assert not zeros.params["weight_ih_l0"].any() and not zeros.params["weight_hh_l0"].any()
    assert zeros.params["bias_ih_l0"].any()                       # vectors keep theirs
    assert np.all(zeros.params["ln_ih_weight_l0"] == 1)
    names = initializer_names(CELLS["ctrnn"], "orthogonal")
    assert names["log_tau"] == "log_tau" and names["bias_ih"] == "uniform"
    ones = npnn.LayerNormGRU(D, H, init={"ln_hh_weight": "zeros", "bias_hh": "ones"}, **kw)
    assert not ones.params["ln_hh_weight_l0"].any() and np.all(ones.params["bias_hh_l0"] == 1)
    assert "init={'ln_hh_weight': 'zeros', 'bias_hh': 'ones'}" in repr(ones)
    step = npnn.GRUCell(D, H, init="orthogonal", **kw)
    for B in _blocks(step.params["weight_hh"], H):
        np.testing.assert_allclose(B.T @ B, np.eye(H), atol=1e-12)


def test_bad_inits_are_named():
    with pytest.raises(ValueError, match="expected init to be one of 'uniform', 'orthogonal'.*"
                                         "got 'glorot'"):
        npnn.LSTM(3, 4, init="glorot")
    with pytest.raises(ValueError, match="a key of init \\(cell 'gru'\\) to be one of "
                                         "'weight_ih'.*got 'weight_hr'"):
        npnn.GRU(3, 4, init={"weight_hr": "orthogonal"})
    with pytest.raises(ValueError, match="init\\['bias_ih'\\] to be an initialiser for vectors"):
        npnn.LSTM(3, 4, init={"bias_ih": "orthogonal"})
    with pytest.raises(ValueError, match="init\\['weight_hh'\\] to be one of"):
        npnn.RNNCell(3, 4, init={"weight_hh": "log_tau"})
    with pytest.raises(TypeError, match="expected init to be None, an initialiser's name or a "
                                        "mapping.*got int"):
        npnn.LSTM(3, 4, init=3)
    with pytest.raises(ValueError, match="'orthogonal' is for weight matrices, got a parameter "
                                         "of shape \\(4,\\)"):
        INITIALIZERS["orthogonal"](np.random.default_rng(0), (4,), 4)


@pytest.mark.parametrize("cell", LSTMS + ["lstmp"])
def test_forget_bias_goes_to_the_forget_gate_of_bias_ih(cell):
    H, sizes = 4, cell_sizes(cell, 4)
    base = layer_class(CELLS[cell].variant_of or cell)
    kw = dict(num_layers=2, bidirectional=True, dtype="float64", seed=0, **sizes)
    plain, shifted = base(3, H, **kw), base(3, H, forget_bias=1.0, **kw)
    assert shifted.spec is CELLS[cell] and shifted.forget_bias == 1.0
    assert "forget_bias=1.0" in repr(shifted)
    for k, v in plain.params.items():
        w = shifted.params[k]
        if k.startswith("bias_ih"):
            np.testing.assert_array_equal(w[H:2 * H], v[H:2 * H] + 1.0)       # i f g o
            np.testing.assert_array_equal(np.delete(w, np.s_[H:2 * H]),
                                          np.delete(v, np.s_[H:2 * H]))
        else:
            np.testing.assert_array_equal(w, v)


@pytest.mark.parametrize("cls", [npnn.LSTMCell, npnn.LayerNormLSTMCell])
def test_forget_bias_of_the_cell_layers(cls):
    plain, shifted = cls(3, 4, seed=0, dtype="float64"), cls(3, 4, seed=0, dtype="float64",
                                                             forget_bias=2)
    np.testing.assert_array_equal(shifted.params["bias_ih"],
                                  plain.params["bias_ih"] + np.r_[np.zeros(4), 2 * np.ones(4),
                                                                  np.zeros(8)])


@pytest.mark.parametrize("cell", NO_FORGET_GATE)
def test_cells_without_a_forget_gate_refuse_forget_bias(cell):
    with pytest.raises(ValueError, match=f"expected forget_bias=None for cell '{cell}', which "
                                         f"has no forget gate, got 1.0"):
        layer_class(cell)(3, 4, forget_bias=1.0)
    with pytest.raises(ConfigError, match="forget_bias: expected no --forget-bias"):
        ModelConfig(10, cell, forget_bias=1.0).validate()


def test_cell_layers_without_a_forget_gate_refuse_forget_bias():
    for cls in (npnn.GRUCell, npnn.RNNCell, npnn.LayerNormGRUCell):
        with pytest.raises(ValueError, match="has no forget gate"):
            cls(3, 4, forget_bias=1.0)


def test_bad_forget_biases_are_named():
    for bad in (float("nan"), True, "1", float("inf")):
        with pytest.raises(ValueError, match="expected forget_bias to be a finite number"):
            npnn.LSTM(3, 4, forget_bias=bad)
    with pytest.raises(ValueError, match="expected bias=True with forget_bias=1.0"):
        npnn.LayerNormLSTM(3, 4, bias=False, forget_bias=1.0)
    with pytest.raises(ConfigError, match="init: expected one of uniform"):
        ModelConfig(10, "lstm", init="glorot").validate()
    with pytest.raises(ConfigError, match="forget_bias: expected a finite number"):
        ModelConfig(10, "lstm", forget_bias=float("nan")).validate()
