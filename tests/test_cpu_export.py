"""The CPU model file: written from FINN's hardware graph, it means what FINN computes.

The proof is tests/cpu_reference.py, a numpy interpreter of the file written
from cpu/include/bnncpu.h alone, against FINN's Python execution of the
hardware-layer graph (the one the compile stage's verification chain runs)
on real test images: classes and the integer scores the label select ranks.
Some BatchNorm scales are made negative before export, as training can make
them: FINN absorbs those signs into the XNOR weights, which is why the file
is written from the hardware graph and not from PyTorch.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cpu_reference as ref
import numpy as np
import pytest
from helpers import SHARED_DATA, finn_reference

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.bnncpu import modelfile as mf
from bnnflow.bnncpu.writer import MODEL_FILE, UnsupportedGraph, build_cpu_model, export_in_compile
from bnnflow.cpu.finn_reference import finn_outputs
from bnnflow.data import load_arrays
from bnnflow.errors import BnnflowError
from bnnflow.hls import compile_model
from bnnflow.runs import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "cpu" / "include" / "bnncpu.h"
N_MNIST = 300
N_CIFAR = 200  # FINN's hardware graph runs CNV image by image (benchmarks/cpu_agreement.py: all 10,000)


def _graphs(compile_dir: Path) -> tuple:
    from qonnx.core.modelwrapper import ModelWrapper

    return (
        ModelWrapper(str(compile_dir / "model_hw.onnx")),
        ModelWrapper(str(compile_dir / "intermediate_models" / "dataflow_parent.onnx")),
    )


def _agree(model_file: Path, compile_dir: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's classes and scores equal FINN's on every image; returns FINN's."""
    classes, scores = ref.run(ref.load(model_file), images)
    finn_classes, finn_scores = finn_reference(compile_dir, images)
    assert scores.shape == finn_scores.shape == (len(images), 10)
    mismatch = np.nonzero((scores != finn_scores).any(axis=1) | (classes != finn_classes))[0]
    assert mismatch.size == 0, (
        f"{mismatch.size} images differ, first {mismatch[0]}: oracle {classes[mismatch[0]]} "
        f"{scores[mismatch[0]]}, FINN {finn_classes[mismatch[0]]} {finn_scores[mismatch[0]]}"
    )
    # Not a degenerate model: the comparison covers many classes and score values.
    assert len(np.unique(finn_classes)) >= 4 and len(np.unique(finn_scores)) >= 10
    return finn_classes, finn_scores


# --- real networks against FINN ----------------------------------------------------------------


def test_digits_all_test_images_match_finn(digits_dir: Path) -> None:
    path = digits_dir / MODEL_FILE
    summary = json.loads((digits_dir / "compile.json").read_text())
    assert summary["cpu_model"] == MODEL_FILE and "cpu_model_error" not in summary
    model = mf.read_model(path)
    assert (model.in_c, model.in_h, model.in_w, model.n_classes) == (1, 8, 8, 10)
    assert model.dataset == mf.Dataset.DIGITS and model.input_order == mf.InputOrder.CHW
    kinds = [la.kind.name for la in model.layers]
    assert kinds == ["THRESHOLD", "MVAU", "MVAU", "MVAU", "LABEL_SELECT"]
    assert model.layers[0].in_shape == (1, 1, 64)  # the flattened image
    assert mf.encode_model(model) == path.read_bytes()  # reading and writing are inverse

    images, labels = load_arrays("digits", "test")
    assert len(images) == 360
    classes, _ = _agree(path, digits_dir, images)
    assert (classes == labels).mean() > 0.5  # a trained network, not noise


def test_negative_batchnorm_scales_flip_the_exported_weights(digits_dir: Path) -> None:
    """The first layer's weights in the file are PyTorch's signs, flipped where the BatchNorm scale < 0."""
    payload = load_checkpoint(digits_dir.parent.parent / "best.pt")
    state = payload["model_state"]
    linear = next(k for k in state if k.endswith("weight") and state[k].ndim == 2)
    bn_scale = next(state[k[: -len("running_mean")] + "weight"] for k in state if k.endswith("running_mean"))
    torch_bits = (state[linear] > 0).numpy().T  # (K, out) as in the MVAU
    negative = (bn_scale < 0).numpy()
    assert negative.any() and not negative.all()
    exported = mf.read_model(digits_dir / MODEL_FILE).layers[1].weights.astype(bool)
    assert np.array_equal(exported[:, ~negative], torch_bits[:, ~negative])
    assert np.array_equal(exported[:, negative], ~torch_bits[:, negative])


