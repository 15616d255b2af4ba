"""A compile folder's hardware graph -> the bnncpu model file (``model.bnn``).

The file is written from ``model_hw.onnx``, the graph FINN generated the HLS
and RTL from (folded, bit widths minimised), and not from the PyTorch model:
FINN's streamlining changes the arithmetic on the way (BatchNorm folded into
integer thresholds, a negative BatchNorm scale absorbed into the signs of that
channel's XNOR weights, thresholds rounded up to integers), and the CPU
engine must compute what the FPGA computes. The host-side ops around the
dataflow partition come from ``intermediate_models/dataflow_parent.onnx``:
CNV's NCHW->NHWC input Transpose becomes input_order HWC.

Node patterns, in graph order (op types with or without FINN's _hls/_rtl
specialisation suffix):

* MVAU without activation + Thresholding on its accumulators (FINN's
  standalone thresholds, as ``compile --runtime-weights`` builds) -> MVAU
  with thresholds
* Reshape (flatten of the NCHW input) + Thresholding on UINT8 -> THRESHOLD
  reading the image flat (TFC, SFC, LFC, digits); Thresholding on the
  transposed image -> THRESHOLD on H x W x C (CNV).
* ConvolutionInputGenerator (not depthwise) + MVAU -> MVAU with the window's
  kernel (kh x kw) and strides; FMPadding before the window -> the MVAU's
  padding. FINN's FMPadding pads with the value 0 of the stream's datatype
  (``np.pad`` with a constant 0 in its Python execution; InferConvInpGen
  refuses any other pad value), so the file's padding means exactly that: a
  0 bit on a BINARY stream, the integer 0 on an 8-bit one.
* MVAU alone -> MVAU with kernel 1 (per pixel); after a flatten of an
  H x W x C tensor, an MVAU whose window covers the whole input. So is an
  MVAU with one input vector on an H x W x C stream: FINN's
  RemoveCNVtoFCFlatten removed the NHWC->NCHW Transpose and the Flatten
  between the last convolution and the fully-connected layer and permuted the
  weight rows from the flattened (C, H, W) order to (H, W, C), the stream's
  order, which is the window order of an MVAU covering the whole input.
* ConvolutionInputGenerator (depthwise) + Pool(MaxPool) on BINARY -> MAXPOOL.
* LabelSelect with K = 1 -> LABEL_SELECT.

Anything else is a BnnflowError naming the node and the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from bnnflow_board.hostbits import op_thresholds

from bnnflow.bnncpu.modelfile import (
    DATASET_BY_NAME,
    MAGIC,
    CpuModel,
    Dataset,
    InputOrder,
    Layer,
    LayerKind,
    ValueType,
    read_model,
    validate,
    write_model,
)
from bnnflow.data import find_identity
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.finnlib.host_threshold import read_thresholds
from bnnflow.finnlib.hwgraph import base_op_type, read_graph
from bnnflow.layout import CompileDir

MODEL_FILE = CompileDir.CPU_MODEL
PARENT_GRAPH = Path(CompileDir.INTERMEDIATE) / CompileDir.PARENT_GRAPH  # relative to a compile folder
NCHW_TO_NHWC = [0, 2, 3, 1]


class UnsupportedGraph(BnnflowError):
    """A hardware graph the CPU model format cannot express; ``reason`` names the node and why."""

    def __init__(self, reason: str, where: str | None = None) -> None:
        super().__init__(f"{where}: cannot be written as a CPU model: {reason}" if where else reason)
        self.reason = reason


def _fail(node: Any, why: str) -> UnsupportedGraph:
    return UnsupportedGraph(f"{node.name} ({node.op_type}): {why}")


def _ints(node: Any, values: np.ndarray, what: str) -> np.ndarray:
    """Thresholds as int64, or an error if any is not an integer.

    The inputs they are compared with are integers, and FINN's HLS and RTL
    store thresholds in an integer type (its RoundAndClipThresholds rounds
    them up during bit-width minimisation); a fractional one left in the
    hardware graph has no single meaning.
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        raise _fail(node, f"{what} are not all integers (e.g. {values[values != np.round(values)][:1]})")
    if values.size and (values.min() < -(2**31) or values.max() > 2**31 - 1):
        raise _fail(node, f"{what} do not fit int32")
    return values.astype(np.int64)


