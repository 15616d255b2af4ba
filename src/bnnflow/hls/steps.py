"""The compile's steps: FINN's own, amended where bnnflow must, and bnnflow's between them.

``COMPILE_STEPS`` is the compile; ``FRONTEND_STEPS`` and ``BACKEND_STEPS``
without bnnflow's folding choice rebuild a retrained checkpoint with the
compiled design's folding (runtime_weights.py). Each step is ``step(model, cfg) -> model`` with a
``CompileConfig``; finnlib/steps.py runs them and says how they map to FINN's
builder steps.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.bnncpu import CpuEngine
from bnnflow.bnncpu.writer import export_in_compile
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.boards import Board
from bnnflow.finnlib.finn_env import prepare_finn, quiet_finn, step_functions
from bnnflow.finnlib.host_threshold import TakeOutInputThreshold, host_bits, write_thresholds
from bnnflow.finnlib.padding import map_binary_padding
from bnnflow.finnlib.runtime_writable import MakeRuntimeWritable
from bnnflow.finnlib.steps import FINN_FAILURES, Step, after, amended, finn_step
from bnnflow.finnlib.xnor_acc import CorrectXnorAccumulators, thresholds_by_node, xnor_mvaus
from bnnflow.hls import folding as fold
from bnnflow.hls.cppsim import CppSimResult, HlsSim, cppsim_check
from bnnflow.hls.iobound import uint8_input_figures
from bnnflow.hls.report import DesignEstimate, estimate_design, plot_estimate
from bnnflow.hls.verify import VerifyResult, cache_key, verify_chain
from bnnflow.layout import CompileDir, CompileInfo
from bnnflow.runs import atomic_write_json

RESUME_STEP = "step_generate_hardware"  # where bnnflow bitstream hands over to FINN's builder

# Ops that may stay outside the dataflow partition: FINN's own layout glue
# at the graph's edges (NCHW->NHWC for CNV).
HOST_OPS = {"Transpose", "Reshape", "StreamingDataflowPartition"}

Log = Callable[[str], None]


def _silent(_msg: str) -> None:
    pass


@dataclass
class CompileConfig:
    """The ``cfg`` each compile step gets: FINN's config, bnnflow's settings, what earlier steps found."""

    finn: Any  # finn.builder.build_dataflow_config.DataflowBuildConfig, output_dir = out
    board: Board
    clock_ns: float
    out: CompileDir  # where this build writes
    log: Log = _silent
    runtime_weights: bool = False
    host_binarize: bool = False  # the input threshold runs on the host (finnlib/host_threshold.py)
    failures: tuple[type[BaseException], ...] = FINN_FAILURES
    # The compile's own settings.
    final: CompileDir | None = None  # where ``out`` is moved once complete
    source: Path | None = None  # the QONNX model
    folding_mode: str = "fit"
    folding_arg: Any = None
    budget: float = 0.85
    images: np.ndarray | None = None  # for the verification chain
    labels: np.ndarray | None = None
    verify_workers: int | None = None
    verify_cache: Path | None = None
    sim: HlsSim | None = None
    cppsim_images: np.ndarray | None = None
    # A rebuild's reference: the compiled design's specialised graph.
    reference: Any = None
    # What the steps found.
    folding_info: dict[str, Any] = field(default_factory=dict)
    estimate: DesignEstimate | None = None
    verification: VerifyResult | None = None
    cppsim: CppSimResult | None = None
    cpu_model: dict[str, Any] = field(default_factory=dict)
    host_op: dict[str, Any] | None = None  # --host-binarize: the threshold op the host applies


def _streamlined(model: Any, cfg: CompileConfig) -> Any:
    """After FINN's streamlining: binary padding mapped (padding.py); with --host-binarize, the
    input's MultiThreshold taken out and its thresholds written to host_thresholds.json."""
    model = map_binary_padding(model, cfg)
    if not cfg.host_binarize:
        return model
    take = TakeOutInputThreshold()
    model = model.transform(take)
    assert take.thresholds is not None
    cfg.host_op = write_thresholds(cfg.out.host_thresholds, take.thresholds)
    shape = "x".join(map(str, take.thresholds.shape))
    cfg.log(f"  host-binarize: input threshold taken out of the graph ({shape} thresholds), input BINARY")
    return model


