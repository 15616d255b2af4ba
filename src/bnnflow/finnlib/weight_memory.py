"""The runtime-writable layers' memories as their AXI-lite port exposes them, read from FINN's RTL.

finn-plus-driver writes a runtime weight file word after word from offset 0
of a layer's AXI-lite port and reads it back from there. What those words
mean is fixed by the hardware behind the port (finn-plus 1.6.1,
``finn-rtllib``), and this module follows it, not FINN's file writer
(``make_weight_file(..., "decoupled_runtime", ...)``), so that the simulated
board can decode what a driver wrote and the tests can compare the two:

* ``axi/hdl/axilite.sv`` folds one memory entry of ``IP_DATA_WIDTH`` bits
  into ``FOLD = ceil(width / 32)`` 32-bit words; the low ``clog2(FOLD)`` bits
  of the word address select the slice, slice 0 holding bits 0..31. A write
  reaches the memory when the last slice is written (earlier slices wait in
  a register); a read fetches the entry when slice 0 is read and answers the
  other slices from that capture. Slices past ``FOLD`` read as 0.
* ``memstream/hdl/memstream_axi.sv`` (an MVAU's weights, ``mem_mode``
  ``internal_decoupled``): entry ``nf * (MW / SIMD) + sf`` holds the weights
  of output channels ``nf * PE + pe`` and inputs ``sf * SIMD + s`` for all
  ``pe``, ``s``, the value for (pe, s) in bits ``(pe * SIMD + s) * b`` up,
  ``b`` the weight type's width; BIPOLAR weights are stored as BINARY bits
  (1 for +1). The port's address is ``clog2(DEPTH * 2**clog2(FOLD)) + 2``
  bits wide.
* ``thresholding/hdl/thresholding_axi.sv`` and ``thresholding.sv``: the
  threshold of channel ``cf * PE + pe``, step ``n``, is entry
  ``(cf << (clog2(PE) + clog2(N))) | (pe << clog2(N)) | n``, ``WT`` bits, two's
  complement for a signed threshold type; the address is
  ``clog2(CF) + clog2(PE) + clog2(N) + clog2(FOLD) + 2`` bits. Entries of a
  PE or step beyond the real ones (PE or N not a power of two) are padding:
  the RTL drops writes to them and reads them as 0 (a read-back travels the
  pipeline with value 0 and no stage replaces it); FINN's file holds 0 there.

FINN's block design gives each port an aperture of ``2**address bits``
bytes, at least 4 KiB (``assign_axi_addr_proc`` in FINN's Zynq templates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.hwgraph import base_op_type, writable_nodes

MIN_APERTURE = 4096  # assign_axi_addr_proc rounds a smaller range up to 4 KiB


def clog2(x: int) -> int:
    """Verilog's $clog2: bits to address x entries (0 for x <= 1)."""
    return max(0, int(x) - 1).bit_length()


@dataclass(frozen=True)
class MemoryLayout:
    """One runtime-writable layer's parameter memory behind its AXI-lite port."""

    node: str
    kind: str  # "weights" (MVAU) or "thresholds" (Thresholding)
    datatype: str  # FINN DataType of the values (weightDataType)
    width: int  # bits of one memory entry
    entries: int  # entries the address space spans
    pe: int
    simd: int  # MVAU: SIMD; thresholds: 1
    rows: int  # MVAU: MW (inputs); thresholds: channels
    cols: int  # MVAU: MH (outputs); thresholds: steps per channel

    @property
    def fold(self) -> int:
        """32-bit words one entry is folded into (axilite.sv FOLD)."""
        return 1 + (self.width - 1) // 32

    @property
    def slot_words(self) -> int:
        """Word addresses one entry occupies: the fold rounded up to a power of two."""
        return 1 << clog2(self.fold)

    @property
    def words(self) -> int:
        """Words of the address space the layer's entries span."""
        return self.entries * self.slot_words

    @property
    def aperture(self) -> int:
        """Bytes of AXI-lite address space FINN's block design assigns to the port."""
        return max(MIN_APERTURE, 1 << (clog2(self.words) + 2))

    @property
    def value_bits(self) -> int:
        from qonnx.core.datatype import DataType

        return DataType[self.datatype].bitwidth()

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "kind": self.kind,
            "datatype": self.datatype,
            "pe": self.pe,
            "simd": self.simd,
            "rows": self.rows,
            "cols": self.cols,
            "fold": self.fold,
            "slot_words": self.slot_words,
            "words": self.words,
            "aperture": self.aperture,
        }


