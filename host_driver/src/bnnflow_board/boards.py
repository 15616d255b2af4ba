"""The boards bnnflow deploys to, looked up as the board side does: with bnnflow-board's error.

The table itself (names, parts, what tells the boards apart at run time, how
names are spelled) is the deployment format's, shared with the host:
``deployformat.BOARDS``.
"""

from __future__ import annotations

from bnnflow_board.deployformat import BOARDS, BoardSpec, find_board
from bnnflow_board.errors import BoardError


def get_board(name: str) -> BoardSpec:
    """The board ``name`` means, in any spelling (Pynq-Z2, pynq_z2, PYNQ-Z2)."""
    spec = find_board(name)
    if spec is None:
        raise BoardError(f"unknown board {name!r}; bnnflow deploys to {', '.join(BOARDS)}")
    return spec
