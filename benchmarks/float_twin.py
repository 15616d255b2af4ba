"""A plain float32 copy of a Brevitas W1A1 network, for the CPU baselines.

``benchmarks/cpu_inference.py`` compares the C engine with the same network
run the usual ways on a CPU: Brevitas in PyTorch, and onnxruntime on an
equivalent float graph. onnxruntime cannot run QONNX's quantizer ops, so the
float graph is built here from the trained Brevitas model: every binary layer
becomes an ``nn.Linear``/``nn.Conv2d`` holding its +-1 weights (times their
scale) as float32, every binary activation a sign (0 -> +1, Brevitas'
convention), the 8-bit input quantizer a round-and-clip at its own scale, and
BatchNorm, max-pooling and TensorNorm stay what they are. ``agreement``
measures how often it picks the same class as the Brevitas model.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn


class _Sign(nn.Module):
    """Brevitas' binary activation in eval mode: +scale where x >= 0, -scale elsewhere."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, self.scale, -self.scale)


class _IntQuant(nn.Module):
    """A signed integer activation quantizer: clip(round(x / scale)) * scale."""

    def __init__(self, scale: float, bits: int) -> None:
        super().__init__()
        self.scale = float(scale)
        self.lo, self.hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(x / self.scale), self.lo, self.hi) * self.scale


class _Prep(nn.Module):
    """The input scaling both bnn_pynq networks apply: [0, 1] -> [-1, 1] (flattened for FC)."""

    def __init__(self, flatten: bool) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return 2.0 * x - 1.0


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


@torch.no_grad()
def _convert(module: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """A float twin of one Brevitas module, and the module's output on ``x`` for the next one."""
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear

    y = module(x)
    value = y.value if hasattr(y, "value") else y
    if isinstance(module, QuantIdentity):
        scale = float(module.act_quant.scale().reshape(-1)[0])
        bits = int(module.act_quant.bit_width())
        twin = _Sign(scale) if bits == 1 else _IntQuant(scale, bits)
    elif isinstance(module, (QuantLinear, QuantConv2d)):
        weight = module.quant_weight().value.float()
        if isinstance(module, QuantLinear):
            twin = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        else:
            twin = nn.Conv2d(
                weight.shape[1],
                weight.shape[0],
                weight.shape[2:],
                stride=module.stride,
                padding=module.padding,
                bias=module.bias is not None,
            )
        twin.weight.copy_(weight)
        if module.bias is not None:
            twin.bias.copy_(module.bias)
    else:  # BatchNorm, MaxPool2d, Dropout, TensorNorm: plain torch already
        twin = module
    return twin, value


@torch.no_grad()
def float_twin(model: nn.Module, example: torch.Tensor) -> nn.Sequential:
    """The float32 twin of a bnn_pynq ``FC`` or ``CNV`` in eval mode, traced on ``example`` ([0, 1])."""
    model.eval()
    layers: list[nn.Module] = []
    if hasattr(model, "features"):  # FC
        x = _Prep(True)(example)
        layers.append(_Prep(True))
        for mod in model.features:
            twin, x = _convert(mod, x)
            layers.append(twin)
    else:  # CNV
        x = _Prep(False)(example)
        layers.append(_Prep(False))
        for mod in model.conv_features:
            twin, x = _convert(mod, x)
            layers.append(twin)
        layers.append(_Flatten())
        x = x.reshape(x.shape[0], -1)
        for mod in model.linear_features:
            twin, x = _convert(mod, x)
            layers.append(twin)
    return nn.Sequential(*layers).eval()


def to_onnx(twin: nn.Module, example: torch.Tensor) -> bytes:
    """The twin as an ONNX model with a dynamic batch dimension (torch's exporter)."""
    import contextlib
    import os

    batch = torch.export.Dim("batch", min=1, max=65536)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        program = torch.onnx.export(twin, (example,), dynamic_shapes=({0: batch},), dynamo=True)
    buf = io.BytesIO()
    program.save(buf)
    return buf.getvalue()


@torch.no_grad()
def agreement(model: nn.Module, twin: nn.Module, images: np.ndarray, pixel_max: float) -> float:
    """Fraction of images on which the twin picks the Brevitas model's class."""
    x = torch.from_numpy(images.astype(np.float32) / pixel_max)
    a = model(x)
    a = a.value if hasattr(a, "value") else a
    return float((a.argmax(1) == twin(x).argmax(1)).float().mean())
