"""Tests for bnnflow.data: every format is written here in its official layout,
so they need no network and no data beyond the optional shared MNIST copy."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import unavailable

from bnnflow import data
from bnnflow.data import DATASETS, ImageDataset, dataset_names, get_dataset_info, load_arrays
from bnnflow.errors import BnnflowError

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# --------------------------------------------------------------------------- helpers
def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def fake_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def write_mnist(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img_stem, lbl_stem = data.MNIST_FILES[split]
    for stem, arr in ((img_stem, images), (lbl_stem, labels)):
        payload = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)


def fake_cifar(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def cifar_bin_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    return records.tobytes()


def cifar_py_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    # As the official files: bytes keys, data (N, 3072) uint8, labels a list; protocol 2.
    batch = {b"batch_label": b"test", b"data": images.reshape(len(images), -1), b"labels": labels.tolist()}
    return pickle.dumps(batch, protocol=2)


def write_cifar(root: Path, fmt: str, seed: int = 0, n: int = 7) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Six small batches in the official layout; returns the expected train/test arrays."""
    folder = root / ("cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    encode = cifar_bin_bytes if fmt == "bin" else cifar_py_bytes
    suffix = ".bin" if fmt == "bin" else ""
    parts = []
    for i, name in enumerate(data.CIFAR10_TRAIN_BATCHES + data.CIFAR10_TEST_BATCHES):
        images, labels = fake_cifar(n + i, seed + i)
        (folder / f"{name}{suffix}").write_bytes(encode(images, labels))
        parts.append((images, labels))
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return {"train": train, "test": parts[5]}


def assert_one_line_error(excinfo: pytest.ExceptionInfo[BnnflowError], *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- registry
def test_registry() -> None:
    assert dataset_names() == ["digits", "mnist", "cifar10", "fashion-mnist", "svhn"]
    assert get_dataset_info("MNIST") is DATASETS["mnist"]
    assert DATASETS["digits"].input_shape == (1, 8, 8) and DATASETS["digits"].pixel_max == 16
    assert not DATASETS["digits"].needs_data_dir and DATASETS["cifar10"].needs_data_dir
    assert DATASETS["cifar10"].input_shape == (3, 32, 32) and DATASETS["cifar10"].pixel_max == 255
    with pytest.raises(BnnflowError) as excinfo:
        get_dataset_info("imagenet")
    assert_one_line_error(excinfo, "unknown dataset 'imagenet'", "digits, mnist, cifar10")
    with pytest.raises(BnnflowError, match="unknown split"):
        load_arrays("digits", "val")
    with pytest.raises(BnnflowError, match="limit"):
        load_arrays("digits", "train", limit=0)


# --------------------------------------------------------------------------- digits
def test_digits_split_is_fixed_stratified_and_copied() -> None:
    x_train, y_train = load_arrays("digits", "train")
    x_test, y_test = load_arrays("digits", "test")
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert x_train.max() == 16 and x_train.min() == 0
    assert np.bincount(y_test, minlength=10).min() >= 35  # stratified: 35-37 per class
    assert set(np.unique(y_train)) == set(range(10))
    # Same split every call, and the caller's copy is its own.
    x_test[...] = 99
    x_again, y_again = load_arrays("digits", "test")
    assert x_again.max() == 16 and np.array_equal(y_again, y_test)
    x_lim, y_lim = load_arrays("digits", "test", limit=5)
    assert np.array_equal(x_lim, x_again[:5]) and np.array_equal(y_lim, y_again[:5])
    # Train and test together are exactly the 1,797 bundled images.
    from sklearn.datasets import load_digits

    assert np.array_equal(
        np.bincount(np.concatenate([y_train, y_test]), minlength=10),
        np.bincount(load_digits().target, minlength=10),
    )


# --------------------------------------------------------------------------- MNIST
def test_mnist_shared_files() -> None:
    if not SHARED_MNIST.is_dir():
        unavailable(f"{SHARED_MNIST} not present")
    x_train, y_train = load_arrays("mnist", "train", SHARED_MNIST.parent)  # found in mnist/
    x_test, y_test = load_arrays("mnist", "test", SHARED_MNIST)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.uint8 and y_test.dtype == np.int64
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert 5000 < train_counts.min() and train_counts.max() < 7000  # official: 5,421..6,742
    assert 850 < test_counts.min() and test_counts.max() < 1200  # official: 892..1,135
    assert x_train[:, :, 0, 0].max() == 0 and x_train.max() > 200  # background 0, ink bright


@pytest.mark.parametrize(("gz", "layout"), [(True, "."), (False, "."), (True, "mnist"), (False, "MNIST/raw")])
def test_mnist_idx_round_trip(tmp_path: Path, gz: bool, layout: str) -> None:
    expected = {"train": fake_mnist(12, 1), "test": fake_mnist(5, 2)}
    for split, (images, labels) in expected.items():
        write_mnist(tmp_path / layout, split, images, labels, gz)
    for split, (images, labels) in expected.items():
        x, y = load_arrays("mnist", split, tmp_path)
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        assert np.array_equal(x[:, 0], images) and np.array_equal(y, labels)
    x, y = load_arrays("mnist", "train", str(tmp_path), limit=3)
    assert np.array_equal(x[:, 0], expected["train"][0][:3]) and len(y) == 3


@pytest.mark.parametrize("damage", ["truncated", "magic", "garbage_gz", "count_mismatch", "label_range"])
def test_mnist_corrupted(tmp_path: Path, damage: str) -> None:
    images, labels = fake_mnist(6, 3)
    write_mnist(tmp_path, "test", images, labels, gz=False)
    img, lbl = tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte"
    bad = img
    if damage == "truncated":
        img.write_bytes(img.read_bytes()[:-100])
    elif damage == "magic":
        img.write_bytes(idx_bytes(labels.astype(np.uint8)))  # a 1-D file where 3-D belongs
    elif damage == "garbage_gz":
        img.unlink()
        bad = tmp_path / "t10k-images-idx3-ubyte.gz"
        bad.write_bytes(gzip.compress(idx_bytes(images))[:50])
    elif damage == "count_mismatch":
        lbl.write_bytes(idx_bytes(labels[:4].astype(np.uint8)))
    else:
        bad = lbl
        lbl.write_bytes(idx_bytes(np.full(6, 12, np.uint8)))
    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("mnist", "test", tmp_path)
    assert_one_line_error(excinfo, str(bad))


def test_mnist_missing_files_names_folder(tmp_path: Path) -> None:
    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("mnist", "train", tmp_path / "nowhere")
    assert_one_line_error(
        excinfo, "train-images-idx3-ubyte", str(tmp_path / "nowhere" / "mnist"), "--download"
    )


# --------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize(("fmt", "nested"), [("bin", False), ("py", False), ("bin", True), ("py", True)])
def test_cifar10_round_trip(tmp_path: Path, fmt: str, nested: bool) -> None:
    root = tmp_path / "cifar10" if nested else tmp_path
    expected = write_cifar(root, fmt)
    for split in ("train", "test"):
        x, y = load_arrays("cifar10", split, tmp_path)
        assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape[1:] == (3, 32, 32)
        assert np.array_equal(x, expected[split][0]) and np.array_equal(y, expected[split][1])


def test_cifar10_damaged_and_missing(tmp_path: Path) -> None:
    write_cifar(tmp_path / "a", "bin")
    batch = tmp_path / "a" / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("cifar10", "test", tmp_path / "a")
    assert_one_line_error(excinfo, str(batch), "truncated")

    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("cifar10", "train", tmp_path / "empty")
    assert_one_line_error(excinfo, "data_batch_1", str(tmp_path / "empty"), "--download")


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_cifar10_pickle_refuses_foreign_objects(tmp_path: Path) -> None:
    write_cifar(tmp_path, "py")
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}, protocol=2))
    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("cifar10", "test", tmp_path)
    assert_one_line_error(excinfo, str(batch), "refusing")


