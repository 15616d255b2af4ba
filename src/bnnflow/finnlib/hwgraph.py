"""Reading FINN graphs: an ONNX file checked as it is read, op kinds, and which layers FINN can write.

Free of qonnx and FINN imports at module level, so that the CPU engine's writer
and the command line load it without them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError

# The layers whose parameters FINN can write at run time over AXI-lite.
WRITABLE_KINDS = ("MVAU", "Thresholding")


def base_op_type(op_type: str) -> str:
    """FINN's op type without the backend suffix SpecializeLayers adds (MVAU_hls -> MVAU)."""
    return re.sub(r"_(hls|rtl)$", "", op_type)


def writable_nodes(model: Any) -> list[Any]:
    """The layers whose parameters FINN can write at run time: MVAUs (weights), Thresholding."""
    return [n for n in model.graph.node if base_op_type(n.op_type) in WRITABLE_KINDS]


def read_graph(path: str | Path) -> Any:
    """A QONNX ``ModelWrapper`` of an ONNX file, or a one-line ``BnnflowError``.

    An empty or foreign file parses as an empty protobuf without complaint, and
    FINN and QONNX then fail deep inside with an IndexError; a graph with no
    nodes, no input, no output or no opset is refused here instead.
    """
    from qonnx.core.modelwrapper import ModelWrapper  # qonnx loads onnx: only where a graph is read

    path = Path(path)
    if not path.is_file():
        raise BnnflowError(f"ONNX model not found: {path}" if not path.exists() else f"{path} is not a file")
    try:
        model = ModelWrapper(str(path))
    except Exception as exc:  # noqa: BLE001  (onnx raises DecodeError and friends)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BnnflowError(f"cannot read ONNX model {path}: {first}") from None
    graph = model.model.graph
    missing = [
        what
        for what, present in (
            ("nodes", len(graph.node)),
            ("input", len(graph.input)),
            ("output", len(graph.output)),
            ("opset", len(model.model.opset_import)),
        )
        if not present
    ]
    if missing:
        raise BnnflowError(f"{path} is not an ONNX model (no {', no '.join(missing)})")
    return model
