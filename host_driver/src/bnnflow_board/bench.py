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
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board import __version__
from bnnflow_board.active_weights import ActiveWeights, active_weights
from bnnflow_board.agreement import engine_mismatch, first_mismatch, verdict
from bnnflow_board.deployformat import BENCH_CHART, BENCH_DIR, BENCH_REPORT, REPORT_MODEL_SHA256, TIMING_KEYS
from bnnflow_board.errors import BoardError
from bnnflow_board.fsutil import atomic_directory, check_replaceable
from bnnflow_board.hwh import read_hwh
from bnnflow_board.package import TestSet
from bnnflow_board.report import format_report, plot_report, write_report
from bnnflow_board.session import Session, SimulatedBoard, check_timeout

DEFAULT_BATCHES = (1, 64, 1000)


@dataclass
class BenchOptions:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCHES
    warmup: int = 3
    repeats: int = 20
    timeout_s: float | None = None  # base deadline per FPGA run (session.run_deadline_s); None: default
    cpu: bool = True
    out: Path | None = None


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
        values = (self.engine, self.mode, self.batch, self.threads, self.warmup, len(s), med * 1e3,
                  float(np.percentile(s, 99)) * 1e3, self.batch / med)  # fmt: skip
        return dict(zip(TIMING_KEYS, values, strict=True))


