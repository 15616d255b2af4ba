"""The verification chain: QONNX reference vs streamlined FINN graph vs hardware layers.

All three graphs are executed by FINN/QONNX (``finn.core.onnx_exec.execute_onnx``,
Python execution of MVAU, Thresholding, sliding windows, pooling and label
select) on the same images, with ``return_full_exec_context=True`` so the
intermediate tensors can be compared at matching points:

* the binary activations after each weight layer (QONNX: the BipolarQuant after
  BatchNorm, as +-1; streamlined: the MultiThreshold after each MatMul, as 0/1;
  hardware: the MVAU output with its folded thresholds, or the standalone
  Thresholding layer after it);
* the integer accumulators of each weight layer (streamlined: the XNOR-popcount /
  integer MatMul output; hardware: the MVAU re-run without its thresholds;
  QONNX, for layers with binary inputs: the +-1 dot product, which is
  ``2 * popcount - K``);
* the predicted label.

The first layer where two graphs disagree is named (lowest image index first).

Speed (profiled on CNV, 2 busy cores; numbers in docs/compile.md). Three
things made the original image-by-image loop run at about 0.3 images/s, none
of them the arithmetic:

1. qonnx's ``sanitize_quant_values`` runs before and after every node when
   ``SANITIZE_QUANT_TENSORS`` is on (the default) and takes the maximum rounding
   error with Python's builtin ``max`` over every element of every
   integer-annotated tensor: about 60% of the per-image time. It only changes
   a tensor whose values its DataType does not allow. So the graphs run with
   ``SANITIZE_QUANT_TENSORS=0`` (qonnx's own switch) and afterwards every
   integer-annotated tensor of the full execution context is checked with the
   same ``DataType.allowed``; if all are allowed, sanitising would have
   changed nothing and the results are the library default's, bit for bit. If
   one is not, that image is run again with sanitising on (counted in
   ``sanitized_reruns``).
2. OpenBLAS' worker threads spin-wait for a core; with both cores busy a
   (1, 28, 28, 576) x (576, 64) XNOR matmul took 70-650 ms instead of 4 ms. The
   chain runs with BLAS limited to one thread (threadpoolctl) and gets its
   parallelism from processes instead.
3. Per-node overhead (qonnx builds an onnxruntime session per standard node per
   call): the graphs whose ops accept a batch (the QONNX reference always; the
   streamlined graph unless it contains an op that only handles batch 1) run
   on chunks of images at once. FINN's hardware layers fix the batch at 1, so
   that graph runs image by image.

Images are split into chunks that a pool of worker processes (``workers``;
each loads the three graphs once) checks independently; results are merged in
image order, so the outcome does not depend on the number of workers (tested).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnnflow.finnlib.execution import (
    default_workers,
    execute,
    fast_execution,
    integer_tensors,
    with_batch,
)
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.finnlib.host_threshold import host_bits

CHUNK = 32  # images per batched execution / per pool task
POOL_MIN_SECONDS = 30.0  # start a pool only if the rest would take longer than this in one process
CACHE_VERSION = 2  # bump when what is compared or how changes; old cache entries then miss


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
    workers: int = 1
    batched: list[str] = field(default_factory=list)
    sanitized_reruns: int = 0
    cached_from: str | None = None

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
            "workers": self.workers,
            "batched_graphs": self.batched,
            "sanitized_reruns": self.sanitized_reruns,
            "cached_from": self.cached_from,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], cached_from: str | None = None) -> VerifyResult:
        return cls(
            n_images=data["n_images"],
            labels_match=data["labels_identical"],
            accumulators_match=data["accumulators_identical"],
            activations_match=data["activations_identical"],
            first_mismatch=data["first_mismatch"],
            seconds=data["seconds"],
            images_per_s=data["images_per_s"],
            layers=list(data.get("layers", [])),
            accuracy_vs_labels=data.get("accuracy_vs_dataset_labels"),
            workers=data.get("workers", 1),
            batched=list(data.get("batched_graphs", [])),
            sanitized_reruns=data.get("sanitized_reruns", 0),
            cached_from=cached_from,
        )


@dataclass
class _ImageCheck:
    """One image's outcome; merged in image order by ``verify_chain``."""

    labels: tuple[int, int, int]  # QONNX, streamlined, hardware
    acc_ok: bool
    act_ok: bool
    problem: str | None  # first problem on this image, with image and layer named
    sanitized_reruns: int = 0


