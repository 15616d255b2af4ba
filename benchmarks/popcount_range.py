"""XNOR popcounts on real test images against the accumulator types FINN and bnnflow choose.

    python benchmarks/popcount_range.py runs/tfc/compile/Pynq-Z2 --n 1000 --data-dir ../shared/data

For every XNOR MVAU of a compile folder: K (its popcount's maximum), the
accumulator type finn-plus' ``minimize_accumulator_width`` gives it (recomputed
on a copy of the compiled graph), the type in the compiled design (bnnflow's
corrected one, see src/bnnflow/finnlib/xnor_acc.py), the largest popcount FINN's
Python execution of ``step_convert_to_hw`` reaches on the first N test images,
and on how many of them some popcount lies outside FINN's type, i.e. where the
generated C++ with FINN's type would wrap.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compiled", help="compile folder (runs/<name>/compile/<board>)")
    p.add_argument("--n", type=int, default=1000, help="test images")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    from bnnflow.finnlib.finn_env import prepare_finn

    prepare_finn()
    import numpy as np
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.cleanup import cleanup_model

    from bnnflow.data import recorded_test_images
    from bnnflow.finnlib.execution import execute, fast_execution
    from bnnflow.hls.verify import ChainGraphs

    inter = Path(args.compiled) / "intermediate_models"
    graphs = ChainGraphs(
        cleanup_model(ModelWrapper(str(inter / "input_qonnx.onnx"))),
        ModelWrapper(str(inter / "step_streamline.onnx")),
        ModelWrapper(str(inter / "step_convert_to_hw.onnx")),
    )
    design = ModelWrapper(str(inter / "step_hw_codegen.onnx"))
    finn_copy = ModelWrapper(copy.deepcopy(design.model))
    rows = {}
    for node, twin in zip(design.graph.node, finn_copy.graph.node, strict=True):
        inst = getCustomOp(node)
        if not node.op_type.startswith("MVAU") or not inst.get_nodeattr("binaryXnorMode"):
            continue
        finn_type = getCustomOp(twin).minimize_accumulator_width(finn_copy)
        # FINN's Python graph names the layer without the backend suffix.
        rows[node.name.replace("_hls", "")] = {
            "node": node.name,
            "K": inst.get_nodeattr("MW"),
            "finn": finn_type,
            "design": DataType[inst.get_nodeattr("accDataType")],
            "max": 0,
            "wraps": 0,
        }
    shape = tuple(int(d) for d in graphs.h.get_tensor_shape(graphs.h.graph.input[0].name)[1:])
    images, _, identity = recorded_test_images(args.compiled, shape, args.n, args.data_dir)
    dataset = identity.name
    any_wrap = 0
    with fast_execution():
        for image in images:
            ctx, _ = execute(graphs.h, image[None].astype(np.float32), graphs.h_int)
            wrapped = False
            for node in graphs.h_layers:
                row = rows.get(node.name)
                if row is None:
                    continue
                acc = graphs.hw_accumulator(node, ctx)
                row["max"] = max(row["max"], int(acc.max()))
                if acc.max() > row["finn"].max() or acc.min() < row["finn"].min():
                    row["wraps"] += 1
                    wrapped = True
            any_wrap += wrapped
    print(
        f"{args.compiled}: {len(images)} {dataset} test images, FINN's Python execution of step_convert_to_hw"
    )
    print("| layer | K | FINN's accumulator | in the design | largest popcount | images past FINN's type |")
    print("|---|---:|---|---|---:|---:|")
    for row in rows.values():
        print(
            f"| {row['node']} | {row['K']} | {row['finn'].name} (max {int(row['finn'].max())}) "
            f"| {row['design'].name} | {row['max']} | {row['wraps']} |"
        )
    print(f"images where some popcount passes FINN's type: {any_wrap} of {len(images)}")


if __name__ == "__main__":
    main()
