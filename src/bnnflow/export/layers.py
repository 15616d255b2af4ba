"""Which layers bnnflow's FINN flow maps to XNOR-popcount dataflow, checked before training.

FINN compiles a binary network to matrix-vector units (MVAU) that compute
``2 * popcount(XNOR(w, x)) - K`` and compare it with thresholds into which
streamlining has folded every BatchNorm and the +-1 activation. So each
weight layer must have 1-bit weights and a 1-bit input (the first layer's
input quantizer may be 1 to 8 bits wide), what lies between weight layers must
be something streamlining absorbs into thresholds or FINN has a streaming unit
for (max pooling), and after the last weight layer only a scalar affine
(TensorNorm) may remain, which FINN absorbs into its label select (TopK).

The order is the order the layers run in: one forward pass on a zero input
with a hook on every layer (``forward_order``). Operations that are not
modules (``x + y``, ``torch.cat``, ``F.avg_pool2d``) do not show here; they
show in the exported graph (``graph_problems``) and in FINN's front end
(``bnnflow check``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import bnnflow._compat  # noqa: F401  (before brevitas)
from bnnflow.errors import BnnflowError

#: Widest activation FINN's first layer takes in bnnflow's flow (CNV's Q1.7 input).
MAX_INPUT_BITS = 8

SUPPORTED = (
    "QuantLinear/QuantConv2d with 1-bit weights, QuantIdentity/QuantHardTanh with 1-bit output "
    f"(1 to {MAX_INPUT_BITS} bits on the input quantizer), BatchNorm1d/2d, MaxPool2d, Dropout, "
    "Flatten, Identity, TensorNorm"
)

# Layers with no arithmetic of their own for FINN: folded into thresholds, reshapes, or training-only.
_PASSIVE_NAMES = ("BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "Identity", "TensorNorm", "PixelScale")

# What may follow the last weight layer: FINN absorbs a scalar affine into its label select (TopK).
_AFTER_LAST = ("TensorNorm", "Dropout", "Flatten", "Identity", "PixelScale")

# Float and unsupported layers, with what to use instead.
_INSTEAD = {
    "AvgPool2d": "average pooling has no binary XNOR-popcount unit in FINN; use nn.MaxPool2d",
    "AdaptiveAvgPool2d": "average pooling has no binary XNOR-popcount unit in FINN; use nn.MaxPool2d",
    "AdaptiveMaxPool2d": "use nn.MaxPool2d with a fixed kernel",
    "ReLU": "a float activation; use QuantIdentity(bit_width=1) (a +-1 sign)",
    "Hardtanh": "a float activation; use QuantHardTanh or QuantIdentity with bit_width=1",
    "Tanh": "a float activation; use QuantIdentity(bit_width=1)",
    "Sigmoid": "a float activation; use QuantIdentity(bit_width=1)",
    "LayerNorm": "FINN cannot fold a LayerNorm into thresholds; use BatchNorm",
    "GroupNorm": "FINN cannot fold a GroupNorm into thresholds; use BatchNorm",
}


@dataclass(frozen=True)
class LayerInfo:
    """One checked layer: its name, kind, output shape and binary multiply-accumulates per image."""

    name: str
    kind: str
    out_shape: tuple[int, ...]
    macs: int = 0
    note: str = ""


def forward_order(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, nn.Module, Any]]:
    """(name, module, output) of every module in the order a forward pass on zeros runs them."""
    seen: list[tuple[str, nn.Module, Any]] = []
    handles = []
    for name, module in model.named_modules():
        if module is model:
            continue
        handles.append(
            module.register_forward_hook(
                lambda mod, _inp, out, name=name: seen.append((name, mod, out))  # type: ignore[misc]
            )
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except Exception as exc:  # the user's forward on their input shape
        first = (str(exc).strip().splitlines() or [""])[0]
        raise BnnflowError(
            f"the network's forward pass fails on a {tuple(input_shape)} input: {type(exc).__name__}: {first}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # A hook fires when a module returns, so children come before their parent: keep
    # the first of nested names (a brevitas layer's quantizer proxies come before the layer).
    return seen


def _shape(out: Any) -> tuple[int, ...]:
    value = getattr(out, "value", out)  # brevitas' QuantTensor
    return tuple(int(d) for d in value.shape[1:]) if isinstance(value, torch.Tensor) else ()


def _is_quant_weight_layer(module: nn.Module) -> bool:
    from brevitas.nn import QuantConv2d, QuantLinear

    return isinstance(module, (QuantLinear, QuantConv2d))


def _is_quant_act(module: nn.Module) -> bool:
    from brevitas.nn import QuantHardTanh, QuantIdentity

    return isinstance(module, (QuantIdentity, QuantHardTanh))


def _top_level(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers to check: brevitas layers whole, passive layers, and leaves; containers skipped."""
    from brevitas.nn.mixin.base import QuantLayerMixin

    out: list[tuple[str, nn.Module]] = []
    skip: list[str] = []
    for name, module in model.named_modules():
        if module is model or any(name.startswith(p + ".") for p in skip):
            continue
        if isinstance(module, QuantLayerMixin) or type(module).__name__ in _PASSIVE_NAMES:
            skip.append(name)
            out.append((name, module))
        elif not any(True for _ in module.children()):
            out.append((name, module))
        elif any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        ):
            out.append((name, module))  # a custom layer with its own weights: refused below
    return out