# --------------------------------------------------------------------------- download
def test_mnist_download_from_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    expected = {"train": fake_mnist(8, 4), "test": fake_mnist(4, 5)}
    for split, (images, labels) in expected.items():
        write_mnist(mirror, split, images, labels, gz=True)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    monkeypatch.setattr(data, "MNIST_MD5", md5)
    # A dead mirror first: the next one is tried.
    monkeypatch.setattr(data, "MNIST_MIRRORS", [(tmp_path / "dead").as_uri() + "/", mirror.as_uri() + "/"])
    root = tmp_path / "data"
    with pytest.raises(BnnflowError, match="--download"):
        load_arrays("mnist", "test", root)  # download=False never fetches
    assert not root.exists()
    x, y = load_arrays("mnist", "test", root, download=True)
    assert np.array_equal(x[:, 0], expected["test"][0]) and np.array_equal(y, expected["test"][1])
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(md5)  # all four, no temp files


def test_mnist_download_bad_checksum_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    write_mnist(mirror, "test", *fake_mnist(4, 6), gz=True)
    write_mnist(mirror, "train", *fake_mnist(4, 7), gz=True)
    monkeypatch.setattr(data, "MNIST_MD5", {p.name: "0" * 32 for p in mirror.iterdir()})
    monkeypatch.setattr(data, "MNIST_MIRRORS", [mirror.as_uri() + "/"])
    root = tmp_path / "data"
    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("mnist", "test", root, download=True)
    assert_one_line_error(excinfo, "checksum mismatch", "download failed", str(root / "mnist"))
    assert not (root / "mnist").exists() or not any((root / "mnist").iterdir())