def test_tfc_mnist_matches_finn(tfc_dir: Path) -> None:
    model = mf.read_model(tfc_dir / MODEL_FILE)
    assert model.dataset == mf.Dataset.MNIST and model.input_order == mf.InputOrder.CHW
    assert [la.k for la in model.layers if la.kind == mf.LayerKind.MVAU] == [784, 64, 64, 64]
    images, _ = load_arrays("mnist", "test", data_dir=SHARED_DATA, limit=N_MNIST)
    _agree(tfc_dir / MODEL_FILE, tfc_dir, images)


def test_cnv_cifar10_matches_finn(cnv_dir: Path, cifar10_dir: Path) -> None:
    model = mf.read_model(cnv_dir / MODEL_FILE)
    assert model.dataset == mf.Dataset.CIFAR10 and model.input_order == mf.InputOrder.HWC
    layers = [(la.kind.name, la.kernel, la.stride, la.input_type.name) for la in model.layers]
    assert layers[:4] == [
        ("THRESHOLD", 1, 1, "UINT8"),
        ("MVAU", 3, 1, "INT8"),  # conv1: 8-bit input times +-1
        ("MVAU", 3, 1, "BITS"),
        ("MAXPOOL", 2, 2, "BITS"),
    ]
    assert model.layers[8].in_shape == (3, 3, 256) and model.layers[8].kernel == 3  # conv6: whole input
    assert model.layers[0].thresholds.shape == (3, 255) and model.layers[0].act_val == -128
    images, _ = load_arrays("cifar10", "test", data_dir=cifar10_dir, limit=N_CIFAR)
    _agree(cnv_dir / MODEL_FILE, cnv_dir, images)


def test_finn_outputs_in_worker_processes_equal_in_process(digits_dir: Path) -> None:
    images, _ = load_arrays("digits", "test", limit=40)
    here = finn_outputs(digits_dir, images, workers=1, chunk=10)
    pooled = finn_outputs(digits_dir, images, workers=2, chunk=10)  # four chunks, merged in image order
    assert pooled.workers == 2 and here.workers == 1
    assert np.array_equal(here.classes, pooled.classes) and np.array_equal(here.scores, pooled.scores)


