"""Manifests as a careless tool or a hostile sender writes them: one-line errors, nothing outside the package.

A deployment package arrives on the board from elsewhere; its manifest.json is
data, not code. Values of the wrong type must stop ``check`` with one line
naming the key, and no path it names (listed files, test set, bitfile, driver
settings, CPU sources, runtime weights) may lead out of the package, by
``..``, an absolute path or a symlink.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import board_cli

from bnnflow_board.agreement import first_mismatch
from bnnflow_board.errors import BoardError
from bnnflow_board.package import load_package

Edit = Callable[[dict[str, Any]], None]


def _package(designs: Path, tmp_path: Path, edit: Edit | None = None) -> Path:
    pkg = tmp_path / "pkg"
    shutil.copytree(designs / "digits-pkg", pkg)
    if edit is not None:
        m = json.loads((pkg / "manifest.json").read_text())
        edit(m)
        (pkg / "manifest.json").write_text(json.dumps(m))
    return pkg


def _one_error(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("bnnflow-board: error: ") and "Traceback" not in r.stderr
    return lines[0]


def _set(path: str, value: Any) -> Edit:
    def edit(m: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = m
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return edit


WRONG_TYPES = {
    "files": (_set("files", ["model.bnn"]), "files must be an object of strings, not a list"),
    "image_shape": (
        _set("testset.image_shape.0", "1"),
        "testset.image_shape must be a list of integers >= 1, not a list",
    ),
    "n": (_set("testset.n", "24"), "testset.n must be an integer >= 1, not a string '24'"),
    "board": (_set("board", 7), "board must be a string, not an integer 7"),
    "bitfile": (_set("bitfile", [False]), "bitfile must be an object, not a list"),
    "instance width": (
        _set("instances.0.in_width", "224"),
        "instances[0].in_width must be an integer >= 0, not a string '224'",
    ),
    "clock": (_set("clock_mhz", None), "clock_mhz must be a number > 0, not null"),
    "input ops": (_set("fpga_input.from_images", "transpose"), "fpga_input.from_images must be a list"),
    "cpu": (_set("cpu", KeyError), "lacks 'cpu': the package is damaged"),
    "runtime weights": (_set("runtime_weights", ["x"]), "runtime_weights must be an object, not a list"),
    "warnings": (_set("warnings", "none"), "warnings must be a list of strings, not a string 'none'"),
    "driver": (_set("driver.settings", 1), "driver.settings must be a string, not an integer 1"),
    "class names": (
        _set("testset.class_names", "cat"),
        "testset.class_names must be a list of strings, not a string 'cat'",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_manifest_values_of_the_wrong_type(designs: Path, tmp_path: Path, case: str) -> None:
    edit, message = WRONG_TYPES[case]
    pkg = _package(designs, tmp_path, edit)
    err = _one_error(board_cli("check", str(pkg), "--simulated-board"))
    assert err.startswith(f"bnnflow-board: error: {pkg / 'manifest.json'}") and message in err, err


def test_labels_and_class_names_against_the_class_count(designs: Path, tmp_path: Path) -> None:
    names = [f"class {i}" for i in range(10)]
    pkg = _package(designs, tmp_path / "named", _set("testset.class_names", names))
    ts = load_package(pkg).testset()
    assert ts.class_names == names and ts.labels.max() <= 9
    text = first_mismatch(ts.golden_classes, (ts.golden_classes + 1) % 10, ts.labels, "the FPGA", names=names)
    c = int(ts.golden_classes[0])
    assert text is not None and f"golden {c} (class {c})" in text["text"], text
    assert load_package(_package(designs, tmp_path / "old")).testset().class_names == [
        str(i) for i in range(10)
    ]
    few = _package(designs, tmp_path / "few", _set("testset.class_names", ["a", "b"]))
    with pytest.raises(BoardError, match="2 class names for 10 classes"):
        load_package(few).testset()
    labels = pkg / json.loads((pkg / "manifest.json").read_text())["testset"]["labels"]
    raw = bytearray(labels.read_bytes())
    raw[2] = 12
    labels.write_bytes(bytes(raw))
    with pytest.raises(BoardError, match=r"label 12 of image 2 is not one of the 10 classes"):
        load_package(pkg).testset()


def _outside(tmp_path: Path, name: str, data: bytes) -> Path:
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    path = tmp_path / "elsewhere" / name
    path.write_bytes(data)
    return path


def _list_outside(rel: Callable[[Path], str]) -> Callable[[Path, Path], None]:
    """The manifest lists a file outside the package, with its true sha256: check would vouch for it."""

    def make(pkg: Path, tmp_path: Path) -> None:
        secret = _outside(tmp_path, "secret.txt", b"not the package's\n")
        m = json.loads((pkg / "manifest.json").read_text())
        m["files"][rel(secret)] = hashlib.sha256(secret.read_bytes()).hexdigest()
        (pkg / "manifest.json").write_text(json.dumps(m))

    return make


def _symlink_out(rel: str) -> Callable[[Path, Path], None]:
    """A file or folder of the package replaced by a symlink to an identical copy outside it."""

    def make(pkg: Path, tmp_path: Path) -> None:
        copy = tmp_path / "elsewhere" / Path(rel).name
        copy.parent.mkdir(exist_ok=True)
        shutil.move(pkg / rel, copy)
        (pkg / rel).symlink_to(copy)

    return make


def _key_outside(key: str, folder: bool = False) -> Callable[[Path, Path], None]:
    """A manifest key naming an identical copy of its file (or folder) outside the package."""

    def make(pkg: Path, tmp_path: Path) -> None:
        m = json.loads((pkg / "manifest.json").read_text())
        section, name = key.split(".")
        src = pkg / m[section][name]
        copy = tmp_path / "elsewhere" / src.name
        copy.parent.mkdir(exist_ok=True)
        (shutil.copytree if folder else shutil.copy2)(src, copy)
        m[section][name] = f"../elsewhere/{src.name}"
        (pkg / "manifest.json").write_text(json.dumps(m))

    return make


ESCAPES = {
    "files ..": (_list_outside(lambda p: "../elsewhere/secret.txt"), "'../elsewhere/secret.txt', outside"),
    "files absolute": (_list_outside(str), "secret.txt', outside the package"),
    "model.bnn symlink": (_symlink_out("model.bnn"), "names model.bnn, a symlink to "),
    "testset symlink": (_symlink_out("testset"), "names testset/golden_classes.i32, a symlink to "),
    "test images": (_key_outside("testset.images"), "'../elsewhere/images.u8', outside"),
    "driver settings": (_key_outside("driver.settings"), "'../elsewhere/settings.json', outside"),
    "cpu sources": (_key_outside("cpu.sources", folder=True), "'../elsewhere/cpu', outside"),
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_manifest_paths_stay_in_the_package(designs: Path, tmp_path: Path, case: str) -> None:
    make, message = ESCAPES[case]
    pkg = _package(designs, tmp_path)
    assert board_cli("check", str(pkg), "--simulated-board").returncode == 0
    make(pkg, tmp_path)
    err = _one_error(board_cli("check", str(pkg), "--simulated-board"))
    assert err.startswith(f"bnnflow-board: error: {pkg / 'manifest.json'} names ") and message in err, err
    assert err.endswith("outside the package")


def test_bitfile_and_runtime_weights_stay_in_the_package(designs: Path, tmp_path: Path) -> None:
    """The bitfile, its .hwh and the runtime weight folder, which the simulated check does not read."""
    for key, value in (
        ("bitfile", {"present": True, "bit": "/boot/finn-accel.bit", "hwh": "bitfile/finn-accel.hwh"}),
        ("bitfile", {"present": True, "bit": "bitfile/finn-accel.bit", "hwh": "../x.hwh"}),
        ("runtime_weights", {"dir": "../../runtime_weights", "layers": []}),
        ("timing_report", "/var/log/timing.rpt"),
    ):
        pkg = _package(designs, tmp_path / key / str(len(str(value))), _set(key, value))
        err = _one_error(board_cli("check", str(pkg)))
        assert err.endswith("outside the package"), err


def test_update_manifest_symlinks_stay_in_the_update(designs: Path, tmp_path: Path) -> None:
    """The same rule, by the same helper, for a weights-only update package."""
    upd = tmp_path / "update"
    shutil.copytree(designs / "rtw-update", upd)
    copy = tmp_path / "elsewhere" / "model.bnn"
    copy.parent.mkdir()
    shutil.move(upd / "model.bnn", copy)
    (upd / "model.bnn").symlink_to(copy)
    pkg = tmp_path / "pkg"
    shutil.copytree(designs / "rtw-pkg", pkg)
    err = _one_error(board_cli("update-weights", str(pkg), str(upd), "--simulated-board"))
    assert err == (
        f"bnnflow-board: error: {upd / 'manifest.json'} names model.bnn, a symlink to {copy}, "
        "outside the update package"
    )


SETTINGS_WRONG_TYPES = {
    "ishape": (
        ("io_shape_dict", "ishape_normal"),
        "1x8x8",
        "io_shape_dict.ishape_normal must be a list of shapes",
    ),
    "shape entry": (
        ("io_shape_dict", "oshape_normal"),
        [["1", 1]],
        "io_shape_dict.oshape_normal must be a list",
    ),
    "dma names": (
        ("io_shape_dict", "idma_names"),
        "idma0",
        "io_shape_dict.idma_names must be a list of strings",
    ),
    "shapes": (("io_shape_dict",), [1, 2], "io_shape_dict must be an object"),
    "clock": (("fclk_mhz",), "fast", "fclk_mhz must be a clock in MHz"),
    "platform": (("platform",), None, "platform must be a string"),
}


@pytest.mark.parametrize("case", list(SETTINGS_WRONG_TYPES))
def test_driver_settings_of_the_wrong_type(designs: Path, tmp_path: Path, case: str) -> None:
    """FINN's settings.json is read by the board too: its fields of the wrong type are one line."""
    keys, value, message = SETTINGS_WRONG_TYPES[case]
    pkg = _package(designs, tmp_path)
    path = pkg / "driver" / "settings.json"
    settings = json.loads(path.read_text())
    node = settings["driver_information"]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    path.write_text(json.dumps(settings))
    m = json.loads((pkg / "manifest.json").read_text())  # the checksums agree: only the types are wrong
    m["files"]["driver/settings.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (pkg / "manifest.json").write_text(json.dumps(m))
    for command in ("check", "bench"):
        r = board_cli(command, str(pkg), "--simulated-board", "--out" if command == "bench" else "--json",
                      *([str(tmp_path / "b")] if command == "bench" else []), timeout=300)  # fmt: skip
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "Traceback" not in out, out[-3000:]
        assert f"{path}: driver_information.{message}" in out, out[-3000:]
