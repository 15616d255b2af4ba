"""``bnnflow-board bench``: the package's test set on the FPGA and on the ARM cores, side by side.

1. ``check``: the package is intact, complete and for this board (checks.py);
   any failure stops here.
2. The FPGA: the bitfile is loaded through ``DeadlineDMAOverlay`` (finn-plus-
   driver's ``FINNDMAOverlay``, with a deadline); every test image is
   classified; classes are compared with the golden outputs, the first
   mismatch named.
3. The CPU: bnnflow's C engine is built from the package with the board's gcc
   and run on the same images; classes and integer scores are compared with
   the golden outputs.
4. Timing, for each batch size: a few warm-up runs, then ``repeats`` timed
   runs; median and 99th percentile per run, throughput = batch / median.
   FPGA "accelerator" times the DMA transfers and the computation
   (``execute_on_buffers`` on packed buffers), FPGA "end-to-end" adds the
   packing and copying of ``execute``; CPU batch 1 runs on one thread,
   larger batches on every core.
5. Report: ``bench.json``, ``bench.txt`` (the table printed) and ``bench.png``.

Agreement with the golden outputs must be 100%: any mismatch fails the bench
(exit 1) after the report is written.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board import __version__
from bnnflow_board.boards import get_board
from bnnflow_board.checks import FAIL, run_checks
from bnnflow_board.detect import running_board
from bnnflow_board.errors import BoardError
from bnnflow_board.hwh import read_hwh
from bnnflow_board.package import Package, load_package

DEFAULT_BATCHES = (1, 64, 1000)


@dataclass
class BenchOptions:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCHES
    warmup: int = 3
    repeats: int = 20
    timeout_s: float | None = None  # base deadline per FPGA run; None: 5 s on a board, 600 s simulated
    cpu: bool = True
    out: Path | None = None


@dataclass
class SimulatedBoard:
    """What the simulated board needs: the board to be, the compiled design and the compiler's Python."""

    board: str | None = None  # None: the package's board
    design: Path | None = None  # None: the compile folder the manifest names
    python: Path | None = None  # None: the Python that wrote the package
    exec_mode: str = "auto"
    cache: Path | None = None
    fault: str | None = None


@dataclass
class Timing:
    engine: str
    mode: str
    batch: int
    threads: int | None
    seconds: list[float] = field(default_factory=list)
    warmup: int = 0

    def to_json(self) -> dict[str, Any]:
        s = np.asarray(self.seconds)
        med = float(np.median(s))
        return {
            "engine": self.engine,
            "mode": self.mode,
            "batch": self.batch,
            "threads": self.threads,
            "warmup": self.warmup,
            "repeats": len(s),
            "median_ms": med * 1e3,
            "p99_ms": float(np.percentile(s, 99)) * 1e3,
            "throughput_fps": self.batch / med,
        }


