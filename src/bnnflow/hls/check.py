"""``bnnflow check``: will this network map to FINN's XNOR-popcount dataflow? Answered before training.

It builds the network (named, or the user's own), checks every layer
(export/layers.py), exports the untrained network to QONNX and runs the
compile's own steps (steps.py ``COMPILE_STEPS``) from QONNX-to-FINN through
streamlining, conversion to hardware layers, the dataflow partition, folding
for the board and FINN's estimates, stopping before HLS code generation and
the verification (an untrained network has nothing to verify). What it
prints is the design: the layers, the binary multiply-accumulates per image,
the estimated frames/s and LUT/BRAM on the board; or, in one line, the first
layer or FINN node that does not map and what to change.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from bnnflow import data as bdata
from bnnflow.cliutil import HelpFormatter
from bnnflow.data import identity_of
from bnnflow.errors import BnnflowError
from bnnflow.export.layers import LayerInfo, check_layers
from bnnflow.export.qonnx_export import PixelScale, export_graphs
from bnnflow.finnlib.boards import board_names, get_board
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.finnlib.steps import StepFailed, run_steps
from bnnflow.hls import folding as fold
from bnnflow.hls.flow import CompileOptions, _finn_config
from bnnflow.hls.report import DesignEstimate
from bnnflow.hls.steps import COMPILE_STEPS, CompileConfig, step_estimate
from bnnflow.layout import CompileDir
from bnnflow.training.network import default_dataset, network_io, new_network

#: The compile's steps up to FINN's estimates: no verification, no code generation.
CHECK_STEPS = COMPILE_STEPS[: COMPILE_STEPS.index(step_estimate) + 1]

# Ops of an exported graph that FINN's binary flow has no unit for, and what to change.
_GRAPH_REFUSED = {
    "Concat": "concatenation has no XNOR-popcount unit in FINN; use a single chain of layers",
    "AveragePool": "average pooling has no binary unit in FINN; use nn.MaxPool2d",
    "GlobalAveragePool": "average pooling has no binary unit in FINN; use nn.MaxPool2d",
    "Relu": "a float activation; use QuantIdentity(bit_width=1)",
    "Tanh": "a float activation; use QuantIdentity(bit_width=1)",
    "Sigmoid": "a float activation; use QuantIdentity(bit_width=1)",
}


@dataclass
class CheckReport:
    """What ``bnnflow check`` found: the layers, the binary MACs and FINN's estimate for the board."""

    model: str
    dataset: str
    board: str
    layers: list[LayerInfo]
    estimate: DesignEstimate
    folding: list[dict[str, Any]] = field(default_factory=list)  # per FINN node: type, PE, SIMD
    seconds: float = 0.0
    graph: Any = field(default=None, repr=False)  # the folded hardware graph (qonnx ModelWrapper)

    @property
    def binary_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        est = self.estimate
        return {
            "model": self.model,
            "dataset": self.dataset,
            "board": self.board,
            "layers": [
                {
                    "name": la.name,
                    "kind": la.kind,
                    "out_shape": list(la.out_shape),
                    "macs": la.macs,
                    "note": la.note,
                }
                for la in self.layers
            ],
            "binary_macs_per_image": self.binary_macs,
            "estimated_fps": est.fps,
            "expected_fps": est.expected_fps,
            "bottleneck": est.bottleneck,
            "totals": est.totals,
            "utilisation": est.utilisation(),
            "finn_nodes": self.folding,
            "seconds": round(self.seconds, 2),
        }

    def lines(self) -> list[str]:
        est = self.estimate
        out = [f"{self.model} on {self.dataset}: maps to FINN's XNOR-popcount dataflow for {self.board}"]
        out.append(f"  {'layer':<28} {'kind':<20} {'output':<16} {'binary MACs':>12}")
        for la in self.layers:
            shape = "x".join(str(d) for d in la.out_shape) or "-"
            macs = f"{la.macs:,}" if la.macs else ""
            out.append(
                f"  {la.name:<28} {la.kind + (' ' + la.note if la.note else ''):<16} {shape:<16} {macs:>12}"
            )
        util = est.utilisation()
        out.append(f"  binary MACs per image: {self.binary_macs:,}")
        out.append(
            f"  estimate: {est.expected_fps:,.0f} frames/s at {1e3 / est.clock_ns:.0f} MHz "
            f"(bound: {est.bound}); LUT {est.totals['LUT']:,.0f} ({util['LUT']:.0%}), "
            f"BRAM18 {est.totals['BRAM_18K']:,.0f} ({util['BRAM_18K']:.0%}) of {est.board}"
        )
        out.append(
            f"  {len(self.folding)} FINN hardware layers, folding legal; checked in {self.seconds:.1f} s"
        )
        return out


