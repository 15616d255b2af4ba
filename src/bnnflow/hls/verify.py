"""The verification chain: QONNX reference vs streamlined FINN graph vs hardware layers.

All three graphs are executed by FINN/QONNX (``finn.core.onnx_exec.execute_onnx``,
Python execution of MVAU, Thresholding, sliding windows, pooling and label
select) on the same images, with ``return_full_exec_context=True`` so the
intermediate tensors can be compared at matching points:

* the binary activations after each weight layer (QONNX: the BipolarQuant after
  BatchNorm, as +-1; streamlined: the MultiThreshold after each MatMul, as 0/1;
  hardware: the MVAU output with its folded thresholds);
* the integer accumulators of each weight layer (streamlined: the XNOR-popcount /
  integer MatMul output; hardware: the MVAU re-run without its thresholds;
  QONNX, for layers with binary inputs: the +-1 dot product, which is
  ``2 * popcount - K``);
* the predicted label.

The first layer where two graphs disagree is named. FINN's hardware layers
take one image at a time (their shapes fix the batch at 1), so images are
looped; the rate is measured and reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class VerifyResult:
    n_images: int
    labels_match: int
    accumulators_match: int
    activations_match: int
    first_mismatch: str | None
    seconds: float
    images_per_s: float
    layers: list[str] = field(default_factory=list)
    accuracy_vs_labels: float | None = None

    @property
    def ok(self) -> bool:
        return self.first_mismatch is None

    def to_json(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "labels_identical": self.labels_match,
            "accumulators_identical": self.accumulators_match,
            "activations_identical": self.activations_match,
            "first_mismatch": self.first_mismatch,
            "seconds": round(self.seconds, 2),
            "images_per_s": round(self.images_per_s, 3),
            "layers": self.layers,
            "accuracy_vs_dataset_labels": self.accuracy_vs_labels,
        }


def _producer_type(model: Any, tensor: str) -> str | None:
    node = model.find_producer(tensor)
    return node.op_type if node is not None else None


def _to_nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


class _Graphs:
    """The three graphs and the tensor names that line up between them."""

    def __init__(self, qonnx_model: Any, streamlined: Any, hw: Any) -> None:
        self.q, self.s, self.h = qonnx_model, streamlined, hw
        # QONNX: per weight layer (Conv/Gemm/MatMul), its output and the +-1
        # activation quantizer after its BatchNorm (None for the last layer).
        self.q_layers: list[tuple[str, str | None, int | None]] = []
        for node in qonnx_model.graph.node:
            if node.op_type not in ("Conv", "Gemm", "MatMul"):
                continue
            src = qonnx_model.find_producer(node.input[0])
            binary_in = src is not None and src.op_type == "BipolarQuant"
            k = None
            if binary_in:
                # K, the dot-product length: Conv (out, in, kh, kw), Gemm (out, in)
                # with transB as Brevitas exports it, MatMul (in, out).
                wshape = qonnx_model.get_tensor_shape(node.input[1])
                k = int(np.prod(wshape[1:])) if node.op_type != "MatMul" else int(wshape[0])
            act = None
            nxt = qonnx_model.find_consumer(node.output[0])
            if nxt is not None and nxt.op_type == "BatchNormalization":
                bq = qonnx_model.find_consumer(nxt.output[0])
                if bq is not None and bq.op_type == "BipolarQuant":
                    act = bq.output[0]
            self.q_layers.append((node.output[0], act, k))
        self.s_layers: list[tuple[str, str | None]] = []
        for node in streamlined.graph.node:
            if node.op_type in ("MatMul", "XnorPopcountMatMul"):
                nxt = streamlined.find_consumer(node.output[0])
                act = nxt.output[0] if nxt is not None and nxt.op_type == "MultiThreshold" else None
                self.s_layers.append((node.output[0], act))
        self.h_layers = [n for n in hw.graph.node if n.op_type.startswith("MVAU")]
        if not (len(self.q_layers) == len(self.s_layers) == len(self.h_layers)):
            raise RuntimeError(
                f"weight layers do not line up: QONNX {len(self.q_layers)}, "
                f"streamlined {len(self.s_layers)}, hardware {len(self.h_layers)}"
            )

    def hw_accumulator(self, node: Any, context: dict[str, np.ndarray]) -> np.ndarray:
        """The MVAU's integer accumulator: the same node run without its thresholds."""
        from onnx import helper
        from qonnx.custom_op.registry import getCustomOp

        if getCustomOp(node).get_nodeattr("noActivation"):
            return context[node.output[0]]
        bare = helper.make_node(node.op_type, node.input[:2], ["acc"], domain=node.domain, name=node.name)
        bare.attribute.extend(node.attribute)
        inst = getCustomOp(bare)
        inst.set_nodeattr("noActivation", 1)
        ctx = {
            node.input[0]: context[node.input[0]],
            node.input[1]: context[node.input[1]],
            "acc": np.zeros(inst.get_normal_output_shape(), dtype=np.float32),
        }
        inst.execute_node(ctx, self.h.graph)
        return ctx["acc"]


