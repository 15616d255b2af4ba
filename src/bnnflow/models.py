"""The W1A1 reference networks, built from brevitas_examples.bnn_pynq.

TFC, SFC, LFC and CNV are Brevitas' own ``FC`` and ``CNV`` classes from
``brevitas_examples.bnn_pynq`` with the configurations of its ``cfg/*.ini``
files, so accuracies are comparable with the published ones and FINN's
folding presets for these networks apply unchanged. ``digits-mlp`` is the
same ``FC`` class sized for scikit-learn's 8x8 digits.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import bnnflow._compat  # noqa: F401
from bnnflow.errors import BnnflowError
from bnnflow.padding import pad_binary_inputs_with_minus_one


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dataset: str  # the dataset it is trained on by default
    input_shape: tuple[int, int, int]  # C, H, W of one image
    num_classes: int
    hidden: tuple[int, ...]  # FC hidden widths; empty for CNV
    in_bit_width: int
    description: str
    # What `bnnflow train` uses for this network where the command sets nothing else
    # (TrainConfig field -> value); docs/training.md gives the runs each recipe rests on.
    recipe: dict[str, Any] = field(default_factory=dict)


# 100 epochs with gamma (Bop) and Adam's rate on a cosine to zero: a tenth of the
# 1,000 epochs behind Brevitas' published accuracies. TFC keeps Brevitas' dropout
# of 0.2; the wider SFC and LFC trade it for shifted digits, SFC by up to 1 pixel
# and LFC by up to 2 (docs/training.md).
_MNIST_RECIPE: dict[str, Any] = {"epochs": 100, "schedule": "cosine"}
_SFC_RECIPE: dict[str, Any] = {**_MNIST_RECIPE, "augment": "shift1", "dropout": 0.0}
_LFC_RECIPE: dict[str, Any] = {**_MNIST_RECIPE, "augment": "shift", "dropout": 0.0}

MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "tfc", "mnist", (1, 28, 28), 10, (64, 64, 64), 1, "TFC W1A1: 784-64-64-64-10", _MNIST_RECIPE
        ),
        ModelSpec("sfc", "mnist", (1, 28, 28), 10, (256, 256, 256), 1, "SFC W1A1: 784-256x3-10", _SFC_RECIPE),
        ModelSpec(
            "lfc",
            "mnist",
            (1, 28, 28),
            10,
            (1024, 1024, 1024),
            1,
            "LFC W1A1: 784-1024x3-10",
            _LFC_RECIPE,
        ),
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
        raise _unknown_model(name) from None


def _unknown_model(name: str) -> BnnflowError:
    """A name that is neither a named network nor a network reference; a bare file gets the form it needs."""
    hint = f" (for that file: {name}:build, naming the callable)" if name.endswith(".py") else ""
    return BnnflowError(
        f"unknown model {name!r}; choose one of: {', '.join(model_names())}, "
        f"or give path/to/net.py:build or package.module:build{hint}"
    )


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


# --------------------------------------------------------------------------- a user's own network
@dataclass(frozen=True)
class NetworkSource:
    """What rebuilds a user's network without the user's files: the run folder's copy of its source.

    ``file`` is the copied source's name inside the run folder's ``network/``,
    ``sha256`` its digest when it was copied, ``callable`` the name called in it
    (a function or an ``nn.Module`` subclass) with ``input_shape`` and
    ``num_classes``; ``origin`` is what the user named (``net.py:build`` or
    ``package.module:build``), kept for reports only.
    """

    file: str
    sha256: str
    callable: str
    input_shape: tuple[int, ...]
    num_classes: int
    origin: str

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "callable": self.callable,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "origin": self.origin,
        }

    @classmethod
    def from_json(cls, data: Any) -> NetworkSource:
        try:
            return cls(
                file=str(data["file"]),
                sha256=str(data["sha256"]),
                callable=str(data["callable"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                num_classes=int(data["num_classes"]),
                origin=str(data.get("origin", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BnnflowError(f"damaged network record: {type(exc).__name__}: {exc}") from None


def is_user_model(model: str) -> bool:
    """``path/to/net.py:build`` or ``package.module:build`` rather than a named network."""
    return model not in MODEL_SPECS and ":" in model


def model_label(model: str) -> str:
    """A folder-safe name for ``model``: itself if named, else ``<file stem>-<callable>``."""
    if not is_user_model(model):
        return model
    where, _, name = model.rpartition(":")
    stem = Path(where).stem if where.endswith(".py") else where.rpartition(".")[2]
    return f"{stem}-{name}"


def resolve_source(model: str) -> tuple[Path, str]:
    """(source file, callable name) of a user network reference, or a one-line error."""
    where, _, name = model.rpartition(":")
    if not where or not name.isidentifier():
        raise _unknown_model(model)
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where)
        if not path.is_file():
            raise BnnflowError(f"network source not found: {path}")
        return path, name
    try:
        module = importlib.import_module(where)
    except Exception as exc:  # the user's package: any error while importing it
        raise BnnflowError(f"cannot import {where!r}: {type(exc).__name__}: {_first_line(exc)}") from None
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py"):
        raise BnnflowError(f"module {where!r} has no Python source file to copy into the run folder")
    return Path(file), name


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _load_callable(path: Path, name: str) -> Callable[..., Any]:
    """``name`` from the Python file ``path``, executed as a fresh module (this runs its code)."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    module_name = f"bnnflow_network_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BnnflowError(f"cannot load {path} as Python source")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any error while running it
        sys.modules.pop(module_name, None)
        raise BnnflowError(f"{path} failed to run: {type(exc).__name__}: {_first_line(exc)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise BnnflowError(f"{path} defines no callable {name!r}")
    return fn


def _instantiate(
    fn: Callable[..., Any], where: str, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    try:
        model = fn(tuple(input_shape), int(num_classes))
    except Exception as exc:  # the user's code
        raise BnnflowError(
            f"{where}({tuple(input_shape)}, {num_classes}) failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise BnnflowError(f"{where} returned {type(model).__name__}, not a torch.nn.Module")
    # Every stage builds the network here, so training, export and evaluation all pad
    # binary activations with -1, as FINN's hardware does (padding.py, docs/padding.md).
    try:
        pad_binary_inputs_with_minus_one(model, input_shape)
    except BnnflowError:
        raise
    except Exception as exc:  # the user's forward
        raise BnnflowError(
            f"{where}: forward pass on a {tuple(input_shape)} input failed: {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from None
    return model


def build_user_network(
    model: str, input_shape: tuple[int, ...], num_classes: int
) -> tuple[nn.Module, NetworkSource, bytes]:
    """A user's network from its reference, its record and the source bytes to keep with the run.

    Loading the file executes it, as importing any Python module does.
    """
    path, name = resolve_source(model)
    data = path.read_bytes()
    source = NetworkSource(
        file=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        callable=name,
        input_shape=tuple(int(d) for d in input_shape),
        num_classes=int(num_classes),
        origin=model,
    )
    net = _instantiate(_load_callable(path, name), f"{model}", source.input_shape, source.num_classes)
    return net, source, data


def rebuild_user_network(source: NetworkSource, folder: Path) -> nn.Module:
    """The network of ``source`` from its copy in ``folder``, after checking the copy's sha256.

    This executes the copied source (as ``torch.load`` of a pickle runs code): open run
    folders only from people you trust.
    """
    path = Path(folder) / source.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BnnflowError(f"cannot read the network source {path}: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise BnnflowError(
            f"{path} was changed after training (sha256 differs from the checkpoint's); restore it"
        )
    fn = _load_callable(path, source.callable)
    return _instantiate(fn, f"{source.file}:{source.callable}", source.input_shape, source.num_classes)
