"""The generated HLS C++ itself in the verification chain: FINN's C++ simulation (cppsim).

The verification chain (verify.py) runs FINN's Python models of the hardware
layers. This stage compiles the HLS C++ that FINN generated for the final,
folded design (``step_hw_codegen``: finn-hlslib's ``Matrix_Vector_Activate_Stream_Batch``
with the folded weights and thresholds, ``LabelSelect_Batch``, ...) with gcc,
runs test images through it with FINN's own ``execute_onnx`` in ``cppsim``
mode, and compares it with FINN's Python execution of the hardware-layer
graph (``step_convert_to_hw``, the graph the chain checked against QONNX):
the classes, the integer scores (LabelSelect's input) and every node's output.

What runs as C++ is decided per node: every ``*_hls`` node whose generated
code compiles. RTL layers (Thresholding_rtl, the sliding windows, Reshape_rtl)
have no C++ model; in cppsim mode FINN runs their Python reference, and so do
``*_hls`` nodes whose C++ does not compile (the compiler's first error is
recorded): those run as FINN's generic layer (``Pool_hls`` as ``Pool``).

Modes:

* end-to-end: the compiled graph in order, each node fed by its producer.
  FINN's cppsim mode lays out some Python references' outputs for the C++
  node they feed (a depthwise sliding window interleaves its channels for
  ``Pool_hls``), so a Python reference runs in cppsim mode only if all its
  consumers are C++, and as its generic layer (FINN's plain layout, what
  ``step_convert_to_hw`` computes) otherwise. That keeps a Python ``Pool``
  fed in the order it reads. Every node's output is compared; the first
  difference in graph order is the node that went wrong on inputs identical
  to the Python graph's.
* layer by layer: each node fed with the Python graph's tensors, C++ nodes
  as C++, the rest as their generic layer. Chosen automatically when no
  single stream order suits a Python reference (consumers of both kinds) or
  a node has no Python reference; also on request.

The C++ toolchain: FINN's compile script wants Vitis HLS' include folder and
libraries under ``XILINX_HLS``, finn-hlslib under ``FINN_DEPS`` and FINN's own
headers under ``FINN_CUSTOM_HLS``. Either the hls-sim kit (open-source
ap_int headers, finn-hlslib, stand-ins for a few Vitis headers; its
``env.sh`` sets the three) or a real Vitis HLS install. FINN and bnnflow read
``XILINX_HLS`` as "Vitis HLS is installed", so the variables are set only
while cppsim runs (``hls_sim_environment``) and restored afterwards.

Generated sources and binaries go to a fresh folder under FINN_BUILD_DIR,
removed when the stage ends: nothing is reused by a later run.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.execution import default_workers, execute, fast_execution, integer_tensors
from bnnflow.finnlib.finn_env import prepare_finn, quiet_finn
from bnnflow.layout import CompileDir

KIT_VARIABLES = ("XILINX_HLS", "FINN_DEPS", "FINN_CUSTOM_HLS")
GENERIC_DOMAIN = "finn.custom_op.fpgadataflow"
HLS_DOMAIN = GENERIC_DOMAIN + ".hls"
RTL_DOMAIN = GENERIC_DOMAIN + ".rtl"
REFERENCE = "FINN's Python execution of step_convert_to_hw.onnx"

CPP = "C++"
PYTHON = "Python"

MISSING_SIMULATOR = (
    "--cppsim needs a C++ toolchain for FINN's HLS: pass --hls-sim DIR (the hls-sim kit with its env.sh, "
    "e.g. ../shared/hls-sim) or set BNNFLOW_HLS_SIM, or install Vitis HLS (set XILINX_HLS) with "
    "finn-hlslib (`finn deps update`)"
)


# --- the toolchain ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HlsSim:
    """Where FINN's cppsim finds its headers: the hls-sim kit or a Vitis HLS install."""

    kind: str  # "kit" or "vitis"
    path: Path
    variables: dict[str, str]  # KIT_VARIABLES, set only while cppsim runs

    def describe(self) -> str:
        return f"hls-sim kit {self.path}" if self.kind == "kit" else f"Vitis HLS {self.path}"