def minimize_bit_width(name: str) -> Step:
    """FINN's bit-width minimisation step ``name``, then the XNOR accumulators corrected (xnor_acc.py)."""

    def run(model: Any, cfg: CompileConfig) -> Any:
        before = thresholds_by_node(model)
        model = step_functions()[name](model, cfg.finn)
        return model.transform(CorrectXnorAccumulators(before))

    return Step(name, run, name)


def _only_hardware_layers(model: Any, cfg: CompileConfig) -> Any:
    """After conversion only FINN hardware layers and layout glue may remain; then runtime-writable."""
    left = [
        f"{n.name} ({n.op_type})"
        for n in model.graph.node
        if not n.domain.startswith("finn.custom_op.fpgadataflow") and n.op_type not in HOST_OPS
    ]
    if left or not any(n.op_type == "MVAU" for n in model.graph.node):
        raise BnnflowError(
            "FINN cannot map these layers to hardware: "
            + (", ".join(left) or "no weight layer became an MVAU")
        )
    # qonnx's LowerConvsToMatMul takes a convolution with as many groups as input channels and as
    # many output channels as input channels for a depthwise one; with 1 channel in and out, groups=1
    # is that, and FINN makes it a VVAU: no XNOR-popcount layer, not in the engine's model format.
    depthwise = next((n for n in model.graph.node if n.op_type == "VVAU"), None)
    if depthwise is not None:
        raise BnnflowError(
            f"FINN maps a convolution with 1 input and 1 output channel to a depthwise layer "
            f"({depthwise.name}, VVAU), which bnnflow does not compile; give it 2 or more output channels"
        )
    # Before FINN's first bit-width minimisation: runtime_weights.py says why.
    return model.transform(MakeRuntimeWritable()) if cfg.runtime_weights else model


def _all_in_partition(model: Any, cfg: CompileConfig) -> Any:
    """Every compute layer must be inside the dataflow partition."""
    from qonnx.core.modelwrapper import ModelWrapper

    path = cfg.out.parent_graph
    if not path.is_file():
        raise BnnflowError("FINN found no layer it can map to hardware in this model")
    parent = ModelWrapper(str(path))
    left = [f"{n.name} ({n.op_type})" for n in parent.graph.node if n.op_type not in HOST_OPS]
    if left:
        raise BnnflowError(f"FINN cannot map these layers to hardware: {', '.join(left)}")
    return model


@after("step_specialize_layers")
def step_choose_folding(model: Any, cfg: CompileConfig) -> Any:
    """The folding, decided on the specialised graph and handed to FINN as its folding JSON."""
    mode, arg = cfg.folding_mode, cfg.folding_arg
    info: dict[str, Any] = {"mode": mode}
    t0 = time.perf_counter()
    with open(cfg.out.build_log, "a") as sink, quiet_finn(sink):
        if mode == "published":
            info["preset"], folded = fold.published_folding(model)
        elif mode == "fps":
            folded = fold.target_fps_folding(model, arg, cfg.clock_ns)
            info["target_fps"] = arg
        elif mode == "json":
            folded = fold.apply_folding_json(model, arg)
            info["source"] = str(arg)
        else:
            fit = fold.fit_to_board(model, cfg.board, cfg.clock_ns, cfg.budget)
            folded = fit.model
    if mode == "fit":
        info.update(
            budget=cfg.budget,
            setfolding_fps=fit.setfolding_fps,
            evaluations=fit.evaluations,
            search_seconds=round(time.perf_counter() - t0, 2),
        )
        cfg.log(
            f"  fit-to-board: {fit.evaluations} designs estimated; SetFolding alone "
            f"{fit.setfolding_fps:,.0f} frames/s, with per-layer refinement "
            f"{fit.estimate.expected_fps:,.0f}"
        )
    fold.write_folding_json(folded, cfg.out.folding)
    cfg.folding_info = info
    return model  # step_apply_folding_config applies folding.json, as FINN's builder would