def _synthetic_graphs(seed: int) -> tuple:
    """A small FINN hardware-layer graph with the patterns no bnnflow network has.

    Image 2x4x4 -> host NCHW->NHWC Transpose -> Thresholding (4x4x2, BINARY)
    -> MVAU per pixel (a 1x1 convolution, 4x4x3) -> Reshape flatten of the
    4x4x3 output -> MVAU over all 48 values (10 scores) -> LabelSelect.
    """
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(seed)
    dom = "finn.custom_op.fpgadataflow"
    shapes = {
        "x": [1, 4, 4, 2],
        "t": [1, 4, 4, 2],
        "p": [1, 4, 4, 3],
        "f": [1, 48],
        "s": [1, 10],
        "y": [1, 1],
    }
    nodes = [
        helper.make_node("Thresholding", ["x", "thr0"], ["t"], domain=dom, name="Thresholding_0",
                         NumChannels=2, PE=1, numSteps=1, ActVal=0, inputDataType="UINT8",
                         weightDataType="UINT8", outputDataType="BINARY", numInputVectors=[1, 4, 4]),
        helper.make_node("MVAU", ["t", "w0", "thr1"], ["p"], domain=dom, name="MVAU_0", MW=2, MH=3, PE=1,
                         SIMD=1, binaryXnorMode=1, noActivation=0, ActVal=0, inputDataType="BINARY",
                         weightDataType="BINARY", outputDataType="BINARY", numInputVectors=[1, 4, 4]),
        helper.make_node("Reshape", ["p"], ["f"], domain=dom, name="Reshape_0", inp_shape=[1, 4, 4, 3],
                         out_shape=[1, 48], dtype="BINARY"),
        helper.make_node("MVAU", ["f", "w1"], ["s"], domain=dom, name="MVAU_1", MW=48, MH=10, PE=1, SIMD=1,
                         binaryXnorMode=1, noActivation=1, ActVal=0, inputDataType="BINARY",
                         weightDataType="BINARY", outputDataType="UINT32", numInputVectors=[1]),
        helper.make_node("LabelSelect", ["s"], ["y"], domain=dom, name="LabelSelect_0", Labels=10, PE=1, K=1,
                         inputDataType="UINT32", outputDataType="UINT8", numInputVectors=[1]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shapes["x"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes["y"])],
        value_info=[
            helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items() if k in "tpfs"
        ],
    )
    hw = ModelWrapper(qonnx_make_model(graph))
    for name, dt in (("x", "UINT8"), ("t", "BINARY"), ("p", "BINARY"), ("f", "BINARY"), ("s", "UINT32")):
        hw.set_tensor_datatype(name, DataType[dt])
    hw.set_initializer("thr0", np.array([[100.0]], dtype=np.float32))
    hw.set_initializer("w0", rng.integers(0, 2, (2, 3)).astype(np.float32))
    hw.set_initializer("thr1", np.array([[1.0], [2.0], [1.0]], dtype=np.float32))
    hw.set_initializer("w1", rng.integers(0, 2, (48, 10)).astype(np.float32))
    for name in ("w0", "w1"):
        hw.set_tensor_datatype(name, DataType["BINARY"])

    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 4, 4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    parent = ModelWrapper(qonnx_make_model(helper.make_graph(
        [helper.make_node("Transpose", ["image"], ["x"], perm=[0, 2, 3, 1], name="Transpose_0"),
         helper.make_node("StreamingDataflowPartition", ["x"], ["y"], domain=dom, name="Partition_0")],
        "parent", [inp], [out],
    )))  # fmt: skip
    parent.set_tensor_datatype("image", DataType["UINT8"])
    return hw, parent


def test_pointwise_mvau_and_flatten_match_finn(tmp_path: Path) -> None:
    """A 1x1 convolution and a flatten into a fully-connected layer, on a graph FINN executes."""
    from finn.core.onnx_exec import execute_onnx

    hw, parent = _synthetic_graphs(0)
    model = build_cpu_model(hw, parent)
    assert model.input_order == mf.InputOrder.HWC and (model.in_c, model.in_h, model.in_w) == (2, 4, 4)
    assert [(la.kind.name, la.in_shape, la.kernel) for la in model.layers] == [
        ("THRESHOLD", (4, 4, 2), 1),
        ("MVAU", (4, 4, 2), 1),  # per pixel: out 4x4x3
        ("MVAU", (4, 4, 3), 4),  # the flatten: a window over the whole input, in HWC order
        ("LABEL_SELECT", (1, 1, 10), 1),
    ]
    path = mf.write_model(tmp_path / "synthetic.bnn", model)
    images = np.random.default_rng(1).integers(0, 256, (200, 2, 4, 4)).astype(np.uint8)
    classes, scores = ref.run(ref.load(path), images)
    for i, image in enumerate(images):
        ctx = execute_onnx(hw, {"x": image.transpose(1, 2, 0)[None].astype(np.float32)}, True)
        assert np.array_equal(scores[i], ctx["s"].ravel()) and classes[i] == int(ctx["y"].ravel()[0]), i
    assert len(np.unique(classes)) >= 3


# --- label select ties -------------------------------------------------------------------------


