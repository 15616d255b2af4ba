"""Reading a bnnflow deployment package (written by ``bnnflow package``) on the board."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board.deployformat import (
    FORMAT,
    FORMAT_VERSION,
    LOCAL_DIRS,
    MANIFEST,
    MANIFEST_KEYS,
    FormatError,
    labels_dtype,
    sha256,
)
from bnnflow_board.errors import BoardError
from bnnflow_board.fsutil import confined
from bnnflow_board.hostbits import apply_host_ops
from bnnflow_board.manifest_types import MANIFEST_TYPES, read_manifest


@dataclass
class TestSet:
    images: np.ndarray  # uint8 (N, C, H, W), as the dataset stores them
    labels: np.ndarray  # int64 (N,)
    golden_classes: np.ndarray  # int64 (N,)
    golden_scores: np.ndarray  # int64 (N, n_classes)
    golden_source: str
    dataset: str
    class_names: list[str]  # one per class: the dataset's names, else the class indices


@dataclass
class Package:
    root: Path
    manifest: dict[str, Any]

    @property
    def board(self) -> str:
        return str(self.manifest["board"])

    @property
    def driver(self) -> dict[str, Any]:
        """settings.json's driver_information, as finn-plus-driver's CLI reads it, with the types of
        every field the board reads checked (a one-line error names the first that is wrong)."""
        path = self.root / self.manifest["driver"]["settings"]
        try:
            info = json.loads(path.read_text())["driver_information"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            raise BoardError(f"{self.root}: driver/settings.json is missing or not FINN's") from None
        problem = _driver_problem(info)
        if problem:
            raise BoardError(f"{path}: driver_information.{problem}")
        return dict(info)

    @property
    def bitfile(self) -> Path | None:
        bf = self.manifest.get("bitfile", {})
        return self.root / bf["bit"] if bf.get("present") else None

    def fpga_input(self, images: np.ndarray) -> np.ndarray:
        """Dataset images in the accelerator's input layout (the host-side ops FINN left, as packaged)."""
        try:
            return np.ascontiguousarray(apply_host_ops(images, self.manifest["fpga_input"]["from_images"]))
        except (FormatError, ValueError, TypeError) as exc:  # numpy's, for a perm or shape that does not fit
            raise BoardError(f"{self.root / MANIFEST}: fpga_input.from_images: {exc}") from None

    def path(self, key: str) -> Path:
        return self.root / self.manifest["testset"][key]

    def testset(self, golden: tuple[Path, Path, str] | None = None) -> TestSet:
        """The test set; ``golden``: (classes, scores, source) of other weights than the compiled ones."""
        ts = self.manifest["testset"]
        n, shape, k = int(ts["n"]), [int(d) for d in ts["image_shape"]], int(ts["n_classes"])

        def read(key: str, dtype: str, count: int) -> np.ndarray:
            raw = np.fromfile(self.path(key), dtype=dtype)
            if raw.size != count:
                raise BoardError(f"{self.path(key)} holds {raw.size} values, the manifest says {count}")
            return raw

        images = read("images", "u1", n * int(np.prod(shape))).reshape(n, *shape)
        if golden is None:
            classes, scores = read("golden_classes", "<i4", n), read("golden_scores", "<i4", n * k)
            source = str(ts.get("golden_source", "?"))
        else:
            classes, scores = np.fromfile(golden[0], dtype="<i4"), np.fromfile(golden[1], dtype="<i4")
            if classes.size != n or scores.size != n * k:
                raise BoardError(
                    f"{golden[0].parent}: golden outputs for {classes.size} images, the test set has {n}"
                )
            source = golden[2]
        try:
            dtype = labels_dtype(str(ts["labels"]))
        except FormatError as exc:
            raise BoardError(f"{self.root / MANIFEST}: {exc}") from None
        labels = read("labels", dtype, n).astype(np.int64)
        bad = np.flatnonzero(labels >= k)
        if bad.size:
            raise BoardError(
                f"{self.path('labels')}: label {int(labels[bad[0]])} of image {int(bad[0])} is not one of "
                f"the {k} classes"
            )
        names = ts.get("class_names") or [str(i) for i in range(k)]
        if len(names) != k:
            raise BoardError(f"{self.root / MANIFEST}: {len(names)} class names for {k} classes")
        return TestSet(
            images=images,
            labels=labels,
            golden_classes=classes.astype(np.int64),
            golden_scores=scores.astype(np.int64).reshape(n, k),
            golden_source=source,
            dataset=str(ts.get("dataset", "?")),
            class_names=list(names),
        )