def _one_threshold_per_channel(node: Any, thr: np.ndarray, channels: int) -> np.ndarray:
    """A binary activation's thresholds, one per channel (a single row is every channel's), as int32."""
    if thr.ndim != 2 or thr.shape[0] not in (1, channels):
        raise _fail(node, f"thresholds of shape {thr.shape}, expected ({channels}, 1)")
    if thr.shape[1] != 1:
        raise _fail(node, f"{thr.shape[1]} thresholds per channel: multi-bit activations are not supported")
    return np.broadcast_to(_ints(node, thr, "thresholds"), (channels, 1))[:, 0].astype(np.int32)


def _bits_type(node: Any, dt: str, what: str) -> None:
    """Only BINARY (0/1) activations between layers."""
    if dt == "BINARY":
        return
    if dt == "BIPOLAR":
        raise _fail(node, f"{what} BIPOLAR (+-1 values) is not supported; the format carries BINARY 0/1 bits")
    raise _fail(node, f"{what} {dt}: multi-bit activations are not supported")


class _Walker:
    """Walks the hardware graph's chain of nodes and collects layers."""

    def __init__(self, hw: Any) -> None:
        from qonnx.custom_op.registry import getCustomOp

        self.hw = hw
        self.get = getCustomOp
        self.layers: list[Layer] = []
        self.shape: tuple[int, int, int] = (0, 0, 0)  # current tensor, h x w x c
        self.vtype = ValueType.UINT8
        self.flattened: tuple[int, int, int] | None = None  # h x w x c before a flatten, if h*w > 1
        self.pad: tuple[int, int, int, int] | None = None  # an FMPadding's (top, left, bottom, right)
        self.done = False
        # A host-binarized design's input thresholds, (C, H, W) or (1, 1, 1), until they are a layer.
        self.host_thresholds: np.ndarray | None = None
        self.image_chw: tuple[int, int, int] = (0, 0, 0)
        self.int_type = "INT8"  # FINN's type of an INT8 tensor: the input quantizer's INT2 .. INT8

    def finn_type(self) -> str:
        """FINN's datatype name of the current tensor."""
        if self.vtype == ValueType.BITS:
            return "BINARY"
        return self.int_type if self.vtype == ValueType.INT8 else self.vtype.name

    def init(self, node: Any, index: int, name: str) -> np.ndarray:
        value = self.hw.get_initializer(node.input[index]) if index < len(node.input) else None
        if value is None:
            raise _fail(node, f"no {name} initializer")
        return np.asarray(value)

    # -- patterns ----------------------------------------------------------------------------

    def reshape(self, node: Any, image_nchw: bool) -> None:
        """A flatten to [1, N]: of the image (the first layer then reads it flat) or of a layer's output."""
        inst = self.get(node)
        inp = [int(v) for v in inst.get_nodeattr("inp_shape")]
        out = [int(v) for v in inst.get_nodeattr("out_shape")]
        h, w, c = self.shape
        expected = [1, c, h, w] if image_nchw else [1, h, w, c]
        if inp != expected and inp != [1, h * w * c]:
            raise _fail(node, f"reshape of {inp}, but the tensor is {expected}")
        if out != [1, h * w * c]:
            raise _fail(node, f"reshape {inp} -> {out} is not a flatten to [1, {h * w * c}]")
        if self.layers and h * w > 1:
            # A layer's output is channels-last (FINN's NHWC streams), so the flattened
            # order is HWC: the window order of an MVAU covering the whole input.
            self.flattened = self.shape
        self.shape = (1, 1, h * w * c)

    def thresholding(self, node: Any) -> None:
        inst = self.get(node)
        if self.layers and self.layers[-1].kind == LayerKind.MVAU and self.vtype == ValueType.INT32:
            self.standalone_thresholds(node)
            return
        if self.layers or self.vtype != ValueType.UINT8:
            raise _fail(node, "Thresholding is supported only on the uint8 input, as the first layer")
        h, w, c = self.shape
        if inst.get_nodeattr("inputDataType") != "UINT8":
            raise _fail(node, f"input {inst.get_nodeattr('inputDataType')}, expected UINT8")
        if int(inst.get_nodeattr("NumChannels")) != c:
            raise _fail(node, f"NumChannels {inst.get_nodeattr('NumChannels')} != input channels {c}")
        thr = self.init(node, 1, "thresholds")
        if thr.ndim != 2 or thr.shape[0] not in (1, c):
            raise _fail(node, f"thresholds of shape {thr.shape}, expected (1 or {c}, steps)")
        # FINN broadcasts a single row to every channel (Thresholding.get_hw_compatible_threshold_tensor).
        thr = np.broadcast_to(_ints(node, thr, "thresholds"), (c, thr.shape[1]))
        if np.any(np.diff(thr, axis=1) < 0):
            # FINN's RTL thresholding is a binary search over sorted thresholds.
            raise _fail(node, "thresholds are not sorted in ascending order")
        odt = inst.get_nodeattr("outputDataType")
        if re.fullmatch(r"INT[2-8]", odt):
            # An input quantizer of 2 to 8 bits: its values are int8 values, which INT8 carries
            # (ActVal and the threshold count, checked below, keep them inside the type).
            out_t, self.int_type = ValueType.INT8, odt
        else:
            _bits_type(node, odt, "output")
            out_t = ValueType.BITS
        act = int(inst.get_nodeattr("ActVal"))
        n = thr.shape[1]
        half = 2 ** (int(odt[3:]) - 1) if out_t == ValueType.INT8 else 0
        lo, hi = (0, 1) if out_t == ValueType.BITS else (-half, half - 1)
        if not 1 <= n <= 255 or act < lo or act + n > hi:
            raise _fail(node, f"ActVal {act} + 0..{n} thresholds does not fit {odt}")
        self.layers.append(
            Layer(
                LayerKind.THRESHOLD,
                h,
                w,
                c,
                h,
                w,
                c,
                ValueType.UINT8,
                out_t,
                act_val=act,
                thresholds=np.ascontiguousarray(thr, dtype=np.int32),
            )
        )
        self.vtype = out_t

    def host_threshold(self, node: Any, image_nchw: bool) -> None:
        """A host-binarized design's input threshold (host_thresholds.json) as the model file's first
        layer, THRESHOLD on UINT8, where the graph's first layer reads the bits: the engine takes the
        images and computes what the host and the FPGA compute together."""
        thr, self.host_thresholds = self.host_thresholds, None
        assert thr is not None
        h, w, c = self.shape
        if image_nchw or self.layers:
            raise _fail(node, "the host's input threshold must come before every layer, on the read image")
        if thr.size == 1:
            per_channel = np.full(c, int(thr.item()), dtype=np.int64)
        elif (h, w) == (1, 1) and c == thr.size and self.image_chw == tuple(thr.shape):
            per_channel = thr.reshape(-1).astype(np.int64)  # the image read flat in its C, H, W order
        else:
            raise _fail(node, f"host thresholds of shape {list(thr.shape)} on a {h}x{w}x{c} input")
        self.layers.append(
            Layer(
                LayerKind.THRESHOLD,
                h,
                w,
                c,
                h,
                w,
                c,
                ValueType.UINT8,
                ValueType.BITS,
                act_val=0,
                thresholds=np.ascontiguousarray(per_channel.reshape(c, 1), dtype=np.int32),
            )
        )
        self.vtype = ValueType.BITS

    def standalone_thresholds(self, node: Any) -> None:
        """A Thresholding on an MVAU's accumulators (FINN's standalone_thresholds, used with
        runtime-writable weights): the same function as the MVAU's own thresholds, so it
        becomes them. FINN's MVAU without activation outputs its accumulator, and
        Thresholding compares that value with its thresholds exactly as an MVAU does."""
        inst = self.get(node)
        mvau = self.layers[-1]
        c = mvau.out_c
        if int(inst.get_nodeattr("NumChannels")) != c:
            raise _fail(node, f"NumChannels {inst.get_nodeattr('NumChannels')} != the MVAU's {c} outputs")
        act = int(inst.get_nodeattr("ActVal"))
        if act != 0:
            raise _fail(node, f"ActVal {act} on the accumulators is not supported (only 0)")
        _bits_type(node, inst.get_nodeattr("outputDataType"), "output")
        mvau.thresholds = _one_threshold_per_channel(node, self.init(node, 1, "thresholds"), c)
        mvau.output_type = ValueType.BITS
        self.vtype = ValueType.BITS

    def padding(self, node: Any) -> None:
        """FINN's FMPadding before a convolution's window: it pads with the value 0 of the stream's
        datatype, which the model file's padding means (bnncpu.h); the window that follows takes it."""
        inst = self.get(node)
        pad = tuple(int(v) for v in inst.get_nodeattr("Padding"))
        h, w, c = self.shape
        if self.pad is not None or self.flattened is not None:
            raise _fail(node, "padding after a padding or a flatten")
        if [int(v) for v in inst.get_nodeattr("ImgDim")] != [h, w] or int(
            inst.get_nodeattr("NumChannels")
        ) != c:
            raise _fail(
                node,
                f"input {inst.get_nodeattr('ImgDim')} x {inst.get_nodeattr('NumChannels')} != {h}x{w}x{c}",
            )
        dt = inst.get_nodeattr("inputDataType")
        want = self.finn_type()
        if dt != want:
            raise _fail(node, f"input {dt}, the tensor is {want}")
        if len(pad) != 4 or min(pad) < 0:
            raise _fail(node, f"padding {list(pad)} is not (top, left, bottom, right)")
        self.pad = pad  # type: ignore[assignment]

    def window(self, node: Any) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """A sliding-window generator's ((kh, kw), (sh, sw), output h x w), checked against the
        input and the padding before it."""
        inst = self.get(node)
        k = [int(v) for v in inst.get_nodeattr("ConvKernelDim")]
        s = [int(v) for v in inst.get_nodeattr("Stride")]
        d = [int(v) for v in inst.get_nodeattr("Dilation")]
        ifm = [int(v) for v in inst.get_nodeattr("IFMDim")]
        ofm = [int(v) for v in inst.get_nodeattr("OFMDim")]
        if any(v != 1 for v in d):
            raise _fail(node, f"dilation {d} is not supported (only 1)")
        if self.flattened is not None:
            raise _fail(node, "a sliding window after a flatten")
        h, w, c = self.shape
        top, left, bottom, right = self.pad or (0, 0, 0, 0)
        ph, pw = h + top + bottom, w + left + right
        if ifm != [ph, pw] or int(inst.get_nodeattr("IFMChannels")) != c:
            raise _fail(
                node,
                f"input {ifm[0]}x{ifm[1]}x{inst.get_nodeattr('IFMChannels')} != the tensor {ph}x{pw}x{c}"
                + (" with its padding" if self.pad else ""),
            )
        expect = [(ph - k[0]) // s[0] + 1, (pw - k[1]) // s[1] + 1]
        if k[0] > ph or k[1] > pw or ofm != expect:
            raise _fail(
                node,
                f"output {ofm} != {expect}, what a {k[0]}x{k[1]} window at stride {s} gives on {ph}x{pw}",
            )
        if max(top, bottom) >= k[0] or max(left, right) >= k[1]:
            raise _fail(node, f"padding {self.pad} is not smaller than the {k[0]}x{k[1]} kernel")
        return (k[0], k[1]), (s[0], s[1]), (ofm[0], ofm[1])

    def maxpool(self, swg: Any, pool: Any) -> None:
        if self.pad is not None:
            raise _fail(swg, "a padded max-pooling window is not supported")
        k, s, (oh, ow) = self.window(swg)
        inst = self.get(pool)
        if base_op_type(pool.op_type) != "Pool":
            raise _fail(swg, f"a depthwise sliding window followed by {pool.op_type}, not a Pool")
        if inst.get_nodeattr("Function") != "MaxPool":
            raise _fail(
                pool, f"pool function {inst.get_nodeattr('Function')} is not supported (only MaxPool)"
            )
        if self.vtype != ValueType.BITS or inst.get_nodeattr("InputDataType") != "BINARY":
            raise _fail(pool, f"max-pooling of {inst.get_nodeattr('InputDataType')} input; only BINARY")
        _bits_type(pool, inst.get_nodeattr("OutputDataType"), "output")
        h, w, c = self.shape
        if [int(v) for v in inst.get_nodeattr("KernelSize")] != list(k) or int(
            inst.get_nodeattr("Channels")
        ) != c:
            raise _fail(pool, f"kernel or channels do not match the sliding window {swg.name}")
        self.layers.append(
            Layer(
                LayerKind.MAXPOOL,
                h,
                w,
                c,
                oh,
                ow,
                c,
                ValueType.BITS,
                ValueType.BITS,
                kernel=k[0],
                stride=s[0],
                kernel_w=k[1],
                stride_w=s[1],
            )
        )
        self.shape = (oh, ow, c)

    def _mvau_window(self, node: Any, swg: Any | None) -> tuple[tuple[int, int, int], tuple[int, ...]]:
        """The MVAU's input (h, w, c) and window (kh, kw, sh, sw, oh, ow)."""
        inst = self.get(node)
        if swg is not None:
            (kh, kw), (sh, sw), (oh, ow) = self.window(swg)
            return self.shape, (kh, kw, sh, sw, oh, ow)
        if self.pad is not None:
            raise _fail(node, "padding without a sliding window")
        h, w, c = self.flattened if self.flattened is not None else self.shape
        vectors = int(np.prod(inst.get_nodeattr("numInputVectors")))
        if self.flattened is not None or (
            vectors == 1 and h * w > 1 and int(inst.get_nodeattr("MW")) == h * w * c
        ):
            # A flatten into a fully-connected layer: a Reshape node, or FINN's RemoveCNVtoFCFlatten
            # (one input vector of h * w * c on the h x w x c stream, weight rows permuted to HWC).
            return (h, w, c), (h, w, 1, 1, 1, 1)
        return (h, w, c), (1, 1, 1, 1, h, w)

    def mvau(self, node: Any, swg: Any | None) -> None:
        inst = self.get(node)
        (h, w, c), (kh, kw, sh, sw, oh, ow) = self._mvau_window(node, swg)
        pad, self.pad = self.pad or (0, 0, 0, 0), None
        vectors = int(np.prod(inst.get_nodeattr("numInputVectors")))
        if vectors != oh * ow:
            raise _fail(node, f"{vectors} input vectors for a {oh}x{ow} output")
        mw, mh = int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("MH"))
        k = kh * kw * c
        if mw != k:
            raise _fail(node, f"MW {mw} != kernel {kh} x {kw} x {c} channels")
        weights = self.init(node, 1, "weights")
        if weights.shape != (mw, mh):
            raise _fail(node, f"weights of shape {weights.shape}, expected (MW, MH) = ({mw}, {mh})")
        if inst.get_nodeattr("binaryXnorMode"):
            if self.vtype != ValueType.BITS:
                raise _fail(node, f"XNOR mode on {self.vtype.name} input")
            _bits_type(node, inst.get_nodeattr("inputDataType"), "input")
            if not np.all((weights == 0) | (weights == 1)):
                raise _fail(node, "XNOR-mode weights are not BINARY 0/1")
            bits = weights.astype(np.uint8)
        else:
            if self.vtype not in (ValueType.UINT8, ValueType.INT8):
                raise _fail(node, f"a non-XNOR MVAU on {self.vtype.name} input; only UINT8 or INT8")
            if inst.get_nodeattr("inputDataType") != self.finn_type():
                raise _fail(
                    node, f"input {inst.get_nodeattr('inputDataType')}, the tensor is {self.finn_type()}"
                )
            if not np.all((weights == -1) | (weights == 1)):
                raise _fail(node, "weights of an integer-input MVAU are not bipolar (+-1)")
            bits = (weights > 0).astype(np.uint8)  # 1 for +1, 0 for -1: FINN's BINARY encoding
        thresholds = None
        if inst.get_nodeattr("noActivation"):
            out_t = ValueType.INT32
            odt = inst.get_nodeattr("outputDataType")
            if not re.fullmatch(r"U?INT\d+", odt) or int(re.sub(r"\D", "", odt)) > 32:
                raise _fail(node, f"accumulator output {odt} does not fit int32")
        else:
            out_t = ValueType.BITS
            act = int(inst.get_nodeattr("ActVal"))
            if act != 0:
                raise _fail(node, f"ActVal {act} is not supported on an MVAU (only 0)")
            _bits_type(node, inst.get_nodeattr("outputDataType"), "output")
            thresholds = _one_threshold_per_channel(node, self.init(node, 2, "thresholds"), mh)
        self.layers.append(
            Layer(
                LayerKind.MVAU,
                h,
                w,
                c,
                oh,
                ow,
                mh,
                self.vtype,
                out_t,
                kernel=kh,
                stride=sh,
                kernel_w=kw,
                stride_w=sw,
                pad=pad,
                weights=bits,
                thresholds=thresholds,
            )
        )
        self.shape, self.vtype, self.flattened = (oh, ow, mh), out_t, None

    def shuffle(self, node: Any) -> None:
        """FINN's decomposed Transpose (InnerShuffle, OuterShuffle) that leaves the data in its order,
        as the NHWC -> NCHW transpose before the flatten of a convolution's 1 x 1 x classes output does:
        no layer. A shuffle that reorders the data is refused."""
        inst = self.get(node)
        shape = [int(d) for d in inst.get_nodeattr("transpose_in_shape")]
        if base_op_type(node.op_type) == "OuterShuffle":
            perm = [int(d) for d in inst.get_nodeattr("perm")]
        else:  # InnerShuffle swaps the last two dims (finn.custom_op.fpgadataflow.inner_shuffle)
            perm = [*range(len(shape) - 2), len(shape) - 1, len(shape) - 2]
        moved = [d for d in perm if shape[d] != 1]  # dims of size 1 take no place
        h, w, c = self.shape
        if moved != sorted(moved) or int(np.prod(shape)) != h * w * c:
            raise _fail(node, f"a transpose {perm} of {shape} that reorders the {h}x{w}x{c} data")

    def label_select(self, node: Any) -> None:
        inst = self.get(node)
        if int(inst.get_nodeattr("K")) != 1:
            raise _fail(node, f"K = {inst.get_nodeattr('K')}; only top-1 (K = 1) is supported")
        h, w, c = self.shape
        if self.vtype != ValueType.INT32 or (h, w) != (1, 1) or self.flattened is not None:
            raise _fail(node, f"input {h}x{w}x{c} {self.vtype.name}; expected the last MVAU's 1x1xN scores")
        if int(inst.get_nodeattr("Labels")) != c:
            raise _fail(node, f"Labels {inst.get_nodeattr('Labels')} != {c} scores")
        self.layers.append(Layer(LayerKind.LABEL_SELECT, 1, 1, c, 1, 1, 1, ValueType.INT32, ValueType.CLASS))
        self.done = True