def find_hls_sim(
    hls_sim: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> HlsSim:
    """The toolchain for cppsim: ``hls_sim`` (a kit folder), else $BNNFLOW_HLS_SIM, else $XILINX_HLS.

    A one-line BnnflowError says what to install or set when none is there.
    """
    env = dict(os.environ if environ is None else environ)
    if hls_sim:
        return _kit(Path(hls_sim), "--hls-sim", env)
    if env.get("BNNFLOW_HLS_SIM"):
        return _kit(Path(env["BNNFLOW_HLS_SIM"]), "BNNFLOW_HLS_SIM", env)
    if env.get("XILINX_HLS"):
        return _vitis(Path(env["XILINX_HLS"]), env)
    raise BnnflowError(MISSING_SIMULATOR)


def _kit(path: Path, source: str, env: dict[str, str]) -> HlsSim:
    """The kit's variables as its own env.sh sets them (it also builds the stand-in libraries)."""
    path = Path(os.path.abspath(path.expanduser()))  # absolute, ".." folded, links kept
    script = path / "env.sh"
    if not script.is_file():
        raise BnnflowError(f"{source} {path}: no env.sh there (expected the hls-sim kit folder)")
    # env.sh asks `python` for FINN's header folder: make that this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for name in KIT_VARIABLES:  # a real Vitis set for other work must not leak into the kit's values
        if name != "FINN_CUSTOM_HLS":
            env.pop(name, None)
    try:
        proc = subprocess.run(
            ["bash", "-c", 'source "$1" >&2 && env -0', "bash", str(script)],
            env=env,
            capture_output=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BnnflowError(f"{script} could not run: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise BnnflowError(f"{script} failed (exit {proc.returncode}): {last}")
    out = dict(item.split("=", 1) for item in proc.stdout.decode(errors="replace").split("\0") if "=" in item)
    missing = [name for name in KIT_VARIABLES if not out.get(name)]
    if missing:
        raise BnnflowError(f"{script} did not set {', '.join(missing)}")
    variables = {name: out[name] for name in KIT_VARIABLES}
    _check_headers(variables, f"{source} {path}")
    return HlsSim("kit", path, variables)


def _vitis(path: Path, env: dict[str, str]) -> HlsSim:
    """A real Vitis HLS: its headers, and finn-hlslib where FINN keeps its dependencies."""
    prepare_finn()
    import finn
    from finn.util.settings import get_settings

    variables = {
        "XILINX_HLS": str(path),
        "FINN_DEPS": str(get_settings().finn_deps),
        "FINN_CUSTOM_HLS": env.get("FINN_CUSTOM_HLS") or str(Path(finn.__file__).parent / "custom_hls"),
    }
    _check_headers(variables, f"XILINX_HLS={path}")
    return HlsSim("vitis", path, variables)


def _check_headers(variables: dict[str, str], where: str) -> None:
    if not (Path(variables["XILINX_HLS"]) / "include" / "ap_int.h").is_file():
        raise BnnflowError(f"{where}: no include/ap_int.h under {variables['XILINX_HLS']}")
    hlslib = Path(variables["FINN_DEPS"]) / "finn-hlslib"
    if not (hlslib / "bnn-library.h").is_file():
        raise BnnflowError(
            f"{where}: finn-hlslib not found at {hlslib}; run `finn deps update` or pass --hls-sim"
        )


@contextlib.contextmanager
def hls_sim_environment(sim: HlsSim) -> Iterator[None]:
    """Set the toolchain's variables (and FINN's dependency folder) for a block, then restore them.

    FINN's compile script reads XILINX_HLS and FINN_CUSTOM_HLS from the
    environment and finn-hlslib's folder from its settings object, which
    ``prepare_finn`` created before this block; both are put back.
    """

    prepare_finn()
    from finn.util.settings import get_settings

    settings = get_settings()
    saved_env = {name: os.environ.get(name) for name in KIT_VARIABLES}
    saved_deps = settings.finn_deps
    try:
        os.environ.update(sim.variables)
        settings.finn_deps = sim.variables["FINN_DEPS"]
        yield
    finally:
        settings.finn_deps = saved_deps
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- per-node decisions and compilation ---------------------------------------------------------


@dataclass
class NodeRun:
    """How one node of the compiled graph ran, and on how many images its output was compared."""

    name: str
    op_type: str
    runs_as: str  # CPP or PYTHON
    reason: str
    compile_seconds: float | None = None
    compared_images: int = 0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.name,
            "op_type": self.op_type,
            "runs_as": self.runs_as,
            "reason": self.reason,
            "compared_images": self.compared_images,
        }
        if self.compile_seconds is not None:
            out["compile_seconds"] = round(self.compile_seconds, 2)
        if self.note:
            out["note"] = self.note
        return out


def generic_node(node: Any) -> Any | None:
    """A copy of a specialised node as FINN's generic layer (``Pool_hls`` -> ``Pool``), or None.

    FINN's ``SpecializeLayers`` appends ``_hls``/``_rtl`` to the generic op
    type and moves it to the backend's domain; the generic layer's
    ``execute_node`` is FINN's Python model of it.
    """
    from qonnx.custom_op.registry import is_custom_op

    if node.domain not in (HLS_DOMAIN, RTL_DOMAIN):
        return None
    base = re.sub(r"_(hls|rtl)$", "", node.op_type)
    if base == node.op_type or not is_custom_op(GENERIC_DOMAIN, base):
        return None
    out = copy.deepcopy(node)
    out.op_type = base
    out.domain = GENERIC_DOMAIN
    return out


def python_form(node: Any) -> Any | None:
    """The node as FINN's Python model runs it outside cppsim: itself if generic, else its generic layer."""
    return node if node.domain == GENERIC_DOMAIN else generic_node(node)


def _compile_error(exc: BaseException) -> str:
    """The compiler's first error line, without the scratch folder's path."""
    text = "\n".join(
        str(part) for part in (getattr(exc, "stderr", None), getattr(exc, "output", None), exc) if part
    )
    match = re.search(r"([^/\s]+:\d+:\d+: (?:fatal )?error: [^\n]*)", text)
    if match:
        return match.group(1)[:240]
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {first}"[:240]


@dataclass
class CompiledDesign:
    """The compiled graph with its ``*_hls`` nodes' C++ built (inside ``compiled_design``)."""

    model: Any  # ModelWrapper, exec_mode cppsim, code_gen_dir_cppsim under ``scratch``
    nodes: dict[str, NodeRun]
    scratch: Path
    compile_seconds: float
    simulator: str
    sink: IO[str]  # where FINN's log output goes while nodes run

    def runs_as(self, node: Any) -> str:
        return self.nodes[node.name].runs_as


def _python_runs(model: Any, wanted: set[str] | None) -> dict[str, NodeRun]:
    """The nodes that run as Python in cppsim mode, and why; those left out of ``wanted`` made generic."""
    if wanted is not None:
        unknown = wanted - {n.name for n in model.graph.node}
        if unknown:
            raise BnnflowError(f"cppsim: no node named {', '.join(sorted(unknown))} in the compiled graph")
    runs: dict[str, NodeRun] = {}
    for node in model.graph.node:
        if node.domain == RTL_DOMAIN:
            reason = "RTL layer: no C++ model, FINN's cppsim runs its Python reference"
        elif node.domain != HLS_DOMAIN:
            reason = "not a FINN hardware layer"
        elif wanted is not None and node.name not in wanted:
            reason = "not selected for C++"
        else:
            continue
        runs[node.name] = NodeRun(node.name, node.op_type, PYTHON, reason)
    for i, node in enumerate(model.graph.node):
        generic = generic_node(node) if node.domain == HLS_DOMAIN and node.name in runs else None
        if generic is not None:  # runs as Python in every mode: no C++ to generate (CNV's take seconds each)
            model.graph.node[i].CopyFrom(generic)
    return runs


def _compile_node(node: Any) -> NodeRun:
    """gcc on one node's generated C++; a failure is recorded and the node runs as Python."""
    from qonnx.custom_op.registry import getCustomOp

    start = time.perf_counter()
    try:
        getCustomOp(node).compile_singlenode_code()
    except Exception as exc:  # noqa: BLE001  (gcc's failure is recorded, the node runs in Python)
        reason = f"generated C++ does not compile: {_compile_error(exc)}"
        return NodeRun(node.name, node.op_type, PYTHON, reason, time.perf_counter() - start)
    return NodeRun(
        node.name, node.op_type, CPP, "generated HLS C++ compiled with gcc", time.perf_counter() - start
    )


@contextlib.contextmanager
def compiled_design(
    model: Any,
    sim: HlsSim,
    nodes: Iterable[str] | None = None,
    before_compile: Callable[[dict[str, Path]], None] | None = None,
    workers: int | None = None,
    sink: IO[str] | None = None,
) -> Iterator[CompiledDesign]:
    """Generate and compile the C++ of ``model``'s ``*_hls`` nodes (all, or those named in ``nodes``).

    FINN's ``SetExecMode("cppsim")`` and ``PrepareCppSim`` generate each
    node's C++ (the same templates, folded parameters and finn-hlslib calls
    as the IP code) into ``<FINN_BUILD_DIR>/cppsim_*/<node>``;
    ``before_compile`` gets those folders before gcc runs (a seam for tests
    that tamper with generated code). Each node compiles separately, so one
    that fails is recorded and runs as its Python reference; nodes left out
    of ``nodes`` become their generic layers before any code is generated.
    The toolchain's variables stay set for the block; the folder is removed
    afterwards.
    """
    from finn.transformation.fpgadataflow.prepare_cppsim import PrepareCppSim
    from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    build_dir = prepare_finn()
    model = ModelWrapper(copy.deepcopy(model.model))
    runs = _python_runs(model, None if nodes is None else set(nodes))
    hls = [n for n in model.graph.node if n.domain == HLS_DOMAIN]
    scratch = Path(tempfile.mkdtemp(prefix="cppsim_", dir=build_dir))
    devnull = None
    if sink is None:
        devnull = open(os.devnull, "w")  # noqa: SIM115  (closed in finally)
        sink = devnull
    try:
        with hls_sim_environment(sim):
            with quiet_finn(sink):
                t0 = time.perf_counter()
                for node in hls:
                    folder = scratch / node.name
                    folder.mkdir()
                    getCustomOp(node).set_nodeattr("code_gen_dir_cppsim", str(folder))
                model = model.transform(SetExecMode("cppsim")).transform(PrepareCppSim())
                targets = [n for n in model.graph.node if n.domain == HLS_DOMAIN and n.name not in runs]
                if before_compile is not None:
                    before_compile({n.name: scratch / n.name for n in targets})
                # gcc runs in a child process per node, so threads are enough to use the cores.
                with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
                    for run in pool.map(_compile_node, targets):
                        runs[run.name] = run
                seconds = time.perf_counter() - t0
                ordered = {n.name: runs[n.name] for n in model.graph.node}
            # FINN's output goes to the sink while it compiles and runs, not while the caller's block does.
            yield CompiledDesign(model, ordered, scratch, seconds, sim.describe(), sink)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if devnull is not None:
            devnull.close()


# --- running and comparing ----------------------------------------------------------------------


@dataclass
class CppSimResult:
    """What ran as C++ and as Python, how it compared, and the C++ side's classes and scores.

    ``classes`` (per checked image) and ``scores`` (the integer LabelSelect
    input, per image) are kept so that a caller can compare them with any
    other implementation of the same network (``mismatch_with``).
    """

    simulator: str
    mode: str  # "end-to-end" or "layer-by-layer"
    mode_reason: str
    nodes: list[NodeRun]
    n_images: int
    images_checked: int = 0
    images_identical: int = 0
    classes_identical: int = 0
    scores_identical: int = 0
    first_mismatch: str | None = None
    mismatch_image: int | None = None
    mismatch_node: str | None = None
    compile_seconds: float = 0.0
    seconds_per_image: float = 0.0  # the compiled design's run (C++ and its Python references)
    reference_seconds_per_image: float = 0.0  # FINN's Python execution of step_convert_to_hw
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    reference_classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    reference_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    @property
    def ok(self) -> bool:
        return self.first_mismatch is None and self.images_checked == self.n_images

    @property
    def cpp_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if n.runs_as == CPP]

    @property
    def python_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if n.runs_as == PYTHON]

    def mismatch_with(self, classes: Any, scores: Any | None = None, source: str = "other") -> str | None:
        """The first image where ``classes`` (and ``scores``, if given) differ from the C++ side's."""
        classes = np.asarray(classes).reshape(-1)
        n = self.images_checked
        if len(classes) < n:
            return f"{source} has {len(classes)} classes for {n} images"
        for i in range(n):
            if int(classes[i]) != int(self.classes[i]):
                return f"image {i}: class {int(classes[i])} from {source}, {int(self.classes[i])} from cppsim"
            if scores is not None:
                row = np.asarray(scores[i]).reshape(-1)
                if not np.array_equal(row, self.scores[i]):
                    return f"image {i}: scores from {source} differ from cppsim's"
        return None

    def to_json(self, per_image: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "simulator": self.simulator,
            "reference": REFERENCE,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "n_images": self.n_images,
            "images_checked": self.images_checked,
            "images_identical": self.images_identical,
            "classes_identical": self.classes_identical,
            "scores_identical": self.scores_identical,
            "first_mismatch": self.first_mismatch,
            "mismatch_image": self.mismatch_image,
            "mismatch_node": self.mismatch_node,
            "compile_seconds": round(self.compile_seconds, 2),
            "seconds_per_image": round(self.seconds_per_image, 4),
            "reference_seconds_per_image": round(self.reference_seconds_per_image, 4),
            "cpp_nodes": self.cpp_nodes,
            "python_nodes": self.python_nodes,
            "nodes": [n.to_json() for n in self.nodes],
        }
        if per_image:
            out["classes"] = [int(c) for c in self.classes]
            out["scores"] = [[int(v) for v in row] for row in self.scores]
        return out

    def summary(self) -> str:
        """One line for the console; cppsim.json lists every node."""
        if not self.ok:
            return f"cppsim check failed: {self.first_mismatch}"
        return (
            f"cppsim ({self.mode}, {self.simulator}): {self.images_identical}/{self.n_images} images, "
            f"classes, scores and every node's output identical to FINN's Python execution; "
            f"C++: {_count_ops(n for n in self.nodes if n.runs_as == CPP)}; "
            f"Python references: {_count_ops(n for n in self.nodes if n.runs_as == PYTHON)} "
            f"({self.seconds_per_image:.3g} s/image, FINN's Python graph "
            f"{self.reference_seconds_per_image:.3g} s/image; C++ compiled in {self.compile_seconds:.0f} s)"
        )


