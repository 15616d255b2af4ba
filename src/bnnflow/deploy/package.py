"""``build_package``: everything a PYNQ board needs to run and check a compiled design.

The package keeps finn-plus's own deployment layout (``step_deployment_package``
copies ``bitfile/`` and ``driver/`` into ``deploy/``) and adds what bnnflow
needs to compare the FPGA against the CPU on the board::

    deploy/
      manifest.json            what is in the package, for which board, a sha256 per file
      bitfile/finn-accel.bit   Vivado's bitfile and hardware handoff (only where Vivado ran)
      bitfile/finn-accel.hwh
      report/post_route_timing.rpt   Vivado's timing summary (only where Vivado ran)
      driver/settings.json     FINN's MakePYNQDriver output (FINNDMAOverlay, zynq-iodma)
      model.bnn                the CPU engine's model file (from the compile folder)
      cpu/                     the CPU engine's sources, built on the board
      testset/images.u8        N x C x H x W uint8, the dataset's layout
      testset/labels.u8        N uint8 (up to 256 classes; labels.u16, N little-endian uint16, above)
      testset/golden_classes.i32   N int32, little-endian
      testset/golden_scores.i32    N x n_classes int32, little-endian
      bnnflow-board/           the board-side runtime (pip installable, Python >= 3.10)
      install.sh               installs it on a Pynq-Z2 or Ultra96 image

``driver/settings.json`` comes from FINN's own ``MakePYNQDriver`` run on the
graph as FINN's Zynq flow prepares it (zynq.py), so its DMA names are those
Vivado's block design will have. Where Vivado ran (a ``bnnflow bitstream``
folder) the bitfile, the .hwh, FINN's settings.json and the timing report are
taken from that build; elsewhere the package holds everything but the bitfile
and the manifest says so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bnnflow_board.deployformat import (
    BITFILE,
    BOARD_RUNTIME,
    CPU_SOURCES,
    DRIVER_SETTINGS,
    FORMAT,
    FORMAT_VERSION,
    GOLDEN_CLASSES,
    GOLDEN_SCORES,
    HWH,
    INSTALL_SCRIPT,
    MANIFEST,
    MODEL,
    RUNTIME_WEIGHTS,
    TESTSET_IMAGES,
    TIMING_REPORT,
    FormatError,
    labels_file,
    reshape_op,
    sha256,
    transpose_op,
)
from bnnflow_board.hostbits import apply_host_ops

from bnnflow import __version__
from bnnflow.bnncpu.writer import read_design_model
from bnnflow.data import recorded_test_images
from bnnflow.deploy.golden import DEFAULT_IMAGES, golden_outputs
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.finn_env import prepare_finn, quiet_finn
from bnnflow.finnlib.host_threshold import read_thresholds
from bnnflow.finnlib.hwgraph import writable_nodes
from bnnflow.finnlib.weight_memory import memory_layout
from bnnflow.finnlib.zynq import instances, zynq_dataflow_model
from bnnflow.hls.bitstream import default_out_dir
from bnnflow.hls.runtime_weights import structure_fingerprint
from bnnflow.layout import CompileDir
from bnnflow.runs import atomic_directory, atomic_write_json

REPO = Path(__file__).resolve().parents[3]  # the source tree bnnflow runs from (src layout)
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Source:
    """A compiled design ready to package, with Vivado's outputs where a bitstream build made them."""

    compile_dir: Path
    vivado: bool
    board: str
    run_name: str
    compile_info: dict[str, Any]


