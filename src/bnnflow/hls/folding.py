"""Folding: how many PEs and SIMD lanes each hardware layer gets.

Three ways, all ending in a FINN folding JSON (``{"Defaults": {}, node: {attr:
value}}``, the format ``step_apply_folding_config`` reads):

* ``published``: the finn-examples foldings of TFC-W1A1 and CNV-W1A1 for the
  PYNQ boards.
* ``fps:<N>``: FINN's own ``SetFolding`` for N frames/s at the clock.
* ``fit``: the fastest design FINN's estimates say fits within ``budget`` of the
  board: a bisection over SetFolding's target cycles, then a greedy raise of the
  bottleneck layer's parallelism while it still fits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.hls.boards import Board
from bnnflow.hls.report import DesignEstimate, estimate_design

# The attributes FINN's step_target_fps_parallelization / step_apply_folding_config
# write to and read from a folding JSON.
HW_ATTRS = [
    "PE",
    "SIMD",
    "EmbFold",
    "SeqFold",
    "parallel_window",
    "ram_style",
    "ram_style_thresholds",
    "ram_style_mask",
    "depth",
    "impl_style",
    "resType",
    "mac_resource",
    "mem_mode",
    "runtime_writeable_weights",
    "depth_trigger_uram",
    "depth_trigger_bram",
]

# FINN's SetFolding default: SIMD x weight bits per PE of an HLS MVAU's weight
# stream stays at or under this width.
MVAU_WWIDTH_MAX = 36


@dataclass(frozen=True)
class PublishedFolding:
    """One finn-examples folding, as facts: (PE, SIMD) per MVAU in graph order."""

    name: str
    mvau: tuple[tuple[int, int], ...]  # (PE, SIMD)
    mvau_mh: tuple[int, ...]  # output widths, to recognise the network
    swg_simd: tuple[int, ...]  # SIMD of the sliding-window generator before each conv MVAU
    input_threshold_pe: int
    mvau_ram_style: tuple[str, ...]


# Source: Xilinx/finn-examples, build/bnn-pynq/folding_config/tfc-w1a1_folding_config.json
# and cnv-w1a1_folding_config.json (the foldings behind the published PYNQ bitfiles;
# the same JSONs serve Pynq-Z1/Z2 and Ultra96). Only the numbers are taken.
PUBLISHED: dict[str, PublishedFolding] = {
    "tfc": PublishedFolding(
        "tfc",
        mvau=((16, 49), (8, 8), (8, 8), (10, 8)),
        mvau_mh=(64, 64, 64, 10),
        swg_simd=(),
        input_threshold_pe=49,
        mvau_ram_style=("block", "auto", "auto", "distributed"),
    ),
    "cnv": PublishedFolding(
        "cnv",
        mvau=((16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)),
        mvau_mh=(64, 64, 128, 128, 256, 256, 512, 512, 10),
        swg_simd=(3, 32, 32, 32, 32, 32),
        input_threshold_pe=1,
        mvau_ram_style=("auto",) * 9,
    ),
}


def _inst(node: Any) -> Any:
    from qonnx.custom_op.registry import getCustomOp

    return getCustomOp(node)


def _base(op_type: str) -> str:
    """MVAU_hls -> MVAU: the layer kind without its HLS/RTL flavour."""
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def folding_dict(model: Any) -> dict[str, Any]:
    """The model's folding as FINN's folding JSON dict (same attributes FINN extracts)."""
    cfg: dict[str, Any] = {"Defaults": {}}
    for node in model.graph.node:
        inst = _inst(node)
        attrs = {}
        for attr in HW_ATTRS:
            try:
                value = inst.get_nodeattr(attr)
            except (AttributeError, Exception):  # attribute not defined for this op
                continue
            attrs[attr] = value.decode() if isinstance(value, bytes) else value
        if attrs:
            cfg[node.name] = attrs
    return cfg


def write_folding_json(model: Any, path: str | Path) -> dict[str, Any]:
    from bnnflow.runs import atomic_write_json

    cfg = folding_dict(model)
    atomic_write_json(path, cfg)
    return cfg


def apply_folding(model: Any, cfg: dict[str, Any]) -> Any:
    """Apply a folding dict with FINN's ApplyConfig (what step_apply_folding_config does)."""
    from finn.transformation.general import ApplyConfig

    return model.transform(ApplyConfig(cfg))


def _nodes(model: Any, base: str) -> list[Any]:
    return [n for n in model.graph.node if _base(n.op_type) == base]


