"""Padding in training as FINN's hardware pads: -1 around binary activations, 0 around the input.

A padded ``QuantConv2d`` pads with zeros in PyTorch. Zero is no value of a
+-1 tensor: FINN streams binary activations as bits, 0 for -1 and 1 for +1,
and its padding (``FMPadding`` before the sliding window, or the ``Im2Col``
that qonnx's ``LowerConvsToMatMul`` creates) inserts the bit 0, that is -1.
So a network trained with PyTorch's zero padding around binary activations
is a different function from the one FINN builds; docs/padding.md has the
evidence. Around the quantized input of the first layer FINN pads with the
integer 0 of its signed input type, which is 0.0, exactly PyTorch's padding.

``pad_binary_inputs_with_minus_one`` makes a network's forward pad as FINN does: every padded
``QuantConv2d`` whose input comes from a 1-bit activation quantizer gets
``padding=0`` and a forward pre-hook that pads its input with ``-scale``
(``F.pad(value=-scale)``, -1 for Brevitas' bnn_pynq quantizers). The export
then holds an explicit ``Pad`` with that value before the convolution, which
QONNX executes as PyTorch does, and bnnflow.finnlib.padding maps it to
FINN's padded sliding window. A hook, rather than a replacement module, keeps
the network's modules and ``state_dict`` keys unchanged, so checkpoints of
the network load into it and the layer check sees the layers the user wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import bnnflow._compat  # noqa: F401  (before brevitas)
from bnnflow.errors import BnnflowError

#: Attribute set on a convolution whose padding this module took over: (left, right, top, bottom, value).
MARKER = "bnnflow_binary_pad"


class BinaryPad:
    """Forward pre-hook: pads a convolution's +-scale input with ``value`` (FINN's bit 0).

    A class, not a closure, so that a network with the hook can be pickled and deep-copied.
    """

    def __init__(self, amounts: tuple[int, int, int, int], value: float) -> None:
        self.amounts = amounts  # F.pad order: left, right, top, bottom
        self.value = float(value)

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        x = getattr(x, "value", x)  # a Brevitas QuantTensor: its values
        return (F.pad(x, self.amounts, value=self.value), *args[1:])


def _act_quantizers(model: nn.Module) -> list[nn.Module]:
    """Brevitas activation layers (QuantIdentity, QuantHardTanh, ...) with quantization on."""
    from brevitas.nn.quant_layer import QuantNonLinearActLayer

    return [
        m for m in model.modules() if isinstance(m, QuantNonLinearActLayer) and m.act_quant.is_quant_enabled
    ]


def _padded_convs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from brevitas.nn import QuantConv2d

    out = []
    for name, module in model.named_modules():
        if isinstance(module, QuantConv2d) and not hasattr(module, MARKER):
            label = f"layer {name!r} (QuantConv2d)"
            if isinstance(module.padding, str) or getattr(module, "is_same_padded_strided", False):
                raise BnnflowError(f"{label} has padding={module.padding!r}; give the padding in pixels")
            if module.padding_mode != "zeros" and any(int(p) for p in module.padding):
                raise BnnflowError(
                    f"{label} has padding_mode={module.padding_mode!r}; FINN pads with a constant only"
                )
            if any(int(p) for p in module.padding):
                out.append((name, module))
    return out


def _input_quantizers(
    model: nn.Module, convs: list[tuple[str, nn.Module]], input_shape: Sequence[int]
) -> dict[str, nn.Module | None]:
    """For each padded convolution, the activation quantizer that ran last before it in one forward pass.

    Read from a forward pass (not from the module order) because a network's
    forward decides the order; FINN maps only chains of layers, where the
    quantizer that ran last is the one whose output the convolution reads.
    """
    last: list[nn.Module | None] = [None]
    found: dict[str, nn.Module | None] = {}

    def ran(quant: nn.Module, _args: Any, _out: Any) -> None:
        last[0] = quant

    def reads(name: str) -> Any:
        def hook(_conv: nn.Module, _args: Any) -> None:
            found.setdefault(name, last[0])

        return hook

    handles = [quant.register_forward_hook(ran) for quant in _act_quantizers(model)]
    handles += [conv.register_forward_pre_hook(reads(name)) for name, conv in convs]
    _forward_once(model, input_shape, handles)
    return found


def _forward_once(model: nn.Module, input_shape: Sequence[int], handles: list[Any]) -> None:
    """One evaluation-mode forward pass of a zero input, then the hooks ``handles`` removed."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def _binary_padded(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, convolution, its 1-bit quantizer) for each convolution padding a binary activation with 0."""
    convs = _padded_convs(model)
    if not convs:
        return []
    sources = _input_quantizers(model, convs, input_shape)
    found = []
    for name, conv in convs:
        quant = sources.get(name)
        if quant is not None and int(quant.act_quant.bit_width()) == 1:
            found.append((name, conv, quant))
    return found


