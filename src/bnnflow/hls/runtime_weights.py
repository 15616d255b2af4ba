"""Runtime-writable weights: a retrained checkpoint onto the running FPGA, no new bitstream.

What a retrained checkpoint changes in the hardware graph (measured on the
digits MLP, epoch 1 against the same run resumed to epoch 4, both compiled
with the same folding; docs/compile.md, "Runtime-writable weights"): Bop
flips weights (3,579 of 16,384, 8,204 of 65,536 and 335 of 2,560 per layer),
and Adam moves the BatchNorm statistics and affine parameters, which FINN's
streamlining folds into integer thresholds: 221 of 256 and 189 of 256
channels' thresholds changed. So a weights-only update is not exact, and in
the default compile the thresholds live inside the MVAUs
(``noActivation=0``), where FINN has no run-time write path: only the weight
stream (``mem_mode=internal_decoupled`` with ``runtime_writeable_weights=1``)
gets an AXI-lite port.

``bnnflow compile --runtime-weights`` therefore builds with FINN's
``standalone_thresholds`` (every MultiThreshold becomes its own Thresholding
layer, the MVAUs pure XNOR-popcount) and sets ``runtime_writeable_weights=1``
on every MVAU and Thresholding layer right after the conversion to hardware
layers, before FINN's first bit-width minimisation. That order matters: with
the flag set, FINN sizes accumulators from the datatypes' worst case and
leaves weight and threshold widths alone, so the widths no longer depend on
one checkpoint's values and any retrained checkpoint of the same network fits
the same hardware (RoundAndClipThresholds clips thresholds into the
accumulator range plus one, which the threshold width covers).

``write_runtime_weights`` exports a checkpoint, runs it through the compile
folder's own FINN steps and folding, refuses anything whose hardware graph
differs from the compiled one other than in weight and threshold values, and
writes the weight files with FINN's own code (``MakePYNQDriver``'s
``runtime_weights/<partition>_<layer>_<node>.dat``, ``make_weight_file(...,
"decoupled_runtime", ...)``) on the graph as FINN's Zynq build partitions it
(``ZynqBuild``'s IODMA insertion, floorplan and dataflow partitions: each
AXI-lite layer heads its own partition, which is how finn-plus-driver's
``load_runtime_weights`` addresses it). The driver writes each file to its
partition's AXI-lite at offset 0 and flushes the pipeline with a dummy frame.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.data import recorded_test_images
from bnnflow.errors import BnnflowError
from bnnflow.export import export_model
from bnnflow.export.qonnx_export import run_qonnx
from bnnflow.finnlib.boards import Board, get_board
from bnnflow.finnlib.finn_env import prepare_finn, quiet_finn
from bnnflow.finnlib.hwgraph import base_op_type, writable_nodes
from bnnflow.finnlib.steps import StepFailed, after, run_steps
from bnnflow.finnlib.zynq import zynq_shell_model
from bnnflow.hls.steps import BACKEND_STEPS, FRONTEND_STEPS, CompileConfig
from bnnflow.hls.verify import verify_chain
from bnnflow.layout import CompileDir, CompileInfo, ExportDir
from bnnflow.runs import atomic_directory, atomic_write_json, load_checkpoint

SUMMARY_FILE = "runtime_weights.json"

# Attributes that name files or generated code, not the hardware.
_PATH_ATTRS = {
    "code_gen_dir_ipgen",
    "code_gen_dir_cppsim",
    "ipgen_path",
    "ip_path",
    "ip_vlnv",
    "executable_path",
    "gen_top_module",
    "rtlsim_so",
    "res_estimate",
    "res_hls",
    "res_synth",
    "cycles_estimate",
    "cycles_rtlsim",
}


@dataclass
class LayerUpdate:
    """One runtime-writable layer's file and what changed in it against the compiled design."""

    node: str
    kind: str  # "weights" (MVAU) or "thresholds" (Thresholding)
    file: str
    words: int  # 32-bit AXI-lite words in the file
    changed_words: int
    values: int  # weights or thresholds of the layer
    changed_values: int


