"""``bnnflow bench``: FPGA against CPU for a compiled design, each figure labelled by its source.

* **CPU, measured here**: bnnflow's C engine on this machine. Batch-1 latency
  from the C tool (``bnnflow-cpu bench --json``: no Python in the loop),
  throughput on one thread and on every core, accuracy on the design's test
  set and agreement with FINN from ``evaluate_cpu`` (what ``bnnflow cpu``
  runs).
* **FPGA, estimated**: FINN's compute estimate (the slowest layer's cycles at
  the clock, from ``compile.json``), the bound FINN's input and output DMAs
  put on it (``bnnflow.hls.io_bound``) and the lower of the two.
* **FPGA, measured on a board**, from a ``bnnflow-board bench`` report: the
  FPGA's and the ARM engine's throughput and latency and their agreement with
  the golden outputs. A report from the simulated board keeps that label: its
  times are those of FINN simulating the design on the host.
* **published**: finn-examples' figures for the same network (TFC and CNV).

The report is printed, and written as ``bench.json``, ``bench.txt`` and
``bench.png`` to ``<compile dir>/bench`` (or ``--out``), all or nothing.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow_board.deployformat import sha256

from bnnflow.bench.armestimate import bench_summary
from bnnflow.bench.boardreport import read_board_report
from bnnflow.bench.hostbinarize import host_binarize_lines, host_binarize_summary
from bnnflow.bench.published import PUBLISHED, identify_network
from bnnflow.cpu import MODEL_FILE, CpuEngine, export_cpu_model
from bnnflow.cpu.evaluate import evaluate_cpu, resolve_compile_dir
from bnnflow.data import find_identity
from bnnflow.errors import BnnflowError
from bnnflow.hls.iobound import io_bound
from bnnflow.layout import CompileDir
from bnnflow.runs import atomic_directory, atomic_write_json, atomic_write_text

OUT_DIR = "bench"
REPORT_FILE = "bench.json"
FORMAT = "bnnflow-bench"
FORMAT_VERSION = 1
REPO = Path(__file__).resolve().parents[3]  # the source tree bnnflow runs from (src layout)
CPU_SOURCES = REPO / "cpu"
C_TOOL_TIMEOUT_S = 900

Log = Callable[[str], None]


@dataclass
class BenchResult:
    report: dict[str, Any]
    text: str
    out_dir: Path

    @property
    def ok(self) -> bool:
        return not self.report["problems"]


def host_cpu() -> str:
    """This machine's CPU model, as /proc/cpuinfo names it (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def c_tool() -> tuple[Path | None, str]:
    """The C tool ``bnnflow-cpu``, built from cpu/ where the source tree is here; else (None, why)."""
    why = ""
    if (CPU_SOURCES / "Makefile").is_file() and shutil.which("make"):
        # make rebuilds it only where the engine's sources changed since it was built
        try:
            r = subprocess.run(
                ["make", "-s", "-C", str(CPU_SOURCES), "build/bnnflow-cpu"],
                capture_output=True,
                text=True,
                timeout=C_TOOL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            r = None
            why = f"building it with `make -C {CPU_SOURCES}` took more than {C_TOOL_TIMEOUT_S} s"
        if r is not None and r.returncode == 0 and (CPU_SOURCES / "build" / "bnnflow-cpu").is_file():
            return CPU_SOURCES / "build" / "bnnflow-cpu", ""
        if r is not None:
            why = f"`make -C {CPU_SOURCES} build/bnnflow-cpu` failed: {_last_line(r.stderr + r.stdout)}"
    found = shutil.which("bnnflow-cpu")
    if found:
        return Path(found), ""
    return None, why or "the C tool bnnflow-cpu is not on PATH and bnnflow's cpu/ sources are not here"


def c_bench(model: Path) -> tuple[dict[str, Any] | None, str]:
    """``bnnflow-cpu bench MODEL --json``: batch-1 latency and throughput timed in C; else (None, why)."""
    tool, why = c_tool()
    if tool is None:
        return None, why
    try:
        r = subprocess.run(
            [str(tool), "bench", str(model), "--json"],
            capture_output=True,
            text=True,
            timeout=C_TOOL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, f"{tool} bench took more than {C_TOOL_TIMEOUT_S} s"
    if r.returncode != 0:
        return None, f"{tool} bench failed: {_last_line(r.stderr) or f'exit {r.returncode}'}"
    try:
        data = json.loads(r.stdout)
        float(data["latency_us"]["median"]), float(data["latency_us"]["p99"])
    except (ValueError, KeyError, TypeError):
        return None, f"{tool} bench --json printed no latency"
    return data, ""


def _design(compile_dir: Path, engine: Any) -> dict[str, Any]:
    try:
        info = json.loads((compile_dir / CompileDir.SUMMARY).read_text())
    except OSError:
        raise BnnflowError(f"{compile_dir} has no compile.json: compile it with `bnnflow compile`") from None
    except ValueError:
        raise BnnflowError(f"{compile_dir / CompileDir.SUMMARY} is not readable JSON") from None
    for key in ("board", "clock_ns", "estimated_fps", "bottleneck"):
        if key not in info:
            summary = compile_dir / CompileDir.SUMMARY
            raise BnnflowError(f"{summary} is not a bnnflow compile summary (no {key})")
    run = compile_dir.parent.parent  # runs/<name>/compile/<board>
    model = None
    try:
        model = json.loads((run / "run.json").read_text())["config"]["model"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a design compiled from a checkpoint outside a run folder: the layers still say what it is
    return {
        "compile_dir": str(compile_dir),
        "run": run.name if compile_dir.parent.name == "compile" else None,
        "model": model,
        "network": identify_network(engine),
        "board": str(info["board"]),
        "part": info.get("part"),
        "clock_mhz": 1e3 / float(info["clock_ns"]),
        "dataset": _dataset_name(compile_dir, engine),
        "model_sha256": sha256(Path(engine.path)),
        "compile": info,
    }


def _dataset_name(compile_dir: Path, engine: Any) -> str | None:
    """The dataset the run recorded (older compile folders: the one their model file names)."""
    identity = find_identity(compile_dir)
    return engine.dataset if identity is None else identity.name


def _estimate(compile_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    io = io_bound(compile_dir)
    compute = float(info["estimated_fps"])
    dma_decides = io.fps <= compute
    return {
        "where": "estimated",
        "compute_fps": compute,
        "bottleneck": str(info["bottleneck"]),
        "io_bound": io.to_json(),
        "io_fps": io.fps,
        "expected_fps": min(compute, io.fps),
        "decided_by": io.describe() if dma_decides else f"compute: {info['bottleneck']}",
        "dma_decides": dma_decides,
    }


def _cpu(compile_dir: Path, data_dir: Any, limit: int | None, finn_images: int, log: Log) -> dict[str, Any]:
    log(f"the C engine on {compile_dir}'s test set ...")
    ev = evaluate_cpu(compile_dir, data_dir=data_dir, limit=limit, finn_images=finn_images, log=log)
    log("bnnflow-cpu bench --json ...")
    tool, why = c_bench(compile_dir / CompileDir.CPU_MODEL)
    if tool is not None:
        latency = {
            "median_us": float(tool["latency_us"]["median"]),
            "p99_us": float(tool["latency_us"]["p99"]),
            "min_us": tool["latency_us"].get("min"),
            "runs": int(tool.get("runs", 0)),
            "timed_by": "bnnflow-cpu bench --json (C, no Python in the loop)",
            "kernels": str(tool.get("kernels", ev.kernels)),
        }
    else:
        latency = {
            "median_us": ev.latency_us["median"],
            "p99_us": ev.latency_us["p99"],
            "min_us": ev.latency_us["min"],
            "runs": None,
            "timed_by": f"evaluate_cpu, per call from Python (ctypes overhead included): {why}",
            "kernels": ev.kernels,
        }
    return {
        "where": "measured here",
        "host": {"cpu": host_cpu(), "machine": platform.machine(), "cores": os.cpu_count() or 1},
        "engine": "bnncpu",
        "kernels": ev.kernels,
        "latency_batch1": latency,
        "images_per_s": dict(ev.images_per_s),
        "throughput_batch": ev.throughput_batch,
        "dataset": ev.dataset,
        "n_images": ev.n_images,
        "accuracy": ev.accuracy,
        "finn": {
            "images": ev.finn_images,
            "classes_agree": ev.finn_classes_agree,
            "scores_agree": ev.finn_scores_agree,
            "first_difference": ev.first_difference,
        },
        "c_bench": tool,
        "c_bench_missing": why or None,
    }


def _ratios(cpu: dict[str, Any], est: dict[str, Any], board: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fpga_expected_over_cpu_here": {
            name: est["expected_fps"] / rate for name, rate in cpu["images_per_s"].items() if rate > 0
        }
    }
    why = None
    if board is None:
        why = "no board report (--board-report)"
    elif board["simulated"]:
        why = (
            "the board report is the simulated board's: its times are a software simulation's, not an FPGA's"
        )
    elif not board["cpu"]["available"] or not board["cpu"].get("timing"):
        why = f"the board report has no ARM CPU engine run ({board['cpu'].get('why', 'no timing')})"
    measured = None
    if why is None:
        fpga, arm = board["fpga"]["accelerator"], board["cpu"]["timing"]
        measured = {
            "accelerator": fpga["images_per_s"] / arm["images_per_s"],
            "fpga_batch": fpga["batch"],
            "cpu_batch": arm["batch"],
        }
        if board["fpga"]["end_to_end"] is not None:
            measured["end_to_end"] = board["fpga"]["end_to_end"]["images_per_s"] / arm["images_per_s"]
    out["fpga_measured_over_arm_cpu"] = measured
    out["fpga_measured_over_arm_cpu_why"] = why
    return out


def _problems(cpu: dict[str, Any], board: dict[str, Any] | None) -> list[str]:
    problems = []
    if cpu["finn"]["first_difference"]:
        problems.append(f"the CPU engine differs from FINN: {cpu['finn']['first_difference']}")
    if board is not None:
        n = board["n_images"]
        first = board["fpga"]["first_mismatch"] or board["cpu"].get("first_mismatch")
        if board["fpga"]["classes_agree"] != n or (
            board["cpu"]["available"]
            and (board["cpu"]["classes_agree"] != n or board["cpu"]["scores_agree"] != n)
        ):
            problems.append(
                f"the board report's outputs differ from the golden outputs{': ' + first if first else ''}"
            )
    return problems


def _check_out(out_dir: Path) -> None:
    """The report folder can be written: new, empty, or an earlier report (atomic_directory's rule)."""
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir() or out_dir.is_symlink():
            raise BnnflowError(f"refusing to replace {out_dir}: it is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / REPORT_FILE).exists():
            raise BnnflowError(f"refusing to replace {out_dir}: it is not empty and holds no {REPORT_FILE}")


def bench_design(
    path: str | Path,
    board: str | None = None,
    board_report: str | Path | None = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    limit: int | None = None,
    finn_images: int = 500,
    log: Log | None = print,
) -> BenchResult:
    """Measure the CPU here, read FINN's estimates and a board report; write and return the report."""
    log = log or (lambda _msg: None)
    if finn_images < 0:
        raise BnnflowError(f"--finn must be 0 or more, got {finn_images}")
    compile_dir = resolve_compile_dir(path, board)
    if not (compile_dir / CompileDir.SUMMARY).is_file():
        raise BnnflowError(f"{compile_dir} has no compile.json: compile it with `bnnflow compile`")
    if not (compile_dir / MODEL_FILE).is_file():  # compiled before compile wrote it
        log(f"{compile_dir / MODEL_FILE} missing: writing it from the hardware graph")
        export_cpu_model(compile_dir)
    with CpuEngine(compile_dir / MODEL_FILE) as engine:
        design = _design(compile_dir, engine)
    out_dir = Path(out) if out is not None else compile_dir / OUT_DIR
    # everything that can be refused is refused before anything is measured
    _check_out(out_dir)
    board_summary = (
        read_board_report(board_report, design["board"], design["model_sha256"])
        if board_report is not None
        else None
    )
    est = _estimate(compile_dir, design["compile"])
    cpu = _cpu(compile_dir, data_dir, limit, finn_images, log)
    arm_estimate = bench_summary(compile_dir / MODEL_FILE, design["board"], est["expected_fps"])
    host_binarize = host_binarize_summary(
        compile_dir, design["board"], est["expected_fps"], est["io_bound"]["in_bytes"]
    )
    published = PUBLISHED.get(design["network"] or "")
    design.pop("compile")
    report: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "design": design,
        "cpu": cpu,
        "fpga_estimate": est,
        "board_report": board_summary,
        "published": published.to_json() if published else None,
        "ratios": _ratios(cpu, est, board_summary),
        "problems": _problems(cpu, board_summary),
        "arm_estimate": arm_estimate,
        "host_binarize": host_binarize,
    }
    text = format_bench(report)
    with atomic_directory(out_dir, marker=REPORT_FILE) as tmp:
        report["chart"] = plot_bench(report, tmp / "bench.png")
        atomic_write_text(tmp / "bench.txt", text + "\n")
        atomic_write_json(tmp / REPORT_FILE, report)
    return BenchResult(report, text, out_dir)


# -- the table -----------------------------------------------------------------------------------


def _fps(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def _time_ms(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1e3:.2f} us"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1e3:.2f} s"


def _latency(lat: dict[str, Any] | None) -> str:
    if not lat:
        return "-"
    return f"{_time_ms(lat['median'])} (p99 {_time_ms(lat['p99'])})"


def _pct(k: int, n: int) -> str:
    return f"{k}/{n}" if n else "-"


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows: where each figure comes from, what it is, and the figures."""
    brd, pub = report["board_report"], report["published"]
    out = _cpu_rows(report["cpu"]) + _estimate_rows(report["fpga_estimate"]) + _arm_estimate_rows(report)
    if brd is not None:
        out += _board_rows(brd)
    if pub is not None:
        out.append(_published_row(pub))
    return out


def _cpu_rows(cpu: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per C engine configuration measured here; latency, accuracy and agreement on the first."""
    out: list[dict[str, Any]] = []
    lat = cpu["latency_batch1"]
    finn = cpu["finn"]
    agree = f"FINN {finn['classes_agree']}/{finn['images']}" if finn["images"] else "FINN: not checked"
    for i, (name, rate) in enumerate(cpu["images_per_s"].items()):
        out.append(
            {
                "kind": "cpu",
                "where": "CPU, measured here",
                "what": f"C engine ({cpu['kernels']}), {name}",
                "latency": _latency({"median": lat["median_us"] / 1e3, "p99": lat["p99_us"] / 1e3})
                if i == 0
                else "",
                "images_per_s": rate,
                "accuracy": f"{100 * cpu['accuracy']:.2f}% of {cpu['n_images']:,}" if i == 0 else "",
                "agreement": agree if i == 0 else "",
            }
        )
    return out


def _estimate_rows(est: dict[str, Any]) -> list[dict[str, Any]]:
    """FINN's compute estimate, the DMA bound, and the lower of the two: what the FPGA should reach."""
    io = est["io_bound"]
    return [
        {
            "kind": "estimate",
            "where": "FPGA, estimated",
            "what": f"FINN compute estimate (bottleneck {est['bottleneck']})",
            "images_per_s": est["compute_fps"],
        },
        {
            "kind": "estimate",
            "where": "FPGA, estimated",
            "what": f"DMA bound: {io['in_bytes']:,} B in, {io['out_bytes']:,} B out per frame, "
            f"{io['in_width_bits']}/{io['out_width_bits']}-bit",
            "images_per_s": est["io_fps"],
        },
        {
            "kind": "estimate",
            "where": "FPGA, estimated",
            "what": f"expected: the lower, {'DMA' if est['dma_decides'] else 'compute'} decides",
            "images_per_s": est["expected_fps"],
        },
    ]


def _board_rows(brd: dict[str, Any]) -> list[dict[str, Any]]:
    """The board report's FPGA and ARM CPU rows, labelled as a simulated board's where it was one."""
    kind = "simulated" if brd["simulated"] else "board"
    if brd["simulated"]:
        where_f = where_c = "simulated board"
        fpga_name = f"FPGA = FINN {brd['simulated_fpga']['exec']} here"
        cpu_name = f"CPU engine here ({brd['board_cpu']})"
    else:
        where_f = f"FPGA, measured on {brd['board']}"
        where_c = f"ARM CPU, measured on {brd['board']}"
        fpga_name, cpu_name = "FPGA", f"C engine ({brd['board_cpu']})"
    return _board_fpga_rows(brd, kind, where_f, fpga_name) + _board_cpu_rows(brd, kind, where_c, cpu_name)


def _board_fpga_rows(brd: dict[str, Any], kind: str, where: str, name: str) -> list[dict[str, Any]]:
    """The accelerator alone and end to end; accuracy and agreement belong to the accelerator's row."""
    n = brd["n_images"]
    out = []
    for key, mode in (("accelerator", "accelerator"), ("end_to_end", "end-to-end")):
        series = brd["fpga"][key]
        if series is None:
            continue
        out.append(
            {
                "kind": kind,
                "where": where,
                "what": f"{name}, {mode}, batch {series['batch']:,}",
                "latency": _latency(series["latency_batch1_ms"]),
                "images_per_s": series["images_per_s"],
                "accuracy": f"{100 * brd['fpga']['accuracy']:.2f}% of {n:,}" if key == "accelerator" else "",
                "agreement": f"golden {_pct(brd['fpga']['classes_agree'], n)}"
                if key == "accelerator"
                else "",
            }
        )
    return out


def _board_cpu_rows(brd: dict[str, Any], kind: str, where: str, name: str) -> list[dict[str, Any]]:
    """The board's CPU engine as timed from Python and by its own C loop, or why it did not run."""
    n, c = brd["n_images"], brd["cpu"]
    if not (c["available"] and c.get("timing")):
        return [{"kind": kind, "where": where, "what": f"{name}: not run: {c.get('why', '?')}"}]
    t = c["timing"]
    out = [
        {
            "kind": kind,
            "where": where,
            "what": f"{name}, {t['mode']}, batch {t['batch']:,}",
            "latency": _latency(c["latency_batch1_ms"]),
            "images_per_s": t["images_per_s"],
            "accuracy": f"{100 * c['accuracy']:.2f}% of {n:,}",
            "agreement": f"golden {_pct(c['scores_agree'], n)}",
        }
    ]
    if c.get("c_loop"):  # the same engine timed by its own C loop: no Python per call
        loop = c["c_loop"]
        out.append(
            {
                "kind": kind,
                "where": where,
                "what": f"{name}, C loop ({loop['kernels']}), 1 thread",
                "latency": _latency(loop["latency_ms"]),
                "images_per_s": loop["images_per_s_1_thread"],
            }
        )
    return out


def _published_row(pub: dict[str, Any]) -> dict[str, Any]:
    """finn-examples' published figure for the same network, for scale: its board is not named."""
    return {
        "kind": "published",
        "where": "published (finn-examples)",
        "what": f"{pub['network']}, batch {pub['batch']:,}, {pub['clock_mhz']:.0f} MHz, board not named",
        "images_per_s": pub["images_per_s"],
        "accuracy": f"{100 * pub['accuracy']:.2f}% of 10,000",
    }


def _arm_estimate_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The estimate's row, unless the board report measured the ARM CPU (or the report predates it)."""
    arm = report.get("arm_estimate")
    if arm is None or report["ratios"]["fpga_measured_over_arm_cpu"] is not None:
        return []
    return [_arm_estimate_row(arm)]


def _arm_estimate_row(arm: dict[str, Any]) -> dict[str, Any]:
    """The board's ARM CPU, estimated with llvm-mca (replaced by the board report's measurement)."""
    if not arm["available"]:
        return {"kind": "estimate", "where": "ARM CPU, estimated", "what": f"not available: {arm['why']}"}
    return {
        "kind": "estimate",
        "where": "ARM CPU, estimated",
        "what": f"C engine (neon), llvm-mca, {arm['cpu']}, 1 core, batch 1",
        "latency": f"{_fps_time(arm['images_per_s_1_core'])} (estimate)",
        "images_per_s": arm["images_per_s_1_core"],
    }


def _fps_time(images_per_s: float) -> str:
    s = 1.0 / images_per_s
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} us"


def _arm_estimate_lines(report: dict[str, Any]) -> list[str]:
    arm = report.get("arm_estimate")
    if arm is None or report["ratios"]["fpga_measured_over_arm_cpu"] is not None:
        return []
    if not arm["available"]:
        return [f"FPGA expected / ARM CPU estimated: not available: {arm['why']}"]
    return [
        f"FPGA expected / ARM CPU estimated: {arm['fpga_expected_over_arm_1_core']:,.2f}x one core, "
        f"{arm['fpga_expected_over_arm_all_cores']:,.2f}x all {arm['cores']} cores (both estimates)",
        f"ARM CPU estimate: llvm-mca, {arm['cpu']}, on the engine's NEON inner loops: "
        f"{arm['cycles_per_image']:,.0f} cycles/image, {arm['binary_macs_per_cycle']:.1f} binary MACs/cycle, "
        f"weights {arm['weight_bytes']:,} B ({arm['weights_fit']}); all cores = batch split, an upper bound; "
        "not a measurement: on x86 the engine's measured time was 0.8x to 3.9x the same method's "
        "estimate (docs/arm-estimate.md)",
    ]


def format_bench(report: dict[str, Any]) -> str:
    d, cpu, est, brd = report["design"], report["cpu"], report["fpga_estimate"], report["board_report"]
    name = d["run"] or Path(d["compile_dir"]).name
    what = d["model"] or d["network"]
    what = None if what == name else what
    lines = [
        f"FPGA against CPU: {name}{f' ({what})' if what else ''} for {d['board']} at "
        f"{d['clock_mhz']:g} MHz, {d['dataset']}: {d['compile_dir']}",
        "",
    ]
    table = rows(report)
    w_where = max(len(r["where"]) for r in table)
    w_what = max(len(r["what"]) for r in table if "images_per_s" in r)
    head = (
        f"{'source':<{w_where}}  {'what':<{w_what}}  {'batch-1 latency':>22}  {'images/s':>12}  "
        f"{'accuracy':>16}  agreement"
    )
    lines += [head, "-" * len(head)]
    for r in table:
        if "images_per_s" not in r:
            lines.append(f"{r['where']:<{w_where}}  {r['what']}")
            continue
        lines.append(
            f"{r['where']:<{w_where}}  {r['what']:<{w_what}}  {r.get('latency', '') or '-':>22}  "
            f"{_fps(r['images_per_s']):>12}  {r.get('accuracy', ''):>16}  {r.get('agreement', '')}".rstrip()
        )
    lines.append("")
    ratios = report["ratios"]
    here = ", ".join(f"{v:,.2f}x {k}" for k, v in ratios["fpga_expected_over_cpu_here"].items())
    lines.append(f"FPGA expected / CPU measured here: {here}")
    m = ratios["fpga_measured_over_arm_cpu"]
    if m is not None:
        e2e = f", {m['end_to_end']:,.2f}x end-to-end" if "end_to_end" in m else ""
        lines.append(
            f"FPGA measured / ARM CPU measured: {m['accelerator']:,.2f}x accelerator{e2e} "
            f"(FPGA batch {m['fpga_batch']:,}, CPU batch {m['cpu_batch']:,})"
        )
    else:
        lines.append(
            f"FPGA measured / ARM CPU measured: not available: {ratios['fpga_measured_over_arm_cpu_why']}"
        )
    lines += [*_arm_estimate_lines(report), *host_binarize_lines(report.get("host_binarize"), cpu), ""]
    host = cpu["host"]
    lines.append(
        f"CPU: {host['cpu']} ({host['machine']}, {host['cores']} cores); batch-1 latency timed by "
        f"{cpu['latency_batch1']['timed_by']}; throughput on the test set, batch {cpu['throughput_batch']:,}"
    )
    io = est["io_bound"]
    lines.append(
        f"FPGA estimate: FINN's cycles of the slowest layer at {d['clock_mhz']:g} MHz; DMA bound: FINN's "
        f"IODMAs on the board's {io['port_bits']}-bit port, {io['in_cycles']:,} cycles/frame in, "
        f"{io['out_cycles']:,} out; decided by {est['decided_by']}"
    )
    if brd is not None:
        if brd["simulated"]:
            sim = brd["simulated_fpga"] or {}
            lines.append(
                f"simulated board ({brd['file']}): the FPGA is FINN's {sim.get('exec')} execution of the "
                f"design on this machine and its CPU engine ran on this machine's {brd['board_cpu']}: these "
                "times are a "
                "software simulation's, not FPGA timings; agreement with the golden outputs: "
                f"{brd['agreement']}"
            )
        else:
            clock = f" at {brd['clock_mhz']:g} MHz" if brd["clock_mhz"] else ""
            lines.append(
                f"board report ({brd['file']}): {brd['board']}{clock}, bnnflow-board {brd['bnnflow_board']}, "
                f"{brd['n_images']:,} {brd['dataset']} images; agreement with the golden outputs: "
                f"{brd['agreement']}"
            )
    pub = report["published"]
    if pub is not None:
        lines.append(
            f"published: {pub['network']} {pub['images_per_s']:,.0f} images/s at {pub['clock_mhz']:g} MHz, "
            f"{pub['dram_in_mb_s']:.4g} MB/s of input read for {pub['in_bytes']:,} B per image; "
            f"{pub['source']}; {pub['board']}"
        )
    for problem in report["problems"]:
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)


# -- the chart -----------------------------------------------------------------------------------

_STYLE = {  # kind -> (colour, hatch)
    "cpu": ("tab:blue", ""),
    "estimate": ("tab:orange", "//"),
    "board": ("tab:green", ""),
    "simulated": ("tab:gray", "xx"),
    "published": ("tab:purple", ""),
}


def plot_bench(report: dict[str, Any], path: Path) -> str:
    """bench.png: images/s of every row, coloured by where the figure comes from; the reason where none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    table = [r for r in rows(report) if r.get("images_per_s")]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(table) + 1.6))
    ys = range(len(table))[::-1]
    for y, r in zip(ys, table, strict=True):
        colour, hatch = _STYLE[r["kind"]]
        ax.barh(y, r["images_per_s"], color=colour, hatch=hatch, edgecolor="black", linewidth=0.4)
        ax.text(r["images_per_s"], y, f" {_fps(r['images_per_s'])}", va="center", fontsize=8)
    ax.set_yticks(list(ys), [f"{r['where']}: {r['what']}" for r in table], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("images/s (log scale)")
    d = report["design"]
    title = f"{d['run'] or Path(d['compile_dir']).name} for {d['board']}: FPGA against CPU"
    if report["board_report"] is not None and report["board_report"]["simulated"]:
        title += " (grey: simulated board, not FPGA timings)"
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
