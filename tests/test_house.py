"""The house in two wings, kept true: the import graph of ``npnn`` read from the source
(every ``import``, those inside functions included) has no circle, no module imports
one of a higher floor, and importing the core loads the core alone.

Floors, from the ground up (a module may import its own floor and those below):

0. the ground floor, the core: ``npnn._version``, ``npnn._typing`` (the annotations'
   array types), ``npnn.backend``, ``npnn._checks`` (validation), ``npnn.durable``
   (durable writes), ``npnn.functional`` (the reference cells, the accelerations, the
   registry), ``npnn.gradcheck``;
1. the library wing: ``npnn.layers``, ``npnn.optim``, ``npnn.models``, ``npnn.analysis``,
   ``npnn.metrics``;
2. the testing floor: ``npnn.testing`` (assertions over the checker and the layers,
   strategies, the pytest plugin, the strict CuPy stand-in); nothing below imports it;
3. the training wing: ``npnn.training``;
4. the package face ``npnn`` (lazy, PEP 562) and ``python -m npnn``.

A new module must be given its floor here: the test fails on a module it cannot place.
"""

import ast
import os
import subprocess
import sys

import pytest

import npnn

PACKAGE = os.path.dirname(os.path.abspath(npnn.__file__))     # the npnn under test
ROOT = os.path.dirname(PACKAGE)

FLOORS = (
    ("ground", ("npnn._version", "npnn._typing", "npnn.backend", "npnn._checks",
                "npnn.durable", "npnn.functional", "npnn.gradcheck")),
    ("library", ("npnn.layers", "npnn.optim", "npnn.models", "npnn.analysis", "npnn.metrics")),
    ("testing", ("npnn.testing",)),
    ("training", ("npnn.training",)),
    ("face", ("npnn.__main__",)),
)
TRAINING = "npnn.training"


def modules():
    """{module name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def floor(name):
    """The floor's index of module ``name`` (the face ``npnn`` is the top one)."""
    if name == "npnn":
        return len(FLOORS) - 1
    for k, (_, prefixes) in enumerate(FLOORS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return k
    raise AssertionError(f"module {name} has no floor: give it one in tests/test_house.py")


def imports(name, path, known):
    """The package's modules that module ``name`` imports, anywhere in its source."""
    is_package = path.endswith("__init__.py")
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:             # import a.b.c of a module a.b
                t = t.rpartition(".")[0]
            if t and t.split(".")[0] == "npnn" and t != name:
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_has_a_floor(graph):
    for m in graph:
        floor(m)


def test_no_module_imports_a_higher_floor(graph):
    bad = [f"{a} ({FLOORS[floor(a)][0]}) imports {b} ({FLOORS[floor(b)][0]})"
           for a, targets in graph.items() for b in targets if floor(b) > floor(a)]
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_circle(graph):
    """Depth-first search; a back edge closes a circle, printed whole."""
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                circles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_reference_cells_import_no_acceleration_and_accelerations_no_registry(graph):
    """The textbook files stand alone; the registry alone chooses between the two (on
    ab31415, rnn.py, lstm.py and gru.py imported accel, and accel the registry)."""
    cells = [m for m in graph if m.startswith("npnn.functional.") and
             not m.startswith(("npnn.functional.accel", "npnn.functional.registry",
                               "npnn.functional.fast"))]
    bad = [f"{m} imports {t}" for m in cells for t in graph[m]
           if t.startswith(("npnn.functional.accel", "npnn.functional.registry",
                            "npnn.functional.fast"))]
    bad += [f"{m} imports {t}" for m in graph if m.startswith("npnn.functional.accel")
            for t in graph[m] if t.startswith(("npnn.functional.registry",
                                               "npnn.functional.fast"))]
    assert not bad, "\n".join(bad)


def loaded_by(statement):
    """The npnn modules loaded by running ``statement`` in a fresh interpreter."""
    code = f"import sys; {statement}; print(' '.join(sorted(m for m in sys.modules " \
           f"if m == 'npnn' or m.startswith('npnn.'))))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("statement", ["import npnn.functional", "import npnn.gradcheck",
                                       "import npnn.functional.registry",
                                       "from npnn.functional import fast"])
def test_the_core_loads_the_ground_floor_alone(statement):
    above = sorted(m for m in loaded_by(statement) if m != "npnn" and floor(m) > 0)
    assert not above, f"{statement} loads {above}"


def test_the_face_loads_no_training_wing():
    loaded = loaded_by("import npnn; npnn.LSTM; npnn.models.RNNLM; npnn.optim.Adam")
    assert "npnn.layers" in loaded and "npnn.models" in loaded
    assert not [m for m in loaded if m.startswith(TRAINING)]


def test_the_training_loop_loads_no_mpi_and_no_other_training_module():
    loaded = loaded_by("import npnn.training.loop")
    assert not [m for m in loaded if m.startswith(TRAINING) and
                m not in (TRAINING, TRAINING + ".loop")], loaded


def test_moved_names_are_reachable_from_the_face():
    from npnn.training import loop, trainer
    assert npnn.fit is loop.fit and npnn.Trainer is trainer.Trainer
    assert npnn.load_model is trainer.load_model
    assert npnn.data.Vocab is npnn.training.data.Vocab
    assert npnn.distributed.world is npnn.training.distributed.world
    assert set(npnn.__all__) <= set(dir(npnn))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        npnn.nothing