def published_folding(model: Any, target_cycles: int | None = None) -> tuple[str, Any]:
    """Map the published folding that matches this network onto its node names.

    finn-plus lowers max-pooling to a depthwise sliding-window generator plus a
    ``Pool`` layer, where the published FINN designs had one StreamingMaxPool;
    those two layers, which the published JSON has no entry for, get the least
    parallelism that keeps them off the critical path of the published layers.
    """
    mvaus = _nodes(model, "MVAU")
    mh = tuple(int(_inst(n).get_nodeattr("MH")) for n in mvaus)
    preset = next((p for p in PUBLISHED.values() if p.mvau_mh == mh), None)
    if preset is None:
        raise BnnflowError(
            "no published FINN folding for this network (its MVAU widths are "
            f"{list(mh)}); published: {', '.join(PUBLISHED)}; use --folding fit or fps:N"
        )
    cfg: dict[str, Any] = {"Defaults": {}}
    for node, (pe, simd), ram in zip(mvaus, preset.mvau, preset.mvau_ram_style, strict=True):
        cfg[node.name] = {"PE": pe, "SIMD": simd, "ram_style": ram}
    swgs = [n for n in _nodes(model, "ConvolutionInputGenerator") if not _inst(n).get_nodeattr("depthwise")]
    if len(swgs) != len(preset.swg_simd):
        raise BnnflowError(
            f"published {preset.name} folding expects {len(preset.swg_simd)} convolution windows, "
            f"this graph has {len(swgs)}"
        )
    for node, simd in zip(swgs, preset.swg_simd, strict=True):
        cfg[node.name] = {"SIMD": simd, "ram_style": "distributed"}
    thresholds = _nodes(model, "Thresholding")
    if thresholds:
        cfg[thresholds[0].name] = {"PE": preset.input_threshold_pe, "ram_style": "distributed"}
    for node in _nodes(model, "LabelSelect"):
        cfg[node.name] = {"PE": 1}
    # The published JSONs name HLS-era attributes (ram_style of a sliding window,
    # thresholds); keep only those the finn-plus layer here actually has.
    by_name = {n.name: n for n in model.graph.node}
    for name in list(cfg)[1:]:
        known = _inst(by_name[name]).get_nodeattr_types()
        cfg[name] = {k: v for k, v in cfg[name].items() if k in known}
    model = apply_folding(model, cfg)
    if target_cycles is None:
        target_cycles = max(int(_inst(n).get_exp_cycles()) for n in model.graph.node if n.name in cfg)
    for pool in _nodes(model, "Pool"):
        swg = model.find_producer(pool.input[0])
        pool_inst, swg_inst = _inst(pool), _inst(swg)
        for pe in _divisors(int(pool_inst.get_nodeattr("Channels"))):
            pool_inst.set_nodeattr("PE", pe)
            swg_inst.set_nodeattr("SIMD", pe)
            if max(pool_inst.get_exp_cycles(), swg_inst.get_exp_cycles()) <= target_cycles:
                break
        cfg[pool.name] = {"PE": pe}
        cfg[swg.name] = {"SIMD": pe}
    return preset.name, model


