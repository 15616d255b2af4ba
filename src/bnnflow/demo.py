"""``bnnflow demo``: the whole flow on scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bnnflow.bench import bench_design
from bnnflow.cliutil import HelpFormatter, positive_int
from bnnflow.cpu.evaluate import evaluate_cpu, format_report
from bnnflow.deploy.package import build_package
from bnnflow.errors import BnnflowError
from bnnflow.export import export_model
from bnnflow.finnlib.boards import get_board
from bnnflow.runs import atomic_write_json
from bnnflow.training.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]  # the source tree bnnflow runs from (src layout)
BOARD_CLI = REPO / ".venv-board" / "bin" / "bnnflow-board"  # `make board-env` builds it
BOARD_IMAGES = 40  # the simulated board runs FINN's C simulation: seconds per few images


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole flow on the 8x8 digits: Bop vs latent Adam, export, compile, CPU against FPGA",
        description=(
            "Train the digits MLP (scikit-learn's bundled 8x8 digits, nothing to download) with Bop "
            "and with the latent-weight Adam baseline and print a comparison table; export and compile "
            "the Bop run for a board; run the C CPU engine on the design and check it against FINN; "
            "package the design, run it on the simulated board and end with the FPGA-against-CPU table "
            "of `bnnflow bench`. Everything is kept under one run folder."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--run", dest="run_dir", default="runs/demo", help="run folder for all demo artifacts")
    p.add_argument("--epochs", type=positive_int, default=30, help="epochs per method")
    p.add_argument("--seed", type=int, default=0, help="seed for all three trainings")
    p.add_argument("--board", default="Pynq-Z2", help="board to compile the Bop-trained MLP for")
    p.add_argument(
        "--verify", type=positive_int, default=360, help="test images for the compile's verification chain"
    )
    p.add_argument("--no-compile", dest="compile", action="store_false", help="stop after training")
    p.add_argument(
        "--board-cli",
        default=str(BOARD_CLI),
        help="bnnflow-board in the simulated board's environment (`make board-env`)",
    )
    p.add_argument(
        "--sim-exec",
        choices=("auto", "cppsim", "python"),
        default="auto",
        help="how the simulated board's FINN runs the design (auto: C simulation where its headers are)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=_demo)


def run_demo(
    run_dir: str | Path,
    epochs: int = 30,
    seed: int = 0,
    progress: bool = True,
    board: str | None = "Pynq-Z2",
    n_verify: int = 360,
    board_cli: str | Path | None = BOARD_CLI,
    sim_exec: str = "auto",
) -> dict[str, Any]:
    """Train three ways, then export and compile the Bop-trained MLP for ``board`` (None: skip).

    The compiled design is then packaged and run on the simulated board with
    ``board_cli`` (None or missing: said so, and the rest runs without it), and
    the demo ends with the ``bnnflow bench`` table.
    """
    if board is not None:
        get_board(board)  # an unknown board fails before any training

    run_dir = Path(run_dir)
    results: dict[str, Any] = {}
    # (label, method, compact)
    for label, method, compact in (
        ("bop", "bop", False),
        ("bop-compact", "bop", True),
        ("latent-adam", "latent-adam", False),
    ):
        sub = run_dir / label
        if sub.exists():
            shutil.rmtree(sub)
        print(f"\n== training digits-mlp with {label} ==", flush=True)
        results[label] = train(
            TrainConfig(
                model="digits-mlp",
                method=method,
                compact=compact,
                epochs=epochs,
                seed=seed,
                run_dir=str(sub),
                progress=progress,
                # 15 steps per epoch on 1,437 images: a larger tau than larq's 1e-8
                # keeps Bop from flipping ~1% of the weights every step
                # (measured: 93% with tau=1e-6 vs 90% with 1e-8 at 30 epochs).
                tau=1e-6 if method == "bop" else None,
                batch_size=50,
            )
        )
    print()
    print(format_comparison(results))
    summary: dict[str, Any] = {"training": results}
    if board is not None:
        summary["hardware"] = _export_and_compile(run_dir / "bop", board, n_verify)
        compile_dir = Path(summary["hardware"]["compile_dir"])
        summary["simulated_board"] = _simulated_board(run_dir / "bop", compile_dir, board_cli, sim_exec)
        summary["bench"] = _bench(compile_dir, summary["simulated_board"].get("report"), n_verify)
    atomic_write_json(run_dir / "demo.json", summary)
    problems = summary.get("bench", {}).get("problems") or []
    if "error" in summary.get("simulated_board", {}):
        problems = [f"the simulated board failed: {summary['simulated_board']['error']}", *problems]
    if problems:
        raise BnnflowError(problems[0])
    return summary


def _export_and_compile(run: Path, board: str, n_verify: int) -> dict[str, Any]:
    # Deferred: cli.py imports this module on each call, and bnnflow.hls pulls in qonnx and onnx.
    from bnnflow.hls import compile_model

    print(f"\n== exporting {run} to QONNX ==", flush=True)
    exported = export_model(run, n_verify=360)
    v = exported.verification
    print(
        f"QONNX matches PyTorch on {v['n_images']} test images: "
        f"max |logit diff| {v['max_abs_logit_diff']:.1e}, accuracy {100 * v['accuracy_qonnx']:.2f}%"
    )
    print(f"\n== compiling for {board} with FINN ==", flush=True)
    result = compile_model(run, board=board, n_verify=n_verify)
    est = result.estimate
    util = est.utilisation()
    print(
        f"\n{board}: estimated {est.fps:,.0f} frames/s at {1000 / est.clock_ns:.0f} MHz, "
        f"LUT {100 * util['LUT']:.0f}%, BRAM18 {100 * util['BRAM_18K']:.0f}%; "
        f"HLS and build config in {result.out_dir}"
    )
    print("The bitstream needs Vivado: see `make bitstream` in the README.")

    print("\n== the C CPU engine on the same design ==", flush=True)
    cpu = evaluate_cpu(result.out_dir, finn_images=n_verify, log=None)
    print(format_report(cpu))
    if not cpu.agrees:
        raise BnnflowError(f"the CPU engine differs from FINN: {cpu.first_difference}")
    return {
        "export": v,
        "board": board,
        "fps": est.fps,
        "utilisation": util,
        "compile_dir": str(result.out_dir),
        "verification": None if result.verification is None else result.verification.to_json(),
        "cpu": cpu.to_json(),
    }


def _simulated_board(
    run: Path, compile_dir: Path, board_cli: str | Path | None, sim_exec: str
) -> dict[str, Any]:
    """Package the design and bench it on the simulated board; what happened, and its report's path."""
    print("\n== the deployment package, on the simulated board ==", flush=True)
    package = build_package(compile_dir, run / "deploy", n_images=BOARD_IMAGES, log=None)
    print(f"package for the board (no bitfile: Vivado is not run here) in {package}")
    cli = Path(board_cli) if board_cli else None
    if cli is None or not cli.is_file():
        why = (
            f"{cli} not found: `make board-env` builds the simulated board's environment"
            if cli
            else "no bnnflow-board given"
        )
        print(f"simulated board: not run: {why}; the table below has no board figures")
        return {"package": str(package), "skipped": why}
    print(
        f"simulated board: FINN ({sim_exec} execution) stands in for the FPGA on {BOARD_IMAGES} test images "
        "(its times are a software simulation's, not an FPGA's) ...",
        flush=True,
    )
    # the board environment is a separate interpreter: nothing of this one's Python path may leak into it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cmd = [str(cli), "bench", str(package), "--simulated-board", "--sim-exec", sim_exec]
    cmd += ["--batch-sizes", "1,8", "--warmup", "1", "--repeats", "3"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"package": str(package), "error": "bnnflow-board bench took more than 30 minutes"}
    report = package / "bench" / "bench.json"
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    for line in lines:
        if "agree with the golden outputs" in line or line.startswith("agreement with the golden"):
            print(f"  {line}")
    out: dict[str, Any] = {"package": str(package), "command": " ".join(cmd), "exit_code": r.returncode}
    if report.is_file():
        out["report"] = str(report)
    if r.returncode != 0:
        out["error"] = lines[-1] if lines else f"exit {r.returncode}"
        print(f"simulated board: {out['error']}")
    return out


def _bench(compile_dir: Path, board_report: str | None, n_verify: int) -> dict[str, Any]:
    print("\n== FPGA against CPU (bnnflow bench) ==", flush=True)
    result = bench_design(compile_dir, board_report=board_report, finn_images=n_verify, log=None)
    print(result.text)
    print(f"report in {result.out_dir}: bench.json, bench.txt, bench.png")
    return result.report


def format_comparison(results: dict[str, dict[str, Any]]) -> str:
    header = f"{'method':<12} {'test acc':>9} {'best':>7} {'flips':>9} {'bytes/weight':>13} {'train s':>8}"
    lines = [header, "-" * len(header)]
    for method, s in results.items():
        lines.append(
            f"{method:<12} {100 * s['final_test_acc']:8.2f}% {100 * s['best_test_acc']:6.2f}% "
            f"{s['total_flips']:9d} {s['bytes_per_binary_weight']:13.1f} {s['train_seconds']:8.1f}"
        )
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    board = args.board if args.compile else None
    run_demo(
        args.run_dir, args.epochs, args.seed, args.progress, board, args.verify, args.board_cli, args.sim_exec
    )
    return 0
