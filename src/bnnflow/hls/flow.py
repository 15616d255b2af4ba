"""``compile_model``: QONNX to a folded FINN dataflow design with generated HLS/RTL.

The output folder mirrors FINN's builder output (``intermediate_models/``,
``report/``) so that ``build_dataflow_cfg`` resumes from it; see finn_env.py
for why the steps are called here rather than through the builder.

    compile/<board>/
      model_hw.onnx               folded, specialised hardware-layer graph (after codegen)
      folding.json                FINN folding config (folding_config_file)
      dataflow_build_config.json  DataflowBuildConfig for the remaining steps
      estimates.json / .png       per-layer PE, SIMD, cycles, LUT, BRAM, DSP vs the board
      verification.json           QONNX vs streamlined vs hardware graph on test images
      model.bnn                   the CPU engine's model file, from model_hw.onnx (bnnflow.cpu)
      cppsim.json                 with --cppsim N: the generated HLS C++ run in FINN's cppsim vs
                                  FINN's Python execution and vs the CPU engine

    <run>/compile/verification-cache/<sha256>.json
                                  passed verifications, shared by the boards (see _cached_verify)
      compile.json                what was compiled, how, and the headline numbers
      report/                     FINN's own estimate reports
      intermediate_models/        every step's model, named as FINN's builder names them
      hw_codegen/<layer>/         generated HLS C++ and filled RTL templates
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.data import load_test_images
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.boards import Board, get_board
from bnnflow.finnlib.finn_env import prepare_finn, quiet_finn, step_functions
from bnnflow.finnlib.hwgraph import MakeRuntimeWritable
from bnnflow.hls.cppsim import CppSimResult, HlsSim
from bnnflow.hls.report import DesignEstimate, estimate_design, format_table, plot_estimate
from bnnflow.hls.verify import VerifyResult, cache_key, verify_chain
from bnnflow.runs import atomic_directory, atomic_write_json

# FINN's default step order (finn.builder.build_dataflow_config.default_build_dataflow_steps)
# up to code generation; step_hw_codegen is FINN's registered codegen step, which the
# default list runs inside step_generate_hardware.
FRONTEND_STEPS = [
    "step_qonnx_to_finn",
    "step_tidy_up",
    "step_streamline",
    "step_convert_to_hw",
    "step_minimize_bit_width_initial",
    "step_create_dataflow_partition",
    "step_specialize_layers",
]
BACKEND_STEPS = [
    "step_target_fps_parallelization",
    "step_apply_folding_config",
    "step_minimize_bit_width",
    "step_transpose_decomposition",
    "step_generate_estimate_reports",
    "step_assign_ddr_weight_offsets",
    "step_hw_codegen",
]
RESUME_STEP = "step_generate_hardware"  # where bnnflow bitstream hands over to FINN's builder
# FINN's bit-width minimisation steps, after which XNOR accumulators are corrected.
MINIMIZE_STEPS = ("step_minimize_bit_width_initial", "step_minimize_bit_width")

# Ops that may stay outside the dataflow partition: FINN's own layout glue
# at the graph's edges (NCHW->NHWC for CNV).
HOST_OPS = {"Transpose", "Reshape", "StreamingDataflowPartition"}

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class CompileResult:
    out_dir: Path
    model_path: Path  # hardware-layer graph
    folding_path: Path
    build_config_path: Path
    estimate: DesignEstimate
    verification: VerifyResult | None
    folding: str
    cppsim: CppSimResult | None = None


def resolve_input(onnx_or_run: str | Path) -> tuple[Path, Path]:
    """(QONNX model, run folder or model folder) from a run folder or a model path."""
    path = Path(onnx_or_run)
    if path.is_dir():
        if path.name == "export" and (path / "model.onnx").is_file():
            return path / "model.onnx", path.parent  # the export folder itself
        model = path / "export" / "model.onnx"
        if not model.is_file():
            if any((path / name).is_file() for name in ("best.pt", "checkpoint.pt", "run.json")):
                raise BnnflowError(f"{path} has no export/model.onnx; run `bnnflow export {path}` first")
            raise BnnflowError(
                f"{path} is not a run folder (no export/model.onnx, best.pt or checkpoint.pt); "
                "give a run folder or a QONNX .onnx file"
            )
        return model, path
    if not path.is_file():
        raise BnnflowError(f"model not found: {path}")
    run = path.parent.parent if path.parent.name == "export" else path.parent
    return path, run


def parse_folding(folding: str) -> tuple[str, Any]:
    """'fit' | 'published' | 'fps:<N>' | a folding JSON path."""
    if folding in ("fit", "published"):
        return folding, None
    if folding.startswith("fps:"):
        try:
            fps = float(folding[4:])
        except ValueError:
            fps = -1.0
        if not 0 < fps < math.inf:
            raise BnnflowError(f"bad --folding {folding!r}: fps:<N> needs a positive number")
        return "fps", fps
    if folding.lower().endswith(".json") or Path(folding).is_file():
        if not Path(folding).is_file():
            raise BnnflowError(f"folding JSON not found: {folding}")
        from bnnflow.hls.folding import load_folding_json

        load_folding_json(folding)  # unreadable JSON fails now, not after FINN's front end
        return "json", Path(folding)
    raise BnnflowError(f"bad --folding {folding!r}; use fit, published, fps:<N> or a folding .json file")


def _run_step(name: str, model: Any, cfg: Any, inter: Path, log: Log) -> Any:
    from finn.util.exception import FINNError

    from bnnflow.finnlib.xnor_acc import CorrectXnorAccumulators, thresholds_by_node

    t0 = time.perf_counter()
    try:
        # FINN prints progress and warnings as it goes; they go to the build log
        # in the output folder, the console gets one line per step.
        with open(inter.parent / "build_dataflow.log", "a") as sink, quiet_finn(sink):
            print(f"== {name}", file=sink)
            if name in MINIMIZE_STEPS:
                before = thresholds_by_node(model)
            model = step_functions()[name](model, cfg)
            if name in MINIMIZE_STEPS:  # see xnor_acc.py: FINN sizes XNOR accumulators too small
                model = model.transform(CorrectXnorAccumulators(before))
    except BnnflowError:
        raise
    except (FINNError, AssertionError, KeyError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BnnflowError(f"FINN {name} failed: {type(exc).__name__}: {first}") from exc
    model.save(str(inter / f"{name}.onnx"))
    log(f"  {name:<36} {time.perf_counter() - t0:6.1f} s")
    return model


def _engine_against_cppsim(tmp: Path, cppsim: Any, images: np.ndarray, log: Log) -> None:
    """The CPU engine's classes and scores against the generated C++'s, image by image (cppsim.json)."""
    from bnnflow.bnncpu import MODEL_FILE, CpuEngine

    with CpuEngine(tmp / MODEL_FILE) as engine:
        classes, scores = engine.run(np.ascontiguousarray(images[: cppsim.images_checked]), threads=0)
    problem = cppsim.mismatch_with(classes, scores, "the CPU engine")
    report = json.loads((tmp / "cppsim.json").read_text())
    report["cpu_engine"] = {"images": cppsim.images_checked, "first_mismatch": problem}
    atomic_write_json(tmp / "cppsim.json", report)
    if problem:
        raise BnnflowError(f"the CPU engine differs from the generated C++: {problem}")
    log(f"  CPU engine: classes and scores identical to the generated C++ on {cppsim.images_checked} images")


def _check_converted(model: Any) -> None:
    """After conversion only FINN hardware layers and layout glue may remain."""
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


def _check_mapped(out: Path) -> None:
    """Every compute layer must be inside the dataflow partition."""
    from qonnx.core.modelwrapper import ModelWrapper

    path = out / "intermediate_models" / "dataflow_parent.onnx"
    if not path.is_file():
        raise BnnflowError("FINN found no layer it can map to hardware in this model")
    parent = ModelWrapper(str(path))
    left = [f"{n.name} ({n.op_type})" for n in parent.graph.node if n.op_type not in HOST_OPS]
    if left:
        raise BnnflowError(f"FINN cannot map these layers to hardware: {', '.join(left)}")


def _collect_codegen(model: Any, tmp: Path, final: Path) -> Any:
    """Copy each layer's generated sources into the output folder and point the graph there.

    PrepareIP keeps code it finds at ``code_gen_dir_ipgen``, so the builder
    reuses these sources rather than regenerating them in FINN_BUILD_DIR.
    """
    from qonnx.custom_op.registry import getCustomOp

    build_dir = prepare_finn()
    for node in model.graph.node:
        inst = getCustomOp(node)
        try:
            src = inst.get_nodeattr("code_gen_dir_ipgen")
        except (AttributeError, Exception):
            continue
        if not src or not Path(src).is_dir():
            continue
        shutil.copytree(src, tmp / "hw_codegen" / node.name, dirs_exist_ok=True)
        inst.set_nodeattr("code_gen_dir_ipgen", str(final / "hw_codegen" / node.name))
        if Path(src).is_relative_to(build_dir):  # FINN's scratch copy is no longer referenced
            shutil.rmtree(src, ignore_errors=True)
    return model


def _rebase_partition(tmp: Path, final: Path) -> None:
    """dataflow_parent.onnx names its partition by absolute path; make it the final one."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    path = tmp / "intermediate_models" / "dataflow_parent.onnx"
    parent = ModelWrapper(str(path))
    for node in parent.get_nodes_by_op_type("StreamingDataflowPartition"):
        inst = getCustomOp(node)
        inst.set_nodeattr("model", str(inst.get_nodeattr("model")).replace(str(tmp), str(final)))
    parent.save(str(path))


