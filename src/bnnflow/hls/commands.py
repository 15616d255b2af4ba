"""``bnnflow compile`` (``bnnflow bitstream``, which also packages, is in bnnflow/bitstream_command.py)."""

from __future__ import annotations

import argparse
from typing import Any

from bnnflow.cliutil import HelpFormatter, nonnegative_int, positive_int
from bnnflow.finnlib.boards import board_names


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compile",
        help="FINN flow: QONNX to folded hardware layers, estimates and HLS/RTL code",
        description="Compile a QONNX model (or a run folder's export/model.onnx) with FINN for a PYNQ board.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", help="run folder (runs/<name>) or QONNX .onnx file")
    p.add_argument("--board", default="Pynq-Z2", help=f"one of: {', '.join(board_names())} (default Pynq-Z2)")
    p.add_argument("--clock-ns", type=float, default=10.0, help="clock period in ns (default 10 = 100 MHz)")
    p.add_argument(
        "--folding",
        default="fit",
        help="fit (fit-to-board, default), published (finn-examples TFC/CNV), fps:<N> (FINN SetFolding), "
        "or a folding .json",
    )
    p.add_argument("--budget", type=float, default=0.85, help="fit: fraction of LUT/BRAM/DSP to use")
    p.add_argument(
        "--verify", type=nonnegative_int, default=1000, metavar="N", help="test images to verify (0 skips)"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the run's dataset is (a named dataset's files, or a folder:/npz: dataset's new place)",
    )
    p.add_argument(
        "--verify-workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes for the verification (default: usable cores, at most 4)",
    )
    p.add_argument(
        "--no-verify-cache",
        action="store_true",
        help="verify again even if the same graphs and images passed for another board",
    )
    p.add_argument(
        "--cppsim",
        type=int,
        default=0,
        metavar="N",
        help="run N test images through the generated HLS C++ in FINN's cppsim and compare (default 0: off)",
    )
    p.add_argument(
        "--hls-sim",
        default=None,
        metavar="DIR",
        help="hls-sim kit for --cppsim (default $BNNFLOW_HLS_SIM, else Vitis HLS at $XILINX_HLS)",
    )
    p.add_argument("--out", default=None, help="output folder (default <run>/compile/<board>)")
    p.add_argument(
        "--runtime-weights",
        action="store_true",
        help="weights and thresholds writable at run time (AXI-lite), for retrained checkpoints",
    )
    p.add_argument(
        "--host-binarize",
        action="store_true",
        help="1-bit-input networks (TFC, SFC, LFC): threshold the pixels on the host, DMA 1 bit per pixel",
    )
    p.set_defaults(func=_compile)


def _compile(args: argparse.Namespace) -> int:
    # Deferred: cli.py imports every command module on each call, and bnnflow.hls.flow pulls in
    # qonnx and onnx.
    from bnnflow.hls.flow import CompileOptions, compile_model

    options = CompileOptions(
        board=args.board,
        out_dir=args.out,
        folding=args.folding,
        clock_ns=args.clock_ns,
        budget=args.budget,
        n_verify=args.verify,
        data_dir=args.data_dir,
        verify_workers=args.verify_workers,
        verify_cache=not args.no_verify_cache,
        n_cppsim=args.cppsim,
        hls_sim=args.hls_sim,
        runtime_weights=args.runtime_weights,
        host_binarize=args.host_binarize,
    )
    compile_model(args.model, options=options)
    return 0
