"""Padding as FINN pads: -1 around binary activations, 0.0 around the 8-bit input (docs/padding.md).

A small padded CNN on the 8x8 digits (input quantizer, two 3x3 convolutions
with padding 1, max-pooling, a fully connected layer), trained one epoch,
exported and compiled with the verification chain on every test image:
trained with bnnflow.padding it must pass and FINN's hardware-layer graph
must give PyTorch's class on every image; the same network trained with
PyTorch's zero padding must fail the chain, the message naming padding and
the layer.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.data import load_arrays
from bnnflow.errors import BnnflowError
from bnnflow.padding import MARKER, pad_binary_inputs_with_minus_one, zero_padded_binary_convs

DIGITS = (1, 8, 8)


class PaddedCnn(nn.Module):
    """in-quant, conv 3x3 p1, BN, sign, maxpool 2, conv 3x3 p1, BN, sign, maxpool 2, FC 10, as users write it.

    The second convolution pads the max-pooled activations: FINN then meets the -1 padding
    after a pooling layer, between the transposes of its NHWC pooling and of the lowered convolution.
    """

    def __init__(self, in_bits: int) -> None:
        from brevitas.core.restrict_val import RestrictValueType
        from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
        from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant

        super().__init__()
        if in_bits == 1:
            self.quant_in = QuantIdentity(act_quant=CommonActQuant, bit_width=1)
        else:  # CNV's Q1.7 input
            self.quant_in = QuantIdentity(
                act_quant=CommonActQuant,
                bit_width=in_bits,
                min_val=-1.0,
                max_val=1.0 - 2.0 ** (1 - in_bits),
                narrow_range=False,
                restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
            )

        def conv(cin: int, cout: int) -> nn.Module:
            return QuantConv2d(
                cin, cout, 3, padding=1, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1
            )

        self.conv1, self.bn1 = conv(1, 16), nn.BatchNorm2d(16)
        self.act1 = QuantIdentity(act_quant=CommonActQuant, bit_width=1)
        self.conv2, self.bn2 = conv(16, 16), nn.BatchNorm2d(16)
        self.act2 = QuantIdentity(act_quant=CommonActQuant, bit_width=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = QuantLinear(16 * 2 * 2, 10, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant_in(2.0 * x - 1.0)
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        x = self.pool(self.act2(self.bn2(self.conv2(x))))
        return self.fc(x.reshape(x.shape[0], -1))


def trained(in_bits: int, finn_padding: bool) -> tuple[nn.Module, list[str]]:
    """One epoch of latent Adam on the digits training split; the convolutions given -1 padding."""
    from bnnflow.training.optimizers import build_optimizer

    torch.manual_seed(0)
    model = PaddedCnn(in_bits)
    changed = pad_binary_inputs_with_minus_one(model, DIGITS) if finn_padding else []
    images, labels = load_arrays("digits", "train")
    x = torch.from_numpy(images.astype(np.float32) / 16)
    y = torch.from_numpy(labels.astype(np.int64))
    optimizer = build_optimizer(model, "latent-adam", lr=1e-2)
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(x), 64):
        batch = order[start : start + 64]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return model.eval(), changed


def compiled(root: Path, in_bits: int, finn_padding: bool) -> dict[str, Any]:
    """Export and compile (verification chain on every digits test image); the outcome, JSON-able."""
    from bnnflow.export import export_network
    from bnnflow.hls import compile_model

    model, changed = trained(in_bits, finn_padding)
    images, labels = load_arrays("digits", "test")
    exported = export_network(
        model, root / "export", model_name="padded-cnn", dataset="digits", images=images, labels=labels
    )
    with torch.no_grad():
        torch_classes = model(torch.from_numpy(images.astype(np.float32) / 16)).argmax(1).tolist()
    out: dict[str, Any] = {"changed": changed, "n": len(images), "torch_classes": torch_classes}
    try:
        result = compile_model(
            exported.model_path,
            "Pynq-Z2",
            root / "compile",
            images=images,
            labels=labels,
            n_verify=len(images),
            log=None,
        )
    except BnnflowError as exc:
        return {**out, "error": str(exc)}
    return {
        **out,
        "compile_dir": str(result.out_dir),
        "verification": result.verification.to_json(),
        "engine_classes": _engine_classes(result.out_dir, images),
    }


def _engine_classes(compile_dir: Path, images: np.ndarray) -> list[int] | str:
    """The CPU engine's classes from the compile's model.bnn, or why compile wrote none."""
    from bnnflow.bnncpu import CpuEngine
    from bnnflow.layout import CompileDir

    folder = CompileDir(compile_dir)
    if not folder.cpu_model.is_file():
        return json.loads(folder.summary.read_text()).get("cpu_model_error") or "no model.bnn"
    with CpuEngine(folder.cpu_model) as engine:
        classes, _scores = engine.run(np.ascontiguousarray(images), threads=0)
    return [int(c) for c in classes]


@pytest.fixture(scope="module")
def binary_input(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from conftest import made_once

    return made_once(tmp_path_factory, "padding-binary-input", lambda root: compiled(root, 1, True))


def _hw_classes(compile_dir: str, images: np.ndarray) -> list[int]:
    """FINN's Python execution of the hardware-layer graph (before specialisation), image by image."""
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.finnlib.execution import execute, fast_execution, integer_tensors
    from bnnflow.finnlib.finn_env import prepare_finn
    from bnnflow.layout import CompileDir

    prepare_finn()
    hw = ModelWrapper(str(CompileDir(Path(compile_dir)).step_graph("step_convert_to_hw")))
    ints = integer_tensors(hw)
    out = []
    with fast_execution():
        for image in images:
            ctx, _ = execute(hw, image[None].astype(np.float32), ints)
            out.append(int(np.ravel(ctx[hw.graph.output[0].name])[0]))
    return out


