"""The one exception type ``bnnflow-board`` turns into a one-line error."""

from __future__ import annotations


class BoardError(Exception):
    """Bad input, a package that fails a check, a board that does not answer.

    The CLI prints ``bnnflow-board: error: <message>`` and exits with
    ``exit_code``; anything else escaping a command is a bug and keeps its
    traceback.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
