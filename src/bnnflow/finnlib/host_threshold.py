"""The input threshold of a 1-bit-input network, taken out of the graph to run on the host.

After FINN's streamlining, a network whose first layer takes binary
activations (TFC, SFC, LFC) begins with a ``MultiThreshold`` on the uint8
image: one step per channel, output BINARY, which FINN builds as a
Thresholding layer in front of the first MVAU. The design then receives 8
bits per pixel and keeps 1. ``TakeOutInputThreshold`` removes that
MultiThreshold, makes the graph's input the thresholded bits (FINN's BINARY
datatype: its DMA moves 1 bit per pixel) and records the thresholds, which
the host applies before the DMA (bnnflow_board/hostbits.py) and the CPU
engine's model file keeps as its first layer (bnncpu/writer.py).

Only layout ops (Reshape, Flatten, Transpose) may sit between the input and
the MultiThreshold. They move pixels, so a threshold per channel of the
MultiThreshold's input is a threshold per pixel of the image, recorded in the
image's (C, H, W) layout; a Transpose is accepted only with a single
threshold for every pixel. Anything else is refused with the reason (a
network whose first layer takes 8-bit pixels has no such threshold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from bnnflow_board.errors import BoardError
from bnnflow_board.hostbits import THRESHOLD_OP, op_thresholds, threshold_images, threshold_op
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation

from bnnflow.errors import BnnflowError
from bnnflow.layout import CompileDir
from bnnflow.runs import atomic_write_json

LAYOUT_OPS = ("Reshape", "Flatten", "Transpose")


class NoInputThreshold(BnnflowError):
    """The graph has no input threshold to take out; the message says why in one line."""


def _attr(node: Any, name: str, default: Any) -> Any:
    from qonnx.util.basic import get_by_name

    attr = get_by_name(node.attribute, name)
    if attr is None:
        return default
    from onnx import helper

    value = helper.get_attribute_value(attr)
    return value.decode() if isinstance(value, bytes) else value


def find_input_threshold(model: Any) -> tuple[Any, list[Any]]:
    """(the MultiThreshold on the input, the layout ops before it); NoInputThreshold says why not."""
    inp = model.graph.input[0].name
    dt = model.get_tensor_datatype(inp)
    if dt != DataType["UINT8"]:
        raise NoInputThreshold(f"--host-binarize needs a uint8 image input; this graph's input is {dt.name}")
    layout: list[Any] = []
    tensor = inp
    while True:
        consumers = model.find_consumers(tensor)
        if len(consumers) != 1:
            raise NoInputThreshold(
                f"--host-binarize: the input tensor {tensor} feeds {len(consumers)} nodes, not one"
            )
        node = consumers[0]
        if node.op_type in LAYOUT_OPS:
            layout.append(node)
            tensor = node.output[0]
            continue
        if node.op_type != "MultiThreshold":
            raise NoInputThreshold(
                f"--host-binarize needs a network whose first layer takes 1-bit inputs; this one's first "
                f"layer ({node.name}, {node.op_type}) reads the 8-bit pixels"
            )
        return node, layout


def _check_binary_step(model: Any, node: Any) -> np.ndarray:
    """The MultiThreshold's thresholds, (channels, 1), if it maps each pixel to one bit; else why not."""
    thr = model.get_initializer(node.input[1])
    out_dt = model.get_tensor_datatype(node.output[0])
    scale, bias = float(_attr(node, "out_scale", 1.0)), float(_attr(node, "out_bias", 0.0))
    if thr is None or thr.ndim != 2:
        raise NoInputThreshold(f"--host-binarize: {node.name} has no 2-d threshold initializer")
    if thr.shape[1] != 1 or out_dt != DataType["BINARY"] or (scale, bias) != (1.0, 0.0):
        raise NoInputThreshold(
            "--host-binarize needs a network whose first layer takes 1-bit inputs; this one's first "
            f"layer reads {out_dt.bitwidth()}-bit inputs ({node.name} maps the pixels to {out_dt.name} with "
            f"{thr.shape[1]} thresholds)"
        )
    return np.asarray(thr, dtype=np.float64)