def resolve_source(path: str | Path, board: str | None = None) -> Source:
    """A run folder, a compile folder or a ``bnnflow bitstream`` folder, checked; else a one-line error."""
    path = Path(path)
    if not path.is_dir():
        raise BnnflowError(
            f"{path} is not a folder: give a run folder, a compile folder or a bitstream folder"
        )
    if not (path / CompileDir.SUMMARY).is_file() and (path / "compile").is_dir():
        found = sorted(d.name for d in (path / "compile").iterdir() if (d / CompileDir.SUMMARY).is_file())
        if board is not None:
            match = [b for b in found if b.lower() == board.lower()]
            if not match:
                raise BnnflowError(
                    f"{path} has no design compiled for {board} (found: {', '.join(found) or 'none'})"
                )
            path = path / "compile" / match[0]
        elif len(found) == 1:
            path = path / "compile" / found[0]
        else:
            raise BnnflowError(
                f"{path} has designs for {', '.join(found) or 'no board'}: choose one with --board"
                if found
                else f"{path} has no compiled design; run `bnnflow compile {path}` first"
            )
    if not (path / CompileDir.SUMMARY).is_file() or not (path / CompileDir.HW_GRAPH).is_file():
        raise BnnflowError(f"{path} is not a compile folder (no compile.json and model_hw.onnx)")
    try:
        info = json.loads((path / CompileDir.SUMMARY).read_text())
        design_board = str(info["board"])
    except (OSError, ValueError, KeyError):
        raise BnnflowError(f"{path / CompileDir.SUMMARY} is not a bnnflow compile summary") from None
    if board is not None and board.lower() != design_board.lower():
        raise BnnflowError(f"{path} was compiled for {design_board}, not {board}")
    for item in ("intermediate_models/step_convert_to_hw.onnx", "intermediate_models/dataflow_parent.onnx"):
        if not (path / item).is_file():
            raise BnnflowError(f"{path} is incomplete: {item} is missing")
    check_model_file(path / CompileDir.CPU_MODEL)
    vivado = (path / BITFILE).is_file()
    if vivado and not (path / HWH).is_file():
        raise BnnflowError(f"{path / BITFILE} has no {Path(HWH).name} beside it")
    run = Path(str(info.get("input", "")))
    run_name = run.parent.parent.name if run.parent.name == "export" else path.parent.parent.name
    return Source(path.absolute(), vivado, design_board, run_name or path.name, info)


def check_model_file(path: Path) -> None:
    """The compile folder's CPU model file: there, a valid model file, and taking this design's input."""
    if not path.is_file():
        try:
            why = CompileDir(path.parent).read_info().cpu_model_error
        except BnnflowError:
            why = None
        raise BnnflowError(
            f"{path.parent} has no {path.name} (the CPU engine's model): "
            + (why if why else "it was compiled by an older bnnflow; compile it again")
        )
    read_design_model(path.parent)


def default_out(source: Source) -> Path:
    """<bitstream folder>/deploy where Vivado ran, else bitstreams/<model>-<board>/deploy."""
    if source.vivado:
        return source.compile_dir / "deploy"
    return default_out_dir(source.compile_dir) / "deploy"


def host_input_ops(parent: Any) -> list[dict[str, Any]]:
    """The layout layers FINN left on the host between the graph input and the accelerator."""
    from qonnx.util.basic import get_by_name

    ops: list[dict[str, Any]] = []
    tensor = parent.graph.input[0].name
    while True:
        node = parent.find_consumer(tensor)
        if node is None:
            raise BnnflowError("the compiled design's input reaches no accelerator")
        if node.op_type == "StreamingDataflowPartition":
            break
        if node.op_type == "Transpose":
            ops.append(transpose_op(get_by_name(node.attribute, "perm").ints))
        elif node.op_type == "Reshape":
            ops.append(reshape_op(parent.get_tensor_shape(node.output[0])))
        else:
            raise BnnflowError(f"layer {node.name} ({node.op_type}) runs on the host: it cannot be deployed")
        tensor = node.output[0]
    after = parent.find_consumer(node.output[0])
    if after is not None or parent.graph.output[0].name != node.output[0]:
        raise BnnflowError(
            "layers after the accelerator would run on the host: this design cannot be deployed"
        )
    return ops


def xnor_accumulator_risks(model_hw: Any) -> list[str]:
    """XNOR-popcount layers whose accumulator type cannot hold every popcount, 0 .. MW.

    finn-plus sizes these accumulators for a {0,1} x {-1,+1} dot product, which
    the generated HLS then wraps (bnnflow/finnlib/xnor_acc.py: a TFC score of 64
    became -64 in cppsim). ``bnnflow compile`` corrects them; a compile folder
    made before it did is refused, since its FPGA would disagree with the CPU.
    """
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for node in model_hw.graph.node:
        if not node.op_type.startswith("MVAU"):
            continue
        inst = getCustomOp(node)
        if not inst.get_nodeattr("binaryXnorMode"):
            continue
        mw = int(inst.get_nodeattr("MW"))
        names = ["accDataType"] + (["outputDataType"] if inst.get_nodeattr("noActivation") else [])
        for attr in names:
            dt = DataType[str(inst.get_nodeattr(attr))]
            if dt.max() < mw:
                out.append(
                    f"{node.name}: {attr} {dt.name} holds at most {int(dt.max())}, an XNOR popcount over "
                    f"{mw} inputs reaches {mw}; the FPGA wraps such sums where the CPU does not"
                )
    return out


