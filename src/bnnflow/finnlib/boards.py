"""The PYNQ boards bnnflow compiles for, and what each part holds.

Parts are FINN's own ``finn.util.basic.pynq_part_map`` entries (tests check
they agree); capacities are from the Xilinx product tables (Zynq-7000 DS190,
Zynq UltraScale+ DS891). BRAM is counted in 18 Kb halves because that is the
unit of FINN's ``res_estimation`` (``BRAM_18K``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnflow_board.deployformat import BOARDS as DEPLOY_BOARDS
from bnnflow_board.deployformat import find_board

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


# Capacities by board; the names, FINN's parts and the CPUs come from the deployment format's board
# table, which bnnflow-board reads on the board too.
_CAPACITY = {  # LUT, FF, BRAM_18K, DSP
    "Pynq-Z2": (53_200, 106_400, 2 * 140, 220),
    # Ultra96 V1 and V2 share the xczu3eg die (deployformat.BOARDS says which grade FINN maps each to).
    "Ultra96": (70_560, 141_120, 2 * 216, 360),
    "Ultra96-V2": (70_560, 141_120, 2 * 216, 360),
}
BOARDS: dict[str, Board] = {
    b.name: Board(b.name, b.part, *_CAPACITY[b.name], b.cpu) for b in DEPLOY_BOARDS.values()
}


def board_names() -> list[str]:
    return list(BOARDS)


def get_board(name: str) -> Board:
    """The board ``name`` means, spelled as on the board side (Pynq-Z2, pynq-z2, pynq_z2, ultra96v2)."""
    found = find_board(name)
    if found is None:
        raise BnnflowError(f"unknown board {name!r}; choose one of: {', '.join(board_names())}")
    return BOARDS[found.name]