def image_thresholds(model: Any, node: Any, layout: list[Any], thr: np.ndarray) -> np.ndarray:
    """Integer thresholds in the image's (C, H, W) layout (or (1, 1, 1): one for every pixel).

    The pixels are integers, so ``x >= t`` is ``x >= ceil(t)`` (FINN's RoundAndClipThresholds
    rounds the hardware layer's thresholds up in the same way).
    """
    chw = tuple(int(d) for d in model.get_tensor_shape(model.graph.input[0].name)[1:])
    ints = np.ceil(thr[:, 0]).astype(np.int64)
    if ints.size == 1 or np.all(ints == ints[0]):
        return np.full((1, 1, 1), ints[0], dtype=np.int64)
    in_shape = [int(d) for d in model.get_tensor_shape(node.input[0])]
    layout_ops = {n.op_type for n in layout}
    data_layout = _attr(node, "data_layout", "NCHW")
    if "Transpose" not in layout_ops and len(chw) == 3:
        if len(in_shape) == 2 and ints.size == in_shape[1] == int(np.prod(chw)):
            return ints.reshape(chw)  # the image flattened in C order: channel i is pixel i
        if not layout and data_layout == "NCHW" and ints.size == chw[0]:
            return ints.reshape(chw[0], 1, 1)
    raise NoInputThreshold(
        f"--host-binarize: {node.name}'s {ints.size} thresholds cannot be mapped to the image's pixels"
    )


class TakeOutInputThreshold(Transformation):
    """Remove the MultiThreshold on the uint8 input; the graph's input becomes its BINARY output.

    ``thresholds`` then holds the integer thresholds in the image's (C, H, W) layout
    (``image_thresholds``), which the host applies: ``bit = pixel >= threshold``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.thresholds: np.ndarray | None = None

    def apply(self, model: Any) -> tuple[Any, bool]:
        node, layout = find_input_threshold(model)
        thr = _check_binary_step(model, node)
        self.thresholds = image_thresholds(model, node, layout, thr)
        for consumer in model.find_consumers(node.output[0]):
            for i, name in enumerate(consumer.input):
                if name == node.output[0]:
                    consumer.input[i] = node.input[0]
        if model.graph.output[0].name == node.output[0]:
            raise NoInputThreshold("--host-binarize: the graph is only its input threshold")
        model.graph.node.remove(node)
        model.del_initializer(node.input[1])
        # The input and the layout ops' outputs now carry bits.
        model.set_tensor_datatype(model.graph.input[0].name, DataType["BINARY"])
        for op in layout:
            model.set_tensor_datatype(op.output[0], DataType["BINARY"])
        return model, False


def write_thresholds(path: Path, thresholds: np.ndarray) -> dict[str, Any]:
    """The compile folder's host_thresholds.json (written atomically): the manifest's threshold op."""
    op = threshold_op(thresholds)
    atomic_write_json(path, op)
    return op


def read_thresholds(compile_dir: str | Path) -> dict[str, Any] | None:
    """A compile folder's threshold op (checked), or None for a design that takes the uint8 image."""
    folder = CompileDir(Path(compile_dir))
    path = folder.host_thresholds
    if not path.is_file():
        # a host-binarized design without its thresholds would be fed raw pixels as bits
        if folder.summary.is_file() and folder.read_info().host_binarize:
            raise BnnflowError(f"{folder.path} was compiled with --host-binarize but has no {path.name}")
        return None
    try:
        op = json.loads(path.read_text())
        if not isinstance(op, dict) or op.get("op") != THRESHOLD_OP:
            raise ValueError("not a threshold op")
        op_thresholds(op)
    except (OSError, ValueError, BoardError) as exc:
        raise BnnflowError(f"{path} is not a readable threshold file: {exc}") from None
    return op


def host_bits(images: np.ndarray, op: dict[str, Any] | None) -> np.ndarray:
    """What a host-binarized design's graph takes: the images thresholded by ``op`` (as uint8 0/1);
    the images themselves where ``op`` is None."""
    if op is None:
        return images
    try:
        return threshold_images(np.asarray(images), op)
    except BoardError as exc:
        raise BnnflowError(str(exc)) from None
