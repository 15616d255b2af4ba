"""Fit-to-board folding with and without the DMA bound (FINN's estimates).

    python benchmarks/fit_io_bound.py runs/tfc/compile/Pynq-Z2 runs/cnv/compile/Pynq-Z2

For each compile folder, folds its specialised graph
(``intermediate_models/step_specialize_layers.onnx``) for the folder's board
and clock three ways: the published finn-examples folding where the network
has one, the fit search on the compute estimate alone (what bnnflow did
before the I/O bound), and the fit search that stops at the bound of FINN's
DMAs. Prints expected frames/s (the lower of compute and I/O), both bounds,
LUT, BRAM18 and what decided the throughput. FINN's estimates depend on the
folding and the graph's shapes, not on the weight values. This is a
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import bnnflow  # noqa: F401
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.finn_env import prepare_finn, quiet_finn
from bnnflow.hls import get_board
from bnnflow.hls.folding import fit_to_board, published_folding
from bnnflow.hls.report import DesignEstimate, estimate_design


def row(model: str, name: str, est: DesignEstimate, seconds: float | None) -> str:
    util = est.utilisation()
    took = f"{seconds:5.1f}" if seconds is not None else "    -"
    return (
        f"| {model:<16} | {name:<24} | {est.expected_fps:>9,.0f} | {est.fps:>9,.0f} | {est.io.fps:>9,.0f} "
        f"| {est.totals['LUT']:>7,.0f} ({util['LUT']:>3.0%}) "
        f"| {est.totals['BRAM_18K']:>4,.0f} ({util['BRAM_18K']:>3.0%}) | {est.bound:<33} | {took} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("compiled", nargs="+", help="compile folders (runs/<name>/compile/<board>)")
    ap.add_argument("--budget", type=float, default=0.85)
    args = ap.parse_args()
    prepare_finn()

    from qonnx.core.modelwrapper import ModelWrapper

    print(
        f"| {'model':<16} | {'folding':<24} | {'frames/s':>9} | {'compute':>9} | {'I/O bound':>9} "
        f"| {'LUT':>13} | {'BRAM18':>10} | {'decided by':<33} | {'s':>5} |"
    )
    print(
        f"|{'-' * 18}|{'-' * 26}|{'-' * 11}|{'-' * 11}|{'-' * 11}|{'-' * 15}|{'-' * 12}|{'-' * 35}|{'-' * 7}|"
    )
    for folder in map(Path, args.compiled):
        summary = json.loads((folder / "compile.json").read_text())  # board, clock, input as compiled
        board, clock_ns = get_board(summary["board"]), float(summary["clock_ns"])
        spec = ModelWrapper(str(folder / "intermediate_models" / "step_specialize_layers.onnx"))
        name = f"{Path(summary['input']).parent.parent.name} {board.name}"
        with tempfile.TemporaryFile("w") as sink, quiet_finn(sink):
            rows = []
            try:
                preset, folded = published_folding(spec)
                rows.append((f"published ({preset})", estimate_design(folded, board, clock_ns), None))
            except BnnflowError:
                pass  # no published folding for this network
            for label, with_io in (("fit, compute only", False), ("fit, stops at I/O bound", True)):
                t0 = time.perf_counter()
                fit = fit_to_board(spec, board, clock_ns, args.budget, io_bound=with_io)
                seconds = time.perf_counter() - t0
                # judge the compute-only design by the same bound it ignored
                rows.append((label, estimate_design(fit.model, board, clock_ns), seconds))
        for label, est, seconds in rows:
            print(row(name, label, est, seconds))
    print(f"budget {args.budget:.0%}; frames/s = the lower of the compute estimate and the I/O bound")


if __name__ == "__main__":
    main()