@after("step_assign_ddr_weight_offsets")
def step_estimate(model: Any, cfg: CompileConfig) -> Any:
    """Per-layer cycles and resources against the board (estimates.json, compile.json)."""
    est = estimate_design(model, cfg.board, cfg.clock_ns)
    if cfg.folding_mode == "fit" and not est.fits(cfg.budget):  # the search guarantees it; keep it honest
        raise BnnflowError(f"internal: fitted design exceeds {cfg.budget:.0%} of {cfg.board.name}")
    est.extra["binary_xnor_mvaus"] = len(xnor_mvaus(model))
    if cfg.host_op is not None and est.io is not None:
        pixels = int(np.prod(model.get_tensor_shape(model.graph.input[0].name)[1:]))
        est.extra["host_binarize"] = uint8_input_figures(est.io, pixels)
    cfg.estimate = est
    return model


def _cached_verify(cfg: CompileConfig) -> VerifyResult:
    """The verification chain, or a passed one of the same graphs and images from ``cfg.verify_cache``.

    The chain runs on the QONNX model and the graphs after step_streamline and
    step_convert_to_hw, which come before board-specific specialisation and
    folding: FINN derives them the same way for every board. The cache key
    (``cache_key``) is the sha256 of the export, the two graphs' structure
    (not their bytes: FINN gives inserted tensors random names), the images,
    the labels and the executing packages' versions, so compiling the same
    export for a second board reuses the first board's result, while any
    change to the model, the images or FINN runs it again. Only passed
    verifications are stored.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    assert cfg.source is not None and cfg.images is not None
    q = cleanup_model(ModelWrapper(str(cfg.source)))
    streamlined = ModelWrapper(str(cfg.out.step_graph("step_streamline")))
    hw = ModelWrapper(str(cfg.out.step_graph("step_convert_to_hw")))
    entry = None
    if cfg.verify_cache is not None:
        key = cache_key(cfg.source, [streamlined, hw], cfg.images, cfg.labels, cfg.host_op)
        entry = cfg.verify_cache / f"{key}.json"
        if entry.is_file():
            try:
                data = json.loads(entry.read_text())
                if data.get("first_mismatch") is None and data.get("n_images") == len(cfg.images):
                    return VerifyResult.from_json(data, cached_from=str(entry))
            except (OSError, ValueError, KeyError):
                pass  # unreadable or foreign entry: verify again and overwrite it
    result = verify_chain(
        q, streamlined, hw, cfg.images, cfg.labels, workers=cfg.verify_workers, host_op=cfg.host_op
    )
    if entry is not None and result.ok:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(entry, result.to_json())
    return result


@after("step_assign_ddr_weight_offsets")
def step_verify(model: Any, cfg: CompileConfig) -> Any:
    """QONNX, streamlined and hardware-layer graphs agree on the test images (verification.json)."""
    if cfg.images is None or not len(cfg.images):
        return model
    cfg.log(f"  verifying on {len(cfg.images)} test images ...")
    result = _cached_verify(cfg)
    atomic_write_json(cfg.out.verification, result.to_json())
    if not result.ok:
        raise BnnflowError(f"verification failed: {result.first_mismatch}")
    how = (
        f"reused from {result.cached_from}"
        if result.cached_from
        else f"{result.images_per_s:.1f} images/s, {result.workers} worker(s)"
    )
    cfg.log(f"  verified {result.n_images} images: labels, accumulators and activations identical ({how})")
    cfg.verification = result
    return model


def _collect_codegen(model: Any, cfg: CompileConfig) -> Any:
    """Each layer's generated sources into the output folder, the graph pointing there; model_hw.onnx.

    PrepareIP keeps code it finds at ``code_gen_dir_ipgen``, so the builder
    reuses these sources rather than regenerating them in FINN_BUILD_DIR.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    assert cfg.final is not None
    build_dir = prepare_finn()
    for node in model.graph.node:
        inst = getCustomOp(node)
        try:
            src = inst.get_nodeattr("code_gen_dir_ipgen")
        except (AttributeError, Exception):
            continue
        if not src or not Path(src).is_dir():
            continue
        shutil.copytree(src, cfg.out.codegen / node.name, dirs_exist_ok=True)
        inst.set_nodeattr("code_gen_dir_ipgen", str(cfg.final.codegen / node.name))
        if Path(src).is_relative_to(build_dir):  # FINN's scratch copy is no longer referenced
            shutil.rmtree(src, ignore_errors=True)
    model.save(str(cfg.out.hw_graph))
    # dataflow_parent.onnx names its partition by absolute path; make it the final one.
    parent = ModelWrapper(str(cfg.out.parent_graph))
    for node in parent.get_nodes_by_op_type("StreamingDataflowPartition"):
        inst = getCustomOp(node)
        inst.set_nodeattr(
            "model", str(inst.get_nodeattr("model")).replace(str(cfg.out.path), str(cfg.final.path))
        )
    parent.save(str(cfg.out.parent_graph))
    return model


