"""The C CPU engine under cpu/: its own test targets, and bnnflow-cpu's command line.

`make -C cpu check` (every kernel set against a naive reference, reader errors,
threads), `sanitize` (ASan + UBSan), `cross-armhf` / `cross-aarch64` (the
NEON kernels under qemu, same output digest as x86) and a bounded `fuzz`
run here; each is skipped, with the reason, only where its tools are missing.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import cpu_reference
import numpy as np
import pytest
from helpers import SHARED_DATA, make_cpu, need_mnist, unavailable

CPU = Path(__file__).resolve().parents[1] / "cpu"
# Both modules run make targets in cpu/build that share objects (the cross builds, the
# sanitizer and fuzz builds): under pytest-xdist they run on one worker, one after the other.
pytestmark = pytest.mark.xdist_group("cpu-make")
BUILD = CPU / "build"
CLI = BUILD / "bnnflow-cpu"
MAKE_MODEL = BUILD / "make-model"


def _make(*targets: str, timeout: int = 900) -> str:
    return make_cpu(*targets, timeout=timeout)


def _compiles(compiler: str, *flags: str, tmp: Path) -> bool:
    """Whether compiler builds and links a trivial C program with these flags."""
    if not shutil.which(compiler):
        return False
    src = tmp / "probe.c"
    src.write_text(
        "#include <stdint.h>\n#include <stddef.h>\n"
        + (
            "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n"
            if "-fsanitize=fuzzer" in " ".join(flags)
            else "int main(void) { return 0; }\n"
        )
    )
    proc = subprocess.run(
        [compiler, *flags, str(src), "-o", str(tmp / "probe")], capture_output=True, timeout=120
    )
    return proc.returncode == 0


def _need(*tools: str, reason: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        unavailable(f"{', '.join(missing)} not installed: {reason}")


@pytest.fixture(scope="module")
def built() -> None:
    _need("make", "cc", reason="the C engine cannot be built")
    _make("all")


@pytest.fixture(scope="module")
def check_output(built: None) -> str:
    return _make("check")


def test_check_every_kernel_set(check_output: str) -> None:
    assert "check: all tests passed" in check_output
    # The kernel sets this CPU has all ran against the naive reference.
    assert " 0 failed" in check_output and "digest:" in check_output


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


@pytest.mark.parametrize(
    "kernel_set, flags",
    [("popcnt", {"popcnt"}), ("avx2", {"avx2", "popcnt"}), ("avx512", {"avx512bw", "avx512_vpopcntdq"})],
)
def test_x86_kernel_set_tested(check_output: str, kernel_set: str, flags: set[str]) -> None:
    """Each x86 kernel set ran against the naive reference, or the CPU lacks it and the engine
    does not offer it (a CPU without AVX-512, such as AMD Zen 3, cannot run those kernels at all)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"not an x86-64 machine: {kernel_set} kernels not tested here")
    available = next(x for x in check_output.splitlines() if "(available:" in x)
    offered = available.split("available:")[1].strip(" )").split()
    if flags - _cpu_flags():
        assert kernel_set not in offered, f"{kernel_set} offered on a CPU without {flags - _cpu_flags()}"
        return
    assert kernel_set in offered, available
    assert f"(kernels in use: {kernel_set})" in check_output


def test_sanitize(built: None, tmp_path: Path) -> None:
    if not _compiles("cc", "-fsanitize=address,undefined", tmp=tmp_path):
        unavailable(
            "cc cannot link -fsanitize=address,undefined (gcc, libc6-dev): sanitizer run not possible"
        )
    assert "sanitize: all tests passed" in _make("sanitize")


def test_thread_sanitizer_on_the_worker_pool(built: None, tmp_path: Path) -> None:
    if not _compiles("cc", "-fsanitize=thread", tmp=tmp_path):
        unavailable("cc cannot link -fsanitize=thread (gcc, libc6-dev): ThreadSanitizer run not possible")
    assert "tsan: all tests passed" in _make("tsan")