def _count_ops(nodes: Iterable[NodeRun]) -> str:
    """'9 MVAU_hls, 1 LabelSelect_hls': node counts per op type, in graph order."""
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{n} {op}" for op, n in counts.items()) or "none"


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b)


def _describe_difference(a: np.ndarray, b: np.ndarray) -> str:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    return f"{int(np.sum(a != b))} of {a.size} values differ"


def _run_single(node: Any, graph: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One node executed on ``inputs`` the way execute_onnx does (C++ or Python by its exec_mode)."""
    from qonnx.custom_op.registry import getCustomOp

    ctx = dict(inputs)
    inst = getCustomOp(node)
    for out in node.output:
        ctx[out] = np.zeros(inst.get_normal_output_shape(), dtype=np.float32)
    inst.execute_node(ctx, graph)
    return {out: ctx[out] for out in node.output}


def _node_inputs(node: Any, model: Any, source: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """A node's inputs: initializers from the compiled graph, tensors from ``source``."""
    out = {}
    for name in node.input:
        init = model.get_initializer(name)
        if init is not None:
            out[name] = init
        elif name in source:
            out[name] = source[name]
        else:
            return None
    return out


def choose_mode(design: CompiledDesign, requested: str = "auto") -> tuple[str, str]:
    """End-to-end where every Python reference can be fed in one stream order; else layer by layer."""
    if requested in ("end-to-end", "layer-by-layer"):
        return requested, "requested"
    if requested != "auto":
        raise BnnflowError(f"cppsim mode must be auto, end-to-end or layer-by-layer, not {requested!r}")
    model = design.model
    for node in model.graph.node:
        if design.runs_as(node) == CPP:
            continue
        if python_form(node) is None and node.domain != RTL_DOMAIN:
            return "layer-by-layer", f"{node.name} has neither C++ nor a generic Python layer"
        kinds = {design.runs_as(c) for out in node.output for c in model.find_consumers(out)}
        if len(kinds) > 1:
            return (
                "layer-by-layer",
                f"{node.name} runs in Python and feeds C++ and Python nodes: no one stream order suits both",
            )
    return "end-to-end", "every node fed by its producer in the compiled graph"


def _end_to_end_model(design: CompiledDesign) -> tuple[Any, dict[str, str]]:
    """The graph execute_onnx runs end to end, and how each Python reference runs in it."""
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(copy.deepcopy(design.model.model))
    how: dict[str, str] = {}
    for i, node in enumerate(model.graph.node):
        if design.runs_as(node) == CPP:
            continue
        consumers = [c for out in node.output for c in model.find_consumers(out)]
        if node.domain == RTL_DOMAIN and consumers and all(design.runs_as(c) == CPP for c in consumers):
            how[node.name] = "FINN's cppsim-mode Python reference (stream order of its C++ consumer)"
            continue
        generic = python_form(node)
        if generic is None:
            continue
        if generic is not node:
            model.graph.node[i].CopyFrom(generic)
        how[node.name] = f"FINN's generic Python layer {generic.op_type}"
    return model, how


def _image_label(model: Any) -> tuple[str, str | None]:
    """(class tensor, score tensor): the graph output and LabelSelect's input, if there is one."""
    out = model.graph.output[0].name
    producer = model.find_producer(out)
    if producer is not None and producer.op_type.startswith("LabelSelect"):
        return out, producer.input[0]
    return out, None


def _how_nodes_run(design: CompiledDesign, mode: str) -> tuple[Any, Any, dict[str, str]]:
    """(graph to run end to end and its integer tensors, or None; a note per node on how it runs)."""
    if mode == "end-to-end":
        run_model, how = _end_to_end_model(design)
        return run_model, integer_tensors(run_model), how
    generic = {n.name: python_form(n) for n in design.model.graph.node if design.runs_as(n) == PYTHON}
    how = {
        name: f"FINN's generic Python layer {g.op_type}, fed from the Python graph" if g else "not run"
        for name, g in generic.items()
    }
    return None, None, how


def _tally(
    result: CppSimResult,
    got: dict[str, Any],
    ref: dict[str, Any],
    names: tuple[str, str | None],
    outputs: tuple[list[int], list[np.ndarray], list[int], list[np.ndarray]],
) -> None:
    """One checked image's classes and scores, the design's and the reference's, into ``result``."""
    class_t, score_t = names
    classes, scores, ref_classes, ref_scores = outputs
    result.images_checked += 1
    if class_t in got:
        classes.append(int(np.ravel(got[class_t])[0]))
    ref_classes.append(int(np.ravel(ref[class_t])[0]))
    if score_t is not None:
        ref_scores.append(np.ravel(ref[score_t]).astype(np.int64))
        if score_t in got:
            scores.append(np.ravel(got[score_t]).astype(np.int64))
    result.classes_identical += int(class_t in got and _same(np.ravel(got[class_t]), np.ravel(ref[class_t])))
    result.scores_identical += int(
        score_t is not None and score_t in got and _same(got[score_t], ref[score_t])
    )


def run_cppsim(
    design: CompiledDesign,
    reference: Any,
    images: np.ndarray,
    mode: str = "auto",
) -> CppSimResult:
    """Run ``images`` through the compiled design and compare with ``reference`` (step_convert_to_hw).

    The compiled graph starts where the dataflow partition starts (CNV: after
    the host-side NCHW->NHWC transpose); its input is the Python graph's
    tensor of the same name, as FINN keeps tensor names through its steps.
    Stops at the first image with a difference.
    """

    mode, mode_reason = choose_mode(design, mode)
    model = design.model
    runs = {name: replace(run) for name, run in design.nodes.items()}  # this run's counts and notes
    nodes = list(runs.values())
    result = CppSimResult(
        simulator=design.simulator,
        mode=mode,
        mode_reason=mode_reason,
        nodes=nodes,
        n_images=len(images),
        compile_seconds=design.compile_seconds,
    )
    class_t, score_t = _image_label(model)
    in_name = model.graph.input[0].name
    ref_ints = integer_tensors(reference)
    run_model, run_ints, how = _how_nodes_run(design, mode)
    for run in nodes:
        if run.name in how:
            run.note = how[run.name]

    classes, scores, ref_classes, ref_scores = [], [], [], []
    cpp_seconds = ref_seconds = 0.0
    with fast_execution(), quiet_finn(design.sink):
        for i, image in enumerate(np.asarray(images)):
            x = image[None].astype(np.float32)
            t0 = time.perf_counter()
            ref, _ = execute(reference, x, ref_ints)
            ref_seconds += time.perf_counter() - t0
            if in_name not in ref:
                raise BnnflowError(
                    f"cppsim: the Python graph has no tensor {in_name} to feed the compiled graph"
                )
            t0 = time.perf_counter()
            if mode == "end-to-end":
                try:
                    got, _ = execute(run_model, ref[in_name], run_ints)
                except Exception as exc:  # noqa: BLE001  (a C++ binary that aborts is a failed check)
                    failed = next((n.name for n in model.graph.node if f"/{n.name}/" in str(exc)), "a node")
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    result.first_mismatch = f"image {i}, {failed}: cppsim run failed: {first}"
                    result.mismatch_image, result.mismatch_node = i, failed
                    break
                cpp_seconds += time.perf_counter() - t0
                problem = _compare_end_to_end(i, runs, run_model, got, ref)
            else:
                got, problem, seconds = _run_layer_by_layer(i, model, runs, ref)
                cpp_seconds += seconds
            _tally(result, got, ref, (class_t, score_t), (classes, scores, ref_classes, ref_scores))
            if problem is not None:
                result.first_mismatch, result.mismatch_node = problem
                result.mismatch_image = i
                break
            result.images_identical += 1
    result.seconds_per_image = cpp_seconds / max(1, result.images_checked)
    result.reference_seconds_per_image = ref_seconds / max(1, result.images_checked)
    result.classes = np.asarray(classes, dtype=np.int64)
    result.scores = _rows(scores)
    result.reference_classes = np.asarray(ref_classes, dtype=np.int64)
    result.reference_scores = _rows(ref_scores)
    return result


def _rows(rows: list[np.ndarray]) -> np.ndarray:
    """Per-image score vectors as one (images, classes) array; (0, 0) when there are none."""
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.int64)


