"""Eight user networks through every stage, each varying the dimensions a user's network varies.

Each network is a Brevitas W1A1 file written as a user writes one
(``build(input_shape, num_classes)``), trained from a synthetic ``npz:``
dataset of its own shape and class count. Each goes through ``bnnflow train``
(one epoch on a few images, after ``bnnflow check``), ``bnnflow export``,
``bnnflow compile`` with its verification chain on every test image, the C
engine (classes and scores equal to FINN's Python execution of the
hardware-layer graph on every test image), ``bnnflow package`` and
``bnnflow-board bench --simulated-board`` on the package's few images.

Between them the networks cover kernels 1, 3, 5 and (1, k) on a 1 x W input,
convolution strides 1 and 2 (and (1, 2)), padding 0 and size-keeping padding
(``padding='same'`` and its pixel form), max-pooling 2, 3 and (1, 2), odd and
prime channel counts, a 1-bit, a 4-bit and an 8-bit input quantizer, 2, 10 and 43
classes, a non-square input and a colour one (``MATRIX`` names each one's).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import made_once
from helpers import unavailable

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.bnncpu import modelfile as mf
from bnnflow.cli import main
from bnnflow.layout import CompileDir
from tests.user_data_files import class_images

ROOT = Path(__file__).resolve().parents[1]
BOARD_CLI = ROOT / ".venv-board" / "bin" / "bnnflow-board"
PER_CLASS_TRAIN, N_TEST, N_BOARD = 6, 24, 6

#: A user's network file: an input quantizer, conv / BatchNorm / sign (/ max-pool) blocks, FC blocks, a last
#: FC and TensorNorm, as brevitas_examples' bnn_pynq CNV is built; the settings are the lines at its top.
SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from brevitas.core.restrict_val import RestrictValueType
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    INPUT_BITS = {in_bits}
    CONVS = {convs}  # (out channels, kernel, stride, padding, max-pool: kernel, [kernel, stride] or 0)
    FCS = {fcs}  # hidden FC widths; None: the classifier is a convolution over the whole last map

    def sign(bits=1):
        if bits == 1:
            return QuantIdentity(act_quant=CommonActQuant, bit_width=1)
        return QuantIdentity(act_quant=CommonActQuant, bit_width=bits, min_val=-1.0,
                             max_val=1.0 - 2.0 ** (1 - bits), narrow_range=False,
                             restrict_scaling_type=RestrictValueType.POWER_OF_TWO)

    def binary(layer, *args, **kw):
        return layer(*args, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant, **kw)

    class Net(nn.Module):
        def __init__(self, input_shape, num_classes):
            super().__init__()
            layers, c = [sign(INPUT_BITS)], input_shape[0]
            for out_c, kernel, stride, padding, pool in CONVS:
                layers += [binary(QuantConv2d, c, out_c, kernel, stride=stride, padding=padding),
                           nn.BatchNorm2d(out_c), sign()]
                if pool:
                    layers.append(nn.MaxPool2d(*pool) if isinstance(pool, list) else nn.MaxPool2d(pool))
                c = out_c
            self.features = nn.Sequential(*layers)
            with torch.no_grad():
                _, _, h, w = self.features(torch.zeros(1, *input_shape)).shape
            if FCS is None:
                head = [binary(QuantConv2d, c, num_classes, (h, w)), nn.Flatten()]
            else:
                head, width = [nn.Flatten()], c * h * w
                for n in FCS:
                    head += [binary(QuantLinear, width, n), nn.BatchNorm1d(n), sign()]
                    width = n
                head.append(binary(QuantLinear, width, num_classes))
            self.classifier = nn.Sequential(*head, TensorNorm())

        def forward(self, x):
            return self.classifier(self.features(2.0 * x - 1.0))

    def build(input_shape, num_classes):
        return Net(input_shape, num_classes)
    """
)

