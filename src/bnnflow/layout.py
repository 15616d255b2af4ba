"""Where each file of a run, export, compile and deployment folder lives: every file name spelled once.

Users keep runs on disk, so these names are a file format: changing one
breaks every folder already written. A stage writes and reads its folders
through these classes; a folder class only names paths and touches nothing.

    runs/<name>/                     RunDir
      run.json checkpoint.pt best.pt metrics.csv training.png summary.json
      export/                        ExportDir: model.onnx model_logits.onnx verification.json export.json
      compile/verification-cache/    passed verifications, shared by the boards
      compile/<board>/               CompileDir (and a bitstream folder, which starts as its copy)
        compile.json                 CompileInfo, below
        model_hw.onnx folding.json dataflow_build_config.json estimates.json estimates.png
        verification.json cppsim.json model.bnn build_dataflow.log
        intermediate_models/ report/ hw_codegen/
    bitstreams/<model>-<board>/      BitstreamDir: the compile folder, finished by FINN's builder
      deploy/                        DeployDir: manifest.json model.bnn ...
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

# The deployment package's names belong to its format, which the board reads with the same
# module (host_driver/src/bnnflow_board/deployformat.py, standard library only); the compile
# folder's model file is the same file under the same name.
from bnnflow_board import deployformat

from bnnflow.errors import BnnflowError


@dataclass(frozen=True)
class ExportDir:
    """``bnnflow export``'s output: the QONNX graphs FINN compiles and their check against PyTorch."""

    path: Path

    MODEL: ClassVar[str] = "model.onnx"  # uint8 input, TopK output: what FINN compiles
    LOGITS: ClassVar[str] = "model_logits.onnx"
    VERIFICATION: ClassVar[str] = "verification.json"
    SUMMARY: ClassVar[str] = "export.json"  # every export writes it: the folder's marker

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def logits(self) -> Path:
        return self.path / self.LOGITS

    @property
    def verification(self) -> Path:
        return self.path / self.VERIFICATION

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY


@dataclass(frozen=True)
class CompileDir:
    """``bnnflow compile``'s output, laid out as FINN's builder output so that its builder resumes from it."""

    path: Path

    SUMMARY: ClassVar[str] = "compile.json"  # CompileInfo; every compile writes it: the folder's marker
    HW_GRAPH: ClassVar[str] = "model_hw.onnx"  # folded, specialised hardware-layer graph after codegen
    CPU_MODEL: ClassVar[str] = deployformat.MODEL  # the CPU engine's model file, written from HW_GRAPH
    FOLDING: ClassVar[str] = "folding.json"  # FINN's folding_config_file
    BUILD_CONFIG: ClassVar[str] = "dataflow_build_config.json"  # for FINN's builder to finish the design
    ESTIMATES: ClassVar[str] = "estimates.json"
    ESTIMATES_PLOT: ClassVar[str] = "estimates.png"
    VERIFICATION: ClassVar[str] = "verification.json"
    CPPSIM: ClassVar[str] = "cppsim.json"
    # --host-binarize: the input threshold the host applies (bnnflow_board/hostbits.py's op)
    HOST_THRESHOLDS: ClassVar[str] = "host_thresholds.json"
    BUILD_LOG: ClassVar[str] = "build_dataflow.log"  # FINN's name for its builder's log
    INTERMEDIATE: ClassVar[str] = "intermediate_models"  # each step's model, named as FINN names them
    REPORT: ClassVar[str] = "report"
    CODEGEN: ClassVar[str] = "hw_codegen"
    INPUT_GRAPH: ClassVar[str] = "input_qonnx.onnx"
    # The graph around the dataflow partition (CNV's input Transpose lives there).
    PARENT_GRAPH: ClassVar[str] = "dataflow_parent.onnx"

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def hw_graph(self) -> Path:
        return self.path / self.HW_GRAPH

    @property
    def cpu_model(self) -> Path:
        return self.path / self.CPU_MODEL

    @property
    def folding(self) -> Path:
        return self.path / self.FOLDING

    @property
    def build_config(self) -> Path:
        return self.path / self.BUILD_CONFIG

    @property
    def estimates(self) -> Path:
        return self.path / self.ESTIMATES

    @property
    def estimates_plot(self) -> Path:
        return self.path / self.ESTIMATES_PLOT

    @property
    def verification(self) -> Path:
        return self.path / self.VERIFICATION

    @property
    def cppsim(self) -> Path:
        return self.path / self.CPPSIM

    @property
    def host_thresholds(self) -> Path:
        return self.path / self.HOST_THRESHOLDS

    @property
    def build_log(self) -> Path:
        return self.path / self.BUILD_LOG

    @property
    def intermediate(self) -> Path:
        return self.path / self.INTERMEDIATE

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def codegen(self) -> Path:
        return self.path / self.CODEGEN

    @property
    def parent_graph(self) -> Path:
        return self.intermediate / self.PARENT_GRAPH

    def step_graph(self, step: str) -> Path:
        """The model FINN's builder saves after ``step`` (``intermediate_models/<step>.onnx``)."""
        return self.intermediate / f"{step}.onnx"

    def read_info(self) -> CompileInfo:
        """compile.json, or a one-line error naming what is wrong with the folder."""
        if not self.summary.is_file():
            raise BnnflowError(f"{self.path} is not a compile folder (no {self.SUMMARY})")
        try:
            data = json.loads(self.summary.read_text())
        except (OSError, ValueError) as exc:
            raise BnnflowError(f"cannot read {self.summary}: {exc}") from None
        return CompileInfo.from_json(data, self.summary)


