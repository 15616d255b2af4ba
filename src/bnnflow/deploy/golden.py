"""The golden outputs a deployment package carries: what the FPGA and the ARM engine must both produce.

``golden_outputs`` is the one place that decides where they come from. The
C CPU engine (cpu/, bnnflow-cpu) computes exactly what the FPGA computes and
is meant to be that source; until it is part of bnnflow, the golden outputs
come from FINN's Python execution of the hardware-layer graph
(``intermediate_models/step_convert_to_hw.onnx``: MVAU, Thresholding,
LabelSelect, ... before folding and specialisation, which do not change the
arithmetic), the graph the compile stage's verification chain checks layer
by layer against the QONNX model.

Classes are the LabelSelect output; scores are its input, the last MVAU's
integer accumulators (what bnncpu.h calls the scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnnflow.errors import BnnflowError

GOLDEN_SOURCE = "finn-python:step_convert_to_hw"


def golden_outputs(compile_dir: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(classes int32 [N], scores int32 [N, n_classes], source) for uint8 images [N, C, H, W]."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.hls.finn_env import prepare_finn

    prepare_finn()
    path = Path(compile_dir) / "intermediate_models" / "step_convert_to_hw.onnx"
    if not path.is_file():
        raise BnnflowError(f"{path.parent.parent} has no intermediate_models/step_convert_to_hw.onnx")
    model = ModelWrapper(str(path))
    selects = model.get_nodes_by_op_type("LabelSelect")
    if len(selects) != 1 or selects[0].output[0] != model.graph.output[0].name:
        raise BnnflowError("the design must end with FINN's LabelSelect (a class index) to be deployed")
    score_name = selects[0].input[0]
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    ishape = tuple(model.get_tensor_shape(iname))
    classes, scores = [], []
    for image in np.asarray(images):
        ctx = execute_onnx(
            model, {iname: image.reshape(ishape).astype(np.float32)}, return_full_exec_context=True
        )
        y, s = np.asarray(ctx[oname]).reshape(-1), np.asarray(ctx[score_name]).reshape(-1)
        if not (np.array_equal(y, np.round(y)) and np.array_equal(s, np.round(s))):
            raise BnnflowError("the hardware-layer graph produced non-integer scores")
        classes.append(int(y[0]))
        scores.append(s.astype(np.int64))
    return np.asarray(classes, dtype=np.int32), np.asarray(scores, dtype=np.int32), GOLDEN_SOURCE
