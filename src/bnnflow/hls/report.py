"""FINN's estimates of a folded design, as JSON, a console table and a chart.

All numbers come from FINN's analyses (``exp_cycles_per_layer`` and
``res_estimation`` for the board's part): bnnflow adds only the sums, the
bottleneck, the comparison with the board and the I/O bound of FINN's DMAs
(iobound.py), which caps the compute estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bnnflow.finnlib.boards import Board
from bnnflow.hls.iobound import IOBound, io_bound

RESOURCES = ("LUT", "BRAM_18K", "DSP")


@dataclass
class LayerEstimate:
    name: str
    op_type: str
    pe: int | None
    simd: int | None
    cycles: int
    lut: float
    bram_18k: float
    dsp: float


@dataclass
class DesignEstimate:
    board: str
    part: str
    clock_ns: float
    layers: list[LayerEstimate]
    totals: dict[str, float]
    capacity: dict[str, int]
    bottleneck: str
    max_cycles: int
    fps: float  # the compute estimate: the slowest layer's cycles at the clock
    extra: dict[str, Any] = field(default_factory=dict)
    io: IOBound | None = None  # what FINN's DMAs allow; None where not computed

    @property
    def expected_fps(self) -> float:
        """The lower of the compute estimate and the I/O bound."""
        return min(self.fps, self.io.fps) if self.io is not None else self.fps

    @property
    def io_bound_decides(self) -> bool:
        return self.io is not None and self.io.cycles >= self.max_cycles

    @property
    def bound(self) -> str:
        """What decides the throughput: ``compute: MVAU_hls_1`` or ``I/O: input DMA, 98 cycles/frame``."""
        if self.io_bound_decides:
            return self.io.describe()
        return f"compute: {self.bottleneck}"

    def utilisation(self) -> dict[str, float]:
        return {k: self.totals[k] / self.capacity[k] for k in RESOURCES if self.capacity[k]}

    def fits(self, budget: float) -> bool:
        return all(self.totals[k] <= budget * self.capacity[k] for k in RESOURCES)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["utilisation"] = self.utilisation()
        out["io"] = self.io.to_json() if self.io is not None else None
        out["expected_fps"] = self.expected_fps
        out["throughput_bound"] = self.bound
        return out


def _attr(inst: Any, name: str) -> int | None:
    try:
        return int(inst.get_nodeattr(name))
    except (AttributeError, Exception):  # FINN raises AttributeError or a bare Exception
        return None


def estimate_design(model: Any, board: Board, clock_ns: float, with_io: bool = True) -> DesignEstimate:
    """FINN's per-layer cycle and resource estimates of a specialised, folded graph.

    ``with_io``: also the bound FINN's input and output DMAs put on it.
    """
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from qonnx.custom_op.registry import getCustomOp

    cycles = model.analysis(exp_cycles_per_layer)
    resources = model.analysis(partial(res_estimation, fpgapart=board.part))
    layers = []
    for node in model.graph.node:
        if node.name not in cycles:
            continue
        inst = getCustomOp(node)
        res = resources.get(node.name, {})
        layers.append(
            LayerEstimate(
                name=node.name,
                op_type=node.op_type,
                pe=_attr(inst, "PE"),
                simd=_attr(inst, "SIMD"),
                cycles=int(cycles[node.name]),
                lut=float(res.get("LUT", 0.0)),
                bram_18k=float(res.get("BRAM_18K", 0.0)),
                dsp=float(res.get("DSP", 0.0)),
            )
        )
    totals = {
        "LUT": sum(la.lut for la in layers),
        "BRAM_18K": sum(la.bram_18k for la in layers),
        "DSP": sum(la.dsp for la in layers),
    }
    worst = max(layers, key=lambda la: la.cycles)
    return DesignEstimate(
        board=board.name,
        part=board.part,
        clock_ns=clock_ns,
        layers=layers,
        totals=totals,
        capacity=board.capacity(),
        bottleneck=worst.name,
        max_cycles=worst.cycles,
        fps=1e9 / clock_ns / worst.cycles,
        io=io_bound(model, board, clock_ns) if with_io else None,
    )


def format_table(est: DesignEstimate) -> str:
    """The per-layer table printed by ``bnnflow compile``."""
    head = f"{'layer':<34} {'PE':>4} {'SIMD':>5} {'cycles':>9} {'LUT':>8} {'BRAM18':>7} {'DSP':>5}"
    lines = [head, "-" * len(head)]
    for la in est.layers:
        mark = " <- bottleneck" if la.name == est.bottleneck else ""
        lines.append(
            f"{la.name:<34} {la.pe if la.pe is not None else '-':>4} "
            f"{la.simd if la.simd is not None else '-':>5} {la.cycles:>9,} {la.lut:>8,.0f} "
            f"{la.bram_18k:>7,.0f} {la.dsp:>5,.0f}{mark}"
        )
    lines.append("-" * len(head))
    util = est.utilisation()
    lines.append(
        f"{'total':<34} {'':>4} {'':>5} {est.max_cycles:>9,} {est.totals['LUT']:>8,.0f} "
        f"{est.totals['BRAM_18K']:>7,.0f} {est.totals['DSP']:>5,.0f}"
    )
    lines.append(
        f"{est.board + ' (' + est.part + ')':<34} {'':>4} {'':>5} {'':>9} {est.capacity['LUT']:>8,} "
        f"{est.capacity['BRAM_18K']:>7,} {est.capacity['DSP']:>5,}"
    )
    lines.append(
        f"{'used':<34} {'':>4} {'':>5} {'':>9} {util['LUT']:>8.0%} "
        f"{util['BRAM_18K']:>7.0%} {util['DSP']:>5.0%}"
    )
    mhz = f"{1e3 / est.clock_ns:.0f} MHz"
    lines.append(
        f"compute estimate:     {est.fps:,.0f} frames/s at {mhz} "
        f"(bottleneck {est.bottleneck}, {est.max_cycles:,} cycles/frame)"
    )
    if est.io is not None:
        io = est.io
        lines.append(
            f"I/O bound:            {io.fps:,.0f} frames/s ({io.in_bytes:,} B in, {io.out_bytes:,} B out "
            f"per frame through {io.port_bits}-bit DMAs: {io.cycles:,} cycles/frame)"
        )
    lines.append(f"estimated throughput: {est.expected_fps:,.0f} frames/s at {mhz} (decided by {est.bound})")
    hb = est.extra.get("host_binarize")
    if hb:
        lines.append(
            f"host-binarize:        {hb['in_bytes']:,} B in per frame instead of the image's "
            f"{hb['in_bytes_uint8']:,}: the DMA bound is {hb['io_fps']:,.0f} frames/s instead of "
            f"{hb['io_fps_uint8']:,.0f}; this fold reaches {est.fps:,.0f}"
        )
    return "\n".join(lines)


def plot_estimate(est: DesignEstimate, path: str | Path) -> None:
    """Cycles and resources per layer, one panel each (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [la.name for la in est.layers]
    x = range(len(names))
    fig, axes = plt.subplots(4, 1, figsize=(max(8, 0.5 * len(names) + 3), 11), sharex=True)
    series = [
        ("cycles / frame", [la.cycles for la in est.layers], None),
        ("LUT", [la.lut for la in est.layers], est.capacity["LUT"]),
        ("BRAM_18K", [la.bram_18k for la in est.layers], est.capacity["BRAM_18K"]),
        ("DSP", [la.dsp for la in est.layers], est.capacity["DSP"]),
    ]
    for ax, (label, values, cap) in zip(axes, series, strict=True):
        colors = ["tab:red" if n == est.bottleneck else "tab:blue" for n in names]
        ax.bar(list(x), values, color=colors if label.startswith("cycles") else "tab:blue")
        title = label if cap is None else f"{label} (total {sum(values):,.0f} of {cap:,})"
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
    axes[-1].set_xticks(list(x))
    axes[-1].set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    fig.suptitle(
        f"{est.board} @ {1e3 / est.clock_ns:.0f} MHz: {est.expected_fps:,.0f} frames/s ({est.bound})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
