"""The LSTM unrolled over three steps, forward and backward (docs/derivations.md, "LSTM").

Drawn at every build of the documentation site (matplotlib's ``plot`` directive runs
this file); ``python docs/figures/bptt_lstm.py out.png`` draws it alone. Black arrows
are the forward pass: x_t and the states (h_{t-1}, c_{t-1}) enter step t, which gives
(h_t, c_t) and out_t = h_t. Red arrows are what backpropagation through time carries
from step t + 1 back to step t: dc_t^next = dc_{t+1} * f_{t+1} along the cell path, (10),
with no weight matrix on it, and dh_t^next = dz_{t+1} W_hh, (12); at every step the
loss adds dout_t to dh_t, (6).
"""

import sys

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

FORWARD, BACKWARD, CELL = "#222222", "#c62828", "#e3f2fd"
C_Y, H_Y = 3.2, 1.6                      # the lanes of the two states


def arrow(ax, start, end, color, style="-|>", ls="-", lw=1.6, rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14,
                                 color=color, lw=lw, linestyle=ls,
                                 connectionstyle=f"arc3,rad={rad}"))


def draw(ax):
    steps = ["t-1", "t", "t+1"]
    xs = [2.0, 5.5, 9.0]
    for label, x in zip(steps, xs):
        ax.add_patch(FancyBboxPatch((x - 1.0, 0.9), 2.0, 3.0, boxstyle="round,pad=0.05",
                                    fc=CELL, ec="#1565c0", lw=1.4))
        ax.text(x, 2.4, f"LSTM\nstep ${label}$\n(1)-(4)", ha="center", va="center", fontsize=9)
        # input from below, output above (and its loss gradient back down)
        arrow(ax, (x, -0.2), (x, 0.9), FORWARD)
        ax.text(x, -0.45, f"$x_{{{label}}}$", ha="center", va="top", fontsize=11)
        arrow(ax, (x - 0.25, 3.9), (x - 0.25, 5.0), FORWARD)
        ax.text(x - 0.3, 5.15, f"$out_{{{label}}} = h_{{{label}}}$", ha="right", va="bottom",
                fontsize=10)
        arrow(ax, (x + 0.25, 5.0), (x + 0.25, 3.9), BACKWARD, ls="--")
        ax.text(x + 0.3, 5.15, f"$dout_{{{label}}}$ (6)", ha="left", va="bottom",
                fontsize=10, color=BACKWARD)
    for (a, la), (b, lb) in zip(zip(xs, steps), zip(xs[1:], steps[1:])):
        # forward: the two states into the next step
        arrow(ax, (a + 1.0, C_Y + 0.25), (b - 1.0, C_Y + 0.25), FORWARD)
        arrow(ax, (a + 1.0, H_Y - 0.25), (b - 1.0, H_Y - 0.25), FORWARD)
        mid = (a + b) / 2
        ax.text(mid, C_Y + 0.35, f"$c_{{{la}}}$", ha="center", va="bottom", fontsize=10)
        ax.text(mid, H_Y - 0.35, f"$h_{{{la}}}$", ha="center", va="top", fontsize=10)
        # backward: the two gradients back from the next step
        arrow(ax, (b - 1.0, C_Y - 0.15), (a + 1.0, C_Y - 0.15), BACKWARD, ls="--", lw=2.2)
        arrow(ax, (b - 1.0, H_Y + 0.15), (a + 1.0, H_Y + 0.15), BACKWARD, ls="--", lw=2.2)
        ax.text(mid, C_Y - 0.25, f"$dc_{{{la}}}^{{next}}$", ha="center", va="top",
                fontsize=10, color=BACKWARD)
        ax.text(mid, H_Y + 0.25, f"$dh_{{{la}}}^{{next}}$", ha="center", va="bottom",
                fontsize=10, color=BACKWARD)
    # the states entering the first step and the final states leaving the last
    arrow(ax, (-0.2, C_Y + 0.25), (xs[0] - 1.0, C_Y + 0.25), FORWARD)
    arrow(ax, (-0.2, H_Y - 0.25), (xs[0] - 1.0, H_Y - 0.25), FORWARD)
    arrow(ax, (xs[-1] + 1.0, C_Y + 0.25), (11.2, C_Y + 0.25), FORWARD)
    arrow(ax, (xs[-1] + 1.0, H_Y - 0.25), (11.2, H_Y - 0.25), FORWARD)
    ax.text(11.25, C_Y + 0.25, "$c_T$", va="center", fontsize=10)
    ax.text(11.25, H_Y - 0.25, "$h_T$", va="center", fontsize=10)
    ax.text(-0.25, C_Y + 0.25, "$c_0$", va="center", ha="right", fontsize=10)
    ax.text(-0.25, H_Y - 0.25, "$h_0$", va="center", ha="right", fontsize=10)
    # the legend of what each backward arrow computes
    ax.text(0.0, -1.35,
            r"cell path: $dc_{t-1}^{next} = dc_t \odot f_t$  (10): no weight matrix, no "
            r"squashing: the LSTM's memory", color=BACKWARD, fontsize=10)
    ax.text(0.0, -1.85,
            r"hidden path: $dh_{t-1}^{next} = dz_t\, W_{hh}$  (12), and $dh_t = dout_t + "
            r"dh_t^{next}$  (6)", color=BACKWARD, fontsize=10)
    ax.text(0.0, -2.35, "black: forward (1)-(4);  red, dashed: backward through time, "
            "step t+1 to step t", color="#555555", fontsize=9)
    ax.set_xlim(-0.8, 11.9)
    ax.set_ylim(-2.6, 5.8)
    ax.set_aspect("equal")
    ax.axis("off")


fig, ax = plt.subplots(figsize=(10, 6.4))
draw(ax)
fig.tight_layout()

if __name__ == "__main__" and len(sys.argv) > 1:
    matplotlib.use("Agg")
    fig.savefig(sys.argv[1], dpi=110)
