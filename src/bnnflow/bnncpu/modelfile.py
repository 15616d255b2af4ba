"""The bnncpu model file: constants, layer records, writer and validating reader.

The format is defined byte for byte in ``cpu/include/bnncpu.h``; this module
mirrors its constants (tests/test_cpu_export.py parses the header and checks
that they agree) and checks everything the C reader checks, so a file written
here loads there and a file refused there is refused here. Little-endian
throughout; a 64-byte file header, then one record per layer.
"""

from __future__ import annotations

import enum
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnnflow.errors import BnnflowError
from bnnflow.runs import atomic_write_bytes

FORMAT_MAJOR = 1
FORMAT_MINOR = 1
MAGIC = b"BNNCPU\0\0"
HEADER_BYTES = 64
LAYER_HEADER_BYTES = 64
MAX_LAYERS = 64
MAX_DIM = 4096
MAX_K = 1 << 20
MAX_FILE_BYTES = 1 << 31

# The two headers field by field, in the header's names; the test of the header
# agreement checks names, offsets and types against its tables.
FILE_HEADER_FIELDS = (
    "magic",
    "version_major",
    "version_minor",
    "header_bytes",
    "file_bytes",
    "crc32",
    "n_layers",
    "in_c",
    "in_h",
    "in_w",
    "input_order",
    "n_classes",
    "dataset",
    "flags",
    "reserved",
)
FILE_HEADER = struct.Struct("<8sHHIQIIIIIIIIII")
CRC_OFFSET = 24
LAYER_HEADER_FIELDS = (
    "kind",
    "record_bytes",
    "in_h",
    "in_w",
    "in_c",
    "out_h",
    "out_w",
    "out_c",
    "kernel",
    "stride",
    "input_type",
    "output_type",
    "n_thresholds",
    "act_val",
    "kernel_w",  # format 1.1; in 1.0 files the reserved u32[2] (zero)
    "stride_w",
    "pad",  # u8[4]: top, left, bottom, right
)
LAYER_HEADER = struct.Struct("<IIIIIIIIIIIIIiHH4s")
assert FILE_HEADER.size == HEADER_BYTES and LAYER_HEADER.size == LAYER_HEADER_BYTES


class LayerKind(enum.IntEnum):
    THRESHOLD = 1
    MVAU = 2
    MAXPOOL = 3
    LABEL_SELECT = 4


class ValueType(enum.IntEnum):
    """``enum bnn_type``: what a tensor between layers holds."""

    BITS = 0  # {0, 1}; 1 stands for +1 (FINN's BINARY encoding of a bipolar value)
    UINT8 = 1
    INT8 = 2
    INT32 = 3
    CLASS = 4


class InputOrder(enum.IntEnum):
    CHW = 0
    HWC = 1


class Dataset(enum.IntEnum):
    NONE = 0
    MNIST = 1
    CIFAR10 = 2
    DIGITS = 3


# bnnflow.data's dataset names
DATASET_BY_NAME = {"mnist": Dataset.MNIST, "cifar10": Dataset.CIFAR10, "digits": Dataset.DIGITS}

# The output range of a THRESHOLD layer: act_val + (0 .. n_thresholds) must fit.
_THRESHOLD_RANGE = {ValueType.BITS: (0, 1), ValueType.INT8: (-128, 127)}
_I32 = (-(1 << 31), (1 << 31) - 1)


