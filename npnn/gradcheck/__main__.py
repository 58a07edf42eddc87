"""``python -m npnn.gradcheck``: check every op's backward against finite differences."""

import argparse
import sys
from typing import Optional, Sequence

from ..backend import BACKENDS
from .core import check_all_ops


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m npnn.gradcheck",
        description="Check the hand-written backward of every npnn op against "
                    "central finite differences in float64.")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and output weights")
    parser.add_argument("--tol", type=float, default=1e-6, help="largest accepted relative error")
    parser.add_argument("--backend", default=BACKENDS[0], choices=BACKENDS)
    args = parser.parse_args(argv)
    report = check_all_ops(seed=args.seed, tol=args.tol, backend=args.backend)
    print(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
