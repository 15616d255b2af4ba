"""Training state and step memory per binary weight: Bop (float32 and compact) against latent Adam.

    python benchmarks/train_memory.py --rounds 3 --steps 5

The network is Courbariaux et al.'s MNIST MLP, 784-4096x3-10 (36.8 million
binary weights), built from the same Brevitas ``FC`` class as bnnflow's TFC,
SFC and LFC. Each configuration trains on random images (batch 100) in a
fresh subprocess, so one configuration's freed memory cannot hide another's;
the rounds interleave the configurations. Per configuration it reports:

- persistent bytes per binary weight, by tensor (weight, gradient, optimizer
  state), counted from the storages held between steps
  (``bnnflow.training.optimizers.binary_state_bytes``);
- the peak memory of a training step above the memory held before it. On the
  CPU, torch's allocations are invisible to tracemalloc, so this is the
  resident set: its high-water mark (``VmHWM``, reset before the step through
  ``/proc/self/clear_refs``) less the resident size before the step, with
  glibc's mmap threshold fixed at 64 KiB so every large tensor is returned
  to the system when freed. On CUDA it is ``torch.cuda.max_memory_allocated``
  less ``memory_allocated`` before the step;
- the median step time (forward, backward, optimizer step).

Ratios are against latent Adam, the baseline every BNN paper trains with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "bop float32": ("bop", False),
    "bop compact": ("bop", True),
    "latent adam": ("latent-adam", False),
}
HIDDEN = (4096, 4096, 4096)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measure(config: str, steps: int, device: str) -> dict[str, object]:
    """One configuration, in this process: bytes by tensor, step peaks, step times."""
    import torch
    import torch.nn.functional as F
    from brevitas_examples.bnn_pynq.models.FC import FC

    from bnnflow.models import binarize_weights_, binary_weight_params
    from bnnflow.training import build_optimizer
    from bnnflow.training.optimizers import binary_state_bytes

    torch.set_num_threads(1)
    torch.manual_seed(0)
    method, compact = CONFIGS[config]
    model = FC(
        num_classes=10,
        weight_bit_width=1,
        act_bit_width=1,
        in_bit_width=1,
        in_channels=1,
        out_features=list(HIDDEN),
        in_features=(28, 28),
    )
    if method != "latent-adam":
        binarize_weights_(model)
    model.to(device).train()
    opt = build_optimizer(model, method, compact=compact)
    x = torch.rand(100, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (100,), device=device)
    cuda = device.startswith("cuda")
    times, peaks = [], []
    for i in range(steps + 1):  # the first step allocates the optimizer state
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            can_reset = _reset_peak()
            before = _status_kib("VmRSS") * 1024
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if cuda:
            peak = torch.cuda.max_memory_allocated() - before
        else:
            peak = _status_kib("VmHWM") * 1024 - before if can_reset else float("nan")
        if i:
            times.append(elapsed)
            peaks.append(peak)
    n = sum(p.numel() for p in binary_weight_params(model))
    return {
        "config": config,
        "binary_weights": n,
        "bytes": binary_state_bytes(model, opt),
        "step_seconds": times,
        "step_peak_bytes": peaks,
    }


def _run_child(config: str, steps: int, device: str) -> dict[str, object]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--child", config, "--steps", str(steps), "--device", device]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{config}: child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _table(results: dict[str, list[dict[str, object]]], device: str) -> str:
    first = {c: runs[0] for c, runs in results.items()}
    n = int(first["latent adam"]["binary_weights"])
    keys = sorted({k for r in first.values() for k in r["bytes"]})  # type: ignore[union-attr]
    med = {
        c: {
            "bytes": sum(first[c]["bytes"].values()) / n,  # type: ignore[union-attr]
            "peak": statistics.median(p for r in runs for p in r["step_peak_bytes"]) / n,  # type: ignore[union-attr]
            "time": statistics.median(t for r in runs for t in r["step_seconds"]),  # type: ignore[union-attr]
        }
        for c, runs in results.items()
    }
    base = med["latent adam"]
    lines = [
        f"{n:,} binary weights (784-4096x3-10), batch 100, device {device}, 1 thread",
        "",
        "Persistent bytes per binary weight, by tensor (held between steps):",
        "",
        "| configuration | " + " | ".join(keys) + " | total | vs latent Adam |",
        "|---|" + "---:|" * (len(keys) + 2),
    ]
    for c in results:
        cells = [f"{first[c]['bytes'].get(k, 0) / n:.4f}" for k in keys]  # type: ignore[union-attr]
        ratio = med[c]["bytes"] / base["bytes"]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {med[c]['bytes']:.3f} | {ratio:.3f} |")
    lines += [
        "",
        "A training step (median over all steps of all rounds):",
        "",
        "| configuration | step peak above held, bytes/weight | vs latent Adam "
        "| held + peak, bytes/weight | vs latent Adam | step time (s) | vs latent Adam |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in results:
        m = med[c]
        total, base_total = m["bytes"] + m["peak"], base["bytes"] + base["peak"]
        lines.append(
            f"| {c} | {m['peak']:.3f} | {m['peak'] / base['peak']:.3f} | {total:.3f} | "
            f"{total / base_total:.3f} | {m['time']:.3f} | {m['time'] / base['time']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="subprocesses per configuration, interleaved")
    p.add_argument("--steps", type=int, default=5, help="timed steps per subprocess (after one warm-up)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        raise SystemExit("--rounds and --steps must be at least 1")
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.device)))
        return 0
    results: dict[str, list[dict[str, object]]] = {c: [] for c in CONFIGS}
    for r in range(args.rounds):
        for c in CONFIGS:
            results[c].append(_run_child(c, args.steps, args.device))
            print(f"round {r + 1}/{args.rounds} {c}: done", file=sys.stderr, flush=True)
    print(f"CPU: {_cpu_name()}")
    print(_table(results, args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
