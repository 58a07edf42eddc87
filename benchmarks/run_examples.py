"""Run every example in examples/ for real and record their tables in RESULTS.md.

    python benchmarks/run_examples.py [--only dates,tag]

(CI runs each example with --smoke instead; see tests/test_models_extra.py.)
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_rnn import write_section  # noqa: E402

EXAMPLES = {
    "dates": "Human-written dates -> ISO dates (encoder-decoder, N -> M): exact match on "
             "held-out calendar days, by how the decoder receives the source",
    "addition": "Fixed-width addition, \"16+75\" -> \"91\" (encoder-decoder, N -> M, the task of "
                "Deep Learning from Scratch 2): exact match on held-out questions by variant",
    "classify": "Balanced brackets (N -> 1), GRU classifier on variable-length strings",
    "tag": "Part-of-speech-like tagging (N -> N) with ambiguous words",
    "conditional": "Number names from a vector (1 -> N), conditioned GRU decoder",
    "sine": "Forecasting a noisy sine wave (regression: RNN + linear head, MSE, Adam) "
            "against the last-value baseline",
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(EXAMPLES))
    args = p.parse_args(argv)
    parts = ["## Examples (`python benchmarks/run_examples.py`)", ""]
    for name in args.only.split(","):
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, os.path.join(HERE, "..", "examples", f"{name}.py")],
                             capture_output=True, text=True)
        if run.returncode:
            print(run.stderr)
            return run.returncode
        table = "\n".join(line for line in run.stdout.splitlines() if line.startswith("|"))
        notes = [line for line in run.stdout.splitlines()
                 if not line.startswith("|") and not line.startswith("  [")]
        seconds = time.perf_counter() - t0
        parts += [f"### {name}: {EXAMPLES[name]}", "", f"`python examples/{name}.py` "
                  f"({seconds:.0f} s on this CPU). " + " ".join(notes[:2]), "", table, ""]
        print(f"{name}: done in {seconds:.0f} s\n{table}", flush=True)
    write_section(os.path.join(HERE, "RESULTS.md"), "examples", "\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
