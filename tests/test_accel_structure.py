"""The house's ground floor: the reference cells import nothing from the accelerations,
and the accelerations import nothing from the registry that chooses between them
(issue 20). Checked on the source, imports inside functions included."""

import ast
import os

import pytest

FUNCTIONAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "npnn", "functional")


def imported_names(path):
    """Every module an ``import``/``from ... import`` anywhere in the file names, with the
    names it takes: ['.accel', '.accel.lstm', '..registry', 'numpy', ...]."""
    tree = ast.parse(open(path).read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.append(base)
            names += [f"{base}.{a.name}" if base.strip(".") else base + a.name
                      for a in node.names]
    return names


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "peephole", "ctrnn", "jordan"])
def test_reference_cells_import_nothing_from_accel(cell):
    names = imported_names(os.path.join(FUNCTIONAL, f"{cell}.py"))
    assert not [n for n in names if "accel" in n.split(".")], names


@pytest.mark.parametrize("module", sorted(f for f in os.listdir(os.path.join(FUNCTIONAL, "accel"))
                                          if f.endswith(".py")))
def test_accelerations_do_not_import_the_registry(module):
    names = imported_names(os.path.join(FUNCTIONAL, "accel", module))
    assert not [n for n in names if "registry" in n.split(".")], names


def test_the_check_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..registry import CELLS\n    from . import accel\n")
    names = imported_names(str(path))
    assert "..registry.CELLS" in names and ".accel" in names
