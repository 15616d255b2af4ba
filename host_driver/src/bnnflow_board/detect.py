"""Which board bnnflow-board is running on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow_board.deployformat import BOARDS, same_board

FAMILY_BY_ARCH = {"armv7l": "zynq-7000", "aarch64": "zynq-ultrascale+"}
# PYNQ images record the board they were built for here (pynq/ps.py tests it for ON_TARGET)
PYNQ_BOARD_FILE = Path("/proc/device-tree/chosen/pynq_board")


@dataclass(frozen=True)
class RunningBoard:
    name: str | None  # e.g. Pynq-Z2, or None where the image does not say
    family: str | None  # zynq-7000 / zynq-ultrascale+, or None off-board
    arch: str
    source: str  # how it was told
    simulated: bool
    cpu: str

    def describe(self) -> str:
        what = self.name or (self.family or "an unknown machine")
        return f"{what} (simulated board)" if self.simulated else f"{what} ({self.source})"


def running_board(device: Any = None) -> RunningBoard:
    """The simulated board's identity, else the PYNQ image's board name, else the CPU architecture."""
    if device is not None and getattr(device, "simulated_board", None):
        spec = BOARDS[device.simulated_board]
        # the simulated board's ARM cores are this machine's CPU
        host = platform.processor() or platform.machine()
        return RunningBoard(spec.name, spec.family, platform.machine(), "simulated board", True, host)
    arch = platform.machine()
    family = FAMILY_BY_ARCH.get(arch)
    name, source = None, "cpu architecture"
    try:
        name = PYNQ_BOARD_FILE.read_bytes().rstrip(b"\0\n").decode() or None
        source = "device tree"
    except OSError:
        if os.environ.get("BOARD"):
            name, source = os.environ["BOARD"], "BOARD variable"
    cpu = next((b.cpu for b in BOARDS.values() if name and same_board(b.name, name)), arch)
    return RunningBoard(name, family, arch, source, False, cpu)