def _host_input(parent: Any, input_type: str = "UINT8") -> tuple[tuple[int, int, int], InputOrder]:
    """The image (C, H, W) and how it reaches the partition, from the host-side graph; its input
    is ``input_type`` (BINARY where the host thresholds the image first)."""
    from qonnx.util.basic import get_by_name

    inp = parent.graph.input[0].name
    shape = [int(v) for v in parent.get_tensor_shape(inp)]
    if len(shape) != 4 or shape[0] != 1:
        raise UnsupportedGraph(f"the model input {inp} has shape {shape}, expected an image [1, C, H, W]")
    if str(parent.get_tensor_datatype(inp)) != input_type:
        raise UnsupportedGraph(
            f"the model input {inp} is {parent.get_tensor_datatype(inp)}, expected {input_type}"
        )
    order = InputOrder.CHW
    tensor = inp
    seen_partition = False
    for node in parent.graph.node:
        if seen_partition:
            raise _fail(node, "host-side ops after the dataflow partition are not supported")
        if node.input[0] != tensor:
            raise _fail(node, "the host-side graph is not a chain from the input")
        if node.op_type == "StreamingDataflowPartition":
            seen_partition = True
        elif node.op_type == "Transpose" and order == InputOrder.CHW and tensor == inp:
            attr = get_by_name(node.attribute, "perm")
            perm = list(attr.ints) if attr is not None else None
            if perm != NCHW_TO_NHWC:
                raise _fail(node, f"input transpose {perm} is not NCHW->NHWC {NCHW_TO_NHWC}")
            order = InputOrder.HWC
        else:
            raise _fail(node, "host-side op not supported (only the input's NCHW->NHWC Transpose)")
        tensor = node.output[0]
    if not seen_partition:
        raise UnsupportedGraph("the host-side graph has no dataflow partition")
    return (shape[1], shape[2], shape[3]), order


