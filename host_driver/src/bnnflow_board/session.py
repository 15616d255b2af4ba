"""A deployment package opened on a board: what ``check``, ``bench`` and ``update-weights`` start from.

Opening reads the package and checks it against the running board
(checks.py); on the simulated board it first makes the .bit/.hwh a package
without Vivado's lacks. From an open package come the FPGA (finn-plus-driver
through ``FpgaRunner``, with a deadline per run: deadline.py) and the CPU
engine (built from the package's sources with the board's gcc). Closing
releases both and the work folder they were built in.
"""

from __future__ import annotations

import math
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow_board.boards import get_board
from bnnflow_board.checks import Check, failures, run_checks
from bnnflow_board.deadline import deadline_terms
from bnnflow_board.detect import RunningBoard, running_board
from bnnflow_board.errors import BoardError
from bnnflow_board.package import Package, load_package


@dataclass
class SimulatedBoard:
    """What the simulated board needs: the board to be, the compiled design and the compiler's Python."""

    board: str | None = None  # None: the package's board
    design: Path | None = None  # None: the compile folder the manifest names
    python: Path | None = None  # None: the Python that wrote the package
    exec_mode: str = "auto"
    cache: Path | None = None
    fault: str | None = None
    start_timeout_s: float | None = None  # None: deadline.START_TIMEOUT_S, to start and to prepare


def simulated_bitfile(pkg: Package, folder: Path) -> Path:
    """Vivado's bitfile where the package has one, else a .bit/.hwh made for the simulated board."""
    if pkg.bitfile is not None:
        return pkg.bitfile
    from bnnflow_board.simulated.hwh import make_bit, make_hwh

    spec = get_board(pkg.board)
    folder.mkdir(parents=True, exist_ok=True)
    text, _ = make_hwh(spec, pkg.manifest["instances"], float(pkg.manifest["clock_mhz"]))
    (folder / "finn-accel.hwh").write_text(text)
    (folder / "finn-accel.bit").write_bytes(make_bit(spec))
    return folder / "finn-accel.bit"


def check_package(
    path: str | Path, sim: SimulatedBoard | None = None, work: Path | None = None
) -> tuple[Package, RunningBoard, Path | None, list[Check]]:
    """(package, running board, bitfile, checks), the board simulated where asked."""
    pkg = load_package(path)
    device_stub = None
    if sim is not None:
        device_stub = type(
            "SimulatedIdentity", (), {"simulated_board": get_board(sim.board or pkg.board).name}
        )()
    board = running_board(device_stub)
    bitfile = pkg.bitfile
    if sim is not None:
        bitfile = simulated_bitfile(pkg, (work or Path(tempfile.mkdtemp())) / "simulated-bitfile")
    checks = run_checks(pkg, board, bitfile)
    return pkg, board, bitfile, checks


def check_timeout(timeout_s: float | None) -> None:
    """A deadline is a finite number of seconds above 0 (nan and inf would never expire)."""
    if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
        raise BoardError(f"the timeout must be a finite number of seconds above 0, got {timeout_s}")


class Session:
    """A checked package on this board (or the simulated one) and what was opened for it."""

    def __init__(self, path: str | Path, sim: SimulatedBoard | None = None, prefix: str = "bnnflow-board-"):
        self.sim = sim
        self.work = Path(tempfile.mkdtemp(prefix=prefix))
        self.device: Any = None  # the simulated board's pynq device, once the FPGA is opened
        self.engine: Any = None
        try:
            self.pkg, self.board, self.bitfile, self.checks = check_package(path, sim, self.work)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        return " (simulated board)" if self.board.simulated else ""

    def require_checks(self) -> None:
        """Any failed check stops here: nothing runs on a package that is not complete and for this board."""
        failed = failures(self.checks)
        if failed:
            raise BoardError(f"check failed: {failed[0].name}: {failed[0].detail}")

    def start_simulated_device(self, log: Callable[[str], None]) -> Any:
        """The simulated board's device, its fabric running the compiled design (sim only)."""
        from bnnflow_board.simulated.device import SimulatedBoardDevice
        from bnnflow_board.simulated.fabric import Fabric

        assert self.sim is not None
        host = self.pkg.manifest.get("host") or {}
        design = self.sim.design or Path(host.get("compile_dir", ""))
        python = self.sim.python or Path(host.get("python", ""))
        spec = get_board(self.sim.board or self.pkg.board)
        log(
            f"simulated board {spec.name}: FINN runs {design} ({self.sim.exec_mode} execution; "
            "cppsim compiles first)"
        )
        fabric = Fabric(
            design,
            self.pkg.board,
            python,
            self.sim.exec_mode,
            self.sim.cache,
            self.work / "simulated-accelerator.log",
            **({"start_timeout_s": self.sim.start_timeout_s} if self.sim.start_timeout_s is not None else {}),
        )
        self.device = SimulatedBoardDevice(spec, fabric, self.sim.fault)
        return self.device

    def open_fpga(
        self, runtime_weight_dir: Path | None, timeout_s: float | None, log: Callable[[str], None]
    ) -> Any:
        """An ``FpgaRunner`` on the FPGA programmed with the package's bitfile; finn-plus-driver writes
        ``runtime_weight_dir``'s weights as it loads. ``timeout_s``: the base deadline of a run."""
        from bnnflow_board.overlay import FpgaRunner

        if self.sim is not None:
            self.start_simulated_device(log)
        if self.bitfile is None:
            raise BoardError("the package has no bitfile")
        base, per_image = deadline_terms(timeout_s, self.board.simulated)
        return FpgaRunner(
            Path(self.bitfile),
            self.pkg.driver,
            device=self.device,
            timeout_s=base,
            per_frame_s=per_image,
            runtime_weight_dir=runtime_weight_dir,
        )

    def open_cpu_engine(self, model: Path | None = None) -> tuple[Any, str]:
        """(engine, "") for the package's engine built here running ``model`` (default: the package's
        model.bnn), or (None, why) where it cannot be built."""
        from bnnflow_board.cpu_engine import CpuEngine, CpuEngineUnavailable, build_engine

        try:
            lib = build_engine(self.cpu_sources, self.work / "cpu-build", platform.machine())
        except CpuEngineUnavailable as exc:
            return None, str(exc)
        self.engine = CpuEngine(lib, model or self.pkg.root / self.pkg.manifest["cpu"]["model"])
        return self.engine, ""

    def c_loop(self, model: Path | None) -> dict[str, Any]:
        """The engine's own C timing loop on ``model`` (bnnflow-cpu bench), or why there is none."""
        from bnnflow_board.cpu_engine import CpuEngineUnavailable, c_loop_bench

        try:
            return c_loop_bench(
                self.cpu_sources,
                self.work / "cpu-build",
                model or self.pkg.root / self.pkg.manifest["cpu"]["model"],
            )
        except CpuEngineUnavailable as exc:
            return {"why": str(exc)}

    @property
    def cpu_sources(self) -> Path:
        return self.pkg.root / self.pkg.manifest["cpu"]["sources"]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self.device is not None:
            self.device.close()
            self.device = None
        shutil.rmtree(self.work, ignore_errors=True)
