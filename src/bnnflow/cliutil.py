"""Help formatting shared by the subcommands."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it says something: not None, not already in the text.

    Flags (store_true, store_false, BooleanOptionalAction: options that take
    no value) never get one: the default of ``--no-progress`` is True, i.e.
    the bars are on, and "(default: True)" next to it reads as the opposite.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.nargs == 0
            or action.default is None
            or action.default is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return super()._get_help_string(action)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value