def _cached_verify(
    model_path: Path,
    inter: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    workers: int | None,
    cache_dir: Path | None,
) -> VerifyResult:
    """The verification chain, or a passed one of the same graphs and images from ``cache_dir``.

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

    q = cleanup_model(ModelWrapper(str(model_path)))
    streamlined = ModelWrapper(str(inter / "step_streamline.onnx"))
    hw = ModelWrapper(str(inter / "step_convert_to_hw.onnx"))
    entry = None
    if cache_dir is not None:
        entry = cache_dir / f"{cache_key(model_path, [streamlined, hw], images, labels)}.json"
        if entry.is_file():
            try:
                data = json.loads(entry.read_text())
                if data.get("first_mismatch") is None and data.get("n_images") == len(images):
                    return VerifyResult.from_json(data, cached_from=str(entry))
            except (OSError, ValueError, KeyError):
                pass  # unreadable or foreign entry: verify again and overwrite it
    result = verify_chain(q, streamlined, hw, images, labels, workers=workers)
    if entry is not None and result.ok:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(entry, result.to_json())
    return result


def _find_cppsim(n_cppsim: int, hls_sim: str | Path | None) -> HlsSim | None:
    """The C++ toolchain for the cppsim stage, found before any compiling starts."""
    from bnnflow.hls.cppsim import find_hls_sim

    if n_cppsim < 0:
        raise BnnflowError(f"--cppsim must be 0 or more, got {n_cppsim}")
    return find_hls_sim(hls_sim) if n_cppsim else None


def _cppsim_stage(
    model: Any, inter: Path, images: np.ndarray, sim: HlsSim, out: Path, log: Log
) -> CppSimResult:
    """The compiled design's generated HLS C++ in FINN's cppsim against FINN's Python execution."""
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.hls.cppsim import cppsim_check

    log(f"  cppsim: compiling the generated HLS C++ ({sim.describe()}), then {len(images)} test images ...")
    reference = ModelWrapper(str(inter / "step_convert_to_hw.onnx"))
    with open(out / "build_dataflow.log", "a") as sink:
        print("== cppsim", file=sink)
        result = cppsim_check(model, reference, images, sim, sink=sink)
    atomic_write_json(out / "cppsim.json", result.to_json())
    if not result.ok:
        raise BnnflowError(f"cppsim check failed: {result.first_mismatch}")
    log(f"  {result.summary()}")
    return result


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
        "folding_config_file": "folding.json",
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


