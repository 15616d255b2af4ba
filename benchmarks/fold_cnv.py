"""Fit-to-board folding vs the published FINN CNV-W1A1 folding (FINN's estimates).

    python benchmarks/fold_cnv.py [--board Pynq-Z2] [--clock-ns 10] [--budget 0.85]

Compiles a CNV-W1A1 graph once with the published finn-examples folding, then
folds the same specialised graph with FINN's SetFolding at 2x the published
rate and with bnnflow's fit-to-board search, and prints frames/s, LUT, BRAM
and DSP side by side. Weights do not change FINN's estimates, so the network
is Brevitas' CNV with binarised initial weights and BatchNorm statistics from
a few forward passes. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import bnnflow  # noqa: F401
from bnnflow.export import export_network
from bnnflow.finnlib.finn_env import quiet_finn
from bnnflow.hls import compile_model, get_board
from bnnflow.hls.folding import fit_to_board, target_fps_folding
from bnnflow.hls.report import DesignEstimate, estimate_design
from bnnflow.models import binarize_weights_, build_model


def cnv_qonnx(folder: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("cnv")
    binarize_weights_(model)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 3, 32, 32))
    model.eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=8)
    result = export_network(
        model, folder / "export", model_name="cnv", dataset="cifar10", images=images, labels=labels
    )
    return Path(result.model_path)


def row(name: str, est: DesignEstimate, ref_fps: float, seconds: float) -> str:
    util = est.utilisation()
    return (
        f"| {name:<28} | {est.fps:>8,.0f} | {est.fps / ref_fps:>5.2f}x "
        f"| {est.totals['LUT']:>7,.0f} ({util['LUT']:>3.0%}) "
        f"| {est.totals['BRAM_18K']:>4,.0f} ({util['BRAM_18K']:>3.0%}) | {est.totals['DSP']:>4,.0f} "
        f"| {est.bottleneck:<20} | {seconds:>5.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="Pynq-Z2")
    ap.add_argument("--clock-ns", type=float, default=10.0)
    ap.add_argument("--budget", type=float, default=0.85)
    args = ap.parse_args()
    board = get_board(args.board)

    from qonnx.core.modelwrapper import ModelWrapper

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        qonnx = cnv_qonnx(tmp_path)
        t0 = time.perf_counter()
        pub = compile_model(
            qonnx,
            board.name,
            tmp_path / "pub",
            folding="published",
            clock_ns=args.clock_ns,
            n_verify=0,
            log=None,
        )
        t_pub = time.perf_counter() - t0
        spec = ModelWrapper(str(pub.out_dir / "intermediate_models" / "step_specialize_layers.onnx"))
        with open(tmp_path / "finn.log", "w") as sink, quiet_finn(sink):
            t0 = time.perf_counter()
            setfold = target_fps_folding(spec, 2 * pub.estimate.fps, args.clock_ns)
            t_sf = time.perf_counter() - t0
            sf_est = estimate_design(setfold, board, args.clock_ns)
            t0 = time.perf_counter()
            fit = fit_to_board(spec, board, args.clock_ns, args.budget)
            t_fit = time.perf_counter() - t0

    ref = pub.estimate.fps
    print(
        f"CNV-W1A1 on {board.name} ({board.part}) at {1e3 / args.clock_ns:.0f} MHz, FINN estimates; "
        f"budget {args.budget:.0%} of LUT {board.lut:,} / BRAM18 {board.bram_18k} / DSP {board.dsp}"
    )
    print(
        f"| {'folding':<28} | {'frames/s':>8} | {'vs pub':>6} | {'LUT':>13} | {'BRAM18':>10} | {'DSP':>4} "
        f"| {'bottleneck':<20} | {'s':>5} |"
    )
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 8}|{'-' * 15}|{'-' * 12}|{'-' * 6}|{'-' * 22}|{'-' * 7}|")
    print(row("published (finn-examples)", pub.estimate, ref, t_pub))
    print(row(f"FINN SetFolding {2 * ref:,.0f} fps", sf_est, ref, t_sf))
    print(row(f"bnnflow fit ({args.budget:.0%} budget)", fit.estimate, ref, t_fit))
    ok = fit.estimate.fits(args.budget) and fit.estimate.fps >= 2 * ref
    verdict = "met" if ok else "NOT met"
    print(
        f"fit-to-board: {fit.evaluations} designs estimated, SetFolding-only bisection reached "
        f"{fit.setfolding_fps:,.0f} frames/s; goal (>= 2x published within budget): {verdict}"
    )
    print("(the 'published' time includes the FINN front end and HLS code generation; the others fold only)")


if __name__ == "__main__":
    main()
