"""bnnflow-board on the simulated board: the real pynq 4.0 and finn-plus-driver over a software device.

FINN executes the compiled design in the compiler's environment (C simulation
of the generated HLS where ../shared/hls-sim is found); the FPGA's classes
must equal the package's golden outputs on every test image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import HLS_SIM, HOST_PYTHON, board_cli, unavailable

from bnnflow_board.boards import get_board
from bnnflow_board.errors import BoardError
from bnnflow_board.package import load_package


def _bench_ok(pkg: Path, out: Path, sim_cache: Path, *extra: str) -> dict:
    r = board_cli("bench", str(pkg), "--simulated-board", "--out", str(out), "--batch-sizes", "1,8",
                  "--warmup", "1", "--repeats", "2", "--sim-cache", str(sim_cache), *extra)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert report["simulated_board"] is True and report["agreement"] == "100%"
    assert report["fpga"]["first_mismatch"] is None
    assert report["fpga"]["agree_classes"] == report["testset"]["n"] == 24
    assert "(simulated board)" in r.stdout and "agreement with the golden outputs: 100%" in r.stdout
    assert (out / "bench.txt").read_text().strip() in r.stdout
    assert (out / "bench.png").stat().st_size > 0 and report["chart"] == "bench.png"
    rows = {(t["engine"], t["mode"], t["batch"]) for t in report["timing"]}
    fpga_rows = {("fpga", m, b) for m in ("accelerator", "end-to-end") for b in (1, 8)}
    assert rows == fpga_rows | {("cpu", "1 thread", 1), ("cpu", "all cores", 8)}
    assert all(
        t["repeats"] == 2 and t["median_ms"] > 0 and t["p99_ms"] >= t["median_ms"] for t in report["timing"]
    )
    assert report["accelerator_clock_mhz"] == {"requested": 100.0, "achieved": 100.0, "from": "hwh clk_wiz_0"}
    # the package's CPU engine, built here from its sources, agrees with the golden outputs too
    cpu = report["cpu"]
    assert cpu["available"] and cpu["first_mismatch"] is None
    assert cpu["agree_classes"] == cpu["agree_scores"] == report["testset"]["n"]
    # and its own C loop (bnnflow-cpu bench, built from the package) timed the same model file
    loop = cpu["c_loop"]
    assert "why" not in loop, loop
    assert loop["kernels"] in {"scalar", "popcnt", "avx2", "avx512", "neon"} and loop["runs"] >= 1000
    assert 0 < loop["latency_us"]["min"] <= loop["latency_us"]["median"] <= loop["latency_us"]["p99"]
    assert [x["threads"] for x in loop["throughput"]][0] == 1
    assert all(x["images_per_s"] > 0 for x in loop["throughput"])
    assert f"cpu    C loop ({loop['kernels']} kernels, bnnflow-cpu bench, no Python)" in r.stdout
    return report


def test_bench_digits_on_the_simulated_board(
    made: dict, designs: Path, sim_cache: Path, tmp_path: Path
) -> None:
    earlier = tmp_path / "bench"  # an earlier report's folder is replaced, nothing of it kept
    earlier.mkdir()
    (earlier / "bench.json").write_text("{}")
    (earlier / "stale.txt").write_text("from an earlier bench")
    report = _bench_ok(designs / "digits-pkg", earlier, sim_cache)
    assert not (earlier / "stale.txt").exists() and not list(tmp_path.glob(".bench-*"))
    expect = "cppsim" if (HLS_SIM / "env.sh").is_file() else "python"
    assert report["simulated_board_fpga"]["exec"] == expect
    assert report["simulated_board_fpga"]["design"] == made["digits"]
    manifest = json.loads((designs / "digits-pkg" / "manifest.json").read_text())
    assert report["fpga"]["accuracy"] == pytest.approx(manifest["testset"]["golden_accuracy"])
    assert (tmp_path / "bench" / "simulated-bitfile" / "finn-accel.hwh").is_file()


def test_bench_tfc_on_the_simulated_board(made: dict, designs: Path, sim_cache: Path, tmp_path: Path) -> None:
    if "tfc" not in made:
        unavailable("MNIST files not found in ../shared/data/mnist")
    # FINN's Python execution of the hardware layers: the C simulation of TFC's HLS is
    # what the digits test runs, at a minute of compilation per design
    report = _bench_ok(designs / "tfc-pkg", tmp_path / "bench", sim_cache, "--sim-exec", "python")
    assert report["simulated_board_fpga"]["exec"] == "python" and report["testset"]["dataset"] == "mnist"


def test_tampered_package_fails_its_checksum(designs: Path, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(designs / "digits-pkg", pkg)
    images = pkg / "testset" / "images.u8"
    data = bytearray(images.read_bytes())
    data[5] ^= 0x01
    images.write_bytes(bytes(data))
    r = board_cli("check", str(pkg), "--simulated-board")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "bnnflow-board: error: check failed: checksums: testset/images.u8 does not match its sha256 "
        "(changed after packaging)"
    ]
    r = board_cli("bench", str(pkg), "--simulated-board")  # the bench checks first and stops
    assert r.returncode == 1 and "images.u8 does not match" in r.stderr and not (pkg / "bench").exists()
    (pkg / "model.bnn").unlink()
    r = board_cli("check", str(pkg), "--simulated-board", "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["checksums"]["status"] == "FAIL" and "model.bnn is missing" in checks["checksums"]["detail"]


def test_bitfile_for_the_other_board(designs: Path) -> None:
    r = board_cli("check", str(designs / "digits-pkg"), "--simulated-board", "Ultra96", "--json")
    assert r.returncode == 1 and "check failed: board" in r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["board"]["detail"] == (
        "package for Pynq-Z2 (xc7z020clg400-1); running on Ultra96 (simulated board)"
    )
    assert checks["bitfile on this board"]["status"] == "FAIL"
    assert (
        "xc7z020 is a zynq-7000; this board is a zynq-ultrascale+"
        in checks["bitfile on this board"]["detail"]
    )


def test_vivado_style_package_and_failed_timing(designs: Path) -> None:
    """A package whose bitfile came from a (stand-in) Vivado build: kept as is, its timing summary read."""
    r = board_cli("check", str(designs / "digits-vivado-pkg"), "--simulated-board", "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["bitfile"]["status"] == "ok" and checks["DMA names"]["status"] == "ok"
    assert checks["made by"]["status"] == "note"
    assert checks["timing"]["status"] == "FAIL" and checks["timing"]["detail"].startswith("WNS -0.412 ns")
    assert r.returncode == 1


def test_no_bitfile_on_a_real_board(designs: Path) -> None:
    r = board_cli("check", str(designs / "digits-pkg"), "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert r.returncode == 1 and checks["bitfile"]["status"] == "FAIL"
    assert "Vivado was not run" in checks["bitfile"]["detail"]
    # and a simulated-board bitfile is refused off the simulated board
    r = board_cli("check", str(designs / "digits-vivado-pkg"), "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["made by"]["status"] == "FAIL" and "needs Vivado's bitfile" in checks["made by"]["detail"]


def test_a_design_that_never_finishes_times_out(designs: Path, tmp_path: Path) -> None:
    args = [
        "--sim-fault",
        "never-done",
        "--timeout",
        "1",
        "--batch-sizes",
        "1,8",
        "--out",
        str(tmp_path / "b"),
    ]
    r = board_cli("bench", str(designs / "digits-pkg"), "--simulated-board", *args, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "bnnflow-board: error: the FPGA did not finish a batch of 8 "
    )
    # --timeout 1 plus 1 s per image on the simulated board (deadline.py, docs/board.md)
    assert "a batch of 8 within 9 s: odma0 still busy (control 0x01: ap_start=1, ap_idle=0)" in lines[0]
    assert not (tmp_path / "b").exists()


@pytest.fixture
def simulated_runner(designs: Path, made: dict, sim_cache: Path, tmp_path: Path):
    """An FpgaRunner over the simulated board, in this process (FINN's Python execution)."""
    from bnnflow_board.overlay import FpgaRunner
    from bnnflow_board.session import simulated_bitfile
    from bnnflow_board.simulated.device import SimulatedBoardDevice
    from bnnflow_board.simulated.fabric import Fabric

    pkg = load_package(designs / "digits-pkg")
    fabric = Fabric(made["digits"], "Pynq-Z2", HOST_PYTHON, "python", sim_cache, tmp_path / "fabric.log")
    device = SimulatedBoardDevice(get_board("Pynq-Z2"), fabric)
    try:
        yield pkg, device, FpgaRunner(simulated_bitfile(pkg, tmp_path / "bit"), pkg.driver, device=device)
    finally:
        device.close()


def test_images_of_the_wrong_shape_or_dtype(simulated_runner) -> None:
    pkg, device, runner = simulated_runner
    ts = pkg.testset()
    with pytest.raises(BoardError, match=r"must be a uint8 numpy array \(raw pixels\), got float32"):
        runner.classify(ts.images.astype(np.float32))
    with pytest.raises(BoardError, match=r"takes images of shape \(N, 1, 8, 8\), got \(24, 8, 8\)"):
        runner.classify(ts.images[:, 0])
    with pytest.raises(BoardError, match="uint8 numpy array"):
        runner.classify(ts.images.tolist())
    # the good ones still run, one by one and as a batch
    one = [int(runner.classify(ts.images[i : i + 1])[0]) for i in range(3)]
    assert one == runner.classify(ts.images[:3]).tolist() == ts.golden_classes[:3].tolist()


def test_the_simulated_caches_need_flush_and_invalidate(simulated_runner) -> None:
    """Cacheable DMA buffers: what the CPU wrote reaches DDR only by flush, and back only by invalidate."""
    pkg, device, runner = simulated_runner
    ts = pkg.testset()
    ov = runner.overlay
    runner.load(ts.images[:2])
    ov.ibuf_packed_device[0][:] = 0  # written by the CPU after the flush: the DMA must not see it
    runner.run_loaded()
    ov.obuf_packed_device[0][:] = 255
    assert ov.obuf_packed_device[0].tolist() == [[[255]], [[255]]]  # stale CPU view until invalidated
    ov.obuf_packed_device[0].invalidate()
    assert ov.obuf_packed_device[0].reshape(-1).tolist() == ts.golden_classes[:2].tolist()
    assert device.faults == []


def _refused(r, what: str) -> None:
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("bnnflow-board: error: refusing to replace ")
        and what in lines[0]
    )