# What the board's check of the FPGA against the golden outputs cannot show: the golden outputs
# come from the compiled design itself (the CPU engine computes what FINN's execution of it computes).
UNVERIFIED = (
    "the FPGA's outputs are checked only against golden outputs from FINN's execution of the same "
    "design, so a difference FINN's conversion made to what the model computes goes unnoticed"
)


def verification_warnings(compile_dir: str | Path) -> list[str]:
    """A warning where the compile's verification chain did not run or did not check every weight layer.

    The chain (hls/verify.py) is what compares the design with the QONNX model
    it was compiled from, layer by layer, on ``verification.n_images`` test
    images, in the hardware-layer graph of ``step_convert_to_hw``; ``--verify 0``
    leaves compile.json's ``verification`` empty.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    compiled = CompileDir(Path(compile_dir))
    verification = compiled.read_info().verification or {}
    n = int(verification.get("n_images") or 0)
    if n < 1:
        return [
            "the compile's verification chain did not run (compiled with --verify 0): nothing compared "
            f"this design with the QONNX model it was compiled from; {UNVERIFIED}"
        ]
    hw = ModelWrapper(str(compiled.step_graph("step_convert_to_hw")))
    layers = [node.name for node in hw.graph.node if node.op_type.startswith("MVAU")]
    missing = [name for name in layers if name not in verification.get("layers", [])]
    if missing:
        return [
            f"the compile's verification chain did not check {', '.join(missing)} (it checked "
            f"{len(layers) - len(missing)} of the design's {len(layers)} weight layers on {n} images); "
            f"for those layers {UNVERIFIED}"
        ]
    return []


def _driver_settings(
    source: Source, parent: Any, clock_ns: float, tmp: Path, log: Log, runtime_dst: Path
) -> dict[str, Any]:
    """settings.json: FINN's from the Vivado build, or FINN's MakePYNQDriver on the prepared graph.

    The runtime weight files FINN writes next to it (``runtime_weights/``, for a
    design compiled with --runtime-weights) are copied to ``runtime_dst``:
    finn-plus-driver writes them into the FPGA when it loads the overlay.
    """
    if source.vivado and (source.compile_dir / DRIVER_SETTINGS).is_file():
        driver_dir = source.compile_dir / "driver"
        settings = json.loads((driver_dir / "settings.json").read_text())
        _copy_runtime_weights(driver_dir, runtime_dst)
    else:
        from finn.transformation.fpgadataflow.make_driver import MakePYNQDriver

        with open(tmp / "finn.log", "a") as sink, quiet_finn(sink):
            driven = parent.transform(MakePYNQDriver("zynq-iodma", "FINNDMAOverlay", clk_period_ns=clock_ns))
        driver_dir = Path(driven.get_metadata_prop("pynq_driver_dir"))
        settings = json.loads((driver_dir / "settings.json").read_text())
        _copy_runtime_weights(driver_dir, runtime_dst)
        shutil.rmtree(driver_dir, ignore_errors=True)
    info = settings.get("driver_information", {})
    shapes = info.get("io_shape_dict", {})
    if info.get("driver_type") != "FINNDMAOverlay" or info.get("platform") != "zynq-iodma":
        raise BnnflowError("FINN's driver settings are not for FINNDMAOverlay on zynq-iodma")
    if not all(shapes.get("idma_names", [""])) or not all(shapes.get("odma_names", [""])):
        raise BnnflowError("FINN's driver settings name no DMA instances")
    if shapes.get("num_inputs") != 1 or shapes.get("num_outputs") != 1:
        raise BnnflowError("the design must have one input and one output to be deployed")
    if bool(info.get("runtime_weights")) != runtime_dst.is_dir():
        raise BnnflowError("FINN's driver settings and its runtime weight files disagree")
    log(f"  driver/settings.json: FINN MakePYNQDriver, DMAs {shapes['idma_names']} -> {shapes['odma_names']}")
    return settings


def _copy_runtime_weights(driver_dir: Path, dst: Path) -> None:
    files = sorted((driver_dir / "runtime_weights").glob("*.dat"))
    if files:
        dst.mkdir(parents=True)
        for f in files:
            shutil.copy2(f, dst / f.name)


def runtime_weight_layers(model_hw: Any, folder: Path) -> list[dict[str, Any]]:
    """FINN's runtime weight files in ``folder``, one per writable layer of the design, described.

    Names are FINN's ``<partition>_<layer>_<node>.dat``; ``words`` counts the
    32-bit words finn-plus-driver writes; the memory layout is the layer's
    behind its AXI-lite port (weight_memory.py), which a weights-only update
    must share with the design.
    """
    files = {f.stem.split("_", 2)[2]: f for f in sorted(folder.glob("*.dat"))}
    nodes = writable_nodes(model_hw)
    if sorted(files) != sorted(n.name for n in nodes):
        raise BnnflowError(
            f"FINN wrote runtime weight files for {sorted(files)}, the design's writable layers are "
            f"{sorted(n.name for n in nodes)}"
        )
    out = []
    for node in nodes:
        layout = memory_layout(node)
        out.append(
            {
                "file": files[node.name].name,
                "node": node.name,
                "kind": layout.kind,
                "words": len(files[node.name].read_text().split()),
                "layout": layout.to_json(),
            }
        )
    return out


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "*.egg-info", "build", "*.o", "*.so", "*.a", ".*"
        ),
    )


def _board_runtime(dst: Path) -> None:
    board = REPO / "host_driver"  # copied whole: the deployment package's layout is the package's own
    if not (board / "pyproject.toml").is_file():
        raise BnnflowError(f"bnnflow-board's sources are not at {board}: run bnnflow from its source tree")
    dst.mkdir()
    shutil.copy2(board / "pyproject.toml", dst / "pyproject.toml")
    _copy_tree(board / "src", dst / "src")


@dataclass(frozen=True)
class _Testset:
    """The package's test images with their golden outputs, and how the host lays them out for the FPGA."""

    images: np.ndarray
    labels: np.ndarray
    dataset: str
    class_names: list[str]
    image_shape: tuple[int, ...]
    input_ops: list[dict[str, Any]]
    classes: np.ndarray
    scores: np.ndarray
    golden_source: str