def zero_padded_binary_convs(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """The convolutions that pad a binary activation with PyTorch's 0, which FINN cannot reproduce.

    A check before training: empty once ``pad_binary_inputs_with_minus_one`` has run.
    """
    return [name for name, _conv, _quant in _binary_padded(model, input_shape)]


def _same_amounts(conv: nn.Module, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) that ``padding='same'`` adds around a ``height`` x ``width`` input.

    Brevitas' rule for a strided convolution (``QuantConv2d.conv2d_same_zeros_pad_stride``), which at
    stride 1 is PyTorch's: ``dilation * (kernel - 1)`` in all, the smaller half before.
    """
    amounts = []
    for size, kernel, stride, dilation in zip(
        (width, height), conv.kernel_size[::-1], conv.stride[::-1], conv.dilation[::-1], strict=True
    ):
        total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        amounts += [total // 2, total - total // 2]
    return amounts[0], amounts[1], amounts[2], amounts[3]


def same_padding_in_pixels(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Give every ``QuantConv2d`` with ``padding='same'`` the same padding in pixels (in place); their names.

    FINN's front end reads an ONNX ``Conv``'s pixel ``pads``, and bnnflow.padding
    replaces the padding of a convolution that reads binary activations, so both
    need the amounts. Equal amounts on both sides of each axis (an odd kernel) give
    the same function; uneven ones (an even kernel, or some strided cases) are
    refused in one line, since a symmetric padding in pixels cannot state them.
    """
    from brevitas.nn import QuantConv2d

    same = {
        name: conv
        for name, conv in model.named_modules()
        if isinstance(conv, QuantConv2d) and conv.padding_mode == "zeros"
        and (conv.padding == "same" or getattr(conv, "is_same_padded_strided", False))
    }  # fmt: skip
    if not same:
        return []
    sizes: dict[str, tuple[int, int]] = {}

    def seen(name: str) -> Any:
        def hook(_conv: nn.Module, args: tuple[Any, ...]) -> None:
            sizes.setdefault(name, tuple(args[0].shape[-2:]))

        return hook

    _forward_once(model, input_shape, [conv.register_forward_pre_hook(seen(n)) for n, conv in same.items()])
    for name, conv in same.items():
        left, right, top, bottom = _same_amounts(conv, *sizes[name])
        if (left, top) != (right, bottom):
            raise BnnflowError(
                f"layer {name!r} (QuantConv2d) has padding='same', which here pads unevenly "
                f"(left {left}, right {right}, top {top}, bottom {bottom}); "
                "use an odd kernel or padding in pixels"
            )
        conv.padding, conv.is_same_padded_strided = (top, left), False
    return list(same)


def pad_binary_inputs_with_minus_one(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Make ``model`` pad as FINN does; returns the names of the convolutions changed (in place).

    ``input_shape`` is one input's (C, H, W), for the forward pass that finds
    which convolutions read binary activations. A convolution reading the
    network's input or a wider quantizer (the 8-bit input) keeps PyTorch's
    zero padding, which FINN reproduces exactly. Calling it again changes nothing.
    """
    same_padding_in_pixels(model, input_shape)
    changed = []
    for name, conv, quant in _binary_padded(model, input_shape):
        scale = quant.act_quant.scale().detach().reshape(-1)
        if scale.numel() != 1:
            raise BnnflowError(
                f"layer {name!r} (QuantConv2d) pads a binary activation with per-channel scales; "
                "FINN needs one scale for a padded binary activation"
            )
        ph, pw = (int(p) for p in conv.padding)
        value = -float(scale[0])
        conv.padding = (0, 0)
        conv.register_forward_pre_hook(BinaryPad((pw, pw, ph, ph), value))
        setattr(conv, MARKER, (pw, pw, ph, ph, value))
        changed.append(name)
    return changed
