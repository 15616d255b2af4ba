"""A weights-only update package (``bnnflow package --weights-only``), read and matched to a design.

An update belongs to a deployment package when the design has
runtime-writable layers, is for the same board, has the same writable layers
with the same memory layout and the same structure fingerprint
(``bnnflow.hls.runtime_weights.structure_fingerprint``), and the update's
golden outputs were computed for the package's test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow_board.deployformat import (
    FORMAT,
    MANIFEST,
    UPDATE_FORMAT,
    UPDATE_MANIFEST_KEYS,
    UPDATE_VERSION,
    sha256,
    sha256_bytes,
)
from bnnflow_board.errors import BoardError
from bnnflow_board.fsutil import confined
from bnnflow_board.manifest_types import UPDATE_TYPES, read_manifest
from bnnflow_board.package import Package


@dataclass
class Update:
    """A weights-only update package (``bnnflow package --weights-only``)."""

    root: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def id(self) -> str:
        return self.manifest_sha256[:12]

    @property
    def runtime_dir(self) -> Path:
        return self.root / self.manifest["runtime_weights"]["dir"]

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest["runtime_weights"]["layers"])

    @property
    def model(self) -> Path:
        return self.root / self.manifest["cpu"]["model"]

    def golden(self, key: str) -> Path:
        return self.root / self.manifest["testset"][key]


def load_update(path: str | Path) -> Update:
    """The update package's manifest, checked for format; a one-line error for anything else."""
    root = Path(path)
    if not root.is_dir():
        raise BoardError(f"{root} is not a folder: give the update package (bnnflow package --weights-only)")
    mf = root / MANIFEST
    if not mf.is_file():
        raise BoardError(f"{root} is not a bnnflow update package: no {MANIFEST}")
    manifest, raw = read_manifest(
        mf,
        (UPDATE_FORMAT, UPDATE_VERSION),
        UPDATE_MANIFEST_KEYS,
        UPDATE_TYPES,
        ("weights-only update manifest", "update", "the update package"),
        foreign={FORMAT: " (a deployment package: give it as DEPLOY_DIR)"},
    )
    named = [*manifest["files"], manifest["runtime_weights"]["dir"], manifest["cpu"]["model"]]
    for rel in named + [manifest["testset"][k] for k in ("golden_classes", "golden_scores")]:
        confined(root, rel, mf, "the update package")
    return Update(root.absolute(), manifest, sha256_bytes(raw))


def update_problems(upd: Update) -> list[str]:
    """Files of the update's manifest that are missing or changed, and weight files it does not list."""
    out = []
    for rel, digest in sorted(upd.manifest["files"].items()):
        p = upd.root / rel
        if not p.is_file():
            out.append(f"{rel} is missing")
        elif sha256(p) != digest:
            out.append(f"{rel} does not match its sha256 (changed after packaging)")
    listed = set(upd.manifest["files"])
    for p in sorted(upd.runtime_dir.glob("*.dat")) if upd.runtime_dir.is_dir() else []:
        rel = str(p.relative_to(upd.root))
        if rel not in listed:  # the driver would write it too
            out.append(f"{rel} is not part of the update")
    return out


# What an update's layer must share with the design's, in the order a difference is named:
# FINN's file and its words, then the memory layout behind the layer's AXI-lite port.
LAYER_KEYS = ("file", "node", "kind", "datatype", "pe", "simd", "rows", "cols", "words", "fold",
              "slot_words", "memory words", "aperture")  # fmt: skip


def layer_key(layer: dict[str, Any]) -> dict[str, Any]:
    layout = dict(layer.get("layout", {}))
    layout["memory words"] = layout.pop("words", None)
    return {
        **layout,
        "file": layer["file"],
        "node": layer["node"],
        "kind": layer["kind"],
        "words": layer["words"],
    }


def check_belongs(pkg: Package, upd: Update) -> None:
    """The update is for this package's design and test set, or a one-line error naming the difference."""
    rw = pkg.manifest.get("runtime_weights")
    if not rw:
        raise BoardError(
            f"{pkg.root} holds a design without runtime-writable weights (compiled without "
            "--runtime-weights, or packaged by an older bnnflow): its weights are fixed in the bitstream"
        )
    if str(upd.manifest["board"]) != pkg.board:
        raise BoardError(f"the update is for {upd.manifest['board']}, the package for {pkg.board}")
    ours, theirs = [layer_key(la) for la in rw["layers"]], [layer_key(la) for la in upd.layers]
    if len(ours) != len(theirs):
        raise BoardError(
            f"the update is for another design: {len(theirs)} runtime-writable layers, this design "
            f"has {len(ours)}"
        )
    for a, b in zip(ours, theirs, strict=True):
        for key in [*LAYER_KEYS, *sorted((a.keys() | b.keys()) - set(LAYER_KEYS))]:
            if a.get(key) != b.get(key):
                raise BoardError(
                    f"the update is for another design: {a['file']} {key} is {b.get(key)!r} in the update, "
                    f"{a.get(key)!r} in this design"
                )
    mine = (pkg.manifest.get("design") or {}).get("fingerprint")
    if upd.manifest["design"].get("fingerprint") != mine:
        raise BoardError(
            "the update is for another design: its structure fingerprint differs from this package's "
            f"({str(upd.manifest['design'].get('fingerprint'))[:12]} vs {str(mine)[:12]})"
        )
    ts, uts = pkg.manifest["testset"], upd.manifest["testset"]
    if uts.get("images_sha256") != pkg.manifest["files"].get(ts["images"]) or int(uts.get("n", -1)) != int(
        ts["n"]
    ):
        raise BoardError(
            "the update's golden outputs are for other test images than this package's: make it with "
            f"--design {pkg.root}"
        )
    if int(uts.get("n_classes", -1)) != int(ts["n_classes"]):
        raise BoardError(f"the update has {uts.get('n_classes')} classes, the package {ts['n_classes']}")