def _weight_bits(module: nn.Module) -> int | None:
    if not module.weight_quant.is_quant_enabled:
        return None
    bits = module.quant_weight().bit_width
    return None if bits is None else int(bits)


def _act_bits(module: nn.Module) -> int | None:
    if not module.act_quant.is_quant_enabled:
        return None
    return int(module.act_quant.bit_width())


def _check_weight_layer(label: str, module: nn.Module) -> None:
    bits = _weight_bits(module)
    if bits is None:
        raise BnnflowError(f"{label} has float weights; give it weight_bit_width=1 ({SUPPORTED})")
    if bits != 1:
        raise BnnflowError(
            f"{label} has {bits}-bit weights; FINN's XNOR-popcount units need 1-bit weights "
            "(weight_bit_width=1)"
        )
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise BnnflowError(f"{label} has groups={module.groups}; only groups=1 maps to XNOR-popcount")
        if tuple(module.dilation) != (1, 1):
            raise BnnflowError(f"{label} has dilation {tuple(module.dilation)}; use dilation 1")
        if module.padding_mode != "zeros":
            raise BnnflowError(f"{label} pads with {module.padding_mode!r}; FINN pads with a constant")


def _check_pool(label: str, module: nn.MaxPool2d) -> None:
    def pair(v: Any) -> tuple[int, int]:
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

    if module.ceil_mode:
        raise BnnflowError(f"{label} has ceil_mode=True; FINN's max pool floors: use ceil_mode=False")
    if pair(module.dilation) != (1, 1):
        raise BnnflowError(f"{label} has dilation {module.dilation}; use dilation 1")
    if pair(module.padding) != (0, 0):
        raise BnnflowError(f"{label} pads; FINN's max pool takes padding=0 (pad the convolution instead)")


def check_layers(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
) -> list[LayerInfo]:
    """Every layer of ``model`` checked, in forward order when ``input_shape`` is given (else in
    definition order); a one-line ``BnnflowError`` names the first that FINN cannot map and what
    to use instead. Returns the layers with their output shapes and binary MACs per image."""
    candidates = dict(_top_level(model))
    if input_shape is not None:
        ran = forward_order(model, input_shape)
        order, outputs = [], {}
        for name, _mod, out in ran:
            if name in candidates and name not in outputs:
                order.append(name)
                outputs[name] = out
        order += [n for n in candidates if n not in outputs]  # defined but never run: checked too
    else:
        order, outputs = list(candidates), {}
    infos = [_check_one(name, candidates[name], outputs.get(name), i == 0) for i, name in enumerate(order)]
    _check_sequence(infos, [candidates[n] for n in order], num_classes)
    return infos