@dataclass(frozen=True)
class _Design:
    """The compiled design as the package records it: FINN's Zynq graph, driver settings and weights."""

    parent: Any  # FINN's dataflow parent as its Zynq flow prepares it (the instances' names)
    settings: dict[str, Any]
    fingerprint: str
    runtime_layers: list[dict[str, Any]] | None


def build_package(
    path: str | Path,
    out: str | Path | None = None,
    board: str | None = None,
    n_images: int = DEFAULT_IMAGES,
    data_dir: str | Path | None = None,
    log: Log | None = _stderr,
) -> Path:
    """Write the deployment package for a run, compile or bitstream folder; returns its folder."""
    log = log or (lambda _msg: None)
    if n_images < 1:
        raise BnnflowError(f"--images must be at least 1, got {n_images}")
    source = resolve_source(path, board)
    final = (Path(out) if out is not None else default_out(source)).absolute()
    if final == source.compile_dir or source.compile_dir.is_relative_to(final):
        raise BnnflowError(f"refusing to write the package over its own compiled design ({final})")
    cpu_src = REPO / "cpu"
    if not (cpu_src / "include" / "bnncpu.h").is_file():
        raise BnnflowError(f"the CPU engine's sources are not at {cpu_src}: run bnnflow from its source tree")

    prepare_finn()
    cfg = json.loads((source.compile_dir / "dataflow_build_config.json").read_text())
    clock_ns = float(cfg.get("synth_clk_period_ns", source.compile_info.get("clock_ns", 10.0)))
    testset = _golden_outputs(source, clock_ns, n_images, data_dir, log)
    warnings = verification_warnings(source.compile_dir)
    for warning in warnings:
        log(f"  warning: {warning}")
    # Everything is written to a temporary folder that replaces ``final`` only once complete.
    with atomic_directory(final, marker=MANIFEST) as tmp, tempfile.TemporaryDirectory() as work:
        design = _checked_design(source, clock_ns, testset, tmp, Path(work), log)
        bitfile = _driver_and_bitfile(source, design, tmp)
        _engine_and_runtime(source, cpu_src, tmp)
        _testset_files(testset, tmp)
        atomic_write_json(
            tmp / MANIFEST, _manifest(source, clock_ns, testset, design, bitfile, warnings, tmp)
        )
    where = "with Vivado's bitfile" if source.vivado else "WITHOUT a bitfile (Vivado was not run)"
    log(f"deployment package for {source.board} {where} in {final}")
    if not source.vivado:
        log("  the package has everything else: `bnnflow-board check` on the board will ask for the bitfile")
    return final