def test_binary_padding_passes_the_chain_on_every_test_image(binary_input: dict[str, Any]) -> None:
    assert binary_input["changed"] == ["conv1", "conv2"]
    assert "error" not in binary_input, binary_input.get("error")
    report = binary_input["verification"]
    n = binary_input["n"]
    assert n == 360 and report["n_images"] == n and report["first_mismatch"] is None
    assert (
        report["labels_identical"] == report["accumulators_identical"] == report["activations_identical"] == n
    )
    # FINN's hardware layers: a padded sliding window on the 0/1 stream, padding with the bit 0.
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.layout import CompileDir

    hw = ModelWrapper(str(CompileDir(Path(binary_input["compile_dir"])).step_graph("step_convert_to_hw")))
    pads = [n for n in hw.graph.node if n.op_type.startswith("FMPadding")]
    assert len(pads) == 2 and not hw.get_nodes_by_op_type("Pad")
    assert all(hw.get_tensor_datatype(p.input[0]).name == "BINARY" for p in pads)
    assert all(getCustomOp(p).get_nodeattr("Padding") == [1, 1, 1, 1] for p in pads)
    images, _ = load_arrays("digits", "test")
    assert _hw_classes(binary_input["compile_dir"], images) == binary_input["torch_classes"]
    # The CPU engine's model file from the same design pads with -1 too.
    assert binary_input["engine_classes"] == binary_input["torch_classes"]


