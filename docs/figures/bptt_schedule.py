"""Draw what memory-bounded BPTT runs: the worked example of docs/derivations.md.

    python docs/figures/bptt_schedule.py         # writes docs/figures/bptt_schedule.png

The schedule is not drawn from a description of it: a recording cell is run through
npnn's own ``checkpointed_forward`` and ``checkpointed_backward``
(``npnn/functional/bptt.py``), under the policy that ``bptt_memory`` chooses
(``npnn/functional/bptt_policy.py``), and every call of the cell's sequence op and
of its backward is drawn as it happened: steps across, time down.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))

from npnn.functional.bptt import checkpointed_backward, checkpointed_forward  # noqa: E402
from npnn.functional.bptt_policy import policy  # noqa: E402


class Recorder:
    """A stand-in for a registry Cell that runs nothing but records its calls: each
    forward call ('run', first step, last step + 1) and each backward call ('back', ...).
    Its input holds the step numbers, so a call knows which steps it was given."""

    def __init__(self):
        self.calls = []

    def run(self, x, states, params, mask=None, bptt_memory=None, **options):
        a, b = int(x[0, 0, 0]), int(x[-1, 0, 0]) + 1
        self.calls.append(["run", a, b, False])
        return x.copy(), tuple(states), len(self.calls) - 1     # the cache: the call's index

    def run_backward(self, dout, dfinals, cache):
        self.calls[cache][3] = True                 # this run's cache was used: it was kept
        _, a, b, _ = self.calls[cache]
        self.calls.append(["back", a, b, False])
        return np.zeros((b - a, 1, 1)), tuple(dfinals), {}


def schedule(T, m):
    """The calls that T steps under m slots make, in order, and the checkpoints stored."""
    cell = Recorder()
    x = np.arange(T, dtype=float).reshape(T, 1, 1)
    states = (np.zeros((1, 1)),)
    _, _, cache = checkpointed_forward(cell, x, states, {}, None, memory=m)
    first_pass = len(cell.calls)
    stored = {a for a, _, _, _ in cache.pending if a > 0}
    checkpointed_backward(cell, np.zeros_like(x), states, cache)
    stored |= {a for kind, a, _, _ in cell.calls[first_pass:] if kind == "run" and a > 0}
    return cell.calls, first_pass, sorted(stored), cache.plan


def draw(ax, T, m):
    calls, first_pass, stored, plan = schedule(T, m)
    colours = {"skip": "#c9c9c9", "keep": "#3b75af", "back": "#e1812c"}
    row, ran = 0, 0
    for i, (kind, a, b, kept) in enumerate(calls):
        key = "back" if kind == "back" else "keep" if kept else "skip"
        if kind == "run":
            ran += b - a
        ax.barh(row, b - a, left=a, height=0.7, color=colours[key], edgecolor="white")
        if i == first_pass - 1:
            ax.axhline(row + 0.5, color="k", lw=0.8, ls=":")
        row += 1
    for s in stored:
        ax.axvline(s, color="#2a9d4b", lw=2, alpha=0.6)
    ax.set_xlim(0, T)
    ax.set_ylim(row - 0.5, -0.5)
    ax.set_xticks(np.arange(T) + 0.5, [str(t + 1) for t in range(T)] if T <= 20 else None)
    if T > 20:
        ax.set_xticks(np.arange(0, T + 1, 10))
    ax.set_yticks([])
    ax.set_xlabel("step")
    ax.set_ylabel("calls, in order (time down)")
    ax.set_title(f"T = {T} steps, m = {m} slots ({plan.name} policy):\n{ran} forward steps "
                 f"run (C(T, m) = {plan.predicted_steps()}); full BPTT runs {T}", fontsize=10)
    return ran


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 2]})
    draw(a1, 6, 3)
    draw(a2, 40, 6)
    fig.legend(handles=[Patch(color="#c9c9c9", label="forward, cache dropped"),
                        Patch(color="#3b75af", label="forward, cache kept for the backward"),
                        Patch(color="#e1812c", label="backward through the kept cache"),
                        Patch(color="#2a9d4b", alpha=0.6, label="a stored state (checkpoint)")],
               loc="lower center", ncol=4, frameon=False)
    fig.text(0.5, 0.94, "Memory-bounded BPTT (BPTT-HSM): what npnn's checkpointed op runs; "
             "the dotted line ends the first forward pass", ha="center")
    fig.tight_layout(rect=(0, 0.07, 1, 0.93))
    out = os.path.join(HERE, "bptt_schedule.png")
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
