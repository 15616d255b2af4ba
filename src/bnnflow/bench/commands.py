"""``bnnflow bench RUN_OR_COMPILE_DIR``: FPGA against CPU, every figure labelled by its source."""

from __future__ import annotations

import argparse
from typing import Any

from bnnflow.bench.report import bench_design
from bnnflow.cliutil import HelpFormatter, nonnegative_int, positive_int
from bnnflow.errors import BnnflowError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="FPGA against CPU: the CPU measured here, FINN's estimate and DMA bound, a board's report",
        description=(
            "One report of FPGA against CPU for a compiled design: bnnflow's C engine measured on this "
            "machine (batch-1 latency from `bnnflow-cpu bench`, throughput on one and on all cores, "
            "accuracy, agreement with FINN), FINN's compute estimate and the DMA bound with the lower as "
            "the expected FPGA rate, the figures of a `bnnflow-board bench` report (a board's, or the "
            "simulated board's, labelled so), and finn-examples' published figures for TFC and CNV. "
            "Printed, and written as bench.json, bench.txt and bench.png to <compile dir>/bench."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("path", help="run folder (runs/<name>) or compile folder (runs/<name>/compile/<board>)")
    p.add_argument("--board", default=None, help="which compile folder of a run (default: its only one)")
    p.add_argument(
        "--board-report",
        default=None,
        metavar="BENCH_JSON",
        help="the bench.json `bnnflow-board bench` wrote for this design (or the folder holding it)",
    )
    p.add_argument("--data-dir", default=None, help="folder holding the MNIST or CIFAR-10 files")
    p.add_argument("--out", default=None, help="report folder (default: <compile dir>/bench)")
    p.add_argument("--limit", type=positive_int, default=None, help="first N test images (default: all)")
    p.add_argument(
        "--finn",
        type=nonnegative_int,
        default=500,
        metavar="N",
        help="images to compare with FINN's execution (0 skips)",
    )
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    result = bench_design(
        args.path,
        board=args.board,
        board_report=args.board_report,
        data_dir=args.data_dir,
        out=args.out,
        limit=args.limit,
        finn_images=args.finn,
        log=lambda msg: print(msg, flush=True),
    )
    print()
    print(result.text)
    print(
        f"report in {result.out_dir}: bench.json, bench.txt"
        + (
            ", bench.png"
            if result.report.get("chart") == "bench.png"
            else f" (no chart: {result.report.get('chart')})"
        )
    )
    if not result.ok:
        raise BnnflowError(result.report["problems"][0])
    return 0