def test_mnist_download_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MNIST_MIRRORS", [(tmp_path / "no-such-mirror").as_uri() + "/"])
    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("mnist", "train", tmp_path / "data", download=True)
    assert_one_line_error(excinfo, "cannot download", "train-images-idx3-ubyte", "--download")


def test_cifar10_download_from_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    expected = write_cifar(source, "py", seed=10, n=3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(buffer.getvalue())
    monkeypatch.setattr(data, "CIFAR10_URL", archive.as_uri())

    monkeypatch.setattr(data, "CIFAR10_MD5", "f" * 32)
    root = tmp_path / "data"
    with pytest.raises(BnnflowError) as excinfo:
        load_arrays("cifar10", "train", root, download=True)
    assert_one_line_error(excinfo, "checksum mismatch", "--download")
    assert not root.exists() or not any(root.rglob("*"))

    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(buffer.getvalue()).hexdigest())
    x, y = load_arrays("cifar10", "train", root, download=True)
    assert np.array_equal(x, expected["train"][0]) and np.array_equal(y, expected["train"][1])
    assert (root / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()


# --------------------------------------------------------------------------- ImageDataset
def test_image_dataset_scaling() -> None:
    images = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4) % 17
    ds = ImageDataset(images, np.array([3, 7]), pixel_max=16)
    assert len(ds) == 2
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (1, 4, 4) and y.dtype == torch.int64 and int(y) == 7
    assert torch.allclose(x, torch.from_numpy(images[1]).float() / 16)
    assert float(x.max()) <= 1.0
    images[...] = 0  # the dataset holds its own copy
    assert float(ds[1][0].max()) > 0
    with pytest.raises(BnnflowError):
        ImageDataset(images.astype(np.float32), np.array([3, 7]), pixel_max=16)
    with pytest.raises(BnnflowError):
        ImageDataset(images, np.array([3]), pixel_max=16)


def test_augmentation_shape_determinism_and_effect() -> None:
    images, labels = fake_cifar(16, 20)
    ds = ImageDataset(images, labels, pixel_max=255, augment=True)
    plain = ImageDataset(images, labels, pixel_max=255)

    def draw() -> torch.Tensor:
        return torch.stack([ds[i % len(ds)][0] for i in range(64)])

    torch.manual_seed(123)
    first = draw()
    torch.manual_seed(123)
    second = draw()
    assert first.shape == (64, 3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, second)
    reference = torch.stack([plain[i % len(plain)][0] for i in range(64)])
    changed = (first != reference).flatten(1).any(dim=1)
    assert changed.sum() >= 48  # 1/81 * 1/2 of draws are the identity transform
    assert (first == 0).any()  # zero padding shows up
    # Crop and flip move pixels around; they never invent values other than the zero padding.
    assert set(torch.unique(first).tolist()) <= set(torch.unique(reference).tolist()) | {0.0}


@pytest.mark.parametrize(("name", "reach"), [("shift", 2), ("shift1", 1)])
def test_shift_augmentation_moves_digits_without_flipping(name: str, reach: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(8, 1, 12, 12), dtype=np.uint8)  # no zero pixels of their own
    labels = np.arange(8)
    ds = ImageDataset(images, labels, pixel_max=255, augment=name)
    plain = ImageDataset(images, labels, pixel_max=255)
    torch.manual_seed(7)
    seen: set[tuple[int, int]] = set()
    for _ in range(40):
        for i in range(len(ds)):
            out, ref = ds[i][0][0], plain[i][0][0]
            # Find the shift that explains the output: a move of at most `reach` pixels, zeros where it
            # uncovers (searched over a wider range, so that a wider move is caught).
            found = []
            for dy in range(-3, 4):
                for dx in range(-3, 4):
                    expect = torch.zeros_like(ref)
                    ys, yd = (
                        (slice(0, 12 - dy), slice(dy, 12)) if dy >= 0 else (slice(-dy, 12), slice(0, 12 + dy))
                    )
                    xs, xd = (
                        (slice(0, 12 - dx), slice(dx, 12)) if dx >= 0 else (slice(-dx, 12), slice(0, 12 + dx))
                    )
                    expect[yd, xd] = ref[ys, xs]
                    if torch.equal(out, expect):
                        found.append((dy, dx))
            assert len(found) == 1, "not a plain move (a flip?)"
            seen.add(found[0])
    # Every move within reach is drawn, none beyond it.
    assert seen == {(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)}


def test_augmentation_names() -> None:
    images, labels = fake_cifar(4, 8)
    assert ImageDataset(images, labels, 255, augment=True).augment == "crop-flip"
    assert ImageDataset(images, labels, 255, augment=False).augment == "none"
    with pytest.raises(BnnflowError, match="unknown augmentation 'rotate'"):
        ImageDataset(images, labels, 255, augment="rotate")
