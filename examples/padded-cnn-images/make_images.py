"""Write an image folder for `--dataset folder:PATH` from scikit-learn's bundled 8x8 digits.

    python make_images.py OUT [--size 16] [--per-class N]

OUT/train/<digit>/NNNN.png and OUT/test/<digit>/NNNN.png, 8-bit grayscale PNGs
upscaled from 8x8 to --size x --size with Pillow (bilinear). The split is
seeded and per class: a fifth of each digit's images go to test/. Nothing is
downloaded: the digits ship with scikit-learn. The folder is written under a
temporary name and renamed at the end, so an interrupted run leaves no
half-written dataset behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

TEST_SHARE = 0.2


def write_folder(out: Path, size: int, per_class: int | None, seed: int = 0) -> dict[str, int]:
    """The image folder at ``out``; how many images went to train/ and test/."""
    digits = load_digits()
    # the digits are 0..16 gray levels; 0..255 makes them ordinary 8-bit images
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    counts = {"train": 0, "test": 0}
    try:
        for label in range(10):
            index = rng.permutation(np.flatnonzero(digits.target == label))
            if per_class is not None:
                index = index[:per_class]
            n_test = max(1, round(TEST_SHARE * len(index)))
            for split, chosen in (("test", index[:n_test]), ("train", index[n_test:])):
                folder = tmp / split / str(label)
                folder.mkdir(parents=True)
                for i in chosen:
                    image = Image.fromarray(pixels[i], mode="L").resize((size, size), Image.BILINEAR)
                    image.save(folder / f"{i:04d}.png")
                counts[split] += len(chosen)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write (replaced if it exists)")
    p.add_argument("--size", type=int, default=16, help="image side in pixels (default 16)")
    p.add_argument("--per-class", type=int, default=None, help="only N images of each digit (default all)")
    args = p.parse_args(argv)
    if args.size < 8 or (args.per_class is not None and args.per_class < 2):
        p.error("--size must be at least 8 and --per-class at least 2")
    counts = write_folder(args.out, args.size, args.per_class)
    print(
        f"{args.out}: {counts['train']} train and {counts['test']} test images, 10 classes, "
        f"{args.size}x{args.size}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
