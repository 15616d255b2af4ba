"""``bnnflow cpu RUN_OR_COMPILE_DIR``: the C engine on a compiled design's test set.

Runs the compile folder's ``model.bnn`` in the C engine on the test split of
the dataset it was compiled for and reports, next to each other:

* accuracy against the dataset's labels;
* agreement with FINN: classes and integer scores against FINN's Python
  execution of the hardware-layer graph (what the compile stage verifies) on
  the first ``finn_images`` images: it must be 100%;
* throughput: batch 1 on one thread (per call from Python, so a few
  microseconds of ctypes are included; ``bnnflow-cpu bench`` times the C
  alone), the whole test set as one batch on one thread and on every core,
  and binary multiply-accumulates per second;
* memory: the engine's model bytes and one thread's working buffers.

The report is printed and written to ``<compile dir>/cpu.json``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.bnncpu import MODEL_FILE, CpuEngine, export_cpu_model, kernel_name, read_design_model
from bnnflow.cpu.finn_reference import finn_outputs
from bnnflow.data import DatasetIdentity, check_model_fits, find_identity, legacy_identity, test_images
from bnnflow.errors import BnnflowError
from bnnflow.layout import CompileDir, RunDir
from bnnflow.runs import atomic_write_json

REPORT_FILE = "cpu.json"
THROUGHPUT_BATCH = 20_000


@dataclass
class CpuReport:
    compile_dir: str
    dataset: str
    kernels: str
    n_images: int
    accuracy: float
    finn_images: int
    finn_classes_agree: int
    finn_scores_agree: int
    first_difference: str | None
    latency_us: dict[str, float] = field(default_factory=dict)  # batch 1, one thread, via Python
    images_per_s: dict[str, float] = field(default_factory=dict)  # "1 thread", "N threads"
    throughput_batch: int = 0
    binary_gmacs: float = 0.0  # at the one-thread batch rate
    binary_macs: int = 0
    integer_macs: int = 0
    model_bytes: int = 0
    context_bytes: int = 0
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    class_accuracy: dict[str, float] = field(default_factory=dict)  # per class name, on its test images

    @property
    def agrees(self) -> bool:
        return self.first_difference is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_compile_dir(path: str | Path, board: str | None = None) -> Path:
    """A compile folder from a compile folder, or from a run folder (its only board, or ``board``)."""
    path = Path(path)
    if not path.is_dir():
        raise BnnflowError(f"not a folder: {path}")
    if CompileDir(path).hw_graph.is_file():
        return path
    compiled = sorted(p for p in (path / RunDir.COMPILE).glob("*") if CompileDir(p).hw_graph.is_file())
    if not compiled:
        raise BnnflowError(
            f"{path} is neither a compile folder nor a run with one; run `bnnflow compile {path}`"
        )
    if board is not None:
        for p in compiled:
            if p.name.lower() == board.lower():
                return p
        raise BnnflowError(
            f"{path} has no compile folder for {board}; it has {', '.join(p.name for p in compiled)}"
        )
    if len(compiled) > 1:
        raise BnnflowError(
            f"{path} is compiled for several boards ({', '.join(p.name for p in compiled)}); pass --board"
        )
    return compiled[0]


def _latency_us(engine: Any, images: np.ndarray, calls: int) -> dict[str, float]:
    engine.classify(images[:1])  # warm-up: the context's buffers are made on the first call
    times = []
    for i in range(calls):
        one = images[i % len(images)]
        t0 = time.perf_counter()
        engine.classify(one)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "min": 1e6 * times[0],
        "median": 1e6 * statistics.median(times),
        "p99": 1e6 * times[min(len(times) - 1, int(0.99 * len(times)))],
    }


def _rate(engine: Any, images: np.ndarray, threads: int, repeats: int = 3) -> float:
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.classify(images, threads=threads)
        best.append(time.perf_counter() - t0)
    return len(images) / statistics.median(best)


def _design_dataset(compile_dir: Path, engine: Any) -> DatasetIdentity:
    """The dataset the run recorded (a compile folder from before that record: its model file's),
    checked against the engine's input shape and class count."""
    identity = find_identity(compile_dir)
    if identity is None and engine.dataset is not None:
        identity = legacy_identity(engine.dataset)
    if identity is None:
        raise BnnflowError(f"{engine.path} names no dataset; run it with bnnflow-cpu on your own images")
    check_model_fits(identity, engine.input_shape, engine.n_classes, str(engine.path))
    return identity


def evaluate_cpu(
    path: str | Path,
    board: str | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    finn_images: int = 500,
    latency_calls: int = 2000,
    log: Any = print,
) -> CpuReport:
    """Run the engine on the design's test set; agreement with FINN, accuracy, speed; writes cpu.json."""
    log = log or (lambda *_a, **_k: None)
    if finn_images < 0:
        raise BnnflowError(f"--finn must be 0 or more, got {finn_images}")
    compile_dir = resolve_compile_dir(path, board)
    model_path = compile_dir / MODEL_FILE
    if not model_path.is_file():  # compiled before compile wrote it
        log(f"{model_path} missing: writing it from the hardware graph")
        export_cpu_model(compile_dir)
    read_design_model(compile_dir)
    with CpuEngine(model_path) as engine:
        identity = _design_dataset(compile_dir, engine)
        images, labels = test_images(identity, limit, data_dir)  # all, or a seeded class-stratified subset
        images = np.ascontiguousarray(images)
        classes, scores = engine.run(images, threads=0)
        accuracy = float(np.mean(classes == labels))
        per_class = {
            identity.class_name(c): float(np.mean(classes[labels == c] == c)) for c in np.unique(labels)
        }

        n_finn = min(finn_images, len(images))
        agree_c = agree_s = 0
        first = None
        if n_finn:
            log(f"FINN's Python execution of the hardware graph on {n_finn} images ...")
            finn = finn_outputs(compile_dir, images[:n_finn])
            same_c = classes[:n_finn] == finn.classes
            same_s = (scores[:n_finn] == finn.scores).all(axis=1)
            agree_c, agree_s = int(same_c.sum()), int(same_s.sum())
            bad = np.nonzero(~(same_c & same_s))[0]
            if bad.size:
                i = int(bad[0])
                first = (
                    f"image {i}: engine class {classes[i]} scores {scores[i].tolist()}, "
                    f"FINN class {finn.classes[i]} scores {finn.scores[i].tolist()}"
                )

        import os

        cores = os.cpu_count() or 1
        # Throughput on a batch large enough for threads to pay off: the test set,
        # repeated up to THROUGHPUT_BATCH images.
        batch = np.concatenate([images] * max(1, -(-THROUGHPUT_BATCH // len(images))))[:THROUGHPUT_BATCH]
        batch = batch if len(images) < THROUGHPUT_BATCH else images
        one = _rate(engine, batch, threads=1)
        rates = {"1 thread": one, f"{cores} threads": _rate(engine, batch, threads=0)}
        report = CpuReport(
            compile_dir=str(compile_dir),
            dataset=identity.name,
            kernels=kernel_name(),
            n_images=len(images),
            accuracy=accuracy,
            finn_images=n_finn,
            finn_classes_agree=agree_c,
            finn_scores_agree=agree_s,
            first_difference=first,
            latency_us=_latency_us(engine, images, latency_calls),
            images_per_s=rates,
            throughput_batch=len(batch),
            binary_gmacs=one * engine.binary_macs / 1e9,
            binary_macs=engine.binary_macs,
            integer_macs=engine.integer_macs,
            model_bytes=engine.model_bytes,
            context_bytes=engine.context_bytes,
            num_classes=identity.num_classes,
            class_names=list(identity.class_names),
            class_accuracy=per_class,
        )
    atomic_write_json(compile_dir / REPORT_FILE, report.to_json())
    return report


def _names(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")


def _per_class(acc: dict[str, float]) -> str:
    return ", ".join(f"{name} {100 * a:.0f}%" for name, a in acc.items())


def format_report(r: CpuReport) -> str:
    agree = (
        f"{r.finn_classes_agree}/{r.finn_images} classes, {r.finn_scores_agree}/{r.finn_images} score vectors"
        if r.finn_images
        else "not checked (--finn 0)"
    )
    lines = [
        f"CPU engine ({r.kernels} kernels) on {r.n_images:,} {r.dataset} test images: {r.compile_dir}",
        f"  classes                  {r.num_classes}: {_names(r.class_names)}",
        f"  accuracy                 {100 * r.accuracy:.2f}%"
        + (f" (per class: {_per_class(r.class_accuracy)})" if len(r.class_accuracy) <= 12 else ""),
        f"  agreement with FINN      {agree}"
        + ("" if r.agrees else f"  FIRST DIFFERENCE: {r.first_difference}"),
        f"  batch 1, 1 thread        median {r.latency_us['median']:.1f} us, "
        f"p99 {r.latency_us['p99']:.1f} us (per call from Python)",
    ]
    for name, rate in r.images_per_s.items():
        lines.append(f"  {f'batch {r.throughput_batch:,}, {name}':<25}{rate:,.0f} images/s")
    lines.append(
        f"  binary MACs              {r.binary_macs:,} per image, {r.binary_gmacs:.1f} G/s on one thread"
    )
    lines.append(
        f"  memory                   model {r.model_bytes:,} bytes, {r.context_bytes:,} bytes per thread"
    )
    return "\n".join(lines)