# name: (input C x H x W, input bits, convolutions (out_c, kernel, stride, padding, pool), FCs, classes)
MATRIX = {
    # kernel 3, stride 1, padding 0, pool 2, prime channels 7 and 13, 1-bit input, 10 classes
    "k3-pool2": ((1, 10, 10), 1, [(7, 3, 1, 0, 2), (13, 3, 1, 0, 0)], [], 10),
    # kernel 5 with padding='same' on the 8-bit input, then padding='same' on a binary activation, 2 classes
    "k5-same": ((1, 12, 12), 8, [(7, 5, 1, "same", 2), (13, 3, 1, "same", 2)], [11], 2),
    # kernel 1 on a colour 8-bit input, then pool 2 and a 3x3, 43 classes
    "k1-colour": ((3, 8, 8), 8, [(13, 1, 1, 0, 2), (7, 3, 1, 0, 0)], [], 43),
    # stride 2, odd 9 and prime 31 channels, 1-bit input, 10 classes
    "stride2": ((1, 11, 11), 1, [(9, 3, 2, 0, 0), (31, 3, 1, 0, 0)], [], 10),
    # pool 3 after a size-keeping padded 3x3 (pixels) on a 4-bit input quantizer, 2 classes
    "pool3": ((1, 12, 12), 4, [(7, 3, 1, 1, 3), (13, 3, 1, 0, 0)], [], 2),
    # (1, 5) and (1, 3) kernels on a 1 x 32 signal: padded binary (1, 5), pool (1, 2), stride (1, 2), and
    # a (1, 7) convolution over the last 1 x 7 map as the classifier (fully convolutional)
    "conv1d": ((1, 1, 32), 1, [(7, (1, 5), 1, (0, 2), (1, 2)), (13, (1, 3), (1, 2), 0, 0)], None, 10),
    # a non-square 12 x 20 input: padded 8-bit 3x3 at stride 2, pool 2, 43 classes
    "nonsquare": ((1, 12, 20), 8, [(7, 3, 2, 1, 2), (13, 3, 1, 0, 0)], [], 43),
    # kernel 5 at stride 2 on a non-square colour input, a binary 1x1, an overlapping pool 3 at stride 2
    "k5-stride2": ((3, 13, 17), 1, [(13, 5, 2, 0, 0), (31, 1, 1, 0, [3, 2])], [], 2),
}


def _dataset(path: Path, shape: tuple[int, int, int], classes: int) -> Path:
    """An npz archive of uint8 ``shape`` images, PER_CLASS_TRAIN per class to train, N_TEST to test:
    (N, H, W) for one channel, colour in the archive's stated ``layout`` NHWC."""
    c, h, w = shape

    def split(per_class: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        x = [class_images(k, n, (h, w), channels=c, seed=seed) for k, n in enumerate(per_class) if n]
        return np.concatenate(x), np.repeat(np.arange(classes), per_class)

    x_train, y_train = split([PER_CLASS_TRAIN] * classes, 0)
    test = np.bincount(np.arange(N_TEST) % classes, minlength=classes).tolist()
    x_test, y_test = split(test, 1)
    layout = {"layout": "NHWC"} if c > 1 else {}
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **layout)
    return path


def _test_images(paths: dict) -> np.ndarray:
    """The test split as the stages read it: NCHW."""
    x = np.load(paths["data"])["x_test"]
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


