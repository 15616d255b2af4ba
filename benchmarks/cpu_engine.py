"""Speed of the C CPU engine (cpu/) per network and kernel set, as a table.

    python benchmarks/cpu_engine.py
    python benchmarks/cpu_engine.py --networks cnv --kernels avx2,popcnt --runs 5000
    python benchmarks/cpu_engine.py --model tfc=runs/tfc/compile/Pynq-Z2/model.bnn

Builds the engine (make -C cpu), writes random models of the real networks'
shapes with cpu/build/make-model (the speed of the kernels does not depend on
the weights), and runs `bnnflow-cpu bench --json --layers` once per kernel set,
choosing the set with BNNCPU_DISABLE. Columns:

- latency: batch 1 on one thread, per image, over --runs runs after warm-up;
  "images/s" is 1 / median. On a machine shared with other work the minimum
  and median stay close to the uncontended time, the p99 does not.
- 1 thread / all threads: a large batch (about 50 ms of work per call);
  "wall" is images per second of elapsed time, "cpu" per second of the
  process's CPU time (what is left of the figure when other processes take
  turns on the cores).
- G binary-MAC/s: at the median latency over the whole network, and in the
  largest binary layer alone (its minimum time, timer overhead included).

With ``--baseline REF`` (a git commit or branch), the engine of REF is built
into a temporary folder as well and the two are timed side by side instead:
``--rounds`` rounds, each running both builds once per network and kernel
set (which goes first alternates), both reading the same model file. Printed:
per network and kernel set the median over the rounds of each build's median
batch-1 latency and their ratio (above 1: this tree is faster), then per
layer (``--layers-of NET:KERNELS``) the same from the per-layer medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CPU = Path(__file__).resolve().parents[1] / "cpu"
NETWORKS = ("digits", "tfc", "sfc", "lfc", "cnv")
# The kernel set each BNNCPU_DISABLE setting leaves on an x86-64 CPU with
# AVX-512 VPOPCNTDQ (on one without it, "avx512" reports avx2 and is skipped).
KERNELS = {"avx512": "", "avx2": "avx512", "popcnt": "avx2", "scalar": "all"}


def bench(model: Path, disable: str, runs: int, batch: int | None, cli: Path | None = None) -> dict:
    cli = cli or CPU / "build" / "bnnflow-cpu"
    cmd = [str(cli), "bench", str(model), "--json", "--layers", "--runs", str(runs)]
    if batch:
        cmd += ["--batch", str(batch)]
    env = dict(os.environ, BNNCPU_DISABLE=disable)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
    if proc.returncode != 0:
        sys.exit(f"cpu_engine: {' '.join(cmd)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def row(name: str, r: dict) -> str:
    lat = r["latency_us"]
    one, many = r["throughput"]
    binary = [layer for layer in r["layers"] if layer["binary_macs"]]
    big = max(binary, key=lambda layer: layer["binary_macs"]) if binary else None
    big_rate = f"{big['binary_macs'] / (big['min_us'] * 1e3):.0f}" if big else "-"
    network_rate = r["binary_macs"] / (lat["median"] * 1e3)
    return (
        f"| {name} | {r['kernels']} | {lat['min']:.2f} | {lat['median']:.2f} | {lat['p99']:.2f} "
        f"| {1e6 / lat['median']:,.0f} | {one['images_per_s']:,.0f} / {one['images_per_cpu_s']:,.0f} "
        f"| {many['threads']}: {many['images_per_s']:,.0f} / {many['images_per_cpu_s']:,.0f} "
        f"| {network_rate:.0f} | {big_rate} |"
    )


def build_baseline(ref: str, tmp: Path) -> Path:
    """bnnflow-cpu as of git commit REF, built from its own sources under tmp."""
    root = CPU.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", ref, "cpu"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        sys.exit(f"cpu_engine: cannot read cpu/ at {ref!r}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    make = ["make", "--no-print-directory", "-C", str(tmp / "cpu"), "build/bnnflow-cpu", "build/make-model"]
    subprocess.run(make, check=True, capture_output=True)
    return tmp / "cpu" / "build" / "bnnflow-cpu"


def side_by_side(models, kernels, args, baseline: Path) -> None:
    """Rounds of baseline and this tree, interleaved; medians and ratios."""
    runs: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for rnd in range(args.rounds):
        for name, path in models:
            for k in kernels:
                order = [("before", baseline), ("after", None)]
                for which, cli in order if rnd % 2 == 0 else order[::-1]:
                    r = bench(path, KERNELS[k], args.runs, 1, cli)
                    if r["kernels"] == k:
                        runs.setdefault((name, k), {"before": [], "after": []})[which].append(r)
    print(f"Batch-1 latency, median of {args.rounds} interleaved rounds", end="")
    print(f" (each the median of {args.runs} runs)\n")
    print(f"| network | kernels | {args.baseline} us | this tree us | speedup |")
    print("|---|---|---:|---:|---:|")
    for (name, k), rs in runs.items():
        before = statistics.median(r["latency_us"]["median"] for r in rs["before"])
        after = statistics.median(r["latency_us"]["median"] for r in rs["after"])
        print(f"| {name} | {k} | {before:.2f} | {after:.2f} | {before / after:.2f}x |")
    for spec in args.layers_of:
        name, _, k = spec.partition(":")
        if (name, k) not in runs:
            continue
        rs = runs[(name, k)]
        print(f"\nPer layer, {name}, {k} kernels: median of the rounds' per-layer medians, us\n")
        print(f"| # | kind | binary MACs | 8-bit MACs | {args.baseline} | this tree | speedup |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for i, layer in enumerate(rs["after"][0]["layers"]):
            before = statistics.median(r["layers"][i]["median_us"] for r in rs["before"])
            after = statistics.median(r["layers"][i]["median_us"] for r in rs["after"])
            print(
                f"| {i + 1} | {layer['kind']} | {layer['binary_macs']:,} | {layer['integer_macs']:,} "
                f"| {before:.2f} | {after:.2f} | {before / after:.2f}x |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--networks", default=",".join(NETWORKS), help="comma-separated random networks to time"
    )
    parser.add_argument(
        "--kernels", default="avx512,avx2,popcnt,scalar", help="comma-separated kernel sets to time"
    )
    parser.add_argument("--runs", type=int, default=2000, help="batch-1 runs per measurement (at least 1000)")
    parser.add_argument(
        "--batch", type=int, default=None, help="images per call for throughput (default: auto)"
    )
    parser.add_argument(
        "--model", action="append", default=[], help="NAME=PATH: also time this model file (e.g. from FINN)"
    )
    parser.add_argument("--baseline", default=None, help="git commit to time side by side with this tree")
    parser.add_argument("--rounds", type=int, default=9, help="with --baseline: interleaved rounds")
    parser.add_argument(
        "--layers-of", action="append", default=[], help="with --baseline: NET:KERNELS to show per layer"
    )
    args = parser.parse_args()

    subprocess.run(["make", "--no-print-directory", "-C", str(CPU), "all"], check=True, capture_output=True)
    kernels = [k for k in args.kernels.split(",") if k]
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown:
        sys.exit(f"cpu_engine: unknown kernel set {unknown[0]!r}; choose from {', '.join(KERNELS)}")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = None
        make_model = CPU / "build" / "make-model"
        if args.baseline:
            (Path(tmp) / "baseline").mkdir()
            baseline = build_baseline(args.baseline, Path(tmp) / "baseline")
            # the baseline's own tool writes the models: this tree reads every older minor
            # version of the format, an older reader not the newer one
            make_model = baseline.with_name("make-model")
        models: list[tuple[str, Path]] = []
        for name in [n for n in args.networks.split(",") if n]:
            path = Path(tmp) / f"{name}.bnn"
            subprocess.run([str(make_model), name, str(path)], check=True)
            models.append((name, path))
        for spec in args.model:
            name, _, path = spec.partition("=")
            models.append((name, Path(path)))
        if baseline is not None:
            side_by_side(models, kernels, args, baseline)
            return

        print(
            "| network | kernels | latency min us | median us | p99 us | images/s (batch 1) "
            "| 1 thread images/s wall / cpu | threads: images/s wall / cpu | G binary-MAC/s | largest layer |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, path in models:
            for k in kernels:
                r = bench(path, KERNELS[k], args.runs, args.batch)
                if r["kernels"] != k:
                    print(f"| {name} | {k}: not available on this CPU ({r['kernels']} instead) |")
                    continue
                print(row(name, r), flush=True)


if __name__ == "__main__":
    main()
