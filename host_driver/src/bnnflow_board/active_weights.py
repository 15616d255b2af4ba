"""Which weights a package's design holds: the compiled ones, or the update update-weights applied.

``update-weights`` records an update only after the FPGA and the CPU engine
gave its golden outputs on the whole test set: a copy of the update package
under ``weights/<id>/`` and ``weights/active.json`` naming it, each written
under a temporary name and renamed into place. ``check``, ``bench`` and the
next ``update-weights`` read the record back here, and check the copy again
each time.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow_board.deployformat import ACTIVE_WEIGHTS, MANIFEST, WEIGHTS_DIR
from bnnflow_board.errors import BoardError
from bnnflow_board.fsutil import atomic_directory, atomic_write_text, confined
from bnnflow_board.package import Package
from bnnflow_board.update_package import Update, check_belongs, load_update, update_problems


@dataclass
class ActiveWeights:
    """The weights the package's FPGA is to hold and the outputs both engines must then give."""

    label: str
    runtime_dir: Path | None  # the runtime weight files finn-plus-driver writes; None: none in the design
    model: Path
    golden_classes: Path
    golden_scores: Path
    golden_source: str
    update: Update | None = None


def active_weights(pkg: Package) -> ActiveWeights:
    """The compiled design's, or the update recorded in ``weights/active.json`` (checked again)."""
    record_path = pkg.root / WEIGHTS_DIR / ACTIVE_WEIGHTS
    if not record_path.is_file():
        rw = pkg.manifest.get("runtime_weights")
        ts = pkg.manifest["testset"]
        return ActiveWeights(
            "the compiled design's",
            pkg.root / rw["dir"] if rw else None,
            pkg.root / pkg.manifest["cpu"]["model"],
            pkg.root / ts["golden_classes"],
            pkg.root / ts["golden_scores"],
            str(ts.get("golden_source", "?")),
        )
    try:
        record = json.loads(record_path.read_text())
        upd = load_update(confined(pkg.root, record["path"], record_path))
    except (OSError, ValueError, KeyError, BoardError) as exc:
        raise BoardError(f"{record_path} names no usable update: {exc}") from None
    problems = update_problems(upd)
    if problems:
        raise BoardError(f"the active weights {upd.root} are damaged: {problems[0]}")
    if upd.manifest_sha256 != record.get("manifest_sha256"):
        raise BoardError(f"the active weights {upd.root}: {MANIFEST} changed after the update was applied")
    check_belongs(pkg, upd)
    return ActiveWeights(
        f"update {upd.id}",
        upd.runtime_dir,
        upd.model,
        upd.golden("golden_classes"),
        upd.golden("golden_scores"),
        str(upd.manifest["testset"].get("golden_source", "?")),
        upd,
    )


def record_active(pkg: Package, upd: Update, report: dict[str, Any]) -> Path:
    """Copy the update into weights/<id>/ and point weights/active.json at it, each renamed into place."""
    weights = pkg.root / WEIGHTS_DIR
    weights.mkdir(exist_ok=True)
    dst = weights / upd.id
    if dst.exists() and not (dst / MANIFEST).is_file():
        shutil.rmtree(dst)
    if not dst.exists():
        with atomic_directory(dst) as tmp:
            for rel in [*upd.manifest["files"], MANIFEST]:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(upd.root / rel, tmp / rel)
    copied = load_update(dst)
    if copied.manifest_sha256 != upd.manifest_sha256 or update_problems(copied):
        raise BoardError(f"{dst} does not hold this update; remove it and run update-weights again")
    record = {
        "path": f"{WEIGHTS_DIR}/{upd.id}",
        "manifest_sha256": upd.manifest_sha256,
        "applied": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "from": str(upd.root),
        "report": report,
    }
    atomic_write_text(weights / ACTIVE_WEIGHTS, json.dumps(record, indent=2) + "\n")
    return dst
