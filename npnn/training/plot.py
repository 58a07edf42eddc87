"""Curves to PNG, when matplotlib is installed (``pip install -e ".[plot]"``).

Drawn on a ``matplotlib.figure.Figure`` of its own: no pyplot, no global backend
switch, nothing left open; written atomically under a unique temporary name. A
logarithmic axis is labelled in plain numbers (20.8, 21, 30), not matplotlib's
default scientific notation (2.08x10^1), at its major and minor ticks.
"""

from ..durable import atomic_write


def available():
    """Whether matplotlib is installed, importing it now if it is: a run with a time budget
    calls this during its set-up, so that the import (about half a second) is counted
    there and not after the budget, at the closing plot."""
    try:
        import matplotlib.figure  # noqa: F401
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(path, curves, xlabel, ylabel, title="", logy=False):
    """Write ``curves`` ({label: (xs, ys)}, every point marked) to the PNG ``path``.

    Returns ``path``, or None when matplotlib is not installed. Errors of matplotlib
    or of the write propagate: a caller that must not fail catches them.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import LogFormatter
    except ImportError:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=4, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
        # plain numbers; minor ticks labelled where the axis spans few decades (as matplotlib
        # decides), so a curve within one decade still has labels
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