def _is_shape_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            for shape in value
        )
    )


def _driver_problem(info: Any) -> str | None:
    """What is wrong with the fields of FINN's driver settings that the board reads, or None."""
    if not isinstance(info, dict):
        return "is not an object"
    if not isinstance(info.get("platform"), str):
        return "platform must be a string"
    clock = info.get("fclk_mhz", 100.0)
    if isinstance(clock, bool) or not isinstance(clock, int | float) or not 0 < clock < 1e4:
        return f"fclk_mhz must be a clock in MHz, not {clock!r}"
    shapes = info.get("io_shape_dict")
    if not isinstance(shapes, dict):
        return "io_shape_dict must be an object"
    for key in ("ishape_normal", "oshape_normal", "ishape_folded", "oshape_folded", "ishape_packed",
                "oshape_packed"):  # fmt: skip
        if key in shapes and not _is_shape_list(shapes[key]):
            return f"io_shape_dict.{key} must be a list of shapes (lists of whole numbers)"
    for key in ("ishape_normal", "oshape_normal"):
        if key not in shapes:
            return f"io_shape_dict has no {key}"
    for key in ("idt", "odt", "idma_names", "odma_names"):
        value = shapes.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"io_shape_dict.{key} must be a list of strings"
    return None


def load_package(path: str | Path) -> Package:
    """The package's manifest, checked for format, types and paths; a one-line error for anything else."""
    root = Path(path)
    if not root.is_dir():
        raise BoardError(
            f"{root} is not a folder: give the deployment package (bitstreams/<model>-<board>/deploy)"
        )
    mf = root / MANIFEST
    if not mf.is_file():
        hint = (
            " (FINN's own deploy/ folder: package it with `bnnflow package`)"
            if (root / "driver").is_dir()
            else ""
        )
        raise BoardError(f"{root} is not a bnnflow deployment package: no {MANIFEST}{hint}")
    manifest, _ = read_manifest(
        mf,
        (FORMAT, FORMAT_VERSION),
        MANIFEST_KEYS,
        MANIFEST_TYPES,
        ("bnnflow deployment manifest", "package", "the package"),
    )
    if manifest["bitfile"]["present"] and not isinstance(manifest["bitfile"].get("bit"), str):
        raise BoardError(f"{mf}: bitfile.bit must be a string when bitfile.present is true")
    for rel in manifest_paths(manifest):
        confined(root, rel, mf)
    return Package(root.absolute(), manifest)


TESTSET_FILES = ("images", "labels", "golden_classes", "golden_scores")


def manifest_paths(manifest: dict[str, Any]) -> list[str]:
    """Every path in the package the manifest names, each to be confined to the package."""
    ts, bf, rw = manifest["testset"], manifest["bitfile"], manifest.get("runtime_weights")
    named = [*manifest["files"], manifest["driver"]["settings"], manifest["cpu"]["sources"]]
    named += [manifest["cpu"]["model"], *(ts[k] for k in TESTSET_FILES)]
    named += [bf[k] for k in ("bit", "hwh") if bf["present"] and isinstance(bf.get(k), str)]
    named += [manifest["timing_report"]] if manifest.get("timing_report") else []
    return named + ([rw["dir"]] if rw else [])


def checksum_problems(pkg: Package) -> tuple[list[str], list[str]]:
    """(errors, notes): a listed file missing or changed is an error, an unlisted file a note."""
    errors, notes = [], []
    listed: dict[str, str] = pkg.manifest["files"]
    for rel, digest in sorted(listed.items()):
        p = pkg.root / rel
        if not p.is_file():
            errors.append(f"{rel} is missing")
        elif sha256(p) != digest:
            errors.append(f"{rel} does not match its sha256 (changed after packaging)")
    for p in sorted(pkg.root.rglob("*")):
        rel = p.relative_to(pkg.root)
        if p.is_file() and rel.parts[0] not in LOCAL_DIRS and str(rel) != MANIFEST and str(rel) not in listed:
            notes.append(f"{rel} is not part of the package")
    return errors, notes
