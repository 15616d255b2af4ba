"""A user's own images: an image folder (``folder:PATH``) or a numpy archive (``npz:PATH``).

Both readers return raw ``uint8`` images in ``(N, C, H, W)`` order and
``int64`` labels for a train and a test split, with the class names, exactly
as bnnflow.data returns its named datasets; everything that can be wrong with
the data is found here and reported in one line naming the first bad file or
array, before a model is built or a file is written.

Image folder::

    PATH/<class>/<image>               one subfolder per class; a seeded, stratified split
    PATH/train/<class>/<image>         or the user's own split (then test/ holds the same classes)
    PATH/test/<class>/<image>

Images are PNG, JPEG or BMP read with Pillow; 8-bit grayscale images give one
channel, anything in colour three (a folder with both is read as colour). All
images must have one size unless ``resize=(H, W)`` is given (bilinear).

Numpy archive: ``x_train``, ``x_test`` uint8 of shape ``(N, C, H, W)``, or
``(N, H, W)`` for one channel; ``y_train``, ``y_test`` integer labels of shape
``(N,)``; optionally ``class_names`` (strings, one per class) and ``layout``
(``"NCHW"``, the default, or ``"NHWC"``). Labels are ``0 .. K-1``, ``K`` the
number of class names, else the largest label plus one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from bnnflow.errors import BnnflowError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the folder split is a property of the data, not of a training run's seed

# (x_train, y_train, x_test, y_test, class names)
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


# --------------------------------------------------------------------------- checks
def check_arrays(where: str, arrays: Arrays) -> Arrays:
    """The checks every user dataset passes: splits, labels, classes, one image shape."""
    x_train, y_train, x_test, y_test, names = arrays
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) == 0:
            raise BnnflowError(f"{where}: the {split} split is empty")
        if len(x) != len(y):
            raise BnnflowError(f"{where}: {len(x)} {split} images but {len(y)} labels")
    if len(names) < 2:
        raise BnnflowError(
            f"{where}: {len(names)} class ({', '.join(names) or 'none'}); a classifier needs 2 or more"
        )
    for split, y in (("train", y_train), ("test", y_test)):
        bad = np.nonzero((y < 0) | (y >= len(names)))[0]
        if bad.size:
            raise BnnflowError(
                f"{where}: {split} label {int(y[bad[0]])} (image {int(bad[0])}) outside 0..{len(names) - 1} "
                f"for {len(names)} classes"
            )
    if len(np.unique(y_train)) < 2:
        raise BnnflowError(f"{where}: the train split holds one class only ({names[int(y_train[0])]})")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise BnnflowError(
            f"{where}: train images are {_shape(x_train)}, test images {_shape(x_test)}: one size for both"
        )
    return arrays


def _shape(x: np.ndarray) -> str:
    return "x".join(str(d) for d in x.shape[1:])


# --------------------------------------------------------------------------- image folder
def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def _image_files(folder: Path) -> list[Path]:
    """The class folder's images, sorted by name; any other (non-hidden) file is refused by name."""
    files = []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts) or p.is_dir():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise BnnflowError(f"{p}: not a PNG, JPEG or BMP image (by its name); move it out of the folder")
        files.append(p)
    return files