def _where(i: int, runs: dict[str, NodeRun], node: Any) -> str:
    kind = "generated C++" if runs[node.name].runs_as == CPP else "Python reference"
    return f"image {i}, {node.name} ({kind})"


def _compare_end_to_end(
    i: int, runs: dict[str, NodeRun], run_model: Any, got: dict[str, np.ndarray], ref: dict[str, np.ndarray]
) -> tuple[str, str] | None:
    """Every node's output against the Python graph's, in graph order; the first difference."""
    for node in run_model.graph.node:
        run = runs[node.name]
        out = node.output[0]
        if out not in ref:
            if "Python graph has no" not in run.note:
                run.note = (
                    run.note + "; " if run.note else ""
                ) + "not compared: the Python graph has no such tensor"
            continue
        if _same(got[out], ref[out]):
            run.compared_images += 1
            continue
        if run.runs_as == PYTHON and node.domain == RTL_DOMAIN:
            # In cppsim mode FINN may reorder a Python reference's output for the C++
            # node it feeds (a depthwise sliding window interleaves channels by SIMD).
            # Then the node's values are checked in FINN's plain layout (its generic
            # layer on the same inputs), the output must hold exactly those values,
            # and the C++ consumer's output checks the order.
            generic = generic_node(node)
            inputs = _node_inputs(node, run_model, got)
            if generic is not None and inputs is not None:
                plain = _run_single(generic, run_model.graph, inputs)[out]
                reordered = np.array_equal(np.sort(got[out], axis=None), np.sort(plain, axis=None))
                if _same(plain, ref[out]) and reordered:
                    run.compared_images += 1
                    if "reordered" not in run.note:
                        run.note += (
                            "; compared in FINN's plain layout (cppsim reordered it for its C++ consumer)"
                        )
                    continue
        return (
            f"{_where(i, runs, node)}: output differs from {REFERENCE} "
            f"({_describe_difference(got[out], ref[out])})",
            node.name,
        )
    return None


