"""The simulated IODMAs' memory layout against finn-plus-driver's packing (written independently)."""

from __future__ import annotations

import numpy as np
import pytest
from finn_plus_driver.packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy
from qonnx.core.datatype import DataType

from bnnflow_board.errors import BoardError
from bnnflow_board.simulated import streams


@pytest.mark.parametrize(
    ("dtype", "simd"),
    [("UINT8", 28), ("UINT8", 1), ("INT8", 16), ("BINARY", 64), ("BIPOLAR", 32), ("UINT4", 6), ("INT2", 12),
     ("UINT16", 3), ("INT20", 2)],
)  # fmt: skip
def test_driver_packing_is_what_the_iodma_reads(dtype: str, simd: int) -> None:
    """The driver packs folded rows; the IODMA reads frames as one little-endian bit stream."""
    rng = np.random.default_rng(simd)
    dt = DataType[dtype]
    frames, folds = 3, 5
    # (FINN carries values in float32: widths up to 24 bits stay exact)
    values = rng.integers(dt.min(), dt.max() + 1, size=(frames, 1, folds, simd))
    if dtype == "BIPOLAR":
        values = 2 * rng.integers(0, 2, size=values.shape) - 1
    packed = finnpy_to_packed_bytearray(
        values.astype(np.float32), dt, reverse_inner=True, reverse_endian=True
    )
    memory = np.ascontiguousarray(packed).reshape(-1)
    decoded = streams.decode(memory, frames, folds * simd, dtype)
    assert np.array_equal(decoded, values.reshape(frames, -1))
    # and what the output IODMA writes is what the driver unpacks
    written = streams.encode(values.reshape(frames, -1), dtype).reshape(packed.shape)
    assert np.array_equal(written, packed)
    unpacked = packed_bytearray_to_finnpy(written, dt, values.shape, reverse_inner=True, reverse_endian=True)
    assert np.array_equal(unpacked, values)


def test_element_order_is_lsb_first() -> None:
    # two UINT4 elements 0x1, 0x2 in one byte: element 0 in the low nibble
    assert streams.decode(np.array([0x21], np.uint8), 1, 2, "UINT4").tolist() == [[1, 2]]
    assert streams.encode(np.array([[1, 2]]), "UINT4").tolist() == [[0x21]]
    assert streams.decode(np.array([0xFF], np.uint8), 1, 1, "INT8").tolist() == [[-1]]


def test_bad_types_and_values() -> None:
    with pytest.raises(BoardError, match="FLOAT32"):
        streams.element_type("FLOAT32")
    with pytest.raises(BoardError, match="whole bytes"):
        streams.frame_bytes(3, "UINT2")
    with pytest.raises(BoardError, match="outside UINT8"):
        streams.encode(np.array([[256]]), "UINT8")
