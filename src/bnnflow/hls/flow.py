"""``compile_model``: QONNX to a folded FINN dataflow design with generated HLS/RTL.

The output folder mirrors FINN's builder output (``intermediate_models/``,
``report/``) so that ``build_dataflow_cfg`` resumes from it; the steps are
those of steps.py, run as FINN's builder runs its own (finnlib/steps.py, which
also says why not through the builder). The folder's files are named in
bnnflow/layout.py (``CompileDir``):

    compile/<board>/
      model_hw.onnx               folded, specialised hardware-layer graph (after codegen)
      folding.json                FINN folding config (folding_config_file)
      dataflow_build_config.json  DataflowBuildConfig for the remaining steps
      estimates.json / .png       per-layer PE, SIMD, cycles, LUT, BRAM, DSP vs the board
      verification.json           QONNX vs streamlined vs hardware graph on test images
      model.bnn                   the CPU engine's model file, from model_hw.onnx (bnnflow.bnncpu)
      cppsim.json                 with --cppsim N: the generated HLS C++ run in FINN's cppsim vs
                                  FINN's Python execution and vs the CPU engine

    <run>/compile/verification-cache/<sha256>.json
                                  passed verifications, shared by the boards (see steps._cached_verify)
      compile.json                what was compiled, how, and the headline numbers (layout.CompileInfo)
      report/                     FINN's own estimate reports
      intermediate_models/        every step's model, named as FINN's builder names them
      hw_codegen/<layer>/         generated HLS C++ and filled RTL templates
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.data import DatasetIdentity, check_model_fits, find_identity, test_images, write_identity
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.boards import get_board
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.finnlib.hwgraph import read_graph
from bnnflow.finnlib.steps import run_steps
from bnnflow.hls.cppsim import CppSimResult, HlsSim, find_hls_sim
from bnnflow.hls.folding import load_folding_json
from bnnflow.hls.report import DesignEstimate, format_table
from bnnflow.hls.steps import COMPILE_STEPS, CompileConfig
from bnnflow.hls.verify import VerifyResult
from bnnflow.layout import CompileDir, ExportDir, RunDir
from bnnflow.runs import atomic_directory

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class CompileOptions:
    """How to compile: ``bnnflow compile``'s options.

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
    ``host_binarize``: a network whose first layer thresholds the 8-bit pixels to
    bits gets that threshold taken out (finnlib/host_threshold.py): the graph
    takes the bits, the host thresholds before the DMA (docs/host-binarize.md).
    """

    board: str = "Pynq-Z2"
    out_dir: str | Path | None = None  # default <run>/compile/<board>
    folding: str = "fit"
    clock_ns: float = 10.0
    budget: float = 0.85
    n_verify: int = 1000
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    data_dir: str | Path | None = None
    verify_workers: int | None = None
    verify_cache: bool = True
    n_cppsim: int = 0
    hls_sim: str | Path | None = None
    runtime_weights: bool = False
    host_binarize: bool = False

    def check(self) -> None:
        if not 0 < self.clock_ns < math.inf:
            raise BnnflowError(f"--clock-ns must be a positive number of ns, got {self.clock_ns}")
        if not 0.0 < self.budget <= 1.0:
            raise BnnflowError(f"--budget must be in (0, 1], got {self.budget}")
        if self.n_verify < 0:
            raise BnnflowError(f"--verify must be 0 or more, got {self.n_verify}")
        if self.host_binarize and self.runtime_weights:
            # a weights-only update (runtime_weights.py) rebuilds the graph with the threshold in it
            # and carries no host thresholds, so it could not update such a design
            raise BnnflowError("--host-binarize and --runtime-weights cannot be combined")


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
        if path.name == RunDir.EXPORT and ExportDir(path).model.is_file():
            return ExportDir(path).model, path.parent  # the export folder itself
        run = RunDir(path)
        model = run.export.model
        if not model.is_file():
            if any(p.is_file() for p in (run.best, run.checkpoint, run.config)):
                raise BnnflowError(f"{path} has no export/model.onnx; run `bnnflow export {path}` first")
            raise BnnflowError(
                f"{path} is not a run folder (no export/model.onnx, best.pt or checkpoint.pt); "
                "give a run folder or a QONNX .onnx file"
            )
        return model, path
    if not path.is_file():
        raise BnnflowError(f"model not found: {path}")
    run_dir = path.parent.parent if path.parent.name == RunDir.EXPORT else path.parent
    return path, run_dir


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

        load_folding_json(folding)  # unreadable JSON fails now, not after FINN's front end
        return "json", Path(folding)
    raise BnnflowError(f"bad --folding {folding!r}; use fit, published, fps:<N> or a folding .json file")


def _find_cppsim(n_cppsim: int, hls_sim: str | Path | None) -> HlsSim | None:
    """The C++ toolchain for the cppsim stage, found before any compiling starts."""
    if n_cppsim < 0:
        raise BnnflowError(f"--cppsim must be 0 or more, got {n_cppsim}")
    return find_hls_sim(hls_sim) if n_cppsim else None


def _read_model(model_path: Path) -> Any:
    return read_graph(model_path)


def _test_images(
    model: Any, model_path: Path, identity: DatasetIdentity | None, opts: CompileOptions
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(verification images, their labels, cppsim images): the options' own, else a seeded,
    class-stratified subset of the test split of the dataset the model's run recorded."""
    images, labels = opts.images, opts.labels
    if (opts.n_verify or opts.n_cppsim) and images is None:
        if identity is None:
            raise BnnflowError(
                f"no dataset is recorded for {model_path} (no dataset.json beside it or in its run folder); "
                "pass --verify 0"
            )
        in_shape = tuple(int(d) for d in model.get_tensor_shape(model.graph.input[0].name)[1:])
        check_model_fits(identity, in_shape, identity.num_classes, str(model_path))
        images, labels = test_images(identity, max(opts.n_verify, opts.n_cppsim), opts.data_dir)
    cppsim_images = None if images is None else np.asarray(images)[: opts.n_cppsim]
    if images is not None:
        images = np.asarray(images)[: opts.n_verify or 0]
        labels = None if labels is None else np.asarray(labels)[: len(images)]
    return images, labels, cppsim_images


