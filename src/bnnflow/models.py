"""The W1A1 reference networks, built from brevitas_examples.bnn_pynq.

TFC, SFC, LFC and CNV are Brevitas' own ``FC`` and ``CNV`` classes from
``brevitas_examples.bnn_pynq`` with the configurations of its ``cfg/*.ini``
files, so accuracies are comparable with the published ones and FINN's
folding presets for these networks apply unchanged. ``digits-mlp`` is the
same ``FC`` class sized for scikit-learn's 8x8 digits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

import bnnflow._compat  # noqa: F401
from bnnflow.errors import BnnflowError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dataset: str  # the dataset it is trained on by default
    input_shape: tuple[int, int, int]  # C, H, W of one image
    num_classes: int
    hidden: tuple[int, ...]  # FC hidden widths; empty for CNV
    in_bit_width: int
    description: str


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("tfc", "mnist", (1, 28, 28), 10, (64, 64, 64), 1, "TFC W1A1: 784-64-64-64-10"),
        ModelSpec("sfc", "mnist", (1, 28, 28), 10, (256, 256, 256), 1, "SFC W1A1: 784-256x3-10"),
        ModelSpec("lfc", "mnist", (1, 28, 28), 10, (1024, 1024, 1024), 1, "LFC W1A1: 784-1024x3-10"),
        ModelSpec("cnv", "cifar10", (3, 32, 32), 10, (), 8, "CNV W1A1: 6 convs, 3 FC, 8-bit input"),
        ModelSpec(
            "digits-mlp", "digits", (1, 8, 8), 10, (256, 256), 1, "FC W1A1 for 8x8 digits: 64-256-256-10"
        ),
    )
}


def model_names() -> list[str]:
    return sorted(MODEL_SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise BnnflowError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}") from None


def build_model(name: str, num_classes: int | None = None) -> nn.Module:
    """A freshly initialised W1A1 network (latent weights uniform in [-1, 1]).

    ``num_classes`` sizes its last layer for a dataset's classes (default: the network's own 10).
    """
    spec = get_spec(name)
    if num_classes is not None:
        if int(num_classes) < 2:
            raise BnnflowError(f"a classifier needs 2 or more classes, got {num_classes}")
        spec = replace(spec, num_classes=int(num_classes))
    if name == "cnv":
        from brevitas_examples.bnn_pynq.models.CNV import CNV

        return CNV(
            num_classes=spec.num_classes,
            weight_bit_width=1,
            act_bit_width=1,
            in_bit_width=spec.in_bit_width,
            in_ch=spec.input_shape[0],
        )
    from brevitas_examples.bnn_pynq.models.FC import FC

    return FC(
        num_classes=spec.num_classes,
        weight_bit_width=1,
        act_bit_width=1,
        in_bit_width=spec.in_bit_width,
        in_channels=spec.input_shape[0],
        out_features=list(spec.hidden),
        in_features=spec.input_shape[1:],
    )


def binary_weight_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights are quantized to 1 bit, in forward order."""
    from brevitas.nn import QuantConv2d, QuantLinear

    found = []
    for name, module in model.named_modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            bit_width = module.quant_weight().bit_width
            if bit_width is not None and int(bit_width) == 1:
                found.append((name, module))
    return found


def binary_weight_params(model: nn.Module) -> list[torch.nn.Parameter]:
    return [module.weight for _, module in binary_weight_modules(model)]


@torch.no_grad()
def binarize_weights_(model: nn.Module) -> None:
    """Replace every binary layer's latent weight by its sign (0 -> +1).

    This is Bop's initialisation: the sign of a standard init, after which the
    parameter holds exactly +1 or -1 for the rest of training. The sign
    convention (0 -> +1) is Brevitas' ``binary_sign`` and FINN's bipolar type.
    """
    for weight in binary_weight_params(model):
        weight.copy_(torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype))
