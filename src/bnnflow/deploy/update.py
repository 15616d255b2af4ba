"""``bnnflow package --weights-only``: a retrained checkpoint for a design already on the board.

A design compiled with ``--runtime-weights`` takes new weights and thresholds
through its AXI-lite ports, without a new bitstream. The update package holds
what the board needs to load them and to check the result::

    weights-<run>/
      manifest.json            format bnnflow-weights: the design it belongs to, words changed per
                               layer, the test set it was checked on, a sha256 per file
      runtime_weights/*.dat    FINN's runtime weight files (write_runtime_weights), what
                               finn-plus-driver writes into the FPGA
      runtime_weights/runtime_weights.json   values and words changed per layer
      model.bnn                the CPU engine's model file of the design carrying the new values
      testset/golden_classes.i32, golden_scores.i32   the new golden outputs for the
                               deployment package's test images, from the CPU engine

The design is a compile folder (then the test images are the dataset's first
``n_images``, as ``bnnflow package`` takes them) or a deployment package
(its own test images, and its compile folder from its manifest). Either way
the manifest records the sha256 of the images the golden outputs belong to
and the design's structure fingerprint, which ``bnnflow-board update-weights``
compares with the deployment package before it writes anything.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bnnflow_board.deployformat import (
    FORMAT,
    GOLDEN_CLASSES,
    GOLDEN_SCORES,
    MANIFEST,
    MODEL,
    UPDATE_FORMAT,
    UPDATE_RUNTIME_WEIGHTS,
    UPDATE_VERSION,
    FormatError,
    labels_dtype,
    sha256,
    sha256_bytes,
)

from bnnflow import __version__
from bnnflow.bnncpu.writer import PARENT_GRAPH
from bnnflow.cpu import build_cpu_model, write_model
from bnnflow.data import recorded_test_images
from bnnflow.deploy.golden import model_golden_outputs
from bnnflow.deploy.package import (
    DEFAULT_IMAGES,
    Log,
    Source,
    default_out,
    resolve_source,
    runtime_weight_layers,
)
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.hls.runtime_weights import structure_fingerprint, write_runtime_weights
from bnnflow.layout import CompileDir
from bnnflow.runs import atomic_directory, atomic_write_json


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Design:
    """Where a weights-only update is going: the compiled design, and its deployment package if given."""

    compile_dir: Path
    board: str
    model_name: str
    compile_info: dict[str, Any]
    deploy: Path | None = None
    deploy_manifest: dict[str, Any] | None = None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BnnflowError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BnnflowError(f"{path} is not {what}")
    return data


def resolve_design(path: str | Path, board: str | None = None) -> Design:
    """A deployment package, compile or run folder of a --runtime-weights design; else a one-line error."""
    path = Path(path)
    deploy = manifest = None
    if (path / MANIFEST).is_file():
        manifest = _read_json(path / MANIFEST, "a package manifest")
        if manifest.get("format") == UPDATE_FORMAT:
            raise BnnflowError(f"{path} is a weights-only update, not a design: give the deployment package")
        if manifest.get("format") != FORMAT:
            raise BnnflowError(f"{path / MANIFEST} is not a bnnflow deployment manifest")
        deploy = path.absolute()
        compile_dir = Path(str(manifest.get("host", {}).get("compile_dir", "")))
        if not (compile_dir / CompileDir.SUMMARY).is_file():
            raise BnnflowError(
                f"{path} was packaged from {compile_dir}, which is not here: give --design that compile "
                "folder"
            )
        path = compile_dir
    source = resolve_source(path, board)
    if not source.compile_info.get("runtime_weights"):
        raise BnnflowError(
            f"{source.compile_dir} was compiled without --runtime-weights: its weights and thresholds are "
            "fixed in the bitstream"
        )
    design = Design(source.compile_dir, source.board, source.run_name, source.compile_info, deploy, manifest)
    if manifest is not None:
        if not manifest.get("runtime_weights"):
            raise BnnflowError(
                f"{deploy} holds no runtime weight files (packaged by an older bnnflow): package "
                f"{source.compile_dir} again"
            )
        from qonnx.core.modelwrapper import ModelWrapper

        prepare_finn()
        now = structure_fingerprint(ModelWrapper(str(source.compile_dir / CompileDir.HW_GRAPH)))
        if manifest.get("design", {}).get("fingerprint") != now:
            raise BnnflowError(
                f"{source.compile_dir} is no longer the design {deploy} was packaged from (compiled again "
                "since): package it again"
            )
    return design


def _deploy_testset(design: Design) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """The deployment package's test images (checked against its manifest), labels, dataset, golden."""
    assert design.deploy is not None and design.deploy_manifest is not None
    ts, files = design.deploy_manifest["testset"], design.deploy_manifest.get("files", {})
    arrays = {}
    for key in ("images", "labels", "golden_classes"):
        rel = ts[key]
        p = design.deploy / rel
        if not p.is_file():
            raise BnnflowError(f"{design.deploy}: {rel} is missing")
        if files.get(rel) != sha256(p):
            raise BnnflowError(f"{design.deploy}: {rel} does not match its sha256 (changed after packaging)")
        arrays[key] = p.read_bytes()
    n, shape = int(ts["n"]), [int(d) for d in ts["image_shape"]]
    images = np.frombuffer(arrays["images"], dtype=np.uint8)
    if images.size != n * int(np.prod(shape)):
        raise BnnflowError(f"{design.deploy}: {ts['images']} does not hold {n} images of {shape}")
    try:
        labels = np.frombuffer(arrays["labels"], dtype=labels_dtype(str(ts["labels"]))).astype(np.int64)
    except (FormatError, ValueError) as exc:  # numpy's, for a byte count that is no whole label
        raise BnnflowError(f"{design.deploy}: {exc}") from None
    if labels.size != n:
        raise BnnflowError(f"{design.deploy}: {ts['labels']} does not hold {n} labels")
    golden = np.frombuffer(arrays["golden_classes"], dtype="<i4").astype(np.int64)
    return images.reshape(n, *shape), labels, str(ts["dataset"]), golden