def _pair(v: int | tuple[int, int] | str) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def _check_structure(name: str, model: mf.CpuModel) -> None:
    """The engine's model file holds the windows the network is meant to exercise, so the comparison covers
    them: each convolution's kernel, stride and padding (``'same'``: kernel // 2), each max-pool's window
    and stride, the input's width in the first weight layer, the class count (and a classifier convolution's
    window)."""
    shape, in_bits, convs, fcs, classes = MATRIX[name]
    assert (model.in_c, model.in_h, model.in_w) == shape and model.n_classes == classes
    mvaus = [la for la in model.layers if la.kind == mf.LayerKind.MVAU]
    pools = [la for la in model.layers if la.kind == mf.LayerKind.MAXPOOL]
    assert mvaus[0].input_type == (mf.ValueType.INT8 if in_bits > 1 else mf.ValueType.BITS)
    assert mvaus[-1].out_c == classes and len(pools) == sum(1 for *_, pool in convs if pool)
    if fcs is None:  # the classifier convolution's window is the whole last map
        last = mvaus[-1]
        assert len(mvaus) == len(convs) + 1 and last.in_shape[:2] == (last.kernel, last.kernel_w), last
    pools_left = iter(pools)
    for layer, (out_c, kernel, stride, padding, pool) in zip(mvaus, convs, strict=False):
        k = _pair(kernel)
        pad = (k[0] // 2, k[1] // 2) if padding == "same" else _pair(padding)
        assert layer.out_c == out_c and (layer.kernel, layer.kernel_w) == k, (name, layer)
        assert (layer.stride, layer.stride_w) == _pair(stride) and layer.pad == (*pad, *pad), (name, layer)
        if pool:
            window, step = (pool[0], pool[1]) if isinstance(pool, list) else (pool, pool)
            p = next(pools_left)
            assert ((p.kernel, p.kernel_w), (p.stride, p.stride_w)) == (_pair(window), _pair(step)), (name, p)


def _through_compile(name: str, root: Path) -> dict[str, str]:
    """Dataset, network file, then train, export and compile with the CLI; the folders."""
    shape, in_bits, convs, fcs, classes = MATRIX[name]
    root.mkdir(parents=True)
    data = _dataset(root / "data.npz", shape, classes)
    source = root / f"{name.replace('-', '_')}.py"
    source.write_text(SOURCE.format(in_bits=in_bits, convs=repr(convs), fcs=repr(fcs)))
    run = root / "run"
    argv = ["train", "--model", f"{source}:build", "--dataset", f"npz:{data}", "--run", str(run)]
    assert main([*argv, "--epochs", "1", "--batch-size", "16", "--no-progress", "--threads", "1"]) == 0
    assert main(["export", str(run), "-n", str(N_TEST)]) == 0
    verify = ["--verify", str(N_TEST), "--verify-workers", "1"]
    assert main(["compile", str(run), "--folding", "fps:20000", *verify]) == 0
    return {"data": str(data), "run": str(run), "compiled": str(run / "compile" / "Pynq-Z2")}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.xdist_group(f"matrix-{name}")) for name in MATRIX],
)
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return request.param, _made(tmp_path_factory, request.param)


def _made(tmp_path_factory: pytest.TempPathFactory, name: str) -> dict[str, Path]:
    made = made_once(tmp_path_factory, f"matrix-{name}", lambda folder: _through_compile(name, folder))
    return {k: Path(v) for k, v in made.items()}


def test_compile_verified_every_test_image(network: tuple[str, dict]) -> None:
    name, paths = network
    verification = json.loads((paths["compiled"] / "verification.json").read_text())
    assert verification["n_images"] == N_TEST and verification["labels_identical"] == N_TEST, verification
    export = json.loads((paths["run"] / "export" / "verification.json").read_text())
    assert export["n_images"] == N_TEST and export["label_agreement"] == 1.0, export


def test_engine_equals_finn_on_every_test_image(network: tuple[str, dict]) -> None:
    from bnnflow.bnncpu import CpuEngine
    from bnnflow.cpu.finn_reference import finn_outputs

    name, paths = network
    images = _test_images(paths)
    model_file = CompileDir(paths["compiled"]).cpu_model
    _check_structure(name, mf.read_model(model_file))
    finn = finn_outputs(paths["compiled"], images)
    with CpuEngine(model_file) as engine:
        classes, scores = engine.run(np.ascontiguousarray(images), threads=1)
    assert scores.shape == (N_TEST, MATRIX[name][4])
    assert np.array_equal(scores, finn.scores), (name, scores, finn.scores)
    assert np.array_equal(np.asarray(classes).ravel(), finn.classes), name
    assert len({tuple(s) for s in finn.scores.tolist()}) > 1  # not a constant network


