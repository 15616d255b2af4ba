"""FINN's padded sliding window for a convolution whose binary input is padded with -1.

What FINN does with padding (docs/padding.md has the experiment): qonnx's
``LowerConvsToMatMul`` turns a padded ``Conv`` into ``Im2Col`` with
``pad_amount`` and the default ``pad_value`` 0, whatever the input's type;
``ConvertBipolarMatMulToXnorPopcount`` then re-encodes the bipolar
activation feeding an XNOR MatMul as bits (``(x + 1) / 2``, changing the
producing MultiThreshold, through the Im2Col), which leaves the padding at 0,
now the bit of -1; ``InferConvInpGen`` maps the Im2Col to ``FMPadding``
(which pads with 0 only) and a sliding window. So FINN pads a binary stream
with -1, and PyTorch's zero padding of a +-1 tensor has no counterpart in it.

bnnflow.padding trains with that -1 (an explicit ``Pad`` before a ``Conv``
without padding). After FINN's streamlining that ``Pad`` still holds -1 but
sits on the re-encoded 0/1 stream, where the re-encoding did not reach it,
before the ``Transpose`` and ``Im2Col`` of the lowered convolution.
``AbsorbBinaryPadIntoIm2Col`` moves it into the Im2Col, with -1 written as
its bit, 0: the graph FINN's own lowering makes for a padded convolution,
which FINN maps to its padded sliding window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation

from bnnflow.errors import BnnflowError

#: The bipolar value that bnnflow.padding pads binary activations with, and its bit in FINN's encoding.
BIPOLAR_PAD = -1.0
BINARY_PAD = 0


def _initializer(model: Any, node: Any, index: int) -> np.ndarray | None:
    if len(node.input) <= index or not node.input[index]:
        return None
    return model.get_initializer(node.input[index])


def _hw_pad_amount(model: Any, pad: Any) -> list[int] | None:
    """The Im2Col ``pad_amount`` (top, left, bottom, right) of an NCHW constant ``Pad`` of -1, else None."""
    from qonnx.util.basic import get_by_name

    mode = get_by_name(pad.attribute, "mode")
    if mode is not None and mode.s.decode() != "constant":
        return None
    pads, value, axes = (_initializer(model, pad, i) for i in (1, 2, 3))
    if pads is None or value is None or float(np.ravel(value)[0]) != BIPOLAR_PAD:
        return None
    if axes is not None and list(np.ravel(axes)) != [0, 1, 2, 3]:
        return None
    pads = [int(p) for p in np.ravel(pads)]
    if len(pads) != 8 or pads[0] or pads[1] or pads[4] or pads[5]:  # N and C never padded
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


class AbsorbBinaryPadIntoIm2Col(Transformation):
    """``Pad(-1)`` on a 0/1 stream -> ``Transpose`` -> ``Im2Col`` -> ``XnorPopcountMatMul``:
    the padding moves into the Im2Col as the bit 0.

    Only a ``Pad`` whose input FINN re-encoded to BINARY for an XNOR MatMul is
    touched; any other ``Pad`` is left for FINN (which refuses what it cannot map).
    """

    def apply(self, model: Any) -> tuple[Any, bool]:
        from qonnx.custom_op.registry import getCustomOp

        for pad in model.graph.node:
            found = _pad_before_xnor_im2col(model, pad)
            if found is None:
                continue
            amount, transpose, im2col = found
            n, c, h, w = model.get_tensor_shape(pad.input[0])
            transpose.input[0] = pad.input[0]
            model.set_tensor_shape(transpose.output[0], [n, h, w, c])
            inst = getCustomOp(im2col)
            inst.set_nodeattr("input_shape", f"({n},{h},{w},{c})")
            inst.set_nodeattr("pad_amount", amount)
            inst.set_nodeattr("pad_value", BINARY_PAD)
            model.graph.node.remove(pad)
            return model, True
        return model, False


def _pad_before_xnor_im2col(model: Any, pad: Any) -> tuple[list[int], Any, Any] | None:
    """(pad_amount, Transpose, Im2Col) if ``pad`` is a -1 Pad of a 0/1 stream before an unpadded
    Im2Col of an XNOR MatMul, else None."""
    from qonnx.custom_op.registry import getCustomOp

    if pad.op_type != "Pad" or model.get_tensor_datatype(pad.input[0]) != DataType["BINARY"]:
        return None
    amount = _hw_pad_amount(model, pad)
    if amount is None or len(model.find_consumers(pad.output[0])) != 1:
        return None
    transpose = model.find_consumer(pad.output[0])
    if transpose.op_type != "Transpose" or _perm(transpose) != [0, 2, 3, 1]:
        return None
    im2col = model.find_consumer(transpose.output[0])
    if im2col is None or im2col.op_type != "Im2Col" or any(getCustomOp(im2col).get_nodeattr("pad_amount")):
        return None
    matmul = model.find_consumer(im2col.output[0])
    if matmul is None or matmul.op_type != "XnorPopcountMatMul":
        return None
    return amount, transpose, im2col


def _perm(transpose: Any) -> list[int]:
    from qonnx.util.basic import get_by_name

    perm = get_by_name(transpose.attribute, "perm")
    return list(perm.ints) if perm is not None else []


def _refuse_other_pads(model: Any) -> None:
    """A Pad left now has no FINN hardware layer (FMPadding pads with 0 only, through a convolution's
    sliding window); FINN's ``InferFMPadding`` would fail on it without naming it."""
    for node in model.graph.node:
        if node.op_type != "Pad":
            continue
        value = _initializer(model, node, 2)
        value = 0.0 if value is None else float(np.ravel(value)[0])
        dtype = model.get_tensor_datatype(node.input[0]).name
        raise BnnflowError(
            f"FINN cannot map {node.name} (Pad of a {dtype} tensor with {value:g}): pad through the "
            "convolution's padding, binary activations with -1 (bnnflow.padding, docs/padding.md)"
        )


def map_binary_padding(model: Any, _cfg: Any = None) -> Any:
    """After FINN's step_streamline: -1 padding into the Im2Cols, then the transposes FINN's step absorbs.

    The Pad kept FINN's ``AbsorbTransposeIntoMultiThreshold`` and
    ``AbsorbConsecutiveTransposes`` (which step_streamline runs after lowering)
    from meeting the transposes around it; they run again once it is gone.
    """
    from finn.transformation.streamline.absorb import (
        AbsorbConsecutiveTransposes,
        AbsorbTransposeIntoMultiThreshold,
    )
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    if not any(n.op_type == "Pad" for n in model.graph.node):
        return model
    model = model.transform(AbsorbBinaryPadIntoIm2Col())
    _refuse_other_pads(model)
    for transformation in (
        InferShapes(),
        AbsorbTransposeIntoMultiThreshold(),
        AbsorbConsecutiveTransposes(),
        InferShapes(),
        InferDataTypes(),
        InferDataLayouts(),
        RemoveUnusedTensors(),
        GiveUniqueNodeNames(),
        GiveReadableTensorNames(),
    ):
        model = model.transform(transformation)
    return model