def build_cpu_model(
    hw: Any, parent: Any, dataset: str | None = None, host_op: dict[str, Any] | None = None
) -> CpuModel:
    """The model file's contents from the hardware graph and the host-side graph (ModelWrappers);
    ``host_op``: a host-binarized design's input threshold (finnlib/host_threshold.py), which
    becomes the file's first layer, so that the engine takes the images as before."""
    prepare_finn()  # registers FINN's HW Reshape with qonnx's op registry
    input_type = "UINT8" if host_op is None else "BINARY"
    (c, h, w), order = _host_input(parent, input_type)
    hw_in = hw.graph.input[0].name
    hw_shape = [int(v) for v in hw.get_tensor_shape(hw_in)]
    expected = [1, h, w, c] if order == InputOrder.HWC else [1, c, h, w]
    if hw_shape != expected:
        raise UnsupportedGraph(f"the hardware graph's input is {hw_shape}, the host side hands it {expected}")
    if str(hw.get_tensor_datatype(hw_in)) != input_type:
        raise UnsupportedGraph(
            f"the hardware graph's input is {hw.get_tensor_datatype(hw_in)}, expected {input_type}"
        )

    walker = _Walker(hw)
    walker.shape = (h, w, c)
    walker.image_chw = (c, h, w)
    if host_op is not None:
        walker.host_thresholds = op_thresholds(host_op)
    _walk(hw, walker, image_nchw=order == InputOrder.CHW)
    n_classes = walker.layers[-1].in_c
    model = CpuModel(
        in_c=c,
        in_h=h,
        in_w=w,
        input_order=order,
        n_classes=n_classes,
        # the header names only bnnflow's named datasets; a user's data is NONE
        dataset=DATASET_BY_NAME.get(dataset or "", Dataset.NONE),
        layers=walker.layers,
    )
    try:
        validate(model)
    except BnnflowError as exc:
        raise UnsupportedGraph(f"the layers do not form a valid model file: {exc}") from None
    return model


