"""Bop vs the latent-Adam baseline on MNIST: accuracy per epoch, seconds per epoch, state bytes.

    python benchmarks/train_mnist.py --models sfc --epochs 10 --data-dir ../shared/data

Trains each model with each method in one process, on the same data order
(same seed), one epoch of each run in turn, and prints two tables: test accuracy per epoch, and a
summary with seconds per epoch, its ratio to the baseline run beside it, and
the bytes held per binary weight (stored weight plus optimizer state).
Markdown tables are also written to --out. Runs land in runs/bench/.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from bnnflow.errors import BnnflowError
from bnnflow.training.trainer import TrainConfig, train

BASELINE = "latent-adam"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tfc,sfc,lfc", help="comma-separated: tfc, sfc, lfc")
    p.add_argument("--methods", default=f"bop,{BASELINE}", help="comma-separated training methods")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--runs", default="runs/bench", help="parent folder of the benchmark's run folders")
    p.add_argument("--out", default="benchmarks/results/train_mnist.md", help="markdown copy of the tables")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    runs = [(model, method) for model in args.models.split(",") for method in args.methods.split(",")]
    results: dict[tuple[str, str], dict] = {}
    histories: dict[tuple[str, str], list[dict]] = {}
    # Epochs are interleaved (epoch 1 of every run, then epoch 2, ...), each
    # run resuming from its checkpoint, so that a load change on a shared
    # machine hits every method alike and the per-epoch ratios stay fair.
    for epoch in range(1, args.epochs + 1):
        for model, method in runs:
            run = Path(args.runs) / f"{model}-{method}"
            print(f"== {model} / {method}, epoch {epoch} -> {run}", flush=True)
            try:
                results[(model, method)] = train(
                    TrainConfig(
                        model=model,
                        dataset="mnist",
                        method=method,
                        epochs=epoch,
                        batch_size=args.batch_size,
                        data_dir=args.data_dir,
                        run_dir=str(run),
                        resume=epoch > 1,
                        overwrite=epoch == 1,
                        seed=args.seed,
                        progress=False,
                    )
                )
            except BnnflowError as exc:
                print(f"bnnflow: error: {exc}", file=sys.stderr)
                return exc.exit_code
            histories[(model, method)] = _read_metrics(run / "metrics.csv")

    tables = format_tables(results, histories, args)
    print(tables)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tables + "\n")
    print(f"\nwritten to {out}")
    return 0


def _read_metrics(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""} for row in rows]


def format_tables(results: dict, histories: dict, args: argparse.Namespace) -> str:
    keys = list(results)
    cmd = (
        f"python benchmarks/train_mnist.py --models {args.models} --methods {args.methods} "
        f"--epochs {args.epochs} --batch-size {args.batch_size}"
    )
    lines = [f"Command: `{cmd}`", "", "Test accuracy (%) per epoch:", ""]
    lines.append("| epoch | " + " | ".join(f"{m} {meth}" for m, meth in keys) + " |")
    lines.append("|---:|" + "---:|" * len(keys))
    for e in range(args.epochs):
        cells = []
        for k in keys:
            h = histories[k]
            cells.append(f"{100 * h[e]['test_acc']:.2f}" if e < len(h) else "")
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Summary (seconds per epoch: median over epochs; ratio: against the baseline of the same model):",
        "",
        "| model | method | final acc % | best acc % | s/epoch | vs baseline | bytes/binary weight | flips |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, method in keys:
        s = results[(model, method)]
        sec = statistics.median(r["seconds"] for r in histories[(model, method)])
        base = histories.get((model, BASELINE))
        ratio = sec / statistics.median(r["seconds"] for r in base) if base else float("nan")
        lines.append(
            f"| {model} | {method} | {100 * s['final_test_acc']:.2f} | {100 * s['best_test_acc']:.2f} | "
            f"{sec:.1f} | {ratio:.2f}x | {s['bytes_per_binary_weight']:.1f} | {s['total_flips']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
