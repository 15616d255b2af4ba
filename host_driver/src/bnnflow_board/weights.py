"""``bnnflow-board update-weights``: a retrained checkpoint onto the FPGA, without a new bitstream.

A design compiled with ``--runtime-weights`` keeps every MVAU's weights and
every Thresholding layer's thresholds in memories that finn-plus-driver can
write through AXI-lite. ``bnnflow package --weights-only`` writes an update
package for such a design (FINN's runtime weight files, the CPU engine's
model file and the new golden outputs for the deployment package's test
set). ``update_weights``:

1. checks the deployment package as ``check`` does, the update package's
   manifest and checksums, and that the update belongs to this design: a
   design with runtime-writable layers, the same board, the same writable
   layers with the same memory layout, the same structure fingerprint
   (``bnnflow.hls.runtime_weights.structure_fingerprint``) and golden outputs
   computed for this package's test images;
2. programs the FPGA as ``bench`` does (finn-plus-driver writes the weights the
   package records as active while the overlay loads), then writes the update
   into the running FPGA with finn-plus-driver's ``load_runtime_weights``,
   reads every word back (a difference is a ``WeightReadbackError``) and runs
   the flush frame; from Python, an application's own ``FpgaRunner`` can be
   passed instead, and its FPGA is updated as it runs;
3. classifies the test set on the FPGA and with the CPU engine (the update's
   model file) and requires both to equal the NEW golden outputs on every
   image (scores too, for the engine), reporting how many also equal the old
   ones;
4. only then records the update as the package's active weights: a copy of
   the update package under ``weights/<id>/`` and ``weights/active.json``,
   each written under a temporary name and renamed into place. ``bench``
   and ``check`` use the active weights from then on (bench programs the
   FPGA and finn-plus-driver writes them).

Where a step fails, nothing in the deployment package changes and the error
says what the FPGA holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board import __version__
from bnnflow_board.errors import BoardError
from bnnflow_board.package import MANIFEST, Package, sha256
from bnnflow_board.report import agreement_lines

UPDATE_FORMAT = "bnnflow-weights"
UPDATE_VERSION = 1
WEIGHTS_DIR = "weights"
ACTIVE = "active.json"


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
    raw = mf.read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BoardError(f"{mf} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != UPDATE_FORMAT:
        kind = manifest.get("format") if isinstance(manifest, dict) else None
        hint = " (a deployment package: give it as DEPLOY_DIR)" if kind == "bnnflow-deploy" else ""
        raise BoardError(f"{mf} is not a weights-only update manifest{hint}")
    if manifest.get("version") != UPDATE_VERSION:
        raise BoardError(
            f"{mf}: update format {manifest.get('version')!r}; this bnnflow-board reads {UPDATE_VERSION}"
        )
    for key in ("board", "design", "runtime_weights", "cpu", "testset", "files"):
        if key not in manifest:
            raise BoardError(f"{mf} lacks {key!r}: the update package is damaged")
    try:
        named = [*manifest["files"], manifest["runtime_weights"]["dir"], manifest["cpu"]["model"]]
        named += [manifest["testset"][k] for k in ("golden_classes", "golden_scores")]
    except (KeyError, TypeError):
        raise BoardError(f"{mf} is incomplete: the update package is damaged") from None
    for rel in named:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BoardError(f"{mf} names {rel}, outside the update package")
    return Update(root.absolute(), manifest, hashlib.sha256(raw).hexdigest())


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


def _layer_key(layer: dict[str, Any]) -> dict[str, Any]:
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
    ours, theirs = [_layer_key(la) for la in rw["layers"]], [_layer_key(la) for la in upd.layers]
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
    mine = pkg.manifest.get("design", {}).get("fingerprint")
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
    record_path = pkg.root / WEIGHTS_DIR / ACTIVE
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
        upd = load_update(pkg.root / record["path"])
    except (OSError, ValueError, KeyError, BoardError) as exc:
        raise BoardError(f"{record_path} names no usable update: {exc}") from None
    problems = update_problems(upd)
    if problems:
        raise BoardError(f"the active weights {upd.root} are damaged: {problems[0]}")
    if upd.manifest_sha256 != record.get("manifest_sha256"):
        raise BoardError(f"the active weights {upd.root}: manifest.json changed after the update was applied")
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


def _words(folder: Path | None) -> dict[str, list[str]]:
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p.read_text().split() for p in sorted(folder.glob("*.dat"))}


def _record(pkg: Package, upd: Update, report: dict[str, Any]) -> Path:
    """Copy the update into weights/<id>/ and point weights/active.json at it, each renamed into place."""
    weights = pkg.root / WEIGHTS_DIR
    weights.mkdir(exist_ok=True)
    dst = weights / upd.id
    if dst.exists() and not (dst / MANIFEST).is_file():
        shutil.rmtree(dst)
    if not dst.exists():
        tmp = Path(tempfile.mkdtemp(dir=weights, prefix=f".{upd.id}-"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the copy from other users
        try:
            for rel in [*upd.manifest["files"], MANIFEST]:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(upd.root / rel, tmp / rel)
            os.replace(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
    fd, tmp_name = tempfile.mkstemp(dir=weights, prefix=f".{ACTIVE}.")
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, weights / ACTIVE)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return dst


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def format_update(r: dict[str, Any]) -> str:
    sim = " (simulated board)" if r["simulated_board"] else ""
    n = r["testset"]["n"]
    lines = [
        f"{'runtime weight file':<34} {'kind':<10} {'words':>7} {'changed':>8} {'vs compiled':>12}",
    ]
    for la in r["layers"]:
        lines.append(
            f"{la['file']:<34} {la['kind']:<10} {la['words']:>7,} {la['changed_words']:>8,} "
            f"{la['changed_vs_compiled']:>12,}"
        )
    t = r["words"]
    lines.append(
        f"{'total':<34} {'':<10} {t['written']:>7,} {t['changed']:>8,} {t['changed_vs_compiled']:>12,}"
    )
    lines.append(
        f"written into the FPGA{sim} and read back: {t['written']:,} words in {len(r['layers'])} layers, "
        f"{t['changed']:,} changed from {r['before']} weights"
    )
    fpga = r["fpga"]
    lines.append(
        f"FPGA{sim}: {fpga['agree_new']}/{n} classes equal the new golden outputs "
        f"({fpga['agree_old']}/{n} the previous ones)"
    )
    cpu = r["cpu"]
    if cpu.get("available"):
        lines.append(
            f"CPU engine ({r['model_file']}): {cpu['agree_classes']}/{n} classes, {cpu['agree_scores']}/{n} "
            "scores equal the new golden outputs"
        )
    else:
        lines.append(f"CPU engine: not run: {cpu.get('why', '?')}")
    lines += agreement_lines(fpga, cpu, r["agreement"], "the new golden outputs")
    return "\n".join(lines)


def update_weights(
    deploy: str | Path,
    update: str | Path,
    sim: Any = None,
    timeout_s: float | None = None,
    cpu: bool = True,
    runner: Any = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Apply a weights-only update to the FPGA of a deployment package; returns the report.

    ``sim``: a ``bench.SimulatedBoard`` to run on the simulated board.
    ``runner``: an ``overlay.FpgaRunner`` whose FPGA already runs this
    package's design (not programmed again; with ``sim`` where it runs on the
    simulated board); by default the FPGA is programmed with the package's
    bitfile first.
    """
    from bnnflow_board.bench import _cpu_engine, _simulated_device, check_package, first_mismatch, fpga_input
    from bnnflow_board.checks import FAIL
    from bnnflow_board.overlay import FpgaRunner

    work = Path(tempfile.mkdtemp(prefix="bnnflow-board-update-"))
    device = engine = None
    own_runner = runner is None
    try:
        pkg, board, bitfile, checks = check_package(deploy, sim, work)
        failed = [c for c in checks if c.status == FAIL]
        if failed:
            raise BoardError(f"check failed: {failed[0].name}: {failed[0].detail}")
        upd = load_update(update)
        problems = update_problems(upd)
        if problems:
            raise BoardError(f"update package {upd.root}: {problems[0]}")
        check_belongs(pkg, upd)
        before = active_weights(pkg)
        log(
            f"bnnflow-board {__version__}: update {upd.id} of {pkg.manifest.get('model')} on "
            f"{board.describe()}: {upd.manifest.get('checkpoint')}"
        )

        old_words, new_words = _words(before.runtime_dir), _words(upd.runtime_dir)
        layers = []
        for la in upd.layers:
            new, old = new_words.get(la["file"], []), old_words.get(la["file"], [])
            if len(new) != la["words"] or len(old) != len(new):
                raise BoardError(
                    f"{la['file']}: {len(new)} words in the update, {len(old)} in {before.label} weights"
                )
            layers.append(
                {
                    "file": la["file"],
                    "node": la["node"],
                    "kind": la["kind"],
                    "words": len(new),
                    "changed_words": sum(a != b for a, b in zip(old, new, strict=True)),
                    "changed_vs_compiled": int(la.get("changed_words", 0)),
                }
            )

        if runner is None:
            if sim is not None:
                device = _simulated_device(pkg, sim, work, log)
            if bitfile is None:
                raise BoardError("the package has no bitfile")
            base = timeout_s if timeout_s is not None else (600.0 if board.simulated else 5.0)
            runner = FpgaRunner(
                Path(bitfile),
                pkg.driver,
                device=device,
                timeout_s=base,
                per_frame_s=2.0 if board.simulated else 0.01,
                runtime_weight_dir=before.runtime_dir,
            )
        written = runner.load_weights(upd.runtime_dir)
        if sorted(f for f, _ in written) != sorted(la["file"] for la in layers):
            raise BoardError(
                f"finn-plus-driver wrote {written}, the update holds {[la['file'] for la in layers]}"
            )

        ts = pkg.testset()
        new_classes = np.fromfile(upd.golden("golden_classes"), dtype="<i4").astype(np.int64)
        new_scores = np.fromfile(upd.golden("golden_scores"), dtype="<i4").astype(np.int64)
        n, k = len(ts.images), int(upd.manifest["testset"]["n_classes"])
        if new_classes.size != n or new_scores.size != n * k:
            raise BoardError(f"the update's golden outputs do not hold {n} images of {k} classes")
        new_scores = new_scores.reshape(n, k)
        old_classes = np.fromfile(before.golden_classes, dtype="<i4").astype(np.int64)

        frames = fpga_input(pkg, ts.images)
        chunk = 1000
        classes = np.concatenate([runner.classify(frames[i : i + chunk]) for i in range(0, n, chunk)])
        fpga = {
            "accuracy": float(np.mean(classes == ts.labels)),
            "agree_new": int(np.sum(classes == new_classes)),
            "agree_old": int(np.sum(classes == old_classes)),
            "first_mismatch": first_mismatch(new_classes, classes, ts.labels, "the FPGA"),
        }
        report_cpu: dict[str, Any] = {"available": False}
        if cpu:
            engine, why = _cpu_engine(pkg, board, work, upd.model)
            if engine is None:
                report_cpu["why"] = why
            else:
                cls, scores = engine.run(ts.images, threads=0)
                report_cpu = {
                    "available": True,
                    "agree_classes": int(np.sum(cls == new_classes)),
                    "agree_scores": int(np.sum(np.all(scores == new_scores, axis=1))),
                    "first_mismatch": first_mismatch(new_classes, cls, ts.labels, "the CPU engine")
                    or first_mismatch(new_scores, scores, ts.labels, "the CPU engine's", scores=True),
                }
        else:
            report_cpu["why"] = "skipped (--no-cpu)"
        ok = fpga["first_mismatch"] is None and (
            not report_cpu["available"] or report_cpu["first_mismatch"] is None
        )
        report = {
            "bnnflow_board": __version__,
            "simulated_board": board.simulated,
            "update": {"id": upd.id, "path": str(upd.root), "checkpoint": upd.manifest.get("checkpoint")},
            "before": before.label,
            "layers": layers,
            "words": {
                "written": sum(la["words"] for la in layers),
                "changed": sum(la["changed_words"] for la in layers),
                "changed_vs_compiled": sum(la["changed_vs_compiled"] for la in layers),
            },
            "testset": {"n": n, "dataset": ts.dataset},
            "fpga": fpga,
            "cpu": report_cpu,
            "model_file": str(upd.model.relative_to(upd.root)),
            "agreement": "100%" if ok else "MISMATCH",
        }
        if sim is not None and device is not None:
            report["simulated_board_fpga"] = {
                "exec": device.fabric.exec_mode,
                "design": str(device.fabric.design),
            }
        log(format_update(report))
        if not ok:
            first = fpga["first_mismatch"] or report_cpu["first_mismatch"]
            raise BoardError(
                f"after the update the outputs differ from its golden outputs: {first['text']}; the FPGA "
                f"holds the update's weights, {pkg.root} still records {before.label} weights"
            )
        dst = _record(pkg, upd, report)
        log(f"active weights of {pkg.root}: {dst.relative_to(pkg.root)} (bench loads them from now on)")
        return report
    finally:
        if engine is not None:
            engine.close()
        if own_runner and device is not None:
            device.close()
        shutil.rmtree(work, ignore_errors=True)