@dataclass(eq=False)
class Layer:
    """One layer record. Shapes are height x width x channels (FINN's NHWC stream order).

    Windows (MVAU, MAXPOOL) are ``kernel`` x ``kernel_w`` pixels moved ``stride`` rows and
    ``stride_w`` columns at a time (0: the same as ``kernel`` / ``stride``, a square window),
    over the input padded by ``pad`` = (top, left, bottom, right) pixels of the value 0 (MVAU
    only). ``weights`` (MVAU): the MVAU weight matrix, shape (K, out_c) with
    K = kernel * kernel_w * in_c in window order (kernel row, kernel column,
    channel), values 1 for +1 and 0 for -1. ``thresholds``: THRESHOLD
    (in_c, n_thresholds); MVAU with bits out (out_c,); else None.
    """

    kind: LayerKind
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    input_type: ValueType
    output_type: ValueType
    kernel: int = 1
    stride: int = 1
    act_val: int = 0
    weights: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    kernel_w: int = 0
    stride_w: int = 0
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        self.kernel_w = self.kernel_w or self.kernel
        self.stride_w = self.stride_w or self.stride
        self.pad = tuple(int(v) for v in self.pad)  # type: ignore[assignment]

    @property
    def n_thresholds(self) -> int:
        if self.thresholds is None:
            return 0
        return 1 if self.kind == LayerKind.MVAU else int(self.thresholds.shape[1])

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (self.in_h, self.in_w, self.in_c)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_h, self.out_w, self.out_c)

    @property
    def k(self) -> int:
        """Inputs per output of an MVAU: the window's length."""
        return self.kernel * self.kernel_w * self.in_c

    @property
    def padded_in(self) -> tuple[int, int]:
        """The height and width the window slides over: the input with its padding."""
        return (self.in_h + self.pad[0] + self.pad[2], self.in_w + self.pad[1] + self.pad[3])

    @property
    def window_text(self) -> str:
        text = f"kernel {self.kernel}x{self.kernel_w} stride {self.stride}x{self.stride_w}"
        return text + (f" pad {','.join(map(str, self.pad))}" if any(self.pad) else "")

    def same_as(self, other: Layer) -> bool:
        """Equal header fields and payload."""

        def arrays_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            return (a is None and b is None) or (
                a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b)
            )

        return (
            _header_fields(self) == _header_fields(other)
            and arrays_equal(self.weights, other.weights)
            and arrays_equal(self.thresholds, other.thresholds)
        )


@dataclass(eq=False)
class CpuModel:
    """A whole model file: the image it reads, how, and its layers."""

    in_c: int
    in_h: int
    in_w: int
    input_order: InputOrder
    n_classes: int
    dataset: Dataset
    layers: list[Layer] = field(default_factory=list)
    version_minor: int = FORMAT_MINOR

    def same_as(self, other: CpuModel) -> bool:
        return (
            (self.in_c, self.in_h, self.in_w, self.input_order, self.n_classes, self.dataset)
            == (other.in_c, other.in_h, other.in_w, other.input_order, other.n_classes, other.dataset)
            and len(self.layers) == len(other.layers)
            and all(a.same_as(b) for a, b in zip(self.layers, other.layers, strict=True))
        )

    def describe(self) -> str:
        """A few lines: the input, then one line per layer (``bnnflow cpu info``)."""
        order = "HWC (transposed)" if self.input_order == InputOrder.HWC else "CHW (stored order)"
        lines = [
            f"format {FORMAT_MAJOR}.{self.version_minor}, dataset {self.dataset.name.lower()}, "
            f"input {self.in_c}x{self.in_h}x{self.in_w} uint8 read as {order}, "
            f"{self.n_classes} classes, {len(self.layers)} layers"
        ]
        binary = integer = 0
        for i, la in enumerate(self.layers):
            text = (
                f"  {i:2d} {la.kind.name:<12} {_shape(la.in_shape):>11} {la.input_type.name:<5} -> "
                f"{_shape(la.out_shape):>11} {la.output_type.name:<5}"
            )
            if la.kind == LayerKind.MVAU:
                text += f"  {la.window_text}, K {la.k}, {la.n_thresholds} threshold(s)"
                macs = la.out_h * la.out_w * la.out_c * la.k
                if la.input_type == ValueType.BITS:
                    binary += macs
                else:
                    integer += macs
            elif la.kind == LayerKind.MAXPOOL:
                text += f"  {la.window_text}"
            elif la.kind == LayerKind.THRESHOLD:
                text += f"  {la.n_thresholds} threshold(s) per channel, act_val {la.act_val}"
            lines.append(text)
        lines.append(f"per image: {binary:,} XNOR-popcount MACs, {integer:,} integer MACs")
        return "\n".join(lines)


