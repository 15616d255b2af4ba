"""Layers checked before training, and ``bnnflow check`` through FINN's front end."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.cli import main
from bnnflow.errors import BnnflowError
from bnnflow.export.layers import check_layers


def act(bits: int = 1) -> nn.Module:
    from brevitas.nn import QuantIdentity
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant

    return QuantIdentity(act_quant=CommonActQuant, bit_width=bits)


def linear(n_in: int, n_out: int, bias: bool = False, bits: int = 1) -> nn.Module:
    from brevitas.nn import QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonWeightQuant

    return QuantLinear(n_in, n_out, bias=bias, weight_bit_width=bits, weight_quant=CommonWeightQuant)


def conv(c_in: int, c_out: int, kernel: int | tuple[int, int], **kw: object) -> nn.Module:
    from brevitas.nn import QuantConv2d
    from brevitas_examples.bnn_pynq.models.common import CommonWeightQuant

    return QuantConv2d(
        c_in, c_out, kernel, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant, **kw
    )


def tensor_norm() -> nn.Module:
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    return TensorNorm()


def mlp(*tail: nn.Module, head: tuple[nn.Module, ...] = (), last_bias: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), *head, act(), linear(64, 20), nn.BatchNorm1d(20), act(), nn.Identity(),
        linear(20, 10, bias=last_bias), *tail,
    )  # fmt: skip


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc1, self.bn1, self.a1 = act(), linear(64, 64), nn.BatchNorm1d(64), act()
        self.out = linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x.flatten(1))
        return self.out(x + self.a1(self.bn1(self.fc1(x))))


ACCEPTED = {
    "flatten and identity": lambda: mlp(tensor_norm()),
    "8-bit input": lambda: mlp(head=(act(8),)),
    "hardtanh": lambda: nn.Sequential(
        nn.Flatten(), act(), linear(64, 20), nn.BatchNorm1d(20), _hardtanh(), linear(20, 10)
    ),
    "conv 1xk stride 2 padding, pool 3": lambda: nn.Sequential(
        act(8),
        conv(1, 7, (1, 5), stride=(1, 2), padding=(0, 2)),
        nn.BatchNorm2d(7),
        act(),
        nn.MaxPool2d((1, 3)),
        nn.Flatten(),
        linear(7 * 1 * 2, 10),
    ),  # fmt: skip
}

REFUSED = {
    "final batchnorm": (
        lambda: mlp(nn.BatchNorm1d(10)),
        r"'7' \(BatchNorm1d\) follows the last weight layer '6'",
    ),
    "last bias": (
        lambda: mlp(last_bias=True),
        r"'6' \(QuantLinear\) is the last weight layer and has a bias",
    ),
    "avg pool": (
        lambda: nn.Sequential(act(), conv(1, 4, 3), nn.AvgPool2d(2), nn.Flatten(), linear(36, 10)),
        r"'2' \(AvgPool2d\).*average pooling",
    ),
    "relu": (lambda: mlp(nn.ReLU()), r"'7' \(ReLU\).*float activation"),
    "wide weights": (
        lambda: nn.Sequential(nn.Flatten(), act(), linear(64, 10, bits=2)),
        r"'2' \(QuantLinear\) has 2-bit weights",
    ),
    "16-bit input": (lambda: mlp(head=(act(16),)), r"'1' \(QuantIdentity\) has 16-bit.*at most 8"),
    "2-bit hidden act": (
        lambda: nn.Sequential(nn.Flatten(), act(), linear(64, 20), act(2), linear(20, 10)),
        r"'3' \(QuantIdentity\) has 2-bit activations; an activation after a weight layer",
    ),
    "float input": (
        lambda: nn.Sequential(nn.Flatten(), linear(64, 10)),
        r"'1' \(QuantLinear\) takes float input",
    ),
    "grouped conv": (
        lambda: nn.Sequential(
            act(), conv(1, 2, 3), act(), conv(2, 2, 3, groups=2), nn.Flatten(), linear(32, 10)
        ),
        r"'3' \(QuantConv2d\) has groups=2",
    ),
    "ceil pool": (
        lambda: nn.Sequential(
            act(), conv(1, 2, 3), act(), nn.MaxPool2d(4, ceil_mode=True), nn.Flatten(), linear(8, 10)
        ),
        r"'3' \(MaxPool2d\) has ceil_mode=True",
    ),
    "float linear": (
        lambda: nn.Sequential(nn.Flatten(), act(), nn.Linear(64, 10)),
        r"'2' \(Linear\) is a float layer",
    ),
}


def _hardtanh() -> nn.Module:
    from brevitas.nn import QuantHardTanh
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant

    return QuantHardTanh(act_quant=CommonActQuant, bit_width=1)


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_layers(name: str) -> None:
    shape = (1, 1, 15) if "1xk" in name else (1, 8, 8)
    layers = check_layers(ACCEPTED[name](), shape, 10)
    assert sum(layer.macs for layer in layers) > 0


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_layers_are_named_in_one_line(name: str) -> None:
    make, message = REFUSED[name]
    with pytest.raises(BnnflowError, match=message) as exc:
        check_layers(make(), (1, 8, 8), 10)
    assert "\n" not in str(exc.value)


def test_classes_must_match_the_dataset() -> None:
    with pytest.raises(BnnflowError, match="10 outputs; the dataset has 4 classes"):
        check_layers(mlp(), (1, 8, 8), 4)


def test_macs_are_counted_per_image() -> None:
    layers = check_layers(ACCEPTED["conv 1xk stride 2 padding, pool 3"](), (1, 1, 15), 10)
    by_kind = {la.kind: la for la in layers}
    assert by_kind["QuantConv2d"].out_shape == (7, 1, 8)
    assert by_kind["QuantConv2d"].macs == 5 * 7 * 8  # K=1*1*5, 7 channels, 8 positions
    assert by_kind["QuantLinear"].macs == 7 * 2 * 10


def test_residual_addition_is_refused_from_the_graph() -> None:
    from bnnflow.hls.check import check_module

    check_layers(Residual(), (1, 8, 8), 10)  # every layer is fine on its own
    with pytest.raises(
        BnnflowError, match=r"does not map: node .*\(Add of two tensors\): a residual addition"
    ):
        check_module(Residual(), "digits")


NET = textwrap.dedent(
    """
    from torch import nn
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    def act(bits=1):
        return QuantIdentity(act_quant=CommonActQuant, bit_width=bits)

    class Net(nn.Module):
        def __init__(self, input_shape, num_classes, final=None, centre=True):
            super().__init__()
            c, h, w = input_shape
            w1 = dict(bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant)
            layers = [act(4), QuantConv2d(c, 5, 3, padding=1, **w1), nn.BatchNorm2d(5), act(),
                      nn.MaxPool2d(2), nn.Flatten(), QuantLinear(5 * (h // 2) * (w // 2), num_classes, **w1)]
            layers.append(final if final is not None else TensorNorm())
            self.layers = nn.Sequential(*layers)
            self.centre = centre

        def forward(self, x):
            return self.layers(2 * x - 1 if self.centre else x)

    def build(input_shape, num_classes):
        return Net(input_shape, num_classes)

    def with_bn(input_shape, num_classes):
        return Net(input_shape, num_classes, nn.BatchNorm1d(num_classes))

    def uncentred(input_shape, num_classes):
        return Net(input_shape, num_classes, centre=False)
    """
)


def test_check_command_prints_the_design(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    path = tmp_path / "net.py"
    path.write_text(NET)
    assert main(["check", f"{path}:build", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "maps to FINN's XNOR-popcount dataflow for Pynq-Z2" in out
    assert f"binary MACs per image: {9 * 5 * 64 + 5 * 16 * 10:,}" in out
    assert "frames/s" in out and "LUT" in out and "BRAM18" in out and "folding legal" in out


def test_check_and_train_refuse_a_final_batchnorm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "net.py"
    path.write_text(NET)
    assert main(["check", f"{path}:with_bn", "--dataset", "digits"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'layers.7' (BatchNorm1d) follows the last weight layer 'layers.6'" in err
    run = tmp_path / "run"
    assert main(["train", "--model", f"{path}:with_bn", "--dataset", "digits", "--run", str(run)]) == 1
    assert "follows the last weight layer" in capsys.readouterr().err
    assert not run.exists()


def test_a_finn_refusal_says_what_to_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    path = tmp_path / "net.py"
    path.write_text(NET)
    assert main(["check", f"{path}:uncentred", "--dataset", "digits"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "FINN step_minimize_bit_width_initial fails" in err and "x = 2 * x - 1" in err


def test_train_checks_a_user_network_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    path = tmp_path / "net.py"
    path.write_text(NET)
    short = ["--dataset", "digits", "--epochs", "1", "--limit-train", "100", "--limit-test", "50"]
    short += ["--no-progress", "--threads", "1"]
    run = tmp_path / "run"
    assert main(["train", "--model", f"{path}:build", "--run", str(run), *short]) == 0
    out = capsys.readouterr().out
    assert f"check: {path}:build maps to FINN for Pynq-Z2" in out and "binary MACs per image" in out
    assert (run / "network" / "net.py").is_file()
    skipped = tmp_path / "skipped"
    assert main(["train", "--model", f"{path}:with_bn", "--run", str(skipped), "--no-check", *short]) == 0
    assert "check:" not in capsys.readouterr().out