def _run_layer_by_layer(
    i: int, model: Any, runs: dict[str, NodeRun], ref: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], tuple[str, str] | None, float]:
    """Each node fed with the Python graph's tensors; C++ nodes as C++, the rest as generic layers."""
    got: dict[str, np.ndarray] = {}
    first = None
    seconds = 0.0
    for node in model.graph.node:
        run = runs[node.name]
        target = node if run.runs_as == CPP else python_form(node)
        inputs = _node_inputs(node, model, ref)
        out = node.output[0]
        if target is None or inputs is None or out not in ref:
            continue
        t0 = time.perf_counter()
        try:
            got.update(_run_single(target, model.graph, inputs))
        except Exception as exc:  # noqa: BLE001  (a C++ binary that aborts is a failed check)
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            return got, (f"{_where(i, runs, node)}: cppsim run failed: {line}", node.name), seconds
        if run.runs_as == CPP:
            seconds += time.perf_counter() - t0
        if _same(got[out], ref[out]):
            run.compared_images += 1
        elif first is None:
            first = (
                f"{_where(i, runs, node)}: output differs from {REFERENCE} "
                f"({_describe_difference(got[out], ref[out])})",
                node.name,
            )
    return got, first, seconds


def cppsim_check(
    model: Any,
    reference: Any,
    images: np.ndarray,
    sim: HlsSim,
    nodes: Iterable[str] | None = None,
    mode: str = "auto",
    before_compile: Callable[[dict[str, Path]], None] | None = None,
    workers: int | None = None,
    sink: IO[str] | None = None,
) -> CppSimResult:
    """Compile ``model``'s generated HLS C++ and compare it with ``reference`` on ``images``.

    ``model``: the compiled hardware graph (``step_hw_codegen.onnx``);
    ``reference``: the hardware-layer graph FINN executes in Python
    (``step_convert_to_hw.onnx``); ``images``: uint8 N,C,H,W. ``nodes``
    restricts C++ to those ``*_hls`` nodes (the rest run as Python
    references); ``mode``: auto, end-to-end or layer-by-layer.
    """
    with compiled_design(model, sim, nodes, before_compile, workers, sink) as design:
        return run_cppsim(design, reference, images, mode)


def check_compile_dir(
    compile_dir: str | os.PathLike[str],
    images: np.ndarray,
    sim: HlsSim,
    **kwargs: Any,
) -> CppSimResult:
    """``cppsim_check`` on a compile folder's ``step_hw_codegen`` and ``step_convert_to_hw`` graphs."""
    from qonnx.core.modelwrapper import ModelWrapper

    prepare_finn()
    folder = CompileDir(Path(compile_dir))
    paths = [folder.step_graph("step_hw_codegen"), folder.step_graph("step_convert_to_hw")]
    for path in paths:
        if not path.is_file():
            raise BnnflowError(f"{path} not found; is {compile_dir} a `bnnflow compile` folder?")
    model, reference = (ModelWrapper(str(p)) for p in paths)
    return cppsim_check(model, reference, images, sim, **kwargs)
