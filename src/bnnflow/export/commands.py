"""``bnnflow export``: a checkpoint or run folder -> verified QONNX graphs."""

from __future__ import annotations

import argparse

from bnnflow.cliutil import HelpFormatter, positive_int
from bnnflow.export.qonnx_export import DEFAULT_BATCH_SIZE, DEFAULT_N_VERIFY, export_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to QONNX (uint8 input, TopK output) and verify it",
        description=(
            "Export a checkpoint to QONNX for FINN: raw uint8 pixels in (scaled inside the graph), "
            "class index out (TopK k=1). Both graphs are executed with QONNX on real test images and "
            "compared with PyTorch; a mismatch is an error and writes nothing."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("checkpoint", help="checkpoint file or run folder (runs/<name>/, uses best.pt)")
    parser.add_argument("-o", "--out", default=None, help="output folder (default: <run folder>/export)")
    parser.add_argument(
        "-n",
        "--n-verify",
        type=positive_int,
        default=DEFAULT_N_VERIFY,
        help=f"test images to verify on, seeded, every class its share (default {DEFAULT_N_VERIFY}; "
        "the whole split if smaller)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the run's dataset is: a named dataset's files, or a folder:/npz: dataset's new place",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per QONNX execution during verification (default {DEFAULT_BATCH_SIZE})",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    result = export_model(
        args.checkpoint,
        out_dir=args.out,
        n_verify=args.n_verify,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
    )
    v = result.verification
    print(
        f"exported {result.model_name} ({result.dataset}) to {result.out_dir}: "
        f"verified on {v['n_images']} test images, max |logit diff| {v['max_abs_logit_diff']:.2e}, "
        f"classes agree {v['label_agreement']:.1%}, accuracy {v['accuracy_qonnx']:.2%}"
    )
    print(f"  deployed model: {result.model_path}")
    print(f"  logits model:   {result.logits_path}")
    return 0