@dataclass
class RuntimeWeights:
    out_dir: Path
    compile_dir: Path
    checkpoint: str
    layers: list[LayerUpdate] = field(default_factory=list)
    verified_images: int = 0
    # structure_fingerprint of the new checkpoint's hardware graph (equal to the design's)
    fingerprint: str = ""
    # the compiled design carrying the new weights and thresholds (a ModelWrapper), what the board runs
    hardware_graph: Any = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "compile_dir": str(self.compile_dir),
            "checkpoint": self.checkpoint,
            "verified_images": self.verified_images,
            "fingerprint": self.fingerprint,
            "layers": [vars(layer) for layer in self.layers],
            "changed_words": sum(la.changed_words for la in self.layers),
            "words": sum(la.words for la in self.layers),
        }


def _read_info(compile_dir: CompileDir) -> CompileInfo:
    for path in (compile_dir.summary, compile_dir.hw_graph, compile_dir.folding):
        if not path.is_file():
            raise BnnflowError(f"{compile_dir.path} is not a compile folder (no {path.name})")
    info = compile_dir.read_info()
    if not info.runtime_weights:
        raise BnnflowError(
            f"{compile_dir.path} was compiled without --runtime-weights: its weights and thresholds are "
            "fixed in the bitstream"
        )
    return info


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for attr in node.attribute:
        if attr.name in _PATH_ATTRS:
            continue
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


def first_difference(ref: Any, new: Any) -> str | None:
    """The first way ``new`` differs from ``ref`` other than in initializer values, or None.

    Compared in graph order: node names and types, every attribute (folding,
    datatypes, widths) except generated-code paths, and each input's
    initializer shape and FINN datatype; then the graph's inputs and outputs.
    """
    if len(ref.graph.node) != len(new.graph.node):
        return f"{len(new.graph.node)} layers where the design has {len(ref.graph.node)}"
    for rn, nn in zip(ref.graph.node, new.graph.node, strict=True):
        if (rn.name, rn.op_type) != (nn.name, nn.op_type):
            return f"{nn.name} ({nn.op_type}) where the design has {rn.name} ({rn.op_type})"
        ra, na = _attrs(rn), _attrs(nn)
        for key in sorted(set(ra) | set(na)):
            if ra.get(key) != na.get(key):
                return f"{rn.name} {key} is {na.get(key)!r}, the design has {ra.get(key)!r}"
        if len(rn.input) != len(nn.input):
            return f"{rn.name} has {len(nn.input)} inputs, the design {len(rn.input)}"
        for ri, ni in zip(rn.input, nn.input, strict=True):
            rw, nw = ref.get_initializer(ri), new.get_initializer(ni)
            if (rw is None) != (nw is None):
                return f"{rn.name}: a parameter input where the design has none, or the reverse"
            if rw is None:
                continue
            if rw.shape != nw.shape:
                return f"{rn.name} parameters of shape {nw.shape}, the design has {rw.shape}"
            rdt, ndt = ref.get_tensor_datatype(ri), new.get_tensor_datatype(ni)
            if rdt != ndt:
                return f"{rn.name} parameters of type {ndt.name}, the design has {rdt.name}"
    for kind, rs, ns in (
        ("input", ref.graph.input, new.graph.input),
        ("output", ref.graph.output, new.graph.output),
    ):
        for rt, nt in zip(rs, ns, strict=True):
            rshape, nshape = ref.get_tensor_shape(rt.name), new.get_tensor_shape(nt.name)
            if rshape != nshape:
                return f"graph {kind} of shape {nshape}, the design has {rshape}"
            if ref.get_tensor_datatype(rt.name) != new.get_tensor_datatype(nt.name):
                return f"graph {kind} of type {new.get_tensor_datatype(nt.name).name}"
    return None


