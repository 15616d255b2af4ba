"""A small W1A1 CNN with 'same' padding for `bnnflow train --model net.py:build`.

    8-bit input quantizer
    conv 3x3 pad 1, 16 -> BN -> sign
    conv 3x3 pad 1, 16 -> BN -> sign -> max-pool 2
    conv 3x3 pad 1, 32 -> BN -> sign -> max-pool 2
    FC 64 -> BN -> sign -> FC num_classes -> TensorNorm

Padding 1 around a 3x3 kernel at stride 1 keeps the image size ("same").
Give it in pixels: bnnflow refuses PyTorch's ``padding="same"`` string. The
padding of the first convolution surrounds the 8-bit input with 0.0, as
FINN does; bnnflow pads the two convolutions that read binary activations
with -1, the value FINN's hardware inserts (docs/padding.md).
"""

from brevitas.core.restrict_val import RestrictValueType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from torch import nn


def sign() -> nn.Module:
    return QuantIdentity(act_quant=CommonActQuant, bit_width=1)


def input_quant() -> nn.Module:
    """8-bit fixed point in [-1, 1), as Brevitas' CNV takes its pixels."""
    return QuantIdentity(
        act_quant=CommonActQuant,
        bit_width=8,
        min_val=-1.0,
        max_val=1.0 - 2.0**-7,
        narrow_range=False,
        restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
    )


def conv(c_in: int, c_out: int) -> nn.Module:
    return QuantConv2d(
        c_in, c_out, 3, padding=1, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant
    )


def fc(n_in: int, n_out: int) -> nn.Module:
    return QuantLinear(n_in, n_out, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant)


class PaddedCnn(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        if h % 4 or w % 4:
            raise ValueError(f"the two 2x2 poolings need a side divisible by 4, got {h}x{w}")
        self.features = nn.Sequential(
            input_quant(),
            conv(c, 16), nn.BatchNorm2d(16), sign(),
            conv(16, 16), nn.BatchNorm2d(16), sign(), nn.MaxPool2d(2),
            conv(16, 32), nn.BatchNorm2d(32), sign(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            fc(32 * (h // 4) * (w // 4), 64), nn.BatchNorm1d(64), sign(),
            fc(64, num_classes), TensorNorm(),
        )  # fmt: skip

    def forward(self, x):
        # pixels arrive scaled to [0, 1]; the input quantizer takes [-1, 1)
        return self.classifier(self.features(2 * x - 1))


def build(input_shape, num_classes):
    return PaddedCnn(tuple(input_shape), num_classes)