@after("step_hw_codegen")
def step_cpu_model(model: Any, cfg: CompileConfig) -> Any:
    """The CPU engine's model file from model_hw.onnx (bnncpu)."""
    cfg.cpu_model = export_in_compile(cfg.out.path, cfg.log)
    return model


@after("step_hw_codegen")
def step_cppsim(model: Any, cfg: CompileConfig) -> Any:
    """With --cppsim N: the generated HLS C++ in FINN's cppsim against FINN's Python and the CPU engine."""
    from qonnx.core.modelwrapper import ModelWrapper

    images = cfg.cppsim_images
    if cfg.sim is None or images is None or not len(images):
        return model
    sim = cfg.sim.describe()
    cfg.log(f"  cppsim: compiling the generated HLS C++ ({sim}), then {len(images)} test images ...")
    reference = ModelWrapper(str(cfg.out.step_graph("step_convert_to_hw")))
    with open(cfg.out.build_log, "a") as sink:
        print("== cppsim", file=sink)
        # FINN's graphs take the host's bits; the CPU engine (below) the images
        result = cppsim_check(model, reference, host_bits(images, cfg.host_op), cfg.sim, sink=sink)
    atomic_write_json(cfg.out.cppsim, result.to_json())
    if not result.ok:
        raise BnnflowError(f"cppsim check failed: {result.first_mismatch}")
    cfg.log(f"  {result.summary()}")
    cfg.cppsim = result
    if cfg.cpu_model.get("cpu_model"):
        _engine_against_cppsim(cfg, result, images)
    return model


def _engine_against_cppsim(cfg: CompileConfig, cppsim: CppSimResult, images: np.ndarray) -> None:
    """The CPU engine's classes and scores against the generated C++'s, image by image (cppsim.json)."""
    with CpuEngine(cfg.out.cpu_model) as engine:
        classes, scores = engine.run(np.ascontiguousarray(images[: cppsim.images_checked]), threads=0)
    problem = cppsim.mismatch_with(classes, scores, "the CPU engine")
    report = json.loads(cfg.out.cppsim.read_text())
    report["cpu_engine"] = {"images": cppsim.images_checked, "first_mismatch": problem}
    atomic_write_json(cfg.out.cppsim, report)
    if problem:
        raise BnnflowError(f"the CPU engine differs from the generated C++: {problem}")
    cfg.log(
        f"  CPU engine: classes and scores identical to the generated C++ on {cppsim.images_checked} images"
    )


