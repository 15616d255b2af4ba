"""A plain numpy interpreter of the bnncpu model file, written from cpu/include/bnncpu.h alone.

It shares no code with bnnflow.cpu (its own parsing at the header's offsets,
its own bit unpacking), so that the tests comparing it with FINN's Python
execution prove what the file means, not what bnnflow's writer thinks it
means. Slow and literal on purpose: weights unpacked word by word to +-1,
im2col by loops over output positions in window order (kernel row, kernel
column, channel) on the input padded with the value 0 (format 1.1), XNOR
as counting equal bits, thresholds compared one by one, max-pooling as OR,
and the label select as an upward scan with a strict >. Exactness: every
matrix product here is of small integers held in float64, exact far beyond
any accumulator these models have (< 2**53).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

THRESHOLD, MVAU, MAXPOOL, LABEL_SELECT = 1, 2, 3, 4
BITS, UINT8, INT8, INT32, CLASS = 0, 1, 2, 3, 4
ORDER_CHW, ORDER_HWC = 0, 1


@dataclass
class RefLayer:
    kind: int
    in_hwc: tuple[int, int, int]
    out_hwc: tuple[int, int, int]
    kernel: int
    stride: int
    input_type: int
    output_type: int
    n_thresholds: int
    act_val: int
    kernel_w: int = 0
    stride_w: int = 0
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    weights_pm1: np.ndarray | None = None  # (K, out_c) in {-1, +1}
    thresholds: np.ndarray | None = None  # THRESHOLD (in_c, n); MVAU (out_c,)


@dataclass
class RefModel:
    in_chw: tuple[int, int, int]
    input_order: int
    n_classes: int
    dataset: int
    layers: list[RefLayer] = field(default_factory=list)


def _u32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


def load(path: str | Path) -> RefModel:
    """Parse a model file at the offsets the header gives; ValueError on anything malformed."""
    return load_bytes(Path(path).read_bytes())


def load_bytes(data: bytes) -> RefModel:
    if len(data) < 64 or data[0:8] != b"BNNCPU\0\0":
        raise ValueError("bad magic")
    major, minor = struct.unpack_from("<HH", data, 8)
    if major != 1 or _u32(data, 12) != 64:
        raise ValueError("unknown version or header size")
    file_bytes = struct.unpack_from("<Q", data, 16)[0]
    if file_bytes != len(data):
        raise ValueError("file_bytes does not match the file's size")
    crc = _u32(data, 24)
    if zlib.crc32(data[:24] + b"\0\0\0\0" + data[28:]) != crc:
        raise ValueError("checksum mismatch")
    n_layers = _u32(data, 28)
    model = RefModel(
        in_chw=(_u32(data, 32), _u32(data, 36), _u32(data, 40)),
        input_order=_u32(data, 44),
        n_classes=_u32(data, 48),
        dataset=_u32(data, 52),
    )
    offset = 64
    for _ in range(n_layers):
        h = struct.unpack_from("<13Ii", data, offset)
        kind, record = h[0], h[1]
        layer = RefLayer(
            kind=kind,
            in_hwc=(h[2], h[3], h[4]),
            out_hwc=(h[5], h[6], h[7]),
            kernel=h[8],
            stride=h[9],
            input_type=h[10],
            output_type=h[11],
            n_thresholds=h[12],
            act_val=h[13],
        )
        if minor >= 1:  # 1.1: u16 kernel_w, u16 stride_w, u8 pad[4] at 56
            layer.kernel_w, layer.stride_w = struct.unpack_from("<HH", data, offset + 56)
            layer.pad = tuple(data[offset + 60 : offset + 64])  # type: ignore[assignment]
        else:
            layer.kernel_w, layer.stride_w = layer.kernel, layer.stride
        payload = offset + 64
        if kind == THRESHOLD:
            c = layer.in_hwc[2]
            n = layer.n_thresholds
            layer.thresholds = np.array(struct.unpack_from(f"<{c * n}i", data, payload)).reshape(c, n)
        elif kind == MVAU:
            k = layer.kernel * layer.kernel_w * layer.in_hwc[2]
            out_c = layer.out_hwc[2]
            words_per_row = (k + 63) // 64
            w = np.zeros((k, out_c))
            for n in range(out_c):
                for i in range(words_per_row):
                    word = struct.unpack_from("<Q", data, payload + 8 * (n * words_per_row + i))[0]
                    for j in range(64):
                        if 64 * i + j < k:
                            w[64 * i + j, n] = 1.0 if (word >> j) & 1 else -1.0
                        elif (word >> j) & 1:
                            raise ValueError("a weight bit past K is set")
            layer.weights_pm1 = w
            if layer.n_thresholds == 1:
                at = payload + 8 * out_c * words_per_row
                layer.thresholds = np.array(struct.unpack_from(f"<{out_c}i", data, at))
        model.layers.append(layer)
        offset += record
    if offset != len(data):
        raise ValueError("bytes after the last record")
    return model


def _windows(x: np.ndarray, layer: RefLayer) -> np.ndarray:
    """(N, out_h, out_w, kh*kw*C): every window flattened in (kernel row, kernel column, channel)
    order, over the input padded with the value 0 (FINN's FMPadding)."""
    kh, kw, sh, sw = layer.kernel, layer.kernel_w, layer.stride, layer.stride_w
    top, left, bottom, right = layer.pad
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w, _ = layer.out_hwc
    cols = np.zeros((x.shape[0], out_h, out_w, kh * kw * x.shape[3]))
    for oy in range(out_h):
        for ox in range(out_w):
            window = x[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw, :]  # (N, kh, kw, C)
            cols[:, oy, ox, :] = window.reshape(x.shape[0], -1)
    return cols


def _forward(model: RefModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = images.shape[0]
    if model.input_order == ORDER_HWC:
        x = images.transpose(0, 2, 3, 1)  # height, width, channel
    else:
        x = images  # stored order
    first = model.layers[0]
    x = np.ascontiguousarray(x).reshape(n, *first.in_hwc).astype(np.float64)
    scores = None
    for layer in model.layers:
        if layer.kind == THRESHOLD:
            out = np.full(x.shape, float(layer.act_val))
            for c in range(x.shape[3]):
                for i in range(layer.n_thresholds):
                    out[..., c] += x[..., c] >= layer.thresholds[c, i]
            x = out
        elif layer.kind == MVAU:
            cols = _windows(x, layer)
            w = layer.weights_pm1
            if layer.input_type == BITS:
                # XNOR-popcount: count the positions where the input bit equals the weight bit.
                w_bits = (w > 0).astype(np.float64)
                acc = cols @ w_bits + (1 - cols) @ (1 - w_bits)
            else:
                acc = cols @ w  # integer input times +-1
            if layer.output_type == BITS:
                x = (acc >= layer.thresholds).astype(np.float64)
            else:
                x = acc
                scores = acc.reshape(n, -1)
        elif layer.kind == MAXPOOL:
            kh, kw, sh, sw = layer.kernel, layer.kernel_w, layer.stride, layer.stride_w
            out_h, out_w, c = layer.out_hwc
            out = np.zeros((n, out_h, out_w, c))
            for oy in range(out_h):
                for ox in range(out_w):
                    window = x[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw, :]
                    out[:, oy, ox, :] = window.reshape(n, -1, c).any(axis=1)
            x = out
        elif layer.kind == LABEL_SELECT:
            flat = x.reshape(n, -1)
            classes = np.zeros(n, dtype=np.int64)
            for img in range(n):
                best = 0
                for j in range(1, flat.shape[1]):
                    if flat[img, j] > flat[img, best]:  # strict: a tie keeps the lower index
                        best = j
                classes[img] = best
            assert scores is not None
            return classes, scores.astype(np.int64)
        else:
            raise ValueError(f"unknown layer kind {layer.kind}")
    raise ValueError("no LABEL_SELECT layer")


def run(model: RefModel, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Classes (N,) and integer scores (N, n_classes) for uint8 images (N, C, H, W)."""
    from threadpoolctl import threadpool_limits

    images = np.asarray(images)
    assert images.dtype == np.uint8 and images.shape[1:] == model.in_chw, (images.dtype, images.shape)
    # One BLAS thread: OpenBLAS' workers spin-wait for a busy core (CNV's 1,000
    # images took 18x longer with two threads on two shared cores).
    with threadpool_limits(limits=1, user_api="blas"):
        outs = [_forward(model, images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
