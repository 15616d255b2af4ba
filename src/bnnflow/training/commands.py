"""``bnnflow train``, ``bnnflow evaluate`` and ``bnnflow teacher``."""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import numpy as np

from bnnflow import data as bdata
from bnnflow.cliutil import HelpFormatter, positive_int
from bnnflow.models import model_names
from bnnflow.runs import load_model
from bnnflow.training.optimizers import METHODS, SCHEDULES
from bnnflow.training.trainer import TrainConfig, evaluate, finish_distributed, train


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text}")
    return value


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="folder holding the named datasets' files (MNIST IDX, CIFAR-10 batches, ...; not for digits)",
    )
    p.add_argument(
        "--download", action="store_true", help="download a named dataset's missing files (needs network)"
    )


def _test_fraction(text: str) -> float:
    value = _nonnegative_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text}")
    return value


def add_user_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resize", metavar="HxW", help="folder: datasets: resize every image to H x W pixels")
    p.add_argument(
        "--test-fraction",
        type=_test_fraction,
        help="folder: datasets without train/ and test/: the share of each class held out for testing "
        "(seeded split; default 0.2)",
    )


_RECIPE_OR = " (default: the named network's recipe, else "


def _recipes_epilog() -> str:
    from bnnflow.models import MODEL_SPECS

    lines = [
        f"  {name}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in spec.recipe.items())
        for name, spec in MODEL_SPECS.items()
        if spec.recipe
    ]
    if not lines:
        return ""
    return "recipes (what a named network trains with unless the command says otherwise):\n" + "\n".join(
        lines
    )