@dataclass(frozen=True)
class DeployDir:
    """A deployment package for the board (``bnnflow package``); its contents belong to bnnflow.deploy."""

    path: Path

    MANIFEST: ClassVar[str] = deployformat.MANIFEST  # every package has one: the folder's marker
    CPU_MODEL: ClassVar[str] = deployformat.MODEL  # the CPU engine's model file, as the compile wrote it

    @property
    def manifest(self) -> Path:
        return self.path / self.MANIFEST

    @property
    def cpu_model(self) -> Path:
        return self.path / self.CPU_MODEL


@dataclass(frozen=True)
class BitstreamDir(CompileDir):
    """``bnnflow bitstream``'s output: a copy of the compile folder that FINN's builder finished.

    bnnflow's deployment package goes to ``deploy/``, where FINN's builder
    writes its own, which is kept beside it as ``deploy.finn/``.
    """

    DEPLOY: ClassVar[str] = "deploy"
    FINN_DEPLOY: ClassVar[str] = "deploy.finn"

    @property
    def deploy(self) -> DeployDir:
        return DeployDir(self.path / self.DEPLOY)

    @property
    def finn_deploy(self) -> Path:
        return self.path / self.FINN_DEPLOY


@dataclass(frozen=True)
class RunDir:
    """A run folder: a model's whole history, from training to the compiled designs."""

    path: Path

    CONFIG: ClassVar[str] = "run.json"
    CHECKPOINT: ClassVar[str] = "checkpoint.pt"  # the latest epoch (resume from here)
    BEST: ClassVar[str] = "best.pt"  # the epoch with the best test accuracy
    METRICS: ClassVar[str] = "metrics.csv"
    PLOT: ClassVar[str] = "training.png"
    SUMMARY: ClassVar[str] = "summary.json"
    TENSORBOARD: ClassVar[str] = "tensorboard"
    EXPORT: ClassVar[str] = "export"
    COMPILE: ClassVar[str] = "compile"
    VERIFICATION_CACHE: ClassVar[str] = "verification-cache"
    NETWORK: ClassVar[str] = "network"  # a user network's source copy (models.NetworkSource)

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def network(self) -> Path:
        return self.path / self.NETWORK

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def plot(self) -> Path:
        return self.path / self.PLOT

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def export(self) -> ExportDir:
        return ExportDir(self.path / self.EXPORT)

    def compiled(self, board: str) -> CompileDir:
        return CompileDir(self.path / self.COMPILE / board)

    @property
    def verification_cache(self) -> Path:
        return self.path / self.COMPILE / self.VERIFICATION_CACHE


@dataclass
class CompileInfo:
    """compile.json: what was compiled, how, and the headline numbers.

    Written once by the compile stage and read by every later one. The JSON
    holds exactly these fields, so ``to_json`` of a compile's info is the file
    byte for byte as earlier bnnflow versions wrote it; fields that older
    files lack read as their default, and only the first four are required.
    """

    input: str  # the QONNX model compiled
    board: str
    part: str
    clock_ns: float
    # mode and what decided it (preset, target_fps, source, the fit search's figures)
    folding: dict[str, Any] = field(default_factory=dict)
    estimated_fps: float = 0.0  # compute estimate; expected_fps adds the DMA bound
    bottleneck: str = ""
    io_bound: dict[str, Any] | None = None
    expected_fps: float = 0.0
    throughput_bound: str = ""
    totals: dict[str, Any] = field(default_factory=dict)
    utilisation: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    cppsim: dict[str, Any] | None = None
    resume_step: str = ""  # where `bnnflow bitstream` hands over to FINN's builder
    cpu_model: str | None = None  # CompileDir.CPU_MODEL, or None where the format cannot express the graph
    runtime_weights: bool = False
    cpu_model_error: str | None = None  # why there is no CPU model file
    host_binarize: bool = False  # the input threshold runs on the host (HOST_THRESHOLDS)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["cpu_model_error"] is None:  # written only where there is no model file
            del data["cpu_model_error"]
        if not data["host_binarize"]:  # written only for a host-binarized design
            del data["host_binarize"]
        return data

    @classmethod
    def from_json(cls, data: Any, where: Path | str = "compile.json") -> CompileInfo:
        if not isinstance(data, dict):
            raise BnnflowError(f"{where} is not a bnnflow compile summary")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:  # a required field is missing
            raise BnnflowError(f"{where} is not a bnnflow compile summary") from None
