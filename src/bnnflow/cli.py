"""The ``bnnflow`` command: one subcommand per stage of the flow.

Each stage module exposes ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=handler)``; a handler takes the parsed
arguments and returns an exit code. A ``BnnflowError`` becomes one line on
stderr and its exit code; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from bnnflow import __version__
from bnnflow.cpu.commands import SUBCOMMAND_NAMES
from bnnflow.errors import BnnflowError

# Stage modules in flow order; each defines register(subparsers).
STAGES = (
    "bnnflow.training.commands",
    "bnnflow.export.commands",
    "bnnflow.hls.check",
    "bnnflow.hls.commands",
    "bnnflow.bitstream_command",
    "bnnflow.cpu.commands",
    "bnnflow.deploy.commands",
    "bnnflow.bench.commands",
    "bnnflow.demo",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like argparse but shorter
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bnnflow",
        description="Binarized neural networks from Bop training to FINN dataflow designs on PYNQ boards.",
    )
    parser.add_argument("--version", action="version", version=f"bnnflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in STAGES:
        importlib.import_module(name).register(sub)
    return parser


def _shorthands(argv: list[str]) -> list[str]:
    """``bnnflow cpu DIR`` is ``bnnflow cpu run DIR``."""
    if (
        len(argv) >= 2
        and argv[0] == "cpu"
        and not argv[1].startswith("-")
        and argv[1] not in SUBCOMMAND_NAMES
    ):
        return ["cpu", "run", *argv[1:]]
    return argv


def _check_before_training(args: argparse.Namespace) -> None:
    """``bnnflow train`` of a user network first runs ``bnnflow check`` on it, once its settings
    are valid (not when resuming, not with --no-check; the named networks are compiled by the
    test suite). Under torchrun rank 0 alone checks; the others wait for it at the process group."""
    if args.command != "train" or not getattr(args, "check", False) or args.resume:
        return
    from bnnflow.models import is_user_model
    from bnnflow.training.trainer import TrainConfig

    if not is_user_model(args.model) or os.environ.get("RANK", "0") != "0":
        return
    fields = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)}
    cfg = TrainConfig(**fields).resolved()  # a bad setting is reported before the check's work
    from bnnflow.hls.check import check_before_training

    check_before_training(cfg.model, cfg.dataset)


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    # Only `bnnflow train` starts a process group, and it has imported the trainer by then;
    # other commands do not pay for importing torch here.
    trainer = sys.modules.get("bnnflow.training.trainer")
    return code if trainer is None else trainer.exit_after_distributed(code)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(_shorthands(list(sys.argv[1:] if argv is None else argv)))
    try:
        _check_before_training(args)
        return int(args.func(args) or 0)
    except BnnflowError as exc:
        print(f"bnnflow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bnnflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = None
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
