"""The bench report: a table for the console, its JSON, and a bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnnflow_board.deployformat import BENCH_TEXT


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.2f}%)" if n else "-"


def agreement_lines(fpga: dict[str, Any], cpu: dict[str, Any], agreement: str, golden: str) -> list[str]:
    """Each side's first mismatch, then the verdict against ``golden`` (bench and update-weights)."""
    lines = [
        f"  first mismatch: {who['first_mismatch']['text']}"
        for who in (fpga, cpu)
        if who.get("first_mismatch")
    ]
    return [*lines, f"agreement with {golden}: {agreement}"]


def c_loop_lines(cpu: dict[str, Any]) -> list[str]:
    """The engine timed by its own C loop, beside the rows timed through Python above."""
    loop = cpu.get("c_loop")
    if not loop:
        return []
    if "why" in loop:
        return [f"cpu    C loop: not run: {loop['why']}"]
    lat = loop["latency_us"]
    rates = ", ".join(
        f"{x['images_per_s']:,.0f} images/s on {x['threads']} thread{'s' if x['threads'] > 1 else ''}"
        for x in loop["throughput"]
    )
    return [
        f"cpu    C loop ({loop['kernels']} kernels, bnnflow-cpu bench, no Python): batch 1 median "
        f"{lat['median']:,.2f} us, p99 {lat['p99']:,.2f} us over {loop['runs']:,} runs; "
        f"batch {loop['batch']}: {rates}"
    ]


def format_report(r: dict[str, Any]) -> str:
    n = r["testset"]["n"]
    sim = " (simulated board)" if r["simulated_board"] else ""
    where = r["board"]["name"] or r["board"]["family"]
    lines = [
        f"{r['package']['model']} for {r['package']['board']} on {where}{sim}; "
        f"{n} {r['testset']['dataset']} test images, golden outputs from {r['testset']['golden_source']}",
    ]
    names = r["testset"].get("class_names") or []
    if names:
        shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
        lines.append(f"{len(names)} classes: {shown}")
    if r.get("weights", "the compiled design's") != "the compiled design's":
        lines.append(f"weights: {r['weights']} (bnnflow-board update-weights), golden outputs its own")
    clk = r["accelerator_clock_mhz"]
    if clk["achieved"] is not None:
        lines.append(
            f"accelerator clock: {clk['achieved']:g} MHz (requested {clk['requested']:g} MHz, from the .hwh)"
        )
    if "simulated_board_fpga" in r:
        lines.append(
            f"simulated board: the FPGA is FINN's {r['simulated_board_fpga']['exec']} execution of "
            f"{r['simulated_board_fpga']['design']}"
        )
    fpga, cpu = r["fpga"], r["cpu"]
    lines += ["", f"{'':<22}{'accuracy':>10}  {'classes = golden':>22}  {'scores = golden':>22}"]
    lines.append(
        f"{'FPGA' + sim:<22}{100 * fpga['accuracy']:>9.2f}%  {_pct(fpga['agree_classes'], n):>22}  {'-':>22}"
    )
    cpu_name = "CPU engine" + (" (host)" if r["simulated_board"] else "")
    if cpu.get("available"):
        lines.append(
            f"{cpu_name:<22}{100 * cpu['accuracy']:>9.2f}%  {_pct(cpu['agree_classes'], n):>22}  "
            f"{_pct(cpu['agree_scores'], n):>22}"
        )
    else:
        lines.append(f"{cpu_name:<22}  not run: {cpu.get('why', '?')}")
    lines += agreement_lines(fpga, cpu, r["agreement"], "the golden outputs")
    lines += [
        "",
        f"{'engine':<6} {'mode':<12} {'batch':>6} {'median ms':>10} {'p99 ms':>10} {'images/s':>12} "
        f"{'runs':>5}",
    ]
    for t in r["timing"]:
        lines.append(
            f"{t['engine']:<6} {t['mode']:<12} {t['batch']:>6} {t['median_ms']:>10.3f} {t['p99_ms']:>10.3f} "
            f"{t['throughput_fps']:>12,.0f} {t['repeats']:>5}"
        )
    lines += c_loop_lines(cpu)
    if r["simulated_board"]:
        lines.append(
            "(simulated board: FPGA times are those of the software simulation, not of an FPGA; "
            f"the CPU engine runs on this machine's {r['board']['cpu']})"
        )
    return "\n".join(lines)


def write_report(r: dict[str, Any], text: str, folder: Path) -> None:
    (folder / BENCH_TEXT).write_text(text + "\n")


def plot_report(r: dict[str, Any], path: Path) -> str:
    """bench.png: throughput and latency by batch size; the reason where no chart is drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    rows = r["timing"]
    series = sorted({(t["engine"], t["mode"]) for t in rows})
    batches = sorted({t["batch"] for t in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(series), 1)
    for k, (engine, mode) in enumerate(series):
        pts = {t["batch"]: t for t in rows if (t["engine"], t["mode"]) == (engine, mode)}
        xs = [i + k * width for i, b in enumerate(batches) if b in pts]
        axes[0].bar(
            xs, [pts[b]["throughput_fps"] for b in batches if b in pts], width, label=f"{engine} {mode}"
        )
        med = [pts[b]["median_ms"] for b in batches if b in pts]
        p99 = [pts[b]["p99_ms"] - pts[b]["median_ms"] for b in batches if b in pts]
        axes[1].bar(xs, med, width, yerr=[[0] * len(p99), p99], capsize=3, label=f"{engine} {mode}")
    sim = " (simulated board)" if r["simulated_board"] else ""
    for ax, title in zip(
        axes, ("throughput, images/s", "latency per batch, ms (median, bar to p99)"), strict=True
    ):
        ax.set_yscale("log")
        ax.set_xticks(
            [i + width * (len(series) - 1) / 2 for i in range(len(batches))], [str(b) for b in batches]
        )
        ax.set_xlabel("batch size")
        ax.set_title(title + sim, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{r['package']['model']} on {r['board']['name'] or r['board']['family']}{sim}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