def target_fps_folding(model: Any, fps: float, clock_ns: float) -> Any:
    """FINN's SetFolding for ``fps`` frames/s, as step_target_fps_parallelization calls it."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    cycles = int(1e9 / clock_ns / fps)
    return model.transform(SetFolding(cycles, mvau_wwidth_max=MVAU_WWIDTH_MAX, two_pass_relaxation=True))


def _set_folding(model: Any, cycles: int) -> Any:
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    return model.transform(
        SetFolding(max(1, int(cycles)), mvau_wwidth_max=MVAU_WWIDTH_MAX, two_pass_relaxation=True)
    )


def _raise_options(model: Any, node: Any) -> Iterator[dict[str, dict[str, int]]]:
    """Next-larger legal parallelism settings for one layer (node name -> attrs)."""
    inst = _inst(node)
    base = _base(node.op_type)

    def nxt(value: int, limit: int) -> int | None:
        bigger = [d for d in _divisors(limit) if d > value]
        return bigger[0] if bigger else None

    if base == "MVAU":
        simd, pe = int(inst.get_nodeattr("SIMD")), int(inst.get_nodeattr("PE"))
        wbits = inst.get_input_datatype(1).bitwidth()
        s = nxt(simd, int(inst.get_nodeattr("MW")))
        if s is not None and s * wbits <= MVAU_WWIDTH_MAX:
            yield {node.name: {"SIMD": s}}
        p = nxt(pe, int(inst.get_nodeattr("MH")))
        if p is not None:
            yield {node.name: {"PE": p}}
    elif base == "ConvolutionInputGenerator" and not inst.get_nodeattr("depthwise"):
        s = nxt(int(inst.get_nodeattr("SIMD")), int(inst.get_nodeattr("IFMChannels")))
        if s is not None:
            yield {node.name: {"SIMD": s}}
        elif node.op_type.endswith("_rtl") and not inst.get_nodeattr("parallel_window"):
            yield {node.name: {"parallel_window": 1}}
    elif base in ("Pool", "ConvolutionInputGenerator"):
        # a depthwise window generator and its Pool share one parallelism (FINN requires it)
        pool = node if base == "Pool" else model.find_consumer(node.output[0])
        swg = model.find_producer(pool.input[0])
        p = nxt(int(_inst(pool).get_nodeattr("PE")), int(_inst(pool).get_nodeattr("Channels")))
        if p is not None:
            yield {pool.name: {"PE": p}, swg.name: {"SIMD": p}}
    elif base == "LabelSelect":
        p = nxt(int(inst.get_nodeattr("PE")), int(inst.get_nodeattr("Labels")))
        if p is not None:
            yield {node.name: {"PE": p}}
    else:
        # SetFolding's rule for PE-folded layers: up to NumChannels, or the
        # innermost output dimension for layers without that attribute.
        try:
            channels = int(inst.get_nodeattr("NumChannels"))
        except (AttributeError, Exception):
            channels = int(inst.get_normal_output_shape()[-1])
        try:
            p = nxt(int(inst.get_nodeattr("PE")), channels)
        except (AttributeError, Exception):
            return
        if p is not None:
            yield {node.name: {"PE": p}}


@dataclass
class FitResult:
    model: Any
    estimate: DesignEstimate
    bisection_cycles: int
    bisection_fps: float
    evaluations: int


def fit_to_board(model: Any, board: Board, clock_ns: float, budget: float) -> FitResult:
    """The highest estimated throughput whose LUT, BRAM and DSP stay within ``budget``.

    Bisection on log(target cycles) with FINN's SetFolding (its resources grow,
    roughly, as the target shrinks), then a greedy pass: raise the bottleneck
    layer to its next legal PE/SIMD while the design still fits. Every decision
    uses FINN's own estimates for the board's part.
    """
    if not 0.0 < budget <= 1.0:
        raise BnnflowError(f"--budget must be in (0, 1], got {budget}")
    evaluations = 0

    def evaluate(cycles: int) -> tuple[Any, DesignEstimate]:
        nonlocal evaluations
        evaluations += 1
        folded = _set_folding(model, cycles)
        return folded, estimate_design(folded, board, clock_ns)

    # The most folded design SetFolding can make: each layer at PE = SIMD = 1.
    from qonnx.custom_op.registry import getCustomOp

    slowest = max(int(getCustomOp(n).get_exp_cycles()) for n in _set_folding(model, 1 << 40).graph.node)
    hi_model, hi_est = evaluate(slowest)
    if not hi_est.fits(budget):
        worst = max(hi_est.utilisation().items(), key=lambda kv: kv[1])
        raise BnnflowError(
            f"no folding fits {budget:.0%} of {board.name}: even the most folded design needs "
            f"{worst[1]:.0%} of its {worst[0]}"
        )
    lo, hi = 0.0, math.log(slowest)  # log cycles: lo is assumed not to fit, hi fits
    best_model, best_est = hi_model, hi_est
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        folded, est = evaluate(int(round(math.exp(mid))))
        if est.fits(budget):
            hi = mid
            if est.fps > best_est.fps:
                best_model, best_est = folded, est
        else:
            lo = mid
    bisection_cycles, bisection_fps = best_est.max_cycles, best_est.fps

    # Greedy refinement of the bottleneck: SetFolding raises every layer to the
    # same target, so the layer that sets the pace can often go one step further
    # within what the others left unused.
    while True:
        bottleneck = next(n for n in best_model.graph.node if n.name == best_est.bottleneck)
        improved = False
        candidates = []
        for option in _raise_options(best_model, bottleneck):
            evaluations += 1
            trial = apply_folding(best_model, {"Defaults": {}, **option})
            est = estimate_design(trial, board, clock_ns)
            if est.fits(budget) and est.max_cycles <= best_est.max_cycles:
                candidates.append((est.totals["LUT"], trial, est))
        if candidates:
            _, best_model, new_est = min(candidates, key=lambda c: c[0])
            improved = new_est.max_cycles < best_est.max_cycles or new_est.bottleneck != best_est.bottleneck
            best_est = new_est
        if not improved:
            break
    return FitResult(best_model, best_est, bisection_cycles, bisection_fps, evaluations)


def load_folding_json(path: str | Path) -> dict[str, Any]:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BnnflowError(f"cannot read folding JSON {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise BnnflowError(f"{path} is not a FINN folding JSON (expected an object)")
    return cfg