def _walk(hw: Any, walker: _Walker, image_nchw: bool) -> None:
    """The hardware graph's layers, in order, into ``walker``; ``image_nchw``: until flattened, the
    tensor is the stored image."""
    nodes = list(hw.graph.node)
    tensor = hw.graph.input[0].name
    for node in nodes:
        if len(node.output) != 1 or node.input[0] != tensor:
            raise _fail(node, "the hardware graph is not a single chain of layers")
        tensor = node.output[0]
    if tensor != hw.graph.output[0].name:
        raise UnsupportedGraph("the hardware graph's output is not its last node's")
    i = 0
    while i < len(nodes):
        node = nodes[i]
        if walker.done:
            raise _fail(node, "a layer after the label select")
        if not node.domain.startswith("finn.custom_op.fpgadataflow"):
            raise _fail(node, "not a FINN hardware layer")
        op = base_op_type(node.op_type)
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        if image_nchw and op != "Reshape":
            raise _fail(node, "the NCHW image reaches a layer without a flatten or an NCHW->NHWC Transpose")
        if walker.host_thresholds is not None and op != "Reshape":
            walker.host_threshold(node, image_nchw)
        if op == "Reshape":
            walker.reshape(node, image_nchw)
            image_nchw = False
        elif op == "Thresholding":
            walker.thresholding(node)
        elif op == "ConvolutionInputGenerator":
            if nxt is None:
                raise _fail(node, "a sliding window at the end of the graph")
            if walker.get(node).get_nodeattr("depthwise"):
                walker.maxpool(node, nxt)
            else:
                if base_op_type(nxt.op_type) != "MVAU":
                    raise _fail(node, f"a sliding window followed by {nxt.op_type}, not an MVAU")
                walker.mvau(nxt, node)
            i += 1
        elif op == "MVAU":
            walker.mvau(node, None)
        elif op == "LabelSelect":
            walker.label_select(node)
        elif op == "FMPadding":
            if nxt is None or base_op_type(nxt.op_type) != "ConvolutionInputGenerator":
                raise _fail(node, "padding not followed by a sliding window")
            walker.padding(node)
        elif op in ("InnerShuffle", "OuterShuffle"):
            walker.shuffle(node)
        elif op == "FMPadding_Pixel":
            raise _fail(node, "pixel padding (transposed convolutions) is not supported")
        elif op == "Pool":
            raise _fail(node, "a Pool without its sliding-window generator")
        else:
            raise _fail(node, "this layer type is not supported by the CPU model format")
        i += 1
    if not walker.done:
        raise UnsupportedGraph("the hardware graph does not end in a LabelSelect")


