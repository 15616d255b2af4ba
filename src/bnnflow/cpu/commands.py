"""``bnnflow cpu``: the CPU engine's commands, one subcommand each.

``bnnflow cpu export COMPILE_DIR`` writes the model file of a compile folder
(``bnnflow compile`` already writes it; this is for folders compiled before
it did), ``bnnflow cpu info FILE`` describes one. Further subcommands go into
SUBCOMMANDS, each a function adding its parser to the ``cpu`` group.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnnflow.cliutil import HelpFormatter


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write the CPU model file (model.bnn) of a compile folder",
        description=(
            "Write the bnncpu model file from a compile folder's hardware graph (model_hw.onnx, the "
            "graph FINN generated the HLS from): the same binary weights, integer thresholds and "
            "label select as the FPGA design."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("compile_dir", help="compile folder (runs/<name>/compile/<board>)")
    p.add_argument("--out", default=None, help="model file to write (default: <compile_dir>/model.bnn)")
    p.set_defaults(func=_export)


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="check a CPU model file and describe its input and layers",
        description=(
            "Read and validate a bnncpu model file (checksum, sizes, layer chaining) and list its layers."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", help="model file, or a compile folder holding model.bnn")
    p.set_defaults(func=_info)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_add_export, _add_info)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cpu",
        help="the CPU engine: its model file, written from the compiled FPGA design",
        description="The bnncpu CPU engine computes exactly what the compiled FPGA design computes.",
        formatter_class=HelpFormatter,
    )
    cpu_sub = p.add_subparsers(dest="cpu_command", metavar="SUBCOMMAND", parser_class=type(p))
    cpu_sub.required = True
    for add in SUBCOMMANDS:
        add(cpu_sub)


def _export(args: argparse.Namespace) -> int:
    from bnnflow.cpu.export import export_cpu_model
    from bnnflow.cpu.modelfile import read_model

    path = export_cpu_model(args.compile_dir, args.out)
    model = read_model(path)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(model.describe())
    return 0


def _info(args: argparse.Namespace) -> int:
    from bnnflow.cpu.export import MODEL_FILE
    from bnnflow.cpu.modelfile import read_model

    path = Path(args.model)
    if path.is_dir():
        path = path / MODEL_FILE
    model = read_model(path)
    print(f"{path} ({path.stat().st_size:,} bytes)")
    print(model.describe())
    return 0