def memory_layout(node: Any) -> MemoryLayout:
    """The layout of a runtime-writable MVAU or Thresholding node (a ModelWrapper graph node)."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    op = base_op_type(node.op_type)
    attrs = inst.get_nodeattr_types()
    if "runtime_writeable_weights" not in attrs or not inst.get_nodeattr("runtime_writeable_weights"):
        raise BnnflowError(f"{node.name} has no runtime-writable parameters")
    dt = str(inst.get_nodeattr("weightDataType"))
    from qonnx.core.datatype import DataType

    bits = DataType[dt].bitwidth()
    if op == "MVAU":
        pe, simd = int(inst.get_nodeattr("PE")), int(inst.get_nodeattr("SIMD"))
        mw, mh = int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("MH"))
        if inst.get_nodeattr("mem_mode") != "internal_decoupled":
            raise BnnflowError(
                f"{node.name}: mem_mode {inst.get_nodeattr('mem_mode')} has no weight memory port"
            )
        for attr, plain in (("TH", 1), ("pumpedMemory", 0)):
            if attr in attrs and int(inst.get_nodeattr(attr)) != plain:
                raise BnnflowError(f"{node.name}: {attr} = {inst.get_nodeattr(attr)} is not modelled")
        if mh % pe or mw % simd:
            raise BnnflowError(f"{node.name}: PE {pe} / SIMD {simd} do not divide MH {mh} / MW {mw}")
        depth = (mh // pe) * (mw // simd)
        return MemoryLayout(node.name, "weights", dt, pe * simd * bits, depth, pe, simd, mw, mh)
    if op == "Thresholding":
        pe, channels = int(inst.get_nodeattr("PE")), int(inst.get_nodeattr("NumChannels"))
        steps = int(inst.get_nodeattr("numSteps"))
        if channels % pe:
            raise BnnflowError(f"{node.name}: PE {pe} does not divide {channels} channels")
        # The address concatenates the fields, so the space spans every combination.
        entries = (1 << clog2(channels // pe)) * (1 << clog2(pe)) * (1 << clog2(steps))
        return MemoryLayout(node.name, "thresholds", dt, bits, entries, pe, 1, channels, steps)
    raise BnnflowError(f"{node.name} ({node.op_type}) is not a runtime-writable MVAU or Thresholding")


def _threshold_entry(layout: MemoryLayout, channel: np.ndarray, step: np.ndarray) -> np.ndarray:
    cf, pe = np.divmod(channel, layout.pe)
    pb, nb = clog2(layout.pe), clog2(layout.cols)
    return (cf << (pb + nb)) | (pe << nb) | step


def _to_field(layout: MemoryLayout, values: np.ndarray) -> np.ndarray:
    """Values of the layout's datatype -> unsigned bit fields (two's complement, BIPOLAR as bits)."""
    from qonnx.core.datatype import DataType

    dt = DataType[layout.datatype]
    v = np.asarray(values, dtype=np.float64)
    if not np.all(dt.allowed(v)):
        raise BnnflowError(f"{layout.node}: values outside {layout.datatype}")
    if dt == DataType["BIPOLAR"]:
        v = (v + 1) / 2
    return np.asarray(v, dtype=np.int64) & ((1 << dt.bitwidth()) - 1)


def _from_field(layout: MemoryLayout, fields: np.ndarray) -> np.ndarray:
    from qonnx.core.datatype import DataType

    dt = DataType[layout.datatype]
    bits = dt.bitwidth()
    f = np.asarray(fields, dtype=np.int64) & ((1 << bits) - 1)
    if dt == DataType["BIPOLAR"]:
        return (2 * f - 1).astype(np.float32)
    if dt.signed() and bits > 1:
        f = np.where(f >= 1 << (bits - 1), f - (1 << bits), f)
    return f.astype(np.float32)


def _pack(layout: MemoryLayout, lanes: np.ndarray) -> np.ndarray:
    """(entries, L) fields of b bits, lane l at bits l*b.. of its entry -> the address space's words."""
    b = layout.value_bits
    n, n_lanes = lanes.shape
    bits = ((lanes[:, :, None] >> np.arange(b)) & 1).astype(np.uint8).reshape(n, n_lanes * b)
    padded = np.zeros((layout.entries, layout.fold * 32), dtype=np.uint8)
    padded[:n, : n_lanes * b] = bits
    words = np.packbits(padded, axis=1, bitorder="little").view("<u4").reshape(layout.entries, layout.fold)
    out = np.zeros((layout.entries, layout.slot_words), dtype=np.uint32)
    out[:, : layout.fold] = words
    return out.reshape(-1)


