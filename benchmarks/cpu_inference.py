"""The C engine against PyTorch and onnxruntime on the same networks, one core.

    python benchmarks/cpu_inference.py                       # tfc, lfc, cnv with random weights
    python benchmarks/cpu_inference.py --networks tfc --run tfc=runs/tfc --board Pynq-Z2

For each network, in one run (so machine load hits every row alike):

- **engine**: ``bnnflow-cpu bench --json`` (cpu/), batch 1 on one thread
  (latency min / median / p99 over ``--runs`` calls after warm-up) and a large
  batch on one thread and on all threads, once with the kernel set the CPU
  selects and once per other x86 kernel set that the CPU has (BNNCPU_DISABLE);
- **pytorch**: the Brevitas model in eval mode, ``torch.set_num_threads(1)``,
  batch 1 and batch ``--batch``;
- **onnxruntime**: the float twin (benchmarks/float_twin.py: +-1 weights as
  float32, sign activations) with one intra-op thread, batch 1 and ``--batch``.

Then, per network, from Python in one process (``--engine-only`` prints just these):

- **Python call overhead**: ``CpuEngine.run`` at batch 1 (and with ``out=``,
  and a bare ctypes call of ``bnn_context_run`` for comparison) against the C
  loop, timed as ``bnn_context_run`` on 64 images per call divided by 64;
  blocks of each interleaved, medians, in microseconds and as ratios to the C loop;
- **thread scaling**: ``CpuEngine.run`` on batches of several sizes with 2 and
  with all threads against 1 thread, interleaved, as the ratio of the median
  times (above 1: the threads help), and the ratio of the process CPU time
  (1.0: splitting adds no work; on a machine other processes keep busy, the
  wall-clock ratios say more about them than about the engine).

Speeds are images per second from the median time; "vs pytorch" divides by
PyTorch's batch-1 figure. With ``--run NET=RUN_DIR`` the network's trained
checkpoint and its compile folder's model.bnn are used; otherwise a freshly
initialised, binarized Brevitas model and a random model file of the same
shape (speed does not depend on the weights). Memory: the engine's model
bytes and working buffers per context (what one thread needs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from float_twin import float_twin, to_onnx  # noqa: E402

import bnnflow  # noqa: E402,F401  (installs the torch shim before brevitas)

ROOT = Path(__file__).resolve().parents[1]
CPU = ROOT / "cpu"
CLI = CPU / "build" / "bnnflow-cpu"
SHAPES = {"digits": (1, 8, 8), "tfc": (1, 28, 28), "sfc": (1, 28, 28), "lfc": (1, 28, 28), "cnv": (3, 32, 32)}
MODEL_NAME = {"digits": "digits-mlp"}
# The kernel set left by each BNNCPU_DISABLE setting on x86-64, best first.
X86_SETS = (("avx512", ""), ("avx2", "avx512"), ("popcnt", "avx512,avx2"))


def _median_rate(fn, batch: int, seconds: float, min_calls: int = 20) -> float:
    """Images per second from the median time of repeated calls (after one warm-up call)."""
    fn()
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def engine_rows(model: Path, runs: int) -> list[dict]:
    rows = []
    seen = set()
    for _set, disable in X86_SETS:
        env = dict(os.environ, BNNCPU_DISABLE=disable)
        cmd = [str(CLI), "bench", str(model), "--json", "--runs", str(runs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            sys.exit(f"cpu_inference: {' '.join(cmd)}: {proc.stderr.strip()}")
        r = json.loads(proc.stdout)
        if r["kernels"] in seen:  # the CPU lacks this set: the next one was chosen
            continue
        seen.add(r["kernels"])
        rows.append(r)
    return rows


def engine_memory(model: Path) -> tuple[int, int]:
    from bnnflow.bnncpu.engine import CpuEngine

    with CpuEngine(model) as engine:
        return engine.model_bytes, engine.context_bytes


def torch_model(net: str, run: Path | None) -> torch.nn.Module:
    from bnnflow.models import binarize_weights_, build_model
    from bnnflow.runs import load_model

    if run is not None:
        return load_model(run)[0]
    torch.manual_seed(0)
    model = build_model(MODEL_NAME.get(net, net))
    binarize_weights_(model)
    return model.eval()


def model_file(net: str, run: Path | None, board: str, tmp: Path) -> Path:
    if run is not None:
        path = run / "compile" / board / "model.bnn"
        if not path.is_file():
            sys.exit(f"cpu_inference: {path} not found; compile the run for {board} first")
        return path
    path = tmp / f"{net}.bnn"
    subprocess.run(
        [str(CPU / "build" / "make-model"), net, str(path), "--seed", "1"], check=True, timeout=120
    )
    return path


def measure(
    net: str, run: Path | None, args: argparse.Namespace, tmp: Path
) -> list[tuple[str, str, float, float]]:
    """(implementation, detail, images/s at batch 1, images/s at batch args.batch)."""
    import onnxruntime as ort

    c, h, w = SHAPES[net]
    rng = np.random.default_rng(0)
    pixel_max = 16.0 if net == "digits" else 255.0
    x = torch.from_numpy(
        rng.integers(0, int(pixel_max) + 1, (args.batch, c, h, w)).astype(np.float32) / pixel_max
    )
    out = []
    model = model_file(net, run, args.board, tmp)
    for r in engine_rows(model, args.runs):
        one, many = r["throughput"][0], r["throughput"][-1]
        gmacs = r["binary_macs"] / (r["latency_us"]["median"] * 1e3)
        detail = (
            f"{r['kernels']}; {gmacs:.0f} G binary-MAC/s; p99 {r['latency_us']['p99']:.2f} us; "
            f"{many['threads']} threads {many['images_per_s']:,.0f}/s"
        )
        out.append(("engine", detail, 1e6 / r["latency_us"]["median"], one["images_per_s"]))

    torch.set_num_threads(1)
    net_model = torch_model(net, run)
    with torch.no_grad():
        t1 = _median_rate(lambda: net_model(x[:1]), 1, args.seconds)
        tb = _median_rate(lambda: net_model(x), args.batch, args.seconds)
    out.append(("pytorch", "Brevitas eval, 1 thread", t1, tb))

    twin = float_twin(net_model, x[:2])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(to_onnx(twin, x[:2]), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    xn = x.numpy()
    o1 = _median_rate(lambda: sess.run(None, {name: xn[:1]}), 1, args.seconds)
    ob = _median_rate(lambda: sess.run(None, {name: xn}), args.batch, args.seconds)
    out.append(("onnxruntime", "float twin, 1 thread", o1, ob))
    return out


def _block_us(fn, calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t0) / calls / 1000


def python_overhead(model: Path, blocks: int) -> dict[str, float]:
    """Median microseconds per image: the C loop, a bare ctypes call, run, run(out=), classify."""
    from bnnflow.bnncpu.engine import CpuEngine, _library

    with CpuEngine(model) as engine:
        lib = _library()
        many = np.random.default_rng(0).integers(0, 256, (64, *engine.input_shape), dtype=np.uint8)
        one = many[:1].copy()
        classes, scores = np.empty(64, np.int32), np.empty((64, engine.n_classes), np.int32)
        out = (classes[:1], scores[:1])
        ctx, f = engine._ctx_addr, lib.bnn_context_run
        ptrs = (many.ctypes.data, one.ctypes.data, classes.ctypes.data, scores.ctypes.data)
        fns = {
            "c_loop": (lambda: f(ctx, ptrs[0], 64, ptrs[2], ptrs[3]), 3, 64),
            "ctypes": (lambda: f(ctx, ptrs[1], 1, ptrs[2], ptrs[3]), 100, 1),
            "run": (lambda: engine.run(one), 100, 1),
            "run_out": (lambda: engine.run(one, out=out), 100, 1),
            "classify": (lambda: engine.classify(one), 100, 1),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(blocks):
            for k, (fn, calls, images) in fns.items():
                times[k].append(_block_us(fn, calls) / images)
    return {k: statistics.median(v) for k, v in times.items()}


def _block_cpu_us(fn, calls: int) -> tuple[float, float]:
    """(wall, process CPU) microseconds per call over a block of calls."""
    c0, t0 = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t0) / calls / 1000, (time.process_time_ns() - c0) / calls / 1000


def thread_scaling(model: Path, blocks: int) -> list[tuple[int, float, float, float, int]]:
    """(batch, 1-thread time / 2-thread time, the same for all cores, 1-thread CPU time /
    2-thread CPU time, threads started so far).

    The CPU-time ratio is what a shared machine still measures: the work the split
    adds (1.0: none), where the wall-clock ratio depends on what else runs.
    """
    from bnnflow.bnncpu.engine import CpuEngine, threads_started

    rows = []
    with CpuEngine(model) as engine:
        per_image = python_overhead(model, 5)["c_loop"]
        # Batches up to about 0.2 s on one thread.
        sizes = [b for b in (1, 8, 64, 512, 4096, 32768) if b * per_image < 2e5] or [1]
        rng = np.random.default_rng(1)
        for batch in sizes:
            images = rng.integers(0, 256, (batch, *engine.input_shape), dtype=np.uint8)
            calls = max(1, int(2000 / (batch * per_image)))
            t: dict[int, list[tuple[float, float]]] = {1: [], 2: [], 0: []}
            for _ in range(blocks):
                for threads in t:
                    call = lambda x=images, th=threads: engine.run(x, threads=th)  # noqa: E731
                    t[threads].append(_block_cpu_us(call, calls))
            wall = {k: statistics.median(w for w, _ in v) for k, v in t.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in t.items()}
            rows.append((batch, wall[1] / wall[2], wall[1] / wall[0], cpu[1] / cpu[2], threads_started()))
    return rows


def cpu_name() -> str:
    proc = subprocess.run(["lscpu"], capture_output=True, text=True)
    names = [
        line.split(":", 1)[1].strip() for line in proc.stdout.splitlines() if line.startswith("Model name")
    ]
    flags = " ".join(line for line in proc.stdout.splitlines() if line.startswith("Flags"))
    isa = "AVX-512" if "vpopcntdq" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{names[0] if names else '?'} ({os.cpu_count()} cores, {isa})"


def engine_tables(nets: list[str], models: dict[str, Path], blocks: int) -> list[str]:
    from bnnflow.bnncpu.engine import kernel_name

    lines = [
        f"Python call overhead, batch 1, {kernel_name()} kernels, {cpu_name()}: "
        f"medians of {blocks} interleaved blocks, microseconds per image",
        "",
        "| network | C loop | bare ctypes call | CpuEngine.run | run(out=) | classify | run - C loop "
        "| run / C loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for net in nets:
        o = python_overhead(models[net], blocks)
        lines.append(
            f"| {net} | {o['c_loop']:.3f} | {o['ctypes']:.3f} | {o['run']:.3f} | {o['run_out']:.3f} "
            f"| {o['classify']:.3f} | {o['run'] - o['c_loop']:+.3f} | {o['run'] / o['c_loop']:.2f}x |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    lines += [
        "",
        "Thread scaling, CpuEngine.run: 1-thread time / n-thread time "
        f"(medians of {blocks} interleaved blocks)",
        "",
        "| network | batch | 2 threads vs 1 | all cores vs 1 | CPU time, 1 thread / 2 threads "
        "| worker threads started so far |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for net in nets:
        for batch, two, every, cpu, started in thread_scaling(models[net], blocks):
            lines.append(f"| {net} | {batch} | {two:.2f}x | {every:.2f}x | {cpu:.2f} | {started} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default="tfc,lfc,cnv", help=f"comma-separated: {', '.join(SHAPES)}")
    p.add_argument("--run", action="append", default=[], metavar="NET=RUN_DIR", help="use a trained run")
    p.add_argument("--board", default="Pynq-Z2", help="compile folder of --run runs to take model.bnn from")
    p.add_argument("--runs", type=int, default=5000, help="batch-1 calls the engine times (at least 1,000)")
    p.add_argument("--batch", type=int, default=256, help="large batch for PyTorch and onnxruntime")
    p.add_argument("--seconds", type=float, default=2.0, help="time per PyTorch/onnxruntime measurement")
    p.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    p.add_argument("--engine-only", action="store_true", help="only the Python-overhead and thread tables")
    p.add_argument("--blocks", type=int, default=51, help="interleaved blocks for those tables")
    args = p.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    subprocess.run(["make", "-s", "-C", str(CPU), "all"], check=True, timeout=900)
    if args.engine_only:
        nets = args.networks.split(",")
        with tempfile.TemporaryDirectory() as tmp:
            models = {
                n: model_file(n, Path(runs[n]) if n in runs else None, args.board, Path(tmp)) for n in nets
            }
            text = "\n".join(engine_tables(nets, models, args.blocks))
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    lines = [
        f"{os.cpu_count()} cores; engine {args.runs} batch-1 runs; PyTorch/onnxruntime median over "
        f"{args.seconds:.0f} s; images/s",
        "",
        "| network | implementation | detail | batch 1 | vs pytorch | batch (1 thread) | vs pytorch |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    memory = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.networks.split(","):
            run = Path(runs[net]) if net in runs else None
            rows = measure(net, run, args, Path(tmp))
            base1, baseb = next((r[2], r[3]) for r in rows if r[0] == "pytorch")
            for impl, detail, r1, rb in rows:
                ratios = f"{r1:,.0f} | {r1 / base1:,.1f}x | {rb:,.0f} | {rb / baseb:,.1f}x"
                lines.append(f"| {net} | {impl} | {detail} | {ratios} |")
            model_bytes, ctx_bytes = engine_memory(model_file(net, run, args.board, Path(tmp)))
            memory.append(f"| {net} | {'trained' if run else 'random'} | {model_bytes:,} | {ctx_bytes:,} |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines += [
        "",
        "| network | weights | engine model bytes | working bytes per thread |",
        "|---|---|---:|---:|",
    ]
    lines += memory
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
