"""``build_bitstream``: finish a compiled design with FINN's own builder and Vivado.

The compile folder is FINN builder output up to code generation; this copies
it to ``bitstreams/<model>-<board>/`` and runs FINN's builder (``finn build``,
i.e. ``build_dataflow_cfg``) from ``step_generate_hardware`` (HLS IP generation, FIFO sizing, stitched IP,
Zynq shell, synthesis, bitfile, PYNQ driver, deployment package). bnnflow's
own deployment package (bnnflow.deploy) is written afterwards by the
``bitstream`` command (bnnflow/bitstream_command.py), not here: packaging is a
later stage. Without Vivado it stops before touching anything and says how to
run the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bnnflow.data import DATASET_FILE
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.hls.steps import load_build_config
from bnnflow.layout import BitstreamDir, CompileDir
from bnnflow.runs import atomic_write_json

# finn.xsi reads the Vivado version from the XILINX_VIVADO path with this
# pattern (YYYY.1 or YYYY.2), and FINN's docs give 2022.2 as the oldest
# supported release; finn-plus 1.6.1 carries fixes up to 2025.2.
VIVADO_VERSION_RE = re.compile(r"\b(20\d{2})\.(1|2)\b")
MIN_VIVADO = (2022, 2)

# Vivado board_part names FINN's Zynq shell sets (finn/transformation/fpgadataflow/templates.py)
# and the board-file folders that provide them (finn deps: pynq-z2.zip, Avnet/bdf).
BOARD_FILES = {"Pynq-Z2": "pynq-z2", "Ultra96": "ultra96v1", "Ultra96-V2": "ultra96v2"}

NO_VIVADO_HELP = """\
bnnflow: code generation done; the rest needs Vivado and Vitis HLS, which are not installed here.
  compiled design: {compile_dir}
  on a Vivado {min_v}+ host:  source <Xilinx>/Vivado/<ver>/settings64.sh && finn deps update
      then:  bnnflow bitstream {compile_dir} --out {out_dir}
  or in Docker (see docs/compile.md):  docker run --rm -v /tools/Xilinx:/tools/Xilinx:ro -v $PWD:/work \\
      -e XILINX_VIVADO=/tools/Xilinx/Vivado/<ver> -e XILINX_HLS=/tools/Xilinx/Vitis_HLS/<ver> bnnflow \\
      make bitstream MODEL=<model> BOARD=<board>"""


@dataclass(frozen=True)
class VivadoInfo:
    root: Path
    version: tuple[int, int]
    hls: Path | None


def check_vivado(board: str, env: Mapping[str, str] | None = None) -> VivadoInfo:
    """Vivado root, version and board files as FINN will need them, or a one-line error."""
    env = os.environ if env is None else env
    root_s = env.get("XILINX_VIVADO")
    if not root_s:
        raise BnnflowError("XILINX_VIVADO is not set: source Vivado's settings64.sh", exit_code=2)
    root = Path(root_s)
    if not (root / "bin" / "vivado").is_file():
        raise BnnflowError(f"XILINX_VIVADO={root} has no bin/vivado: not a Vivado installation")
    match = VIVADO_VERSION_RE.search(str(root))
    if not match:
        raise BnnflowError(
            f"cannot tell the Vivado version from XILINX_VIVADO={root} "
            "(finn-plus expects .../Vivado/<YYYY.1|YYYY.2>)"
        )
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_VIVADO:
        raise BnnflowError(
            f"Vivado {version[0]}.{version[1]} is too old for finn-plus; "
            f"need {MIN_VIVADO[0]}.{MIN_VIVADO[1]} or newer"
        )
    hls_s = env.get("XILINX_HLS")
    if not hls_s:
        raise BnnflowError(
            "XILINX_HLS is not set: FINN's HLS layers need Vitis HLS (source its settings64.sh)"
        )
    return VivadoInfo(root, version, Path(hls_s))


def check_board_files(board: str) -> Path:
    """FINN's Zynq shell needs the board's Vivado board files under finn_deps/board_files."""
    from finn.util.settings import get_settings

    folder = get_settings().finn_deps / "board_files"
    want = BOARD_FILES.get(board, board.lower())
    found = folder.is_dir() and any(p.name.lower() == want for p in folder.rglob(want) if p.is_dir())
    if not found:
        raise BnnflowError(
            f"board files for {board} ({want}) not found under {folder}: run `finn deps update`"
        )
    return folder


def default_out_dir(compile_dir: Path) -> Path:
    """bitstreams/<model>-<board>/ for runs/<model>/compile/<board>/."""
    board = compile_dir.name
    run = compile_dir.parent.parent.name if compile_dir.parent.name == "compile" else compile_dir.parent.name
    return Path("bitstreams") / f"{run}-{board}"


def _check_replaceable(out: Path) -> None:
    """Vivado projects bake absolute paths in, so the build cannot happen under a
    temporary name and be renamed afterwards; instead it runs in place and a
    failed build is moved aside to <out>.failed (kept for its logs), so <out>
    only ever holds a finished build. Only an earlier build (or an empty folder)
    is replaced, never a mistyped --out that points at something else.
    """
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise BnnflowError(f"refusing to replace {out}: it is not a folder")
        built = BitstreamDir(out)
        earlier = built.build_config.exists() or built.deploy.manifest.exists()
        if any(out.iterdir()) and not earlier:
            raise BnnflowError(f"refusing to replace {out}: it is not empty and holds no earlier build")


def _copy_design(src: CompileDir, out: Path) -> BitstreamDir:
    """The compile folder's design into ``out``, its paths and FINN's config pointing there."""
    built = BitstreamDir(out)
    for item in (
        src.intermediate,
        src.report,
        src.codegen,
        src.folding,
        src.hw_graph,
        src.summary,
        src.cpu_model,
        src.path / DATASET_FILE,  # the package's test images and class names come from it
    ):
        if item.is_dir():
            shutil.copytree(item, out / item.name)
        elif item.is_file():
            shutil.copy2(item, out / item.name)
    _rebase_codegen(built.step_graph("step_hw_codegen"), src.path, out)
    cfg = json.loads(src.build_config.read_text())
    cfg["output_dir"] = str(out)
    atomic_write_json(built.build_config, cfg)
    load_build_config(built.build_config)
    return built


def build_bitstream(
    compile_dir: str | Path,
    out_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    check_design: Callable[[Path], None] | None = None,
) -> Path:
    """Run FINN's builder from the compiled design to a bitfile and PYNQ driver.

    ``check_design(compile_dir)`` runs once the Vivado host is known good and
    before the build starts: a later stage's refusal (the deployment package's)
    costs seconds there, not hours of Vivado.
    """
    compile_dir = Path(compile_dir).absolute()
    cfg_path = CompileDir(compile_dir).build_config
    if not cfg_path.is_file():
        raise BnnflowError(f"{compile_dir} is not a compiled design (no {CompileDir.BUILD_CONFIG})")
    out = Path(out_dir) if out_dir is not None else default_out_dir(compile_dir)
    out = out.absolute()
    env = os.environ if env is None else env
    try:
        board = str(json.loads(cfg_path.read_text())["board"])
    except (OSError, ValueError, KeyError):
        raise BnnflowError(f"{cfg_path} is not a bnnflow/FINN build config") from None
    if not env.get("XILINX_VIVADO"):
        print(
            NO_VIVADO_HELP.format(compile_dir=compile_dir, out_dir=out, min_v="{}.{}".format(*MIN_VIVADO)),
            file=sys.stderr,
        )
        raise BnnflowError(
            "Vivado not found (XILINX_VIVADO unset): stopped after code generation", exit_code=2
        )
    check_vivado(board, env)
    prepare_finn()
    check_board_files(board)

    # FINN's builder is run through FINN's own CLI (`finn build`, which calls
    # build_dataflow_cfg) rather than imported here: before building, the CLI
    # boots what a Vivado build needs (dependency check, the finn_xsi simulator
    # build for this Vivado version, and a re-exec with Xilinx libraries on
    # LD_LIBRARY_PATH, which cannot be changed for a running process).
    # The `finn` on PATH (an activated environment's, or one a user put first), else the one
    # installed beside this Python (the environment bnnflow runs in, not activated).
    found = shutil.which("finn") or shutil.which("finn", path=str(Path(sys.executable).parent))
    if found is None:
        raise BnnflowError(
            f"FINN's command line tool `finn` is neither on PATH nor next to {sys.executable}; "
            "reinstall finn-plus"
        )
    finn = Path(found)

    _check_replaceable(out)
    if check_design is not None:
        check_design(compile_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        built = _copy_design(CompileDir(compile_dir), out)
        cmd = [str(finn), "build", "--accept-defaults", "-o", str(out)]
        cmd += [str(built.build_config), str(built.hw_graph)]
        print("running:", " ".join(cmd), file=sys.stderr, flush=True)
        code = subprocess.call(cmd, cwd=out)
        if code != 0 or not list((out / "bitfile").glob("*.bit")):
            raise BnnflowError(f"FINN's builder failed (exit {code}); see {out}.failed/build_dataflow.log")
    except BaseException:
        failed = out.with_name(out.name + ".failed")
        shutil.rmtree(failed, ignore_errors=True)
        if out.exists():
            os.replace(out, failed)
        raise
    return out


def _rebase_codegen(model_path: Path, old_root: Path, new_root: Path) -> None:
    """Point each layer's code_gen_dir_ipgen at the copy of its sources in new_root."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(str(model_path))
    for node in model.graph.node:
        inst = getCustomOp(node)
        try:
            path = str(inst.get_nodeattr("code_gen_dir_ipgen"))
        except (AttributeError, Exception):
            continue
        if path.startswith(str(old_root)):
            inst.set_nodeattr("code_gen_dir_ipgen", str(new_root) + path[len(str(old_root)) :])
    model.save(str(model_path))
