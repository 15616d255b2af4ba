"""The boards bnnflow deploys to, as the board side needs to know them.

Parts are FINN's (``finn.util.basic.pynq_part_map``, as the compiler's
``bnnflow.hls.boards``); the rest is what tells the boards apart at run
time: the CPU architecture the PYNQ image runs, the processing system in
FINN's Zynq shell (finn/transformation/fpgadataflow/templates.py: its
instance is ``zynq_ps``, its AXI-lite peripherals start at 0x40000000 on
Zynq-7000 and 0xA0000000 on Zynq UltraScale+), and the Vivado board part
FINN's shell sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnflow_board.errors import BoardError


@dataclass(frozen=True)
class BoardSpec:
    name: str  # FINN's board name, as in the package manifest
    part: str
    family: str  # "zynq-7000" or "zynq-ultrascale+"
    arch: str  # platform.machine() of the board's Linux
    cpu: str
    board_part: str  # Vivado board_part FINN's Zynq shell sets
    axi_base: int  # first AXI-lite peripheral address in FINN's shell
    ddr_bytes: int

    device: str  # the die, as a .bit header and a .hwh name it (xc prefix added)
    package: str


BOARDS: dict[str, BoardSpec] = {
    b.name: b
    for b in (
        BoardSpec(
            "Pynq-Z2", "xc7z020clg400-1", "zynq-7000", "armv7l", "Cortex-A9 x2",
            "tul.com.tw:pynq-z2:part0:1.0", 0x4000_0000, 512 << 20, "xc7z020", "clg400",
        ),
        BoardSpec(
            "Ultra96", "xczu3eg-sbva484-1-e", "zynq-ultrascale+", "aarch64", "Cortex-A53 x4",
            "avnet.com:ultra96v1:part0:1.2", 0xA000_0000, 2048 << 20, "xczu3eg", "sbva484",
        ),
        BoardSpec(
            "Ultra96-V2", "xczu3eg-sbva484-1-i", "zynq-ultrascale+", "aarch64", "Cortex-A53 x4",
            "avnet.com:ultra96v2:part0:1.2", 0xA000_0000, 2048 << 20, "xczu3eg", "sbva484",
        ),
    )
}  # fmt: skip


def get_board(name: str) -> BoardSpec:
    for board in BOARDS.values():
        if _norm(board.name) == _norm(name):
            return board
    raise BoardError(f"unknown board {name!r}; bnnflow deploys to {', '.join(BOARDS)}")


def _norm(name: str) -> str:
    return "".join(c for c in str(name).lower() if c.isalnum())


def same_board(a: str, b: str) -> bool:
    """Pynq-Z2 == pynq_z2 == PYNQ-Z2."""
    return _norm(a) == _norm(b)


def board_matches(package_board: str, running: str) -> bool:
    """The running board can load a package's bitfile: the same board, or any Ultra96 for an Ultra96.

    Ultra96 V1 and V2 carry the same xczu3eg die (FINN maps them to the -e and
    -i grades) and PYNQ images name them loosely (Ultra96, Ultra96V2).
    """
    a, b = _norm(package_board), _norm(running)
    return a == b or (a.startswith("ultra96") and b.startswith("ultra96"))


def family_of_device(device: str) -> str | None:
    """zynq-7000 / zynq-ultrascale+ for a die name as a .bit or .hwh gives it (7z020, xczu3eg)."""
    d = device.lower()
    if d.startswith("xc"):
        d = d[2:]
    if d.startswith("7z"):
        return "zynq-7000"
    if d.startswith("zu"):
        return "zynq-ultrascale+"
    return None


def normalise_device(device: str) -> str:
    d = device.lower().strip()
    return d if d.startswith("xc") else "xc" + d