def _shape(s: tuple[int, int, int]) -> str:
    return "x".join(str(v) for v in s)


def _header_fields(la: Layer) -> tuple[int, ...]:
    return (
        int(la.kind),
        la.in_h,
        la.in_w,
        la.in_c,
        la.out_h,
        la.out_w,
        la.out_c,
        la.kernel,
        la.stride,
        int(la.input_type),
        int(la.output_type),
        la.n_thresholds,
        la.act_val,
        la.kernel_w,
        la.stride_w,
        *la.pad,
    )


def _words_per_row(k: int) -> int:
    return (k + 63) // 64


def _payload_bytes(la: Layer) -> int:
    if la.kind == LayerKind.THRESHOLD:
        return 4 * la.in_c * la.n_thresholds
    if la.kind == LayerKind.MVAU:
        return 8 * la.out_c * _words_per_row(la.k) + 4 * la.out_c * la.n_thresholds
    return 0


def _record_bytes(la: Layer) -> int:
    return LAYER_HEADER_BYTES + (_payload_bytes(la) + 7) // 8 * 8


# --- validation: the checks the C reader makes ------------------------------------------------


def validate(model: CpuModel) -> None:
    """Raise BnnflowError (naming the layer) unless ``model`` is a well-formed model file.

    The grammar ``THRESHOLD? MVAU (MVAU | MAXPOOL)* LABEL_SELECT``; shapes and
    types chaining from the image; every size within the BNN_MAX_* limits;
    payloads of the right shape and range (bnncpu.h, "Model file format").
    """
    if not 0 <= model.version_minor <= FORMAT_MINOR:
        raise BnnflowError(f"format version {FORMAT_MAJOR}.{model.version_minor} is newer than this reader")
    for name in ("in_c", "in_h", "in_w", "n_classes"):
        value = getattr(model, name)
        if not 1 <= value <= MAX_DIM:
            raise BnnflowError(f"{name} {value} is outside 1..{MAX_DIM}")
    n = len(model.layers)
    if not 1 <= n <= MAX_LAYERS:
        raise BnnflowError(f"{n} layers; a model has 1..{MAX_LAYERS}")
    kinds = [la.kind for la in model.layers]
    first_mvau = 1 if kinds[0] == LayerKind.THRESHOLD else 0
    grammar_ok = (
        n >= first_mvau + 2
        and kinds[first_mvau] == LayerKind.MVAU
        and all(k in (LayerKind.MVAU, LayerKind.MAXPOOL) for k in kinds[first_mvau + 1 : -1])
        and kinds[-1] == LayerKind.LABEL_SELECT
    )
    if not grammar_ok:
        raise BnnflowError(
            "layers " + " ".join(k.name for k in kinds) + " do not follow THRESHOLD? MVAU (MVAU | MAXPOOL)* "
            "LABEL_SELECT"
        )
    last_mvau = max(i for i, k in enumerate(kinds) if k == LayerKind.MVAU)
    image = (model.in_h, model.in_w, model.in_c)
    flat = (1, 1, model.in_c * model.in_h * model.in_w)
    prev_shape: tuple[int, int, int] | None = None
    prev_type = ValueType.UINT8
    for i, la in enumerate(model.layers):
        where = f"layer {i} ({la.kind.name})"
        for name in DIM_FIELDS:
            value = getattr(la, name)
            if not 1 <= value <= MAX_DIM:
                raise BnnflowError(f"{where}: {name} {value} is outside 1..{MAX_DIM}")
        _check_window_fields(la, where, model.version_minor)
        if prev_shape is None:
            if la.in_shape not in (image, flat):
                raise BnnflowError(
                    f"{where}: input {_shape(la.in_shape)} is neither the image {_shape(image)} "
                    f"nor the flat image {_shape(flat)}"
                )
            # CHW means "in stored order": only a flat read, or one channel (where HWC and CHW
            # are the same bytes), reads the image that way (bnncpu.h; the C reader's rule).
            if model.input_order == InputOrder.CHW and la.in_shape != flat and model.in_c != 1:
                raise BnnflowError(
                    f"{where}: input_order CHW with a {_shape(la.in_shape)} first layer: only a flat or "
                    "one-channel input reads the image in stored order"
                )
        elif la.in_shape != prev_shape:
            raise BnnflowError(
                f"{where}: input {_shape(la.in_shape)} != previous output {_shape(prev_shape)}"
            )
        if la.input_type != prev_type:
            raise BnnflowError(
                f"{where}: input type {la.input_type.name} != previous output {prev_type.name}"
            )
        if la.act_val != 0 and la.kind != LayerKind.THRESHOLD:
            raise BnnflowError(f"{where}: act_val {la.act_val}; only THRESHOLD layers have one")
        _validate_kind(la, where, i == last_mvau, model.n_classes)
        prev_shape, prev_type = la.out_shape, la.output_type
    size = HEADER_BYTES + sum(_record_bytes(la) for la in model.layers)
    if size > MAX_FILE_BYTES:
        raise BnnflowError(f"the model file would be {size:,} bytes; the limit is {MAX_FILE_BYTES:,}")