def build_config_dict(
    board: Board, clock_ns: float, out_dir: Path, runtime_weights: bool = False
) -> dict[str, Any]:
    """The DataflowBuildConfig that finishes the design from RESUME_STEP with FINN's builder."""
    from finn.builder.build_dataflow_config import default_build_dataflow_steps

    steps = list(default_build_dataflow_steps)
    steps.insert(steps.index(RESUME_STEP), "step_hw_codegen")
    return {
        "output_dir": str(out_dir),
        "board": board.name,
        "fpga_part": board.part,
        "shell_flow_type": "vivado_zynq",
        "synth_clk_period_ns": clock_ns,
        "folding_config_file": CompileDir.FOLDING,
        "steps": steps,
        "start_step": RESUME_STEP,
        "generate_outputs": [
            "estimate_reports",
            "stitched_ip",
            "bitfile",
            "pynq_driver",
            "deployment_package",
        ],
        "save_intermediate_models": True,
        "standalone_thresholds": runtime_weights,
    }


def load_build_config(path: str | Path) -> Any:
    """Load a compile folder's DataflowBuildConfig the way FINN does (paths fixed up)."""
    from finn.builder.build_dataflow_config import DataflowBuildConfig

    return DataflowBuildConfig.construct_from(Path(path).absolute())


@after("step_hw_codegen")
def step_summary(model: Any, cfg: CompileConfig) -> Any:
    """estimates.json and .png, FINN's build config for `bnnflow bitstream`, and compile.json."""
    est, out, final = cfg.estimate, cfg.out, cfg.final
    assert est is not None and final is not None
    atomic_write_json(out.estimates, est.to_json())
    plot_estimate(est, out.estimates_plot)
    atomic_write_json(
        out.build_config, build_config_dict(cfg.board, cfg.clock_ns, final.path, cfg.runtime_weights)
    )
    load_build_config(out.build_config)  # refuse to hand over a config FINN rejects
    info = CompileInfo(
        input=str(cfg.source),
        board=cfg.board.name,
        part=cfg.board.part,
        clock_ns=cfg.clock_ns,
        folding=cfg.folding_info,
        estimated_fps=est.fps,
        bottleneck=est.bottleneck,
        io_bound=est.io.to_json() if est.io else None,
        expected_fps=est.expected_fps,
        throughput_bound=est.bound,
        totals=est.totals,
        utilisation=est.utilisation(),
        verification=cfg.verification.to_json() if cfg.verification else None,
        cppsim=cfg.cppsim.to_json(per_image=False) if cfg.cppsim else None,
        resume_step=RESUME_STEP,
        cpu_model=cfg.cpu_model.get("cpu_model"),
        cpu_model_error=cfg.cpu_model.get("cpu_model_error"),
        runtime_weights=cfg.runtime_weights,
        host_binarize=cfg.host_op is not None,
    )
    atomic_write_json(out.summary, info.to_json())
    return model


# FINN's default order up to code generation (finn.builder.build_dataflow_config.
# default_build_dataflow_steps); FINN's step_hw_codegen is the code generation its
# default list runs inside step_generate_hardware, where `bnnflow bitstream` resumes.
FRONTEND_STEPS: list[Step] = [
    finn_step("step_qonnx_to_finn"),
    finn_step("step_tidy_up"),
    amended("step_streamline", _streamlined),
    amended("step_convert_to_hw", _only_hardware_layers),
    minimize_bit_width("step_minimize_bit_width_initial"),
    finn_step("step_create_dataflow_partition"),
    amended("step_specialize_layers", _all_in_partition),
]
BACKEND_STEPS: list[Step] = [
    finn_step("step_target_fps_parallelization"),
    finn_step("step_apply_folding_config"),
    minimize_bit_width("step_minimize_bit_width"),
    finn_step("step_transpose_decomposition"),
    finn_step("step_generate_estimate_reports"),
    finn_step("step_assign_ddr_weight_offsets"),
]
COMPILE_STEPS: list[Step] = [
    *FRONTEND_STEPS,
    step_choose_folding,
    *BACKEND_STEPS,
    step_estimate,
    step_verify,
    amended("step_hw_codegen", _collect_codegen),
    step_cpu_model,
    step_cppsim,
    step_summary,
]