def _check_one(name: str, module: nn.Module, out: Any, first: bool) -> LayerInfo:
    from brevitas.nn.mixin.base import QuantLayerMixin

    kind = type(module).__name__
    label = f"layer {name!r} ({kind})"
    shape = _shape(out)
    if _is_quant_weight_layer(module):
        _check_weight_layer(label, module)
        per_output = int(module.weight[0].numel())
        positions = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
        channels = int(shape[0]) if shape else int(module.weight.shape[0])
        return LayerInfo(name, kind, shape, macs=per_output * channels * positions)
    if _is_quant_act(module):
        bits = _act_bits(module)
        if bits is None:
            raise BnnflowError(f"{label} does not quantize; give it bit_width=1 ({SUPPORTED})")
        return LayerInfo(name, kind, shape, note=f"{bits}-bit")
    if isinstance(module, nn.MaxPool2d):
        _check_pool(label, module)
        return LayerInfo(name, kind, shape)
    if kind in _PASSIVE_NAMES:
        return LayerInfo(name, kind, shape)
    if isinstance(module, QuantLayerMixin):
        raise BnnflowError(f"{label} is not supported; bnnflow's FINN flow supports {SUPPORTED}")
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise BnnflowError(
            f"{label} is a float layer; FINN needs quantized layers: use brevitas.nn."
            f"Quant{kind} with weight_bit_width=1"
        )
    if kind in _INSTEAD:
        raise BnnflowError(f"{label} is not supported: {_INSTEAD[kind]}")
    raise BnnflowError(f"{label} is not supported; bnnflow's FINN flow supports {SUPPORTED}")


def _check_sequence(infos: list[LayerInfo], modules: list[nn.Module], num_classes: int | None) -> None:
    """Rules over the order: the input quantizer's width, 1-bit activations before every later
    weight layer, and nothing but a scalar affine after the last weight layer."""
    weights = [i for i, m in enumerate(modules) if _is_quant_weight_layer(m)]
    if not weights:
        raise BnnflowError("the network has no QuantLinear or QuantConv2d layer with 1-bit weights")
    for i, (info, module) in enumerate(zip(infos, modules, strict=True)):
        if not _is_quant_act(module):
            continue
        bits = int(info.note.split("-")[0])
        limit = MAX_INPUT_BITS if i < weights[0] else 1
        if bits > limit:
            where = "the input quantizer" if i < weights[0] else "an activation after a weight layer"
            raise BnnflowError(
                f"layer {info.name!r} ({info.kind}) has {bits}-bit activations; {where} may have "
                f"at most {limit} bit(s) in FINN's XNOR-popcount flow"
            )
    if not any(_is_quant_act(m) for m in modules[: weights[0]]):
        first = infos[weights[0]]
        raise BnnflowError(
            f"layer {first.name!r} ({first.kind}) takes float input; put a QuantIdentity "
            f"(bit_width 1 to {MAX_INPUT_BITS}) before it"
        )
    last = weights[-1]
    last_info, last_module = infos[last], modules[last]
    if getattr(last_module, "bias", None) is not None:
        raise BnnflowError(
            f"layer {last_info.name!r} ({last_info.kind}) is the last weight layer and has a bias: FINN's "
            "label select takes its integer outputs and cannot absorb a per-class bias; use bias=False"
        )
    for info in infos[last + 1 :]:
        if info.kind not in _AFTER_LAST:
            raise BnnflowError(
                f"layer {info.name!r} ({info.kind}) follows the last weight layer {last_info.name!r}: "
                "FINN's label select takes the integer class scores and absorbs only a scalar affine "
                "there; remove it or use TensorNorm (one scale for all classes)"
            )
    outputs = infos[last].out_shape
    classes = int(outputs[0]) if outputs else None
    if num_classes is not None and classes is not None and classes != num_classes:
        raise BnnflowError(
            f"layer {last_info.name!r} ({last_info.kind}) has {classes} outputs; the dataset has "
            f"{num_classes} classes"
        )
    if classes is not None and classes < 2:
        raise BnnflowError(f"layer {last_info.name!r} has {classes} output; a classifier needs 2 or more")
