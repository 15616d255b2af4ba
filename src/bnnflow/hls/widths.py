"""Accumulator widths of XNOR-popcount layers, corrected after FINN's bit-width minimisation.

finn-plus 1.6.1's ``MVAU.minimize_accumulator_width`` bounds a binary (XNOR)
layer's accumulator by the dot product of its weights as +-1 with its 0/1
inputs: per output, sum_j x_j * w_j lies in [-(negative weights), (positive
weights)], and the type is the narrowest that holds that range (INT7 for a
64-input layer with mixed signs). finn-hlslib's ``XnorMul`` accumulates
something else: the popcount of XNOR, #(x_j == b_j) for the weight bits b,
which is that dot product plus the number of negative weights and lies
anywhere in [0, K], K = MW. A popcount above the type's maximum wraps. The
generated C++ showed it: TFC's last layer (K = 64, INT7) turned a score of
64 into -64 on MNIST test image 21, found by the cppsim stage. The HLS MVAU
compares thresholds in the threshold type, which FINN makes at least as wide
as the accumulator, so hidden layers misfire the same way.

``widen_xnor_accumulators`` gives every XNOR MVAU whose accumulator cannot
hold K the narrowest type of the same signedness that can (INT7 -> INT8 for
K = 64), and the same or wider type to its thresholds and, without an
activation, its output; FINN's ``InferDataTypes`` then carries the output
type to the consumer (LabelSelect). FINN's own values stay representable:
the new range contains the old one.
"""

from __future__ import annotations

from typing import Any

# FINN's builder steps after which accumulator types are (re)minimised.
MINIMIZE_STEPS = ("step_minimize_bit_width_initial", "step_minimize_bit_width")


def widen_xnor_accumulators(model: Any) -> tuple[Any, list[str]]:
    """(model, one line per widened layer); the model is changed in place and returned."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.infer_datatypes import InferDataTypes

    changes = []
    for node in model.graph.node:
        if not node.op_type.startswith("MVAU"):
            continue
        inst = getCustomOp(node)
        if not inst.get_nodeattr("binaryXnorMode"):
            continue
        k = int(inst.get_nodeattr("MW"))
        old = DataType[inst.get_nodeattr("accDataType")]
        if not old.is_integer() or old.max() >= k:
            continue
        new = DataType.get_smallest_possible(-k - 1) if old.signed() else DataType.get_smallest_possible(k)
        inst.set_nodeattr("accDataType", new.name)
        if inst.get_nodeattr("noActivation"):
            out = new
            if model.find_direct_successors(node) is None:
                # FINN gives a graph's last layer a whole number of bytes (minimize_accumulator_width).
                bits = -(-new.bitwidth() // 8) * 8
                out = DataType[new.name.replace(str(new.bitwidth()), str(bits))]
            inst.set_nodeattr("outputDataType", out.name)
        elif len(node.input) > 2:
            tdt = model.get_tensor_datatype(node.input[2])
            if tdt.bitwidth() < new.bitwidth():
                model.set_tensor_datatype(node.input[2], new)
        changes.append(f"{node.name}: {old.name} -> {new.name} (popcount up to {k})")
    if changes:
        model = model.transform(InferDataTypes())
    return model, changes
