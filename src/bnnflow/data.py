"""Datasets for training, export and compilation: digits, MNIST and CIFAR-10.

Every stage (train, export verification, compile-time accuracy checks) goes
through :func:`load_arrays`, so they all see the same pixels and the same test
split. Images come back as raw ``uint8`` pixels in ``(N, C, H, W)`` order and
are scaled to ``[0, 1]`` only in :class:`ImageDataset`: the FPGA receives the
raw integers, so the exporter needs them unscaled and with ``pixel_max``.

* ``digits`` is scikit-learn's bundled 8x8 set: nothing to download, the
  default for demos and tests.
* ``mnist`` reads the official IDX files (gzipped or not).
* ``cifar10`` reads the official binary batches or the official python
  pickle batches (the latter through an unpickler that only builds numpy
  arrays, so a tampered file cannot run code).

Nothing here downloads unless asked: with ``download=True`` missing files are
fetched from the official sources, checked against the published checksums
and written atomically.

Why not torchvision's ``MNIST``/``CIFAR10`` datasets and transforms: PyPI's
torchvision fails to import beside the pinned CPU build of torch 2.13
(``operator torchvision::nms does not exist``), and the exporter and the
compile-stage verification need the raw uint8 arrays rather than a transformed
PIL pipeline. The readers, the checked download and the pad-crop-flip
augmentation are therefore small numpy/torch code here.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bnnflow.errors import BnnflowError
from bnnflow.runs import atomic_write_bytes, atomic_write_json

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "Dataset",
    "DatasetIdentity",
    "DatasetInfo",
    "ImageDataset",
    "dataset_names",
    "get_dataset_info",
    "check_model_fits",
    "find_identity",
    "load_arrays",
    "open_dataset",
    "test_images",
    "test_subset",
]

SPLITS = ("train", "test")

#: Where ``mnist`` and ``cifar10`` are looked for when no ``data_dir`` is given
#: (relative to the current directory, like ``runs/``).
DEFAULT_DATA_DIR = Path("data")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the hardware need to know about a dataset before loading it."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    pixel_max: int  # largest raw pixel value: the input scale of the first layer
    needs_data_dir: bool
    description: str
    class_names: tuple[str, ...] = ()  # empty: the class indices themselves


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        pixel_max=16,
        needs_data_dir=False,
        description="scikit-learn's 8x8 handwritten digits (1,797 images, bundled, 80/20 stratified split)",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        pixel_max=255,
        needs_data_dir=True,
        description="MNIST 28x28 handwritten digits (60,000 train / 10,000 test, official IDX files)",
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        input_shape=(3, 32, 32),
        num_classes=10,
        pixel_max=255,
        needs_data_dir=True,
        description="CIFAR-10 32x32 colour images (50,000 train / 10,000 test, official batches)",
        class_names=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        pixel_max=255,
        needs_data_dir=True,
        description="Fashion-MNIST 28x28 clothing images (60,000 train / 10,000 test, MNIST's IDX format)",
        # the label names of the dataset's README (github.com/zalandoresearch/fashion-mnist)
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "svhn": DatasetInfo(
        name="svhn",
        input_shape=(3, 32, 32),
        num_classes=10,
        pixel_max=255,
        needs_data_dir=True,
        description="SVHN 32x32 house-number digits (73,257 train / 26,032 test, official .mat files)",
    ),
}


def dataset_names() -> list[str]:
    """The dataset names the CLI accepts, in display order."""
    return list(DATASETS)


# What --dataset takes, for every command's help.
DATASET_HELP = (
    f"{', '.join(DATASETS)}; folder:PATH (one subfolder of PNG/JPEG/BMP images per "
    "class, optionally under train/ and test/) or npz:PATH (uint8 x_train, x_test; integer y_train, "
    "y_test; docs/your-data.md)"
)


def get_dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` for ``name``; a one-line error lists the valid names."""
    info = DATASETS.get(str(name).strip().lower())
    if info is None:
        raise BnnflowError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return info


