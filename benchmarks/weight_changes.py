"""What retraining changes in a compiled design: weights and thresholds per layer.

    python benchmarks/weight_changes.py runs/a/compile/Pynq-Z2 runs/b/compile/Pynq-Z2

Compares the hardware graphs (``model_hw.onnx``) of two compiles of the same
network with the same folding (compile the second with ``--folding`` pointing
at the first one's ``folding.json``): per layer, how many binary weights and
how many thresholds differ, wherever FINN keeps the thresholds (inside the
MVAU, or in a standalone Thresholding layer after ``--runtime-weights``), and
whether anything other than these values differs (datatypes, widths, folding).
This is the measurement behind ``--runtime-weights``, not a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import bnnflow  # noqa: F401
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.hls.runtime_weights import first_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="compile folder of the first checkpoint")
    ap.add_argument("after", help="compile folder of the retrained checkpoint, same folding")
    args = ap.parse_args()
    prepare_finn()

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    a = ModelWrapper(str(Path(args.before) / "model_hw.onnx"))
    b = ModelWrapper(str(Path(args.after) / "model_hw.onnx"))
    head = ("layer", "weights changed", "thresholds changed", "threshold type")
    print(f"| {head[0]:<20} | {head[1]:>22} | {head[2]:>22} | {head[3]:>14} |")
    print(f"|{'-' * 22}|{'-' * 24}|{'-' * 24}|{'-' * 16}|")
    totals = np.zeros(4, dtype=np.int64)
    for na, nb in zip(a.graph.node, b.graph.node, strict=True):
        if not na.op_type.startswith(("MVAU", "Thresholding")):
            continue
        weights = thresholds = "-"
        dtype = "-"
        params = list(zip(na.input[1:], nb.input[1:], strict=True))
        if na.op_type.startswith("MVAU"):
            wa, wb = a.get_initializer(params[0][0]), b.get_initializer(params[0][1])
            weights = f"{int(np.sum(wa != wb)):,} of {wa.size:,}"
            totals += (int(np.sum(wa != wb)), wa.size, 0, 0)
            params = params[1:] if not getCustomOp(na).get_nodeattr("noActivation") else []
        for ta_name, tb_name in params:
            ta, tb = a.get_initializer(ta_name), b.get_initializer(tb_name)
            channels_changed = int(np.sum(np.any(ta != tb, axis=-1)))
            thresholds = f"{channels_changed:,} of {ta.shape[0]:,} channels"
            dtype = f"{a.get_tensor_datatype(ta_name).name}/{b.get_tensor_datatype(tb_name).name}"
            totals += (0, 0, channels_changed, ta.shape[0])
        print(f"| {na.name:<20} | {weights:>22} | {thresholds:>22} | {dtype:>14} |")
    print(
        f"total: {totals[0]:,} of {totals[1]:,} weights, "
        f"thresholds of {totals[2]:,} of {totals[3]:,} channels"
    )
    diff = first_difference(a, b)
    print("beyond these values the graphs are identical" if diff is None else f"they also differ: {diff}")


if __name__ == "__main__":
    main()
