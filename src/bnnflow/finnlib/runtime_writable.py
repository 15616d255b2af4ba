"""The runtime-writable rewrite of a hardware-layer graph, as a QONNX Transformation.

Why a build that writes weights at run time sets ``runtime_writeable_weights``
right after ``step_convert_to_hw``, and what that does to FINN's bit-width
minimisation, is in hls/runtime_weights.py.
"""

from __future__ import annotations

from typing import Any

from qonnx.transformation.base import Transformation

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.hwgraph import base_op_type, writable_nodes


class MakeRuntimeWritable(Transformation):
    """Set ``runtime_writeable_weights=1`` (and the decoupled memory it needs) on every writable layer.

    Apply to the graph right after ``step_convert_to_hw`` of a build with
    ``standalone_thresholds``: an MVAU that still holds thresholds would keep
    them out of reach of the AXI-lite port, so such a graph is refused.
    """

    def apply(self, model: Any) -> tuple[Any, bool]:
        from qonnx.custom_op.registry import getCustomOp

        for node in writable_nodes(model):
            inst = getCustomOp(node)
            if base_op_type(node.op_type) == "MVAU" and not inst.get_nodeattr("noActivation"):
                raise BnnflowError(
                    f"{node.name} keeps its thresholds inside the MVAU, where FINN cannot write them at "
                    "run time; runtime weights need FINN's standalone_thresholds"
                )
            inst.set_nodeattr("runtime_writeable_weights", 1)
            if "mem_mode" in inst.get_nodeattr_types():
                inst.set_nodeattr("mem_mode", "internal_decoupled")
        # One pass sets every node: asking transform() for another would change nothing.
        return model, False
