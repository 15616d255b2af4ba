"""The I/O bound of a compiled design: how fast FINN's DMAs can feed it.

On a PYNQ board FINN's Zynq flow (``ZynqBuild``) puts an ``IODMA_hls`` in
front of the graph's input and behind its output (``InsertIODMA`` with the
board's ``pynq_native_port_width``: 64 bits on the Zynq-7000, 128 on Zynq
UltraScale+). However fast the dataflow layers are, a frame cannot arrive
faster than its bytes cross that AXI port, so the design runs at the lower of
the compute estimate and this bound.

The DMA nodes are FINN's own, inserted on a copy of the hardware graph, so
the bytes per frame and the interface width are exactly what FINN would build
(``InsertIODMA`` narrows the width to the gcd of the transfer size and the
port). FINN gives no cycle estimate for them (``IODMA_hls`` inherits
``HWCustomOp.get_exp_cycles``, which returns 0), so the cycles are counted
here: finn-hlslib's ``Mem2Stream``/``Stream2Mem`` move one interface-width
word per clock, hence ``bits per frame / intfWidth`` cycles. Their stream
side moves one word of the neighbouring layer's stream per clock, which that
layer's own cycle estimate already covers, so only the memory side is
counted. The input DMA reads and the output DMA writes; AXI carries reads
and writes on separate channels, so the two overlap and the slower decides.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.boards import Board, get_board
from bnnflow.layout import CompileDir, CompileInfo


@dataclass(frozen=True)
class IOBound:
    """Bytes per frame through FINN's input and output DMAs, and the rate they allow."""

    board: str
    clock_ns: float
    port_bits: int  # the board's AXI port to DDR (FINN's pynq_native_port_width)
    in_bytes: int  # per frame, as the input DMA moves them (AXI streams are byte-padded)
    out_bytes: int
    in_width_bits: int  # the IODMA's intfWidth, as InsertIODMA chose it
    out_width_bits: int
    in_cycles: int
    out_cycles: int

    @property
    def cycles(self) -> int:
        return max(self.in_cycles, self.out_cycles)

    @property
    def fps(self) -> float:
        return 1e9 / self.clock_ns / self.cycles

    @property
    def limit(self) -> str:
        return "input DMA" if self.in_cycles >= self.out_cycles else "output DMA"

    def describe(self) -> str:
        """How the bound reads in a report: ``I/O: input DMA, 98 cycles/frame``."""
        return f"I/O: {self.limit}, {self.cycles:,} cycles/frame"

    def to_json(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "clock_ns": self.clock_ns,
            "port_bits": self.port_bits,
            "in_bytes": self.in_bytes,
            "out_bytes": self.out_bytes,
            "in_width_bits": self.in_width_bits,
            "out_width_bits": self.out_width_bits,
            "in_cycles": self.in_cycles,
            "out_cycles": self.out_cycles,
            "cycles": self.cycles,
            "fps": self.fps,
            "limit": self.limit,
        }


def port_bits(board: Board) -> int:
    """FINN's AXI port width for the board (what ZynqBuild gives InsertIODMA)."""
    from finn.util.basic import pynq_native_port_width

    try:
        return int(pynq_native_port_width[board.name])
    except KeyError:
        raise BnnflowError(f"FINN has no DMA port width for {board.name}") from None


def _load(model_or_compile_dir: Any) -> tuple[Any, dict[str, Any]]:
    """(hardware graph, compile.json or {}) from a ModelWrapper, an .onnx file or a compile folder."""
    from qonnx.core.modelwrapper import ModelWrapper

    if isinstance(model_or_compile_dir, ModelWrapper):
        return model_or_compile_dir, {}
    path = Path(model_or_compile_dir)
    summary: dict[str, Any] = {}
    if path.is_dir():
        folder = CompileDir(path)
        if folder.summary.is_file():
            try:
                data = json.loads(folder.summary.read_text())
            except (OSError, ValueError):
                raise BnnflowError(f"{folder.summary} is not readable JSON") from None
            info = CompileInfo.from_json(data, folder.summary)
            summary = {"board": info.board, "clock_ns": info.clock_ns}
        path = folder.hw_graph
    if not path.is_file():
        raise BnnflowError(f"no hardware graph at {path}; give a compile folder or its model_hw.onnx")
    try:
        return ModelWrapper(str(path)), summary
    except Exception as exc:  # onnx raises DecodeError and friends
        raise BnnflowError(f"cannot read ONNX model {path}: {exc}") from None


