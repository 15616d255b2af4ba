"""What a host-binarized design (``compile --host-binarize``) costs the host, against its frame time.

The board thresholds each image and packs the bits before the DMA
(bnnflow_board/hostbits.py). Three figures, each labelled as what it is:

* measured here: bnnflow-board's own functions (``threshold_images`` and
  ``pack_bits`` on the design's folded input shape) on this machine's CPU,
  median of repeated batches, as a fraction of the design's expected frame
  time (1 / expected frames/s);
* estimated for the Pynq-Z2's Cortex-A9 with armestimate.py's method: the C
  engine's NEON thresholding loop (the same compare-and-pack per pixel) under
  llvm-mca, times the model file's iterations for its first layer; the numpy
  path bnnflow-board runs adds its per-call overhead on top, not estimated;
* the memory bound: per frame the host reads the image (one byte per pixel)
  and writes the bits, which the DMA then reads again; at the Pynq-Z2's DDR3
  peak (16-bit bus at 1050 Mb/s per pin, TUL's PYNQ-Z2 board specification:
  2.1 GB/s) that traffic caps the frames/s whatever the CPU does, and the
  A9's achievable copy bandwidth is below that peak (not measured here).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from bnnflow_board.hostbits import pack_bits, threshold_images

from bnnflow.bench.armestimate import board_key, estimate_arm
from bnnflow.finnlib.host_threshold import read_thresholds
from bnnflow.finnlib.hwgraph import read_graph
from bnnflow.hls.iobound import io_bound, uint8_input_figures
from bnnflow.layout import CompileDir

DDR_PEAK_BYTES_S = {"pynq-z2": 1050e6 * 2}  # 16-bit DDR3 at 1050 Mb/s per pin (TUL PYNQ-Z2 specification)
DDR_SOURCE = "TUL PYNQ-Z2 board specification: 512 MB DDR3, 16-bit bus at 1050 Mb/s"
BATCH = 8192
REPEATS = 7


def folded_input_shape(compile_dir: Path) -> tuple[int, ...]:
    """The first layer's folded input shape without the batch (what finn-plus-driver packs word by word)."""
    from qonnx.custom_op.registry import getCustomOp

    hw = read_graph(CompileDir(compile_dir).hw_graph)
    return tuple(int(d) for d in getCustomOp(hw.graph.node[0]).get_folded_input_shape()[1:])


def measure_here(op: dict[str, Any], image_shape: tuple[int, ...], folded: tuple[int, ...]) -> float:
    """Seconds per frame of bnnflow-board's thresholding and packing on this CPU (median of REPEATS)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(BATCH, *image_shape), dtype=np.uint8)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        pack_bits(threshold_images(images, op).reshape(BATCH, *folded))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / BATCH


def _arm(compile_dir: Path, board: str, expected_fps: float) -> dict[str, Any]:
    key = board_key(board)
    est = estimate_arm(CompileDir(compile_dir).cpu_model, key) if key else f"no ARM estimate for {board}"
    if isinstance(est, str):
        return {"available": False, "why": est}
    first = est.layers[0]
    seconds = first.cycles / (est.target.mhz * 1e6)
    return {
        "available": True,
        "cpu": est.target.label,
        "cycles_per_frame": first.cycles,
        "frames_per_s": 1.0 / seconds if seconds else float("inf"),
        "fraction_of_frame_time": seconds * expected_fps,
        "method": "llvm-mca on the engine's NEON threshold loop x the model file's iterations",
    }


def host_binarize_summary(
    compile_dir: Path, board: str, expected_fps: float, in_bytes: int
) -> dict[str, Any] | None:
    """The DMA bound beside the uint8 image's and the host's thresholding cost of a host-binarized
    design (None for any other design)."""
    op = read_thresholds(compile_dir)
    if op is None:
        return None
    parent = read_graph(CompileDir(compile_dir).parent_graph)
    image_shape = tuple(int(d) for d in parent.get_tensor_shape(parent.graph.input[0].name)[1:])
    pixels = int(np.prod(image_shape))
    seconds = measure_here(op, image_shape, folded_input_shape(compile_dir))
    key = board_key(board)
    peak = DDR_PEAK_BYTES_S.get(key or "")
    traffic = pixels + 2 * in_bytes  # the image read, the bits written and read again by the DMA
    return {
        "threshold": op,
        "dma": {**uint8_input_figures(io_bound(compile_dir), pixels), "expected_fps": expected_fps},
        "measured_here": {
            "seconds_per_frame": seconds,
            "frames_per_s": 1.0 / seconds,
            "fraction_of_frame_time": seconds * expected_fps,
        },
        "arm_estimate": _arm(compile_dir, board, expected_fps),
        "memory_bound": {
            "bytes_per_frame": traffic,
            "frames_per_s": peak / traffic if peak else None,
            "source": DDR_SOURCE if peak else f"no DDR figure for {board}",
        },
    }


def host_binarize_lines(hb: dict[str, Any] | None, cpu_report: dict[str, Any]) -> list[str]:
    """The bench table's lines for it (``cpu_report``: the bench report's CPU section)."""
    if hb is None:
        return []
    cpu = cpu_report["host"]["cpu"]
    here, dma = hb["measured_here"], hb["dma"]
    lines = [
        f"host-binarize: {dma['in_bytes']:,} B in per frame instead of the image's "
        f"{dma['in_bytes_uint8']:,}: DMA bound {dma['io_fps']:,.0f} frames/s instead of "
        f"{dma['io_fps_uint8']:,.0f}; this fold: {dma['expected_fps']:,.0f} expected",
        f"host thresholding (host-binarize), measured here on {cpu}: {here['frames_per_s']:,.0f} frames/s, "
        f"{here['fraction_of_frame_time']:.2f}x the design's expected frame time",
    ]
    arm = hb["arm_estimate"]
    if arm["available"]:
        lines.append(
            f"host thresholding, estimated ({arm['method']}) on {arm['cpu']}: {arm['frames_per_s']:,.0f} "
            f"frames/s on one core, {arm['fraction_of_frame_time']:.2f}x the frame time (numpy's per-call "
            "overhead not included)"
        )
    else:
        lines.append(f"host thresholding on the board's ARM: no estimate ({arm['why']})")
    mem = hb["memory_bound"]
    if mem["frames_per_s"]:
        lines.append(
            f"host memory bound: {mem['bytes_per_frame']:,} B of DDR traffic per frame (image read, bits "
            f"written, bits read by the DMA) caps the host at {mem['frames_per_s']:,.0f} frames/s at the "
            f"DDR's peak ({mem['source']}); achievable bandwidth is lower"
        )
    return lines
