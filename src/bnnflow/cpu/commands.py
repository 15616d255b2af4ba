"""``bnnflow cpu``: the CPU engine's commands, one subcommand each.

``bnnflow cpu RUN_OR_COMPILE_DIR`` (short for ``bnnflow cpu run``) runs the
engine on the design's test set: accuracy, agreement with FINN, throughput.
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

from bnnflow.bnncpu.modelfile import read_model
from bnnflow.bnncpu.writer import MODEL_FILE, export_cpu_model
from bnnflow.cliutil import HelpFormatter, positive_int
from bnnflow.cpu.evaluate import evaluate_cpu, format_report


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


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the engine on a design's test set: accuracy, agreement with FINN, throughput",
        description=(
            "Run the C CPU engine on the test set of the dataset a design was compiled for: accuracy, "
            "agreement of classes and integer scores with FINN's execution of the hardware graph "
            "(must be 100%%), throughput and memory. Also written to <compile dir>/cpu.json. "
            "`bnnflow cpu DIR` is short for `bnnflow cpu run DIR`."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("path", help="run folder (runs/<name>) or compile folder (runs/<name>/compile/<board>)")
    p.add_argument("--board", default=None, help="which compile folder of a run (default: its only one)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the run's dataset is: a named dataset's files, or a folder:/npz: dataset's new place",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="N test images, seeded, every class its share (default: all)",
    )
    p.add_argument(
        "--finn", type=int, default=500, metavar="N", help="images to compare with FINN's execution (0 skips)"
    )
    p.set_defaults(func=_run)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_add_run, _add_export, _add_info)
SUBCOMMAND_NAMES = ("run", "export", "info")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cpu",
        help="the CPU engine: its model file, written from the compiled FPGA design",
        description=(
            "The bnncpu CPU engine computes exactly what the compiled FPGA design computes. "
            "`bnnflow cpu DIR` runs it on a run's or compile folder's test set (`bnnflow cpu run DIR`)."
        ),
        formatter_class=HelpFormatter,
    )
    cpu_sub = p.add_subparsers(dest="cpu_command", metavar="SUBCOMMAND", parser_class=type(p))
    cpu_sub.required = True
    for add in SUBCOMMANDS:
        add(cpu_sub)


def _export(args: argparse.Namespace) -> int:
    path = export_cpu_model(args.compile_dir, args.out)
    model = read_model(path)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(model.describe())
    return 0


def _info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if path.is_dir():
        path = path / MODEL_FILE
    model = read_model(path)
    print(f"{path} ({path.stat().st_size:,} bytes)")
    print(model.describe())
    return 0


def _run(args: argparse.Namespace) -> int:
    report = evaluate_cpu(args.path, args.board, args.data_dir, args.limit, args.finn)
    print(format_report(report))
    if not report.agrees:
        print(f"bnnflow: error: the CPU engine differs from FINN: {report.first_difference}")
        return 1
    return 0