def test_cross_armhf_neon_under_qemu(built: None) -> None:
    _need(
        "arm-linux-gnueabihf-gcc", reason="gcc-arm-linux-gnueabihf not installed: ARMv7 NEON path not tested"
    )
    _need("qemu-arm", reason="qemu-user not installed: ARMv7 NEON path not tested")
    out = _make("cross-armhf")
    assert "kernels in use: neon" in out and "kernels in use: scalar" in out
    assert "cross-armhf: all tests passed" in out


def test_cross_aarch64_neon_under_qemu(built: None) -> None:
    _need("aarch64-linux-gnu-gcc", reason="gcc-aarch64-linux-gnu not installed: AArch64 NEON path not tested")
    _need("qemu-aarch64", reason="qemu-user not installed: AArch64 NEON path not tested")
    out = _make("cross-aarch64")
    assert "kernels in use: neon" in out
    assert "cross-aarch64: all tests passed" in out


def test_fuzz_model_reader(built: None, tmp_path: Path) -> None:
    if not _compiles("clang", "-fsanitize=fuzzer,address,undefined", tmp=tmp_path):
        unavailable(
            "clang cannot link -fsanitize=fuzzer (clang, libfuzzer-14-dev, libclang-rt-14-dev): "
            "model reader not fuzzed"
        )
    out = _make("fuzz", "FUZZ_SECONDS=20")
    assert "fuzz: no crash" in out


# --- bnnflow-cpu ---------------------------------------------------------------------------------


def _cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _model(tmp: Path, arch: str, seed: int = 1) -> Path:
    path = tmp / f"{arch}.bnn"
    subprocess.run([str(MAKE_MODEL), arch, str(path), "--seed", str(seed)], check=True, timeout=60)
    return path


def _idx_images(path: Path, images: np.ndarray) -> Path:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 0x803, n, rows, cols) + images.astype(np.uint8).tobytes())
    return path


def _idx_labels(path: Path, labels: np.ndarray) -> Path:
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())
    return path


def test_info_describes_the_model(built: None, tmp_path: Path) -> None:
    proc = _cli("info", _model(tmp_path, "tfc"))
    assert proc.returncode == 0, proc.stderr
    assert "1x28x28 uint8, mnist" in proc.stdout
    assert "59,008 binary + 0 8-bit per image" in proc.stdout
    assert proc.stdout.count("MVAU") == 4 and "LABEL_SELECT" in proc.stdout
    assert "kernels" in proc.stdout


def _window_columns(la: Any) -> tuple[str, str, str]:
    """kernel, stride and pad as ``bnnflow-cpu info`` should print them, from the Python reader."""
    if la.kind.name not in ("MVAU", "MAXPOOL"):
        return ("-", "-", "-")
    pad = ",".join(map(str, la.pad)) if any(la.pad) else "-"
    return (f"{la.kernel}x{la.kernel_w}", f"{la.stride}x{la.stride_w}", pad)


WINDOW_FIELDS = ("kernel", "kernel_w", "stride", "stride_w", "pad")


def test_info_shows_each_window(built: None) -> None:
    """Non-square windows, strides of 2 and padding: bnnflow-cpu info, the Python binding and
    the Python reader (``bnnflow cpu info``) all give each layer's window as the file has it."""
    from bnnflow.bnncpu import modelfile as mf
    from bnnflow.bnncpu.engine import CpuEngine

    rows = {}
    for name in ("conv1d", "lenet"):
        path = CPU / "tests" / "corpus" / f"{name}-finn.bnn"
        proc = _cli("info", path)
        assert proc.returncode == 0, proc.stderr
        table = [line.split() for line in proc.stdout.splitlines() if line[:3].strip().isdigit()]
        layers = mf.read_model(path).layers
        assert [(r[1], r[6], r[7], r[8]) for r in table] == [
            (la.kind.name, *_window_columns(la)) for la in layers
        ]
        bound = CpuEngine(path).layers
        assert [tuple(getattr(b, f) for f in WINDOW_FIELDS) for b in bound] == [
            tuple(getattr(la, f) for f in WINDOW_FIELDS) for la in layers
        ]
        rows[name] = [tuple(r[6:9]) for r in table]
    # the (1, 5) and (1, 3) convolutions padded left and right, the (1, 2) max-pool
    assert rows["conv1d"][1:4] == [("1x5", "1x1", "0,2,0,2"), ("1x2", "1x2", "-"), ("1x3", "1x2", "0,1,0,1")]
    # the padded 5x5 8-bit convolution, then a 3x3 one with stride 2
    assert rows["lenet"][1:4] == [("5x5", "1x1", "2,2,2,2"), ("2x2", "2x2", "-"), ("3x3", "2x2", "-")]
    assert rows["lenet"][0] == ("-", "-", "-")
    described = mf.read_model(CPU / "tests" / "corpus" / "conv1d-finn.bnn").describe()
    assert "kernel 1x5 stride 1x1 pad 0,2,0,2" in described and "kernel 1x2 stride 1x2" in described


