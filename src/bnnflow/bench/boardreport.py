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
import math
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
    """A finite number, zero or more: a report's times, rates and fractions are never NaN,
    infinite or negative (json reads ``NaN``, ``Infinity`` and ``1e999`` as floats)."""
    value = _get(d, *keys)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _NotAReport(f"{'.'.join(keys)} is not a number")
    if not math.isfinite(value) or value < 0:
        raise _NotAReport(f"{'.'.join(keys)} is {value}, not a finite number of 0 or more")
    return float(value)


def _count(d: Any, *keys: str) -> int:
    value = _number(d, *keys)
    if value != int(value):
        raise _NotAReport(f"{'.'.join(keys)} is {value}, not a whole number")
    return int(value)


def _rate(d: Any, *keys: str) -> float:
    """Images per second: above 0, as the ratios divide by it."""
    value = _number(d, *keys)
    if value <= 0:
        raise _NotAReport(f"{'.'.join(keys)} is {value}, not a rate above 0")
    return value


def _section(d: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional object of the report: absent or null is empty, anything but an object is refused."""
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _NotAReport(f"{key} is not an object")
    return value


def _timing(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise _NotAReport("a timing entry is not an object")
    threads = entry.get("threads")
    return {
        "engine": str(_get(entry, "engine")),
        "mode": str(_get(entry, "mode")),
        "batch": _count(entry, "batch"),
        "threads": None if threads is None else _count(entry, "threads"),
        "repeats": _count(entry, "repeats"),
        "median_ms": _number(entry, "median_ms"),
        "p99_ms": _number(entry, "p99_ms"),
        "images_per_s": _rate(entry, "throughput_fps"),
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
    throughput = _get(loop, "throughput")
    if not isinstance(throughput, list):
        raise _NotAReport("cpu.c_loop.throughput is not a list")
    rates = {_count(x, "threads"): _rate(x, "images_per_s") for x in throughput}
    if not rates:
        raise _NotAReport("cpu.c_loop has no throughput")
    return {
        "kernels": str(_get(loop, "kernels")),
        "runs": _count(loop, "runs"),
        "latency_ms": {k: _number(loop, "latency_us", k) / 1000.0 for k in ("median", "p99")},
        "batch": _count(loop, "batch"),
        "images_per_s_1_thread": rates.get(1),
        "threads": max(rates),
        "images_per_s_all": rates[max(rates)],
    }


def _load(path: Path) -> Any:
    if path.is_dir():
        path = path / BENCH_REPORT
    if not path.is_file():
        raise BnnflowError(
            f"no board report at {path}: give the {BENCH_REPORT} that `bnnflow-board bench DEPLOY_DIR` wrote "
            f"(DEPLOY_DIR/{BENCH_DIR}/{BENCH_REPORT})"
        )
    try:
        return json.loads(path.read_text())
    except RecursionError:
        raise BnnflowError(f"{path} is not readable JSON (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BnnflowError(f"{path} is not readable JSON ({exc})") from None


def _cpu_part(report: dict[str, Any]) -> dict[str, Any]:
    cpu_in = _get(report, "cpu")
    if not isinstance(cpu_in, dict):
        raise _NotAReport("cpu is not an object")
    cpu: dict[str, Any] = {"available": bool(cpu_in.get("available"))}
    if not cpu["available"]:
        cpu["why"] = str(cpu_in.get("why", "not run"))
        return cpu
    threads = cpu_in.get("threads")
    cpu.update(
        accuracy=_number(report, "cpu", "accuracy"),
        classes_agree=_count(report, "cpu", "agree_classes"),
        scores_agree=_count(report, "cpu", "agree_scores"),
        first_mismatch=(_section(cpu_in, "first_mismatch")).get("text"),
        threads=None if threads is None else _count(report, "cpu", "threads"),
        c_loop=_c_loop(cpu_in.get("c_loop")),
    )
    return cpu


def _parse(report: Any) -> dict[str, Any]:
    """Every field bnnflow reads from a report, each of the type it must have."""
    missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise _NotAReport(f"no {', '.join(missing)}")
    timings = _get(report, "timing")
    if not isinstance(timings, list):
        raise _NotAReport("timing is not a list")
    board, testset, package = (
        _section(report, "board"),
        _section(report, "testset"),
        _section(report, "package"),
    )
    fpga_in = _section(report, "fpga")
    ran_on = board.get("name")
    return {
        "made_for": str(_get(package, "board")),
        "ran_on": None if ran_on is None else str(ran_on),
        "board_cpu": str(board.get("cpu", "?")),
        "sha": package.get(REPORT_MODEL_SHA256),
        "timings": [_timing(t) for t in timings],
        "n": _count(report, "testset", "n"),
        "dataset": str(testset.get("dataset", "?")),
        "golden_source": str(testset.get("golden_source", "?")),
        "fpga": {
            "accuracy": _number(report, "fpga", "accuracy"),
            "classes_agree": _count(report, "fpga", "agree_classes"),
            "first_mismatch": _section(fpga_in, "first_mismatch").get("text"),
        },
        "cpu": _cpu_part(report),
        "simulated": bool(report["simulated_board"]),
        "sim": _section(report, "simulated_board_fpga"),
        "clock": _section(report, "accelerator_clock_mhz").get("achieved"),
        "bnnflow_board": str(report["bnnflow_board"]),
        "agreement": str(report.get("agreement", "?")),
    }


def _check_design(path: Path, r: dict[str, Any], design_board: str, model_sha256: str) -> None:
    made_for, ran_on, sha = r["made_for"], r["ran_on"], r["sha"]
    if not same_board(made_for, design_board) or (ran_on and not same_board(ran_on, design_board)):
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
            f"{path} is a report for another design: its model.bnn (sha256 {str(sha)[:12]}...) is not this "
            f"design's ({model_sha256[:12]}...)"
        )


def read_board_report(path: str | Path, design_board: str, model_sha256: str) -> dict[str, Any]:
    """The figures of a ``bnnflow-board bench`` report for this design, or a one-line error."""
    path = Path(path)
    report = _load(path)
    path = path / BENCH_REPORT if path.is_dir() else path
    try:
        r = _parse(report)
        clock = r["clock"]
        if clock is not None:
            clock = _number({"clock": clock}, "clock")
    except (_NotAReport, AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise BnnflowError(f"{path} is not a bnnflow-board bench report ({exc})") from None
    _check_design(path, r, design_board, model_sha256)

    fpga, cpu, timings, simulated = r["fpga"], r["cpu"], r["timings"], r["simulated"]
    fpga["accelerator"] = _series(timings, "fpga", "accelerator")
    fpga["end_to_end"] = _series(timings, "fpga", "end-to-end")
    if fpga["accelerator"] is None:
        raise BnnflowError(f"{path} has no FPGA timing")
    if cpu["available"]:
        cpu_batches = _series(timings, "cpu", None)
        cpu["timing"] = cpu_batches
        cpu["latency_batch1_ms"] = cpu_batches["latency_batch1_ms"] if cpu_batches else None
    sim = r["sim"]
    return {
        "file": str(path),
        "simulated": simulated,
        "where": "simulated board" if simulated else "measured on a board",
        "board": r["ran_on"] or r["made_for"],
        "board_cpu": r["board_cpu"],
        "bnnflow_board": r["bnnflow_board"],
        "clock_mhz": clock,
        "simulated_fpga": {"exec": sim.get("exec"), "design": sim.get("design")} if simulated else None,
        "n_images": r["n"],
        "dataset": r["dataset"],
        "golden_source": r["golden_source"],
        "agreement": r["agreement"],
        "fpga": fpga,
        "cpu": cpu,
    }
