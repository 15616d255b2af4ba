"""How FINN's IODMAs lay frames out in memory, decoded and encoded for the simulated board.

Written from the hardware's side, independently of FINN's (and
finn-plus-driver's) packing code, so that the simulated board checks the
driver's packing rather than repeating it: FINN's IODMA (``IODMA_hls``)
reads ``NumBytes`` = elements x bit width / 8 bytes per frame with
``Mem2Stream_Batch`` as little-endian AXI words and width-converts them to
the stream, lowest bits first. Element ``k`` of a frame therefore sits in
bits ``[k*w, (k+1)*w)`` of the frame, bit 0 being the least significant bit
of the frame's first byte; frames follow each other back to back. The output
IODMA (``Stream2Mem_Batch``) writes the same layout.

Where the stream's word is not whole bytes (a 1-bit input: 14 bits per word,
say), FINN's ``InsertIODMA`` gives the IODMA the padded word
(``get_instream_width_padded``): a frame is then ``words`` words of whole
bytes each, element ``k`` of a word in its bit ``k*w``, the rest of the
word's last byte padding the layer's stream does not read.
"""

from __future__ import annotations

import re

import numpy as np

from bnnflow_board.errors import BoardError


def element_type(datatype: str) -> tuple[int, str]:
    """(bit width, kind) of a FINN DataType name: kind is unsigned, signed, binary or bipolar."""
    name = datatype.strip()
    m = re.fullmatch(r"DataType\['(\w+)'\]", name)
    if m:
        name = m.group(1)
    if name == "BINARY":
        return 1, "unsigned"
    if name == "BIPOLAR":
        return 1, "bipolar"
    m = re.fullmatch(r"(U?)INT(\d+)", name)
    if not m or not 1 <= int(m.group(2)) <= 32:
        raise BoardError(f"simulated board: IODMA element type {datatype!r} is not an integer type it models")
    return int(m.group(2)), "unsigned" if m.group(1) else "signed"


def frame_bytes(elements: int, datatype: str) -> int:
    width, _ = element_type(datatype)
    if elements * width % 8:
        raise BoardError("simulated board: an IODMA frame must be whole bytes (FINN asserts it too)")
    return elements * width // 8


def decode(
    memory: np.ndarray, n_frames: int, elements: int, datatype: str, words: int = 0, nbytes: int = 0
) -> np.ndarray:
    """n_frames x elements integers from the bytes an input IODMA reads (``nbytes`` per frame in
    ``words`` byte-padded words, where the IODMA pads them; see the module doc)."""
    width, kind = element_type(datatype)
    dense = frame_bytes(elements, datatype) if elements * width % 8 == 0 else 0
    if not words or nbytes == dense:
        words, nbytes = 1, frame_bytes(elements, datatype)
    if nbytes % words or elements % words or elements // words * width > nbytes // words * 8:
        raise BoardError(
            f"simulated board: {elements} elements do not fit {words} words of {nbytes // words} bytes"
        )
    per_word = elements // words * width
    raw = np.asarray(memory, dtype=np.uint8).reshape(n_frames, words, nbytes // words)
    bits = np.unpackbits(raw, axis=2, bitorder="little")[:, :, :per_word]
    bits = bits.reshape(n_frames, elements, width)
    values = (bits.astype(np.int64) << np.arange(width, dtype=np.int64)).sum(axis=2)
    if kind == "signed":
        values = np.where(values >= 1 << (width - 1), values - (1 << width), values)
    elif kind == "bipolar":
        values = 2 * values - 1
    return values


def encode(values: np.ndarray, datatype: str) -> np.ndarray:
    """The bytes an output IODMA writes for n_frames x elements integers (one row per frame)."""
    width, kind = element_type(datatype)
    values = np.asarray(values, dtype=np.int64)
    n_frames, elements = values.shape
    lo, hi = {
        "unsigned": (0, (1 << width) - 1),
        "signed": (-(1 << (width - 1)), (1 << (width - 1)) - 1),
        "bipolar": (-1, 1),
    }[kind]
    if values.size and (
        values.min() < lo or values.max() > hi or (kind == "bipolar" and (values == 0).any())
    ):
        raise BoardError(f"simulated board: accelerator output outside {datatype}")
    if kind == "bipolar":
        values = (values + 1) // 2
    values = values & ((1 << width) - 1)
    bits = ((values[:, :, None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(n_frames, elements * width), axis=1, bitorder="little")