def measure(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def check_options(opts: BenchOptions) -> None:
    if not opts.batch_sizes or min(opts.batch_sizes) < 1 or opts.repeats < 1 or opts.warmup < 0:
        raise BoardError("batch sizes and repeats must be at least 1, warm-up at least 0")
    check_timeout(opts.timeout_s)


def _cycle(images: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(images, (n, *images.shape[1:])))


def bench(
    path: str | Path,
    options: BenchOptions | None = None,
    sim: SimulatedBoard | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the bench; returns the report (also written to options.out, default <package>/bench).

    ``options.out`` may be absent, an empty folder or an earlier bench report's
    folder, which the new report replaces once complete; anything else is refused
    before the bench starts.
    """
    opts = options or BenchOptions()
    check_options(opts)
    with Session(path, sim) as session:
        pkg = session.pkg
        out = Path(opts.out) if opts.out else pkg.root / BENCH_DIR
        session.require_checks()
        check_replaceable(out, BENCH_REPORT)
        where = session.board.describe()
        log(f"bnnflow-board {__version__}: {pkg.manifest.get('model')} on {where}; checks passed")
        for warning in pkg.manifest.get("warnings", []):
            log(f"warning from bnnflow package: {warning}")
        weights = active_weights(pkg)  # the compiled design's, or the update update-weights applied
        ts = pkg.testset((weights.golden_classes, weights.golden_scores, weights.golden_source))
        report = _report_head(session, weights, ts)
        timings = _bench_fpga(session, opts, weights, ts, report, log)
        timings += _bench_cpu(session, opts, weights, ts, report, log)
        report["timing"] = [t.to_json() for t in timings]
        ok = verdict(report["fpga"], report["cpu"])
        report["agreement"] = "100%" if ok else "MISMATCH"
        text = format_report(report)
        log(text)
        _write(session, report, text, out, log)
        if not ok:
            first = report["fpga"]["first_mismatch"] or report["cpu"]["first_mismatch"]
            raise BoardError(f"outputs differ from the golden outputs: {first['text']}")
        return report


def _report_head(session: Session, weights: ActiveWeights, ts: TestSet) -> dict[str, Any]:
    """What was benched, where and against what: the report before anything runs."""
    pkg, board, bitfile = session.pkg, session.board, session.bitfile
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
            REPORT_MODEL_SHA256: pkg.manifest["files"].get(pkg.manifest["cpu"]["model"]),
        },
        "checks": [c.__dict__ for c in session.checks],
        "package_warnings": list(pkg.manifest.get("warnings", [])),
        "testset": {
            "n": len(ts.images),
            "dataset": ts.dataset,
            "class_names": ts.class_names,
            "golden_source": ts.golden_source,
        },
        "weights": weights.label,
    }
    requested, achieved = read_hwh(Path(bitfile).with_suffix(".hwh")).clock_mhz() if bitfile else (None, None)
    report["accelerator_clock_mhz"] = {"requested": requested, "achieved": achieved, "from": "hwh clk_wiz_0"}
    return report


def _bench_fpga(
    session: Session, opts: BenchOptions, weights: ActiveWeights, ts: TestSet, report: dict[str, Any],
    log: Callable[[str], None],
) -> list[Timing]:  # fmt: skip
    """The test set through the FPGA against the golden outputs (report["fpga"]), then its timings."""
    runner = session.open_fpga(weights.runtime_dir, opts.timeout_s, log)
    if session.device is not None:
        fabric = session.device.fabric
        report["simulated_board_fpga"] = {"exec": fabric.exec_mode, "design": str(fabric.design)}
    frames = session.pkg.fpga_input(ts.images)
    classes = runner.classify_all(frames, max(opts.batch_sizes))
    fpga = {
        "accuracy": float(np.mean(classes == ts.labels)),
        "agree_classes": int(np.sum(classes == ts.golden_classes)),
        "first_mismatch": first_mismatch(
            ts.golden_classes, classes, ts.labels, "the FPGA", names=ts.class_names
        ),
    }
    report["fpga"] = fpga
    log(
        f"FPGA{session.label}: {fpga['agree_classes']}/{len(ts.images)} classes agree with the golden outputs"
    )
    timings = []
    for b in opts.batch_sizes:
        batch = _cycle(frames, b)
        runner.load(batch)
        loaded = measure(runner.run_loaded, opts.warmup, opts.repeats)
        timings.append(Timing("fpga", "accelerator", b, None, loaded, opts.warmup))
        whole = measure(lambda batch=batch: runner.classify(batch), opts.warmup, opts.repeats)
        timings.append(Timing("fpga", "end-to-end", b, None, whole, opts.warmup))
    return timings


def _bench_cpu(
    session: Session, opts: BenchOptions, weights: ActiveWeights, ts: TestSet, report: dict[str, Any],
    log: Callable[[str], None],
) -> list[Timing]:  # fmt: skip
    """The CPU engine on the same images (report["cpu"]), then its timings: batch 1 on one thread,
    larger batches on every core."""
    report["cpu"] = {"available": False}
    if not opts.cpu:
        report["cpu"]["why"] = "skipped (--no-cpu)"
        return []
    engine, why = session.open_cpu_engine(weights.model)
    if engine is None:
        report["cpu"]["why"] = why
        log(f"CPU engine: not run: {why}")
        return []
    cls, scores = engine.run(ts.images, threads=0)
    report["cpu"] = {
        "available": True,
        "accuracy": float(np.mean(cls == ts.labels)),
        "agree_classes": int(np.sum(cls == ts.golden_classes)),
        "agree_scores": int(np.sum(np.all(scores == ts.golden_scores, axis=1))),
        "first_mismatch": engine_mismatch(
            cls, scores, ts.golden_classes, ts.golden_scores, ts.labels, ts.class_names
        ),
        "threads": os.cpu_count(),
    }
    timings = []
    for b in opts.batch_sizes:
        batch = _cycle(ts.images, b)
        threads = 1 if b == 1 else 0
        secs = measure(lambda batch=batch, t=threads: engine.run(batch, threads=t), opts.warmup, opts.repeats)
        mode, used = ("1 thread", 1) if threads == 1 else ("all cores", os.cpu_count())
        timings.append(Timing("cpu", mode, b, used, secs, opts.warmup))
    report["cpu"]["c_loop"] = session.c_loop(weights.model)
    return timings


def _write(
    session: Session, report: dict[str, Any], text: str, out: Path, log: Callable[[str], None]
) -> None:
    """bench.txt, bench.png and bench.json, built beside ``out`` and renamed into place when complete."""
    with atomic_directory(out, marker=BENCH_REPORT, prefix=".bench-") as tmp:
        write_report(report, text, tmp)
        report["chart"] = plot_report(report, tmp / BENCH_CHART)
        if session.sim is not None and session.pkg.bitfile is None:
            shutil.copytree(session.work / "simulated-bitfile", tmp / "simulated-bitfile")
        (tmp / BENCH_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    log(
        f"report in {out}: bench.json, bench.txt"
        + (", bench.png" if report["chart"] == BENCH_CHART else f" (no chart: {report['chart']})")
    )