def graph_problems(model: Any) -> str | None:
    """The first node of an exported QONNX graph that FINN's binary flow cannot map, in one line."""
    for node in model.graph.node:
        if node.op_type in _GRAPH_REFUSED:
            return f"node {node.name} ({node.op_type}): {_GRAPH_REFUSED[node.op_type]}"
        if node.op_type == "Add" and all(model.get_initializer(i) is None for i in node.input):
            return (
                f"node {node.name} (Add of two tensors): a residual addition has no XNOR-popcount unit "
                "in FINN; use a single chain of layers"
            )
    return None


def folding_problems(model: Any) -> list[str]:
    """Every node whose folding FINN would reject: SIMD must divide the input width, PE the output
    width, per node type as FINN's folded shapes assert, and FINN's own checks of each node."""
    from qonnx.custom_op.registry import getCustomOp

    problems = []
    for node in model.graph.node:
        if not node.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        inst = getCustomOp(node)
        rules = _folding_rules(node.op_type, inst)
        for what, width, factor in rules:
            if factor < 1 or width % factor:
                problems.append(f"{node.name} ({node.op_type}): {what} {factor} does not divide {width}")
        error = fold._fold_error(model, node)
        if error is not None:
            problems.append(f"{node.name} ({node.op_type}): FINN rejects its folding: {error}")
    return problems


def _folding_rules(op_type: str, inst: Any) -> list[tuple[str, int, int]]:
    """(attribute, width it must divide, its value) for each folding attribute of a FINN node."""
    attrs = inst.get_nodeattr_types()
    base = op_type.rsplit("_", 1)[0] if op_type.endswith(("_hls", "_rtl")) else op_type

    def get(name: str) -> int:
        return int(inst.get_nodeattr(name))

    if base == "MVAU":
        return [("SIMD", get("MW"), get("SIMD")), ("PE", get("MH"), get("PE"))]
    if base == "VVAU":
        return [("PE", get("Channels"), get("PE"))]
    if base == "ConvolutionInputGenerator":
        return [("SIMD", get("IFMChannels"), get("SIMD"))]
    if base == "FMPadding":
        return [("SIMD", get("NumChannels"), get("SIMD"))]
    if base == "LabelSelect":
        return [("PE", get("Labels"), get("PE"))]
    if base in ("Thresholding", "StreamingMaxPool", "ChannelwiseOp", "Pool") and "PE" in attrs:
        key = "Channels" if base == "Pool" else "NumChannels"
        return [("PE", get(key), get("PE"))]
    if "PE" in attrs:
        last_in = int(inst.get_normal_input_shape()[-1])
        last_out = int(inst.get_normal_output_shape()[-1])
        return [("PE", last_in, get("PE")), ("PE", last_out, get("PE"))]
    return []


def _node_folding(model: Any) -> list[dict[str, Any]]:
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for node in model.graph.node:
        if not node.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        attrs = getCustomOp(node).get_nodeattr_types()
        entry: dict[str, Any] = {"name": node.name, "op_type": node.op_type}
        for key in ("PE", "SIMD"):
            if key in attrs:
                entry[key] = int(getCustomOp(node).get_nodeattr(key))
        out.append(entry)
    return out


def _front_end(onnx_path: Path, work: Path, board: str, clock_ns: float, budget: float) -> tuple[Any, Any]:
    """FINN's front end and bnnflow's folding for the board on ``onnx_path``: (folded graph, estimate)."""
    from qonnx.core.modelwrapper import ModelWrapper

    brd = get_board(board)
    out = CompileDir(work / "compile")
    out.path.mkdir(parents=True)
    opts = CompileOptions(board=brd.name, clock_ns=clock_ns, budget=budget, n_verify=0)
    cfg = CompileConfig(
        finn=_finn_config(out.path, brd, opts),
        board=brd,
        clock_ns=clock_ns,
        out=out,
        final=out,
        source=onnx_path,
        folding_mode="fit",
        budget=budget,
    )
    inter = cfg.finn.get_intermediate_models_directory()
    shutil.copyfile(onnx_path, Path(inter) / CompileDir.INPUT_GRAPH)
    model = run_steps(ModelWrapper(str(onnx_path)), CHECK_STEPS, cfg)
    assert cfg.estimate is not None
    return model, cfg.estimate


# Where in FINN an assertion fired (the innermost function), and what the user changes.
_FINN_HINTS = {
    "get_hw_compatible_threshold_tensor": (
        "thresholds below 0 for unsigned pixel input: the input quantizer has levels below the "
        "smallest pixel; map pixels to [-1, 1] first (x = 2 * x - 1, as brevitas_examples' bnn_pynq "
        "networks do)"
    ),
}