def measure(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def first_mismatch(
    golden: np.ndarray, got: np.ndarray, labels: np.ndarray, what: str, scores: bool = False
) -> dict[str, Any] | None:
    """The lowest image index where ``got`` differs from the golden outputs, described."""
    bad = np.flatnonzero(np.any(golden != got, axis=1) if scores else golden != got)
    if not len(bad):
        return None
    i = int(bad[0])
    if scores:
        j = int(np.flatnonzero(golden[i] != got[i])[0])
        text = f"image {i}: {what} score {j} is {int(got[i, j])}, golden {int(golden[i, j])}"
    else:
        text = f"image {i} (label {int(labels[i])}): {what} says class {int(got[i])}, golden {int(golden[i])}"
    return {"image": i, "count": int(len(bad)), "text": text}


def fpga_input(pkg: Package, images: np.ndarray) -> np.ndarray:
    """Dataset images in the accelerator's input layout (the host-side ops FINN left, as packaged)."""
    x = images
    for op in pkg.manifest["fpga_input"]["from_images"]:
        if op["op"] == "transpose":
            x = np.transpose(x, op["perm"])
        elif op["op"] == "reshape":
            x = x.reshape([x.shape[0], *op["shape"][1:]])
        else:
            raise BoardError(f"unknown host-side op {op['op']!r} in the manifest")
    return np.ascontiguousarray(x)


def simulated_bitfile(pkg: Package, folder: Path) -> Path:
    """Vivado's bitfile where the package has one, else a .bit/.hwh made for the simulated board."""
    if pkg.bitfile is not None:
        return pkg.bitfile
    from bnnflow_board.simulated.hwh import make_bit, make_hwh

    spec = get_board(pkg.board)
    folder.mkdir(parents=True, exist_ok=True)
    text, _ = make_hwh(spec, pkg.manifest["instances"], float(pkg.manifest["clock_mhz"]))
    (folder / "finn-accel.hwh").write_text(text)
    (folder / "finn-accel.bit").write_bytes(make_bit(spec))
    return folder / "finn-accel.bit"


def _cycle(images: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(images, (n, *images.shape[1:])))


def check_package(
    path: str | Path, sim: SimulatedBoard | None = None, work: Path | None = None
) -> tuple[Package, Any, Path | None, list[Any]]:
    """(package, running board, bitfile, checks), the board simulated where asked."""
    pkg = load_package(path)
    device_stub = None
    if sim is not None:
        device_stub = type(
            "SimulatedIdentity", (), {"simulated_board": get_board(sim.board or pkg.board).name}
        )()
    board = running_board(device_stub)
    bitfile = pkg.bitfile
    if sim is not None:
        bitfile = simulated_bitfile(pkg, (work or Path(tempfile.mkdtemp())) / "simulated-bitfile")
    checks = run_checks(pkg, board, bitfile)
    return pkg, board, bitfile, checks


def bench(
    path: str | Path,
    options: BenchOptions | None = None,
    sim: SimulatedBoard | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the bench; returns the report (also written to options.out, default <package>/bench)."""
    from bnnflow_board.report import format_report, plot_report, write_report

    opts = options or BenchOptions()
    if not opts.batch_sizes or min(opts.batch_sizes) < 1 or opts.repeats < 1 or opts.warmup < 0:
        raise BoardError("batch sizes and repeats must be at least 1, warm-up at least 0")
    work = Path(tempfile.mkdtemp(prefix="bnnflow-board-"))
    device = runner = engine = None
    try:
        pkg, board, bitfile, checks = check_package(path, sim, work)
        out = Path(opts.out) if opts.out else pkg.root / "bench"
        label = " (simulated board)" if board.simulated else ""
        failed = [c for c in checks if c.status == FAIL]
        if failed:
            raise BoardError(f"check failed: {failed[0].name}: {failed[0].detail}")
        log(f"bnnflow-board {__version__}: {pkg.manifest.get('model')} on {board.describe()}; checks passed")
        for warning in pkg.manifest.get("warnings", []):
            log(f"warning from bnnflow package: {warning}")
        from bnnflow_board.weights import active_weights

        weights = active_weights(pkg)  # the compiled design's, or the update update-weights applied
        ts = pkg.testset((weights.golden_classes, weights.golden_scores, weights.golden_source))
        report: dict[str, Any] = {
            "bnnflow_board": __version__,
            "simulated_board": board.simulated,
            "board": {
                "name": board.name,
                "family": board.family,
                "cpu": board.cpu,
                "arch": board.arch,
                "source": board.source,
            },
            "package": {
                "path": str(pkg.root),
                "board": pkg.board,
                "model": pkg.manifest.get("model"),
                "created": pkg.manifest.get("created"),
                # which design this report is for: the host's `bnnflow bench` matches it to a compile folder
                "model_sha256": pkg.manifest["files"].get(pkg.manifest["cpu"]["model"]),
            },
            "checks": [c.__dict__ for c in checks],
            "package_warnings": list(pkg.manifest.get("warnings", [])),
            "testset": {"n": len(ts.images), "dataset": ts.dataset, "golden_source": ts.golden_source},
            "weights": weights.label,
        }
        requested, achieved = (
            read_hwh(Path(bitfile).with_suffix(".hwh")).clock_mhz() if bitfile else (None, None)
        )
        report["accelerator_clock_mhz"] = {
            "requested": requested,
            "achieved": achieved,
            "from": "hwh clk_wiz_0",
        }

        # --- FPGA -------------------------------------------------------------------------------
        from bnnflow_board.overlay import FpgaRunner

        if sim is not None:
            device = _simulated_device(pkg, sim, work, log)
            fabric = device.fabric
            report["simulated_board_fpga"] = {"exec": fabric.exec_mode, "design": str(fabric.design)}
        base = opts.timeout_s if opts.timeout_s is not None else (600.0 if board.simulated else 5.0)
        per_frame = 2.0 if board.simulated else 0.01
        runner = FpgaRunner(
            Path(bitfile),
            pkg.driver,
            device=device,
            timeout_s=base,
            per_frame_s=per_frame,
            runtime_weight_dir=weights.runtime_dir,
        )
        frames = fpga_input(pkg, ts.images)
        chunk = max(opts.batch_sizes)
        classes = np.concatenate(
            [runner.classify(frames[i : i + chunk]) for i in range(0, len(frames), chunk)]
        )
        fpga = {
            "accuracy": float(np.mean(classes == ts.labels)),
            "agree_classes": int(np.sum(classes == ts.golden_classes)),
            "first_mismatch": first_mismatch(ts.golden_classes, classes, ts.labels, "the FPGA"),
        }
        report["fpga"] = fpga
        log(f"FPGA{label}: {fpga['agree_classes']}/{len(ts.images)} classes agree with the golden outputs")
        timings = []
        for b in opts.batch_sizes:
            batch = _cycle(frames, b)
            runner.load(batch)
            t = Timing(
                "fpga",
                "accelerator",
                b,
                None,
                measure(runner.run_loaded, opts.warmup, opts.repeats),
                opts.warmup,
            )
            timings.append(t)
            t = Timing(
                "fpga",
                "end-to-end",
                b,
                None,
                measure(lambda batch=batch: runner.classify(batch), opts.warmup, opts.repeats),
                opts.warmup,
            )
            timings.append(t)

        # --- CPU ------------------------------------------------------------------------------
        report["cpu"] = {"available": False}
        if opts.cpu:
            engine, why = _cpu_engine(pkg, board, work, weights.model)
            if engine is None:
                report["cpu"]["why"] = why
                log(f"CPU engine: not run: {why}")
            else:
                cls, scores = engine.run(ts.images, threads=0)
                report["cpu"] = {
                    "available": True,
                    "accuracy": float(np.mean(cls == ts.labels)),
                    "agree_classes": int(np.sum(cls == ts.golden_classes)),
                    "agree_scores": int(np.sum(np.all(scores == ts.golden_scores, axis=1))),
                    "first_mismatch": first_mismatch(ts.golden_classes, cls, ts.labels, "the CPU engine")
                    or first_mismatch(ts.golden_scores, scores, ts.labels, "the CPU engine's", scores=True),
                    "threads": os.cpu_count(),
                }
                for b in opts.batch_sizes:
                    batch = _cycle(ts.images, b)
                    threads = 1 if b == 1 else 0
                    secs = measure(
                        lambda batch=batch, t=threads: engine.run(batch, threads=t), opts.warmup, opts.repeats
                    )
                    timings.append(
                        Timing(
                            "cpu",
                            "1 thread" if threads == 1 else "all cores",
                            b,
                            1 if threads == 1 else os.cpu_count(),
                            secs,
                            opts.warmup,
                        )
                    )
                report["cpu"]["c_loop"] = _c_loop(pkg, work, weights.model)
        else:
            report["cpu"]["why"] = "skipped (--no-cpu)"
        report["timing"] = [t.to_json() for t in timings]

        ok = fpga["first_mismatch"] is None and (
            not report["cpu"]["available"] or report["cpu"]["first_mismatch"] is None
        )
        report["agreement"] = "100%" if ok else "MISMATCH"
        text = format_report(report)
        log(text)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".bench-"))  # renamed into place when complete
        write_report(report, text, tmp)
        report["chart"] = plot_report(report, tmp / "bench.png")
        if sim is not None and pkg.bitfile is None:
            shutil.copytree(work / "simulated-bitfile", tmp / "simulated-bitfile")
        (tmp / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        log(
            f"report in {out}: bench.json, bench.txt"
            + (", bench.png" if report["chart"] == "bench.png" else f" (no chart: {report['chart']})")
        )
        if not ok:
            first = fpga["first_mismatch"] or report["cpu"]["first_mismatch"]
            raise BoardError(f"outputs differ from the golden outputs: {first['text']}")
        return report
    finally:
        if engine is not None:
            engine.close()
        if device is not None:
            device.close()
        shutil.rmtree(work, ignore_errors=True)


def _simulated_device(pkg: Package, sim: SimulatedBoard, work: Path, log: Callable[[str], None]) -> Any:
    from bnnflow_board.simulated.device import SimulatedBoardDevice
    from bnnflow_board.simulated.fabric import Fabric

    host = pkg.manifest.get("host", {})
    design = sim.design or Path(host.get("compile_dir", ""))
    python = sim.python or Path(host.get("python", ""))
    spec = get_board(sim.board or pkg.board)
    log(f"simulated board {spec.name}: FINN runs {design} ({sim.exec_mode} execution; cppsim compiles first)")
    fabric = Fabric(design, pkg.board, python, sim.exec_mode, sim.cache, work / "simulated-accelerator.log")
    return SimulatedBoardDevice(spec, fabric, sim.fault)


def _c_loop(pkg: Package, work: Path, model: Path | None) -> dict[str, Any]:
    """The engine's own C timing loop on the same model (bnnflow-cpu bench), or why there is none."""
    from bnnflow_board.cpu_engine import CpuEngineUnavailable, c_loop_bench

    try:
        return c_loop_bench(
            pkg.root / pkg.manifest["cpu"]["sources"],
            work / "cpu-build",
            model or pkg.root / pkg.manifest["cpu"]["model"],
        )
    except CpuEngineUnavailable as exc:
        return {"why": str(exc)}


def _cpu_engine(pkg: Package, board: Any, work: Path, model: Path | None = None) -> tuple[Any, str]:
    """The package's engine built here, running ``model`` (default: the package's model.bnn)."""
    from bnnflow_board.cpu_engine import CpuEngine, CpuEngineUnavailable, build_engine

    try:
        lib = build_engine(pkg.root / pkg.manifest["cpu"]["sources"], work / "cpu-build", platform.machine())
    except CpuEngineUnavailable as exc:
        return None, str(exc)
    return CpuEngine(lib, model or pkg.root / pkg.manifest["cpu"]["model"]), ""
