"""The one exception type the CLI turns into a one-line error."""

from __future__ import annotations


class BnnflowError(Exception):
    """A user-facing error: bad input, missing files, an impossible request.

    The CLI prints ``bnnflow: error: <message>`` and exits with ``exit_code``;
    anything else escaping a command is a bug and keeps its traceback.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
