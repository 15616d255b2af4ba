"""The golden outputs a deployment package carries: what the FPGA and the ARM engine must both produce.

They come from the C CPU engine (``bnnflow.cpu.CpuEngine``) running the
compile folder's ``model.bnn``: the engine computes exactly what the compiled
design computes, and equals FINN's execution of the hardware-layer graph on
every image of the full test sets (docs/cpu-model.md; tests/test_cpu_engine.py
checks it on every compile the tests make). FINN's own execution of that graph
runs a few to a few hundred images per second; the engine runs the test set
in milliseconds, on any board's ARM cores as well.

Classes are the LabelSelect output; scores are its input, the last MVAU's
integer accumulators (what bnncpu.h calls the scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnnflow.cpu import MODEL_FILE, CpuEngine, kernel_name
from bnnflow.errors import BnnflowError

GOLDEN_SOURCE = "bnnflow-cpu engine"
DEFAULT_IMAGES = 1000  # test images a package carries with their golden outputs


def golden_outputs(compile_dir: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(classes int32 [N], scores int32 [N, n_classes], source) for uint8 images [N, C, H, W]."""
    path = Path(compile_dir) / MODEL_FILE
    if not path.is_file():
        raise BnnflowError(f"{path.parent} has no {MODEL_FILE}; run `bnnflow cpu export {path.parent}`")
    return model_golden_outputs(path, images)


def model_golden_outputs(path: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The same for a model file of its own (a weights-only update's model.bnn)."""
    with CpuEngine(path) as engine:
        classes, scores = engine.run(np.ascontiguousarray(images, dtype=np.uint8), threads=0)
    return classes, scores, f"{GOLDEN_SOURCE} ({kernel_name()} kernels)"