def _unpack(layout: MemoryLayout, words: np.ndarray, n: int, n_lanes: int) -> np.ndarray:
    """The inverse of _pack for the first ``n`` entries; bits above an entry's width are not stored."""
    words = np.asarray(words, dtype=np.uint32)
    if len(words) < layout.words:
        raise BnnflowError(f"{layout.node}: {len(words)} words, the memory spans {layout.words}")
    b = layout.value_bits
    slots = np.ascontiguousarray(
        words[: layout.words].reshape(layout.entries, layout.slot_words)[:n, : layout.fold]
    )
    bits = np.unpackbits(slots.astype("<u4").view(np.uint8), axis=1, bitorder="little")[:, : n_lanes * b]
    return (bits.reshape(n, n_lanes, b).astype(np.int64) << np.arange(b)).sum(axis=2)


def encode(layout: MemoryLayout, values: np.ndarray) -> np.ndarray:
    """The memory's words (uint32) holding ``values``: MVAU weights (MW, MH), thresholds (C or 1, N)."""
    fields = _to_field(layout, values)
    if layout.kind == "weights":
        mw, mh, pe, simd = layout.rows, layout.cols, layout.pe, layout.simd
        if fields.shape != (mw, mh):
            raise BnnflowError(f"{layout.node}: weights of shape {fields.shape}, expected ({mw}, {mh})")
        # [sf, s, nf, p] -> entry nf * SF + sf, lane p * SIMD + s
        lanes = fields.reshape(mw // simd, simd, mh // pe, pe).transpose(2, 0, 3, 1).reshape(-1, pe * simd)
        return _pack(layout, lanes)
    c, n = layout.rows, layout.cols
    if fields.ndim != 2 or fields.shape[1] != n or fields.shape[0] not in (1, c):
        raise BnnflowError(f"{layout.node}: thresholds of shape {fields.shape}, expected ({c}, {n})")
    entries = np.zeros((layout.entries, 1), dtype=np.int64)
    ch, st = np.meshgrid(np.arange(c), np.arange(n), indexing="ij")
    entries[_threshold_entry(layout, ch.ravel(), st.ravel()), 0] = np.broadcast_to(fields, (c, n)).ravel()
    return _pack(layout, entries)


def decode(layout: MemoryLayout, words: np.ndarray) -> np.ndarray:
    """The values the memory's words hold: MVAU weights (MW, MH); thresholds (channels, steps)."""
    if layout.kind == "weights":
        mw, mh, pe, simd = layout.rows, layout.cols, layout.pe, layout.simd
        lanes = _unpack(layout, words, (mh // pe) * (mw // simd), pe * simd)
        fields = lanes.reshape(mh // pe, mw // simd, pe, simd).transpose(1, 3, 0, 2).reshape(mw, mh)
        return _from_field(layout, fields)
    c, n = layout.rows, layout.cols
    entries = _unpack(layout, words, layout.entries, 1)[:, 0]
    ch, st = np.meshgrid(np.arange(c), np.arange(n), indexing="ij")
    return _from_field(layout, entries[_threshold_entry(layout, ch.ravel(), st.ravel())].reshape(c, n))


def writable_layouts(model: Any) -> list[MemoryLayout]:
    """Every runtime-writable layer's memory layout, in graph order."""
    return [memory_layout(n) for n in writable_nodes(model)]
