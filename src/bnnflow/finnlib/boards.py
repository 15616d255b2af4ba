"""The PYNQ boards bnnflow compiles for, and what each part holds.

Parts are FINN's own ``finn.util.basic.pynq_part_map`` entries (tests check
they agree); capacities are from the Xilinx product tables (Zynq-7000 DS190,
Zynq UltraScale+ DS891). BRAM is counted in 18 Kb halves because that is the
unit of FINN's ``res_estimation`` (``BRAM_18K``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnflow.errors import BnnflowError


@dataclass(frozen=True)
class Board:
    name: str  # FINN's board name (``DataflowBuildConfig.board``)
    part: str
    lut: int
    ff: int
    bram_18k: int
    dsp: int
    cpu: str

    def capacity(self) -> dict[str, int]:
        """Capacities keyed like FINN's resource estimates."""
        return {"LUT": self.lut, "BRAM_18K": self.bram_18k, "DSP": self.dsp}


BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board("Pynq-Z2", "xc7z020clg400-1", 53_200, 106_400, 2 * 140, 220, "Cortex-A9 x2"),
        # Ultra96 V1 and V2 share the xczu3eg die; FINN maps V1 to the commercial
        # (-e) and V2 to the industrial (-i) grade.
        Board("Ultra96", "xczu3eg-sbva484-1-e", 70_560, 141_120, 2 * 216, 360, "Cortex-A53 x4"),
        Board("Ultra96-V2", "xczu3eg-sbva484-1-i", 70_560, 141_120, 2 * 216, 360, "Cortex-A53 x4"),
    )
}


def board_names() -> list[str]:
    return list(BOARDS)


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        # Accept the case-insensitive spelling people type (pynq-z2, ultra96-v2).
        for board in BOARDS.values():
            if board.name.lower() == str(name).lower():
                return board
        raise BnnflowError(f"unknown board {name!r}; choose one of: {', '.join(board_names())}") from None