def test_zero_padding_of_binary_activations_fails_the_chain_naming_padding(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from conftest import made_once

    wrong = made_once(tmp_path_factory, "padding-zero", lambda root: compiled(root, 1, False))
    assert wrong["changed"] == []
    assert "error" in wrong, "a binary network trained with zero padding passed FINN's verification"
    assert wrong["error"].startswith("verification failed: image ")
    assert (
        "likely cause: padding: weight layer 0 (QONNX Conv_0) pads its binary input with 0," in wrong["error"]
    )


def test_eight_bit_input_keeps_zero_padding_and_passes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """FINN pads the quantized input with the integer 0, which is 0.0: PyTorch's own padding."""
    from conftest import made_once

    eight = made_once(tmp_path_factory, "padding-8bit", lambda root: compiled(root, 8, True))
    assert eight["changed"] == ["conv2"]
    assert "error" not in eight, eight.get("error")
    assert eight["verification"]["labels_identical"] == eight["n"] == 360
    assert eight["verification"]["first_mismatch"] is None
    assert eight["engine_classes"] == eight["torch_classes"]


# --------------------------------------------------------------------------- the training side
def test_forward_pads_binary_activations_with_minus_one() -> None:
    torch.manual_seed(1)
    model = PaddedCnn(1).eval()
    before = copy.deepcopy(model)
    assert zero_padded_binary_convs(model, DIGITS) == ["conv1", "conv2"]
    assert zero_padded_binary_convs(PaddedCnn(8), DIGITS) == ["conv2"]  # the 8-bit input's stays
    assert pad_binary_inputs_with_minus_one(model, DIGITS) == ["conv1", "conv2"]
    assert zero_padded_binary_convs(model, DIGITS) == []
    assert pad_binary_inputs_with_minus_one(model, DIGITS) == []  # a second call changes nothing
    assert model.conv1.padding == (0, 0) and getattr(model.conv1, MARKER) == (1, 1, 1, 1, -1.0)
    assert list(model.state_dict()) == list(before.state_dict())
    x = torch.rand(4, *DIGITS)
    with torch.no_grad():
        a = before.quant_in(2.0 * x - 1.0)
        assert set(a.unique().tolist()) == {-1.0, 1.0}
        want = nn.functional.conv2d(
            nn.functional.pad(a, (1, 1, 1, 1), value=-1.0), before.conv1.quant_weight().value
        )
        assert torch.equal(model.conv1(a), want)
        assert not torch.equal(before.conv1(a), want)  # zero padding differs at the border
        # The network pickles (the hook is a class, not a closure) and behaves the same after.
        again = copy.deepcopy(model)
        assert torch.equal(again(x), model(x))


def _binary_conv(bits: int, kernel: int, **kwargs: Any) -> nn.Sequential:
    from brevitas.nn import QuantConv2d, QuantIdentity
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant

    return nn.Sequential(
        QuantIdentity(act_quant=CommonActQuant, bit_width=bits),
        QuantConv2d(1, 4, kernel, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1, **kwargs),
    )


def test_uneven_padding_same_and_non_constant_padding_are_refused() -> None:
    for kernel, kwargs, words in (
        (
            2,
            {"padding": "same"},
            r"padding='same', which here pads unevenly \(left 0, right 1, top 0, bottom 1\)",
        ),
        (
            3,
            {"padding": "same", "stride": 2},
            r"pads unevenly \(left 0, right 1, top 0, bottom 1\)",
        ),  # 8 -> 4
        (3, {"padding": 1, "padding_mode": "reflect"}, "padding_mode='reflect'"),
    ):
        with pytest.raises(BnnflowError, match=words):
            pad_binary_inputs_with_minus_one(_binary_conv(1, kernel, **kwargs), DIGITS)


@pytest.mark.parametrize("bits", [1, 8])
@pytest.mark.parametrize(
    ("kernel", "stride", "shape"), [(3, 1, DIGITS), (5, 1, (1, 7, 9)), (3, 2, (1, 9, 7))]
)
def test_padding_same_becomes_pixels(bits: int, kernel: int, stride: int, shape: tuple[int, ...]) -> None:
    """padding='same' with an even total (an odd kernel) is its padding in pixels, the same function;
    a binary input's padding then becomes the -1 pad, as for padding in pixels."""
    torch.manual_seed(0)
    model = _binary_conv(bits, kernel, padding="same", stride=stride).eval()
    pixels = _binary_conv(bits, kernel, padding=kernel // 2, stride=stride).eval()
    pixels.load_state_dict(model.state_dict())
    x = torch.rand(3, *shape) * 2 - 1
    with torch.no_grad():
        want = model(x)
        pad_binary_inputs_with_minus_one(pixels, shape)
        assert pad_binary_inputs_with_minus_one(model, shape) == (["1"] if bits == 1 else [])
        assert torch.equal(model(x), pixels(x))
        if bits == 8:  # the input's zero padding: unchanged, PyTorch's 'same'
            assert model[1].padding == (kernel // 2, kernel // 2) and torch.equal(model(x), want)
        else:
            assert getattr(model[1], MARKER)[:4] == (kernel // 2,) * 4


def test_a_pad_finn_cannot_map_is_one_line(tmp_path: Path) -> None:
    """Binary activations padded with +1 (by hand, not by bnnflow.padding): refused with the Pad named."""
    from bnnflow.export import export_network
    from bnnflow.hls import compile_model
    from bnnflow.padding import BinaryPad

    torch.manual_seed(0)
    model = PaddedCnn(1).eval()
    model.conv2.padding = (0, 0)
    model.conv2.register_forward_pre_hook(BinaryPad((1, 1, 1, 1), 1.0))
    images, labels = load_arrays("digits", "test", limit=8)
    exported = export_network(
        model, tmp_path / "export", model_name="padded-cnn", dataset="digits", images=images, labels=labels
    )
    with pytest.raises(BnnflowError, match=r"FINN cannot map Pad_\d \(Pad of a BINARY tensor with 1\)"):
        compile_model(exported.model_path, "Pynq-Z2", tmp_path / "compile", n_verify=0, log=None)
    assert not (tmp_path / "compile").exists()


USER_NET = """
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from torch import nn


def build(input_shape, num_classes):
    w = dict(bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1)
    return nn.Sequential(
        QuantIdentity(act_quant=CommonActQuant, bit_width=1),
        QuantConv2d(input_shape[0], 4, 3, padding=1, **w),
        nn.Flatten(),
        QuantLinear(4 * input_shape[1] * input_shape[2], num_classes, **w),
    )
"""


def test_a_user_network_is_built_with_finns_padding(tmp_path: Path) -> None:
    """Built for training and rebuilt from a run folder alike: the padded binary conv pads with -1."""
    from bnnflow.models import build_user_network, rebuild_user_network

    (tmp_path / "net.py").write_text(USER_NET)
    net, source, _ = build_user_network(f"{tmp_path / 'net.py'}:build", DIGITS, 10)
    assert getattr(net[1], MARKER) == (1, 1, 1, 1, -1.0) and net[1].padding == (0, 0)
    again = rebuild_user_network(source, tmp_path)
    assert getattr(again[1], MARKER) == (1, 1, 1, 1, -1.0)
