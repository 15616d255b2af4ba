"""A user's own data: image folders, npz archives, Fashion-MNIST and SVHN by name, the dataset a run
records, and the seeded class-stratified test subsets the later stages take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow import data
from bnnflow.errors import BnnflowError
from bnnflow.runs import load_checkpoint, load_model, save_checkpoint
from bnnflow.training.trainer import TrainConfig, train
from tests.user_data_files import arrays, class_images, write_folder, write_npz


def test_a_folder_of_class_subfolders_is_split_by_class_with_a_seed(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", per_class=10)
    ds = data.open_dataset(f"folder:{root}")
    ident = ds.identity
    assert ident.name == f"folder:{root.resolve()}" and ident.kind == "folder"
    assert ident.class_names == ("cat", "dog", "emu") and ident.num_classes == 3
    assert ident.input_shape == (1, 8, 8) and ident.pixel_max == 255
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (1, 8, 8)
    # 20% of each class to test, every class in both splits
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2] and np.bincount(ds.y_train).tolist() == [8, 8, 8]
    # the pixels are the files' (class 1's square is at row 3, column 2)
    one = ds.x_train[ds.y_train == 1][0, 0]
    assert one[3, 2] == 230 and one[0, 0] < 60
    again = data.open_dataset(f"folder:{root}")
    assert again.identity == ident  # same split, same fingerprints
    other = data.open_dataset(f"folder:{root}", test_fraction=0.5).identity
    assert np.bincount(data.open_dataset(f"folder:{root}", test_fraction=0.5).y_test).tolist() == [5, 5, 5]
    assert other.test_sha256 != ident.test_sha256 and other.test_fraction == 0.5


def test_a_folder_with_train_and_test_and_colour_and_resize(tmp_path: Path) -> None:
    root = tmp_path / "split"
    write_folder(root / "train", ("a", "b", "c", "d"), per_class=4, size=(10, 12), channels=3, suffix=".bmp")
    write_folder(root / "test", ("a", "b", "d"), per_class=2, size=(10, 12), channels=3, suffix=".jpg")
    ds = data.open_dataset(f"folder:{root}")
    assert ds.identity.input_shape == (3, 10, 12) and ds.identity.class_names == ("a", "b", "c", "d")
    assert len(ds.y_train) == 16 and sorted(set(ds.y_test.tolist())) == [0, 1, 3]  # d is label 3
    resized = data.open_dataset(f"folder:{root}", resize="6x7")
    assert resized.identity.input_shape == (3, 6, 7) and resized.identity.resize == (6, 7)
    with pytest.raises(BnnflowError, match="--test-fraction applies to a folder without"):
        data.open_dataset(f"folder:{root}", test_fraction=0.3)


def test_an_npz_archive_nchw_nhwc_and_class_names(tmp_path: Path) -> None:
    plain = data.open_dataset(f"npz:{write_npz(tmp_path / 'a.npz')}")
    assert plain.identity.class_names == ("0", "1", "2") and plain.identity.input_shape == (1, 8, 8)
    a = arrays()
    nhwc = {k: (v.transpose(0, 2, 3, 1) if k.startswith("x") else v) for k, v in a.items()}
    named = write_npz(tmp_path / "b.npz", **nhwc, layout="NHWC", class_names=np.array(["x", "y", "z"]))
    got = data.open_dataset(f"npz:{named}")
    assert np.array_equal(got.x_test, plain.x_test) and got.identity.class_names == ("x", "y", "z")
    gray = write_npz(tmp_path / "c.npz", x_train=a["x_train"][:, 0], x_test=a["x_test"][:, 0])  # (N, H, W)
    assert np.array_equal(data.open_dataset(f"npz:{gray}").x_train, plain.x_train)


def test_labels_above_nine_and_many_classes(tmp_path: Path) -> None:
    """43 classes (labels up to 42) read, train and keep their count: no 0..9 limit anywhere."""
    a = arrays(n_classes=43, per_class=2)
    ds = data.open_dataset(f"npz:{write_npz(tmp_path / 'many.npz', **a)}")
    assert ds.identity.num_classes == 43 and int(ds.y_train.max()) == 42
    from bnnflow.models import build_model

    assert build_model("digits-mlp", 43).eval()(torch.zeros(1, 1, 8, 8)).shape == (1, 43)


def test_fashion_mnist_by_name_from_the_data_dir(tmp_path: Path) -> None:
    from tests.test_data import fake_mnist, write_mnist

    for split, n in (("train", 6), ("test", 4)):
        write_mnist(tmp_path / "fashion-mnist", split, *fake_mnist(n, 3), gz=True)
    x, y = data.load_arrays("fashion-mnist", "test", tmp_path)
    assert x.shape == (4, 1, 28, 28) and y.dtype == np.int64
    ident = data.open_dataset("fashion-mnist", tmp_path).identity
    assert ident.class_names[0] == "T-shirt/top" and ident.class_names[9] == "Ankle boot"
    with pytest.raises(BnnflowError, match=r"fashion-mnist test files .* not found .*--download"):
        data.load_arrays("fashion-mnist", "test", tmp_path / "elsewhere")


def test_svhn_by_name_reads_the_mat_files(tmp_path: Path) -> None:
    import scipy.io

    rng = np.random.default_rng(0)
    (tmp_path / "svhn").mkdir()
    for split, n in (("train", 5), ("test", 3)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [9], [2], [3]][:n], dtype=np.uint8)  # 10 is the digit 0
        scipy.io.savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
    x, y = data.load_arrays("svhn", "test", tmp_path)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 1, 9]
    mat = scipy.io.loadmat(tmp_path / "svhn" / "test_32x32.mat")
    assert np.array_equal(x[1].transpose(1, 2, 0), mat["X"][..., 1])  # HWC per image -> CHW
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(BnnflowError, match="cannot read .*test_32x32.mat"):
        data.load_arrays("svhn", "test", tmp_path)


def test_the_test_subset_is_seeded_shuffled_and_every_class_has_its_share() -> None:
    labels = np.repeat(np.arange(5), 100)  # a class-ordered test file
    idx = data.test_subset(labels, 20)
    assert len(set(idx.tolist())) == 20 and np.bincount(labels[idx]).tolist() == [4] * 5
    assert not np.array_equal(np.sort(idx), idx)  # shuffled, not in file order
    assert np.array_equal(idx, data.test_subset(labels, 20)) and not np.array_equal(
        idx, data.test_subset(labels, 20, 1)
    )
    small = data.test_subset(labels, 3)
    assert len(set(labels[small].tolist())) == 3  # three images: three classes, not three of class 0
    assert sorted(data.test_subset(labels, 1000).tolist()) == list(range(500))
    assert data.test_subset(labels, None).tolist() == list(range(500))
    uneven = np.array([0] * 50 + [1] * 2 + [2] * 50)
    assert np.bincount(uneven[data.test_subset(uneven, 10)]).tolist()[1] == 2


def test_a_class_ordered_npz_verifies_on_several_classes(tmp_path: Path) -> None:
    """What export, compile's verification and package take: not the first N of a sorted file."""
    ident = data.open_dataset(f"npz:{write_npz(tmp_path / 'sorted.npz')}").identity
    images, labels = data.test_images(ident, 4)
    assert len(set(labels.tolist())) == 3 and len(images) == 4
    assert data.test_images(ident, 4)[1].tolist() == labels.tolist()  # seeded


