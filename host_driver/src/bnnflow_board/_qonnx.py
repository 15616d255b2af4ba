"""Importing finn-plus-driver where onnx cannot be installed.

finn-plus-driver packs data with two pieces of qonnx: ``qonnx.core.datatype``
(numpy only) and ``qonnx.util.basic`` (``roundup_to_integer_multiple``,
``gen_finn_dt_tensor``). The latter imports ``GraphProto`` and ``ModelProto``
from onnx at module level, for type hints only, and onnx has no wheels for
the Pynq-Z2's 32-bit ARM (building it there needs protobuf and a C++
toolchain, hours on two Cortex-A9 cores). Where onnx is importable nothing is
done. Where it is not, a module named ``onnx`` holding just those two names is
registered before qonnx is imported; both raise if anything ever tries to
build an ONNX graph with them, so no ONNX work can silently happen on the
board. This is the whole difference between the board's qonnx and the
compiler's.
"""

from __future__ import annotations

import importlib.util
import sys
import types

PLACEHOLDER_ATTR = "__bnnflow_board_placeholder__"


class _NoOnnx:
    def __init__(self, *_args: object, **_kwargs: object) -> None:
        raise RuntimeError(
            "onnx is not installed on this board (bnnflow-board only needs qonnx's data types and packing)"
        )


def ensure_qonnx_importable() -> bool:
    """Make ``import qonnx.util.basic`` work; True if a placeholder onnx was registered."""
    if "onnx" in sys.modules:
        return bool(getattr(sys.modules["onnx"], PLACEHOLDER_ATTR, False))
    if importlib.util.find_spec("onnx") is not None:
        return False
    module = types.ModuleType("onnx", "placeholder registered by bnnflow_board: onnx is not installed")
    module.GraphProto = type("GraphProto", (_NoOnnx,), {})  # type: ignore[attr-defined]
    module.ModelProto = type("ModelProto", (_NoOnnx,), {})  # type: ignore[attr-defined]
    setattr(module, PLACEHOLDER_ATTR, True)
    sys.modules["onnx"] = module
    return True