def compile_model(
    onnx_or_run: str | Path,
    board: str = "Pynq-Z2",
    out_dir: str | Path | None = None,
    folding: str = "fit",
    clock_ns: float = 10.0,
    budget: float = 0.85,
    n_verify: int = 1000,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    data_dir: str | Path | None = None,
    log: Log | None = _stderr,
    verify_workers: int | None = None,
    verify_cache: bool = True,
    n_cppsim: int = 0,
    hls_sim: str | Path | None = None,
    runtime_weights: bool = False,
) -> CompileResult:
    """Compile a QONNX model (or a run folder's export) for ``board``.

    ``folding``: ``fit`` (fit-to-board within ``budget``), ``published``
    (finn-examples folding for TFC/CNV), ``fps:<N>`` (FINN's SetFolding) or a
    folding JSON. ``n_verify`` test images are run through the QONNX,
    streamlined and hardware-layer graphs (0 skips); ``images``/``labels``
    override the test set (uint8 N,C,H,W). ``verify_workers``: processes for
    the verification (None: the usable cores, at most 4). ``verify_cache``:
    reuse a passed verification of the same graphs and images (another board's).
    ``n_cppsim``: test images run through the generated HLS C++ in FINN's
    cppsim and compared with FINN's Python execution (0 skips); ``hls_sim``:
    the hls-sim kit folder (else $BNNFLOW_HLS_SIM, else Vitis HLS at $XILINX_HLS).
    ``runtime_weights``: weights and thresholds writable at run time over AXI-lite
    (runtime_weights.py), so a retrained checkpoint needs no new bitstream.
    """
    log = log or (lambda _msg: None)
    brd = get_board(board)
    if not 0 < clock_ns < math.inf:
        raise BnnflowError(f"--clock-ns must be a positive number of ns, got {clock_ns}")
    if not 0.0 < budget <= 1.0:
        raise BnnflowError(f"--budget must be in (0, 1], got {budget}")
    if n_verify < 0:
        raise BnnflowError(f"--verify must be 0 or more, got {n_verify}")
    mode, arg = parse_folding(folding)
    model_path, run_dir = resolve_input(onnx_or_run)
    final = Path(out_dir) if out_dir is not None else run_dir / "compile" / brd.name
    final = final.absolute()
    prepare_finn()
    sim = _find_cppsim(n_cppsim, hls_sim)

    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.hls import folding as fold

    try:
        model = ModelWrapper(str(model_path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise BnnflowError(f"cannot read ONNX model {model_path}: {exc}") from None
    in_shape = tuple(int(d) for d in model.get_tensor_shape(model.graph.input[0].name)[1:])

    if (n_verify or n_cppsim) and images is None:
        images, labels, _ = load_test_images(in_shape, max(n_verify, n_cppsim), data_dir)
    cppsim_images = None if images is None else np.asarray(images)[:n_cppsim]
    if images is not None:
        images = np.asarray(images)[: n_verify or 0]
        labels = None if labels is None else np.asarray(labels)[: len(images)]

    log(f"compiling {model_path} for {brd.name} ({brd.part}) at {clock_ns} ns, folding {folding}")
    with atomic_directory(final, marker="compile.json") as tmp:
        cfg = DataflowBuildConfig(
            output_dir=str(tmp),
            board=brd.name,
            fpga_part=brd.part,
            synth_clk_period_ns=clock_ns,
            folding_config_file=tmp / "folding.json",
            generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
            standalone_thresholds=runtime_weights,
        )
        inter = cfg.get_intermediate_models_directory()
        shutil.copyfile(model_path, inter / "input_qonnx.onnx")
        for name in FRONTEND_STEPS:
            model = _run_step(name, model, cfg, inter, log)
            if name == "step_convert_to_hw":
                _check_converted(model)
                if runtime_weights:
                    model = model.transform(MakeRuntimeWritable())
                    model.save(str(inter / f"{name}.onnx"))
        _check_mapped(tmp)

        # Folding, decided on the specialised graph, handed to FINN as its JSON.
        info: dict[str, Any] = {"mode": mode}
        if mode == "published":
            with open(tmp / "build_dataflow.log", "a") as sink, quiet_finn(sink):
                preset, folded = fold.published_folding(model)
            info["preset"] = preset
        elif mode == "fps":
            with open(tmp / "build_dataflow.log", "a") as sink, quiet_finn(sink):
                folded = fold.target_fps_folding(model, arg, clock_ns)
            info["target_fps"] = arg
        elif mode == "json":
            with open(tmp / "build_dataflow.log", "a") as sink, quiet_finn(sink):
                folded = fold.apply_folding_json(model, arg)
            info["source"] = str(arg)
        else:
            t0 = time.perf_counter()
            with open(tmp / "build_dataflow.log", "a") as sink, quiet_finn(sink):
                fit = fold.fit_to_board(model, brd, clock_ns, budget)
            folded = fit.model
            info.update(
                budget=budget,
                setfolding_fps=fit.setfolding_fps,
                evaluations=fit.evaluations,
                search_seconds=round(time.perf_counter() - t0, 2),
            )
            log(
                f"  fit-to-board: {fit.evaluations} designs estimated; SetFolding alone "
                f"{fit.setfolding_fps:,.0f} frames/s, with per-layer refinement "
                f"{fit.estimate.expected_fps:,.0f}"
            )
        fold.write_folding_json(folded, tmp / "folding.json")

        for name in BACKEND_STEPS:
            model = _run_step(name, model, cfg, inter, log)

        est = estimate_design(model, brd, clock_ns)
        if mode == "fit" and not est.fits(budget):  # the search guarantees it; keep it honest
            raise BnnflowError(f"internal: fitted design exceeds {budget:.0%} of {brd.name}")
        est.extra["binary_xnor_mvaus"] = sum(
            1
            for n in model.graph.node
            if n.op_type.startswith("MVAU") and fold._inst(n).get_nodeattr("binaryXnorMode")
        )

        verification = None
        if images is not None and len(images):
            log(f"  verifying on {len(images)} test images ...")
            cache_dir = (run_dir / "compile" / "verification-cache").absolute() if verify_cache else None
            verification = _cached_verify(model_path, inter, images, labels, verify_workers, cache_dir)
            atomic_write_json(tmp / "verification.json", verification.to_json())
            if not verification.ok:
                raise BnnflowError(f"verification failed: {verification.first_mismatch}")
            how = (
                f"reused from {verification.cached_from}"
                if verification.cached_from
                else f"{verification.images_per_s:.1f} images/s, {verification.workers} worker(s)"
            )
            log(
                f"  verified {verification.n_images} images: labels, accumulators and activations "
                f"identical ({how})"
            )

        model = _collect_codegen(model, tmp, final)
        model.save(str(inter / "step_hw_codegen.onnx"))
        model.save(str(tmp / "model_hw.onnx"))
        _rebase_partition(tmp, final)
        from bnnflow.bnncpu.writer import export_in_compile

        cpu_model = export_in_compile(tmp, log)
        cppsim = None
        if sim is not None and cppsim_images is not None and len(cppsim_images):
            cppsim = _cppsim_stage(model, inter, cppsim_images, sim, tmp, log)
            if cpu_model.get("cpu_model"):
                _engine_against_cppsim(tmp, cppsim, cppsim_images, log)

        atomic_write_json(tmp / "estimates.json", est.to_json())
        plot_estimate(est, tmp / "estimates.png")
        cfg_json = build_config_dict(brd, clock_ns, final, runtime_weights)
        atomic_write_json(tmp / "dataflow_build_config.json", cfg_json)
        load_build_config(tmp / "dataflow_build_config.json")  # refuse to hand over a config FINN rejects
        atomic_write_json(
            tmp / "compile.json",
            {
                "input": str(model_path),
                "board": brd.name,
                "part": brd.part,
                "clock_ns": clock_ns,
                "folding": info,
                "estimated_fps": est.fps,  # compute estimate; expected_fps adds the DMA bound
                "bottleneck": est.bottleneck,
                "io_bound": est.io.to_json() if est.io else None,
                "expected_fps": est.expected_fps,
                "throughput_bound": est.bound,
                "totals": est.totals,
                "utilisation": est.utilisation(),
                "verification": verification.to_json() if verification else None,
                "cppsim": cppsim.to_json(per_image=False) if cppsim else None,
                "resume_step": RESUME_STEP,
                **cpu_model,
                "runtime_weights": runtime_weights,
            },
        )
    log(format_table(est))
    log(f"compiled design in {final}")
    return CompileResult(
        out_dir=final,
        model_path=final / "model_hw.onnx",
        folding_path=final / "folding.json",
        build_config_path=final / "dataflow_build_config.json",
        estimate=est,
        verification=verification,
        folding=mode,
        cppsim=cppsim,
    )