def test_tie_picks_lowest_index_in_oracle_and_finn(tmp_path: Path) -> None:
    """Scores (s, 64 - s, s, 64 - s): the largest is always tied between two classes."""
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    rng = np.random.default_rng(0)
    w = rng.integers(0, 2, size=64).astype(np.uint8)
    weights = np.stack([w, 1 - w, w, 1 - w], axis=1)  # (K, 4): columns 0 = 2 and 1 = 3
    model = mf.CpuModel(
        in_c=1,
        in_h=8,
        in_w=8,
        input_order=mf.InputOrder.CHW,
        n_classes=4,
        dataset=mf.Dataset.DIGITS,
        layers=[
            mf.Layer(mf.LayerKind.THRESHOLD, 1, 1, 64, 1, 1, 64, mf.ValueType.UINT8, mf.ValueType.BITS,
                     thresholds=np.full((64, 1), 8, dtype=np.int32)),
            mf.Layer(mf.LayerKind.MVAU, 1, 1, 64, 1, 1, 4, mf.ValueType.BITS, mf.ValueType.INT32,
                     weights=weights),
            mf.Layer(mf.LayerKind.LABEL_SELECT, 1, 1, 4, 1, 1, 1, mf.ValueType.INT32, mf.ValueType.CLASS),
        ],
    )  # fmt: skip
    path = mf.write_model(tmp_path / "tie.bnn", model)
    images, _ = load_arrays("digits", "test")
    classes, scores = ref.run(ref.load(path), images)
    assert np.array_equal(scores[:, 0], scores[:, 2]) and np.array_equal(scores[:, 1], scores[:, 3])
    expected = np.where(scores[:, 1] > scores[:, 0], 1, 0)
    assert set(expected) == {0, 1} and np.array_equal(classes, expected)

    # FINN's LabelSelect (ONNX TopK in Python execution) orders a tie the same way.
    node = helper.make_node(
        "LabelSelect", ["s"], ["c"], domain="finn.custom_op.fpgadataflow", Labels=4, PE=1, K=1,
        inputDataType="INT32", outputDataType="UINT8", numInputVectors=[1],
    )  # fmt: skip
    inst = getCustomOp(node)
    for vector, best in (([5, 7, 5, 7], 1), ([9, 2, 9, 2], 0), ([3, 3, 3, 3], 0), ([1, 2, 4, 4], 2)):
        ctx = {"s": np.array([vector], dtype=np.float32), "c": np.zeros((1, 1), dtype=np.float32)}
        inst.execute_node(ctx, None)
        assert int(ctx["c"][0, 0]) == best, vector


def test_tied_scores_in_a_compiled_design(digits_dir: Path, tmp_path: Path) -> None:
    """Class 7's weights copied from class 2 in both graphs: ties go to 2 in the file and in FINN."""
    from qonnx.core.modelwrapper import ModelWrapper

    copy = tmp_path / "tied"
    shutil.copytree(digits_dir, copy)
    for rel in ("model_hw.onnx", "intermediate_models/step_convert_to_hw.onnx"):
        graph = ModelWrapper(str(copy / rel))
        last = [n for n in graph.graph.node if n.op_type.startswith("MVAU")][-1]
        w = graph.get_initializer(last.input[1]).copy()
        w[:, 7] = w[:, 2]
        graph.set_initializer(last.input[1], w)
        graph.save(str(copy / rel))
    from bnnflow.cpu import export_cpu_model

    path = export_cpu_model(copy)
    images, _ = load_arrays("digits", "test")
    classes, scores = _agree(path, copy, images)
    tied = scores[:, 2] == scores.max(axis=1)
    assert tied.sum() >= 3 and np.all(classes[tied] == 2) and not np.any(classes == 7)


# --- what the format cannot express ------------------------------------------------------------


def _attr(graph, node_name: str, **values) -> None:
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(graph.get_node_from_name(node_name))
    for key, value in values.items():
        inst.set_nodeattr(key, value)