class _TrainHelp(HelpFormatter):
    """Keeps the recipes epilog one network per line (argparse would run them together)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("recipes"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _add_regularization_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--augment",
        nargs="?",
        const="crop-flip",
        choices=list(bdata.ImageDataset.AUGMENTATIONS),
        help="crop-flip: pad-4 random crop + horizontal flip (the bare flag); shift, shift1: random moves "
        "of up to 2 or 1 pixels, no flip (for digits); none (default: the named network's recipe, else "
        "crop-flip for cifar10 and none otherwise)",
    )
    p.add_argument("--no-augment", dest="augment", action="store_const", const="none", help=argparse.SUPPRESS)
    p.add_argument(
        "--dropout",
        type=_nonnegative_float,
        help="rate of every Dropout layer of the network (default: the named network's recipe, else the "
        "network's own: 0.2 in Brevitas' TFC/SFC/LFC)",
    )
    p.add_argument(
        "--label-smoothing",
        type=_nonnegative_float,
        metavar="E",
        help="spread this share of each label's target over all classes (torch's cross_entropy "
        "label_smoothing), in [0, 1) (default: the named network's recipe, else 0)",
    )
    p.add_argument(
        "--teacher",
        metavar="PATH",
        help="distil from this trained network: a .pt2 file (torch.export.save; a float network, for "
        "example from `bnnflow teacher`) or a bnnflow run folder; the binary network is unchanged",
    )
    p.add_argument(
        "--distill-weight",
        type=_nonnegative_float,
        metavar="A",
        help="share of the teacher's soft targets in the loss, in [0, 1] (default with --teacher: 0.5)",
    )
    p.add_argument(
        "--distill-temperature",
        type=_nonnegative_float,
        metavar="T",
        help="softmax temperature of the soft targets (default with --teacher: 4)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a binary network with Bop or the latent-Adam baseline",
        description="Train a W1A1 network into a run folder (checkpoints, metrics.csv, training.png).",
        epilog=_recipes_epilog(),
        formatter_class=_TrainHelp,
    )
    models = ", ".join(model_names())
    p.add_argument("--model", default="digits-mlp", help=f"{models}, net.py:build or package.module:build")
    p.add_argument(
        "--dataset", help=bdata.DATASET_HELP + " (default: the model's own; required for your own network)"
    )
    # --run-dir as well: under torchrun, whose own parser reads --run as an abbreviation of its --run-path
    p.add_argument("--run", "--run-dir", dest="run_dir", help="run folder (default: runs/<model>)")
    p.add_argument(
        "--method",
        choices=list(METHODS),
        help="; ".join(f"{k}: {v}" for k, v in METHODS.items()) + _RECIPE_OR + "bop)",
    )
    p.add_argument("--epochs", type=positive_int, help="epochs to train in total" + _RECIPE_OR + "10)")
    p.add_argument("--batch-size", type=positive_int, help="batch size per process" + _RECIPE_OR + "100)")
    p.add_argument("--gamma", type=_nonnegative_float, help="Bop adaptivity rate" + _RECIPE_OR + "1e-4)")
    p.add_argument(
        "--tau",
        type=_nonnegative_float,
        help="Bop flip threshold (default: the named network's recipe where it is for the method, else 1e-8; "
        "1e-6 for bop2)",
    )
    p.add_argument("--sigma", type=_nonnegative_float, help="bop2 second-moment rate" + _RECIPE_OR + "1e-2)")
    p.add_argument(
        "--tau-schedule",
        choices=SCHEDULES,
        help="per-epoch decay of tau from its start value, as --schedule decays gamma (default: the named "
        "network's recipe where it is for the method, else constant)",
    )
    p.add_argument(
        "--lr",
        type=_nonnegative_float,
        help="Adam learning rate (real-valued parameters)" + _RECIPE_OR + "1e-2)",
    )
    p.add_argument(
        "--compact",
        action="store_true",
        help="Bop's compact layout: sign bits and bfloat16 averages, about 2.1 bytes per binary weight",
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="per-epoch decay of gamma (Bop) and lr (Adam)" + _RECIPE_OR + "constant)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for init, data order, dropout, augmentation")
    add_data_arguments(p)
    add_user_data_arguments(p)
    _add_regularization_arguments(p)
    p.add_argument(
        "--limit-train", type=positive_int, help="use only N training images (seeded, every class its share)"
    )
    p.add_argument(
        "--limit-test", type=positive_int, help="use only N test images (seeded, every class its share)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: half the cores)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint.pt")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in a run folder that has a checkpoint"
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=0, help="also checkpoint every N steps (0: each epoch only)"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument(
        "--no-check", dest="check", action="store_false", help="skip `bnnflow check` of your network"
    )
    p.set_defaults(func=_train)
    _register_evaluate(sub)
    _register_teacher(sub)


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(positive_int(t) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"comma-separated positive widths, got {text!r}") from None


def _register_teacher(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "teacher",
        help="train a float network to distil from (bnnflow train --teacher)",
        description="Train a float MLP on a dataset with PyTorch and save it with torch.export (.pt2), "
        "with its test accuracy in <out>.json. `bnnflow train --teacher FILE` then distils from it.",
        formatter_class=HelpFormatter,
    )
    t.add_argument("--dataset", required=True, help=bdata.DATASET_HELP)
    t.add_argument("--out", required=True, help="the .pt2 file to write")
    t.add_argument(
        "--hidden", type=_widths, default=(1024, 1024, 1024), help="hidden widths (default 1024,1024,1024)"
    )
    t.add_argument(
        "--epochs", type=positive_int, default=20, help="epochs (default 20, cosine learning rate)"
    )
    t.add_argument("--batch-size", type=positive_int, default=100, help="images per step (default 100)")
    t.add_argument("--lr", type=_nonnegative_float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    t.add_argument(
        "--dropout", type=_nonnegative_float, default=0.2, help="after every hidden layer (default 0.2)"
    )
    t.add_argument(
        "--augment", default="none", choices=list(bdata.ImageDataset.AUGMENTATIONS), help="as for train"
    )
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--limit-train", type=positive_int, help="use only N training images")
    t.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    add_data_arguments(t)
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no per-epoch lines")
    t.set_defaults(func=_teacher)


def _teacher(args: argparse.Namespace) -> int:
    from bnnflow.training.teacher import TeacherConfig, train_teacher

    fields = {k: getattr(args, k) for k in TeacherConfig.__dataclass_fields__ if hasattr(args, k)}
    record = train_teacher(TeacherConfig(**fields))
    print(f"teacher: test accuracy {100 * record['test_acc']:.2f}% -> {record['file']}")
    return 0


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate",
        help="accuracy of a checkpoint or run folder on a dataset split",
        description="Evaluate a trained checkpoint (or a run folder's best.pt) in PyTorch.",
        formatter_class=HelpFormatter,
    )
    e.add_argument("checkpoint", help="checkpoint file or run folder")
    e.add_argument("--dataset", help="dataset, as for train (default: the one the run recorded)")
    e.add_argument("--split", default="test", choices=["train", "test"], help="which split to evaluate on")
    e.add_argument(
        "--limit", type=positive_int, help="evaluate only N images (seeded, every class its share)"
    )
    add_data_arguments(e)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {
        k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)
    }
    try:
        summary = train(TrainConfig(**fields))
    except BaseException:
        finish_distributed(ok=False)
        raise
    finish_distributed()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun: rank 0 reports (and alone writes the run folder)
    print(
        f"{summary['model']} / {summary['method']}: test accuracy {100 * summary['final_test_acc']:.2f}% "
        f"(best {100 * summary['best_test_acc']:.2f}%), {summary['total_flips']} flips, "
        f"{summary['bytes_per_binary_weight']:.1f} bytes per binary weight, "
        f"{summary['train_seconds']:.1f} s -> {summary['run_dir']}"
    )
    return 0


def _evaluation_split(
    recorded: bdata.DatasetIdentity, dataset: str | None, split: str, data_dir: str | None, download: bool
) -> tuple[bdata.DatasetIdentity, tuple[Any, Any]]:
    """The dataset to evaluate on (the recorded one unless ``dataset`` names another) and its split."""
    if dataset is None or bdata.canonical_name(dataset) == recorded.name:
        if split == "test":
            return recorded, bdata.identity_test_set(recorded, data_dir, download)
        data = bdata.open_dataset(recorded.name, data_dir, download, recorded.resize, recorded.test_fraction)
        return recorded, (data.x_train, data.y_train)
    if bdata.dataset_kind(dataset) == "named":  # its shape and classes are known before reading it
        known = bdata.legacy_identity(dataset)
        bdata.check_model_fits(
            known, recorded.input_shape, recorded.num_classes, "the model cannot read its images: it"
        )
        return known, bdata.load_arrays(known.name, split, data_dir, download)
    data = bdata.open_dataset(dataset, data_dir, download)
    return data.identity, (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)


def evaluate_checkpoint(
    checkpoint: str,
    dataset: str | None = None,
    split: str = "test",
    limit: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    model, payload = load_model(checkpoint)
    recorded = bdata.checkpoint_identity(payload)
    identity, (x, y) = _evaluation_split(recorded, dataset, split, data_dir, download)
    bdata.check_model_fits(
        identity,
        recorded.input_shape,
        recorded.num_classes,
        f"model {payload['model']!r} cannot read its images: it",
    )
    keep = np.sort(bdata.test_subset(y, limit))
    x, y = x[keep], y[keep]
    dataset = identity.name
    loader = DataLoader(bdata.ImageDataset(x, y, identity.pixel_max), batch_size=1000)
    loss, acc = evaluate(model, loader, torch.device("cpu"))
    return {
        "checkpoint": str(checkpoint),
        "model": payload["model"],
        "method": payload.get("method"),
        "epoch": payload.get("epoch"),
        "dataset": dataset,
        "split": split,
        "images": int(len(y)),
        "loss": loss,
        "accuracy": acc,
    }


def _evaluate(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(
        args.checkpoint, args.dataset, args.split, args.limit, args.data_dir, args.download
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']} ({result['method']}, epoch {result['epoch']}) on {result['dataset']} "
            f"{result['split']}: accuracy {100 * result['accuracy']:.2f}% over {result['images']} images, "
            f"loss {result['loss']:.4f}"
        )
    return 0