def _default_name(checkpoint_or_run: Path) -> str:
    if checkpoint_or_run.is_dir():
        return f"weights-{checkpoint_or_run.absolute().name}"
    stem = checkpoint_or_run.stem
    run = checkpoint_or_run.absolute().parent.name
    return f"weights-{run}" if stem in ("best", "checkpoint") else f"weights-{run}-{stem}"


def build_weights_update(
    checkpoint_or_run: str | Path,
    design: str | Path,
    out: str | Path | None = None,
    board: str | None = None,
    n_images: int = DEFAULT_IMAGES,
    data_dir: str | Path | None = None,
    n_verify: int = 100,
    log: Log | None = _stderr,
) -> Path:
    """Write the weights-only update package for ``checkpoint_or_run`` onto ``design``; returns its folder.

    Refuses a design compiled without --runtime-weights, a checkpoint of
    another architecture (naming the first difference, from
    write_runtime_weights), missing or changed files, and an ``out`` that
    holds anything but an earlier update. Nothing is written unless
    everything succeeds.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    log = log or (lambda _msg: None)
    if n_images < 1:
        raise BnnflowError(f"--images must be at least 1, got {n_images}")
    checkpoint = Path(checkpoint_or_run)
    if not checkpoint.exists():
        raise BnnflowError(f"checkpoint not found: {checkpoint}")
    target = resolve_design(design, board)
    prepare_finn()
    parent = ModelWrapper(str(target.compile_dir / PARENT_GRAPH))
    testset = _testset(target, parent, n_images, data_dir)
    final = _destination(target, checkpoint, out)

    log(f"weights-only update of {target.compile_dir} ({target.board}) from {checkpoint}")
    # Everything is written to a temporary folder that replaces ``final`` only once complete.
    with atomic_directory(final, marker=MANIFEST) as tmp:
        result, layers = _runtime_weight_files(target, checkpoint, tmp, data_dir, n_verify, log)
        write_model(tmp / MODEL, build_cpu_model(result.hardware_graph, parent, testset.dataset))
        testset_entry = _golden_outputs(tmp, testset, log)
        manifest = _manifest(target, result, layers, testset_entry, tmp)
        atomic_write_json(tmp / MANIFEST, manifest)
    total = manifest["runtime_weights"]
    log(
        f"weights-only update in {final}: {total['changed_words']:,} of {total['words']:,} words changed "
        f"in {len(layers)} layers"
    )
    return final


@dataclass(frozen=True)
class _Testset:
    """The images the new golden outputs are for, and the golden classes they replace (a package's)."""

    images: np.ndarray
    labels: np.ndarray
    dataset: str
    old_golden: np.ndarray | None


def _testset(target: Design, parent: Any, n_images: int, data_dir: str | Path | None) -> _Testset:
    """The package's own test images (a deployment package given), else ``n_images`` of the recorded
    dataset's test split (seeded, every class its share)."""
    if target.deploy is not None:
        images, labels, dataset, old_golden = _deploy_testset(target)
        return _Testset(images, labels, dataset, old_golden)
    in_shape = tuple(int(d) for d in parent.get_tensor_shape(parent.graph.input[0].name))[1:]
    images, labels, identity = recorded_test_images(target.compile_dir, in_shape, n_images, data_dir)
    return _Testset(np.ascontiguousarray(images, dtype=np.uint8), labels, identity.name, None)


def _destination(target: Design, checkpoint: Path, out: str | Path | None) -> Path:
    """``out``, else beside the deployment package or the design's default one; refused if not an update's."""
    if out is not None:
        final = Path(out)
    elif target.deploy is not None:
        final = target.deploy.parent / _default_name(checkpoint)
    else:
        source = Source(target.compile_dir, False, target.board, target.model_name, target.compile_info)
        final = default_out(source).parent / _default_name(checkpoint)
    final = final.absolute()
    if (final / MANIFEST).is_file():
        found = _read_json(final / MANIFEST, "a package manifest").get("format")
        if found != UPDATE_FORMAT:
            raise BnnflowError(f"refusing to replace {final}: it holds a {found or 'non-bnnflow'} package")
    if target.deploy is not None and (final == target.deploy or final.is_relative_to(target.deploy)):
        raise BnnflowError(f"refusing to write the update into the deployment package {target.deploy}")
    return final


def _runtime_weight_files(
    target: Design, checkpoint: Path, tmp: Path, data_dir: str | Path | None, n_verify: int, log: Log
) -> tuple[Any, list[dict[str, Any]]]:
    """FINN's runtime weight files for the checkpoint, verified; (write_runtime_weights' result, layers).

    A deployment package's layers must be the update's, file for file and word
    for word: finn-plus-driver writes each file to the port its name gives.
    """
    result = write_runtime_weights(
        target.compile_dir,
        checkpoint,
        tmp / UPDATE_RUNTIME_WEIGHTS,
        data_dir=data_dir,
        n_verify=n_verify,
        log=log,
    )
    layers = runtime_weight_layers(result.hardware_graph, tmp / UPDATE_RUNTIME_WEIGHTS)
    if target.deploy_manifest is not None:
        deployed = [(la["file"], la["words"]) for la in target.deploy_manifest["runtime_weights"]["layers"]]
        if deployed != [(la["file"], la["words"]) for la in layers]:
            raise BnnflowError(
                f"FINN's runtime weight files {[la['file'] for la in layers]} are not those of "
                f"{target.deploy}"
            )
    changes = {la.node: la for la in result.layers}
    for la in layers:
        change = changes[la["node"]]
        la.update(
            changed_words=change.changed_words, values=change.values, changed_values=change.changed_values
        )
    return result, layers


def _golden_outputs(tmp: Path, testset: _Testset, log: Log) -> dict[str, Any]:
    """The new golden outputs from the CPU engine's model file in ``tmp``; the manifest's testset entry."""
    images, labels = testset.images, testset.labels
    t0 = time.perf_counter()
    classes, scores, golden_source = model_golden_outputs(tmp / MODEL, images)
    (tmp / GOLDEN_CLASSES).parent.mkdir()
    (tmp / GOLDEN_CLASSES).write_bytes(classes.astype("<i4").tobytes())
    (tmp / GOLDEN_SCORES).write_bytes(scores.astype("<i4").tobytes())
    accuracy = float(np.mean(classes == np.asarray(labels)))
    changed = None if testset.old_golden is None else int(np.sum(classes != testset.old_golden))
    log(
        f"  new golden outputs for {len(images)} {testset.dataset} test images ({golden_source}) in "
        f"{time.perf_counter() - t0:.1f} s: accuracy {100 * accuracy:.2f}%"
        + ("" if changed is None else f", class changed on {changed} images")
    )
    return {
        "dataset": testset.dataset,
        "n": int(len(images)),
        "n_classes": int(scores.shape[1]),
        # which images these outputs belong to: bnnflow-board update-weights checks its package's
        "images_sha256": sha256_bytes(np.ascontiguousarray(images, dtype=np.uint8).tobytes()),
        "golden_classes": GOLDEN_CLASSES,
        "golden_scores": GOLDEN_SCORES,
        "golden_source": golden_source,
        "golden_accuracy": accuracy,
        "classes_changed": changed,
    }


def _manifest(
    target: Design, result: Any, layers: list[dict[str, Any]], testset_entry: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    """manifest.json for the files now in ``tmp``: written last, it lists every other file's sha256."""
    files = {str(p.relative_to(tmp)): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    return {
        "format": UPDATE_FORMAT,
        "version": UPDATE_VERSION,
        "bnnflow": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "board": target.board,
        "model": target.model_name,
        "checkpoint": result.checkpoint,
        "design": {
            "fingerprint": result.fingerprint,
            "compile_dir": str(target.compile_dir),
            "deploy": None if target.deploy is None else str(target.deploy),
        },
        "runtime_weights": {
            "dir": UPDATE_RUNTIME_WEIGHTS,
            "layers": layers,
            "words": sum(la["words"] for la in layers),
            "changed_words": sum(la["changed_words"] for la in layers),
            "changed_against": "the compiled design",
            "verified_images": result.verified_images,
        },
        "cpu": {"model": MODEL},
        "testset": testset_entry,
        "files": files,
    }
