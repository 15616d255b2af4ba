"""Brevitas -> QONNX export of a trained W1A1 network, verified against PyTorch.

The deployed graph (``model.onnx``) takes raw ``uint8`` pixels (annotated
UINT8), scales them by ``1/pixel_max`` inside the graph, runs the network and
ends in ``TopK(k=1)``, so the board gets raw pixels in and a class index out.
``model_logits.onnx`` is the same graph without the TopK. Both files are
executed with QONNX's executor on real test images and compared with the
PyTorch model before the export folder appears; any disagreement is a
``BnnflowError`` and leaves no output folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bnnflow._compat  # noqa: F401  (before brevitas)
from bnnflow.data import (
    DatasetIdentity,
    check_model_fits,
    checkpoint_identity,
    identity_of,
    test_images,
    write_identity,
)
from bnnflow.errors import BnnflowError
from bnnflow.export.layers import check_layers
from bnnflow.layout import ExportDir, RunDir
from bnnflow.runs import atomic_directory, atomic_write_json, checkpoint_network, load_model

MODEL_FILE = ExportDir.MODEL
LOGITS_FILE = ExportDir.LOGITS
VERIFICATION_FILE = ExportDir.VERIFICATION
EXPORT_FILE = ExportDir.SUMMARY

#: Largest allowed max-abs difference between QONNX and PyTorch logits.
LOGIT_TOLERANCE = 1e-4
DEFAULT_N_VERIFY = 1000
DEFAULT_BATCH_SIZE = 250


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and what its verification measured."""

    out_dir: Path
    model_path: Path  # deployed graph: UINT8 pixels in, TopK class index out
    logits_path: Path  # same graph without TopK
    verification_path: Path
    export_path: Path
    model_name: str
    dataset: str
    verification: dict[str, Any] = field(default_factory=dict)


