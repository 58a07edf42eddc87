"""The cell registry: a cell is its file plus one ``register`` line, and everything
above the functional level (layers, models, analysis, gradient checks) takes it."""

import numpy as np
import pytest

import npnn
from npnn import functional as F
from npnn.analysis import gradient_norms
from npnn.functional.registry import (CELLS, INITIALIZERS, STANDARD, Cell, Param, cell_choices,
                                     get_cell, register, resolve)
from npnn.gradcheck import check_gradients, check_module
from npnn.gradcheck.cases import cell_sizes, recurrent_case, step_case
from npnn.layers.recurrent import layer_class
from npnn.models import RNNLM, Seq2Seq, SequenceClassifier


@pytest.fixture
def seventh_cell():
    """A new cell registered with one line: the GRU's ops under another name (a real new
    cell would bring its own file of equations; the plumbing is what is tested)."""
    cell = register(Cell("gru_again", 3, ("h",), STANDARD, F.gru_forward, F.gru_backward))
    yield cell
    del CELLS[cell.name]


def test_a_registered_cell_runs_everywhere(seventh_cell):
    rng = np.random.default_rng(0)
    mine = npnn.Recurrent("gru_again", 3, 4, num_layers=2, bidirectional=True,
                          dtype="float64", seed=0)
    ref = npnn.GRU(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    assert layer_class("gru_again") is layer_class("gru_again")
    assert set(mine.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(mine.state_dict())
    x = rng.standard_normal((5, 2, 3))
    np.testing.assert_array_equal(mine(x, lengths=[5, 3])[0], ref(x, lengths=[5, 3])[0])
    check_module(npnn.Recurrent("gru_again", 2, 3, dtype="float64", seed=1),
                 (rng.standard_normal((3, 2, 2)), None), raise_on_failure=True)
    f, inputs = recurrent_case(rng, "gru_again", masked=True)
    check_gradients(f, inputs, raise_on_failure=True)
    f, inputs = step_case(rng, "gru_again")
    check_gradients(f, inputs, raise_on_failure=True)
    lm = RNNLM(7, 8, cell="gru_again", embedding_dim=4, seed=0)
    logits, state = lm(rng.integers(0, 7, size=(2, 5)))
    assert logits.shape == (2, 5, 7) and state.shape == (1, 2, 8)
    assert len(lm.generate([1, 2], 5, strategy="beam")) == 7
    SequenceClassifier(7, 3, cell="gru_again", seed=0)(rng.integers(1, 7, size=(2, 4)), [4, 2])
    s2s = Seq2Seq(7, 7, 4, 6, cell="gru_again", bidirectional=True, seed=0)
    assert len(s2s.greedy_decode(rng.integers(3, 7, size=(2, 4)), [4, 2], max_len=3)) == 2
    layer = npnn.Recurrent("gru_again", 2, 3, dtype="float64", seed=0)
    assert gradient_norms("gru_again", layer, rng.standard_normal((6, 2, 2))).shape == (7,)


def test_a_registered_cell_may_keep_any_cache():
    """Issue 21 (tutorial 6's own cell): the layer read ``cache.x`` of the op's cache, so
    a cell whose forward returned a cache without that field (a plain tuple) ran forward
    and failed in backward with AttributeError. The cache is the cell's own business."""
    def forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, mask=None):
        out, h_n, cache = F.gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh, mask=mask)
        return out, h_n, ("my cache", cache)

    def backward(dout, dh_n, cache):
        return F.gru_backward(dout, dh_n, cache[1])

    cell = register(Cell("gru_tupled", 3, ("h",), STANDARD, forward, backward))
    try:
        rng = np.random.default_rng(0)
        mine = npnn.Recurrent("gru_tupled", 2, 3, num_layers=2, bidirectional=True,
                              dtype="float64", seed=0)
        ref = npnn.GRU(2, 3, num_layers=2, bidirectional=True, dtype="float64", seed=0)
        ref.load_state_dict(mine.state_dict())
        x = rng.standard_normal((4, 2, 2))
        out, _ = mine(x, lengths=[4, 2])
        np.testing.assert_array_equal(out, ref(x, lengths=[4, 2])[0])
        dout = rng.standard_normal(out.shape)
        np.testing.assert_array_equal(mine.backward(dout)[0], ref.backward(dout)[0])
    finally:
        del CELLS[cell.name]


def test_unknown_cells_and_options_are_named():
    with pytest.raises(ValueError, match="expected cell to be one of 'rnn', 'lstm'"):
        get_cell("transformer")
    with pytest.raises(ValueError, match="already registered"):
        register(CELLS["lstm"])
    with pytest.raises(TypeError, match="GRU: unexpected option.*nonlinearity.*cell 'gru'"):
        npnn.GRU(3, 4, nonlinearity="relu")
    with pytest.raises(TypeError, match="needs the cell's name"):
        npnn.Recurrent()


def test_every_cell_has_a_layer_and_its_parameters():
    for name, spec in CELLS.items():
        sizes = cell_sizes(name, 4)             # the size options a cell needs: lstmp's P
        layer = layer_class(name)(3, 4, seed=0, **sizes)
        assert layer.spec is spec
        shapes = {p.name + "_l0": shape for p, shape in spec.param_shapes(3, 4, **sizes)}
        assert {k: v.shape for k, v in layer.params.items()} == shapes
        assert all(p.init in INITIALIZERS for p in spec.params)
        assert len(spec.state_sizes) == spec.n_states


