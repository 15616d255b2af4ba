"""The CPU engine on the layer shapes a user's own W1A1 network compiles to in FINN.

Small Brevitas networks are built here (QuantConv2d, QuantLinear, QuantIdentity,
MaxPool2d, BatchNorm and TensorNorm with the binary quantizers of
brevitas_examples' bnn_pynq networks, as models.py's named networks use), with
random weight signs and BatchNorm means, exported by the project's export and
compiled by the project's compile; the compile writes the model file. On every
test image the engine's classes and scores must equal FINN's Python execution
of the hardware-layer graph, padding included, and so must the numpy oracle
(tests/cpu_reference.py), which reads the file from the format's definition.

Between them the designs cover: an 8-bit padded first convolution (FINN pads
the INT8 stream with the integer 0), padded binary convolutions (FINN pads a
BINARY stream with a 0 bit, i.e. -1), stride 2 and (1, 2), (1, k) kernels on a
1 x W signal, a non-square kernel on a non-square colour image, max-pooling 2,
(1, 2) and 3, a flatten of 5x5xC folded into an MVAU by FINN's
RemoveCNVtoFCFlatten (and a non-square 4x3xC one), odd and prime channel
counts, and 2, 10 and 43 classes.

The compiles skip FINN's verification chain (n_verify=0): a padded binary
convolution is exactly where PyTorch (which pads with 0.0) and FINN (which pads
with -1) differ, and what is checked here is that the engine computes what
FINN's hardware graph computes.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import cpu_reference as ref
import numpy as np
import pytest
import torch
from conftest import CPU, made_once
from helpers import make_cpu, unavailable
from torch import nn

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.bnncpu import modelfile as mf
from bnnflow.errors import BnnflowError
from bnnflow.layout import CompileDir

N_IMAGES = 6

# name: (input C x H x W, input bits, convolutions (out_c, kernel, stride, padding, pool), hidden FC widths,
#        classes)
DESIGNS = {
    # LeNet-style: padded 8-bit 5x5, pool 2, stride-2 3x3, 2x2 to 5x5x16, flatten + FC, 43 classes
    "lenet": ((1, 28, 28), 8, [(7, 5, 1, 2, 2), (13, 3, 2, 0, 0), (16, 2, 1, 0, 0)], [32], 43),
    # a 1 x 64 signal: padded binary (1, 5) on the 1-bit input, pool (1, 2), padded (1, 3) at stride (1, 2)
    "conv1d": ((1, 1, 64), 1, [(11, (1, 5), 1, (0, 2), (1, 2)), (7, (1, 3), (1, 2), (0, 1), 0)], [], 2),
    # a 12 x 20 colour image: padded 8-bit (3, 5) at stride (1, 2), pool 3, padded binary 3x3, flatten of 4x3
    "wide": ((3, 12, 20), 8, [(5, (3, 5), (1, 2), (1, 2), 3), (19, 3, 1, 1, 0)], [16], 10),
}


class _Net(nn.Module):
    """A W1A1 network as bnn_pynq's CNV builds one: input quantizer, conv / BN / binary activation
    (/ max-pool) blocks, a flatten, FC / BN / binary activation blocks, a last FC and TensorNorm."""

    def __init__(
        self, shape: tuple[int, int, int], in_bits: int, convs: list, fcs: list, classes: int
    ) -> None:
        from brevitas.core.restrict_val import RestrictValueType
        from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
        from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
        from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

        super().__init__()

        def act(bits: int = 1) -> nn.Module:
            if bits == 1:
                return QuantIdentity(act_quant=CommonActQuant, bit_width=1)
            return QuantIdentity(  # CNV's Q1.7 input
                act_quant=CommonActQuant, bit_width=bits, min_val=-1.0, max_val=1.0 - 2.0**-7,
                narrow_range=False, restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
            )  # fmt: skip

        wq = dict(bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1)
        layers, c = [act(in_bits)], shape[0]
        for out_c, kernel, stride, padding, pool in convs:
            layers += [
                QuantConv2d(c, out_c, kernel, stride=stride, padding=padding, **wq),
                nn.BatchNorm2d(out_c),
            ]
            layers += [act()] + ([nn.MaxPool2d(pool)] if pool else [])
            c = out_c
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            width = int(self.features(torch.zeros(1, *shape)).numel())
        lin: list[nn.Module] = []
        for out in fcs:
            lin += [QuantLinear(width, out, **wq), nn.BatchNorm1d(out), act()]
            width = out
        self.classifier = nn.Sequential(*lin, QuantLinear(width, classes, **wq), TensorNorm())
        gen = torch.Generator().manual_seed(sum(shape) + classes)
        for m in self.modules():  # random signs; BatchNorm means that move every threshold
            if isinstance(m, (QuantConv2d, QuantLinear)):
                m.weight.data = torch.rand(m.weight.shape, generator=gen) * 2 - 1
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.data = torch.randn(m.running_mean.shape, generator=gen) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(2.0 * x - 1.0).flatten(1))


def _compile(name: str, folder: Path) -> str:
    """Export (the project's QONNX export, UINT8 pixels in) and compile one design; its compile folder."""
    from bnnflow.export.qonnx_export import PixelScale, _qonnx_graphs
    from bnnflow.hls import compile_model

    shape, in_bits, convs, fcs, classes = DESIGNS[name]
    net = _Net(shape, in_bits, convs, fcs, classes).eval()
    folder.mkdir(parents=True, exist_ok=True)
    _, deployed = _qonnx_graphs(PixelScale(net, 255).eval(), shape)
    deployed.save(str(folder / "model.onnx"))
    result = compile_model(folder / "model.onnx", "Pynq-Z2", out_dir=folder / "compile", n_verify=0, log=None)
    return str(result.out_dir)


@pytest.fixture(scope="module", params=sorted(DESIGNS))
def design(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    name = request.param
    return name, Path(str(made_once(tmp_path_factory, f"shapes-{name}", lambda f: _compile(name, f))))


def _images(name: str) -> np.ndarray:
    """Random pixels, and the two extremes (every border pixel then differs from the padding)."""
    shape = DESIGNS[name][0]
    rng = np.random.default_rng(len(name))
    images = rng.integers(0, 256, (N_IMAGES, *shape)).astype(np.uint8)
    return np.concatenate([images, np.zeros((1, *shape), np.uint8), np.full((1, *shape), 255, np.uint8)])


def _layers(path: Path) -> list[mf.Layer]:
    return mf.read_model(path).layers


def _check_structure(name: str, layers: list[mf.Layer]) -> None:
    """The file has the shapes the design is meant to exercise (so the comparison covers them)."""
    mvaus = [la for la in layers if la.kind == mf.LayerKind.MVAU]
    pools = [la for la in layers if la.kind == mf.LayerKind.MAXPOOL]
    assert mvaus[-1].out_c == DESIGNS[name][4]
    if name == "lenet":
        assert mvaus[0].input_type == mf.ValueType.INT8 and mvaus[0].pad == (2, 2, 2, 2)
        assert (mvaus[1].kernel, mvaus[1].stride, mvaus[1].stride_w) == (3, 2, 2)
        # FINN's RemoveCNVtoFCFlatten: one MVAU over the whole 5x5x16 stream
        assert (mvaus[3].in_shape, mvaus[3].kernel, mvaus[3].kernel_w) == ((5, 5, 16), 5, 5)
    elif name == "conv1d":
        assert mvaus[0].input_type == mf.ValueType.BITS and mvaus[0].pad == (0, 2, 0, 2)
        assert (mvaus[0].in_h, mvaus[0].kernel, mvaus[0].kernel_w) == (1, 1, 5)
        assert (pools[0].kernel, pools[0].kernel_w, pools[0].stride_w) == (1, 2, 2)
        assert (mvaus[1].kernel_w, mvaus[1].stride, mvaus[1].stride_w, mvaus[1].pad) == (
            3,
            1,
            2,
            (0, 1, 0, 1),
        )
    else:
        assert (mvaus[0].kernel, mvaus[0].kernel_w, mvaus[0].stride_w, mvaus[0].pad) == (
            3,
            5,
            2,
            (1, 2, 1, 2),
        )
        assert (pools[0].kernel, pools[0].stride) == (3, 3)
        assert mvaus[1].input_type == mf.ValueType.BITS and mvaus[1].pad == (1, 1, 1, 1)
        assert (mvaus[2].in_shape, mvaus[2].kernel, mvaus[2].kernel_w) == ((4, 3, 19), 4, 3)


def test_engine_equals_finn_on_every_image(design: tuple[str, Path]) -> None:
    """Classes and scores of the engine (the best kernel set here) and of the oracle equal FINN's."""
    from bnnflow.bnncpu.engine import CpuEngine
    from bnnflow.cpu.finn_reference import finn_outputs

    name, compile_dir = design
    model_file = CompileDir(compile_dir).cpu_model
    _check_structure(name, _layers(model_file))
    images = _images(name)
    finn = finn_outputs(compile_dir, images)
    classes, scores = CpuEngine(model_file).run(images)
    assert np.array_equal(scores, finn.scores), (name, scores, finn.scores)
    assert np.array_equal(classes, finn.classes), (name, classes, finn.classes)
    oracle_classes, oracle_scores = ref.run(ref.load(model_file), images)
    assert np.array_equal(oracle_scores, finn.scores) and np.array_equal(oracle_classes, finn.classes)
    # not a constant network: the images do not all get one score vector
    assert len({tuple(s) for s in finn.scores.tolist()}) > 1


# The boards' cores, as tests/test_cpu_engine.py runs them: (cross compiler, qemu-user command).
CROSS = {
    "armhf": ("arm-linux-gnueabihf-gcc", ["qemu-arm", "-cpu", "cortex-a9", "-L", "/usr/arm-linux-gnueabihf"]),
    "aarch64": (
        "aarch64-linux-gnu-gcc",
        ["qemu-aarch64", "-cpu", "cortex-a53", "-L", "/usr/aarch64-linux-gnu"],
    ),
}


def _cli_scores(
    runner: list[str], cli: Path, model: Path, images: np.ndarray, tmp: Path, disable: str
) -> np.ndarray:
    raw, out = tmp / "images.raw", tmp / f"scores-{disable or 'none'}.bin"
    raw.write_bytes(images.tobytes())
    cmd = [
        *runner,
        str(cli),
        "run",
        str(model),
        str(raw),
        "--format",
        "raw",
        "--scores-out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, env={**os.environ, "BNNCPU_DISABLE": disable}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return np.fromfile(out, dtype="<i4").reshape(len(images), -1)


# cpu/build is shared with test_cpu_engine.py's and test_cpu_native.py's make runs: one worker runs them all.
@pytest.mark.xdist_group("cpu-make")
@pytest.mark.parametrize("arch", ["x86", *sorted(CROSS)])
def test_every_kernel_set_equals_finn(design: tuple[str, Path], tmp_path: Path, arch: str) -> None:
    """bnnflow-cpu with kernel sets switched off (BNNCPU_DISABLE) gives FINN's scores, on x86 and
    built for the boards' cores (NEON on the Cortex-A9 and the Cortex-A53) under qemu-user."""
    from bnnflow.cpu.finn_reference import finn_outputs

    name, compile_dir = design
    if arch == "x86":
        runner, cli, settings = [], CPU / "build" / "bnnflow-cpu", ("all", "avx512,avx2", "avx512", "")
    else:
        compiler, runner = CROSS[arch]
        if not shutil.which(compiler) or not shutil.which(runner[0]):
            unavailable(f"{compiler} or {runner[0]} not installed: the {arch} engine is not tested here")
        make_cpu(f"cli-{arch}", timeout=900)
        cli, settings = CPU / "build" / arch / "bnnflow-cpu", ("all", "")
    images = _images(name)[:3]
    finn = finn_outputs(compile_dir, images)
    for disable in settings:
        scores = _cli_scores(runner, cli, CompileDir(compile_dir).cpu_model, images, tmp_path, disable)
        assert np.array_equal(scores, finn.scores), (name, arch, disable)


def _small_model(minor: int, pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> mf.CpuModel:
    """THRESHOLD, a 3x3 binary convolution on 5x5 (padded or not), an FC over its output, LABEL_SELECT."""
    rng = np.random.default_rng(3)
    out = 5 + pad[0] + pad[2] - 2
    outw = 5 + pad[1] + pad[3] - 2
    layers = [
        mf.Layer(mf.LayerKind.THRESHOLD, 5, 5, 1, 5, 5, 1, mf.ValueType.UINT8, mf.ValueType.BITS,
                 thresholds=np.full((1, 1), 100, np.int32)),
        mf.Layer(mf.LayerKind.MVAU, 5, 5, 1, out, outw, 3, mf.ValueType.BITS, mf.ValueType.BITS, kernel=3,
                 pad=pad, weights=rng.integers(0, 2, (9, 3)).astype(np.uint8),
                 thresholds=np.array([4, 5, 6], np.int32)),
        mf.Layer(mf.LayerKind.MVAU, out, outw, 3, 1, 1, 4, mf.ValueType.BITS, mf.ValueType.INT32, kernel=out,
                 kernel_w=outw, weights=rng.integers(0, 2, (out * outw * 3, 4)).astype(np.uint8)),
        mf.Layer(mf.LayerKind.LABEL_SELECT, 1, 1, 4, 1, 1, 1, mf.ValueType.INT32, mf.ValueType.CLASS),
    ]  # fmt: skip
    return mf.CpuModel(1, 5, 5, mf.InputOrder.CHW, 4, mf.Dataset.NONE, layers, version_minor=minor)


def test_format_1_0_files_still_load(tmp_path: Path) -> None:
    """A 1.0 file (zeros where 1.1 has the window fields) loads in Python and C and runs as its 1.1
    twin; a 1.0 file cannot say padding or a non-square window."""
    from bnnflow.bnncpu.engine import CpuEngine

    old, new = tmp_path / "old.bnn", tmp_path / "new.bnn"
    mf.write_model(old, _small_model(0))
    mf.write_model(new, _small_model(1))
    old_bytes, new_bytes = old.read_bytes(), new.read_bytes()
    mvau = mf.HEADER_BYTES + struct.unpack_from("<I", old_bytes, mf.HEADER_BYTES + 4)[0]
    assert (old_bytes[10], new_bytes[10]) == (0, 1)
    assert old_bytes[mvau + 56 : mvau + 64] == bytes(8)  # 1.0: the reserved words
    assert new_bytes[mvau + 56 : mvau + 64] == bytes([3, 0, 1, 0, 0, 0, 0, 0])  # 1.1: kernel_w 3, stride_w 1
    assert mf.read_model(old).version_minor == 0 and mf.read_model(old).layers[1].kernel_w == 3
    images = np.random.default_rng(0).integers(0, 256, (20, 1, 5, 5)).astype(np.uint8)
    a, b = CpuEngine(old).run(images), CpuEngine(new).run(images)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    with pytest.raises(BnnflowError, match="format 1.0 has square, unpadded windows only"):
        mf.write_model(tmp_path / "bad.bnn", _small_model(0, pad=(1, 1, 1, 1)))
    assert not (tmp_path / "bad.bnn").exists()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (60, 3, "not smaller than the 3x3 kernel"),  # pad_top = kernel
        (56, 0, "kernel_w 0"),
        (58, 0, "stride_w 0"),
        (62, 0, r"output 5x5 != .* = 4x5"),  # pad_bottom 0: the stated output needs it
    ],
)
def test_bad_window_fields_are_refused(tmp_path: Path, field: int, value: int, reason: str) -> None:
    """The Python reader and the C engine both refuse a damaged window field of a padded MVAU."""
    from bnnflow.bnncpu.engine import CpuEngine

    good = mf.encode_model(_small_model(1, pad=(1, 1, 1, 1)))
    mvau = mf.HEADER_BYTES + struct.unpack_from("<I", good, mf.HEADER_BYTES + 4)[0]
    data = bytearray(good)
    if field in (56, 58):
        struct.pack_into("<H", data, mvau + field, value)
    else:
        data[mvau + field] = value
    data[24:28] = bytes(4)
    struct.pack_into("<I", data, 24, zlib.crc32(data))
    with pytest.raises(BnnflowError, match=reason):
        mf.decode_model(bytes(data))
    path = tmp_path / "bad.bnn"
    path.write_bytes(bytes(data))
    with pytest.raises(BnnflowError, match=r"layer 2/4 \(MVAU\)") as info:
        CpuEngine(path)
    assert "\n" not in str(info.value)