def io_bound(
    model_or_compile_dir: Any,
    board: str | Board | None = None,
    clock_ns: float | None = None,
) -> IOBound:
    """The DMA bound of a hardware-layer graph (a ModelWrapper, ``model_hw.onnx`` or a compile folder).

    ``board`` and ``clock_ns`` default to the compile folder's ``compile.json``.
    """
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.util.fpgadataflow import is_fpgadataflow_node
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model, summary = _load(model_or_compile_dir)
    board = board if board is not None else summary.get("board")
    clock_ns = clock_ns if clock_ns is not None else summary.get("clock_ns")
    if board is None or clock_ns is None:
        raise BnnflowError("io_bound needs a board and a clock (or a compile folder with compile.json)")
    brd = board if isinstance(board, Board) else get_board(board)
    if not clock_ns > 0:
        raise BnnflowError(f"clock period must be positive, got {clock_ns} ns")
    width = port_bits(brd)
    foreign = [f"{n.name} ({n.op_type})" for n in model.graph.node if not is_fpgadataflow_node(n)]
    if foreign:
        raise BnnflowError(
            "the I/O bound needs the hardware-layer graph (model_hw.onnx); this graph also has "
            + ", ".join(foreign[:3])
        )
    if any(n.op_type == "IODMA_hls" for n in model.graph.node):
        dma = model
    else:
        try:
            dma = ModelWrapper(copy.deepcopy(model.model)).transform(InsertIODMA(width))
        except AssertionError as exc:
            raise BnnflowError(f"FINN cannot place its DMAs on this graph: {exc}") from None
    in_bits = out_bits = in_cycles = out_cycles = 0
    in_width = out_width = 0
    for node in dma.graph.node:
        if node.op_type != "IODMA_hls":
            continue
        inst = getCustomOp(node)
        if inst.get_nodeattr("burstMode") == "wrap":
            continue  # external weights, read again for every frame: not bnnflow's mem_mode
        bits = int(math.prod(inst.get_normal_input_shape())) * inst.get_input_datatype().bitwidth()
        intf = int(inst.get_nodeattr("intfWidth"))
        # Several DMAs of one direction share the port's read (or write) channel.
        if inst.get_nodeattr("direction") == "in":
            in_bits, in_cycles, in_width = in_bits + bits, in_cycles + -(-bits // intf), intf
        else:
            out_bits, out_cycles, out_width = out_bits + bits, out_cycles + -(-bits // intf), intf
    if not in_cycles or not out_cycles:
        raise BnnflowError("FINN placed no input or output DMA on this graph")
    return IOBound(
        board=brd.name,
        clock_ns=float(clock_ns),
        port_bits=width,
        in_bytes=in_bits // 8,
        out_bytes=out_bits // 8,
        in_width_bits=in_width,
        out_width_bits=out_width,
        in_cycles=in_cycles,
        out_cycles=out_cycles,
    )


def uint8_input_figures(io: IOBound, pixels: int) -> dict[str, Any]:
    """A host-binarized design's DMA bound beside the one its uint8 image would give.

    With the threshold in the graph the input DMA moves one byte per pixel, in
    whole-byte words, so InsertIODMA's interface width is the gcd of the frame's
    bits and the port (as ``io_bound`` reads it from FINN's node); the output
    DMA is the same in both designs.
    """
    bits = 8 * pixels
    in_cycles = bits // math.gcd(bits, io.port_bits)
    cycles = max(in_cycles, io.out_cycles)
    return {
        "in_bytes": io.in_bytes,
        "in_bytes_uint8": pixels,
        "io_fps": io.fps,
        "io_fps_uint8": 1e9 / io.clock_ns / cycles,
        "in_cycles_uint8": in_cycles,
    }