def test_bench_out_keeps_a_folder_that_holds_no_report(designs: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = board_cli("bench", str(designs / "digits-pkg"), "--simulated-board", "--sim-exec", "python",
                  "--batch-sizes", "1", "--repeats", "1", "--out", str(out))  # fmt: skip
    _refused(r, "it is not empty and holds no bench.json")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".*"))


def test_bench_out_refuses_the_package_itself(designs: Path, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(designs / "digits-pkg", pkg)
    before = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*"))
    r = board_cli("bench", str(pkg), "--simulated-board", "--sim-exec", "python",
                  "--batch-sizes", "1", "--repeats", "1", "--out", str(pkg))  # fmt: skip
    _refused(r, f"{pkg}: it is not empty and holds no bench.json")
    assert sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*")) == before
    assert board_cli("check", str(pkg), "--simulated-board").returncode == 0


def test_bench_out_refuses_a_file(designs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text("not a folder")
    r = board_cli("bench", str(designs / "digits-pkg"), "--simulated-board", "--sim-exec", "python",
                  "--batch-sizes", "1", "--repeats", "1", "--out", str(out))  # fmt: skip
    _refused(r, "it is not a folder")
    assert out.read_text() == "not a folder"
    assert not list(tmp_path.glob(".bench-*")) and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("command", ["bench", "update-weights"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_timeout_must_be_finite_and_positive(designs: Path, command: str, value: str) -> None:
    pkg = str(designs / "digits-pkg")
    args = [command, pkg, *([pkg] if command == "update-weights" else []), "--simulated-board"]
    r = board_cli(*args, f"--timeout={value}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bnnflow-board {command}: error: argument --timeout: ")
    assert "finite number of seconds above 0" in lines[0] or "is a number of seconds" in lines[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0])
def test_timeout_is_checked_from_python_too(designs: Path, tmp_path: Path, value: float) -> None:
    from bnnflow_board.bench import BenchOptions, bench
    from bnnflow_board.session import SimulatedBoard
    from bnnflow_board.weights import update_weights

    with pytest.raises(BoardError, match="the timeout must be a finite number of seconds above 0"):
        bench(designs / "digits-pkg", BenchOptions(timeout_s=value, out=tmp_path / "b"), SimulatedBoard())
    with pytest.raises(BoardError, match="the timeout must be a finite number of seconds above 0"):
        update_weights(designs / "digits-pkg", designs / "digits-pkg", SimulatedBoard(), timeout_s=value)
    assert not (tmp_path / "b").exists()