def _finn_config(out: Path, board: Any, opts: CompileOptions) -> Any:
    """FINN's own config for the steps: estimates only, the folding from the folder's folding.json."""
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    return DataflowBuildConfig(
        output_dir=str(out),
        board=board.name,
        fpga_part=board.part,
        synth_clk_period_ns=opts.clock_ns,
        folding_config_file=CompileDir(out).folding,
        generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
        standalone_thresholds=opts.runtime_weights,
    )


def compile_model(
    onnx_or_run: str | Path,
    board: str | None = None,
    out_dir: str | Path | None = None,
    folding: str | None = None,
    *,
    options: CompileOptions | None = None,
    log: Log | None = _stderr,
    **overrides: Any,
) -> CompileResult:
    """Compile a QONNX model (or a run folder's export) for a board; see ``CompileOptions``.

    ``board``, ``out_dir``, ``folding`` and any ``CompileOptions`` field given
    by name (``n_verify=40``) override ``options``.
    """
    log = log or (lambda _msg: None)
    given = {"board": board, "out_dir": out_dir, "folding": folding}
    overrides.update({k: v for k, v in given.items() if v is not None})
    opts = replace(options or CompileOptions(), **overrides)
    brd = get_board(opts.board)
    opts.check()
    mode, arg = parse_folding(opts.folding)
    model_path, run_dir = resolve_input(onnx_or_run)
    final = CompileDir(
        (
            Path(opts.out_dir) if opts.out_dir is not None else RunDir(run_dir).compiled(brd.name).path
        ).absolute()
    )
    prepare_finn()
    sim = _find_cppsim(opts.n_cppsim, opts.hls_sim)
    model = _read_model(model_path)
    identity = find_identity(model_path)
    images, labels, cppsim_images = _test_images(model, model_path, identity, opts)

    log(f"compiling {model_path} for {brd.name} ({brd.part}) at {opts.clock_ns} ns, folding {opts.folding}")
    with atomic_directory(final.path, marker=CompileDir.SUMMARY) as tmp:
        cfg = CompileConfig(
            finn=_finn_config(tmp, brd, opts),
            board=brd,
            clock_ns=opts.clock_ns,
            out=CompileDir(tmp),
            log=log,
            runtime_weights=opts.runtime_weights,
            host_binarize=opts.host_binarize,
            final=final,
            source=model_path,
            folding_mode=mode,
            folding_arg=arg,
            budget=opts.budget,
            images=images,
            labels=labels,
            verify_workers=opts.verify_workers,
            verify_cache=RunDir(run_dir).verification_cache.absolute() if opts.verify_cache else None,
            sim=sim,
            cppsim_images=cppsim_images,
        )
        shutil.copyfile(model_path, cfg.finn.get_intermediate_models_directory() / CompileDir.INPUT_GRAPH)
        if identity is not None:  # the later stages' dataset, also in a copy of this folder
            write_identity(tmp, identity)
        run_steps(model, COMPILE_STEPS, cfg)
    assert cfg.estimate is not None
    log(format_table(cfg.estimate))
    log(f"compiled design in {final.path}")
    return CompileResult(
        out_dir=final.path,
        model_path=final.hw_graph,
        folding_path=final.folding,
        build_config_path=final.build_config,
        estimate=cfg.estimate,
        verification=cfg.verification,
        folding=mode,
        cppsim=cfg.cppsim,
    )
