"""Running FINN and QONNX graphs fast and exactly: the execution every check in bnnflow shares.

The verification chain (hls/verify.py), the CPU engine's reference
(cpu/finn_reference.py) and the cppsim check run graphs through
``finn.core.onnx_exec.execute_onnx`` with these helpers; why each one is
safe and what it saves is in hls/verify.py's module docstring.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

# qonnx 1.0.0's Im2Col.execute_node reshapes im2col's result as if the batch
# were 1, so the streamlined CNV graph gives wrong values for batch > 1 (seen
# here: the first conv's im2col off by up to 237). Graphs containing these ops
# run image by image; test_hls checks the batched path against the sequential one.
BATCH_1_OPS = frozenset({"Im2Col"})


@contextlib.contextmanager
def sanitize_quant_tensors(on: bool) -> Iterator[None]:
    """qonnx reads SANITIZE_QUANT_TENSORS at every node; set it for a block, then restore it."""
    saved = os.environ.get("SANITIZE_QUANT_TENSORS")
    os.environ["SANITIZE_QUANT_TENSORS"] = "1" if on else "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SANITIZE_QUANT_TENSORS", None)
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = saved


@contextlib.contextmanager
def fast_execution() -> Iterator[None]:
    """qonnx sanitising off (checked afterwards, see ``execute``) and BLAS on one thread."""
    from threadpoolctl import threadpool_limits

    with sanitize_quant_tensors(False), threadpool_limits(limits=1, user_api="blas"):
        yield


def integer_tensors(model: Any) -> list[tuple[str, Any]]:
    """(tensor, DataType) for every integer-annotated tensor: what qonnx would sanitise."""
    out = []
    for ann in model.graph.quantization_annotation:
        dt = model.get_tensor_datatype(ann.tensor_name)
        if dt.is_integer():
            out.append((ann.tensor_name, dt))
    return out


def execute(model: Any, x: np.ndarray, int_tensors: list[tuple[str, Any]]) -> tuple[dict[str, Any], int]:
    """``execute_onnx`` with qonnx's sanitising off, re-run with it on if it would have mattered.

    qonnx's ``sanitize_quant_values`` leaves a tensor untouched when
    ``DataType.allowed`` holds for all of it (the rounding error is then 0); it
    is applied to each node's inputs and outputs, which are all in the full
    execution context. So if every integer-annotated tensor there is allowed,
    the sanitised run is identical; otherwise run it the library's default way.
    Returns (context, 1 if it was re-run with sanitising else 0).
    """
    from finn.core.onnx_exec import execute_onnx

    inp = {model.graph.input[0].name: x}
    ctx = execute_onnx(model, inp, return_full_exec_context=True)
    for name, dt in int_tensors:
        value = ctx.get(name)
        if value is not None and not np.all(dt.allowed(value)):
            with sanitize_quant_tensors(True):
                return execute_onnx(model, inp, return_full_exec_context=True), 1
    return ctx, 0


def _batch_tensors(model: Any) -> set[str]:
    """Tensors computed from the graph input (the ones with a batch dimension)."""
    live = {model.graph.input[0].name}
    for node in model.graph.node:
        if any(i in live for i in node.input):
            live.update(node.output)
    return live


def with_batch(model: Any, batch: int) -> Any | None:
    """A copy of ``model`` whose input-dependent tensors have batch ``batch``; None if not possible.

    qonnx's ``ChangeBatchSize`` drops all intermediate shapes and relies on
    shape inference to restore them, which fails on FINN's MaxPoolNHWC (its
    shape op needs its input shape) and on Im2Col (its shape op hard-codes batch
    1); setting the batch dimension of the recorded shapes directly keeps
    every other shape as FINN inferred it. Constant Reshape targets get the
    new batch as ChangeBatchSize does.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    if any(n.op_type in BATCH_1_OPS for n in model.graph.node):
        return None
    m = ModelWrapper(copy.deepcopy(model.model))
    live = _batch_tensors(m)
    for vi in [*m.graph.input, *m.graph.output, *m.graph.value_info]:
        if vi.name not in live:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not dims or dims[0].dim_value != 1:
            return None
        dims[0].dim_value = batch
    for node in m.get_nodes_by_op_type("Reshape"):
        shape = m.get_initializer(node.input[1])
        if shape is None:
            return None
        if shape[0] == 1:
            shape = shape.copy()
            shape[0] = batch
            m.set_initializer(node.input[1], shape)
    return m


def default_workers() -> int:
    """Worker processes for the chain: the cores this process may use, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))
