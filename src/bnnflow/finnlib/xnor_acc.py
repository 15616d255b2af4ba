"""XNOR-popcount accumulators sized for the popcount, not for a +-1 dot product.

finn-plus 1.6.1's ``MinimizeAccumulatorWidth`` sizes an MVAU's accumulator
from the range of ``input x weight`` over the weight matrix. In binaryXnorMode
it turns the 0/1 weights into -1/+1 and keeps the BINARY (0/1) input type, so
the range it derives is that of a {0, 1} x {-1, +1} dot product: from minus the
number of -1 weights to the number of +1 weights of a column. But the hardware
(finn-hlslib's ``XnorMul``) accumulates the number of *matching* bits, which
runs from 0 to MW. So a 64-input layer gets INT7 (at most 63) where 64 occurs
whenever all 64 bits match, and TFC's 784-input layer gets INT10 (at most 511).
Two things then go wrong on the FPGA (and in FINN's C++ simulation of it),
while FINN's Python execution, which computes in floats, shows neither:

* a layer without activation (the last MVAU, whose output is the score vector)
  uses the accumulator type as its output type, so a score of 64 wraps to -64
  (seen in cppsim of a TFC: the class changed on 1 image in 200);
* ``RoundAndClipThresholds`` clips a thresholded layer's thresholds to that
  too-small range plus one, so a threshold above it (a channel that fires only
  when more than 512 of 784 bits match, or never) is lowered, and the layer's
  function changes.

``CorrectXnorAccumulators`` runs after each of FINN's bit-width minimisation
steps: it gives every XNOR MVAU the unsigned accumulator type that holds 0..MW
(the output type too where there is no activation, rounded up to whole bytes
at the graph's output as FINN does), puts back the thresholds the layer had
before FINN clipped them, and lets FINN's own ``RoundAndClipThresholds`` clip
them again against the correct range. A layer whose types already hold 0..MW
and whose thresholds were not changed is left as it is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation


def xnor_mvaus(model: Any) -> list[Any]:
    """The MVAU nodes of a graph that compute XNOR-popcount."""
    from qonnx.custom_op.registry import getCustomOp

    return [
        n
        for n in model.graph.node
        if n.op_type.startswith("MVAU") and getCustomOp(n).get_nodeattr("binaryXnorMode") == 1
    ]


def thresholds_by_node(model: Any) -> dict[str, np.ndarray]:
    """Each thresholded XNOR MVAU's thresholds, keyed by node name (taken before FINN clips them)."""
    out = {}
    for node in xnor_mvaus(model):
        if len(node.input) > 2:
            thresholds = model.get_initializer(node.input[2])
            if thresholds is not None:
                out[node.name] = np.array(thresholds, copy=True)
    return out


def popcount_type(mw: int) -> DataType:
    """The smallest unsigned type holding 0 .. mw."""
    return DataType[f"UINT{max(1, math.ceil(math.log2(mw + 1)))}"]


class CorrectXnorAccumulators(Transformation):
    """Accumulators of XNOR MVAUs that hold 0..MW; thresholds clipped against that range.

    ``thresholds_before`` maps node names to the thresholds they had before
    FINN's minimisation step clipped them (``thresholds_by_node`` of the graph
    before the step).
    """

    def __init__(self, thresholds_before: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.thresholds_before = thresholds_before or {}

    def apply(self, model: Any) -> tuple[Any, bool]:
        from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
        from qonnx.custom_op.registry import getCustomOp
        from qonnx.transformation.infer_datatypes import InferDataTypes

        changed = False
        for node in xnor_mvaus(model):
            inst = getCustomOp(node)
            mw = int(inst.get_nodeattr("MW"))
            need = popcount_type(mw)
            acc = DataType[inst.get_nodeattr("accDataType")]
            holds = acc.min() <= 0 and acc.max() >= mw
            if inst.get_nodeattr("noActivation"):
                out = DataType[inst.get_nodeattr("outputDataType")]
                if holds and out.min() <= 0 and out.max() >= mw:
                    continue
                if model.find_direct_successors(node) is None:  # graph output: whole bytes
                    need = DataType[f"UINT{8 * math.ceil(need.bitwidth() / 8)}"]
                inst.set_nodeattr("accDataType", need.name)
                inst.set_nodeattr("outputDataType", need.name)
                model.set_tensor_datatype(node.output[0], need)
                changed = True
                continue
            before = self.thresholds_before.get(node.name)
            current = model.get_initializer(node.input[2]) if len(node.input) > 2 else None
            restore = before is not None and current is not None and not np.array_equal(before, current)
            if holds and not restore:
                continue
            inst.set_nodeattr("accDataType", need.name)
            if restore:
                model.set_initializer(node.input[2], before.astype(np.float32))
            changed = True
        if changed:
            model = model.transform(RoundAndClipThresholds())
            model = model.transform(InferDataTypes())
        return model, False
