"""Folding: how many PEs and SIMD lanes each hardware layer gets.

Three ways, all ending in a FINN folding JSON (``{"Defaults": {}, node: {attr:
value}}``, the format ``step_apply_folding_config`` reads):

* ``published``: the finn-examples foldings of TFC-W1A1 and CNV-W1A1 for the
  PYNQ boards.
* ``fps:<N>``: FINN's own ``SetFolding`` for N frames/s at the clock.
* ``fit``: the fastest design FINN's estimates say fits within ``budget`` of the
  board, no faster than the board's DMAs can feed it: a bisection over
  SetFolding's target cycles, then a bisection over per-layer settings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.boards import Board
from bnnflow.hls.report import DesignEstimate, estimate_design
from bnnflow.runs import atomic_write_json

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
    ``Pool`` layer, where the published FINN designs had one StreamingMaxPool,
    and streams TFC's flatten through a Reshape layer; these layers, which the
    published JSON has no entry for, get the least parallelism that keeps them
    off the critical path of the published layers.
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
    # Other layers the published JSONs predate (finn-plus' streaming Reshape for
    # TFC's flatten): the least parallelism that keeps them off the critical path.
    for node in model.graph.node:
        if node.name in cfg or _base(node.op_type) in ("Pool", "ConvolutionInputGenerator"):
            continue
        for setting in _layer_settings(model, node) or []:
            attrs = setting[node.name]
            for k, v in attrs.items():
                _inst(node).set_nodeattr(k, v)
            if _inst(node).get_exp_cycles() <= target_cycles:
                break
        else:
            continue
        cfg[node.name] = attrs
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


@dataclass
class FitResult:
    model: Any
    estimate: DesignEstimate
    setfolding_fps: float  # best design from bisection over SetFolding's target alone
    evaluations: int


# One legal setting of one layer, or of a depthwise window generator and its
# Pool together (FINN requires their parallelism to match): node -> attrs.
Setting = dict[str, dict[str, Any]]


def _layer_settings(model: Any, node: Any) -> list[Setting] | None:
    """Every legal PE/SIMD (and memory style) setting of a layer; None if it has none."""
    inst = _inst(node)
    base = _base(node.op_type)
    types = inst.get_nodeattr_types()
    if base == "MVAU":
        wbits = inst.get_input_datatype(1).bitwidth()
        styles = [v for v in ("block", "distributed") if v in (types.get("ram_style", [None] * 4)[3] or ())]
        # DSP MACs only pay off for integer (non-XNOR) layers, e.g. CNV's 8-bit first conv;
        # in XNOR mode a product is one LUT input, and the DSP estimate would be meaningless.
        res_types = ["lut"] if inst.get_nodeattr("binaryXnorMode") else ["lut", "dsp"]
        out = []
        for pe in _divisors(int(inst.get_nodeattr("MH"))):
            for simd in _divisors(int(inst.get_nodeattr("MW"))):
                if simd * wbits > MVAU_WWIDTH_MAX:
                    continue
                for style in styles or [None]:
                    for res_type in res_types:
                        attrs: dict[str, Any] = {"PE": pe, "SIMD": simd, "resType": res_type}
                        if style is not None:
                            attrs["ram_style"] = style
                        out.append({node.name: attrs})
        return out
    if base == "ConvolutionInputGenerator":
        if inst.get_nodeattr("depthwise"):
            return None  # set together with its Pool
        simds = [
            {node.name: {"SIMD": s, "parallel_window": 0}}
            for s in _divisors(int(inst.get_nodeattr("IFMChannels")))
        ]
        if node.op_type.endswith("_rtl"):
            full = int(inst.get_nodeattr("IFMChannels"))
            simds.append({node.name: {"SIMD": full, "parallel_window": 1}})
        else:
            for s in simds:
                s[node.name].pop("parallel_window")
        return simds
    if base == "Pool":
        swg = model.find_producer(node.input[0])
        return [
            {node.name: {"PE": p}, swg.name: {"SIMD": p}}
            for p in _divisors(int(inst.get_nodeattr("Channels")))
        ]
    if base == "LabelSelect":
        return [{node.name: {"PE": p}} for p in _divisors(int(inst.get_nodeattr("Labels")))]
    if "PE" not in types:
        return None
    if base == "Reshape":
        # A streaming reshape folds both its input and its output along their last
        # axes, so its PE must divide both (TFC's 28 -> 784; SFC/LFC failed codegen
        # when PE=49 was chosen from the output's 784 alone).
        last_in = int(inst.get_normal_input_shape()[-1])
        last_out = int(inst.get_normal_output_shape()[-1])
        return [{node.name: {"PE": p}} for p in _divisors(math.gcd(last_in, last_out))]
    try:
        channels = int(inst.get_nodeattr("NumChannels"))
    except (AttributeError, Exception):
        channels = int(inst.get_normal_output_shape()[-1])
    return [{node.name: {"PE": p}} for p in _divisors(channels)]


def _cost_table(model: Any, board: Board) -> list[list[tuple[int, tuple[float, float, float], Setting]]]:
    """Per layer group: (cycles, (LUT, BRAM, DSP) as fractions of the board, setting).

    Cycles and resources are FINN's per-node estimates with the setting applied.
    """
    import copy

    from qonnx.core.modelwrapper import ModelWrapper

    scratch = ModelWrapper(copy.deepcopy(model.model))
    by_name = {n.name: n for n in scratch.graph.node}
    cap = board.capacity()
    table = []
    for node in list(scratch.graph.node):
        settings = _layer_settings(scratch, node)
        if not settings:
            continue
        rows = []
        for setting in settings:
            cycles, lut, bram, dsp = 0, 0.0, 0.0, 0.0
            for name, attrs in setting.items():
                inst = _inst(by_name[name])
                for k, v in attrs.items():
                    inst.set_nodeattr(k, v)
            for name in setting:
                inst = _inst(by_name[name])
                res = inst.node_res_estimation(board.part)
                cycles = max(cycles, int(inst.get_exp_cycles()))
                lut += res["LUT"] / cap["LUT"]
                bram += res["BRAM_18K"] / cap["BRAM_18K"]
                dsp += res["DSP"] / cap["DSP"]
            rows.append((cycles, (lut, bram, dsp), setting))
        table.append(rows)
    return table


def _cheapest_for(
    table: list[list[tuple[int, tuple[float, float, float], Setting]]],
    target: int,
    weights: tuple[float, float, float] | None,
) -> dict[str, Any]:
    """For each layer, the cheapest setting that meets ``target`` cycles (else the fastest).

    ``weights`` prices (LUT, BRAM, DSP) as fractions of the board; None means
    fewest LUTs, then fewest BRAM, then fewest DSP. The layers' costs add up
    independently, so per-layer minima are the design's minimum in either order.
    """
    cfg: dict[str, Any] = {"Defaults": {}}
    for rows in table:

        def cost(row: tuple[int, tuple[float, float, float], Setting]) -> Any:
            if weights is None:
                return row[1]
            return sum(w * r for w, r in zip(weights, row[1], strict=True))

        meeting = [r for r in rows if r[0] <= target]
        best = (
            min(meeting, key=lambda r: (cost(r), r[0]))
            if meeting
            else min(rows, key=lambda r: (r[0], cost(r)))
        )
        for name, attrs in best[2].items():
            cfg[name] = attrs
    return cfg


# Relative prices of (LUT, BRAM, DSP) per fraction of the board tried by the
# refinement: which memory style a layer should get depends on which resource
# the rest of the design leaves free, so a few exchange rates are tried.
PRICE_SETS = (
    (1.0, 1.0, 1.0),
    (1.0, 0.5, 1.0),
    (1.0, 0.2, 1.0),
    (1.0, 0.05, 1.0),
    (0.5, 1.0, 1.0),
    (0.2, 1.0, 1.0),
)


def _fold_error(model: Any, node: Any) -> str | None:
    """Why FINN rejects the layer's fold, or None: its folded shapes and memory depths assert it."""
    from finn.util.exception import FINNError

    inst = _inst(node)
    try:
        for ind in range(len(node.input)):
            if model.get_initializer(node.input[ind]) is None:
                inst.get_folded_input_shape(ind)
        inst.get_folded_output_shape()
        for depth in ("calc_wmem", "calc_tmem"):  # MVAU: MH % PE and MW % SIMD
            try:
                getattr(inst, depth)()
            except (AttributeError, NotImplementedError):
                pass  # the layer has no such memory
    except (AssertionError, FINNError, ValueError, ZeroDivisionError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def _foldable(model: Any) -> bool:
    """Whether FINN accepts every layer's fold.

    SetFolding can choose a streaming Reshape's PE from its output alone (8 for
    TFC's 28 -> 784 at 98 cycles), which FINN's code generation and DMA
    insertion reject.
    """
    return all(_fold_error(model, node) is None for node in model.graph.node)


def _better(est: DesignEstimate, best: DesignEstimate, with_io: bool) -> bool:
    """Faster (by the expected rate, or by compute alone), then fewer LUTs, then fewer BRAM."""
    fast, best_fast = (est.expected_fps, best.expected_fps) if with_io else (est.fps, best.fps)
    if fast != best_fast:
        return fast > best_fast
    return (est.totals["LUT"], est.totals["BRAM_18K"]) < (best.totals["LUT"], best.totals["BRAM_18K"])


def fit_to_board(
    model: Any, board: Board, clock_ns: float, budget: float, io_bound: bool = True
) -> FitResult:
    """The highest estimated throughput whose LUT, BRAM and DSP stay within ``budget``.

    Two searches over FINN's estimates for the board's part, the faster design wins:

    1. bisection on log(target cycles) with FINN's own SetFolding;
    2. bisection over the bottleneck cycles every layer can reach, giving each
       layer the setting FINN estimates cheapest (LUT, BRAM, DSP weighed by the
       board's capacity) that meets the target. SetFolding raises SIMD before
       PE and never trades LUTRAM for BRAM, so at the same bottleneck it often
       spends more than needed; this is the refinement of the bottleneck layers'
       PE/SIMD that turns that slack into throughput. The cost of a layer
       only grows as its target shrinks, so the search is exact over that set.

    With ``io_bound`` (the default) throughput is what the board's DMAs let
    through as well (iobound.py): no search goes below the DMA's cycles per
    frame, since a faster fold only buys idle LUTs, and among the designs that
    reach the bound the one with the fewest LUTs, then BRAM, wins.
    ``io_bound=False`` is the search on the compute estimate alone.
    """
    if not 0.0 < budget <= 1.0:
        raise BnnflowError(f"--budget must be in (0, 1], got {budget}")
    # The most folded design SetFolding can make: each layer at PE = SIMD = 1.
    base = _set_folding(model, 1 << 40)
    slowest = max(int(_inst(n).get_exp_cycles()) for n in base.graph.node)
    search = _Search(board, clock_ns, budget, io_bound, base)
    if not search.best_est.fits(budget):
        worst = max(search.best_est.utilisation().items(), key=lambda kv: kv[1])
        raise BnnflowError(
            f"no folding fits {budget:.0%} of {board.name}: even the most folded design needs "
            f"{worst[1]:.0%} of its {worst[0]}"
        )
    # No target below the DMA's cycles per frame gains anything. The bound is
    # taken from the most folded design; a fold that changes the DMA's byte
    # padding is still judged by its own bound (estimate_design computes it).
    io = search.best_est.io
    floor = min(io.cycles, slowest, _dense_input_cycles(model, board, io.cycles)) if io_bound and io else 1
    _bisect_setfolding(search, model, floor, slowest)
    setfolding_fps = search.rate(search.best_est)
    _bisect_cheapest(search, base, floor, slowest)
    return FitResult(search.best_model, search.best_est, setfolding_fps, search.evaluations)


def _dense_input_cycles(model: Any, board: Board, io_cycles: int) -> int:
    """For an input narrower than a byte, the input DMA's cycles per frame with no padding; else
    ``io_cycles``, the most folded design's.

    The most folded design's bound is no floor for a 1-bit input (``compile --host-binarize``):
    there every 1-bit word is padded to a byte, 8x the bytes of a fold whose words are whole
    bytes, so the floor is the densest the input can be moved."""
    from bnnflow.hls.iobound import port_bits

    inp = model.graph.input[0].name
    width = model.get_tensor_datatype(inp).bitwidth()
    if width % 8 == 0:
        return io_cycles
    bits = int(math.prod(model.get_tensor_shape(inp))) * width
    return max(1, -(-bits // port_bits(board)))


class _Search:
    """The best design found so far within the budget, and how many designs were estimated."""

    def __init__(self, board: Board, clock_ns: float, budget: float, io_bound: bool, start: Any) -> None:
        self.board, self.clock_ns, self.budget, self.io_bound = board, clock_ns, budget, io_bound
        self.evaluations = 0
        self.best_model, self.best_est = start, self.check(start)

    def check(self, folded: Any) -> DesignEstimate:
        self.evaluations += 1
        return estimate_design(folded, self.board, self.clock_ns, with_io=self.io_bound)

    def rate(self, est: DesignEstimate) -> float:
        return est.expected_fps if self.io_bound else est.fps

    def consider(self, folded: Any) -> bool:
        """Whether ``folded`` fits; the best design so far if it also beats it."""
        if not _foldable(folded):
            return False  # counted as not fitting: the bisections move to more folded designs
        est = self.check(folded)
        if not est.fits(self.budget):
            return False
        if _better(est, self.best_est, self.io_bound):
            self.best_model, self.best_est = folded, est
        return True


def _bisect_setfolding(search: _Search, model: Any, floor: int, slowest: int) -> None:
    """Search 1: bisection on log(target cycles) with FINN's own SetFolding."""
    lo, hi = 0.0, math.log(slowest)  # log cycles: lo is assumed not to fit, hi fits
    if floor > 1:
        if search.consider(_set_folding(model, floor)):
            lo = hi = math.log(floor)  # SetFolding's least parallelism that reaches the bound
        else:
            lo = math.log(floor)
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        if search.consider(_set_folding(model, int(round(math.exp(mid))))):
            hi = mid
        else:
            lo = mid


def _bisect_cheapest(search: _Search, base: Any, floor: int, slowest: int) -> None:
    """Search 2: bisection over the bottleneck cycles, each layer at its cheapest setting that meets them."""
    table = _cost_table(base, search.board)
    targets = sorted({r[0] for rows in table for r in rows if floor <= r[0] <= slowest} | {floor})
    for weights in PRICE_SETS:
        lo_i, hi_i = -1, len(targets) - 1  # targets[hi_i] fits (the most folded design does)
        while hi_i - lo_i > 1:
            mid_i = (lo_i + hi_i) // 2
            if 1e9 / search.clock_ns / targets[mid_i] < search.rate(search.best_est):
                hi_i = mid_i  # no faster than what is already found: look only at faster targets
                continue
            if search.consider(apply_folding(base, _cheapest_for(table, targets[mid_i], weights))):
                hi_i = mid_i
            else:
                lo_i = mid_i
    if floor > 1:  # fewest LUTs, then BRAM, that reach the bound (if that fits)
        search.consider(apply_folding(base, _cheapest_for(table, floor, None)))


def apply_folding_json(model: Any, path: str | Path) -> Any:
    """Apply a user's folding JSON, refusing what FINN's ApplyConfig would pass over or choke on.

    ApplyConfig only logs entries for nodes the graph does not have, so a
    mistyped or stale name would compile silently with that layer unfolded.
    """
    cfg = load_folding_json(path)
    by_name = {n.name: n for n in model.graph.node}
    foldable = [name for name in folding_dict(model) if name != "Defaults"]
    unknown = [name for name in cfg if name != "Defaults" and name not in by_name]
    if unknown:
        raise BnnflowError(
            f"folding JSON {path} names nodes this graph does not have: {', '.join(unknown)}; "
            f"its foldable nodes: {', '.join(foldable)}"
        )
    for name, attrs in cfg.items():
        if not isinstance(attrs, dict):
            raise BnnflowError(f"folding JSON {path}: {name} must map to an object, got {attrs!r}")
        if name == "Defaults":
            continue
        node = by_name[name]
        known = _inst(node).get_nodeattr_types()
        bad = [attr for attr in attrs if attr not in known]
        if bad:
            raise BnnflowError(
                f"folding JSON {path}: {name} ({node.op_type}) has no attribute {bad[0]!r}; "
                f"it has {', '.join(a for a in HW_ATTRS if a in known)}"
            )
    try:
        folded = apply_folding(model, cfg)
    except (AssertionError, AttributeError, KeyError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BnnflowError(f"folding JSON {path} cannot be applied: {first}") from None
    for node in folded.graph.node:
        error = _fold_error(folded, node)
        if error is not None:
            attrs = folding_dict(folded).get(node.name, {})
            fold = ", ".join(f"{k}={attrs[k]}" for k in ("PE", "SIMD") if k in attrs)
            raise BnnflowError(f"folding JSON {path}: FINN rejects {node.name} ({fold}): {error}")
    return folded


def load_folding_json(path: str | Path) -> dict[str, Any]:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BnnflowError(f"cannot read folding JSON {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise BnnflowError(f"{path} is not a FINN folding JSON (expected an object)")
    return cfg
