"""``bnnflow-board``: check a deployment package, bench it (FPGA against the ARM CPU engine), or
write a weights-only update into its FPGA."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from bnnflow_board import __version__
from bnnflow_board.deadline import start_timeout_help, timeout_help
from bnnflow_board.errors import BoardError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _batches(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes are comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be at least 1")
    return out


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the timeout is a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"the timeout must be a finite number of seconds above 0, got {text}"
        )
    return value


def _simulated(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "simulated board (no FPGA: the real pynq and finn-plus-driver over a software device)"
    )
    g.add_argument(
        "--simulated-board",
        nargs="?",
        const="",
        default=None,
        metavar="BOARD",
        help="run on the simulated board: the package's board, or BOARD (Pynq-Z2, Ultra96, Ultra96-V2)",
    )
    g.add_argument(
        "--design", default=None, help="compile folder the simulated FPGA runs (default: the manifest's)"
    )
    g.add_argument(
        "--compiler-python", default=None, help="Python with bnnflow and FINN (default: the manifest's)"
    )
    g.add_argument(
        "--sim-exec", choices=("auto", "cppsim", "python"), default="auto", help="how FINN runs the design"
    )
    g.add_argument("--sim-cache", default=None, help="where compiled C simulations are kept")
    g.add_argument(
        "--sim-start-timeout",
        type=_timeout,
        default=None,
        metavar="SECONDS",
        help=start_timeout_help(),
    )
    g.add_argument(
        "--sim-fault",
        choices=("never-done", "flip-weight-bit"),
        default=None,
        help="make the simulated FPGA misbehave: never finish, or hold one weight word wrong",
    )


def _sim(args: argparse.Namespace):  # noqa: ANN202
    from bnnflow_board.session import SimulatedBoard

    if args.simulated_board is None:
        return None
    return SimulatedBoard(
        board=args.simulated_board or None,
        design=Path(args.design) if args.design else None,
        python=Path(args.compiler_python) if args.compiler_python else None,
        exec_mode=args.sim_exec,
        cache=Path(args.sim_cache) if args.sim_cache else None,
        fault=args.sim_fault,
        start_timeout_s=args.sim_start_timeout,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bnnflow-board", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bnnflow-board {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    c = sub.add_parser(
        "check",
        help="check a deployment package against this board",
        description="Checksums, "
        "bitfile and .hwh, board, DMA names, clock and timing of a package; exit 1 if any fails.",
    )
    c.add_argument("package", help="the deployment package folder (bitstreams/<model>-<board>/deploy)")
    c.add_argument("--json", action="store_true", help="print the checks as JSON")
    _simulated(c)
    c.set_defaults(func=_check)

    b = sub.add_parser(
        "bench",
        help="FPGA against the ARM CPU engine on the package's test set",
        description="Accuracy, agreement with the golden outputs (must be 100%%), throughput and "
        "latency of the FPGA and of bnnflow's C engine; writes bench.json, bench.txt, bench.png.",
    )
    b.add_argument("package", help="the deployment package folder")
    b.add_argument("--out", default=None, help="report folder (default <package>/bench)")
    b.add_argument("--batch-sizes", type=_batches, default=None, help="comma-separated (default 1,64,1000)")
    b.add_argument("--warmup", type=int, default=3, help="untimed runs before each measurement (default 3)")
    b.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (default 20)")
    b.add_argument("--timeout", type=_timeout, default=None, metavar="SECONDS", help=timeout_help())
    b.add_argument("--no-cpu", action="store_true", help="run the FPGA only")
    _simulated(b)
    b.set_defaults(func=_bench)

    u = sub.add_parser(
        "update-weights",
        help="write a weights-only update (bnnflow package --weights-only) into the FPGA, no new bitstream",
        description="Check that the update belongs to the package's design (compiled with "
        "--runtime-weights), program the FPGA, write the update's runtime weight files with "
        "finn-plus-driver, read every word back, require the FPGA and the CPU engine to equal the "
        "update's golden outputs on the whole test set, then record the update as the package's "
        "active weights (bench uses them from then on).",
    )
    u.add_argument("package", help="the deployment package folder")
    u.add_argument("update", help="the update package folder (bnnflow package --weights-only)")
    u.add_argument("--timeout", type=_timeout, default=None, metavar="SECONDS", help=timeout_help())
    u.add_argument("--no-cpu", action="store_true", help="check the FPGA only")
    _simulated(u)
    u.set_defaults(func=_update_weights)
    return parser


def _check(args: argparse.Namespace) -> int:
    from bnnflow_board.checks import failures, format_checks
    from bnnflow_board.session import Session

    with Session(args.package, _sim(args)) as session:
        pkg, board, checks = session.pkg, session.board, session.checks
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        print(f"{pkg.root}: {pkg.manifest.get('model')} for {pkg.board}, on {board.describe()}")
        print(format_checks(checks))
    bad = failures(checks)
    if bad:
        raise BoardError(f"check failed: {bad[0].name}: {bad[0].detail}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bnnflow_board.bench import DEFAULT_BATCHES, BenchOptions, bench

    opts = BenchOptions(
        batch_sizes=args.batch_sizes or DEFAULT_BATCHES,
        warmup=args.warmup,
        repeats=args.repeats,
        timeout_s=args.timeout,
        cpu=not args.no_cpu,
        out=Path(args.out) if args.out else None,
    )
    bench(args.package, opts, _sim(args))
    return 0


def _update_weights(args: argparse.Namespace) -> int:
    from bnnflow_board.weights import update_weights

    update_weights(args.package, args.update, _sim(args), timeout_s=args.timeout, cpu=not args.no_cpu)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BoardError as exc:
        print(f"bnnflow-board: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bnnflow-board: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
