"""The C engine on real compiled designs: identical to FINN, on every kernel set and under qemu.

The designs are the session's compile folders (tests/conftest.py: the digits
MLP, TFC and CNV, with some BatchNorm scales negative). FINN's Python
execution of each hardware-layer graph gives the classes and scores every
engine must reproduce exactly: the Python binding, the command-line tool once
per x86 kernel set this CPU has (BNNCPU_DISABLE), and the tool cross-built
for the boards' cores (Cortex-A9 NEON, Cortex-A53) run under qemu-user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, finn_reference, make_cpu, unavailable

from bnnflow.cpu import MODEL_FILE, CpuEngine, kernel_name
from bnnflow.data import load_arrays
from bnnflow.errors import BnnflowError

ROOT = Path(__file__).resolve().parents[1]
CPU = ROOT / "cpu"
# Both modules run make targets in cpu/build that share objects (the cross builds, the
# sanitizer and fuzz builds): under pytest-xdist they run on one worker, one after the other.
pytestmark = pytest.mark.xdist_group("cpu-make")
CLI = CPU / "build" / "bnnflow-cpu"
SRC = ROOT / "src"
N_IMAGES = {"digits": 360, "mnist": 300, "cifar10": 200}
# BNNCPU_DISABLE settings that leave each x86 kernel set, best first.
X86_SETTINGS = ("", "avx512", "avx512,avx2", "all")
CROSS = {
    "armhf": ("arm-linux-gnueabihf-gcc", ["qemu-arm", "-cpu", "cortex-a9", "-L", "/usr/arm-linux-gnueabihf"]),
    "aarch64": (
        "aarch64-linux-gnu-gcc",
        ["qemu-aarch64", "-cpu", "cortex-a53", "-L", "/usr/aarch64-linux-gnu"],
    ),
}


def _design(request: pytest.FixtureRequest, name: str) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """(compile dir, images, FINN's classes, FINN's scores)."""
    compile_dir = request.getfixturevalue(f"{name}_dir")
    dataset = {"digits": "digits", "tfc": "mnist", "cnv": "cifar10"}[name]
    data_dir = {"digits": None, "tfc": SHARED_DATA, "cnv": request.getfixturevalue("cifar10_dir")}[name]
    images, _ = load_arrays(dataset, "test", data_dir=data_dir, limit=N_IMAGES[dataset])
    classes, scores = finn_reference(compile_dir, images)
    return compile_dir, np.asarray(images), classes, scores


@pytest.fixture(scope="module", params=["digits", "tfc", "cnv"])
def design(request: pytest.FixtureRequest) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    return _design(request, request.param)


@pytest.fixture(scope="module")
def built() -> None:
    make_cpu("all", timeout=900)


def _first_difference(classes, scores, want_classes, want_scores) -> str:
    bad = np.nonzero((classes != want_classes) | (scores != want_scores).any(axis=1))[0]
    if bad.size == 0:
        return ""
    i = bad[0]
    return (
        f"{bad.size} images differ, first {i}: engine {classes[i]} {scores[i]}, "
        f"FINN {want_classes[i]} {want_scores[i]}"
    )


def test_binding_matches_finn(design) -> None:
    compile_dir, images, want_classes, want_scores = design
    with CpuEngine(compile_dir / MODEL_FILE) as engine:
        classes, scores = engine.run(images)
        assert not _first_difference(classes, scores, want_classes, want_scores), kernel_name()
        # Threads split the batch; nothing else changes.
        classes2, scores2 = engine.run(images, threads=3)
        assert np.array_equal(classes, classes2) and np.array_equal(scores, scores2)
        assert np.array_equal(engine.classify(images[:7], threads=0), want_classes[:7])
    # A real model, not a degenerate one: many classes and score values are compared.
    assert len(np.unique(want_classes)) >= 4 and len(np.unique(want_scores)) >= 10


def _cli_outputs(
    runner: list[str], cli: Path, model: Path, images: np.ndarray, tmp: Path, disable: str
) -> tuple[str, np.ndarray, np.ndarray]:
    """(kernel set, classes, scores) of bnnflow-cpu run on raw images."""
    raw = tmp / "images.u8"
    raw.write_bytes(np.ascontiguousarray(images).tobytes())
    env = dict(os.environ, BNNCPU_DISABLE=disable)
    info = subprocess.run([*runner, str(cli), "info", str(model)], capture_output=True, text=True, env=env)
    assert info.returncode == 0, info.stderr
    kernels = next(line.split()[1] for line in info.stdout.splitlines() if line.startswith("kernels"))
    c_out, s_out = tmp / f"classes-{kernels}.i32", tmp / f"scores-{kernels}.i32"
    cmd = [*runner, str(cli), "run", str(model), str(raw), "--quiet", "--threads", "2"]
    proc = subprocess.run(
        [*cmd, "--classes-out", str(c_out), "--scores-out", str(s_out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    classes = np.fromfile(c_out, dtype="<i4")
    return kernels, classes, np.fromfile(s_out, dtype="<i4").reshape(len(classes), -1)


def test_every_x86_kernel_set_matches_finn(design, built: None, tmp_path: Path) -> None:
    compile_dir, images, want_classes, want_scores = design
    seen = []
    for disable in X86_SETTINGS:
        kernels, classes, scores = _cli_outputs([], CLI, compile_dir / MODEL_FILE, images, tmp_path, disable)
        if kernels in seen:  # this CPU lacks the set: the next one was chosen again
            continue
        seen.append(kernels)
        assert not _first_difference(classes, scores, want_classes, want_scores), kernels
    assert "scalar" in seen and len(seen) >= 2, seen


@pytest.mark.parametrize("arch", sorted(CROSS))
def test_board_cores_under_qemu_match_finn(design, built: None, tmp_path: Path, arch: str) -> None:
    """The engine built for the Pynq-Z2's Cortex-A9 (NEON) and the Ultra96's Cortex-A53, under qemu-user."""
    compiler, runner = CROSS[arch]
    package = {"armhf": "gcc-arm-linux-gnueabihf", "aarch64": "gcc-aarch64-linux-gnu"}[arch]
    if not shutil.which(compiler):
        unavailable(f"{package} not installed: the {arch} engine is not tested on real models")
    if not shutil.which(runner[0]):
        unavailable(f"qemu-user not installed: the {arch} engine is not tested on real models")
    make_cpu(f"cli-{arch}", timeout=900)
    compile_dir, images, want_classes, want_scores = design
    cli = CPU / "build" / arch / "bnnflow-cpu"
    for disable, expected in (("", "neon"), ("all", "scalar")):
        kernels, classes, scores = _cli_outputs(
            runner, cli, compile_dir / MODEL_FILE, images, tmp_path, disable
        )
        assert kernels == expected
        assert not _first_difference(classes, scores, want_classes, want_scores), f"{arch} {kernels}"


# --- the binding's answers to bad input --------------------------------------------------------


def test_binding_rejects_bad_images(digits_dir: Path) -> None:
    images, _ = load_arrays("digits", "test", limit=5)
    with CpuEngine(digits_dir / MODEL_FILE) as engine:
        assert engine.input_shape == (1, 8, 8) and engine.n_classes == 10 and engine.dataset == "digits"
        one = engine.classify(images[0])  # one image, no batch axis
        assert one.shape == (1,) and one[0] == engine.classify(images)[0]
        assert np.array_equal(engine.classify(images[:, 0]), engine.classify(images))  # (N, H, W)
        assert engine.run(images[:0])[1].shape == (0, 10)
        with pytest.raises(TypeError, match="uint8"):
            engine.classify(images.astype(np.float32))
        with pytest.raises(TypeError, match="numpy array"):
            engine.classify(images.tolist())
        with pytest.raises(ValueError, match=r"takes \(N, 1, 8, 8\).*digits"):
            engine.classify(np.zeros((2, 3, 32, 32), np.uint8))
        with pytest.raises(ValueError, match="threads"):
            engine.classify(images, threads=-1)
        assert engine.model_bytes > 0 and engine.context_bytes > 0 and engine.binary_macs > 0
        assert [layer.kind for layer in engine.layers] == [
            "THRESHOLD",
            "MVAU",
            "MVAU",
            "MVAU",
            "LABEL_SELECT",
        ]
    with pytest.raises(ValueError, match="closed"):
        engine.classify(images)


def test_binding_rejects_bad_model_files(digits_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BnnflowError, match="not found"):
        CpuEngine(tmp_path / "missing.bnn")
    data = bytearray((digits_dir / MODEL_FILE).read_bytes())
    data[200] ^= 0x10
    bad = tmp_path / "flipped.bnn"
    bad.write_bytes(bytes(data))
    with pytest.raises(BnnflowError, match="(?i)checksum") as info:
        CpuEngine(bad)
    assert "\n" not in str(info.value)
    (tmp_path / "short.bnn").write_bytes(bytes(data[:100]))
    with pytest.raises(BnnflowError, match="short.bnn"):
        CpuEngine(tmp_path / "short.bnn")


def test_kernel_set_follows_bnncpu_disable(digits_dir: Path) -> None:
    """The binding's library honours BNNCPU_DISABLE like the tool (read once, at first use)."""
    code = (
        "from bnnflow.cpu import CpuEngine, kernel_name; import numpy as np;"
        f"e = CpuEngine({str(digits_dir / MODEL_FILE)!r});"
        "print(kernel_name(), int(e.classify(np.zeros((1, 1, 8, 8), np.uint8))[0]))"
    )
    env = dict(os.environ, BNNCPU_DISABLE="all", PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "scalar"


def _bnnflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-m", "bnnflow", *args], capture_output=True, text=True, env=env)


def test_bnnflow_cpu_reports_accuracy_agreement_and_speed(digits_dir: Path) -> None:
    import json

    run = digits_dir.parent.parent
    proc = _bnnflow("cpu", str(run), "--finn", "40")  # the run folder: its only compile folder
    assert proc.returncode == 0, proc.stderr
    assert "agreement with FINN      40/40 classes, 40/40 score vectors" in proc.stdout
    report = json.loads((digits_dir / "cpu.json").read_text())
    assert (
        report["n_images"] == 360
        and report["finn_classes_agree"] == 40
        and report["first_difference"] is None
    )
    with CpuEngine(digits_dir / MODEL_FILE) as engine:
        images, labels = load_arrays("digits", "test")
        assert report["accuracy"] == np.mean(engine.classify(images) == labels)
    assert report["images_per_s"]["1 thread"] > 0 and report["latency_us"]["median"] > 0


def test_bnnflow_cpu_bad_input_is_one_line(digits_dir: Path, tmp_path: Path) -> None:
    for args, message in [
        (("cpu", str(tmp_path / "nowhere")), "not a folder"),
        (("cpu", str(tmp_path)), "neither a compile folder nor a run"),
        (("cpu", str(digits_dir.parent.parent), "--board", "Ultra96"), "no compile folder for Ultra96"),
        (("cpu", "run", str(digits_dir), "--finn", "-1"), "--finn must be 0 or more"),
    ]:
        proc = _bnnflow(*args)
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], proc.stderr