def structure_fingerprint(model: Any) -> str:
    """sha256 of everything ``first_difference`` compares: equal for graphs that differ only in values.

    A deployment package and a weights-only update record it, so the board can
    tell whether an update belongs to the design it runs.
    """
    nodes = []
    for node in model.graph.node:
        params = []
        for name in node.input:
            init = model.get_initializer(name)
            if init is not None:
                params.append([list(init.shape), model.get_tensor_datatype(name).name])
            else:
                params.append(None)
        attrs = {k: repr(v) for k, v in sorted(_attrs(node).items())}
        nodes.append([node.name, node.op_type, attrs, params])
    io = [
        [list(model.get_tensor_shape(t.name)), model.get_tensor_datatype(t.name).name]
        for t in [*model.graph.input, *model.graph.output]
    ]
    text = json.dumps({"nodes": nodes, "io": io}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _shared_thresholds_changed(design: Any, new: Any) -> str | None:
    """A Thresholding layer whose one threshold row serves every channel, changed: FINN cannot write it.

    FINN's runtime weight file for such a layer (Thresholding_rtl's
    make_weight_file, decoupled_runtime) holds the row once per PE only, which
    rewrites the first PE channels and leaves the others at the bitstream's
    value, so the FPGA would apply two different thresholds.
    """
    from qonnx.custom_op.registry import getCustomOp

    by_name = {n.name: n for n in new.graph.node}
    for node in writable_nodes(design):
        if base_op_type(node.op_type) != "Thresholding":
            continue
        inst = getCustomOp(node)
        before = design.get_initializer(node.input[1])
        after = new.get_initializer(by_name[node.name].input[1])
        channels, pe = int(inst.get_nodeattr("NumChannels")), int(inst.get_nodeattr("PE"))
        if before.shape[0] == 1 and channels > pe and not np.array_equal(before, after):
            return (
                f"{node.name} holds one threshold row for all {channels} channels and it changed; FINN's "
                f"runtime weight file rewrites only the first {pe} of them, so this update cannot be written "
                "at run time"
            )
    return None


@after("step_specialize_layers")
def step_same_architecture(model: Any, cfg: CompileConfig) -> Any:
    """The rebuilt specialised graph must be the compiled design's, before the folding is applied."""
    diff = first_difference(cfg.reference, model)
    if diff is not None:
        raise BnnflowError(f"weights from another architecture: {diff}")
    return model


# The compile's steps up to FINN's estimates, with the compiled design's folding.json
# in place of bnnflow's folding choice.
REBUILD_STEPS = [*FRONTEND_STEPS, step_same_architecture, *BACKEND_STEPS]


def _hardware_graph(
    qonnx_path: Path, board: Board, clock_ns: float, folding_json: Path, work: Path, spec_ref: Any
) -> tuple[Any, Any, Any]:
    """The new model through the compile's FINN steps: (streamlined, converted, folded hardware graph).

    Stops with "weights from another architecture" where the specialised graph
    differs from the compiled design's before its folding is applied.
    """
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType
    from qonnx.core.modelwrapper import ModelWrapper

    cfg = CompileConfig(
        finn=DataflowBuildConfig(
            output_dir=str(work),
            board=board.name,
            fpga_part=board.part,
            synth_clk_period_ns=clock_ns,
            folding_config_file=folding_json,
            generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
            standalone_thresholds=True,
        ),
        board=board,
        clock_ns=clock_ns,
        out=CompileDir(work),
        runtime_weights=True,
        # Any exception of FINN's on the new graph means it is not the compiled architecture.
        failures=(Exception,),
        reference=spec_ref,
    )
    try:
        model = run_steps(ModelWrapper(str(qonnx_path)), REBUILD_STEPS, cfg)
    except StepFailed as exc:
        raise BnnflowError(
            f"weights from another architecture: FINN {exc.step} failed: {exc.first_line}"
        ) from None
    streamlined = ModelWrapper(str(cfg.out.step_graph("step_streamline")))
    return streamlined, ModelWrapper(str(cfg.out.step_graph("step_convert_to_hw"))), model


def _with_parameters(design: Any, new: Any) -> Any:
    """The compiled design with the new graph's weights and thresholds, checked against its datatypes."""
    from qonnx.core.modelwrapper import ModelWrapper

    patched = ModelWrapper(copy.deepcopy(design.model))
    by_name = {n.name: n for n in new.graph.node}
    for node in writable_nodes(patched):
        tensor = node.input[1]
        values = new.get_initializer(by_name[node.name].input[1])
        dt = patched.get_tensor_datatype(tensor)
        if not np.all(dt.allowed(values)):
            # cannot happen with the worst-case widths of a --runtime-weights compile; never round
            raise BnnflowError(f"{node.name}: the new parameters do not fit the compiled {dt.name}")
        patched.set_initializer(tensor, values)
    return patched


def finn_weight_files(design: Any, board: Board, work: Path) -> dict[str, Path]:
    """FINN's runtime weight files for ``design``, node name -> .dat file.

    The graph is prepared exactly as ``ZynqBuild`` prepares it for the Zynq
    shell (finnlib/zynq.py's ``zynq_shell_model``, which the deployment package
    uses too), and the files are written by
    ``MakePYNQDriver``'s own weight-file generation, so names (partition index,
    layer index, node) and contents are what FINN's builder puts into the
    deployment package's ``runtime_weights/``.
    """
    from finn.transformation.fpgadataflow.make_driver import MakePYNQDriver
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_data_layouts import InferDataLayouts

    work.mkdir(parents=True, exist_ok=True)
    model = ModelWrapper(copy.deepcopy(design.model)).transform(InferDataLayouts())
    model = zynq_shell_model(model, board.name, work / "partitions")
    driver = work / "driver"
    driver.mkdir()
    model.set_metadata_prop("pynq_driver_dir", str(driver))
    _external, runtime = MakePYNQDriver("zynq-iodma", "FINNDMAOverlay")._generate_weight_files(model)
    files = sorted((driver / "runtime_weights").glob("*.dat")) if runtime else []
    # <partition>_<layer>_<node name>.dat; node names have no further meaning to the driver
    return {f.stem.split("_", 2)[2]: f for f in files}


def _check_design_labels(design: Any, qonnx_path: Path, images: np.ndarray) -> None:
    """The compiled, folded design carrying the new parameters (what the board will run) against QONNX.

    FINN's Python execution of the folded layers, image by image (their batch
    is fixed at 1); the design's input is the dataflow partition's, NHWC where
    the host driver transposes (CNV).
    """
    from finn.core.onnx_exec import execute_onnx

    want = np.ravel(run_qonnx(qonnx_path, images)).astype(int)
    # The specialised HLS/RTL variants execute only in C++ or RTL simulation;
    # their generic layers are FINN's Python reference for the same attributes.
    design = copy.deepcopy(design)
    for node in design.graph.node:
        if base_op_type(node.op_type) != node.op_type:
            node.op_type = base_op_type(node.op_type)
            node.domain = "finn.custom_op.fpgadataflow"
    in_name, out_name = design.graph.input[0].name, design.graph.output[0].name
    shape = tuple(design.get_tensor_shape(in_name))
    for i, image in enumerate(images):
        x = np.asarray(image, dtype=np.float32)[None]
        if x.shape != shape and x.ndim == 4 and x.transpose(0, 2, 3, 1).shape == shape:
            x = x.transpose(0, 2, 3, 1)
        got = int(np.ravel(execute_onnx(design, {in_name: x.reshape(shape)})[out_name])[0])
        if got != want[i]:
            raise BnnflowError(
                f"image {i}: the compiled design with the new parameters gives label {got}, "
                f"the QONNX model {want[i]}"
            )


def _words(path: Path) -> list[str]:
    return path.read_text().split()


def _check_model_name(info: CompileInfo, payload: dict[str, Any], compile_dir: Path) -> None:
    """The checkpoint's network is the one the design was compiled from (export.json's model)."""
    export_json = ExportDir(Path(info.input).parent).summary
    if export_json.is_file():
        compiled_from = json.loads(export_json.read_text()).get("model")
        if compiled_from and compiled_from != payload["model"]:
            raise BnnflowError(
                f"weights from another architecture: the checkpoint is a {payload['model']}, "
                f"{compile_dir} was compiled from a {compiled_from}"
            )


def _verify_new_weights(
    qonnx_path: Path, graphs: tuple[Any, Any], patched: Any, n_verify: int, data_dir: Any, work: Path
) -> int:
    """QONNX, streamlined and hardware-layer graphs, and the patched design, agree on ``n_verify`` images."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    if not n_verify:
        return 0
    shape = tuple(ModelWrapper(str(qonnx_path)).get_tensor_shape("global_in")[1:])
    images, labels, _ = recorded_test_images(qonnx_path, shape, n_verify, data_dir)
    qonnx_model = cleanup_model(ModelWrapper(str(qonnx_path)))
    with open(work / "verify.log", "w") as sink, quiet_finn(sink):
        chain = verify_chain(qonnx_model, *graphs, images, labels, workers=1)
        if not chain.ok:
            raise BnnflowError(f"verification of the new weights failed: {chain.first_mismatch}")
        _check_design_labels(patched, qonnx_path, images)
    return len(images)


def _layer_updates(
    design: Any, new: Any, old_files: dict[str, Path], new_files: dict[str, Path]
) -> list[LayerUpdate]:
    """Per writable layer: its new file and how many words and values changed against the design."""
    writable = writable_nodes(design)
    if set(new_files) != {n.name for n in writable} or set(old_files) != set(new_files):
        raise BnnflowError(
            f"FINN wrote runtime weight files for {sorted(new_files)}, the design's writable layers are "
            f"{sorted(n.name for n in writable)}"
        )
    new_by_name = {n.name: n for n in new.graph.node}
    updates = []
    for node in writable:
        old_w, new_w = _words(old_files[node.name]), _words(new_files[node.name])
        before = design.get_initializer(node.input[1])
        after = new.get_initializer(new_by_name[node.name].input[1])
        updates.append(
            LayerUpdate(
                node=node.name,
                kind="weights" if base_op_type(node.op_type) == "MVAU" else "thresholds",
                file=new_files[node.name].name,
                words=len(new_w),
                changed_words=sum(a != b for a, b in zip(old_w, new_w, strict=True)),
                values=int(before.size),
                changed_values=int(np.sum(before != after)),
            )
        )
    return updates


def write_runtime_weights(
    compile_dir: str | Path,
    checkpoint_or_run: str | Path,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    n_verify: int = 100,
    log: Callable[[str], None] | None = None,
) -> RuntimeWeights:
    """FINN runtime weight files for a retrained checkpoint of a ``--runtime-weights`` design.

    Exports ``checkpoint_or_run`` (verified against PyTorch), runs it through
    the compile folder's FINN steps and folding, checks that the hardware graph
    is the compiled one but for weight and threshold values (else a one-line
    "weights from another architecture" error naming the first difference),
    verifies on ``n_verify`` test images that the QONNX model, the new
    streamlined and hardware-layer graphs and the compiled folded design
    carrying the new parameters give the same labels, and writes one ``.dat``
    per layer plus ``runtime_weights.json`` (words changed per layer) into
    ``out_dir``, which is what finn-plus-driver's ``runtime_weight_dir`` reads.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    log = log or (lambda _msg: None)
    compile_dir = Path(compile_dir).absolute()
    cdir = CompileDir(compile_dir)
    info = _read_info(cdir)
    if n_verify < 0:
        raise BnnflowError(f"n_verify must be 0 or more, got {n_verify}")
    board = get_board(info.board)
    prepare_finn()
    design = ModelWrapper(str(cdir.hw_graph))
    spec_ref = ModelWrapper(str(cdir.step_graph("step_specialize_layers")))
    _check_model_name(info, load_checkpoint(checkpoint_or_run), compile_dir)

    with tempfile.TemporaryDirectory(prefix="bnnflow-rtw-") as tmp_name:
        tmp = Path(tmp_name)
        exported = export_model(
            checkpoint_or_run, out_dir=tmp / "export", n_verify=max(1, n_verify), data_dir=data_dir
        )
        (tmp / "build").mkdir()
        streamlined, converted, new = _hardware_graph(
            exported.model_path, board, float(info.clock_ns), cdir.folding, tmp / "build", spec_ref
        )
        diff = first_difference(design, new)
        if diff is not None:
            raise BnnflowError(f"weights from another architecture: {diff}")
        shared = _shared_thresholds_changed(design, new)
        if shared is not None:
            raise BnnflowError(shared)
        patched = _with_parameters(design, new)
        verified = _verify_new_weights(
            exported.model_path, (streamlined, converted), patched, n_verify, data_dir, tmp
        )
        with open(tmp / "files.log", "w") as sink, quiet_finn(sink):
            new_files = finn_weight_files(patched, board, tmp / "new")
            old_files = finn_weight_files(design, board, tmp / "old")
        result = RuntimeWeights(
            out_dir=Path(out_dir).absolute(),
            compile_dir=compile_dir,
            checkpoint=str(Path(checkpoint_or_run).absolute()),
            layers=_layer_updates(design, new, old_files, new_files),
            verified_images=verified,
            fingerprint=structure_fingerprint(new),
            hardware_graph=patched,
        )
        with atomic_directory(result.out_dir, marker=SUMMARY_FILE) as out_tmp:
            for path in new_files.values():
                (out_tmp / path.name).write_bytes(path.read_bytes())
            atomic_write_json(out_tmp / SUMMARY_FILE, result.to_json())
    for la in result.layers:
        log(
            f"  {la.file:<40} {la.kind:<10} {la.changed_values:>8,} of {la.values:>8,} values, "
            f"{la.changed_words:>6,} of {la.words:>6,} words changed"
        )
    return result