# --------------------------------------------------------------------------- sources
# MNIST: the mirrors and MD5s of the .gz files as torchvision's MNIST dataset lists
# them (torchvision/datasets/mnist.py, ``MNIST.mirrors`` and ``MNIST.resources``).
MNIST_MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
MNIST_FILES: dict[str, tuple[str, str]] = {
    # split: (images stem, labels stem)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Fashion-MNIST: the mirror and MD5s of the .gz files as torchvision's FashionMNIST dataset lists them.
FASHION_MIRRORS: list[str] = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FASHION_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# dataset: (folder names searched under the data folder, the names of its mirror and MD5 tables,
# looked up when downloading); both are MNIST's IDX format
IDX_SOURCES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "mnist": (("", "mnist", "MNIST/raw"), "MNIST_MIRRORS", "MNIST_MD5"),
    "fashion-mnist": (("fashion-mnist", "FashionMNIST/raw"), "FASHION_MIRRORS", "FASHION_MD5"),
}

# SVHN: the cropped-digits .mat files and their MD5s as torchvision's SVHN dataset lists them.
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES: dict[str, tuple[str, str]] = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}

# CIFAR-10: the python version's URL and MD5 as published on
# https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 python version").
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)
CIFAR10_RECORD = 1 + 3 * 32 * 32  # label byte + R, G, B planes of 32x32

