"""A host-binarized design's input: the host thresholds the 8-bit images to bits and packs them.

A network whose first layer thresholds each 8-bit pixel to one bit (TFC, SFC,
LFC) can be compiled with ``bnnflow compile --host-binarize``: the compiled
graph then takes the bits (FINN's BINARY input datatype) and the threshold
runs on the host before the DMA, which moves 1 bit per pixel instead of 8.
The thresholds travel in the package's manifest as the first of the
``fpga_input.from_images`` ops::

    {"op": "threshold", "shape": [C, H, W] or a shape that broadcasts to it, "values": [...]}

``values`` are integers, flattened in C order: pixel ``x`` becomes the bit
``x >= t`` (FINN's MultiThreshold with one step, out_bias 0, on integer
inputs, where ``x >= 127.5`` and ``x >= 128`` agree).

finn-plus-driver packs a BINARY input word by word (``FINNDMAOverlay.pack_input``:
``finnpy_to_packed_bytearray`` with both ``reverse_inner`` and
``reverse_endian``): element ``i`` of a folded word is bit ``i % 8`` of the
word's byte ``i // 8``, a word padded with zero bits to whole bytes. That is
numpy's ``packbits`` with ``bitorder="little"`` along the word, which
``pack_bits`` does in one call where finn-plus-driver's general path (any
word whose length is not a multiple of 8) converts every value to a hex
string. host_driver/tests check the two give the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnnflow_board.deployformat import apply_input_ops
from bnnflow_board.errors import BoardError

THRESHOLD_OP = "threshold"
#: Threshold values are clipped to this range: on uint8 pixels 0 keeps every pixel, 256 none.
LOWEST, HIGHEST = 0, 256


def threshold_op(values: Any) -> dict[str, Any]:
    """The manifest's threshold op for integer thresholds ``values`` (broadcastable to C, H, W)."""
    arr = np.asarray(values)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"thresholds must be a 3-d integer array, got {arr.dtype} {arr.shape}")
    arr = np.clip(arr, LOWEST, HIGHEST)
    return {"op": THRESHOLD_OP, "shape": [int(d) for d in arr.shape], "values": arr.ravel().tolist()}


def op_thresholds(op: dict[str, Any]) -> np.ndarray:
    """A threshold op's values as an int32 array of its shape; a malformed op is a BoardError."""
    shape, values = op.get("shape"), op.get("values")
    if not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise BoardError(f"threshold op: shape must be 3 positive integers, got {shape!r}")
    if not isinstance(values, list) or len(values) != int(np.prod(shape)):
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise BoardError(f"threshold op: {int(np.prod(shape))} values expected for shape {shape}, got {got}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and LOWEST <= v <= HIGHEST for v in values):
        raise BoardError(f"threshold op: values must be integers in [{LOWEST}, {HIGHEST}]")
    return np.asarray(values, dtype=np.int32).reshape(shape)


def threshold_images(images: Any, op: dict[str, Any]) -> np.ndarray:
    """uint8 (N, C, H, W) images -> their bits (uint8 0/1, same shape), by the op's thresholds."""
    thr = op_thresholds(op)
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise BoardError(
            f"threshold op: images must be an (N, C, H, W) array, got {getattr(images, 'shape', images)}"
        )
    try:
        np.broadcast_shapes(images.shape[1:], thr.shape)
    except ValueError:
        raise BoardError(
            f"threshold op: thresholds {list(thr.shape)} do not fit images {list(images.shape[1:])}"
        ) from None
    if thr.size == 1:  # one threshold for every pixel: compare with a scalar, no broadcast pass
        return (images >= thr.item()).view(np.uint8)
    return (images >= thr).view(np.uint8)


def pack_bits(folded: np.ndarray) -> np.ndarray:
    """0/1 values in finn-plus-driver's folded input shape -> its packed bytes (see the module doc).

    Each word is padded to whole bytes first, so that one ``packbits`` over the flat array packs
    every word: ``packbits`` along a short last axis costs about 100x more per frame (measured
    with 14- and 16-bit words; docs/host-binarize.md).
    """
    bits = np.asarray(folded, dtype=np.uint8)
    word = bits.shape[-1]
    nbytes = -(-word // 8)
    if word % 8:
        padded = np.zeros((*bits.shape[:-1], 8 * nbytes), dtype=np.uint8)
        padded[..., :word] = bits
        bits = padded
    return np.packbits(bits.reshape(-1), bitorder="little").reshape(*bits.shape[:-1], nbytes)


def apply_host_ops(images: np.ndarray, ops: list[dict[str, Any]]) -> np.ndarray:
    """The manifest's ``fpga_input.from_images`` ops on dataset images: the threshold first where
    the design is host-binarized, then the layout ops (deployformat.apply_input_ops)."""
    if ops and ops[0].get("op") == THRESHOLD_OP:
        images, ops = threshold_images(images, ops[0]), ops[1:]
    return apply_input_ops(images, ops)