def _to_nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _scalar_sign(model: Any, node: Any) -> np.ndarray | None:
    """-1 if the scalar affine ops after the last layer (Brevitas' TensorNorm: Sub, Div,
    Mul, Add) multiply by a negative number, else None.

    Streamlining absorbs that sign into the layer's XNOR weights as it does a
    negative BatchNorm scale, so the streamlined accumulator mirrors the QONNX
    dot product there too.
    """
    sign = 1.0
    while node is not None and node.op_type in ("Sub", "Add", "Mul", "Div"):
        if node.op_type in ("Mul", "Div"):
            for name in node.input:
                const = model.get_initializer(name)
                if const is not None and const.size == 1 and float(const.ravel()[0]) < 0:
                    sign = -sign
        node = model.find_consumer(node.output[0])
    return np.array(-1.0, dtype=np.float32) if sign < 0 else None


def _producer_before_pad(model: Any, tensor: str) -> Any:
    """The node producing ``tensor``, looking through a ``Pad`` (bnnflow.padding's -1 padding)."""
    src = model.find_producer(tensor)
    if src is not None and src.op_type == "Pad":
        src = model.find_producer(src.input[0])
    return src


def padding_hints(qonnx_model: Any) -> dict[int, str]:
    """Weight layer index -> what is wrong with its padding, for convolutions that pad binary input with
    anything but -1.

    FINN pads a binary stream with the bit 0, which stands for -1
    (finnlib/padding.py, docs/padding.md); a QONNX Conv with ``pads`` pads with
    0.0, which no binary activation is, so FINN computes another function at
    the image border. The input is followed back through max-pooling and
    reshapes to the activation quantizer that produced it.
    """
    from qonnx.util.basic import get_by_name

    hints: dict[int, str] = {}
    layers = [n for n in qonnx_model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    for li, node in enumerate(layers):
        if node.op_type != "Conv":
            continue
        pads = get_by_name(node.attribute, "pads")
        value = 0.0 if pads is not None and any(pads.ints) else None
        src = qonnx_model.find_producer(node.input[0])
        if src is not None and src.op_type == "Pad":
            const = qonnx_model.get_initializer(src.input[2]) if len(src.input) > 2 and src.input[2] else None
            value = 0.0 if const is None else float(np.ravel(const)[0])
            src = qonnx_model.find_producer(src.input[0])
        while src is not None and src.op_type in ("MaxPool", "Reshape", "Transpose", "Identity"):
            src = qonnx_model.find_producer(src.input[0])
        if value is None or value == -1.0 or src is None or src.op_type != "BipolarQuant":
            continue
        hints[li] = (
            f"padding: weight layer {li} (QONNX {node.name}) pads its binary input with {value:g}, "
            "where FINN pads binary activations with -1 (the bit 0); train the network with "
            "bnnflow.padding.pad_binary_inputs_with_minus_one (docs/padding.md)"
        )
    return hints


def _bipolar_scale(model: Any, tensor: str) -> np.ndarray | None:
    """The scale of the BipolarQuant producing ``tensor`` (None: not a BipolarQuant or no constant scale)."""
    node = model.find_producer(tensor)
    if node is None or node.op_type != "BipolarQuant" or len(node.input) < 2:
        return None
    scale = model.get_initializer(node.input[1])
    return None if scale is None else np.asarray(scale, dtype=np.float64)


def _dot_scale(model: Any, node: Any) -> np.ndarray | None:
    """Per output channel (or one for all), the factor between a binary layer's QONNX dot product
    and its +-1 dot product: the input's BipolarQuant scale times the weights' (per tensor or per
    output channel). Brevitas' own binary quantizers scale by 0.1 (SignedBinaryWeightPerTensorConst);
    FINN's streamlining moves any positive scale into the thresholds, so the streamlined popcount is
    the same. None: not binary weights from a BipolarQuant, or a scale that is not positive
    (then the check compares against unit scale and reports the difference)."""
    w_scale = _bipolar_scale(model, node.input[1])
    a_scale = _bipolar_scale(model, node.input[0])
    if w_scale is None or a_scale is None or a_scale.size != 1:
        return None
    # One value, or one per output channel: (out, 1, ...) for Conv and Gemm, (1, out) for MatMul.
    w_scale = w_scale.reshape(-1)
    scale = w_scale * float(a_scale.ravel()[0])
    if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
        return None
    return scale


def _matches_scaled(q_dot: np.ndarray, expected: np.ndarray, scale: np.ndarray | None) -> bool:
    """Whether the QONNX dot product is ``scale`` (channels last) times the integer ``expected``.

    Exact for unit scale; otherwise the quotient must round to ``expected`` and lie within
    1e-3 of an integer: a popcount off by one moves the quotient by 2, a float rounding by
    far less than 1e-3 for any dot-product length FINN accepts.
    """
    if scale is None or np.all(scale == 1.0):
        return bool(np.array_equal(q_dot, expected))
    quotient = q_dot.astype(np.float64) / scale
    return bool(
        np.array_equal(np.rint(quotient), expected) and np.max(np.abs(quotient - np.rint(quotient))) < 1e-3
    )


def _float_tie(lq: int, ls: int, lh: int, last_dot: np.ndarray | None, layers_ok: bool) -> bool:
    """QONNX's class differs from the hardware's only by breaking a tie in float arithmetic.

    The graphs agree on every accumulator, and QONNX's class and the hardware's have the same
    integer dot product in the last layer: with a scaled weight quantizer (Brevitas' 0.1) the
    QONNX logits of tied classes differ by rounding, while the hardware, like numpy, takes the
    lowest index of a tie.
    """
    if ls != lh or not layers_ok or last_dot is None:
        return False
    dots = np.ravel(last_dot)
    return bool(0 <= lq < dots.size and 0 <= ls < dots.size and dots[lq] == dots[ls])


class ChainGraphs:
    """The three graphs and the tensor names that line up between them."""

    def __init__(self, qonnx_model: Any, streamlined: Any, hw: Any) -> None:
        self.q, self.s, self.h = qonnx_model, streamlined, hw
        # QONNX: per weight layer (Conv/Gemm/MatMul), its output and the +-1
        # activation quantizer after its BatchNorm (None for the last layer).
        self.q_layers: list[tuple[str, str | None, int | None]] = []
        # Per layer, the sign of each output channel's BatchNorm scale (None: no
        # BatchNorm). FINN's streamlining factors a negative scale out of the
        # BatchNorm and absorbs the -1 into that channel's XNOR weight column
        # (FactorOutMulSignMagnitude + Absorb1BitMulIntoMatMul), so there the
        # streamlined accumulator mirrors the QONNX dot product.
        self.q_signs: list[np.ndarray | None] = []
        # Per layer, the positive factor between QONNX's dot product and the +-1 one (_dot_scale).
        self.q_scales: list[np.ndarray | None] = []
        for node in qonnx_model.graph.node:
            if node.op_type not in ("Conv", "Gemm", "MatMul"):
                continue
            src = _producer_before_pad(qonnx_model, node.input[0])
            binary_in = src is not None and src.op_type == "BipolarQuant"
            k = None
            if binary_in:
                # K, the dot-product length: Conv (out, in, kh, kw), Gemm (out, in)
                # with transB as Brevitas exports it, MatMul (in, out).
                wshape = qonnx_model.get_tensor_shape(node.input[1])
                k = int(np.prod(wshape[1:])) if node.op_type != "MatMul" else int(wshape[0])
            act = None
            signs = None
            nxt = qonnx_model.find_consumer(node.output[0])
            if nxt is not None and nxt.op_type == "BatchNormalization":
                scale = qonnx_model.get_initializer(nxt.input[1])
                if scale is not None:
                    signs = np.where(np.asarray(scale) < 0, -1, 1).astype(np.float32)
                bq = qonnx_model.find_consumer(nxt.output[0])
                if bq is not None and bq.op_type == "BipolarQuant":
                    act = bq.output[0]
            else:
                signs = _scalar_sign(qonnx_model, nxt)
            self.q_layers.append((node.output[0], act, k))
            self.q_signs.append(signs)
            self.q_scales.append(_dot_scale(qonnx_model, node) if binary_in else None)
        self.s_layers: list[tuple[str, str | None]] = []
        for node in streamlined.graph.node:
            if node.op_type in ("MatMul", "XnorPopcountMatMul"):
                nxt = streamlined.find_consumer(node.output[0])
                act = nxt.output[0] if nxt is not None and nxt.op_type == "MultiThreshold" else None
                self.s_layers.append((node.output[0], act))
        self.h_layers = [n for n in hw.graph.node if n.op_type.startswith("MVAU")]
        self.padding_hints = padding_hints(qonnx_model)
        if not (len(self.q_layers) == len(self.s_layers) == len(self.h_layers)):
            raise RuntimeError(
                f"weight layers do not line up: QONNX {len(self.q_layers)}, "
                f"streamlined {len(self.s_layers)}, hardware {len(self.h_layers)}"
            )
        self.q_int, self.s_int, self.h_int = (integer_tensors(m) for m in (self.q, self.s, self.h))
        # The few tensors compared per image, per graph (sliced out of batched contexts).
        self.q_needed = [self.q.graph.output[0].name] + [t for o, a, _ in self.q_layers for t in (o, a) if t]
        self.s_needed = [self.s.graph.output[0].name] + [t for o, a in self.s_layers for t in (o, a) if t]

    def hw_activation(self, node: Any) -> str:
        """The MVAU's binary output: its own, or its standalone Thresholding layer's
        (FINN's standalone_thresholds, as ``--runtime-weights`` compiles)."""
        nxt = self.h.find_consumer(node.output[0])
        if nxt is not None and nxt.op_type.startswith("Thresholding"):
            return nxt.output[0]
        return node.output[0]

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

    def compare(
        self,
        index: int,
        cq: dict[str, np.ndarray],
        cs: dict[str, np.ndarray],
        ch: dict[str, np.ndarray],
    ) -> _ImageCheck:
        """Compare one image's three contexts at every weight layer."""
        lq = int(np.ravel(cq[self.q.graph.output[0].name])[0])
        ls = int(np.ravel(cs[self.s.graph.output[0].name])[0])
        lh = int(np.ravel(ch[self.h.graph.output[0].name])[0])
        acc_ok = act_ok = True
        first: str | None = None
        last_dot: np.ndarray | None = None  # the last layer's +-1 dot products, as integers
        for li, ((q_out, q_act, k), (s_out, s_act), h_node) in enumerate(
            zip(self.q_layers, self.s_layers, self.h_layers, strict=True)
        ):
            where = f"image {index}, layer {li} ({h_node.name})"
            s_acc = cs[s_out]
            h_acc = self.hw_accumulator(h_node, ch).reshape(s_acc.shape)
            problems = []
            if not np.array_equal(s_acc, h_acc):
                problems.append("accumulators differ between streamlined and hardware graphs")
            if k is not None:
                q_dot = _to_nhwc(cq[q_out])
                expected = 2 * s_acc - k
                signs = self.q_signs[li]
                if signs is not None:  # channels last in both layouts
                    expected = expected * signs
                last_dot = expected
                if not _matches_scaled(q_dot.reshape(s_acc.shape), expected, self.q_scales[li]):
                    problems.append("QONNX dot product != 2*popcount-K of the streamlined graph")
            if problems:
                acc_ok = False
            if s_act is not None and q_act is not None:
                q_bits = (_to_nhwc(cq[q_act]) > 0).astype(np.float32)
                s_bits = cs[s_act]
                h_bits = ch[self.hw_activation(h_node)]
                if not np.array_equal(q_bits.reshape(s_bits.shape), s_bits):
                    problems.append("activations differ between QONNX and streamlined graphs")
                    act_ok = False
                if not np.array_equal(s_bits, h_bits.reshape(s_bits.shape)):
                    problems.append("activations differ between streamlined and hardware graphs")
                    act_ok = False
            if problems and first is None:
                first = f"{where}: {problems[0]}" + self.padding_hint(li)
        if not (lq == ls == lh) and first is None and not _float_tie(lq, ls, lh, last_dot, acc_ok):
            first = f"image {index}: labels differ (QONNX {lq}, streamlined {ls}, hardware {lh})"
            first += self.padding_hint(len(self.h_layers) - 1)
        return _ImageCheck((lq, ls, lh), acc_ok, act_ok, first)

    def padding_hint(self, layer: int) -> str:
        """The likely cause of a mismatch at weight layer ``layer``: a layer up to it padded wrongly."""
        for li in sorted(self.padding_hints):
            if li <= layer:
                return f"; likely cause: {self.padding_hints[li]}"
        return ""


class _Checker:
    """Checks chunks of images; one per process, holding the graphs and their batched copies."""

    def __init__(self, graphs: ChainGraphs, batch: bool = True) -> None:
        self.g = graphs
        # Per graph: None = not yet tried, False = runs image by image.
        first: bool | None = None if batch else False
        self._batchable: dict[str, bool | None] = {"q": first, "s": first}
        self._batched: dict[tuple[str, int], Any] = {}

    def batched_graphs(self) -> list[str]:
        names = {"q": "qonnx", "s": "streamlined"}
        return [names[k] for k, v in self._batchable.items() if v]

    def _run_graph(self, key: str, images: np.ndarray) -> tuple[list[dict[str, np.ndarray]], int]:
        """Per-image contexts (only the compared tensors) of graph ``key`` over ``images``."""
        model = self.g.q if key == "q" else self.g.s
        needed = self.g.q_needed if key == "q" else self.g.s_needed
        ints = self.g.q_int if key == "q" else self.g.s_int
        x = images.astype(np.float32)
        if self._batchable[key] is not False and len(images) > 1:
            bm = self._batched.get((key, len(images)))
            if bm is None:
                bm = with_batch(model, len(images))
                if bm is None:
                    self._batchable[key] = False
            ctx = None
            if bm is not None:
                self._batched[(key, len(images))] = bm
                try:
                    ctx, reruns = execute(bm, x, ints)
                except Exception:  # noqa: BLE001  (an op that rejects a batch: run image by image)
                    if self._batchable[key]:
                        raise  # it worked on an earlier chunk: a real error
                    self._batchable[key] = False
            if ctx is not None:
                per = [{t: ctx[t][j : j + 1] for t in needed} for j in range(len(images))]
                if self._batchable[key] is None:
                    # First batched run in this process: the first and last image must
                    # equal their batch-1 runs at every compared tensor, else image by image.
                    for j in (0, len(images) - 1):
                        ref, _ = execute(model, x[j : j + 1], ints)
                        if not all(np.array_equal(ref[t], per[j][t]) for t in needed):
                            self._batchable[key] = False
                            break
                    else:
                        self._batchable[key] = True
                if self._batchable[key]:
                    return per, reruns * len(images)
        per, reruns = [], 0
        for j in range(len(images)):
            ctx, r = execute(model, x[j : j + 1], ints)
            per.append({t: ctx[t] for t in needed})
            reruns += r
        return per, reruns

    def check(self, start: int, images: np.ndarray, bits: np.ndarray | None = None) -> list[_ImageCheck]:
        """``bits``: what the streamlined and hardware graphs take where the host thresholds the
        images (--host-binarize); the QONNX model always takes the images."""
        bits = images if bits is None else bits
        cqs, rq = self._run_graph("q", images)
        css, rs = self._run_graph("s", bits)
        out = []
        for j in range(len(images)):
            ch, rh = execute(self.g.h, bits[j : j + 1].astype(np.float32), self.g.h_int)
            res = self.g.compare(start + j, cqs[j], css[j], ch)
            res.sanitized_reruns = rh
            out.append(res)
        if out:
            out[0].sanitized_reruns += rq + rs
        return out


# --- worker processes -------------------------------------------------------------------------

_WORKER: _Checker | None = None
_WORKER_STACK: contextlib.ExitStack | None = None


def _worker_init(q_bytes: bytes, s_bytes: bytes, h_bytes: bytes, batch: bool) -> None:
    """Load the three graphs once per worker process."""
    global _WORKER, _WORKER_STACK

    prepare_finn()  # registers FINN's HW Reshape, as in the parent
    from qonnx.core.modelwrapper import ModelWrapper

    _WORKER_STACK = contextlib.ExitStack()
    _WORKER_STACK.enter_context(fast_execution())
    _WORKER = _Checker(ChainGraphs(*(ModelWrapper(b) for b in (q_bytes, s_bytes, h_bytes))), batch)


def _worker_check(
    start: int, images: np.ndarray, bits: np.ndarray | None
) -> tuple[list[_ImageCheck], list[str]]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.check(start, images, bits), _WORKER.batched_graphs()


def _in_pool(
    n_workers: int,
    graphs: tuple[Any, Any, Any],
    batch: bool,
    images: np.ndarray,
    bits: np.ndarray | None,
    starts: list[int],
    chunk: int,
) -> tuple[list[_ImageCheck], set[str]]:
    """The chunks at ``starts`` checked by a pool of ``n_workers`` processes, in image order."""
    import multiprocessing

    init = (*(g.model.SerializeToString() for g in graphs), batch)
    results: list[_ImageCheck] = []
    batched: set[str] = set()
    # spawn, not fork: the parent has torch's and onnxruntime's thread pools
    # running, which a forked child inherits in an undefined state.
    with ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=init,
    ) as pool:
        futures = [
            pool.submit(
                _worker_check, s, images[s : s + chunk], None if bits is None else bits[s : s + chunk]
            )
            for s in starts
        ]
        for fut in futures:  # in image order
            res, b = fut.result()
            results.extend(res)
            batched.update(b)
    return results, batched