def _run(model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    from finn.core.onnx_exec import execute_onnx

    return execute_onnx(model, {model.graph.input[0].name: x}, return_full_exec_context=True)


def verify_chain(
    qonnx_model: Any,
    streamlined: Any,
    hw: Any,
    images: np.ndarray,
    labels: np.ndarray | None = None,
) -> VerifyResult:
    """Run every image through the three graphs and compare at each weight layer."""
    graphs = _Graphs(qonnx_model, streamlined, hw)
    names = [n.name for n in graphs.h_layers]
    n_labels = n_acc = n_act = 0
    correct = 0
    first: str | None = None
    start = time.perf_counter()
    for i, image in enumerate(images):
        x = image[None].astype(np.float32)
        cq, cs, ch = _run(graphs.q, x), _run(graphs.s, x), _run(graphs.h, x)
        lq = int(np.ravel(cq[graphs.q.graph.output[0].name])[0])
        ls = int(np.ravel(cs[graphs.s.graph.output[0].name])[0])
        lh = int(np.ravel(ch[graphs.h.graph.output[0].name])[0])
        if labels is not None and lh == int(labels[i]):
            correct += 1
        acc_ok = act_ok = True
        for li, ((q_out, q_act, k), (s_out, s_act), h_node) in enumerate(
            zip(graphs.q_layers, graphs.s_layers, graphs.h_layers, strict=True)
        ):
            where = f"image {i}, layer {li} ({h_node.name})"
            s_acc = cs[s_out]
            h_acc = graphs.hw_accumulator(h_node, ch).reshape(s_acc.shape)
            problems = []
            if not np.array_equal(s_acc, h_acc):
                problems.append("accumulators differ between streamlined and hardware graphs")
            if k is not None:
                q_dot = _to_nhwc(cq[q_out])
                if not np.array_equal(q_dot.reshape(s_acc.shape), 2 * s_acc - k):
                    problems.append("QONNX dot product != 2*popcount-K of the streamlined graph")
            if problems:
                acc_ok = False
            if s_act is not None and q_act is not None:
                q_bits = (_to_nhwc(cq[q_act]) > 0).astype(np.float32)
                s_bits = cs[s_act]
                h_bits = ch[h_node.output[0]]
                if not np.array_equal(q_bits.reshape(s_bits.shape), s_bits):
                    problems.append("activations differ between QONNX and streamlined graphs")
                    act_ok = False
                if not np.array_equal(s_bits, h_bits.reshape(s_bits.shape)):
                    problems.append("activations differ between streamlined and hardware graphs")
                    act_ok = False
            if problems and first is None:
                first = f"{where}: {problems[0]}"
        if not (lq == ls == lh) and first is None:
            first = f"image {i}: labels differ (QONNX {lq}, streamlined {ls}, hardware {lh})"
        n_labels += lq == ls == lh
        n_acc += acc_ok
        n_act += act_ok
    seconds = time.perf_counter() - start
    n = len(images)
    return VerifyResult(
        n_images=n,
        labels_match=n_labels,
        accumulators_match=n_acc,
        activations_match=n_act,
        first_mismatch=first,
        seconds=seconds,
        images_per_s=n / seconds if seconds > 0 else float("inf"),
        layers=names,
        accuracy_vs_labels=correct / n if labels is not None and n else None,
    )