def export_cpu_model(compile_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``<compile_dir>/model.bnn`` (or ``out``) from a compile folder; returns its path."""
    compile_dir = Path(compile_dir)
    hw_path, parent_path = CompileDir(compile_dir).hw_graph, CompileDir(compile_dir).parent_graph
    if not compile_dir.is_dir():
        raise BnnflowError(f"compile folder not found: {compile_dir}")
    for path in (hw_path, parent_path):
        if not path.is_file():
            raise BnnflowError(f"{compile_dir} is not a compile folder: no {path.relative_to(compile_dir)}")

    prepare_finn()
    graphs = [read_graph(path) for path in (hw_path, parent_path)]
    try:
        identity = find_identity(compile_dir)  # the dataset the run recorded
        model = build_cpu_model(
            *graphs,
            dataset=None if identity is None else identity.name,
            host_op=read_thresholds(compile_dir),
        )
    except UnsupportedGraph as exc:
        raise UnsupportedGraph(exc.reason, str(hw_path)) from None
    target = Path(out) if out is not None else CompileDir(compile_dir).cpu_model
    if target.is_dir():
        raise BnnflowError(f"--out {target} is a folder; give a file name")
    if target.is_file():
        with open(target, "rb") as f:  # a mistyped --out must not overwrite someone's file
            if f.read(len(MAGIC)) != MAGIC:
                raise BnnflowError(f"refusing to replace {target}: it is not a bnncpu model file")
    return write_model(target, model)


def export_in_compile(compile_dir: Path, log: Any) -> dict[str, Any]:
    """The compile stage's call: write model.bnn; its compile.json entries.

    A network FINN can build but the CPU format cannot express (a dilated window, say)
    still compiles for the FPGA: the reason is logged and recorded instead.
    """
    try:
        export_cpu_model(compile_dir)
    except UnsupportedGraph as exc:
        log(f"  no CPU model file: {exc.reason}")
        return {"cpu_model": None, "cpu_model_error": exc.reason}
    return {"cpu_model": MODEL_FILE}


def read_design_model(compile_dir: str | Path) -> CpuModel:
    """The compile folder's model file, read and validated, and taking this design's input.

    A model file copied in from another design (or left by an earlier compile to the same
    folder) would otherwise meet the design's images and FINN's execution only later, as a
    shape error deep inside FINN.
    """
    compile_dir = Path(compile_dir)
    path = CompileDir(compile_dir).cpu_model
    model = read_model(path)
    parent = read_graph(CompileDir(compile_dir).parent_graph)
    want = tuple(int(d) for d in parent.get_tensor_shape(parent.graph.input[0].name))[1:]
    got = (model.in_c, model.in_h, model.in_w)
    if got != want:
        raise BnnflowError(
            f"{path} is another design's model file: it takes {'x'.join(map(str, got))} images, this "
            f"design {'x'.join(map(str, want))}; write this design's with `bnnflow cpu export {compile_dir}`"
        )
    return model