def _read_image(path: Path, resize: tuple[int, int] | None) -> np.ndarray:
    """(H, W) for 8-bit grayscale, (H, W, 3) for colour; any damage is one line naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise BnnflowError(
                    f"{path}: a {img.mode} image (16-bit or float); bnnflow reads 8-bit images"
                )
            gray = img.mode in ("1", "L", "LA") or (img.mode == "P" and _gray_palette(img))
            out = img.convert("L" if gray else "RGB")
            if resize is not None and out.size != (resize[1], resize[0]):
                out = out.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
            return np.asarray(out, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise BnnflowError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None


def _gray_palette(img: object) -> bool:
    palette = np.asarray(img.getpalette() or [], dtype=np.uint8).reshape(-1, 3)  # type: ignore[attr-defined]
    return bool(palette.size) and bool((palette == palette[:, :1]).all())


def _read_class_folders(
    root: Path, names: list[str], resize: tuple[int, int] | None, all_classes: bool = True
) -> tuple[list[tuple[Path, np.ndarray]], np.ndarray]:
    """The images of every class folder and their labels (the class's index in ``names``).

    ``all_classes=False`` (a test/ folder) lets a class have no folder; an empty folder is refused.
    """
    images, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        if not all_classes and not folder.exists():
            continue
        files = _image_files(folder) if folder.is_dir() else []
        if not files:
            raise BnnflowError(f"{folder}: class {name!r} holds no images")
        for f in files:
            images.append((f, _read_image(f, resize)))
            labels.append(label)
    return images, np.asarray(labels, dtype=np.int64)


def _stack(where: Path, images: list[tuple[Path, np.ndarray]], colour: bool) -> np.ndarray:
    """(N, C, H, W) uint8; a second image size is one line naming the first image of that size."""
    first_path, first = images[0]
    for path, img in images:
        if img.shape[:2] != first.shape[:2]:
            raise BnnflowError(
                f"{where}: images of different sizes ({first_path.name} is "
                f"{first.shape[0]}x{first.shape[1]}, {path} is {img.shape[0]}x{img.shape[1]}); "
                "pass --resize HxW"
            )
    planes = [np.stack([img] * 3, axis=-1) if colour and img.ndim == 2 else img for _, img in images]
    x = np.stack(planes)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if colour else x[:, None])


def read_folder(
    root: Path, resize: tuple[int, int] | None = None, test_fraction: float | None = None
) -> Arrays:
    """An image folder's (x_train, y_train, x_test, y_test, class names); see the module docstring."""
    if not root.is_dir():
        raise BnnflowError(f"image folder not found: {root}")
    split_dirs = (root / "train").is_dir() and (root / "test").is_dir()
    if split_dirs:
        if test_fraction is not None:
            raise BnnflowError(
                f"{root} has train/ and test/ folders: --test-fraction applies to a folder without"
            )
        names = [p.name for p in _class_dirs(root / "train")]
        test_names = [p.name for p in _class_dirs(root / "test")]
        extra = sorted(set(test_names) - set(names))
        if extra:
            raise BnnflowError(f"{root / 'test' / extra[0]}: class {extra[0]!r} is not in {root / 'train'}")
        if len(names) < 2:
            raise BnnflowError(
                f"{root / 'train'}: {len(names)} class folder(s); a classifier needs 2 or more"
            )
        train, y_train = _read_class_folders(root / "train", names, resize)
        test, y_test = _read_class_folders(root / "test", names, resize, all_classes=False)
        everything = train + test
    else:
        names = [p.name for p in _class_dirs(root)]
        if len(names) < 2:
            raise BnnflowError(
                f"{root}: {len(names)} class folder(s); give one subfolder per class (2 or more), "
                "or train/ and test/ folders holding them"
            )
        everything, labels = _read_class_folders(root, names, resize)
    colour = any(img.ndim == 3 for _, img in everything)
    x_all = _stack(root, everything, colour)
    if split_dirs:
        x_train, x_test = x_all[: len(train)], x_all[len(train) :]
    else:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        train_idx, test_idx = stratified_split(labels, fraction, SPLIT_SEED, root)
        x_train, y_train, x_test, y_test = (
            x_all[train_idx],
            labels[train_idx],
            x_all[test_idx],
            labels[test_idx],
        )
    return check_arrays(str(root), (x_train, y_train, x_test, y_test, names))


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int, where: object
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: ``test_fraction`` of each class (at least one image) to test, seeded."""
    if not 0.0 < test_fraction < 1.0:
        raise BnnflowError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == label)[0])
        if len(idx) < 2:
            raise BnnflowError(f"{where}: class {int(label)} holds {len(idx)} image; a split needs 2 or more")
        k = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# --------------------------------------------------------------------------- numpy archive
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> Arrays:
    """A numpy archive's (x_train, y_train, x_test, y_test, class names); see the module docstring."""
    if not path.is_file():
        raise BnnflowError(f"numpy archive not found: {path}")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise BnnflowError(f"cannot read {path}: not a numpy .npz archive (numpy.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise BnnflowError(f"{path}: no array {missing[0]!r} (it needs {', '.join(NPZ_KEYS)})")
            arrays = {k: npz[k] for k in (*NPZ_KEYS, "class_names", "layout") if k in npz.files}
    except BnnflowError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BnnflowError(
            f"cannot read {path} as a numpy .npz archive: {type(exc).__name__}: {exc}"
        ) from None
    layout = str(arrays["layout"]) if "layout" in arrays else "NCHW"
    if layout not in ("NCHW", "NHWC"):
        raise BnnflowError(f"{path}: layout {layout!r}; store 'NCHW' or 'NHWC'")
    xs = {k: _npz_images(path, k, arrays[k], layout) for k in ("x_train", "x_test")}
    ys = {k: _npz_labels(path, k, arrays[k]) for k in ("y_train", "y_test")}
    if "class_names" in arrays:
        names = [str(n) for n in np.asarray(arrays["class_names"]).reshape(-1)]
    else:
        top = max(int(ys["y_train"].max(initial=-1)), int(ys["y_test"].max(initial=-1)))
        names = [str(i) for i in range(top + 1)]
    return check_arrays(str(path), (xs["x_train"], ys["y_train"], xs["x_test"], ys["y_test"], names))


def _npz_images(path: Path, key: str, x: np.ndarray, layout: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise BnnflowError(f"{path}: {key} is {x.dtype}; store the raw pixels as uint8 (0..255)")
    if x.ndim == 3:
        return np.ascontiguousarray(x[:, None])
    if x.ndim != 4:
        raise BnnflowError(
            f"{path}: {key} has shape {x.shape}; it must be (N, C, H, W), (N, H, W, C) or (N, H, W)"
        )
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.shape[3] in (1, 3) and x.shape[1] > 4:
        raise BnnflowError(
            f"{path}: {key} of shape {x.shape} looks channels-last; store layout='NHWC' in the archive "
            "or transpose it to (N, C, H, W)"
        )
    return np.ascontiguousarray(x)


def _npz_labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise BnnflowError(f"{path}: {key} is {y.dtype}; labels must be integers 0..K-1")
    if y.ndim != 1:
        raise BnnflowError(f"{path}: {key} has shape {y.shape}; labels must be one integer per image (N,)")
    return y.astype(np.int64)