def test_the_run_records_its_dataset_and_later_stages_find_it(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", per_class=6)
    run = tmp_path / "run"
    cfg = TrainConfig(model="digits-mlp", dataset=f"folder:{root}", run_dir=str(run), epochs=1, batch_size=8)
    cfg.progress, cfg.threads = False, 1
    train(cfg)
    record = json.loads((run / "dataset.json").read_text())
    assert record["class_names"] == ["cat", "dog", "emu"] and record["num_classes"] == 3
    payload = load_checkpoint(run)
    assert payload["dataset_identity"] == record
    model, _ = load_model(run)  # rebuilt with 3 outputs from the record
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    ident = data.find_identity(run / "compile" / "Pynq-Z2" / "model.bnn")
    assert ident is not None and ident.class_names == ("cat", "dog", "emu")
    # the images changed since training: a later stage says so instead of evaluating something else
    from PIL import Image

    for path in (root / "cat").iterdir():
        Image.fromarray(class_images(2, 1)[0]).save(path)
    with pytest.raises(BnnflowError, match="not the one this model was tested on"):
        data.identity_test_set(ident)


def test_an_old_checkpoint_without_the_record_is_its_named_dataset(tmp_path: Path) -> None:
    from bnnflow.models import build_model

    path = tmp_path / "old" / "best.pt"
    save_checkpoint(
        path,
        {"model": "digits-mlp", "dataset": "digits", "model_state": build_model("digits-mlp").state_dict()},
    )
    payload = load_checkpoint(path)
    ident = data.checkpoint_identity(payload)
    assert ident.name == "digits" and ident.num_classes == 10 and ident.test_sha256 == ""
    assert load_model(path)[0](torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    (tmp_path / "old" / "run.json").write_text(json.dumps({"config": {"dataset": "digits"}}))
    assert data.find_identity(tmp_path / "old" / "compile" / "Pynq-Z2").name == "digits"
    images, labels = data.test_images(ident, 50)
    assert len(set(labels.tolist())) == 10


def test_a_model_and_a_dataset_that_disagree_are_one_line() -> None:
    ident = data.legacy_identity("cifar10")
    with pytest.raises(BnnflowError, match=r"has 4 classes, dataset cifar10 has 10"):
        data.check_model_fits(ident, (3, 32, 32), 4, "model.bnn")
    with pytest.raises(BnnflowError, match=r"takes 1x28x28 inputs, dataset cifar10 has 3x32x32 images"):
        data.check_model_fits(ident, (1, 28, 28), 10, "model.bnn")