DOWNLOAD_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- public loader
def load_arrays(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, C, H, W)`` with raw pixel values and labels ``int64 (N,)``.

    ``limit`` keeps the first ``limit`` images (quick runs). The parsed arrays
    are cached per process (keyed on the files' paths, sizes and mtimes), and
    the caller always gets its own copy, so modifying it cannot leak into
    another stage that loads the same split.

    A ``folder:PATH`` or ``npz:PATH`` name reads with the default options
    (no resize, the default split): :func:`open_dataset` takes them all.
    """
    if split not in SPLITS:
        raise BnnflowError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if dataset_kind(name) != "named":
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise BnnflowError(f"limit must be a positive integer, got {limit!r}")
        x_train, y_train, x_test, y_test, _ = _read_user(canonical_name(name), None, None)
        images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
        stop = len(labels) if limit is None else min(limit, len(labels))
        return images[:stop].copy(), labels[:stop].copy()
    info = get_dataset_info(name)
    if split not in SPLITS:
        raise BnnflowError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BnnflowError(f"limit must be a positive integer, got {limit!r}")

    if info.name == "digits":
        images, labels = _digits(split)
    else:
        root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
        root = root.expanduser().resolve()
        if info.name in IDX_SOURCES:
            images, labels = _load_mnist(root, split, download, info.name)
        elif info.name == "svhn":
            images, labels = _load_svhn(root, split, download)
        else:
            images, labels = _load_cifar10(root, split, download)

    stop = len(labels) if limit is None else min(limit, len(labels))
    return images[:stop].copy(), labels[:stop].copy()


# --------------------------------------------------------------------------- a user's data
USER_KINDS = ("folder", "npz")


def dataset_kind(name: str) -> str:
    """``named`` for a dataset of :data:`DATASETS`, ``folder`` or ``npz`` for ``folder:PATH``/``npz:PATH``."""
    kind, sep, _ = str(name).partition(":")
    return kind if sep and kind in USER_KINDS else "named"


def canonical_name(name: str) -> str:
    """The name a run records: a named dataset in lower case, a user's source with its absolute path."""
    kind = dataset_kind(name)
    if kind == "named":
        return get_dataset_info(name).name
    path = str(name).partition(":")[2]
    if not path:
        raise BnnflowError(f"--dataset {name}: give the path, as {kind}:PATH")
    return f"{kind}:{Path(path).expanduser().resolve()}"


def parse_resize(text: str | None) -> tuple[int, int] | None:
    """``--resize HxW`` (``32x32``, ``16x40``) as (H, W)."""
    if text is None:
        return None
    h, sep, w = str(text).lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
        raise BnnflowError(f"--resize {text!r}: give HEIGHTxWIDTH in pixels, e.g. 32x32")
    return int(h), int(w)


@dataclass(frozen=True)
class Dataset:
    """A dataset opened for training: its identity and both splits (uint8 N,C,H,W and int64 labels)."""

    identity: DatasetIdentity
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class DatasetIdentity:
    """What a run was trained on, recorded in its run folder (``dataset.json``) and carried by every stage.

    ``name`` is a dataset of :data:`DATASETS` or ``folder:/abs/path`` / ``npz:/abs/file.npz``;
    ``resize`` and ``test_fraction`` are the options that read it; the two
    fingerprints are sha256 over each split's decoded images and labels, so
    a later stage (on another machine too) checks it evaluates what the run
    was tested on. A legacy identity (a run from before this record) has
    empty fingerprints.
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    pixel_max: int
    n_train: int = 0
    n_test: int = 0
    train_sha256: str = ""
    test_sha256: str = ""
    resize: tuple[int, int] | None = None
    test_fraction: float | None = None

    @property
    def kind(self) -> str:
        return dataset_kind(self.name)

    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["class_names"] = list(self.class_names)
        data["resize"] = None if self.resize is None else list(self.resize)
        return data

    @classmethod
    def from_json(cls, data: Any, where: object = "dataset.json") -> DatasetIdentity:
        try:
            shape = tuple(int(d) for d in data["input_shape"])
            resize = data.get("resize")
            ident = cls(
                name=str(data["name"]),
                input_shape=shape,  # type: ignore[arg-type]
                num_classes=int(data["num_classes"]),
                class_names=tuple(str(n) for n in data.get("class_names") or ()),
                pixel_max=int(data["pixel_max"]),
                n_train=int(data.get("n_train", 0)),
                n_test=int(data.get("n_test", 0)),
                train_sha256=str(data.get("train_sha256", "")),
                test_sha256=str(data.get("test_sha256", "")),
                resize=None if resize is None else (int(resize[0]), int(resize[1])),
                test_fraction=None if data.get("test_fraction") is None else float(data["test_fraction"]),
            )
        except (TypeError, KeyError, ValueError, IndexError, AttributeError):
            raise BnnflowError(f"{where} is not a bnnflow dataset record") from None
        if len(shape) != 3 or min(shape) < 1 or ident.num_classes < 2 or ident.pixel_max < 1:
            raise BnnflowError(f"{where} is not a bnnflow dataset record")
        return ident


def legacy_identity(name: str) -> DatasetIdentity:
    """The identity of a named dataset for runs recorded before ``dataset.json`` (no fingerprints)."""
    info = get_dataset_info(name)
    names = info.class_names or tuple(str(i) for i in range(info.num_classes))
    return DatasetIdentity(info.name, info.input_shape, info.num_classes, names, info.pixel_max)


def identity_of(dataset: str | DatasetIdentity) -> DatasetIdentity:
    """A dataset's identity: a named one's without reading it, a folder or npz source's by reading it."""
    if isinstance(dataset, DatasetIdentity):
        return dataset
    if dataset_kind(dataset) == "named":
        return legacy_identity(dataset)
    return open_dataset(dataset).identity


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{images.shape}{labels.shape}".encode())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def open_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    resize: tuple[int, int] | str | None = None,
    test_fraction: float | None = None,
) -> Dataset:
    """Both splits of a named dataset, an image folder or a numpy archive, checked, with their identity."""
    canonical = canonical_name(name)
    size = parse_resize(resize) if isinstance(resize, str) else resize
    kind = dataset_kind(canonical)
    if kind == "named" and (size is not None or test_fraction is not None):
        raise BnnflowError(
            f"--resize and --test-fraction apply to folder: and npz: datasets, not {canonical}"
        )
    if kind == "npz" and (size is not None or test_fraction is not None):
        raise BnnflowError(
            "--resize and --test-fraction apply to folder: datasets; an npz archive has its split"
        )
    if kind == "named":
        x_train, y_train = load_arrays(canonical, "train", data_dir, download)
        x_test, y_test = load_arrays(canonical, "test", data_dir, download)
        base = legacy_identity(canonical)
        names, pixel_max = base.class_names, base.pixel_max
        from bnnflow.userdata import check_arrays

        check_arrays(canonical, (x_train, y_train, x_test, y_test, list(names)))
    else:
        x_train, y_train, x_test, y_test, names_list = _read_user(canonical, size, test_fraction)
        names, pixel_max = tuple(names_list), 255
    identity = DatasetIdentity(
        name=canonical,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),  # type: ignore[arg-type]
        num_classes=len(names),
        class_names=tuple(names),
        pixel_max=pixel_max,
        n_train=len(y_train),
        n_test=len(y_test),
        train_sha256=_digest(x_train, y_train),
        test_sha256=_digest(x_test, y_test),
        resize=size,
        test_fraction=test_fraction,
    )
    return Dataset(identity, x_train.copy(), y_train.copy(), x_test.copy(), y_test.copy())