def _golden_outputs(
    source: Source, clock_ns: float, n_images: int, data_dir: str | Path | None, log: Log
) -> _Testset:
    """``n_images`` test images of the run's dataset (seeded, every class its share), with golden outputs."""
    from qonnx.core.modelwrapper import ModelWrapper

    parent_host = ModelWrapper(str(source.compile_dir / "intermediate_models" / "dataflow_parent.onnx"))
    ops = host_input_ops(parent_host)
    threshold = read_thresholds(source.compile_dir)
    if threshold is not None:  # a host-binarized design: the board thresholds the images first
        ops = [threshold, *ops]
    in_shape = tuple(int(d) for d in parent_host.get_tensor_shape(parent_host.graph.input[0].name))[1:]
    log(f"packaging {source.compile_dir} for {source.board} at {1e3 / clock_ns:g} MHz")
    images, labels, identity = recorded_test_images(source.compile_dir, in_shape, n_images, data_dir)
    dataset = identity.name
    try:
        labels_file(identity.num_classes)
    except FormatError as exc:
        raise BnnflowError(f"{dataset}: {exc}") from None
    images = np.ascontiguousarray(images, dtype=np.uint8)
    t0 = time.perf_counter()
    classes, scores, golden_source = golden_outputs(source.compile_dir, images)
    if scores.shape[1] != identity.num_classes:
        raise BnnflowError(
            f"{source.compile_dir}: the design has {scores.shape[1]} classes, dataset {dataset} has "
            f"{identity.num_classes}"
        )
    log(
        f"  {len(images)} {dataset} test images, golden outputs ({golden_source}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    names = list(identity.class_names)
    return _Testset(images, labels, dataset, names, in_shape, ops, classes, scores, golden_source)


def _checked_design(
    source: Source, clock_ns: float, testset: _Testset, tmp: Path, work: Path, log: Log
) -> _Design:
    """FINN's driver settings and runtime weight files for the design, refused where the board would fail.

    The settings and weight files go into ``tmp``; a design whose accelerator
    the board could not feed, or whose XNOR accumulators wrap, is refused
    before anything else is copied.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    model_hw = ModelWrapper(str(source.compile_dir / CompileDir.HW_GRAPH))
    with open(work / "finn.log", "a") as sink, quiet_finn(sink):
        parent = zynq_dataflow_model(model_hw, source.board, work / "partitions")
    runtime_dir = tmp / RUNTIME_WEIGHTS
    settings = _driver_settings(source, parent, clock_ns, work, log, runtime_dir)
    fingerprint = structure_fingerprint(model_hw)
    runtime_layers = runtime_weight_layers(model_hw, runtime_dir) if runtime_dir.is_dir() else None
    if bool(source.compile_info.get("runtime_weights")) != (runtime_layers is not None):
        raise BnnflowError(
            f"{source.compile_dir}: compile.json and FINN's driver disagree on runtime-writable weights"
        )
    risks = xnor_accumulator_risks(model_hw)
    if risks:
        raise BnnflowError(
            f"{source.compile_dir} was compiled with XNOR accumulators too narrow for the popcount "
            f"({risks[0]}); compile it again with this bnnflow"
        )
    shapes = settings["driver_information"]["io_shape_dict"]
    fpga_in = apply_host_ops(testset.images[:1], testset.input_ops)
    if list(fpga_in.shape) != list(shapes["ishape_normal"][0]):
        raise BnnflowError(
            f"the accelerator takes {shapes['ishape_normal'][0]}, the test images give {list(fpga_in.shape)}"
        )
    if [int(d) for d in shapes["oshape_normal"][0]] != [1, 1]:
        raise BnnflowError("the accelerator must output one class index per image to be deployed")
    return _Design(parent, settings, fingerprint, runtime_layers)


def _driver_and_bitfile(source: Source, design: _Design, tmp: Path) -> dict[str, Any]:
    """settings.json, and Vivado's bitfile, .hwh and timing report where it ran; the manifest's entry."""
    atomic_write_json(tmp / DRIVER_SETTINGS, design.settings)
    if not source.vivado:
        return {
            "present": False,
            "why": "Vivado was not run for this design: run `bnnflow bitstream` (or make bitstream) on a "
            "Vivado host for bitfile/finn-accel.bit and .hwh; everything else here is complete",
        }
    (tmp / BITFILE).parent.mkdir()
    shutil.copy2(source.compile_dir / BITFILE, tmp / BITFILE)
    shutil.copy2(source.compile_dir / HWH, tmp / HWH)
    if (source.compile_dir / TIMING_REPORT).is_file():
        (tmp / TIMING_REPORT).parent.mkdir()
        shutil.copy2(source.compile_dir / TIMING_REPORT, tmp / TIMING_REPORT)
    return {"present": True, "bit": BITFILE, "hwh": HWH, "source": "vivado"}


def _engine_and_runtime(source: Source, cpu_src: Path, tmp: Path) -> None:
    """The CPU engine (model file and sources, built on the board) and bnnflow-board with its installer."""
    shutil.copy2(source.compile_dir / CompileDir.CPU_MODEL, tmp / MODEL)
    _copy_tree(cpu_src, tmp / CPU_SOURCES)
    _board_runtime(tmp / BOARD_RUNTIME)
    shutil.copy2(REPO / "host_driver" / INSTALL_SCRIPT, tmp / INSTALL_SCRIPT)
    os.chmod(tmp / INSTALL_SCRIPT, 0o755)


def _testset_files(testset: _Testset, tmp: Path) -> None:
    """testset/: the images, labels and golden outputs as raw arrays (layouts in the module docstring)."""
    (tmp / TESTSET_IMAGES).parent.mkdir()
    (tmp / TESTSET_IMAGES).write_bytes(testset.images.tobytes())
    name, dtype = labels_file(int(testset.scores.shape[1]))
    (tmp / name).write_bytes(np.asarray(testset.labels, dtype=dtype).tobytes())
    (tmp / GOLDEN_CLASSES).write_bytes(testset.classes.astype("<i4").tobytes())
    (tmp / GOLDEN_SCORES).write_bytes(testset.scores.astype("<i4").tobytes())


def _manifest(
    source: Source,
    clock_ns: float,
    testset: _Testset,
    design: _Design,
    bitfile: dict[str, Any],
    warnings: list[str],
    tmp: Path,
) -> dict[str, Any]:
    """manifest.json for the files now in ``tmp``: written last, it lists every other file's sha256.

    ``warnings`` are for whoever runs the package: bnnflow-board prints them and
    puts them in its bench report.
    """
    files = {
        str(p.relative_to(tmp)): sha256(p)
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    shapes = design.settings["driver_information"]["io_shape_dict"]
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "bnnflow": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "board": source.board,
        "part": source.compile_info.get("part"),
        "clock_mhz": 1e3 / clock_ns,
        "model": source.run_name,
        "bitfile": bitfile,
        "timing_report": TIMING_REPORT if (tmp / TIMING_REPORT).is_file() else None,
        "driver": {
            "settings": DRIVER_SETTINGS,
            "made_by": "Vivado build (FINN step_make_driver)"
            if source.vivado
            else "FINN MakePYNQDriver on the graph prepared as FINN's ZynqBuild prepares it; "
            "DMA instance names as FINN's MakeZYNQProject names them",
        },
        "instances": [i.to_json() for i in instances(design.parent)],
        "design": {"fingerprint": design.fingerprint},
        "runtime_weights": None
        if design.runtime_layers is None
        else {"dir": RUNTIME_WEIGHTS, "layers": design.runtime_layers},
        "fpga_input": {
            "from_images": testset.input_ops,
            "shape": shapes["ishape_normal"][0],
            "datatype": shapes["idt"][0],
        },
        "cpu": {"sources": CPU_SOURCES, "model": MODEL, "cli": "bnnflow-cpu run"},
        "testset": {
            "dataset": testset.dataset,
            "n": int(len(testset.images)),
            "image_shape": list(testset.image_shape),
            "n_classes": int(testset.scores.shape[1]),
            "class_names": testset.class_names,
            "images": TESTSET_IMAGES,
            "labels": labels_file(int(testset.scores.shape[1]))[0],
            "golden_classes": GOLDEN_CLASSES,
            "golden_scores": GOLDEN_SCORES,
            "golden_source": testset.golden_source,
            "golden_accuracy": float(np.mean(testset.classes == np.asarray(testset.labels))),
        },
        "warnings": warnings,
        "host": {"compile_dir": str(source.compile_dir), "python": sys.executable},
        "files": files,
    }