def test_run_idx_writes_classes_and_scores(built: None, tmp_path: Path) -> None:
    model = _model(tmp_path, "tfc")
    rng = np.random.default_rng(0)
    images = _idx_images(tmp_path / "images.idx", rng.integers(0, 256, (50, 28, 28)))
    labels = rng.integers(0, 10, 50)
    _idx_labels(tmp_path / "labels.idx", labels)
    proc = _cli(
        "run", model, images, "--labels", tmp_path / "labels.idx", "--threads", "2",
        "--classes-out", tmp_path / "classes.bin", "--scores-out", tmp_path / "scores.bin",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    printed = np.array([int(line.split("\t")[1]) for line in lines[:-1]])
    classes = np.fromfile(tmp_path / "classes.bin", dtype="<i4")
    scores = np.fromfile(tmp_path / "scores.bin", dtype="<i4").reshape(50, 10)
    assert len(printed) == 50 and (printed == classes).all()
    # The class is the lowest index of the largest score (numpy's argmax rule too).
    assert (scores.argmax(axis=1) == classes).all()
    correct = int((classes == labels).sum())
    assert f"accuracy {100 * correct / 50:.2f}% ({correct}/50)" in lines[-1]
    assert not list(tmp_path.glob("*.tmp.*"))

    # The same images as raw uint8, one thread, --limit: the same classes.
    raw = tmp_path / "images.raw"
    raw.write_bytes((tmp_path / "images.idx").read_bytes()[16:])
    proc = _cli("run", model, raw, "--limit", "20", "--threads", "1", "--classes-out", tmp_path / "c20.bin")
    assert proc.returncode == 0, proc.stderr
    assert "20 images (raw uint8)" in proc.stdout
    assert (np.fromfile(tmp_path / "c20.bin", dtype="<i4") == classes[:20]).all()


def test_run_cifar10_batch_takes_labels_from_records(built: None, tmp_path: Path) -> None:
    model = _model(tmp_path, "cnv")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 6).astype(np.uint8)
    pixels = rng.integers(0, 256, (6, 3072)).astype(np.uint8)
    batch = tmp_path / "data_batch.bin"
    batch.write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
    proc = _cli("run", model, batch, "--quiet", "--classes-out", tmp_path / "classes.bin")
    assert proc.returncode == 0, proc.stderr
    classes = np.fromfile(tmp_path / "classes.bin", dtype="<i4")
    correct = int((classes == labels).sum())
    assert "6 images (CIFAR-10 binary)" in proc.stdout and f"({correct}/6)" in proc.stdout
    # The records' pixels as raw images give the same classes.
    raw = tmp_path / "pixels.raw"
    raw.write_bytes(pixels.tobytes())
    assert _cli("run", model, raw, "--quiet", "--classes-out", tmp_path / "raw.bin").returncode == 0
    assert (np.fromfile(tmp_path / "raw.bin", dtype="<i4") == classes).all()


