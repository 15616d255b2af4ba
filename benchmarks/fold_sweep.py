"""Folding legality over many random layer shapes (the long form of tests/test_check_folding.py).

    python benchmarks/fold_sweep.py [--seed 7] [--n 40] [--board Pynq-Z2]

Builds seeded random MLPs (input widths 27, 75, 49, 97; hidden widths 1..100
with primes; 2..100 classes) and small CNNs (1 or 3 input channels, 1..40 or
prime output channels, kernel 1/3/5, stride 1/2, padding 0 or same, optional
2x2 max pool), runs ``bnnflow check``'s front end on each (export, FINN's
streamlining, hardware layers, partition, bnnflow's fit-to-board folding,
estimates) and checks every FINN node's folding (``hls.check.folding_problems``).
Prints one row per shape and the shapes that failed; exits 1 if any did.
This is a sweep, not a test.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bnnflow  # noqa: E402,F401
from bnnflow.errors import BnnflowError  # noqa: E402
from bnnflow.hls.check import check_design, folding_problems  # noqa: E402
from tests.test_check_folding import random_cnn, random_mlp  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--board", default="Pynq-Z2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    failed = []
    print(f"{'#':>3} {'kind':<4} {'input':<10} {'classes':>7} {'nodes':>5} {'frames/s':>12} {'s':>6}  result")
    for i in range(args.n):
        torch.manual_seed(i)
        if i % 2 == 0:
            model, shape, classes = random_mlp(rng, rng.choice([27, 75, 49, 97]))
        else:
            model, shape, classes = random_cnn(rng)
        t0 = time.perf_counter()
        try:
            report = check_design(model, shape, classes, 255, board=args.board)
            problems = folding_problems(report.graph)
            result = "legal" if not problems else problems[0]
            nodes, fps = len(report.folding), f"{report.estimate.expected_fps:,.0f}"
        except BnnflowError as exc:
            problems, result, nodes, fps = [str(exc)], str(exc), 0, "-"
        if problems:
            failed.append((i, repr(model), result))
        kind = "mlp" if i % 2 == 0 else "cnn"
        shape_s = "x".join(map(str, shape))
        print(
            f"{i:>3} {kind:<4} {shape_s:<10} {classes:>7} {nodes:>5} {fps:>12} "
            f"{time.perf_counter() - t0:>6.1f}  {result}",
            flush=True,
        )
    print(f"{args.n - len(failed)}/{args.n} shapes folded legally")
    for i, model, result in failed:
        print(f"shape {i}: {result}\n{model}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