def verify_chain(
    qonnx_model: Any,
    streamlined: Any,
    hw: Any,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    workers: int | None = 1,
    chunk: int = CHUNK,
    batch: bool = True,
    host_op: dict[str, Any] | None = None,
) -> VerifyResult:
    """Run every image through the three graphs and compare at each weight layer.

    ``workers``: processes checking chunks of ``chunk`` images in parallel.
    The first chunk always runs in this process. With ``workers=None``
    (``default_workers()``) a pool takes the remaining chunks only if, at the
    first chunk's rate, they would take more than POOL_MIN_SECONDS here; an
    explicit ``workers > 1`` always uses a pool for them. ``batch``: run the
    QONNX and streamlined graphs on whole chunks where their ops allow it.
    ``host_op``: a host-binarized design's input threshold (finnlib/host_threshold.py): the
    streamlined and hardware graphs take the images thresholded by it, the QONNX model the
    images, so the chain checks host thresholding and graph together against the model.
    """
    images = np.asarray(images)
    bits = None if host_op is None else host_bits(images, host_op)
    graphs = ChainGraphs(qonnx_model, streamlined, hw)  # fails early if the layers do not line up
    n = len(images)
    explicit = workers is not None
    n_workers = default_workers() if workers is None else max(1, int(workers))
    if n_workers > 1:
        # Even chunks so that every worker gets work.
        chunk = max(1, min(chunk, math.ceil(n / n_workers)))
    starts = list(range(0, n, chunk))

    start_t = time.perf_counter()
    results: list[_ImageCheck] = []
    checker = _Checker(graphs, batch)
    # The first chunk runs here; its rate decides whether a pool pays for its start-up
    # (each worker imports FINN, a few seconds of a core): TFC checks 1,000 images in
    # about 6 s in one process, CNV needs minutes.
    with fast_execution():
        for i, s in enumerate(starts):
            results.extend(
                checker.check(s, images[s : s + chunk], None if bits is None else bits[s : s + chunk])
            )
            rest = starts[i + 1 :]
            per_image = (time.perf_counter() - start_t) / len(results)
            if rest and n_workers > 1 and (explicit or per_image * (n - len(results)) > POOL_MIN_SECONDS):
                break
        else:
            rest = []
    batched = set(checker.batched_graphs())
    n_workers = min(n_workers, len(rest)) if rest else 1
    if rest:
        more, more_batched = _in_pool(
            n_workers, (qonnx_model, streamlined, hw), batch, images, bits, rest, chunk
        )
        results.extend(more)
        batched.update(more_batched)
    seconds = time.perf_counter() - start_t

    first = next((r.problem for r in results if r.problem is not None), None)
    correct = 0
    if labels is not None:
        correct = sum(int(r.labels[2] == int(lab)) for r, lab in zip(results, labels, strict=False))
    return VerifyResult(
        n_images=n,
        labels_match=sum(r.labels[0] == r.labels[1] == r.labels[2] for r in results),
        accumulators_match=sum(r.acc_ok for r in results),
        activations_match=sum(r.act_ok for r in results),
        first_mismatch=first,
        seconds=seconds,
        images_per_s=n / seconds if seconds > 0 else float("inf"),
        layers=[nd.name for nd in graphs.h_layers],
        accuracy_vs_labels=correct / n if labels is not None and n else None,
        workers=n_workers,
        batched=sorted(batched),
        sanitized_reruns=sum(r.sanitized_reruns for r in results),
    )


