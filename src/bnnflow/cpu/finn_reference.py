"""What the CPU engine must reproduce: FINN's Python execution of the hardware-layer graph.

``finn_outputs`` runs a compile folder's ``intermediate_models/step_convert_to_hw.onnx``
(the graph the compile stage's verification chain checks against the QONNX
model and the streamlined graph) with ``finn.core.onnx_exec.execute_onnx`` on
uint8 images and returns, per image, the class and the integer scores the
LabelSelect ranks (the last MVAU's accumulators). Execution goes through
bnnflow.hls.verify's fast path (qonnx's value sanitising checked afterwards
instead of run per node, BLAS on one thread), which that module tests to be
identical to the library default. FINN's hardware layers take one image at a
time, so images run one by one, in ``workers`` processes for large sets.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.execution import execute, fast_execution, integer_tensors
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.finnlib.host_threshold import host_bits, read_thresholds

HW_EXEC_GRAPH = Path("intermediate_models") / "step_convert_to_hw.onnx"


@dataclass
class FinnOutputs:
    classes: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N, n_classes) int64
    seconds: float
    workers: int

    @property
    def images_per_s(self) -> float:
        return len(self.classes) / self.seconds if self.seconds > 0 else float("inf")


class _Runner:
    """One process's copy of the graph and the names of its score and class tensors."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.ints = integer_tensors(model)
        selects = [n for n in model.graph.node if n.op_type.startswith("LabelSelect")]
        if len(selects) != 1:
            raise BnnflowError(f"expected one LabelSelect in the hardware-layer graph, found {len(selects)}")
        self.scores_name = selects[0].input[0]
        self.class_name = selects[0].output[0]

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        classes = np.zeros(len(images), dtype=np.int64)
        scores = []
        for i in range(len(images)):
            ctx, _ = execute(self.model, images[i : i + 1].astype(np.float32), self.ints)
            s = np.asarray(ctx[self.scores_name], dtype=np.float64).ravel()
            if not np.array_equal(s, np.round(s)):
                raise BnnflowError(f"image {i}: FINN's scores are not integers: {s}")
            scores.append(s.astype(np.int64))
            classes[i] = int(np.ravel(ctx[self.class_name])[0])
        return classes, np.stack(scores)


_WORKER: _Runner | None = None
# Holds fast_execution() open for the life of a worker process: a context
# manager nothing refers to is closed by the garbage collector, which would
# hand BLAS its threads back (seen: CNV 10x slower in workers than in-process).
_WORKER_STACK = contextlib.ExitStack()


def _worker_init(graph: bytes) -> None:
    global _WORKER

    prepare_finn()
    from qonnx.core.modelwrapper import ModelWrapper

    _WORKER_STACK.enter_context(fast_execution())
    _WORKER = _Runner(ModelWrapper(graph))


def _worker_run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.run(images)


def load_hw_graph(compile_dir: str | Path) -> Any:
    """The compile folder's step_convert_to_hw graph (a ModelWrapper)."""
    path = Path(compile_dir) / HW_EXEC_GRAPH
    if not path.is_file():
        raise BnnflowError(f"{compile_dir} is not a compile folder: no {HW_EXEC_GRAPH}")
    prepare_finn()
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(path))


def finn_outputs(
    compile_dir: str | Path,
    images: np.ndarray,
    workers: int = 1,
    chunk: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> FinnOutputs:
    """Classes and scores of FINN's Python execution of the hardware-layer graph, in image order.

    ``images``: uint8 (N, C, H, W) as the dataset stores them. ``workers``:
    processes (spawned; each loads the graph once) sharing chunks of
    ``chunk`` images; 1 runs here. ``progress(done, total)`` is called as
    chunks finish. A host-binarized design's graph takes the images as the host
    thresholds them (host_thresholds.json), so these are the host's and the FPGA's
    outputs together.
    """
    model = load_hw_graph(compile_dir)
    images = host_bits(np.asarray(images), read_thresholds(compile_dir))
    n = len(images)
    start = time.perf_counter()
    workers = max(1, min(int(workers), math.ceil(n / chunk) if n else 1))
    if workers == 1:
        runner = _Runner(model)
        parts = []
        with fast_execution():
            for s in range(0, n, chunk):
                parts.append(runner.run(images[s : s + chunk]))
                if progress:
                    progress(min(s + chunk, n), n)
    else:
        # spawn, not fork: torch's and onnxruntime's thread pools do not survive a fork.
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(model.model.SerializeToString(),),
        ) as pool:
            futures = [pool.submit(_worker_run, images[s : s + chunk]) for s in range(0, n, chunk)]
            parts = []
            for fut in futures:
                parts.append(fut.result())
                if progress:
                    progress(min(len(parts) * chunk, n), n)
    seconds = time.perf_counter() - start
    if not parts:
        return FinnOutputs(np.zeros(0, np.int64), np.zeros((0, 0), np.int64), seconds, workers)
    return FinnOutputs(
        classes=np.concatenate([p[0] for p in parts]),
        scores=np.concatenate([p[1] for p in parts]),
        seconds=seconds,
        workers=workers,
    )
