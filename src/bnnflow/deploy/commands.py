"""``bnnflow package``: the deployment package for a PYNQ board."""

from __future__ import annotations

import argparse
from typing import Any

from bnnflow.deploy.package import DEFAULT_IMAGES


def register(sub: Any) -> None:
    p = sub.add_parser(
        "package",
        help="deployment package for the board: FINN driver, bitfile, CPU engine, test set, installer",
        description="Write bitstreams/<model>-<board>/deploy/ (or --out) in finn-plus's deployment layout, "
        "with what bnnflow-board needs on the board: the CPU engine's sources and model file, a test set "
        "with its golden outputs, a sha256 per file and the install script. Without Vivado the package holds "
        "everything but the bitfile and says so.",
    )
    p.add_argument("design", help="run folder (runs/<name>), compile folder or `bnnflow bitstream` folder")
    p.add_argument("--out", default=None, help="package folder (default bitstreams/<model>-<board>/deploy)")
    p.add_argument(
        "--board", default=None, help="which compiled design of a run folder (when it has several)"
    )
    p.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        metavar="N",
        help=f"test images (default {DEFAULT_IMAGES})",
    )
    p.add_argument("--data-dir", default=None, help="dataset folder for the test images")
    p.set_defaults(func=_package)


def _package(args: argparse.Namespace) -> int:
    from bnnflow.deploy.package import build_package

    build_package(args.design, args.out, board=args.board, n_images=args.images, data_dir=args.data_dir)
    return 0
