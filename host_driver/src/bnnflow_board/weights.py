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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board import __version__
from bnnflow_board.active_weights import ActiveWeights, active_weights, record_active
from bnnflow_board.agreement import engine_mismatch, first_mismatch, verdict
from bnnflow_board.errors import BoardError
from bnnflow_board.package import Package, TestSet
from bnnflow_board.report import agreement_lines
from bnnflow_board.session import Session, check_timeout
from bnnflow_board.update_package import Update, check_belongs, load_update, update_problems


def _words(folder: Path | None) -> dict[str, list[str]]:
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p.read_text().split() for p in sorted(folder.glob("*.dat"))}


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

    ``sim``: a ``session.SimulatedBoard`` to run on the simulated board.
    ``runner``: an ``overlay.FpgaRunner`` whose FPGA already runs this
    package's design (not programmed again; with ``sim`` where it runs on the
    simulated board); by default the FPGA is programmed with the package's
    bitfile first.
    """
    check_timeout(timeout_s)
    with Session(deploy, sim, prefix="bnnflow-board-update-") as session:
        session.require_checks()
        pkg = session.pkg
        upd = _checked_update(pkg, update)
        before = active_weights(pkg)
        log(
            f"bnnflow-board {__version__}: update {upd.id} of {pkg.manifest.get('model')} on "
            f"{session.board.describe()}: {upd.manifest.get('checkpoint')}"
        )
        layers = _layer_changes(upd, before)
        if runner is None:
            runner = session.open_fpga(before.runtime_dir, timeout_s, log)
        _write_into_fpga(runner, upd, layers)
        ts = pkg.testset()
        new_classes, new_scores = _new_golden(upd, len(ts.images))
        old_classes = np.fromfile(before.golden_classes, dtype="<i4").astype(np.int64)
        classes = runner.classify_all(pkg.fpga_input(ts.images), 1000)
        fpga = {
            "accuracy": float(np.mean(classes == ts.labels)),
            "agree_new": int(np.sum(classes == new_classes)),
            "agree_old": int(np.sum(classes == old_classes)),
            "first_mismatch": first_mismatch(
                new_classes, classes, ts.labels, "the FPGA", names=ts.class_names
            ),
        }
        report_cpu = (
            _cpu_against(session, upd, ts, new_classes, new_scores)
            if cpu
            else {"available": False, "why": "skipped (--no-cpu)"}
        )
        report = _report(session, upd, before, layers, ts, fpga, report_cpu)
        log(format_update(report))
        if report["agreement"] != "100%":
            first = fpga["first_mismatch"] or report_cpu["first_mismatch"]
            raise BoardError(
                f"after the update the outputs differ from its golden outputs: {first['text']}; the FPGA "
                f"holds the update's weights, {pkg.root} still records {before.label} weights"
            )
        dst = record_active(pkg, upd, report)
        log(f"active weights of {pkg.root}: {dst.relative_to(pkg.root)} (bench loads them from now on)")
        return report


def _checked_update(pkg: Package, update: str | Path) -> Update:
    """The update package, intact and for this package's design, or a one-line error."""
    upd = load_update(update)
    problems = update_problems(upd)
    if problems:
        raise BoardError(f"update package {upd.root}: {problems[0]}")
    check_belongs(pkg, upd)
    return upd


def _layer_changes(upd: Update, before: ActiveWeights) -> list[dict[str, Any]]:
    """Per writable layer: its words, and how many the update changes from the weights held now and
    from the compiled ones."""
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
    return layers


def _write_into_fpga(runner: Any, upd: Update, layers: list[dict[str, Any]]) -> None:
    """finn-plus-driver writes the update's files into the running FPGA and reads every word back."""
    written = runner.load_weights(upd.runtime_dir)
    if sorted(f for f, _ in written) != sorted(la["file"] for la in layers):
        raise BoardError(
            f"finn-plus-driver wrote {written}, the update holds {[la['file'] for la in layers]}"
        )


def _new_golden(upd: Update, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The update's golden (classes, scores) for the package's n test images."""
    new_classes = np.fromfile(upd.golden("golden_classes"), dtype="<i4").astype(np.int64)
    new_scores = np.fromfile(upd.golden("golden_scores"), dtype="<i4").astype(np.int64)
    k = int(upd.manifest["testset"]["n_classes"])
    if new_classes.size != n or new_scores.size != n * k:
        raise BoardError(f"the update's golden outputs do not hold {n} images of {k} classes")
    return new_classes, new_scores.reshape(n, k)


def _cpu_against(
    session: Session, upd: Update, ts: TestSet, new_classes: np.ndarray, new_scores: np.ndarray
) -> dict[str, Any]:
    """The CPU engine running the update's model file against the update's golden outputs."""
    engine, why = session.open_cpu_engine(upd.model)
    if engine is None:
        return {"available": False, "why": why}
    cls, scores = engine.run(ts.images, threads=0)
    return {
        "available": True,
        "agree_classes": int(np.sum(cls == new_classes)),
        "agree_scores": int(np.sum(np.all(scores == new_scores, axis=1))),
        "first_mismatch": engine_mismatch(cls, scores, new_classes, new_scores, ts.labels, ts.class_names),
    }


def _report(
    session: Session, upd: Update, before: ActiveWeights, layers: list[dict[str, Any]], ts: TestSet,
    fpga: dict[str, Any], report_cpu: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    report = {
        "bnnflow_board": __version__,
        "simulated_board": session.board.simulated,
        "update": {"id": upd.id, "path": str(upd.root), "checkpoint": upd.manifest.get("checkpoint")},
        "before": before.label,
        "layers": layers,
        "words": {
            "written": sum(la["words"] for la in layers),
            "changed": sum(la["changed_words"] for la in layers),
            "changed_vs_compiled": sum(la["changed_vs_compiled"] for la in layers),
        },
        "testset": {"n": len(ts.images), "dataset": ts.dataset},
        "fpga": fpga,
        "cpu": report_cpu,
        "model_file": str(upd.model.relative_to(upd.root)),
        "agreement": "100%" if verdict(fpga, report_cpu) else "MISMATCH",
    }
    if session.device is not None:
        report["simulated_board_fpga"] = {
            "exec": session.device.fabric.exec_mode,
            "design": str(session.device.fabric.design),
        }
    return report
