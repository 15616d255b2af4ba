"""What a distillation teacher costs per training step, as a ratio to training without one.

    python benchmarks/distill_cost.py --teacher runs/mnist-teacher.pt2 --data-dir ../shared/data

Trains the same short run (``--model``, one epoch on ``--limit-train`` images,
one thread, the network's recipe otherwise) through ``bnnflow train``'s own
code path without and with ``--teacher``, alternating the two ``--rounds``
times so that load changes hit both, and prints each round's seconds per step
(``train_seconds`` of the run's summary: the steps only, no evaluation), the
medians and their ratio. The teacher adds one float forward pass per step; how
much that weighs depends on the teacher's size against the binary network's.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bnnflow.errors import BnnflowError
from bnnflow.training.trainer import TrainConfig, train


def seconds_per_step(args: argparse.Namespace, teacher: str | None, run_dir: Path) -> tuple[float, str]:
    """One run's seconds per step and the sha256 of the teacher it recorded (run.json), or "none"."""
    cfg = TrainConfig(
        model=args.model,
        run_dir=str(run_dir),
        data_dir=args.data_dir,
        epochs=1,
        limit_train=args.limit_train,
        limit_test=100,
        threads=1,
        teacher=teacher,
        overwrite=True,
        progress=False,
    )
    summary = train(cfg)
    with open(run_dir / "metrics.csv", newline="") as f:
        steps = int(list(csv.DictReader(f))[-1]["steps"])  # as trained, whatever the split held
    recorded = json.loads((run_dir / "run.json").read_text()).get("teacher_sha256") or "none"
    return summary["train_seconds"] / steps, recorded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the teacher: a .pt2 file or a bnnflow run folder")
    p.add_argument("--model", default="sfc", help="the student: a named network (default sfc)")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    p.add_argument("--limit-train", type=int, default=10_000, help="training images per run (default 10000)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each kind, alternated (default 5)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.limit_train < 1:
        print("distill_cost: --rounds and --limit-train must be at least 1", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"without": [], "with": []}
    teachers: dict[str, set[str]] = {"without": set(), "with": set()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for name, teacher in (("without", None), ("with", args.teacher)):
                    seconds, recorded = seconds_per_step(args, teacher, Path(tmp) / name)
                    times[name].append(seconds)
                    teachers[name].add(recorded)
    except BnnflowError as e:
        print(f"distill_cost: {e}", file=sys.stderr)
        return 1
    plain, taught = statistics.median(times["without"]), statistics.median(times["with"])
    print(f"{args.model}, {args.limit_train} images per run, one thread, {args.rounds} alternated rounds\n")
    print("| teacher | teacher's sha256 (run.json) | ms per step, each round | median ms | vs without |")
    print("|---|---|---|---:|---:|")
    for name, median in (("without", plain), ("with", taught)):
        rounds = ", ".join(f"{1000 * t:.1f}" for t in times[name])
        sha = ", ".join(sorted(teachers[name]))
        print(f"| {name} | {sha} | {rounds} | {1000 * median:.1f} | {median / plain:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