def test_run_real_mnist_test_set(built: None, tmp_path: Path) -> None:
    need_mnist()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((SHARED_DATA / "mnist" / f"{name}.gz").read_bytes()))
    model = _model(tmp_path, "tfc")
    proc = _cli(
        "run", model, tmp_path / "t10k-images-idx3-ubyte", "--labels", tmp_path / "t10k-labels-idx1-ubyte",
        "--quiet", "--classes-out", tmp_path / "classes.bin",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    classes = np.fromfile(tmp_path / "classes.bin", dtype="<i4")
    labels = np.frombuffer((tmp_path / "t10k-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    assert len(classes) == 10000
    # The IDX reader's images, as the numpy interpreter of the file classifies them (the first
    # 500: it is slow); the accuracy printed is that of the classes written.
    pixels = np.frombuffer((tmp_path / "t10k-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    want, _ = cpu_reference.run(cpu_reference.load(model), pixels.reshape(10000, 1, 28, 28)[:500])
    assert (classes[:500] == want).all()
    correct = int((classes == labels).sum())
    assert "10000 images (MNIST IDX)" in proc.stdout
    assert f"accuracy {correct / 100:.2f}% ({correct}/10000)" in proc.stdout


def test_bench_json(built: None, tmp_path: Path) -> None:
    proc = _cli(
        "bench", _model(tmp_path, "tfc"), "--runs", "1000", "--batch", "256", "--threads", "2", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["binary_macs"] == 59008 and result["runs"] == 1000 and result["batch"] == 256
    lat = result["latency_us"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p99"]
    assert [t["threads"] for t in result["throughput"]] == [1, 2]


def test_bad_input_is_one_line(built: None, tmp_path: Path) -> None:
    tfc, cnv = _model(tmp_path, "tfc"), _model(tmp_path, "cnv")
    mnist = _idx_images(tmp_path / "mnist.idx", np.zeros((3, 28, 28)))

    line = _one_line_error(_cli("run", cnv, mnist))
    assert line == "bnnflow-cpu: images are 1x28x28 but the model expects 3x32x32 (cifar10)"

    gz = tmp_path / "images.gz"
    gz.write_bytes(gzip.compress(mnist.read_bytes()))
    assert "gunzip it first" in _one_line_error(_cli("run", tfc, gz))

    odd = tmp_path / "odd.raw"
    odd.write_bytes(bytes(785))
    assert "not an IDX file, a CIFAR-10 batch or whole 1x28x28 (mnist) images" in _one_line_error(
        _cli("run", tfc, odd)
    )

    labels = _idx_labels(tmp_path / "labels.idx", np.zeros(4))
    assert "4 labels for 3 images" in _one_line_error(_cli("run", tfc, mnist, "--labels", labels))
    assert "missing" in _one_line_error(_cli("run", tfc, tmp_path / "missing.idx"))
    assert "nowhere.bnn" in _one_line_error(_cli("info", tmp_path / "nowhere.bnn"))

    corrupt = tmp_path / "corrupt.bnn"
    data = bytearray(tfc.read_bytes())
    data[200] ^= 1
    corrupt.write_bytes(bytes(data))
    assert "checksum mismatch" in _one_line_error(_cli("info", corrupt))
    corrupt.write_bytes(bytes(data[:100]))
    assert "header says" in _one_line_error(_cli("info", corrupt))

    proc = _cli("run", tfc, mnist, "--frobnicate", "1")
    assert proc.returncode == 2 and "unknown option --frobnicate" in _one_line_error(proc)
    proc = _cli("bench", tfc, "--runs", "10")
    assert proc.returncode == 2 and "--runs needs a whole number from 1000" in _one_line_error(proc)
    assert _cli("frobnicate").returncode == 2

    # A results file that cannot be written: one line, and nothing left behind.
    line = _one_line_error(_cli("run", tfc, mnist, "--classes-out", tmp_path / "no" / "dir" / "c.bin"))
    assert "cannot write" in line
    assert not (tmp_path / "no").exists()


def test_non_regular_files_are_refused_at_once(built: None, tmp_path: Path) -> None:
    """A FIFO (no writer), a directory or a device as the model, the images or the labels: one
    line naming the path and what it is, at once (a FIFO used to wait forever, /dev/zero to be
    read up to the 2 GiB limit, a directory to ask for 2^63 bytes)."""
    tfc = _model(tmp_path, "tfc")
    raw = tmp_path / "images.raw"
    raw.write_bytes(bytes(3 * 784))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    others = {fifo: "a FIFO", tmp_path: "a directory", Path("/dev/zero"): "a character device"}
    for path, kind in others.items():
        if not os.access(path, os.R_OK):
            continue
        what = f"{path}: {kind}, not a regular file"
        assert _one_line_error(_cli("info", path, timeout=20)) == f"bnnflow-cpu: {what}"
        assert _one_line_error(_cli("run", path, raw, timeout=20)) == f"bnnflow-cpu: {what}"
        assert _one_line_error(_cli("run", tfc, path, timeout=20)) == f"bnnflow-cpu: images {what}"
        line = _one_line_error(_cli("run", tfc, raw, "--labels", path, timeout=20))
        assert line == f"bnnflow-cpu: labels {what}"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_results_files_get_the_umask_mode(built: None, tmp_path: Path, umask: int) -> None:
    """--classes-out/--scores-out are new files like any other (0666 less the umask), written
    through a temporary file and a rename, not left at a temporary file's 0600."""
    model = _model(tmp_path, "tfc")
    raw = tmp_path / "images.raw"
    raw.write_bytes(bytes(3 * 784))
    classes, scores = tmp_path / "classes.bin", tmp_path / "scores.bin"
    proc = subprocess.run(
        [str(CLI), "run", str(model), str(raw), "--quiet", "--classes-out", str(classes),
         "--scores-out", str(scores)],
        capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(umask),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for path in (classes, scores):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, f"{path.name}: {path.stat().st_mode:o}"
    assert classes.stat().st_size == 3 * 4 and scores.stat().st_size == 3 * 10 * 4
    assert {p.name for p in tmp_path.iterdir()} == {"classes.bin", "scores.bin", "images.raw", "tfc.bnn"}


def test_raw_images_that_start_like_idx_are_raw(built: None, tmp_path: Path) -> None:
    """The format comes from the file's size and the model, not from its first bytes alone: raw
    digits images (0..16) starting 0,0,8,3 or 0,0,8,1 are raw, classified as with --format raw
    and as the same pixels in an IDX file."""
    model = _model(tmp_path, "digits")
    rng = np.random.default_rng(5)
    for first in ([0, 0, 8, 3], [0, 0, 8, 1]):
        pixels = rng.integers(0, 17, (5, 8, 8)).astype(np.uint8)
        pixels.reshape(-1)[:4] = first
        raw = tmp_path / "digits.raw"
        raw.write_bytes(pixels.tobytes())
        idx = _idx_images(tmp_path / "digits.idx", pixels)
        classes = {}
        for name, args in {"auto": [raw], "raw": [raw, "--format", "raw"], "idx": [idx]}.items():
            out = tmp_path / f"{name}.bin"
            proc = _cli("run", model, *args, "--quiet", "--classes-out", out)
            assert proc.returncode == 0, proc.stderr
            assert f"5 images ({'MNIST IDX' if name == 'idx' else 'raw uint8'})" in proc.stdout
            classes[name] = np.fromfile(out, dtype="<i4")
        assert len(classes["auto"]) == 5
        assert (classes["auto"] == classes["raw"]).all() and (classes["auto"] == classes["idx"]).all()

    # One image whose first 16 bytes are an IDX header that declares exactly its 64 bytes (one
    # 16x3 image): taken for IDX, which --format raw overrides.
    header = np.array([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 16, 0, 0, 0, 3], dtype=np.uint8)
    one = tmp_path / "one.raw"
    one.write_bytes(header.tobytes() + bytes(48))
    line = _one_line_error(_cli("run", model, one))
    assert line == "bnnflow-cpu: images are 1x16x3 but the model expects 1x8x8 (digits)"
    proc = _cli("run", model, one, "--format", "raw")
    assert proc.returncode == 0 and "1 images (raw uint8)" in proc.stdout, proc.stderr


def test_forced_format(built: None, tmp_path: Path) -> None:
    """--format idx|cifar10|raw reads the file as that format, or refuses it in one line."""
    digits, tfc, cnv = _model(tmp_path, "digits"), _model(tmp_path, "tfc"), _model(tmp_path, "cnv")
    rng = np.random.default_rng(6)
    mnist = _idx_images(tmp_path / "mnist.idx", rng.integers(0, 256, (3, 28, 28)))
    labels = _idx_labels(tmp_path / "labels.idx", np.zeros(64 - 8))
    batch = tmp_path / "batch.bin"
    batch.write_bytes(bytes([3]) + bytes(3072) + bytes([7]) + bytes(range(256)) * 12)
    raw = tmp_path / "digits.raw"
    raw.write_bytes(bytes(2 * 64))

    for model, path, fmt, summary in [
        (tfc, mnist, "idx", "3 images (MNIST IDX)"),
        (cnv, batch, "cifar10", "2 images (CIFAR-10 binary)"),
        (digits, raw, "raw", "2 images (raw uint8)"),
        # Whole 1x8x8 images, whatever else the bytes could be.
        (digits, labels, "raw", "1 images (raw uint8)"),
    ]:
        proc = _cli("run", model, path, "--format", fmt, "--quiet")
        assert proc.returncode == 0 and summary in proc.stdout, proc.stderr
    assert "(0/2)" in _cli("run", cnv, batch, "--format", "cifar10", "--quiet").stdout

    records, cifar = "is not whole CIFAR-10 records (3,073 bytes each)", "3x32x32 (cifar10)"
    for model, path, fmt, message in [
        (digits, raw, "idx", f"images {raw}: not an IDX image file (no idx3-ubyte header)"),
        (digits, labels, "idx", f"images {labels}: an IDX label file (idx1-ubyte), not images"),
        (digits, raw, "cifar10", f"images {raw}: 128 bytes {records}"),
        (tfc, mnist, "cifar10", f"images {mnist}: 2368 bytes {records}"),
        (cnv, mnist, "raw", f"images {mnist}: 2368 bytes is not whole {cifar} images (3072 bytes each)"),
    ]:
        assert _one_line_error(_cli("run", model, path, "--format", fmt)) == f"bnnflow-cpu: {message}"
    line = _one_line_error(_cli("run", digits, batch, "--format", "cifar10"))
    assert line == "bnnflow-cpu: images are 3x32x32 (a CIFAR-10 batch) but the model expects 1x8x8 (digits)"
    bad = bytearray(batch.read_bytes())
    bad[3073] = 10
    batch.write_bytes(bytes(bad))
    line = _one_line_error(_cli("run", cnv, batch, "--format", "cifar10"))
    assert line == f"bnnflow-cpu: images {batch}: CIFAR-10 record 1 has label 10, not 0..9"
    proc = _cli("run", digits, raw, "--format", "png")
    assert proc.returncode == 2 and "--format needs idx, cifar10 or raw, not 'png'" in _one_line_error(proc)


def test_model_errors_name_the_path_once(built: None, tmp_path: Path) -> None:
    """The library's message starts with the model's path; bnnflow-cpu prints it as it is."""
    tfc = _model(tmp_path, "tfc")
    raw = tmp_path / "images.raw"
    raw.write_bytes(bytes(784))
    bad = tmp_path / "bad.bnn"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    short = tmp_path / "short.bnn"
    short.write_bytes(tfc.read_bytes()[:-8])
    for path, message in [
        (tmp_path / "missing.bnn", "No such file or directory"),
        (bad, "not a bnncpu model file (no BNNCPU magic)"),
        (short, "header says"),
        (tmp_path, "a directory, not a regular file"),
    ]:
        for args in (["info", path], ["run", path, raw], ["bench", path]):
            line = _one_line_error(_cli(*args, timeout=60))
            assert line.startswith(f"bnnflow-cpu: {path}: ") and message in line, line
            assert line.count(str(path)) == 1, line
