"""Board-side tests: they run in .venv-board (pynq, finn-plus-driver, numpy 1.x).

The designs and packages they run are made once per session by
host_designs.py in the compiler's environment (.venv), as `bnnflow package`
makes them; the simulated board then runs the real pynq and finn-plus-driver
over a software device, with FINN executing the compiled design in .venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from bnnflow_board._qonnx import ensure_qonnx_importable

# finn-plus-driver's packing imports qonnx, which imports onnx; .venv-board has no
# onnx, as the Pynq-Z2 has none (see bnnflow_board/_qonnx.py).
ensure_qonnx_importable()

REPO = Path(__file__).resolve().parents[2]
HOST_PYTHON = Path(os.environ.get("BNNFLOW_HOST_PYTHON", REPO / ".venv" / "bin" / "python"))
BOARD_CLI = Path(sys.executable).with_name("bnnflow-board")
HLS_SIM = REPO.parent / "shared" / "hls-sim"


def unavailable(why: str) -> NoReturn:
    """Skip a test whose tool or data is missing here; under CI (CI=true) fail instead:
    CI installs everything and must never test less than it claims."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"under CI nothing may be skipped: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def designs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HOST_PYTHON.is_file():
        unavailable(f"no compiler environment at {HOST_PYTHON} (make install)")
    out = tmp_path_factory.mktemp("designs")
    r = subprocess.run(
        [str(HOST_PYTHON), str(Path(__file__).with_name("host_designs.py")), str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def made(designs: Path) -> dict[str, str]:
    return json.loads((designs / "made.json").read_text())


@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("simulated-board-cache")


def board_cli(*args: str, timeout: float = 1200, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(
        [str(BOARD_CLI), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