#: sum_k (k + 1) * sum(state_dict()[k]) of each layer (3, 4, dtype='float64', seed=7), as
#: main drew them (ab31415) when the layers held the initialisation: the registry's
#: initialisers draw the same numbers in the same order.
MAINS_WEIGHTS = [(npnn.LSTM, {"num_layers": 2, "bidirectional": True}, -17.261794078008553),
                 (npnn.RNN, {"nonlinearity": "relu"}, -3.333108492834857),
                 (npnn.GRU, {}, -1.2035153618959105), (npnn.CTRNN, {}, 10.52983511836405),
                 (npnn.JordanRNN, {}, -1.0926790132937065),
                 (npnn.PeepholeLSTM, {}, 14.797114237266571),
                 (npnn.LSTMCell, {}, 5.503396111384715), (npnn.GRUCell, {}, -1.2035153618959105)]


@pytest.mark.parametrize("cls, kwargs, expected", MAINS_WEIGHTS,
                         ids=[c.__name__ for c, _, _ in MAINS_WEIGHTS])
def test_initialisers_from_the_registry_draw_the_weights_main_drew(cls, kwargs, expected):
    state = cls(3, 4, dtype="float64", seed=7, **kwargs).state_dict()
    got = sum(v.sum() * (k + 1) for k, v in enumerate(state.values()))
    assert got == pytest.approx(expected, rel=1e-13, abs=1e-13)


def test_options_carry_their_allowed_values():
    assert get_cell("rnn").choices["nonlinearity"] == ("tanh", "relu")
    assert get_cell("rnn").options["nonlinearity"] in get_cell("rnn").choices["nonlinearity"]
    for bad in (lambda: npnn.RNN(3, 4, nonlinearity="sigmoid"),
                lambda: npnn.Recurrent("rnn", 3, 4, nonlinearity="sigmoid"),
                lambda: npnn.RNNCell(3, 4, nonlinearity="sigmoid")):
        with pytest.raises(ValueError, match="nonlinearity to be one of 'tanh', 'relu'"):
            bad()


def test_a_size_option_selects_the_variant_that_takes_it():
    lstm, lstmp = get_cell("lstm"), get_cell("lstmp")
    assert lstmp.variant_of == "lstm" and lstmp.sizes == {"proj_size": "P"}
    assert (lstmp.state_sizes, lstmp.output) == (("P", "H"), "P")
    assert (lstm.state_sizes, lstm.output) == (("H", "H"), "H")
    assert resolve("lstm", 4, {}) == (lstm, {}, {})
    assert resolve("lstm", 4, {"proj_size": 0}) == (lstm, {}, {})
    assert resolve("lstm", 4, {"proj_size": 3}) == (lstmp, {"proj_size": 3}, {})
    assert lstmp.param_shapes(5, 4, proj_size=3)[1][1] == (16, 3)
    assert lstmp.state_shapes(2, 4, proj_size=3) == [(2, 3), (2, 4)]
    assert "lstmp" in CELLS and "lstmp" not in cell_choices() and "lstm" in cell_choices()
    assert npnn.LSTM(3, 4).proj_size == 0 and npnn.LSTM(3, 4).spec is lstm
    layer = npnn.LSTM(3, 4, proj_size=2)
    assert layer.spec is lstmp and layer.proj_size == 2 and layer.output_size == 2
    assert "proj_size=2" in repr(layer)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    trained = layer(x, lengths=[5, 2])
    layer.clear_caches()
    layer.eval()                                  # no cache: the inference path, no acceleration
    for a, b in zip([trained[0], *trained[1]], [layer(x, lengths=[5, 2])[0],
                                                *layer(x, lengths=[5, 2])[1]]):
        np.testing.assert_array_equal(a, b)
    for P in (4, 5, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"proj_size to be a positive integer smaller than "
                                             f"hidden_size=4, or 0 for none, got {P!r}"):
            npnn.LSTM(3, 4, proj_size=P)
    with pytest.raises(ValueError, match="proj_size to be a positive integer"):
        npnn.Recurrent("lstmp", 3, 4, proj_size=0)        # the variant itself needs P > 0
    with pytest.raises(TypeError, match="cell 'lstmp' needs the size option.*proj_size"):
        npnn.Recurrent("lstmp", 3, 4)
    with pytest.raises(TypeError, match="unexpected option.*proj_size"):
        npnn.GRU(3, 4, proj_size=2)


def test_a_cell_with_a_size_of_its_own_runs_through_the_layers(seventh_cell):
    """A registered variant with a size option: the layers take it from the registry."""
    spec = get_cell("lstmp")
    variant = register(Cell("lstmp_again", 4, spec.states, spec.params, spec.forward,
                            spec.backward, sizes={"width": "P"}, state_sizes=("P", "H"),
                            output="P", variant_of="gru_again"))
    try:
        layer = npnn.Recurrent("gru_again", 3, 5, num_layers=2, width=2, bidirectional=True,
                               dtype="float64", seed=0)
        assert layer.spec is variant and layer.width == 2
        out, (h, c) = layer(np.ones((4, 2, 3)))
        assert out.shape == (4, 2, 4) and h.shape == (4, 2, 2) and c.shape == (4, 2, 5)
        check_module(npnn.Recurrent("lstmp_again", 2, 3, width=1, dtype="float64", seed=1),
                     (np.random.default_rng(0).standard_normal((3, 2, 2)), None),
                     raise_on_failure=True)
        assert npnn.Recurrent("gru_again", 3, 5, width=0).spec is get_cell("gru_again")
        assert Param("w", "w", ("P", "H")).size(4, 5, 3, P=2) == (2, 5)
    finally:
        del CELLS[variant.name]
