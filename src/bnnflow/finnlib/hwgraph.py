"""Reading FINN hardware-layer graphs: op kinds, and which layers FINN can write at run time.

Free of qonnx and FINN imports, so that the CPU engine's writer and the
command line load it without them.
"""

from __future__ import annotations

import re
from typing import Any

# The layers whose parameters FINN can write at run time over AXI-lite.
WRITABLE_KINDS = ("MVAU", "Thresholding")


def base_op_type(op_type: str) -> str:
    """FINN's op type without the backend suffix SpecializeLayers adds (MVAU_hls -> MVAU)."""
    return re.sub(r"_(hls|rtl)$", "", op_type)


def writable_nodes(model: Any) -> list[Any]:
    """The layers whose parameters FINN can write at run time: MVAUs (weights), Thresholding."""
    return [n for n in model.graph.node if base_op_type(n.op_type) in WRITABLE_KINDS]
