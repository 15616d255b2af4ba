"""A 1-D W1A1 network over time for `bnnflow train --model net.py:build`.

Input C x 1 x W: C feature channels (here 16 frequency bands) by W time steps
(32 frames). Every kernel is (1, k), so it slides along time only and mixes
all channels, as a temporal convolution of a keyword-spotting network does.

    8-bit input quantizer
    conv (1,3), 32 -> BN -> sign
    conv (1,3), 32 -> BN -> sign -> max-pool (1,2)
    conv (1,3), 64 -> BN -> sign -> max-pool (1,2)
    FC 64 -> BN -> sign -> FC num_classes -> TensorNorm

No padding: each convolution shortens the window by 2 (32 -> 30 -> 28 -> 14 ->
12 -> 6).
"""

from brevitas.core.restrict_val import RestrictValueType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from torch import nn


def sign() -> nn.Module:
    return QuantIdentity(act_quant=CommonActQuant, bit_width=1)


def input_quant() -> nn.Module:
    """8-bit fixed point in [-1, 1): the uint8 features, 2 * x - 1."""
    return QuantIdentity(
        act_quant=CommonActQuant,
        bit_width=8,
        min_val=-1.0,
        max_val=1.0 - 2.0**-7,
        narrow_range=False,
        restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
    )


def conv1d(c_in: int, c_out: int, k: int = 3) -> nn.Module:
    return QuantConv2d(c_in, c_out, (1, k), bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant)


def fc(n_in: int, n_out: int) -> nn.Module:
    return QuantLinear(n_in, n_out, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant)


class SignalNet(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        if h != 1:
            raise ValueError(f"input C x 1 x W expected (channels, 1, time), got {c}x{h}x{w}")
        width = ((w - 4) // 2 - 2) // 2
        if width < 1:
            raise ValueError(f"a window of {w} steps is too short: at least 12 are needed")
        self.features = nn.Sequential(
            input_quant(),
            conv1d(c, 32), nn.BatchNorm2d(32), sign(),
            conv1d(32, 32), nn.BatchNorm2d(32), sign(), nn.MaxPool2d((1, 2)),
            conv1d(32, 64), nn.BatchNorm2d(64), sign(), nn.MaxPool2d((1, 2)),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            fc(64 * width, 64), nn.BatchNorm1d(64), sign(),
            fc(64, num_classes), TensorNorm(),
        )  # fmt: skip

    def forward(self, x):
        # features arrive scaled to [0, 1]; the input quantizer takes [-1, 1)
        return self.classifier(self.features(2 * x - 1))


def build(input_shape, num_classes):
    return SignalNet(tuple(input_shape), num_classes)