def _what_to_change(exc: StepFailed) -> str:
    """FINN's message, or for an assertion without one, what it means for the network."""
    import traceback

    frames = traceback.extract_tb(exc.cause.__traceback__)
    hint = _FINN_HINTS.get(frames[-1].name) if frames else None
    if hint:
        return hint
    where = f" in {frames[-1].name}" if frames else ""
    return f"{exc.first_line}{where}; check its layers against docs/your-network.md"


def check_module(
    model: nn.Module,
    dataset: str,
    *,
    name: str = "network",
    board: str = "Pynq-Z2",
    clock_ns: float = 10.0,
    budget: float = 0.85,
) -> CheckReport:
    """Check ``model`` (untrained or trained, not modified) for ``dataset``'s images on ``board``."""
    info = identity_of(dataset)
    input_shape, num_classes = network_io(info)
    return check_design(
        model, input_shape, num_classes, info.pixel_max, name=name, dataset=dataset, board=board,
        clock_ns=clock_ns, budget=budget,
    )  # fmt: skip


def check_design(
    model: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    pixel_max: int,
    *,
    name: str = "network",
    dataset: str = "",
    board: str = "Pynq-Z2",
    clock_ns: float = 10.0,
    budget: float = 0.85,
) -> CheckReport:
    """The check for ``input_shape`` images of ``pixel_max`` and ``num_classes`` classes."""
    t0 = time.perf_counter()
    get_board(board)  # an unknown board fails before any work
    layers = check_layers(model, input_shape, num_classes)
    prepare_finn()
    net = copy.deepcopy(model).eval()
    with tempfile.TemporaryDirectory(prefix="bnnflow-check-") as scratch:
        work = Path(scratch)
        path = work / "model.onnx"
        _logits, deployed = export_graphs(PixelScale(net, pixel_max).eval(), input_shape)
        problem = graph_problems(deployed)
        if problem:
            raise BnnflowError(f"{name} does not map: {problem}")
        deployed.save(str(path))
        try:
            folded, estimate = _front_end(path, work, board, clock_ns, budget)
        except StepFailed as exc:
            raise BnnflowError(
                f"{name} does not map: FINN {exc.step} fails ({_what_to_change(exc)})"
            ) from None
        except BnnflowError as exc:
            raise BnnflowError(f"{name} does not map: {exc}") from None
        problems = folding_problems(folded)
        if problems:
            raise BnnflowError(f"internal: bnnflow chose an illegal folding: {problems[0]}")
    return CheckReport(
        model=name,
        dataset=dataset,
        board=get_board(board).name,
        layers=layers,
        estimate=estimate,
        folding=_node_folding(folded),
        seconds=time.perf_counter() - t0,
        graph=folded,
    )


def check_network(model: str, dataset: str | None = None, board: str = "Pynq-Z2", **kw: Any) -> CheckReport:
    """``bnnflow check``: build the named or user network for ``dataset`` and check it on ``board``."""
    dataset = dataset or default_dataset(model)
    net, _, _ = new_network(model, dataset)
    return check_module(net, dataset, name=model, board=board, **kw)


# --------------------------------------------------------------------------- CLI
def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="will a network map to FINN? layers, binary MACs, frames/s and LUT/BRAM, before training",
        description=(
            "Build the network, check every layer, then export it untrained and run FINN's front end "
            "(streamlining, hardware layers, dataflow partition, folding for the board, estimates). "
            "Prints the design, or the first layer or FINN node that does not map and what to change."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", help="a named network, path/to/net.py:build or package.module:build")
    p.add_argument("--dataset", help=bdata.DATASET_HELP + " (default: the named network's own)")
    p.add_argument("--board", default="Pynq-Z2", help=f"one of: {', '.join(board_names())} (default Pynq-Z2)")
    p.add_argument("--clock-ns", type=float, default=10.0, help="clock period in ns (default 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    report = check_network(args.model, args.dataset, args.board, clock_ns=args.clock_ns)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0


def check_before_training(model: str, dataset: str | None) -> None:
    """What ``bnnflow train`` runs first (unless --no-check): the check, one line on success."""
    report = check_network(model, dataset)
    est = report.estimate
    print(
        f"check: {model} maps to FINN for {report.board}: {report.binary_macs:,} binary MACs per image, "
        f"about {est.expected_fps:,.0f} frames/s ({report.seconds:.1f} s; skip with --no-check)",
        flush=True,
    )