def _refused(hw, parent, node_name: str, reason: str) -> None:
    with pytest.raises(UnsupportedGraph) as info:
        build_cpu_model(hw, parent)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{node_name} ("), message
    assert re.search(reason, message), message


def test_unsupported_mlp_patterns_name_the_node(digits_dir: Path) -> None:
    cases = [
        ("MVAU_hls_0", lambda g: _attr(g, "MVAU_hls_0", ActVal=1), "ActVal 1 is not supported"),
        ("MVAU_hls_1", lambda g: _attr(g, "MVAU_hls_1", outputDataType="UINT2"), "multi-bit activations"),
        ("MVAU_hls_1", lambda g: _attr(g, "MVAU_hls_1", outputDataType="BIPOLAR"), "BIPOLAR"),
        ("LabelSelect_hls_0", lambda g: _attr(g, "LabelSelect_hls_0", K=2), r"K = 2; only top-1"),
    ]
    for node, mutate, reason in cases:
        hw, parent = _graphs(digits_dir)
        mutate(hw)
        _refused(hw, parent, node, reason)

    hw, parent = _graphs(digits_dir)  # fractional thresholds
    mvau = hw.get_node_from_name("MVAU_hls_1")
    hw.set_initializer(mvau.input[2], hw.get_initializer(mvau.input[2]) + 0.5)
    _refused(hw, parent, "MVAU_hls_1", "thresholds are not all integers")

    hw, parent = _graphs(digits_dir)  # three thresholds per channel: a 2-bit activation
    thr = hw.get_initializer(mvau.input[2])
    hw.set_initializer(mvau.input[2], np.concatenate([thr - 1, thr, thr + 1], axis=1))
    _refused(hw, parent, "MVAU_hls_1", "3 thresholds per channel: multi-bit")

    hw, parent = _graphs(digits_dir)  # a layer type the format has no record for
    hw.get_node_from_name("MVAU_hls_1").op_type = "VVAU_hls"
    _refused(hw, parent, "MVAU_hls_1", "not supported by the CPU model format")


def test_unsupported_conv_patterns_name_the_node(cnv_dir: Path) -> None:
    from onnx import helper

    cases = [
        ("ConvolutionInputGenerator_rtl_1", dict(Dilation=[2, 2]), "dilation"),
        # kernels and strides the stated output does not have (non-square ones are supported)
        ("ConvolutionInputGenerator_rtl_1", dict(ConvKernelDim=[3, 2]), r"output \[28, 28\] != \[28, 29\]"),
        ("ConvolutionInputGenerator_rtl_3", dict(Stride=[1, 2]), r"output \[(\d+), \1\] != \[\1, \d+\]"),
        ("Pool_hls_0", dict(InputDataType="INT4"), "only BINARY"),
        ("Pool_hls_0", dict(Function="AvgPool"), "only MaxPool"),
        ("MVAU_hls_0", dict(ActVal=-1), "ActVal -1"),
    ]
    for node, values, reason in cases:
        hw, parent = _graphs(cnv_dir)
        _attr(hw, node, **values)
        _refused(hw, parent, node, reason)

    for attrs, node, reason in (  # FMPadding before a window: its datatype and the window's input
        (dict(inputDataType="INT8"), "FMPadding_rtl_0", "input INT8, the tensor is BINARY"),
        (dict(inputDataType="BINARY"), "ConvolutionInputGenerator_rtl_1", "tensor 32x32x64 with its padding"),
    ):
        hw, parent = _graphs(cnv_dir)
        swg = hw.get_node_from_name("ConvolutionInputGenerator_rtl_1")
        pad = helper.make_node(
            "FMPadding_rtl", [swg.input[0]], ["padded"], domain="finn.custom_op.fpgadataflow.rtl",
            name="FMPadding_rtl_0", ImgDim=[30, 30], Padding=[1, 1, 1, 1], NumChannels=64, SIMD=1,
            numInputVectors=1, **attrs,
        )  # fmt: skip
        swg.input[0] = "padded"
        hw.graph.node.insert(list(hw.graph.node).index(swg), pad)
        _refused(hw, parent, node, reason)

    hw, parent = _graphs(cnv_dir)  # unsorted input thresholds: FINN's RTL binary search needs them sorted
    thr_node = hw.get_node_from_name("Thresholding_rtl_0")
    hw.set_initializer(thr_node.input[1], hw.get_initializer(thr_node.input[1])[:, ::-1].copy())
    _refused(hw, parent, "Thresholding_rtl_0", "not sorted")

    hw, parent = _graphs(cnv_dir)  # a host-side transpose the format has no order for
    transpose = parent.graph.node[0]
    transpose.attribute[0].ints[:] = [0, 3, 2, 1]
    _refused(hw, parent, transpose.name, r"not NCHW->NHWC")


def test_compile_records_why_it_wrote_no_cpu_model(digits_dir: Path, tmp_path: Path) -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    copy = tmp_path / "k2"
    shutil.copytree(digits_dir, copy)
    (copy / MODEL_FILE).unlink()
    hw = ModelWrapper(str(copy / "model_hw.onnx"))
    _attr(hw, "LabelSelect_hls_0", K=2)
    hw.save(str(copy / "model_hw.onnx"))
    logged: list[str] = []
    entries = export_in_compile(copy, logged.append)
    assert entries["cpu_model"] is None and "LabelSelect_hls_0" in entries["cpu_model_error"]
    assert len(logged) == 1 and "K = 2" in logged[0]
    assert not (copy / MODEL_FILE).exists() and not list(copy.glob(".*.tmp"))


# --- the file format ---------------------------------------------------------------------------


def _define(text: str, name: str) -> object:
    m = re.search(rf"^#define {name} (.+?)\s*(/\*.*)?$", text, re.M)
    assert m, name
    value = m.group(1)
    if value.startswith('"'):
        return value.strip('"').replace("\\0", "\0").encode("latin-1")
    value = re.sub(r"(?<=\d)u(ll)?\b", "", value)
    assert re.fullmatch(r"[\d()<< ]+", value), value
    return eval(value)  # digits, parentheses and << only (checked above)


def _enum(text: str, name: str) -> dict[str, int]:
    m = re.search(rf"enum {name} \{{(.*?)\}};", text, re.S)
    assert m, name
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    return {k: int(eval(re.sub(r"(?<=\d)u\b", "", v))) for k, v in re.findall(r"(\w+) = ([^,\n]+)", body)}


def _table(text: str, start: str, end: str) -> list[tuple[int, str, str]]:
    """(offset, type, name) rows of one of the header's offset tables."""
    section = text[text.index(start) : text.index(end)]
    rows = []
    for offset, ctype, names in re.findall(
        r"^\s*\*\s+(\d+)\s+(u8\[8\]|u8\[4\]|u16|u32|u64|i32|u32\[2\])\s+(\w+(?:, \w+)*)", section, re.M
    ):
        size = {"u16": 2, "u32": 4, "u64": 8, "i32": 4}.get(ctype)
        if ctype in ("u8[8]", "u8[4]", "u32[2]"):
            rows.append((int(offset), ctype, names))
            continue
        for i, name in enumerate(names.split(", ")):
            rows.append((int(offset) + i * size, ctype, name))
    return rows


def _struct_rows(st: struct.Struct, names: tuple[str, ...]) -> list[tuple[int, str, str]]:
    codes = re.findall(r"\d*[A-Za-z]", st.format.lstrip("<"))
    types = {"8s": "u8[8]", "4s": "u8[4]", "H": "u16", "I": "u32", "Q": "u64", "i": "i32"}
    rows, offset = [], 0
    for code, name in zip(codes, names, strict=True):
        rows.append((offset, types[code], name))
        offset += struct.calcsize("<" + code)
    # the header writes u32[2] reserved as one row
    if rows[-1][2] == rows[-2][2] == "reserved":
        rows[-2:] = [(rows[-2][0], "u32[2]", "reserved")]
    return rows


def test_constants_and_layout_agree_with_the_c_header() -> None:
    text = HEADER.read_text()
    assert _define(text, "BNN_FORMAT_MAJOR") == mf.FORMAT_MAJOR
    assert _define(text, "BNN_FORMAT_MINOR") == mf.FORMAT_MINOR
    assert _define(text, "BNN_MAGIC") == mf.MAGIC
    for name in ("HEADER_BYTES", "LAYER_HEADER_BYTES", "MAX_LAYERS", "MAX_DIM", "MAX_K", "MAX_FILE_BYTES"):
        assert _define(text, f"BNN_{name}") == getattr(mf, name), name
    for enum_name, prefix, cls in (
        ("bnn_layer_kind", "BNN_LAYER_", mf.LayerKind),
        ("bnn_type", "BNN_TYPE_", mf.ValueType),
        ("bnn_order", "BNN_ORDER_", mf.InputOrder),
        ("bnn_dataset", "BNN_DATASET_", mf.Dataset),
    ):
        c_values = _enum(text, enum_name)
        assert c_values == {prefix + m.name: m.value for m in cls}, enum_name
    assert _table(text, "File header (offsets", "Layer record:") == _struct_rows(
        mf.FILE_HEADER, mf.FILE_HEADER_FIELDS
    )
    assert _table(text, "Layer record:", "Tensors between layers") == _struct_rows(
        mf.LAYER_HEADER, mf.LAYER_HEADER_FIELDS
    )
    assert (
        mf.CRC_OFFSET
        == dict((n, o) for o, _, n in _struct_rows(mf.FILE_HEADER, mf.FILE_HEADER_FIELDS))["crc32"]
    )


def test_weight_bits_follow_the_header_packing() -> None:
    """Bit j of word i of row n is weight (64 i + j, n); bits past K are zero."""
    k, n = 70, 3
    w = np.zeros((k, n), dtype=np.uint8)
    w[0, 0] = w[65, 0] = w[69, 2] = w[63, 1] = 1
    data = mf.pack_weights(w)
    words = np.frombuffer(data, dtype="<u8").reshape(n, 2)
    assert words.tolist() == [[1, 2], [1 << 63, 0], [0, 1 << 5]]
    assert np.array_equal(mf.unpack_weights(data, k, n), w)
    bad = bytearray(data)
    bad[15] |= 0x80  # bit 63 of word 1 of row 0: weight 127, past K
    with pytest.raises(BnnflowError, match="past K"):
        mf.unpack_weights(bytes(bad), k, n)

    # The same in a whole file: an MVAU straight on a 1x7x10 uint8 image, K = 70.
    model = mf.CpuModel(
        in_c=1, in_h=7, in_w=10, input_order=mf.InputOrder.CHW, n_classes=3, dataset=mf.Dataset.NONE,
        layers=[
            mf.Layer(mf.LayerKind.MVAU, 1, 1, 70, 1, 1, 3, mf.ValueType.UINT8, mf.ValueType.INT32, weights=w),
            mf.Layer(mf.LayerKind.LABEL_SELECT, 1, 1, 3, 1, 1, 1, mf.ValueType.INT32, mf.ValueType.CLASS),
        ],
    )  # fmt: skip
    file = bytearray(mf.encode_model(model))
    assert mf.decode_model(bytes(file)).same_as(model)
    image = np.arange(70, dtype=np.uint8).reshape(1, 1, 7, 10)
    _, scores = ref.run(ref.load_bytes(bytes(file)), image)
    pm1 = 2 * w.astype(np.int64) - 1
    assert scores.tolist() == [(np.arange(70) @ pm1).tolist()]  # integer input times +-1
    file[mf.HEADER_BYTES + 64 + 15] |= 0x80
    with pytest.raises(BnnflowError, match="layer 0: weight bits past K"):
        mf.decode_model(_recrc(file))


def _recrc(data: bytearray) -> bytes:
    data[24:28] = bytes(4)
    struct.pack_into("<I", data, 24, zlib.crc32(data))
    return bytes(data)


def test_damaged_files_are_refused(digits_dir: Path, tmp_path: Path) -> None:
    good = (digits_dir / MODEL_FILE).read_bytes()
    mf.decode_model(good)
    first_mvau = mf.HEADER_BYTES + struct.unpack_from("<I", good, mf.HEADER_BYTES + 4)[0]

    def edited(offset: int, fmt: str, value: int) -> bytes:
        data = bytearray(good)
        struct.pack_into(fmt, data, offset, value)
        return _recrc(data)

    flipped = bytearray(good)
    flipped[first_mvau + 100] ^= 0x10
    cases = [
        (bytes(flipped), "checksum mismatch"),
        (good[:-8], "truncated"),
        (good + bytes(8), "past the end"),
        (good[:20], "truncated"),
        (b"NOTMODEL" + good[8:], "bad magic"),
        (edited(8, "<H", 2), r"format version 2\.1"),  # major 2, the file's minor
        (edited(10, "<H", 2), r"format version 1\.2"),
        (edited(first_mvau, "<I", 9), "unknown layer kind 9"),
        (edited(first_mvau + 12, "<I", 2), "input 1x2x64 != previous output 1x1x64"),  # in_w
        (edited(first_mvau + 8, "<I", 0), "in_h 0 is outside"),
        (edited(first_mvau + 4, "<I", 24), "record_bytes"),
        (edited(28, "<I", 65), "65 layers"),
        (edited(56, "<I", 1), "flags 1"),
    ]
    for data, reason in cases:
        with pytest.raises(BnnflowError, match=reason):
            mf.decode_model(data)
    path = tmp_path / "bad.bnn"
    path.write_bytes(bytes(flipped))
    with pytest.raises(BnnflowError, match=rf"^{re.escape(str(path))}: checksum mismatch"):
        mf.read_model(path)
    with pytest.raises(ValueError, match="checksum"):
        ref.load(path)  # the oracle refuses it too
    with pytest.raises(BnnflowError, match="model file not found"):
        mf.read_model(tmp_path / "missing.bnn")


def test_invalid_models_are_not_written(digits_dir: Path, tmp_path: Path) -> None:
    model = mf.read_model(digits_dir / MODEL_FILE)
    target = tmp_path / "out.bnn"
    model.layers[1].weights = model.layers[1].weights.copy()
    model.layers[1].weights[0, 0] = 2
    with pytest.raises(BnnflowError, match=r"layer 1 \(MVAU\): weights must be 0"):
        mf.write_model(target, model)
    model = mf.read_model(digits_dir / MODEL_FILE)
    model.layers.insert(1, model.layers[-1])
    with pytest.raises(BnnflowError, match="do not follow"):
        mf.write_model(target, model)
    model = mf.read_model(digits_dir / MODEL_FILE)
    model.layers[0].act_val = 1  # 1 + one threshold does not fit a bit
    with pytest.raises(BnnflowError, match="does not fit BITS"):
        mf.write_model(target, model)
    assert not target.exists() and not list(tmp_path.iterdir())


# --- the command line --------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bnnflow", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_export_and_info(digits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bnnflow.cli import main

    out = tmp_path / "digits.bnn"
    assert main(["cpu", "export", str(digits_dir), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes() == (digits_dir / MODEL_FILE).read_bytes()  # deterministic
    assert main(["cpu", "info", str(digits_dir)]) == 0
    text = capsys.readouterr().out
    assert "dataset digits" in text and "LABEL_SELECT" in text and "XNOR-popcount MACs" in text

    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for args, reason in (
        (["cpu", "export", str(tmp_path / "nowhere")], "compile folder not found"),
        (["cpu", "info", str(empty)], "model file not found"),
        (["cpu", "info", str(digits_dir / "model_hw.onnx")], "not a bnncpu model file"),
        (["cpu", "export", str(digits_dir), "--out", str(notes)], f"refusing to replace {notes}"),
    ):
        assert main(args) == 1
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("bnnflow: error:") and reason in lines[0], lines
    with pytest.raises(SystemExit) as info:
        main(["cpu"])
    assert info.value.code == 2 and "SUBCOMMAND" in capsys.readouterr().err

    # In a real process: exit code 1 and one line, nothing written.
    r = _cli("cpu", "export", str(empty), cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0] == f"bnnflow: error: {empty} is not a compile folder: no model_hw.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.bnn", "empty", "notes.txt"]
    assert not list(empty.iterdir()) and notes.read_text() == "mine"
    assert main(["cpu", "export", str(digits_dir), "--out", str(out)]) == 0  # a model file is replaced


def test_cpu_subcommands_have_help() -> None:
    from bnnflow.cli import build_parser

    parser = build_parser()
    cpu = parser._subparsers._group_actions[0].choices["cpu"]  # type: ignore[union-attr]
    subs = cpu._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"export", "info"} <= set(subs)
    for name, sub in subs.items():
        for action in sub._actions:
            if action.help == "==SUPPRESS==":
                continue
            assert action.help, f"cpu {name} {action.option_strings or action.dest} has no help text"


def test_two_foldings_give_the_same_file(digits_dir: Path, tmp_path: Path) -> None:
    """The file holds what the design computes, not how it is folded."""
    run = digits_dir.parent.parent
    other = compile_model(run, "Pynq-Z2", tmp_path / "fps", folding="fps:1000", n_verify=0, log=None)
    assert json.loads((other.out_dir / "folding.json").read_text()) != json.loads(
        (digits_dir / "folding.json").read_text()
    )
    assert (other.out_dir / MODEL_FILE).read_bytes() == (digits_dir / MODEL_FILE).read_bytes()
