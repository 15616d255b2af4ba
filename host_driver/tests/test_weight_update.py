"""``bnnflow-board update-weights`` on the simulated board: a retrained checkpoint written into the FPGA
of a design compiled with --runtime-weights, no new bitstream.

The simulated board keeps each runtime-writable layer's memory behind its AXI-lite port; what
finn-plus-driver writes there is decoded in the accelerator process and FINN executes the design
with it (never the CPU engine). The updated FPGA must equal the update's golden outputs on every
test image, and not the old ones on all: the weights really changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import HOST_PYTHON, board_cli

from bnnflow_board.boards import get_board
from bnnflow_board.errors import BoardError
from bnnflow_board.package import load_package


def _copy(designs: Path, tmp_path: Path, name: str = "rtw-pkg") -> Path:
    pkg = tmp_path / name
    shutil.copytree(designs / name, pkg)
    return pkg


def _one_error(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-3000:]
    return lines[0]


def test_update_weights_round_trip(designs: Path, sim_cache: Path, tmp_path: Path) -> None:
    """Package -> retrained checkpoint -> update package -> update-weights -> bench on the new weights."""
    pkg = _copy(designs, tmp_path)
    upd = designs / "rtw-update"
    manifest = json.loads((upd / "manifest.json").read_text())
    # entries wider than an AXI-lite word: the memory commits them on their last word
    assert max(la["layout"]["fold"] for la in manifest["runtime_weights"]["layers"]) == 4
    # FINN's Python execution of the hardware layers: C simulation of this design's HLS would add a
    # minute of compilation (docs/board.md shows that run)
    r = board_cli("update-weights", str(pkg), str(upd), "--simulated-board", "--sim-exec", "python",
                  "--sim-cache", str(sim_cache))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((pkg / "weights" / "active.json").read_text())
    report = record["report"]
    n = report["testset"]["n"]
    assert n == 100 and report["simulated_board"] is True and report["agreement"] == "100%"
    assert report["fpga"]["agree_new"] == n and report["fpga"]["first_mismatch"] is None
    # the old golden outputs no longer hold on every image: the FPGA computes with the new weights
    assert report["fpga"]["agree_old"] == n - manifest["testset"]["classes_changed"] < n
    assert report["cpu"]["agree_classes"] == report["cpu"]["agree_scores"] == n
    # every word written and read back; words changed as the update counted them against the compiled design
    rw = manifest["runtime_weights"]
    assert report["words"] == {
        "written": rw["words"],
        "changed": rw["changed_words"],
        "changed_vs_compiled": rw["changed_words"],
    }
    assert [la["changed_words"] for la in report["layers"]] == [la["changed_words"] for la in rw["layers"]]
    assert (
        "(simulated board) and read back: " in r.stdout
        and "agreement with the new golden outputs: 100%" in r.stdout
    )
    # the deploy folder records the update, a checked copy of it; nothing else changed
    active = pkg / record["path"]
    assert record["manifest_sha256"][:12] == active.name and (active / "runtime_weights").is_dir()
    assert not list((pkg / "weights").glob(".*"))
    r = board_cli("check", str(pkg), "--simulated-board", "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert r.returncode == 0 and checks["checksums"]["status"] == "ok"
    assert checks["weights"]["status"] == "ok" and active.name in checks["weights"]["detail"]

    # bench programs the FPGA again: finn-plus-driver writes the active weights, golden outputs the update's
    r = board_cli("bench", str(pkg), "--simulated-board", "--sim-exec", "python", "--batch-sizes", "1",
                  "--warmup", "0", "--repeats", "1", "--sim-cache", str(sim_cache),
                  "--out", str(tmp_path / "b"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert bench["weights"] == f"update {active.name}" and bench["agreement"] == "100%"
    assert bench["fpga"]["agree_classes"] == bench["cpu"]["agree_scores"] == n

    # a damaged active update is a failed check, and the bench refuses to run
    dat = sorted((active / "runtime_weights").glob("*MVAU*.dat"))[0]
    dat.write_text(dat.read_text().replace("0", "1", 1))
    r = board_cli("check", str(pkg), "--simulated-board", "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert r.returncode == 1 and checks["weights"]["status"] == "FAIL"
    assert f"{dat.name} does not match its sha256" in checks["weights"]["detail"]


def test_update_a_running_fpga(designs: Path, made: dict, sim_cache: Path, tmp_path: Path) -> None:
    """From Python, an application's own FpgaRunner: the FPGA is not programmed again, the weights change
    under it, and the accelerator process receives exactly the words that changed."""
    from bnnflow_board.overlay import FpgaRunner
    from bnnflow_board.session import SimulatedBoard, simulated_bitfile
    from bnnflow_board.simulated.device import SimulatedBoardDevice
    from bnnflow_board.simulated.fabric import Fabric
    from bnnflow_board.weights import update_weights

    pkg_dir = _copy(designs, tmp_path)
    pkg = load_package(pkg_dir)
    upd = designs / "rtw-update"
    fabric = Fabric(made["rtw"], "Pynq-Z2", HOST_PYTHON, "python", sim_cache, tmp_path / "fabric.log")
    device = SimulatedBoardDevice(get_board("Pynq-Z2"), fabric)
    try:
        runner = FpgaRunner(
            simulated_bitfile(pkg, tmp_path / "bit"),
            pkg.driver,
            device=device,
            runtime_weight_dir=pkg_dir / "driver" / "runtime_weights",
        )
        ts = pkg.testset()
        assert np.array_equal(runner.classify(ts.images), ts.golden_classes)
        assert device.downloads == 1
        report = update_weights(
            pkg_dir, upd, SimulatedBoard(), runner=runner, cpu=False, log=lambda _msg: None
        )
        assert device.downloads == 1  # not programmed again
        new = np.fromfile(upd / "testset" / "golden_classes.i32", dtype="<i4")
        assert np.array_equal(runner.classify(ts.images), new) and not np.array_equal(new, ts.golden_classes)
        assert report["fpga"]["agree_new"] == len(new) and report["cpu"] == {
            "available": False,
            "why": "skipped (--no-cpu)",
        }
        # the last memory write the accelerator took: the update's values, changed as the update counted
        rw = json.loads((upd / "manifest.json").read_text())["runtime_weights"]
        last = {p["node"]: p["changed_values"] for p in device.parameter_writes[-1]}
        assert last == {la["node"]: la["changed_values"] for la in rw["layers"]}
    finally:
        device.close()


def test_update_weights_refusals(designs: Path, sim_cache: Path, tmp_path: Path) -> None:
    pkg = _copy(designs, tmp_path)
    upd = designs / "rtw-update"

    # a tampered update package: one weight file changed after packaging
    bad = tmp_path / "bad-update"
    shutil.copytree(upd, bad)
    dat = sorted((bad / "runtime_weights").glob("*MVAU*.dat"))[0]
    words = dat.read_text().split()
    words[7] = f"{int(words[7], 16) ^ 1:08x}"
    dat.write_text("\n".join(words) + "\n")
    err = _one_error(board_cli("update-weights", str(pkg), str(bad), "--simulated-board"))
    assert err == (
        f"bnnflow-board: error: update package {bad}: runtime_weights/{dat.name} does not match its sha256 "
        "(changed after packaging)"
    )
    # the same network folded otherwise: the update does not fit its memories
    other = designs / "rtw-other-pkg"
    err = _one_error(board_cli("update-weights", str(other), str(upd), "--simulated-board"))
    theirs = json.loads((other / "manifest.json").read_text())["runtime_weights"]["layers"]
    ours = json.loads((upd / "manifest.json").read_text())["runtime_weights"]["layers"]
    a, b = next((a, b) for a, b in zip(ours, theirs, strict=True) if a["layout"] != b["layout"])
    key = next(k for k in ("pe", "simd") if a["layout"][k] != b["layout"][k])  # the folding
    assert err == (
        f"bnnflow-board: error: the update is for another design: {b['file']} {key} is "
        f"{a['layout'][key]} in the update, {b['layout'][key]} in this design"
    )
    assert not (other / "weights").exists()
    # golden outputs for other test images
    moved = tmp_path / "moved-update"
    shutil.copytree(upd, moved)
    m = json.loads((moved / "manifest.json").read_text())
    m["testset"]["images_sha256"] = "0" * 64
    (moved / "manifest.json").write_text(json.dumps(m))
    err = _one_error(board_cli("update-weights", str(pkg), str(moved), "--simulated-board"))
    assert "golden outputs are for other test images than this package's" in err
    # a design whose weights are fixed in the bitstream
    err = _one_error(board_cli("update-weights", str(designs / "digits-pkg"), str(upd), "--simulated-board"))
    assert "holds a design without runtime-writable weights" in err
    # the arguments the wrong way round
    err = _one_error(board_cli("update-weights", str(upd), str(pkg), "--simulated-board"))
    assert "is not a bnnflow deployment manifest" in err
    assert not (pkg / "weights").exists()

    # golden outputs that the updated FPGA does not give (re-signed, so only the bench can tell):
    # the mismatch is named and nothing is recorded
    wrong = tmp_path / "wrong-update"
    shutil.copytree(upd, wrong)
    golden = wrong / "testset" / "golden_classes.i32"
    classes = np.fromfile(golden, dtype="<i4")
    classes[3] = (classes[3] + 1) % 10
    golden.write_bytes(classes.astype("<i4").tobytes())
    m = json.loads((wrong / "manifest.json").read_text())
    m["files"]["testset/golden_classes.i32"] = hashlib.sha256(golden.read_bytes()).hexdigest()
    (wrong / "manifest.json").write_text(json.dumps(m))
    r = board_cli("update-weights", str(pkg), str(wrong), "--simulated-board", "--sim-exec", "python",
                  "--sim-cache", str(sim_cache), "--no-cpu", timeout=600)  # fmt: skip
    err = _one_error(r)
    assert err.startswith(
        "bnnflow-board: error: after the update the outputs differ from its golden outputs: "
    )
    assert f"image 3 (label {int(np.fromfile(pkg / 'testset' / 'labels.u8', dtype=np.uint8)[3])}): " in err
    assert err.endswith(f"{pkg} still records the compiled design's weights")
    assert not (pkg / "weights").exists()

    # a weight memory that does not hold what was written: the read-back names the word
    r = board_cli("update-weights", str(pkg), str(upd), "--simulated-board", "--sim-exec", "python",
                  "--sim-cache", str(sim_cache), "--sim-fault", "flip-weight-bit", timeout=600)  # fmt: skip
    err = _one_error(r)
    assert err.startswith(
        "bnnflow-board: error: runtime weights read back wrong: 2_0_Thresholding_rtl_0.dat: "
    )
    assert "word 0 (offset 0x0 of StreamingDataflowPartition_2) reads 0x" in err
    assert not (pkg / "weights").exists()


def test_update_needs_the_running_design(designs: Path) -> None:
    from bnnflow_board.update_package import check_belongs, load_update

    upd = load_update(designs / "rtw-update")
    with pytest.raises(BoardError, match="without runtime-writable weights"):
        check_belongs(load_package(designs / "digits-pkg"), upd)
    check_belongs(load_package(designs / "rtw-pkg"), upd)


def test_simulated_weight_memory_behaves_as_finns_adapter() -> None:
    """Entries wider than a word commit on their last word and are captured by a read of their first;
    a Thresholding layer's padding entries (PE 3 of a 2-bit PE field, 3 of 4 steps) store nothing."""
    from bnnflow_board.simulated.device import _WeightMemory

    spec = {"kind": "weights", "fold": 3, "slot_words": 4, "words": 8, "n": 8, "pe": 2, "cols": 2, "rows": 48}
    mem = _WeightMemory("m", spec, np.arange(8, dtype=np.uint32), 4096, flip=False)
    mem.write(0x10, 0xA)
    mem.write(0x14, 0xB)
    assert mem.read(0x10) == 4 and mem.read(0x14) == 5  # not committed yet
    mem.write(0x18, 0xC)  # the last slice commits the entry
    mem.write(0x1C, 0xD)  # no fourth slice: dropped
    assert [mem.read(a) for a in (0x10, 0x14, 0x18, 0x1C)] == [0xA, 0xB, 0xC, 0]
    assert mem.take().tolist() == [0, 1, 2, 3, 0xA, 0xB, 0xC, 7] and mem.take() is None

    spec = {
        "kind": "thresholds",
        "fold": 1,
        "slot_words": 1,
        "words": 64,
        "n": 64,
        "pe": 3,
        "cols": 3,
        "rows": 12,
    }
    mem = _WeightMemory("t", spec, np.zeros(64, dtype=np.uint32), 4096, flip=False)
    for a in range(64):
        mem.write(4 * a, a + 100)
    got = [mem.read(4 * a) for a in range(64)]
    stored = [a for a in range(64) if a % 4 < 3 and (a // 4) % 4 < 3 and a // 16 < 4]
    assert [a for a in range(64) if got[a]] == stored and len(stored) == 12 * 3