class PixelScale(nn.Module):
    """Multiplies raw pixel values by ``1/pixel_max`` before the network.

    The network's own forward then maps [0, 1] to [-1, 1] (``2x - 1``).

    Why a torch wrapper and not a node inserted into the graph afterwards (as
    FINN's ``add_preproc_divide_by_255`` step or its notebooks' merged
    ``ToTensor`` model do): the scaling is then part of the PyTorch reference
    that the verification compares against, one export produces the whole
    graph, and no graph surgery is needed. The exported graph starts with a
    ``Mul`` by ``1/pixel_max`` that FINN's streamlining absorbs into the first
    thresholds.
    """

    def __init__(self, network: nn.Module, pixel_max: int) -> None:
        super().__init__()
        if pixel_max <= 0:
            raise BnnflowError(f"pixel_max must be positive, got {pixel_max}")
        self.network = network
        self.pixel_max = int(pixel_max)
        self.register_buffer("scale", torch.tensor(1.0 / pixel_max, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x * self.scale)


# --------------------------------------------------------------------------- layer check
def check_supported_layers(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
) -> None:
    """Raise a one-line ``BnnflowError`` naming the first layer bnnflow's FINN flow cannot map
    (export/layers.py has the rules)."""
    check_layers(model, input_shape, num_classes)


# --------------------------------------------------------------------------- graphs
@contextlib.contextmanager
def _quiet_export() -> Iterator[io.StringIO]:
    """Hold back the dynamo exporter's progress lines and its optional-package warnings.

    torch's ONNX exporter prints progress to stdout and logs one warning per
    missing torchvision op; brevitas warns about an optional kernel package.
    None of it concerns the user; the captured text is kept for error messages.
    """
    captured = io.StringIO()
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")
            yield captured
    finally:
        logger.setLevel(level)


def _qonnx_graphs(wrapped: PixelScale, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The cleaned logits graph and the deployed (TopK) graph, both with a UINT8 input."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.insert_topk import InsertTopK
    from qonnx.util.cleanup import cleanup_model

    # The dynamo exporter may write weights next to the file (``<name>.data``),
    # so the raw export gets its own scratch folder.
    with tempfile.TemporaryDirectory(prefix="bnnflow-export-") as scratch:
        raw_path = Path(scratch) / "raw.onnx"
        try:
            # Batch 1: FINN's dataflow graphs process one frame at a time; the
            # verification changes the batch size of a copy (ChangeBatchSize).
            with _quiet_export():
                from brevitas.export import export_qonnx  # its import warns about optional kernels

                export_qonnx(wrapped, torch.zeros(1, *input_shape), export_path=str(raw_path))
            logits = cleanup_model(ModelWrapper(str(raw_path)))  # loads any external data
        except BnnflowError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise BnnflowError(f"Brevitas/QONNX export failed: {type(exc).__name__}: {first}") from None
    logits = logits.transform(InferDataTypes())

    # The class index is added with QONNX's InsertTopK (what FINN's own
    # "add_postproc_top1" build step uses) rather than exporting an argmax from
    # PyTorch: the deployed graph is then the verified logits graph plus one
    # library transformation, and FINN recognises the trailing TopK and maps it
    # to its LabelSelect layer.
    deployed = ModelWrapper(logits.model.__deepcopy__())
    deployed = deployed.transform(InsertTopK(k=1))
    for transformation in (InferShapes(), GiveUniqueNodeNames(), GiveReadableTensorNames(), InferDataTypes()):
        deployed = deployed.transform(transformation)

    for graph in (logits, deployed):
        graph.set_tensor_datatype(graph.graph.input[0].name, DataType["UINT8"])
    return logits, deployed


def export_graphs(wrapped: PixelScale, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The logits and deployed QONNX graphs of ``wrapped``, unverified (``bnnflow check`` on an
    untrained network; ``export_network`` verifies)."""
    return _qonnx_graphs(wrapped, input_shape)


# --------------------------------------------------------------------------- verification
def _torch_logits(reference: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    out = []
    reference.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(images[start : start + batch_size].astype(np.float32))
            out.append(reference(chunk).numpy())
    return np.concatenate(out).astype(np.float32)


def run_qonnx(path: str | Path, images: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Execute a saved QONNX graph on ``uint8`` images, ``batch_size`` frames per call.

    The graph is exported for batch 1; QONNX's ``ChangeBatchSize`` rewrites a
    copy for each chunk size, so one node-by-node pass covers a whole chunk.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    if batch_size < 1:
        raise BnnflowError(f"batch size must be positive, got {batch_size}")
    base = ModelWrapper(str(path))
    in_name, out_name = base.graph.input[0].name, base.graph.output[0].name
    by_size: dict[int, Any] = {}
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].astype(np.float32)
        n = len(chunk)
        if n not in by_size:
            by_size[n] = base.transform(ChangeBatchSize(n)).transform(InferShapes())
        outputs.append(execute_onnx(by_size[n], {in_name: chunk})[out_name])
    return np.concatenate(outputs)


def _other_class(ref: np.ndarray, classes: np.ndarray) -> int:
    """Images whose ``classes`` PyTorch scores more than ``LOGIT_TOLERANCE`` below its own top logit.

    With unit weight scales the logits are exact and this is PyTorch's argmax; with a scaled
    quantizer (Brevitas' 0.1) two classes tied in integers differ by float rounding, and
    either is the network's answer.
    """
    rows = np.arange(len(ref))
    return int(np.sum(ref[rows, classes] < ref.max(axis=1) - LOGIT_TOLERANCE))


def verify_export(
    logits_path: str | Path,
    model_path: str | Path,
    reference: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Compare the saved graphs with ``reference`` (PyTorch, uint8-valued float input).

    Checks: logits within ``LOGIT_TOLERANCE`` (max abs diff), the same argmax on
    every image, and the deployed graph's TopK index equal to PyTorch's argmax.
    Returns the figures written to ``verification.json``; raises ``BnnflowError``
    on any mismatch.
    """
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    if len(images) == 0 or len(images) != len(labels):
        raise BnnflowError("verification needs images and labels of equal, non-zero length")
    for path in (logits_path, model_path):
        graph = ModelWrapper(str(path))
        dtype = graph.get_tensor_datatype(graph.graph.input[0].name)
        if dtype != DataType["UINT8"]:
            raise BnnflowError(f"{Path(path).name}: input datatype is {dtype.name}, expected UINT8")

    t0 = time.perf_counter()
    ref = _torch_logits(reference, images, batch_size)
    t1 = time.perf_counter()
    got = run_qonnx(logits_path, images, batch_size)
    t2 = time.perf_counter()
    top = run_qonnx(model_path, images, batch_size)
    t3 = time.perf_counter()

    if got.shape != ref.shape:
        raise BnnflowError(f"QONNX logits have shape {got.shape}, PyTorch {ref.shape}")
    diff = float(np.max(np.abs(got - ref)))
    ref_cls, got_cls = ref.argmax(axis=1), got.argmax(axis=1)
    top_cls = top.reshape(len(images), -1)[:, 0].astype(np.int64)
    sorted_ref = np.sort(ref, axis=1)
    report: dict[str, Any] = {
        "n_images": len(images),
        "max_abs_logit_diff": diff,
        "tolerance": LOGIT_TOLERANCE,
        "label_agreement": float(np.mean(ref_cls == got_cls)),
        "topk_agreement": float(np.mean(top_cls == ref_cls)),
        "accuracy_pytorch": float(np.mean(ref_cls == labels)),
        "accuracy_qonnx": float(np.mean(got_cls == labels)),
        "accuracy_deployed": float(np.mean(top_cls == labels)),
        # Binary networks have integer pre-norm logits, so top-1 ties are common;
        # TopK, numpy and torch all pick the lowest index of a tie.
        "tied_top1": int(np.sum(sorted_ref[:, -1] == sorted_ref[:, -2])),
        "batch_size": batch_size,
        "seconds": {
            "pytorch": round(t1 - t0, 3),
            "qonnx_logits": round(t2 - t1, 3),
            "qonnx_deployed": round(t3 - t2, 3),
        },
    }
    if not diff <= LOGIT_TOLERANCE:  # also catches NaN
        raise BnnflowError(
            f"verification failed: QONNX logits differ from PyTorch by {diff:.3g} "
            f"(tolerance {LOGIT_TOLERANCE:g}) on {len(images)} images"
        )
    bad = _other_class(ref, got_cls)
    if bad:
        raise BnnflowError(f"verification failed: QONNX predicts another class on {bad}/{len(images)} images")
    bad = _other_class(ref, top_cls)
    if bad:
        raise BnnflowError(
            f"verification failed: TopK differs from PyTorch argmax on {bad}/{len(images)} images"
        )
    return report


# --------------------------------------------------------------------------- export
def _versions() -> dict[str, str]:
    out = {}
    for package in ("brevitas", "qonnx", "onnx", "onnxruntime", "torch", "finn-plus"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def export_network(
    model: nn.Module,
    out_dir: str | Path,
    *,
    model_name: str,
    dataset: str | DatasetIdentity,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    extra: dict[str, Any] | None = None,
    n_verify: int = DEFAULT_N_VERIFY,
    data_dir: str | Path | None = None,
) -> ExportResult:
    """Export an eval-mode network to ``out_dir`` and verify it on ``images`` (uint8, N x C x H x W).

    ``dataset``: a dataset name (``mnist``, ``folder:PATH``, ...) or the identity of the one the
    network was trained on (``bnnflow.data.DatasetIdentity``), which the export folder records
    in ``dataset.json``. Without ``images`` and ``labels`` the verification takes ``n_verify``
    images of its test split, seeded and class-stratified (so a network trained in the user's
    own loop exports with ``export_network(model, out, model_name=..., dataset=...)``).
    ``out_dir`` appears only if the export and its verification succeed.
    """

    info = identity_of(dataset)
    dataset = info.name
    if images is None or labels is None:
        if images is not None or labels is not None:
            raise BnnflowError("give both verification images and labels, or neither")
        images, labels = test_images(info, n_verify, data_dir)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(info.input_shape):
        raise BnnflowError(
            f"verification images have shape {images.shape[1:]}, {dataset} needs {tuple(info.input_shape)}"
        )
    if images.dtype != np.uint8:
        raise BnnflowError(f"verification images must be uint8 raw pixels, got {images.dtype}")
    check_supported_layers(model, tuple(info.input_shape))
    model.eval()
    wrapped = PixelScale(model, info.pixel_max).eval()
    _check_classes(wrapped, images, info, model_name)

    out_dir = Path(out_dir)
    with atomic_directory(out_dir, marker=EXPORT_FILE) as tmp:
        logits, deployed = _qonnx_graphs(wrapped, tuple(info.input_shape))
        logits.save(str(tmp / LOGITS_FILE))
        deployed.save(str(tmp / MODEL_FILE))
        report = verify_export(
            tmp / LOGITS_FILE, tmp / MODEL_FILE, wrapped, images, labels, batch_size=batch_size
        )
        report = {"dataset": dataset, "split": "test", **report}
        atomic_write_json(tmp / VERIFICATION_FILE, report)
        meta = {
            "model": model_name,
            "dataset": dataset,
            "input_shape": [1, *info.input_shape],
            "input_name": deployed.graph.input[0].name,
            "input_datatype": "UINT8",
            "pixel_max": info.pixel_max,
            "pixel_scale": 1.0 / info.pixel_max,
            "output_name": deployed.graph.output[0].name,
            "output": "class index, TopK(k=1), int64, shape [1, 1]",
            "logits_output_name": logits.graph.output[0].name,
            "files": {"model": MODEL_FILE, "logits": LOGITS_FILE, "verification": VERIFICATION_FILE},
            "versions": _versions(),
            **(extra or {}),
        }
        write_identity(tmp, info)
        atomic_write_json(tmp / EXPORT_FILE, meta)
    return ExportResult(
        out_dir=out_dir,
        model_path=out_dir / MODEL_FILE,
        logits_path=out_dir / LOGITS_FILE,
        verification_path=out_dir / VERIFICATION_FILE,
        export_path=out_dir / EXPORT_FILE,
        model_name=model_name,
        dataset=dataset,
        verification=report,
    )


def _check_classes(wrapped: nn.Module, images: np.ndarray, info: DatasetIdentity, name: str) -> None:
    """One line where the network's class count is not its dataset's (before anything is exported)."""
    with torch.no_grad():
        out = wrapped(torch.from_numpy(np.ascontiguousarray(images[:1])).float())
    check_model_fits(info, images.shape[1:], int(out.reshape(1, -1).shape[1]), f"model {name!r}")


def default_out_dir(checkpoint_or_run: str | Path) -> Path:
    """``runs/<name>/export/`` for a run folder or a checkpoint inside one."""
    path = Path(checkpoint_or_run)
    return RunDir(path if path.is_dir() else path.parent).export.path


def export_model(
    checkpoint_or_run: str | Path,
    out_dir: str | Path | None = None,
    n_verify: int = DEFAULT_N_VERIFY,
    data_dir: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ExportResult:
    """Export a checkpoint (or a run folder's best checkpoint) to QONNX and verify it.

    Verification uses ``n_verify`` images of the run's dataset's test split (a seeded,
    class-stratified subset: ``bnnflow.data.test_images``)
    (all of them if the split is smaller, e.g. the 360 digits test images).
    Writes ``model.onnx``, ``model_logits.onnx``, ``verification.json`` and
    ``export.json`` to ``out_dir`` (default ``<run>/export/``).
    """

    if isinstance(n_verify, bool) or not isinstance(n_verify, int) or n_verify < 1:
        raise BnnflowError(f"n_verify must be a positive integer, got {n_verify!r}")
    if batch_size < 1:
        raise BnnflowError(f"batch size must be positive, got {batch_size}")
    model, payload = load_model(checkpoint_or_run)
    name = payload["model"]
    identity = checkpoint_identity(payload)  # the dataset the run recorded (older runs: its named one)
    _, input_shape = checkpoint_network(payload)
    check_model_fits(identity, input_shape, identity.num_classes, f"model {name!r}")
    images, labels = test_images(identity, n_verify, data_dir)  # seeded, every class its share
    checkpoint = Path(checkpoint_or_run)
    source = checkpoint
    if checkpoint.is_dir():  # the file load_checkpoint read
        run = RunDir(checkpoint)
        source = run.best if run.best.exists() else run.checkpoint
    return export_network(
        model,
        default_out_dir(checkpoint) if out_dir is None else out_dir,
        model_name=name,
        dataset=identity,
        images=images,
        labels=labels,
        batch_size=batch_size,
        extra={"checkpoint": str(source.resolve()), "epoch": payload.get("epoch")},
    )


def read_export(out_dir: str | Path) -> dict[str, Any]:
    """``export.json`` of an export folder, or a one-line error."""
    path = Path(out_dir) / EXPORT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BnnflowError(f"{path} not found: run `bnnflow export` first") from None
    except (OSError, ValueError) as exc:
        raise BnnflowError(f"cannot read {path}: {exc}") from None
