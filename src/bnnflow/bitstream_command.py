"""``bnnflow bitstream``: FINN's builder with Vivado (hls), then bnnflow's deployment package (deploy).

The one stage command that spans two stages, so it sits above both, beside
cli.py and demo.py: the bitstream builder knows nothing of packaging, and the
package reads the builder's output like any other.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bnnflow.cliutil import HelpFormatter
from bnnflow.deploy.package import build_package, check_model_file
from bnnflow.layout import BitstreamDir, CompileDir


def register(sub: Any) -> None:
    b = sub.add_parser(
        "bitstream",
        help="finish a compiled design with FINN's builder and Vivado (bitfile + PYNQ driver)",
        description="Run FINN's builder from a compile folder: IP generation, FIFO sizing, stitched IP, "
        "synthesis, bitfile and PYNQ driver. Exits 2 with instructions when Vivado is not installed.",
        formatter_class=HelpFormatter,
    )
    b.add_argument("compiled", help="compile folder (runs/<name>/compile/<board>)")
    b.add_argument("--out", default=None, help="output folder (default bitstreams/<model>-<board>)")
    b.add_argument(
        "--data-dir", default=None, help="where the package's test images are (as for bnnflow package)"
    )
    b.set_defaults(func=_bitstream)


def _check_design(compile_dir: Path) -> None:
    check_model_file(CompileDir(compile_dir).cpu_model)


def _bitstream(args: argparse.Namespace) -> int:
    # Deferred: cli.py imports every command module on each call, and bnnflow.hls pulls in qonnx
    # and onnx.
    from bnnflow.hls.bitstream import build_bitstream

    out = build_bitstream(args.compiled, args.out, check_design=_check_design)
    built = BitstreamDir(out)
    # bnnflow's deployment package replaces FINN's deploy/ (kept as deploy.finn/): the
    # same bitfile, .hwh and settings.json, plus the CPU engine, test set and installer.
    if built.deploy.path.is_dir() and not built.deploy.manifest.exists():
        os.replace(built.deploy.path, built.finn_deploy)
    build_package(out, built.deploy.path, data_dir=args.data_dir)
    print(f"bitfile and PYNQ driver in {out}")
    return 0
