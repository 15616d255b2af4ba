"""The deployment format, defined once: what ``bnnflow package`` writes and ``bnnflow-board`` reads.

The host (``bnnflow.deploy``, ``bnnflow.bench``, the board table of
``bnnflow.hls.boards``) imports this module from the installed bnnflow-board,
as the board does, so that a file name, the input layout, a report key or a
board's name cannot mean one thing on the host and another on the board. It
is standard library only and valid on Python 3.10: it runs on the PYNQ
images, where numpy is 1.x, and on the host, where it is 2.x.

A package's layout (``bnnflow package``; FINN's own deployment layout plus
what bnnflow adds)::

    manifest.json            what is in the package, for which board, a sha256 per file
    bitfile/finn-accel.bit   Vivado's bitfile and hardware handoff (only where Vivado ran)
    bitfile/finn-accel.hwh
    report/post_route_timing.rpt
    driver/settings.json     FINN's MakePYNQDriver output
    driver/runtime_weights/  FINN's runtime weight files (a --runtime-weights design)
    model.bnn                the CPU engine's model file
    cpu/                     the CPU engine's sources, built on the board
    testset/                 images, labels and golden outputs
    bnnflow-board/           this runtime, installed by install.sh

and what bnnflow-board itself writes into it (``LOCAL_DIRS``, never part of
the package): ``bench/`` (the bench report), ``build/`` and ``weights/`` (the
updates update-weights applied, ``weights/active.json`` naming the active one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- the deployment package --------------------------------------------------------------------
MANIFEST = "manifest.json"
FORMAT = "bnnflow-deploy"
FORMAT_VERSION = 1
# what a reader needs before it looks at anything else
MANIFEST_KEYS = ("board", "files", "driver", "testset", "instances", "fpga_input", "bitfile")

BITFILE = "bitfile/finn-accel.bit"
HWH = "bitfile/finn-accel.hwh"
TIMING_REPORT = "report/post_route_timing.rpt"
DRIVER_SETTINGS = "driver/settings.json"
RUNTIME_WEIGHTS = "driver/runtime_weights"  # FINN's deployment layout: next to settings.json
MODEL = "model.bnn"
CPU_SOURCES = "cpu"
TESTSET_IMAGES = "testset/images.u8"  # N x C x H x W uint8, the dataset's layout
TESTSET_LABELS = "testset/labels.u8"  # N uint8: up to 256 classes
TESTSET_LABELS_WIDE = "testset/labels.u16"  # N uint16, little-endian: 257 to 65,536 classes
#: the labels file for up to ``most`` classes: (most, file, numpy dtype); the manifest's testset "labels"
#: names the file, and a reader takes the dtype from its name's suffix
LABELS_FILES = ((256, TESTSET_LABELS, "u1"), (65536, TESTSET_LABELS_WIDE, "<u2"))
GOLDEN_CLASSES = "testset/golden_classes.i32"  # N int32, little-endian
GOLDEN_SCORES = "testset/golden_scores.i32"  # N x n_classes int32, little-endian
BOARD_RUNTIME = "bnnflow-board"
INSTALL_SCRIPT = "install.sh"

# --- a weights-only update package (``bnnflow package --weights-only``) --------------------------
UPDATE_FORMAT = "bnnflow-weights"
UPDATE_VERSION = 1
UPDATE_MANIFEST_KEYS = ("board", "design", "runtime_weights", "cpu", "testset", "files")
UPDATE_RUNTIME_WEIGHTS = "runtime_weights"
# the update's model file and golden outputs have the deployment package's names: MODEL, GOLDEN_*

# --- what bnnflow-board writes inside a package folder -----------------------------------------
BENCH_DIR = "bench"  # bnnflow-board bench's default --out
BUILD_DIR = "build"
WEIGHTS_DIR = "weights"  # weights/<update id>/: the updates update-weights applied
ACTIVE_WEIGHTS = "active.json"  # weights/active.json: which of them the FPGA is to hold
LOCAL_DIRS = (BENCH_DIR, BUILD_DIR, WEIGHTS_DIR)

# --- the bench report (``bnnflow-board bench``; ``bnnflow bench --board-report`` reads it) -------
BENCH_REPORT = "bench.json"
BENCH_TEXT = "bench.txt"
BENCH_CHART = "bench.png"
# the keys a reader requires; the rest of the report is optional to it
REPORT_KEYS = ("bnnflow_board", "simulated_board", "board", "package", "testset", "fpga", "cpu", "timing")
# one row of the report's "timing" list
TIMING_KEYS = (
    "engine", "mode", "batch", "threads", "warmup", "repeats", "median_ms", "p99_ms", "throughput_fps",
)  # fmt: skip
# package.model_sha256: the sha256 of the package's model.bnn, which tells the host which design ran
REPORT_MODEL_SHA256 = "model_sha256"


class FormatError(ValueError):
    """Something that breaks the deployment format; each side turns it into its own one-line error."""


def labels_file(n_classes: int) -> tuple[str, str]:
    """(file, numpy dtype) of the test-set labels for ``n_classes``: the narrowest that holds them."""
    for most, name, dtype in LABELS_FILES:
        if n_classes <= most:
            return name, dtype
    raise FormatError(
        f"{n_classes:,} classes: a package's test-set labels hold at most {LABELS_FILES[-1][0]:,}"
    )


def labels_dtype(name: str) -> str:
    """The numpy dtype of the labels file ``name`` (the manifest's testset "labels"), by its suffix."""
    suffixes = {Path(file).suffix: dtype for _, file, dtype in LABELS_FILES}
    suffix = Path(name).suffix
    if suffix not in suffixes:
        raise FormatError(
            f"test-set labels {name}: unknown file type {suffix or '(none)'!r}, not one of "
            f"{', '.join(suffixes)}"
        )
    return suffixes[suffix]


def sha256(path: str | Path) -> str:
    """The sha256 the manifests list per file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the accelerator's input layout ------------------------------------------------------------
# FINN leaves the layout layers between the graph's input and the accelerator on the host
# (a Transpose NCHW -> NHWC, a Reshape); the manifest's fpga_input.from_images lists them, in
# order, and the board applies them to the dataset's N x C x H x W images. A host-binarized
# design's list starts with its input threshold, which needs numpy: hostbits.apply_host_ops.


def transpose_op(perm: Iterable[int]) -> dict[str, Any]:
    return {"op": "transpose", "perm": [int(p) for p in perm]}


def reshape_op(shape: Iterable[int]) -> dict[str, Any]:
    """A Reshape; its batch dimension is the images', whatever the graph says."""
    return {"op": "reshape", "shape": [int(d) for d in shape]}


def apply_input_ops(images: Any, ops: Sequence[dict[str, Any]]) -> Any:
    """Dataset images (N, C, H, W) in the accelerator's input layout.

    ``images`` is a numpy array (duck-typed, so that this module needs no
    numpy); the result may be a view: make it contiguous before a DMA copy.
    """
    x = images
    for op in ops:
        if op.get("op") == "transpose":
            x = x.transpose(op["perm"])
        elif op.get("op") == "reshape":
            x = x.reshape([x.shape[0], *op["shape"][1:]])
        else:
            raise FormatError(f"unknown host-side op {op.get('op')!r} in the manifest")
    return x


# --- the boards --------------------------------------------------------------------------------
# Parts are FINN's (``finn.util.basic.pynq_part_map``; the host's tests check they agree); the
# rest tells the boards apart at run time: the CPU architecture the PYNQ image runs, the
# processing system in FINN's Zynq shell (finn/transformation/fpgadataflow/templates.py: its
# instance is ``zynq_ps``, its AXI-lite peripherals start at 0x40000000 on Zynq-7000 and
# 0xA0000000 on Zynq UltraScale+), and the Vivado board part FINN's shell sets.


@dataclass(frozen=True)
class BoardSpec:
    name: str  # FINN's board name (``DataflowBuildConfig.board``), as in the package manifest
    part: str
    family: str  # "zynq-7000" or "zynq-ultrascale+"
    arch: str  # platform.machine() of the board's Linux
    cpu: str
    board_part: str  # Vivado board_part FINN's Zynq shell sets
    axi_base: int  # first AXI-lite peripheral address in FINN's shell
    ddr_bytes: int

    device: str  # the die, as a .bit header and a .hwh name it (xc prefix added)
    package: str


BOARDS: dict[str, BoardSpec] = {
    b.name: b
    for b in (
        BoardSpec(
            "Pynq-Z2", "xc7z020clg400-1", "zynq-7000", "armv7l", "Cortex-A9 x2",
            "tul.com.tw:pynq-z2:part0:1.0", 0x4000_0000, 512 << 20, "xc7z020", "clg400",
        ),
        # Ultra96 V1 and V2 share the xczu3eg die; FINN maps V1 to the commercial (-e)
        # and V2 to the industrial (-i) grade.
        BoardSpec(
            "Ultra96", "xczu3eg-sbva484-1-e", "zynq-ultrascale+", "aarch64", "Cortex-A53 x4",
            "avnet.com:ultra96v1:part0:1.2", 0xA000_0000, 2048 << 20, "xczu3eg", "sbva484",
        ),
        BoardSpec(
            "Ultra96-V2", "xczu3eg-sbva484-1-i", "zynq-ultrascale+", "aarch64", "Cortex-A53 x4",
            "avnet.com:ultra96v2:part0:1.2", 0xA000_0000, 2048 << 20, "xczu3eg", "sbva484",
        ),
    )
}  # fmt: skip


def board_key(name: str) -> str:
    """The spelling-free form of a board name: Pynq-Z2, pynq_z2 and PYNQZ2 are one board.

    People type these, and PYNQ images record them (device tree, BOARD), in
    every spelling.
    """
    return "".join(c for c in str(name).lower() if c.isalnum())


def find_board(name: str) -> BoardSpec | None:
    """The board a name means, in any spelling, or None."""
    return next((b for b in BOARDS.values() if board_key(b.name) == board_key(name)), None)


def same_board(a: str, b: str) -> bool:
    return board_key(a) == board_key(b)


def board_matches(package_board: str, running: str) -> bool:
    """The running board can load a package's bitfile: the same board, or any Ultra96 for an Ultra96.

    Ultra96 V1 and V2 carry the same xczu3eg die and PYNQ images name them
    loosely (Ultra96, Ultra96V2).
    """
    a, b = board_key(package_board), board_key(running)
    return a == b or (a.startswith("ultra96") and b.startswith("ultra96"))


def normalise_device(device: str) -> str:
    """A die name as BoardSpec.device spells it (7z020 -> xc7z020)."""
    d = device.lower().strip()
    return d if d.startswith("xc") else "xc" + d


def family_of_device(device: str) -> str | None:
    """zynq-7000 / zynq-ultrascale+ for a die name as a .bit or .hwh gives it (7z020, xczu3eg)."""
    d = device.lower()
    if d.startswith("xc"):
        d = d[2:]
    if d.startswith("7z"):
        return "zynq-7000"
    if d.startswith("zu"):
        return "zynq-ultrascale+"
    return None


def board_of_device(device: str) -> BoardSpec | None:
    """The first board with this die (Ultra96 for xczu3eg), or None."""
    return next((b for b in BOARDS.values() if b.device == device), None)
