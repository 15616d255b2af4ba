"""``bnnflow package``: the deployment package for a PYNQ board."""

from __future__ import annotations

import argparse
from typing import Any

from bnnflow.deploy.golden import DEFAULT_IMAGES
from bnnflow.errors import BnnflowError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "package",
        help="deployment package for the board: FINN driver, bitfile, CPU engine, test set, installer",
        description="Write bitstreams/<model>-<board>/deploy/ (or --out) in finn-plus's deployment layout, "
        "with what bnnflow-board needs on the board: the CPU engine's sources and model file, a test set "
        "with its golden outputs, a sha256 per file and the install script. Without Vivado the package holds "
        "everything but the bitfile and says so.",
    )
    p.add_argument(
        "design",
        nargs="?",
        default=None,
        help="run folder (runs/<name>), compile folder or `bnnflow bitstream` folder",
    )
    p.add_argument(
        "--out",
        default=None,
        help="package folder (default bitstreams/<model>-<board>/deploy; with --weights-only "
        "weights-<run> beside the deployment package)",
    )
    w = p.add_argument_group(
        "weights-only update (a design compiled with --runtime-weights: new weights, no new bitstream)"
    )
    w.add_argument(
        "--weights-only",
        metavar="CHECKPOINT_OR_RUN",
        default=None,
        help="write an update package with this checkpoint's weights and thresholds for --design, "
        "for `bnnflow-board update-weights`",
    )
    w.add_argument(
        "--design",
        dest="target",
        metavar="COMPILE_OR_DEPLOY_DIR",
        default=None,
        help="the design the update is for: its deployment package (its test set is reused) or its "
        "compile folder",
    )
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
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the run's dataset is (a named dataset's files, or a folder:/npz: dataset's new place)",
    )
    p.set_defaults(func=_package)


def _package(args: argparse.Namespace) -> int:
    if args.weights_only is not None or args.target is not None:
        if args.weights_only is None or args.target is None:
            raise BnnflowError(
                "a weights-only update needs both --weights-only CHECKPOINT_OR_RUN and --design DIR"
            )
        if args.design is not None:
            raise BnnflowError("--weights-only takes the design from --design, not as a positional folder")
        # Deferred: cli.py imports every command module on each call, and bnnflow.deploy.update
        # pulls in bnnflow.hls, which loads qonnx and onnx.
        from bnnflow.deploy.update import build_weights_update

        build_weights_update(
            args.weights_only,
            args.target,
            args.out,
            board=args.board,
            n_images=args.images,
            data_dir=args.data_dir,
        )
        return 0
    if args.design is None:
        raise BnnflowError("give the run, compile or bitstream folder to package")
    # Deferred: cli.py imports every command module on each call, and bnnflow.deploy.package
    # pulls in bnnflow.hls, which loads qonnx and onnx.
    from bnnflow.deploy.package import build_package

    build_package(args.design, args.out, board=args.board, n_images=args.images, data_dir=args.data_dir)
    return 0
