"""Reading the report ``bnnflow-board bench`` wrote (``bench.json``) on a board or on the simulated board.

The report is checked before anything is measured: it must be a
bnnflow-board bench report, for a package of the same board, and for the same
design. The design is recognised by the sha256 of the CPU engine's model file
(``model.bnn``), which the package's manifest lists and bnnflow-board copies
into the report (``package.model_sha256``): the same binary weights and
integer thresholds as the compile folder's, or another design.

A report from the simulated board stays labelled as such: its "FPGA" is FINN
executing the compiled design on the host, and its "ARM CPU" is the host's
CPU, so none of its times are a board's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bnnflow_board.deployformat import BENCH_DIR, BENCH_REPORT, REPORT_KEYS, REPORT_MODEL_SHA256, same_board

from bnnflow.errors import BnnflowError


class _NotAReport(Exception):
    pass


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            raise _NotAReport(f"no {'.'.join(keys)}")
        d = d[key]
    return d


def _number(d: Any, *keys: str) -> float:
    value = _get(d, *keys)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _NotAReport(f"{'.'.join(keys)} is not a number")
    return float(value)


def _timing(entry: Any) -> dict[str, Any]:
    return {
        "engine": str(_get(entry, "engine")),
        "mode": str(_get(entry, "mode")),
        "batch": int(_number(entry, "batch")),
        "threads": entry.get("threads"),
        "repeats": int(_number(entry, "repeats")),
        "median_ms": _number(entry, "median_ms"),
        "p99_ms": _number(entry, "p99_ms"),
        "images_per_s": _number(entry, "throughput_fps"),
    }


def _series(timings: list[dict[str, Any]], engine: str, mode: str | None) -> dict[str, Any] | None:
    """One engine's (and mode's) figures: throughput at its largest batch, latency at batch 1."""
    rows = [t for t in timings if t["engine"] == engine and (mode is None or t["mode"] == mode)]
    if not rows:
        return None
    big = max(rows, key=lambda t: t["batch"])
    one = next((t for t in rows if t["batch"] == 1), None)
    return {
        "mode": big["mode"],
        "batch": big["batch"],
        "threads": big["threads"],
        "images_per_s": big["images_per_s"],
        "repeats": big["repeats"],
        "latency_batch1_ms": None
        if one is None
        else {
            "median": one["median_ms"],
            "p99": one["p99_ms"],
            "mode": one["mode"],
            "repeats": one["repeats"],
        },
    }


def _c_loop(loop: Any) -> dict[str, Any] | None:
    """The board engine's own C timing loop (``bnnflow-cpu bench`` on the board), where it ran."""
    if not loop or "why" in loop:
        return None  # older reports have none; where it did not run, the board's report says why
    rates = {int(_number(x, "threads")): _number(x, "images_per_s") for x in _get(loop, "throughput")}
    if not rates:
        raise _NotAReport("cpu.c_loop has no throughput")
    return {
        "kernels": str(_get(loop, "kernels")),
        "runs": int(_number(loop, "runs")),
        "latency_ms": {k: _number(loop, "latency_us", k) / 1000.0 for k in ("median", "p99")},
        "batch": int(_number(loop, "batch")),
        "images_per_s_1_thread": rates.get(1),
        "threads": max(rates),
        "images_per_s_all": rates[max(rates)],
    }


def read_board_report(path: str | Path, design_board: str, model_sha256: str) -> dict[str, Any]:
    """The figures of a ``bnnflow-board bench`` report for this design, or a one-line error."""
    path = Path(path)
    if path.is_dir():
        path = path / BENCH_REPORT
    if not path.is_file():
        raise BnnflowError(
            f"no board report at {path}: give the {BENCH_REPORT} that `bnnflow-board bench DEPLOY_DIR` wrote "
            f"(DEPLOY_DIR/{BENCH_DIR}/{BENCH_REPORT})"
        )
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BnnflowError(f"{path} is not readable JSON ({exc})") from None
    try:
        missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
        if missing:
            raise _NotAReport(f"no {', '.join(missing)}")
        made_for = str(_get(report, "package", "board"))
        ran_on = report["board"].get("name") if isinstance(report["board"], dict) else None
        sha = report["package"].get(REPORT_MODEL_SHA256)
        timings = _get(report, "timing")
        if not isinstance(timings, list):
            raise _NotAReport("timing is not a list")
        timings = [_timing(t) for t in timings]
        n = int(_number(report, "testset", "n"))
        fpga = {
            "accuracy": _number(report, "fpga", "accuracy"),
            "classes_agree": int(_number(report, "fpga", "agree_classes")),
            "first_mismatch": (report["fpga"].get("first_mismatch") or {}).get("text"),
        }
        cpu_in = _get(report, "cpu")
        cpu: dict[str, Any] = {"available": bool(cpu_in.get("available"))}
        if cpu["available"]:
            cpu.update(
                accuracy=_number(cpu_in, "accuracy"),
                classes_agree=int(_number(cpu_in, "agree_classes")),
                scores_agree=int(_number(cpu_in, "agree_scores")),
                first_mismatch=(cpu_in.get("first_mismatch") or {}).get("text"),
                threads=cpu_in.get("threads"),
                c_loop=_c_loop(cpu_in.get("c_loop")),
            )
        else:
            cpu["why"] = str(cpu_in.get("why", "not run"))
    except _NotAReport as exc:
        raise BnnflowError(f"{path} is not a bnnflow-board bench report ({exc})") from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise BnnflowError(f"{path} is not a bnnflow-board bench report ({exc})") from None

    if not same_board(made_for, design_board) or (ran_on and not same_board(str(ran_on), design_board)):
        raise BnnflowError(
            f"{path} is a report for {made_for}"
            + (f" run on {ran_on}" if ran_on and ran_on != made_for else "")
            + f"; this design is compiled for {design_board}"
        )
    if not sha:
        raise BnnflowError(
            f"{path} does not say which design it ran (no package.model_sha256: an older bnnflow-board "
            "wrote it); run `bnnflow-board bench` again"
        )
    if sha != model_sha256:
        raise BnnflowError(
            f"{path} is a report for another design: its model.bnn (sha256 {sha[:12]}...) is not this "
            f"design's ({model_sha256[:12]}...)"
        )

    simulated = bool(report["simulated_board"])
    fpga["accelerator"] = _series(timings, "fpga", "accelerator")
    fpga["end_to_end"] = _series(timings, "fpga", "end-to-end")
    if fpga["accelerator"] is None:
        raise BnnflowError(f"{path} has no FPGA timing")
    if cpu["available"]:
        cpu_batches = _series(timings, "cpu", None)
        cpu["timing"] = cpu_batches
        cpu["latency_batch1_ms"] = cpu_batches["latency_batch1_ms"] if cpu_batches else None
    sim = report.get("simulated_board_fpga") or {}
    clock = report.get("accelerator_clock_mhz") or {}
    return {
        "file": str(path),
        "simulated": simulated,
        "where": "simulated board" if simulated else "measured on a board",
        "board": ran_on or made_for,
        "board_cpu": str(report["board"].get("cpu", "?")),
        "bnnflow_board": str(report["bnnflow_board"]),
        "clock_mhz": clock.get("achieved"),
        "simulated_fpga": {"exec": sim.get("exec"), "design": sim.get("design")} if simulated else None,
        "n_images": n,
        "dataset": str(report["testset"].get("dataset", "?")),
        "golden_source": str(report["testset"].get("golden_source", "?")),
        "agreement": str(report.get("agreement", "?")),
        "fpga": fpga,
        "cpu": cpu,
    }