def test_package_on_the_simulated_board(network: tuple[str, dict], tmp_path: Path) -> None:
    from bnnflow.deploy.package import build_package

    name, paths = network
    package = build_package(paths["compiled"], tmp_path / "deploy", n_images=N_BOARD, log=None)
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["testset"]["n"] == N_BOARD and manifest["testset"]["n_classes"] == MATRIX[name][4]
    if not BOARD_CLI.is_file():
        unavailable(f"no simulated board environment at {BOARD_CLI}: `make board-env` builds it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cmd = [str(BOARD_CLI), "bench", str(package), "--simulated-board", "--sim-exec", "python"]
    cmd += ["--batch-sizes", "1,3", "--warmup", "0", "--repeats", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((package / "bench" / "bench.json").read_text())
    assert report["simulated_board"] is True and report["agreement"] == "100%", report
    assert report["fpga"]["agree_classes"] == N_BOARD and report["fpga"]["first_mismatch"] is None
    cpu = report["cpu"]
    assert cpu["available"] and cpu["agree_classes"] == cpu["agree_scores"] == N_BOARD, cpu


def test_a_one_to_one_channel_convolution_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1-channel to 1-channel convolution becomes FINN's depthwise VVAU, which bnnflow does not compile:
    ``bnnflow check`` (which ``bnnflow train`` runs first) says so in one line, naming what to change."""
    data = _dataset(tmp_path / "data.npz", (1, 10, 10), 3)
    source = tmp_path / "one_channel.py"
    source.write_text(SOURCE.format(in_bits=8, convs=repr([(1, 3, 1, 0, 2)]), fcs="[]"))
    capsys.readouterr()
    assert main(["check", f"{source}:build", "--dataset", f"npz:{data}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(VVAU_0, VVAU)" in err and "2 or more output channels" in err, err


@pytest.mark.xdist_group("matrix-conv1d")
def test_the_model_file_refuses_a_reordering_shuffle_and_an_overflowing_input_type(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The writer passes over a shuffle only where it keeps the data's order, and writes a 2- to 7-bit
    input as INT8 only where the thresholds keep it inside its type: each edited graph is refused, naming
    the node."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.bnncpu.writer import UnsupportedGraph, build_cpu_model

    def graphs(name: str) -> tuple[ModelWrapper, ModelWrapper]:
        compiled = _made(tmp_path_factory, name)["compiled"]
        hw = ModelWrapper(str(compiled / "model_hw.onnx"))
        return hw, ModelWrapper(str(CompileDir(compiled).parent_graph))

    hw, parent = graphs("conv1d")
    build_cpu_model(hw, parent)  # as compiled: the shuffle keeps 1 x 1 x 10 in order
    (shuffle,) = [n for n in hw.graph.node if n.op_type.startswith("InnerShuffle")]
    getCustomOp(shuffle).set_nodeattr("transpose_in_shape", [1, 1, 2, 5])  # the same 10 values, transposed
    with pytest.raises(UnsupportedGraph, match=rf"^{shuffle.name} .*a transpose .* that reorders the 1x1x10"):
        build_cpu_model(hw, parent)

    hw, parent = graphs("pool3")
    (threshold,) = [n for n in hw.graph.node if n.op_type.startswith("Thresholding")]
    assert getCustomOp(threshold).get_nodeattr("outputDataType") == "INT4"
    getCustomOp(threshold).set_nodeattr("outputDataType", "INT3")  # 15 thresholds from -8 leave INT3
    with pytest.raises(
        UnsupportedGraph, match=rf"^{threshold.name} .*ActVal -8 \+ 0..15 thresholds does not fit INT3"
    ):
        build_cpu_model(hw, parent)
