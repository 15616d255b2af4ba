"""Training step time against torch's thread count, with and without a busy core.

    python benchmarks/threads.py --model sfc --steps 20

Why bnnflow trains on half the cores by default: Brevitas runs many small
element-wise operations per layer, and with every core in torch's OpenMP pool,
a core held by another process stalls each operation's barrier. For each
thread count this times Bop training steps (batch 100, random images) on an
idle machine and with one core kept busy by a spinning process, and prints the
median step time and its ratio to one thread on the idle machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F

from bnnflow.models import binarize_weights_, build_model, get_spec
from bnnflow.training import build_optimizer


def _spin(stop: mp.synchronize.Event) -> None:
    while not stop.is_set():
        pass


def median_step_ms(model_name: str, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name)
    binarize_weights_(model)
    opt = build_optimizer(model, "bop")
    x = torch.rand(100, *get_spec(model_name).input_shape)
    y = torch.randint(0, 10, (100,))
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 3:  # warm-up steps are not counted
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sfc", help="tfc, sfc, lfc, cnv or digits-mlp")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    counts = sorted({1, max(1, cores // 2), cores})
    rows = []
    for busy in (False, True):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,), daemon=True) if busy else None
        if spinner:
            spinner.start()
        try:
            for n in counts:
                rows.append((busy, n, median_step_ms(args.model, n, args.steps)))
        finally:
            stop.set()
            if spinner:
                spinner.join()
    base = rows[0][2]
    print(f"{args.model} Bop training step, batch 100, {cores} cores, median of {args.steps} steps")
    print("| other core | torch threads | ms/step | vs 1 thread idle |")
    print("|---|---:|---:|---:|")
    for busy, n, ms in rows:
        print(f"| {'busy' if busy else 'idle'} | {n} | {ms:.1f} | {ms / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