DIM_FIELDS = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "kernel", "stride", "kernel_w", "stride_w")


def _check_window_fields(la: Layer, where: str, minor: int) -> None:
    """Format 1.1's window fields: what a 1.0 file can say, padding on MVAUs only and smaller than
    the window, 1x1 windows on the layers without one (bnncpu.h)."""
    if minor == 0 and (la.kernel_w != la.kernel or la.stride_w != la.stride or any(la.pad)):
        raise BnnflowError(f"{where}: format 1.0 has square, unpadded windows only ({la.window_text})")
    if any(not 0 <= v <= 255 for v in la.pad):
        raise BnnflowError(f"{where}: padding {la.pad} outside 0..255")
    if any(la.pad) and la.kind != LayerKind.MVAU:
        raise BnnflowError(f"{where}: padding {la.pad}; only an MVAU has any")
    window = (la.kernel, la.kernel_w, la.stride, la.stride_w)
    if la.kind not in (LayerKind.MVAU, LayerKind.MAXPOOL) and window != (1, 1, 1, 1):
        raise BnnflowError(f"{where}: {la.window_text}; must be 1x1 and 1x1")


def _windowed(la: Layer, where: str) -> None:
    top, left, bottom, right = la.pad
    if max(top, bottom) >= la.kernel or max(left, right) >= la.kernel_w:
        raise BnnflowError(
            f"{where}: padding {la.pad} is not smaller than the {la.kernel}x{la.kernel_w} kernel"
        )
    ph, pw = la.padded_in
    if la.kernel > ph or la.kernel_w > pw:
        raise BnnflowError(
            f"{where}: kernel {la.kernel}x{la.kernel_w} is larger than the input "
            f"{_shape(la.in_shape)} (padded {ph}x{pw})"
        )
    out = ((ph - la.kernel) // la.stride + 1, (pw - la.kernel_w) // la.stride_w + 1)
    if (la.out_h, la.out_w) != out:
        raise BnnflowError(
            f"{where}: output {la.out_h}x{la.out_w} != (in + pad - kernel) / stride + 1 = {out[0]}x{out[1]}"
        )


def _validate_kind(la: Layer, where: str, last_mvau: bool, n_classes: int) -> None:
    if la.kind == LayerKind.THRESHOLD:
        if la.input_type != ValueType.UINT8 or la.output_type not in _THRESHOLD_RANGE:
            raise BnnflowError(
                f"{where}: {la.input_type.name} -> {la.output_type.name}; THRESHOLD is UINT8 -> BITS or INT8"
            )
        if la.out_shape != la.in_shape:
            raise BnnflowError(f"{where}: output shape must equal the input, kernel and stride 1")
        t = la.thresholds
        if t is None or t.ndim != 2 or t.shape[0] != la.in_c or not 1 <= t.shape[1] <= 255:
            shape = None if t is None else t.shape
            raise BnnflowError(f"{where}: thresholds {shape}, expected ({la.in_c}, 1..255)")
        lo, hi = _THRESHOLD_RANGE[la.output_type]
        if la.act_val < lo or la.act_val + t.shape[1] > hi:
            raise BnnflowError(
                f"{where}: act_val {la.act_val} + 0..{t.shape[1]} does not fit {la.output_type.name}"
            )
        _check_int32(t, where)
        if la.weights is not None:
            raise BnnflowError(f"{where}: a THRESHOLD layer has no weights")
    elif la.kind == LayerKind.MVAU:
        if la.input_type not in (ValueType.BITS, ValueType.UINT8, ValueType.INT8):
            raise BnnflowError(f"{where}: input type {la.input_type.name}; an MVAU takes BITS, UINT8 or INT8")
        want_out = ValueType.INT32 if last_mvau else ValueType.BITS
        if la.output_type != want_out:
            raise BnnflowError(
                f"{where}: output type {la.output_type.name}; "
                + (
                    "the last MVAU outputs INT32 scores"
                    if last_mvau
                    else "an MVAU before the last outputs BITS"
                )
            )
        _windowed(la, where)
        if la.k > MAX_K:
            raise BnnflowError(f"{where}: K {la.k} is larger than {MAX_K}")
        w = la.weights
        if w is None or w.shape != (la.k, la.out_c):
            raise BnnflowError(
                f"{where}: weights {None if w is None else w.shape}, "
                f"expected (K, out_c) = ({la.k}, {la.out_c})"
            )
        if not np.all((w == 0) | (w == 1)):
            raise BnnflowError(f"{where}: weights must be 0 (for -1) or 1 (for +1)")
        t = la.thresholds
        if la.output_type == ValueType.BITS:
            if t is None or t.shape != (la.out_c,):
                raise BnnflowError(
                    f"{where}: thresholds {None if t is None else t.shape}, expected ({la.out_c},)"
                )
            _check_int32(t, where)
        elif t is not None:
            raise BnnflowError(f"{where}: an MVAU with INT32 scores out has no thresholds")
        if last_mvau and (la.out_h, la.out_w, la.out_c) != (1, 1, n_classes):
            raise BnnflowError(f"{where}: scores {_shape(la.out_shape)}, expected 1x1x{n_classes}")
    elif la.kind == LayerKind.MAXPOOL:
        if la.input_type != ValueType.BITS or la.output_type != ValueType.BITS:
            raise BnnflowError(f"{where}: {la.input_type.name} -> {la.output_type.name}; MAXPOOL is on BITS")
        if la.out_c != la.in_c:
            raise BnnflowError(f"{where}: {la.in_c} channels in, {la.out_c} out")
        _windowed(la, where)
        if la.weights is not None or la.thresholds is not None:
            raise BnnflowError(f"{where}: a MAXPOOL layer has no payload")
    elif la.kind == LayerKind.LABEL_SELECT:
        if la.input_type != ValueType.INT32 or la.output_type != ValueType.CLASS:
            raise BnnflowError(
                f"{where}: {la.input_type.name} -> {la.output_type.name}; expected INT32 -> CLASS"
            )
        if la.in_shape != (1, 1, n_classes) or la.out_shape != (1, 1, 1):
            raise BnnflowError(
                f"{where}: {_shape(la.in_shape)} -> {_shape(la.out_shape)}, expected 1x1x{n_classes} -> 1x1x1"
            )
        if la.weights is not None or la.thresholds is not None:
            raise BnnflowError(f"{where}: no payload")
    else:  # pragma: no cover  (LayerKind is closed)
        raise BnnflowError(f"{where}: unknown kind")


def _check_int32(t: np.ndarray, where: str) -> None:
    if not np.issubdtype(t.dtype, np.integer):
        raise BnnflowError(f"{where}: thresholds must be integers, got {t.dtype}")
    if t.size and (int(t.min()) < _I32[0] or int(t.max()) > _I32[1]):
        raise BnnflowError(f"{where}: thresholds outside int32")


# --- encoding ---------------------------------------------------------------------------------


def pack_weights(weights: np.ndarray) -> bytes:
    """(K, N) 0/1 -> N rows of ceil(K / 64) little-endian u64 words; bit j of word i is row 64 i + j.

    ``np.packbits(bitorder="little")`` puts element 8 b + j in bit j of byte
    b, which is bit 8 b + j of the little-endian word: the header's order.
    """
    k, n = weights.shape
    padded = np.zeros((n, _words_per_row(k) * 64), dtype=np.uint8)
    padded[:, :k] = weights.T
    return np.packbits(padded, axis=1, bitorder="little").tobytes()


def unpack_weights(data: bytes, k: int, n: int) -> np.ndarray:
    """The inverse of ``pack_weights``: (K, N) uint8; raises if a bit past K is set."""
    words = _words_per_row(k)
    rows = np.frombuffer(data, dtype=np.uint8).reshape(n, words * 8)
    bits = np.unpackbits(rows, axis=1, bitorder="little")
    if bits[:, k:].any():
        raise BnnflowError("weight bits past K are not zero")
    return np.ascontiguousarray(bits[:, :k].T)


def encode_model(model: CpuModel) -> bytes:
    """The file's bytes, checksum included; validates first."""
    validate(model)
    records = []
    for la in model.layers:
        payload = b""
        if la.kind == LayerKind.THRESHOLD:
            assert la.thresholds is not None
            payload = np.ascontiguousarray(la.thresholds, dtype="<i4").tobytes()
        elif la.kind == LayerKind.MVAU:
            assert la.weights is not None
            payload = pack_weights(la.weights)
            if la.thresholds is not None:
                payload += np.ascontiguousarray(la.thresholds, dtype="<i4").tobytes()
        size = _record_bytes(la)
        # Format 1.0 has zero reserved words where 1.1 has the window fields.
        window = (la.kernel_w, la.stride_w, bytes(la.pad)) if model.version_minor >= 1 else (0, 0, bytes(4))
        head = LAYER_HEADER.pack(la.kind, size, *_header_fields(la)[1:13], *window)
        records.append(head + payload + bytes(size - LAYER_HEADER_BYTES - len(payload)))
    body = b"".join(records)
    file_bytes = HEADER_BYTES + len(body)
    fields = [
        MAGIC,
        FORMAT_MAJOR,
        model.version_minor,
        HEADER_BYTES,
        file_bytes,
        0,  # crc32, filled in below
        len(model.layers),
        model.in_c,
        model.in_h,
        model.in_w,
        int(model.input_order),
        model.n_classes,
        int(model.dataset),
        0,
        0,
    ]
    data = bytearray(FILE_HEADER.pack(*fields) + body)
    struct.pack_into("<I", data, CRC_OFFSET, zlib.crc32(data))
    return bytes(data)


def write_model(path: str | Path, model: CpuModel) -> Path:
    """Validate, encode and write ``model`` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, encode_model(model))
    return path


# --- decoding ---------------------------------------------------------------------------------


def _enum(cls: type[enum.IntEnum], value: int, what: str, where: str) -> enum.IntEnum:
    try:
        return cls(value)
    except ValueError:
        raise BnnflowError(f"{where}: unknown {what} {value}") from None


def _decode_layer(data: bytes, offset: int, file_bytes: int, where: str, minor: int) -> tuple[Layer, int]:
    """The layer record at ``offset``, checked field by field: (layer, record bytes)."""
    if offset + LAYER_HEADER_BYTES > file_bytes:
        raise BnnflowError(f"{where}: record runs past the end of the file")
    fields = LAYER_HEADER.unpack_from(data, offset)
    kind = _enum(LayerKind, fields[0], "layer kind", where)
    record = fields[1]
    in_h, in_w, in_c, out_h, out_w, out_c, kernel, stride = fields[2:10]
    in_t = _enum(ValueType, fields[10], "input type", where)
    out_t = _enum(ValueType, fields[11], "output type", where)
    n_thr, act_val, kernel_w, stride_w, pad = fields[12:17]
    if minor == 0:
        if kernel_w or stride_w or any(pad):
            raise BnnflowError(f"{where}: reserved fields are not 0")
        kernel_w, stride_w = kernel, stride
    for name, value in zip(DIM_FIELDS, (*fields[2:10], kernel_w, stride_w), strict=True):
        if not 1 <= value <= MAX_DIM:  # before any size is computed from them
            raise BnnflowError(f"{where}: {name} {value} is outside 1..{MAX_DIM}")
    la = Layer(kind, in_h, in_w, in_c, out_h, out_w, out_c, in_t, out_t, kernel, stride, act_val)  # type: ignore[arg-type]
    la.kernel_w, la.stride_w, la.pad = kernel_w, stride_w, tuple(pad)  # type: ignore[assignment]
    if kind == LayerKind.MVAU and la.k > MAX_K:
        raise BnnflowError(f"{where}: K {la.k} is larger than {MAX_K}")
    most = {LayerKind.THRESHOLD: 255, LayerKind.MVAU: 1}.get(kind, 0)
    if n_thr > most:
        raise BnnflowError(f"{where}: n_thresholds {n_thr} for a {kind.name} layer")
    if kind == LayerKind.THRESHOLD and not 1 <= n_thr <= 255:
        raise BnnflowError(f"{where}: n_thresholds {n_thr} is outside 1..255")
    if record % 8 or record < LAYER_HEADER_BYTES or offset + record > file_bytes:
        raise BnnflowError(f"{where}: record_bytes {record} is not a multiple of 8 within the file")
    payload = data[offset + LAYER_HEADER_BYTES : offset + record]
    if kind == LayerKind.THRESHOLD:
        used = 4 * in_c * n_thr
        if used <= len(payload):
            la.thresholds = np.frombuffer(payload[:used], dtype="<i4").reshape(in_c, n_thr).astype(np.int32)
    elif kind == LayerKind.MVAU:
        wbytes = 8 * out_c * _words_per_row(la.k)
        used = wbytes + 4 * out_c * n_thr
        if used <= len(payload):
            try:
                la.weights = unpack_weights(payload[:wbytes], la.k, out_c)
            except BnnflowError as exc:
                raise BnnflowError(f"{where}: {exc}") from None
            if n_thr:
                la.thresholds = np.frombuffer(payload[wbytes:used], dtype="<i4").astype(np.int32)
    else:
        used = 0
    if record != LAYER_HEADER_BYTES + (used + 7) // 8 * 8:
        raise BnnflowError(f"{where}: record_bytes {record}, its payload needs {LAYER_HEADER_BYTES + used}")
    if any(payload[used:]):
        raise BnnflowError(f"{where}: padding bytes are not zero")
    return la, record


def decode_model(data: bytes) -> CpuModel:
    """Parse and validate a model file's bytes (checksum, sizes, limits, chaining)."""
    if len(data) < HEADER_BYTES:
        raise BnnflowError(f"truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    (
        magic,
        major,
        minor,
        header_bytes,
        file_bytes,
        crc,
        n_layers,
        in_c,
        in_h,
        in_w,
        order,
        n_classes,
        dataset,
        flags,
        reserved,
    ) = FILE_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BnnflowError("not a bnncpu model file (bad magic)")
    if major != FORMAT_MAJOR or minor > FORMAT_MINOR:
        raise BnnflowError(
            f"format version {major}.{minor}; this reader knows {FORMAT_MAJOR}.0-{FORMAT_MINOR}"
        )
    if header_bytes != HEADER_BYTES:
        raise BnnflowError(f"header_bytes {header_bytes}, expected {HEADER_BYTES}")
    if file_bytes > MAX_FILE_BYTES:
        raise BnnflowError(f"file_bytes {file_bytes:,} is past the limit {MAX_FILE_BYTES:,}")
    if len(data) < file_bytes:
        raise BnnflowError(f"truncated: {len(data):,} bytes, the header says {file_bytes:,}")
    if len(data) > file_bytes:
        raise BnnflowError(f"{len(data) - file_bytes:,} bytes past the end the header gives")
    zeroed = bytearray(data)
    zeroed[CRC_OFFSET : CRC_OFFSET + 4] = bytes(4)
    if zlib.crc32(zeroed) != crc:
        raise BnnflowError("checksum mismatch: the file is damaged")
    if flags != 0 or reserved != 0:
        raise BnnflowError(f"flags {flags} / reserved {reserved} are not 0")
    if not 1 <= n_layers <= MAX_LAYERS:
        raise BnnflowError(f"{n_layers} layers; a model has 1..{MAX_LAYERS}")
    model = CpuModel(
        in_c=in_c,
        in_h=in_h,
        in_w=in_w,
        input_order=_enum(InputOrder, order, "input order", "header"),  # type: ignore[arg-type]
        n_classes=n_classes,
        dataset=_enum(Dataset, dataset, "dataset", "header"),  # type: ignore[arg-type]
        version_minor=minor,
    )
    offset = HEADER_BYTES
    for i in range(n_layers):
        la, record = _decode_layer(data, offset, file_bytes, f"layer {i}", minor)
        model.layers.append(la)
        offset += record
    if offset != file_bytes:
        raise BnnflowError(f"{file_bytes - offset:,} bytes after the last layer record")
    validate(model)
    return model


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_header(head: bytes, size: int) -> None:
    """The file header's magic, version and declared size against the file's size, before the rest
    is read: a large file that is not a model (or ``/dev/zero``) is refused without reading it."""
    if not MAGIC.startswith(head[: len(MAGIC)]):  # a short file is judged by the bytes it has
        raise BnnflowError("not a bnncpu model file (bad magic)")
    if len(head) < HEADER_BYTES:
        raise BnnflowError(f"truncated: {len(head)} bytes, shorter than the {HEADER_BYTES}-byte header")
    major, minor, _, file_bytes = FILE_HEADER.unpack_from(head)[1:5]
    if major != FORMAT_MAJOR or minor > FORMAT_MINOR:
        raise BnnflowError(
            f"format version {major}.{minor}; this reader knows {FORMAT_MAJOR}.0-{FORMAT_MINOR}"
        )
    if file_bytes > MAX_FILE_BYTES:
        raise BnnflowError(f"file_bytes {file_bytes:,} is past the limit {MAX_FILE_BYTES:,}")
    if size < file_bytes:
        raise BnnflowError(f"truncated: {size:,} bytes, the header says {file_bytes:,}")
    if size > file_bytes:
        raise BnnflowError(f"{size - file_bytes:,} bytes past the end the header gives")


def read_model(path: str | Path) -> CpuModel:
    """Read and validate a model file; a one-line BnnflowError naming the file if it is not one.

    Only a regular file is read (opened without waiting, so a FIFO with no writer is refused at
    once), and its header is checked against its size before the rest is read, as the C reader does.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BnnflowError(f"model file not found: {path}") from None
    except OSError as exc:
        raise BnnflowError(f"cannot read {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BnnflowError(f"{path} is {_file_kind(info.st_mode)}, not a model file")
    with os.fdopen(fd, "rb") as f:
        try:
            head = f.read(HEADER_BYTES)
            _check_header(head, info.st_size)
            data = head + f.read(info.st_size - len(head))
            return decode_model(data)
        except OSError as exc:
            raise BnnflowError(f"cannot read {path}: {exc.strerror or exc}") from None
        except BnnflowError as exc:
            raise BnnflowError(f"{path}: {exc}") from None