def graph_fingerprint(model: Any) -> bytes:
    """sha256 of a graph's nodes (op type, domain, attributes) in order, without tensor names.

    FINN names the tensors it inserts with qonnx's ``random_string()``, so the
    same export converted twice (e.g. CNV for two boards) differs in its bytes
    while computing the same thing.
    """
    h = hashlib.sha256()
    for node in model.graph.node:
        h.update(f"{node.domain}/{node.op_type}({len(node.input)},{len(node.output)});".encode())
        for attr in sorted(node.attribute, key=lambda a: a.name):
            h.update(attr.SerializeToString())
    return h.digest()


def cache_key(
    model_file: str | os.PathLike[str],
    graphs: list[Any],
    images: np.ndarray,
    labels: np.ndarray | None,
    host_op: dict[str, Any] | None = None,
) -> str:
    """sha256 over the exported model, the derived graphs' structure, images, labels and versions.

    The verification runs on graphs before specialisation and folding, which
    FINN derives from the export in the same way for every board; the key is
    the export's bytes (weights, thresholds' source), the streamlined and
    hardware graphs' ``graph_fingerprint`` (in case a FINN setting changes
    them), the images and labels, and the versions of what executes them.
    """
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(f"bnnflow-verify-{CACHE_VERSION}".encode())
    for pkg in ("finn-plus", "qonnx", "onnxruntime", "numpy"):
        try:
            h.update(f"{pkg}={version(pkg)};".encode())
        except Exception:  # noqa: BLE001  (not installed under that name: still a stable key)
            h.update(f"{pkg}=?;".encode())
    with open(model_file, "rb") as f:
        h.update(hashlib.sha256(f.read()).digest())
    for graph in graphs:
        h.update(graph_fingerprint(graph))
    images = np.ascontiguousarray(images)
    h.update(f"{images.shape}{images.dtype}".encode())
    h.update(images.tobytes())
    if labels is not None:
        labels = np.ascontiguousarray(labels)
        h.update(f"labels{labels.shape}{labels.dtype}".encode())
        h.update(labels.tobytes())
    if host_op is not None:  # the host's thresholds are not in the graphs
        h.update(json.dumps(host_op, sort_keys=True).encode())
    return h.hexdigest()