def _read_user(
    canonical: str, resize: tuple[int, int] | None, test_fraction: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A folder or npz source's arrays, cached per process on the files' names, sizes and times."""
    kind, _, path = canonical.partition(":")
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    key = _file_key([p for p in files if p.exists()])
    return _read_user_cached(kind, path, resize, test_fraction, key)


@functools.lru_cache(maxsize=4)
def _read_user_cached(
    kind: str,
    path: str,
    resize: tuple[int, int] | None,
    test_fraction: float | None,
    key: tuple[tuple[str, int, int], ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from bnnflow.userdata import read_folder, read_npz

    if kind == "folder":
        arrays = read_folder(Path(path), resize, test_fraction)
    else:
        arrays = read_npz(Path(path))
    x_train, y_train, x_test, y_test, names = arrays
    _readonly(x_train, y_train, x_test, y_test)
    return x_train, y_train, x_test, y_test, names


def check_model_fits(
    identity: DatasetIdentity, input_shape: Sequence[int], num_classes: int, what: str
) -> None:
    """One line where a model's input shape or class count is not the dataset's."""
    shape = tuple(int(d) for d in input_shape)
    if shape != tuple(identity.input_shape):
        raise BnnflowError(
            f"{what} takes {'x'.join(map(str, shape))} inputs, dataset {identity.name} has "
            f"{'x'.join(map(str, identity.input_shape))} images"
        )
    if int(num_classes) != identity.num_classes:
        raise BnnflowError(
            f"{what} has {num_classes} classes, dataset {identity.name} has {identity.num_classes}"
        )


def identity_test_set(
    identity: DatasetIdentity, data_dir: str | os.PathLike[str] | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The test split a run was tested on, checked against its fingerprint.

    ``data_dir`` is where a named dataset's files are; for a folder or npz
    source it replaces the recorded path (data moved, or another machine).
    """
    name = identity.name
    if identity.kind != "named" and data_dir is not None:
        name = f"{identity.kind}:{Path(data_dir).expanduser().resolve()}"
    if identity.kind == "named":
        images, labels = load_arrays(name, "test", data_dir, download)
    else:
        if not Path(name.partition(":")[2]).exists():
            raise BnnflowError(
                f"the dataset {name} this model was trained on is not there; "
                "pass --data-dir with its new place"
            )
        _, _, images, labels, _ = _read_user(name, identity.resize, identity.test_fraction)
        images, labels = images.copy(), labels.copy()
    if identity.test_sha256 and _digest(images, labels) != identity.test_sha256:
        raise BnnflowError(
            f"the test split of {name} is not the one this model was tested on "
            "(its images or labels changed since training)"
        )
    if tuple(images.shape[1:]) != tuple(identity.input_shape):
        raise BnnflowError(
            f"{name}: test images are {images.shape[1:]}, the run recorded {identity.input_shape}"
        )
    return images, labels


def test_subset(labels: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` test images, shuffled with ``seed`` and stratified by class (all if ``n`` is None).

    Classes take turns (round robin over per-class shuffled lists), so a
    class-ordered test file gives every class its share; the order of the
    returned indices is itself shuffled.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n is None or n >= total:
        return np.random.default_rng(seed).permutation(total) if n is not None else np.arange(total)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.nonzero(labels == c)[0])) for c in np.unique(labels)]
    rng.shuffle(pools)  # which classes get one more when n is not a multiple
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for pool in pools:
            if depth < len(pool) and len(picked) < n:
                picked.append(int(pool[depth]))
        depth += 1
    return rng.permutation(np.asarray(picked, dtype=np.int64))


def test_images(
    identity: DatasetIdentity,
    n: int | None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` test images and labels of the run's dataset (a seeded, class-stratified subset; all if None)."""
    images, labels = identity_test_set(identity, data_dir)
    idx = test_subset(labels, n, seed)
    return np.ascontiguousarray(images[idx]), labels[idx]


def checkpoint_identity(payload: dict[str, Any]) -> DatasetIdentity:
    """The dataset a checkpoint was trained on: its record, else (older runs) its named dataset's."""
    from bnnflow.models import get_spec
    from bnnflow.runs import dataset_record

    record = dataset_record(payload)
    if record is not None:
        return DatasetIdentity.from_json(record, "the checkpoint's dataset record")
    return legacy_identity(str(payload.get("dataset") or get_spec(payload["model"]).dataset))


DATASET_FILE = "dataset.json"  # DatasetIdentity in a run, export or compile folder


def write_identity(folder: str | os.PathLike[str], identity: DatasetIdentity) -> None:
    atomic_write_json(Path(folder) / DATASET_FILE, identity.to_json())


def read_identity(folder: str | os.PathLike[str]) -> DatasetIdentity | None:
    """The folder's ``dataset.json``, None where it has none; a damaged one is a one-line error."""
    path = Path(folder) / DATASET_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BnnflowError(f"cannot read {path}: {exc}") from None
    return DatasetIdentity.from_json(data, path)


def find_identity(path: str | os.PathLike[str]) -> DatasetIdentity | None:
    """The dataset of a run, export or compile folder (or a file in one), found in the folder or above.

    Folders written before ``dataset.json`` give the named dataset their
    ``export.json`` or ``run.json`` names; None where nothing records one.
    """
    start = Path(path).absolute()
    folders = [start if start.is_dir() else start.parent]
    while len(folders) < 4 and folders[-1].parent != folders[-1]:
        folders.append(folders[-1].parent)
    for folder in folders:
        found = read_identity(folder)
        if found is not None:
            return found
    for folder in folders:
        name = _legacy_name(folder)
        if name is not None:
            return legacy_identity(name)
    return None


def recorded_test_images(
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    n: int | None,
    data_dir: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, DatasetIdentity]:
    """``n`` test images and labels of the dataset recorded for ``path`` (a run, export or compile
    folder or a file in one), checked against the model's input shape (and class count, if given)."""
    identity = find_identity(path)
    if identity is None:
        raise BnnflowError(f"no dataset is recorded for {path} (no dataset.json in it or its run folder)")
    classes = identity.num_classes if num_classes is None else num_classes
    check_model_fits(identity, input_shape, classes, f"the model of {path}")
    images, labels = test_images(identity, n, data_dir)
    return images, labels, identity


def _legacy_name(folder: Path) -> str | None:
    for file, keys in (("export.json", ("dataset",)), ("run.json", ("config", "dataset"))):
        try:
            node: Any = json.loads((folder / file).read_text())
            for key in keys:
                node = node[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(node, str) and node in DATASETS:
            return node
    return None


def _file_key(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """Cache key that changes when a file is replaced (e.g. by a download)."""
    key = []
    for p in paths:
        st = p.stat()
        key.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(key)


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


# --------------------------------------------------------------------------- digits
@functools.cache
def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed 80/20 stratified split: every run and every stage gets the same test set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]  # values 0..16, exact in uint8
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
    )
    idx = train_idx if split == "train" else test_idx
    return _readonly(np.ascontiguousarray(images[idx]), labels[idx])  # type: ignore[return-value]


# --------------------------------------------------------------------------- MNIST
def _mnist_dirs(root: Path, name: str = "mnist") -> list[Path]:
    return [root / sub if sub else root for sub in IDX_SOURCES[name][0]]


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate_mnist(root: Path, split: str, name: str = "mnist") -> tuple[Path, Path] | None:
    """The first folder holding both files of ``split``; both must come from one folder."""
    img_stem, lbl_stem = MNIST_FILES[split]
    for folder in _mnist_dirs(root, name):
        img, lbl = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
        if img is not None and lbl is not None:
            return img, lbl
    return None


def _load_mnist(root: Path, split: str, download: bool, name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    found = _locate_mnist(root, split, name)
    if found is None:
        img_stem, lbl_stem = MNIST_FILES[split]
        folders = [f for f in IDX_SOURCES[name][0] if f]
        target = root / folders[0]
        missing = f"{name} {split} files {img_stem}[.gz] and {lbl_stem}[.gz] not found in {root}"
        others = (["the folder itself"] if "" in IDX_SOURCES[name][0] else []) + [
            f"{f}/" for f in folders[1:]
        ]
        hint = (
            f"put the official IDX files (gzipped or not) in {target}/ (also searched: {', '.join(others)})"
        )
        if not download:
            raise BnnflowError(f"{missing}; {hint}, or pass --download to fetch them when online")
        try:
            _download_mnist(target, name)
        except BnnflowError as exc:
            raise BnnflowError(
                f"{missing} and the download failed ({exc}); {hint}, or retry --download when online"
            ) from None
        found = _locate_mnist(root, split, name)
        if found is None:  # pragma: no cover - the download writes exactly these names
            raise BnnflowError(f"{missing} even after downloading; {hint}")
    return _read_mnist_cached(_file_key(found), get_dataset_info(name).num_classes)


@functools.lru_cache(maxsize=8)
def _read_mnist_cached(
    key: tuple[tuple[str, int, int], ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    img_path, lbl_path = (Path(k[0]) for k in key)
    images = _read_idx(img_path, ndim=3)
    labels = _read_idx(lbl_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise BnnflowError(f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, MNIST is 28x28")
    if len(images) != len(labels):
        raise BnnflowError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise BnnflowError(f"{lbl_path}: label {int(labels.max())} outside 0..{num_classes - 1}")
    return _readonly(images[:, None, :, :], labels.astype(np.int64))  # type: ignore[return-value]


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it ends in .gz; any damage is a one-line error."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise BnnflowError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions.

    The header is four bytes ``0 0 0x08 ndim`` then ``ndim`` big-endian uint32
    sizes; the payload must be exactly their product, so a truncated or padded
    file is caught here instead of as a strange reshape error later.
    """
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BnnflowError(f"{path} is not an IDX file: only {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    expected_magic = 0x0800 | ndim
    if magic != expected_magic:
        raise BnnflowError(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes: "
            f"magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise BnnflowError(
            f"{path} is truncated or corrupted: header says {'x'.join(map(str, dims))} "
            f"({expected} bytes), file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- CIFAR-10
def _cifar_batches(split: str) -> tuple[str, ...]:
    return CIFAR10_TRAIN_BATCHES if split == "train" else CIFAR10_TEST_BATCHES


def _cifar_dirs(root: Path) -> list[tuple[Path, str]]:
    """Candidate (folder, format) pairs, binary first: it needs no unpickling."""
    out: list[tuple[Path, str]] = []
    for base in (root, root / "cifar10"):
        out += [(base / "cifar-10-batches-bin", "bin"), (base / "cifar-10-batches-py", "py")]
    # data_dir may also point straight at a batches folder.
    out += [(root, "bin"), (root, "py")]
    return out


def _locate_cifar10(root: Path, split: str) -> tuple[str, list[Path]] | None:
    for folder, fmt in _cifar_dirs(root):
        suffix = ".bin" if fmt == "bin" else ""
        files = [folder / f"{b}{suffix}" for b in _cifar_batches(split)]
        if all(f.is_file() for f in files):
            return fmt, files
    return None


def _load_cifar10(root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    found = _locate_cifar10(root, split)
    if found is None:
        names = ", ".join(_cifar_batches(split))
        missing = f"CIFAR-10 {split} batches ({names}) not found in {root}"
        hint = (
            f"put the official cifar-10-batches-bin/ (*.bin) or cifar-10-batches-py/ folder "
            f"in {root}/ or {root / 'cifar10'}/"
        )
        if not download:
            raise BnnflowError(f"{missing}; {hint}, or pass --download to fetch them when online")
        try:
            _download_cifar10(root / "cifar10")
        except BnnflowError as exc:
            raise BnnflowError(
                f"{missing} and the download failed ({exc}); {hint}, or retry --download when online"
            ) from None
        found = _locate_cifar10(root, split)
        if found is None:  # pragma: no cover
            raise BnnflowError(f"{missing} even after downloading; {hint}")
    fmt, files = found
    return _read_cifar_cached(fmt, _file_key(files))


@functools.lru_cache(maxsize=4)
def _read_cifar_cached(fmt: str, key: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    reader = _read_cifar_bin if fmt == "bin" else _read_cifar_py
    parts = [reader(Path(k[0])) for k in key]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _readonly(images, labels)  # type: ignore[return-value]


def _check_cifar_labels(path: Path, labels: np.ndarray) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise BnnflowError(f"{path} is corrupted: labels outside 0..9")


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A binary batch: records of one label byte then 3,072 pixel bytes (R, G, B planes).

    Any positive whole number of records is accepted (official batches hold
    10,000); a size that is not a multiple of the record is a damaged file.
    """
    data = _read_bytes(path)
    if len(data) == 0 or len(data) % CIFAR10_RECORD:
        raise BnnflowError(
            f"{path} is truncated or not a CIFAR-10 binary batch: {len(data)} bytes "
            f"is not a whole number of {CIFAR10_RECORD}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_cifar_labels(path, labels)
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return images, labels


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    # Take the functions numpy's own pickles name from numpy's reductions, so
    # no private module path is imported here.
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    table: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # The official batches (numpy 1 under Python 2) name numpy.core; numpy 2 names numpy._core.
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return table


_NUMPY_GLOBALS = _numpy_pickle_globals()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numpy arrays, nothing else.

    A downloaded or copied pickle could otherwise execute arbitrary code; the
    CIFAR-10 batches need only these types.
    """

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 spells bytes
            import codecs

            return codecs.encode
        obj = _NUMPY_GLOBALS.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return obj


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A python batch: a pickled dict with ``data`` (N x 3072 uint8) and ``labels`` (N ints)."""
    raw = _read_bytes(path)
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # pickle raises many types on damaged input
        raise BnnflowError(f"{path} is not a CIFAR-10 python batch: {type(exc).__name__}: {exc}") from None
    if not isinstance(batch, dict):
        raise BnnflowError(f"{path} is not a CIFAR-10 python batch: holds a {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise BnnflowError(f"{path} is not a CIFAR-10 python batch: no 'data'/'labels' entries")
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise BnnflowError(f"{path} is corrupted: {exc}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) == 0:
        raise BnnflowError(
            f"{path} is corrupted: data is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
        )
    if labels.shape != (len(data),):
        raise BnnflowError(f"{path} is corrupted: {len(data)} images but {labels.size} labels")
    _check_cifar_labels(path, labels)
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------- SVHN
def _load_svhn(root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    file, md5 = SVHN_FILES[split]
    found = next((p for p in (root / "svhn" / file, root / file) if p.is_file()), None)
    if found is None:
        missing = f"SVHN {split} file {file} not found in {root} or {root / 'svhn'}"
        if not download:
            raise BnnflowError(
                f"{missing}; put the official cropped-digits .mat files there, or pass --download"
            )
        try:
            atomic_write_bytes(root / "svhn" / file, _fetch(SVHN_URL + file, md5))
        except BnnflowError as exc:
            raise BnnflowError(f"{missing} and the download failed ({exc})") from None
        found = root / "svhn" / file
    return _read_svhn_cached(_file_key([found]))


@functools.lru_cache(maxsize=2)
def _read_svhn_cached(key: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """X (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for the digit 0, as SVHN stores them."""
    import scipy.io

    path = Path(key[0][0])
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises many types for a damaged .mat
        raise BnnflowError(f"cannot read {path} as SVHN's .mat: {type(exc).__name__}: {exc}") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise BnnflowError(f"{path} is not SVHN's cropped digits: no uint8 X of shape (32, 32, 3, N)")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise BnnflowError(f"{path} is corrupted: {x.shape[3]} images but no y of as many labels")
    labels = y.reshape(-1).astype(np.int64) % 10
    if labels.min(initial=0) < 0 or y.max(initial=1) > 10 or y.min(initial=1) < 1:
        raise BnnflowError(f"{path} is corrupted: labels outside 1..10")
    return _readonly(np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels)  # type: ignore[return-value]


# --------------------------------------------------------------------------- download
def _fetch(url: str, md5: str) -> bytes:
    """Download ``url`` into memory and check its MD5; nothing touches the disk here."""
    digest = hashlib.md5(usedforsecurity=False)
    chunks = []
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                chunks.append(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BnnflowError(f"cannot download {url}: {reason}") from None
    if digest.hexdigest() != md5:
        raise BnnflowError(f"checksum mismatch for {url}: MD5 {digest.hexdigest()}, expected {md5}")
    return b"".join(chunks)


def _download_mnist(target: Path, name: str = "mnist") -> None:
    """Fetch the four .gz files into ``target``, trying each mirror in turn.

    Each file is verified before it is written (atomically), so a failed or
    corrupted download never leaves a file that a later run would trust.
    """
    _, mirrors_name, md5s_name = IDX_SOURCES[name]
    mirrors, md5s = globals()[mirrors_name], globals()[md5s_name]
    for file, md5 in md5s.items():
        if (target / file).is_file() or (target / file.removesuffix(".gz")).is_file():
            continue
        errors = []
        for mirror in mirrors:
            try:
                payload = _fetch(mirror + file, md5)
            except BnnflowError as exc:
                errors.append(str(exc))
                continue
            atomic_write_bytes(target / file, payload)
            break
        else:
            raise BnnflowError("; ".join(errors) or f"no mirror configured for {file}")


def _download_cifar10(target: Path) -> None:
    """Fetch the python tar.gz, verify it, and write its batches into ``target/cifar-10-batches-py``.

    Only the expected member names are extracted (no paths from the archive
    are trusted), each written atomically; the archive itself is not kept.
    """
    payload = _fetch(CIFAR10_URL, CIFAR10_MD5)
    wanted = {f"cifar-10-batches-py/{b}" for b in CIFAR10_TRAIN_BATCHES + CIFAR10_TEST_BATCHES}
    wanted.add("cifar-10-batches-py/batches.meta")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    if f is not None:
                        found[name] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BnnflowError(f"{CIFAR10_URL} is not a readable tar.gz: {exc}") from None
    missing = sorted(wanted - found.keys() - {"cifar-10-batches-py/batches.meta"})
    if missing:
        raise BnnflowError(f"{CIFAR10_URL} lacks {', '.join(missing)}")
    for name, content in found.items():
        atomic_write_bytes(target / name, content)


# --------------------------------------------------------------------------- torch dataset
class ImageDataset(torch.utils.data.Dataset):
    """uint8 images as float tensors in ``[0, 1]`` with optional augmentation.

    Images stay uint8 in memory (4x smaller than float) and are scaled per
    item. ``augment`` names one of ``AUGMENTATIONS``:

    - ``"crop-flip"`` (or ``True``): the CIFAR-10 recipe of the Bop paper:
      zero-pad 4 pixels, take a random crop of the original size, flip
      horizontally with probability 1/2.
    - ``"shift"``: move the image by up to 2 pixels each way, filling with
      zeros, never flipped: for digits and other images whose mirror is not
      the same class. ``"shift1"``: the same by up to 1 pixel.
    - ``"none"`` (or ``False``): the images as they are.

    It draws from torch's global RNG, so ``torch.manual_seed`` (and DataLoader
    worker seeding, which derives from it) makes it repeatable.
    """

    AUGMENTATIONS = {"none": 0, "crop-flip": 4, "shift": 2, "shift1": 1}  # name: the padding it crops from

    def __init__(
        self,
        images_uint8: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | Sequence[int],
        pixel_max: int,
        augment: bool | str = False,
    ) -> None:
        images = torch.as_tensor(np.array(images_uint8, copy=True))
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise BnnflowError(
                f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        label_t = torch.as_tensor(np.array(labels, dtype=np.int64, copy=True))
        if label_t.shape != (images.shape[0],):
            raise BnnflowError(f"{images.shape[0]} images but labels of shape {tuple(label_t.shape)}")
        if pixel_max <= 0:
            raise BnnflowError(f"pixel_max must be positive, got {pixel_max}")
        self.images = images
        self.labels = label_t
        self.pixel_max = int(pixel_max)
        self.augment = augmentation_name(augment)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].to(torch.float32) / self.pixel_max
        if self.augment != "none":
            image = self._augment(image)
        return image, self.labels[index]

    def _augment(self, image: torch.Tensor) -> torch.Tensor:
        _, h, w = image.shape
        pad = self.AUGMENTATIONS[self.augment]
        padded = F.pad(image, (pad, pad, pad, pad))  # zeros
        top = int(torch.randint(0, 2 * pad + 1, (1,)))
        left = int(torch.randint(0, 2 * pad + 1, (1,)))
        out = padded[:, top : top + h, left : left + w]
        if self.augment == "crop-flip" and bool(torch.rand(1) < 0.5):
            out = out.flip(-1)
        return out.contiguous()


def augmentation_name(augment: bool | str | None) -> str:
    """``ImageDataset``'s augmentation for a setting (booleans as older run folders saved them)."""
    if augment is None or augment is False:
        return "none"
    if augment is True:
        return "crop-flip"
    if augment not in ImageDataset.AUGMENTATIONS:
        raise BnnflowError(
            f"unknown augmentation {augment!r}; choose one of: {', '.join(ImageDataset.AUGMENTATIONS)}"
        )
    return augment
