"""The cell registry: a cell is its file plus one ``register`` line, and everything
above the functional level (layers, models, analysis, gradient checks) takes it."""

import numpy as np
import pytest

import npnn
from npnn import functional as F
from npnn.analysis import gradient_norms
from npnn.functional.registry import CELLS, STANDARD, Cell, get_cell, register
from npnn.gradcheck import check_gradients, check_module
from npnn.gradcheck.cases import recurrent_case, step_case
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
        layer = layer_class(name)(3, 4, seed=0)
        assert layer.spec is spec
        shapes = {p.name + "_l0": shape for p, shape in spec.param_shapes(3, 4)}
        assert {k: v.shape for k, v in layer.params.items()} == shapes
