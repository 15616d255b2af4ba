"""``bnnflow bench`` on real compiled designs, with a report the simulated board wrote.

The designs are the session's compile folders (tests/conftest.py). The board
report is made the way a user makes one: ``bnnflow package`` on the digits
design, then ``bnnflow-board bench --simulated-board`` in the board
environment (.venv-board, built by ``make board-env``), with FINN's Python
execution standing in for the FPGA (the quicker of the simulated board's two
modes; the demo runs the C simulation).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import unavailable

from bnnflow.bench import PUBLISHED, bench_design, identify_network
from bnnflow.cli import main
from bnnflow.cpu import CpuEngine
from bnnflow.deploy.package import build_package
from bnnflow.hls.iobound import io_bound

ROOT = Path(__file__).resolve().parents[1]
BOARD_CLI = ROOT / ".venv-board" / "bin" / "bnnflow-board"
N_PACKAGE = 16


@pytest.fixture(scope="module")
def digits_package(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(
        digits_dir, tmp_path_factory.mktemp("bench") / "deploy", n_images=N_PACKAGE, log=None
    )


@pytest.fixture(scope="module")
def sim_report(digits_package: Path) -> Path:
    """bench.json as ``bnnflow-board bench --simulated-board`` writes it for the digits package."""
    if not BOARD_CLI.is_file():
        unavailable(f"no simulated board environment at {BOARD_CLI}: `make board-env` builds it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cmd = [str(BOARD_CLI), "bench", str(digits_package), "--simulated-board", "--sim-exec", "python"]
    cmd += ["--batch-sizes", "1,4", "--warmup", "0", "--repeats", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return digits_package / "bench" / "bench.json"


def _table(text: str) -> list[str]:
    """The table's rows: from the line after the dashes to the first blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line) == {"-"}) + 1
    end = lines.index("", start)
    return lines[start:end]


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bench_without_a_board_report(digits_dir: Path, tmp_path: Path) -> None:
    result = bench_design(digits_dir, out=tmp_path / "b", finn_images=5, log=None)
    r = result.report
    assert result.ok and r["problems"] == []
    # CPU, measured here: the whole test set, FINN agreement on the first 5 images, latency from the C tool
    cpu = r["cpu"]
    assert cpu["where"] == "measured here" and cpu["n_images"] == 360 and cpu["dataset"] == "digits"
    assert cpu["finn"] == {"images": 5, "classes_agree": 5, "scores_agree": 5, "first_difference": None}
    assert 0 < cpu["accuracy"] <= 1
    assert cpu["latency_batch1"]["timed_by"].startswith("bnnflow-cpu bench --json")
    assert cpu["c_bench"]["model"].endswith("model.bnn") and cpu["c_bench"]["runs"] >= 1000
    assert 0 < cpu["latency_batch1"]["median_us"] <= cpu["latency_batch1"]["p99_us"]
    assert set(cpu["images_per_s"]) == {"1 thread", f"{os.cpu_count()} threads"}
    # FPGA, estimated: FINN's compute estimate, the DMA bound, the lower of the two
    est = r["fpga_estimate"]
    info = json.loads((digits_dir / "compile.json").read_text())
    assert est["compute_fps"] == info["estimated_fps"] and est["bottleneck"] == info["bottleneck"]
    io = io_bound(digits_dir)
    assert est["io_fps"] == io.fps and est["io_bound"]["in_bytes"] == 64  # one 8x8 uint8 image
    assert est["io_fps"] == pytest.approx(100e6 / 8)  # 64 bytes over the Zynq-7000's 64-bit port: 8 cycles
    assert est["expected_fps"] == min(est["compute_fps"], est["io_fps"])
    assert est["decided_by"] == (
        io.describe() if io.fps <= est["compute_fps"] else f"compute: {est['bottleneck']}"
    )
    ratios = r["ratios"]
    for name, rate in cpu["images_per_s"].items():
        assert ratios["fpga_expected_over_cpu_here"][name] == pytest.approx(est["expected_fps"] / rate)
    assert ratios["fpga_measured_over_arm_cpu"] is None
    assert ratios["fpga_measured_over_arm_cpu_why"].startswith("no board report")
    assert r["board_report"] is None and r["published"] is None  # the digits MLP has no published figure
    # the table: rows labelled by source, nothing from a board or a publication
    rows = _table(result.text)
    assert [row.split("  ")[0] for row in rows] == ["CPU, measured here"] * 2 + ["FPGA, estimated"] * 3 + [
        "ARM CPU, estimated"
    ]
    assert "simulated board" not in result.text and "published" not in result.text
    assert "FPGA measured / ARM CPU measured: not available: no board report" in result.text
    # written all at once: the JSON is the report, the text is the table
    out = tmp_path / "b"
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.png", "bench.txt"]
    saved = json.loads((out / "bench.json").read_text())
    assert saved["design"]["model_sha256"] == r["design"]["model_sha256"] and saved["chart"] == "bench.png"
    assert (out / "bench.txt").read_text() == result.text + "\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bench_with_the_simulated_boards_report(
    digits_dir: Path, sim_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b"
    rc = main(["bench", str(digits_dir), "--board-report", str(sim_report), "--finn", "5", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    r = json.loads((out / "bench.json").read_text())
    raw = json.loads(sim_report.read_text())
    brd = r["board_report"]
    assert brd["simulated"] is True and brd["where"] == "simulated board" and brd["agreement"] == "100%"
    assert brd["n_images"] == N_PACKAGE and brd["fpga"]["classes_agree"] == N_PACKAGE
    assert brd["cpu"]["classes_agree"] == brd["cpu"]["scores_agree"] == N_PACKAGE
    # the figures are the report's own: throughput at the largest batch, latency at batch 1
    acc = [t for t in raw["timing"] if t["engine"] == "fpga" and t["mode"] == "accelerator"]
    big = max(acc, key=lambda t: t["batch"])
    assert brd["fpga"]["accelerator"]["batch"] == 4
    assert brd["fpga"]["accelerator"]["images_per_s"] == big["throughput_fps"]
    one = next(t for t in acc if t["batch"] == 1)
    assert brd["fpga"]["accelerator"]["latency_batch1_ms"]["median"] == one["median_ms"]
    # labelled "simulated board" throughout, never as a measurement
    rows = _table(text)
    sim_rows = [row for row in rows if row.startswith("simulated board")]
    # FPGA accelerator, FPGA end-to-end, the CPU engine, the CPU engine's own C loop
    assert len(sim_rows) == 4
    assert all("measured" not in row for row in sim_rows)
    assert not any(row.startswith(("FPGA, measured", "ARM CPU, measured")) for row in rows)
    assert "FPGA = FINN python here" in sim_rows[0] and "CPU engine here" in sim_rows[2]
    loop = raw["cpu"]["c_loop"]
    assert f"C loop ({loop['kernels']}), 1 thread" in sim_rows[3]
    one_thread = next(x for x in loop["throughput"] if x["threads"] == 1)
    assert brd["cpu"]["c_loop"]["images_per_s_1_thread"] == one_thread["images_per_s"]
    assert brd["cpu"]["c_loop"]["latency_ms"]["median"] == pytest.approx(loop["latency_us"]["median"] / 1000)
    assert "not FPGA timings" in text
    assert r["ratios"]["fpga_measured_over_arm_cpu"] is None
    assert "simulated board" in r["ratios"]["fpga_measured_over_arm_cpu_why"]


def test_a_board_reports_rows_and_ratio(digits_dir: Path, sim_report: Path, tmp_path: Path) -> None:
    """No board exists here: how a board's report is labelled and divided is checked on the
    simulated board's report with its simulated flag cleared. Only the labels and the arithmetic
    are under test; no figure of it is an FPGA's."""
    raw = json.loads(sim_report.read_text())
    raw["simulated_board"] = False
    relabelled = tmp_path / "relabelled.json"
    relabelled.write_text(json.dumps(raw))
    r = bench_design(digits_dir, board_report=relabelled, out=tmp_path / "b", finn_images=0, log=None)
    rows = _table(r.text)
    assert [row.split("  ")[0] for row in rows[5:]] == [
        "FPGA, measured on Pynq-Z2",
        "FPGA, measured on Pynq-Z2",
        "ARM CPU, measured on Pynq-Z2",
        "ARM CPU, measured on Pynq-Z2",
    ]
    assert "C loop" in rows[8] and "C loop" not in rows[7]
    # a report from before the C loop was timed reads as before, without that row
    del raw["cpu"]["c_loop"]
    relabelled.write_text(json.dumps(raw))
    older = bench_design(digits_dir, board_report=relabelled, out=tmp_path / "c", finn_images=0, log=None)
    assert len(_table(older.text)) == len(rows) - 1 and "C loop" not in older.text
    m = r.report["ratios"]["fpga_measured_over_arm_cpu"]
    brd = r.report["board_report"]
    assert m["accelerator"] == pytest.approx(
        brd["fpga"]["accelerator"]["images_per_s"] / brd["cpu"]["timing"]["images_per_s"]
    )
    assert "FPGA measured / ARM CPU measured: " in r.text and "simulated board" not in r.text


def test_published_figures_only_for_tfc_and_cnv(
    tfc_dir: Path, cnv_dir: Path, digits_dir: Path, tmp_path: Path
) -> None:
    found = {}
    for name, folder in (("tfc", tfc_dir), ("cnv", cnv_dir), ("digits", digits_dir)):
        with CpuEngine(folder / "model.bnn") as engine:
            found[name] = identify_network(engine)
    assert found == {"tfc": "tfc", "cnv": "cnv", "digits": None}
    # SFC and LFC share TFC's input and depth but not its width: no published figure
    for width in (256, 1024):
        layers = [SimpleNamespace(kind="MVAU", kernel=1, out_shape=(1, 1, c)) for c in (width,) * 3 + (10,)]
        assert (
            identify_network(SimpleNamespace(dataset="mnist", input_shape=(1, 28, 28), layers=layers)) is None
        )

    from helpers import SHARED_DATA

    r = bench_design(tfc_dir, data_dir=SHARED_DATA, out=tmp_path / "b", limit=500, finn_images=5, log=None)
    pub = r.report["published"]
    assert pub == PUBLISHED["tfc"].to_json() and pub["network"] == "tfc-w1a1"
    assert "finn-examples" in pub["source"] and "0_mnist_with_fc_networks.ipynb" in pub["source"]
    row = _table(r.text)[-1]
    assert row.startswith("published (finn-examples)") and "837,019" in row and "board not named" in row
    assert r.ok and r.report["cpu"]["finn"]["classes_agree"] == 5


def _hostile_reports(raw: dict, design: Path, folder: Path) -> list[tuple[list[str], str]]:
    """Reports a careless or hostile hand could give: each is refused in one line, nothing written."""

    def variant(name: str, text: str) -> list[str]:
        (folder / name).write_text(text)
        return [str(design), "--board-report", str(folder / name)]

    def edited(name: str, edit) -> list[str]:
        report = json.loads(json.dumps(raw))
        edit(report)
        return variant(name, json.dumps(report))

    fpga_row = next(i for i, t in enumerate(raw["timing"]) if t["engine"] == "fpga")
    cpu_row = next(i for i, t in enumerate(raw["timing"]) if t["engine"] == "cpu")
    return [
        (variant("nested.json", "[" * 100000 + "]" * 100000), "nested too deeply"),
        (
            variant("infinite.json", json.dumps(raw).replace('"n": ', '"n": Infinity, "x": ', 1)),
            "testset.n is inf",
        ),
        (variant("huge.json", json.dumps(raw).replace('"n": ', '"n": 1e999, "x": ', 1)), "testset.n is inf"),
        (edited("negative.json", lambda r: r["testset"].update(n=-5)), "testset.n is -5"),
        (edited("board.json", lambda r: r.update(board="Pynq-Z2")), "board is not an object"),
        (
            edited("clock.json", lambda r: r.update(accelerator_clock_mhz="fast")),
            "accelerator_clock_mhz is not",
        ),
        (edited("sim.json", lambda r: r.update(simulated_board_fpga=[1])), "simulated_board_fpga is not"),
        (edited("zero.json", lambda r: r["timing"][cpu_row].update(throughput_fps=0)), "not a rate above 0"),
        (edited("nan.json", lambda r: r["timing"][fpga_row].update(throughput_fps=float("nan"))), "is nan"),
    ]


def test_bad_inputs_are_one_line_errors_and_write_nothing(
    digits_dir: Path, tfc_dir: Path, sim_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = json.loads(sim_report.read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.json").write_text(sim_report.read_text()[:200])
    other_board = json.loads(json.dumps(raw))
    other_board["package"]["board"] = "Ultra96"
    (bad / "ultra96.json").write_text(json.dumps(other_board))
    older = json.loads(json.dumps(raw))
    del older["package"]["model_sha256"]
    (bad / "older.json").write_text(json.dumps(older))
    (bad / "list.json").write_text("[1, 2]")
    bad_loop = json.loads(json.dumps(raw))
    bad_loop["cpu"]["c_loop"]["throughput"] = [{"threads": "one"}]
    (bad / "loop.json").write_text(json.dumps(bad_loop))
    cases = [
        ([str(tmp_path / "missing")], "not a folder"),
        ([str(bad)], "neither a compile folder nor a run"),
        ([str(digits_dir), "--board-report", str(bad / "truncated.json")], "is not readable JSON"),
        (
            [str(digits_dir), "--board-report", str(digits_dir / "compile.json")],
            "not a bnnflow-board bench report",
        ),
        ([str(digits_dir), "--board-report", str(bad / "list.json")], "not a bnnflow-board bench report"),
        ([str(digits_dir), "--board-report", str(bad / "ultra96.json")], "is a report for Ultra96"),
        ([str(digits_dir), "--board-report", str(bad / "loop.json")], "threads is not a number"),
        ([str(digits_dir), "--board-report", str(bad / "older.json")], "does not say which design"),
        ([str(digits_dir), "--board-report", str(bad / "none.json")], "no board report at"),
        ([str(tfc_dir), "--board-report", str(sim_report)], "is a report for another design"),
    ]
    cases += _hostile_reports(raw, digits_dir, bad)
    for args, message in cases:
        out = tmp_path / "out"
        assert main(["bench", *args, "--out", str(out)]) == 1, args
        line = _one_line_error(capsys.readouterr().err)
        assert line.startswith("bnnflow: error: ") and message in line, (args, line)
        assert not out.exists(), args
    # an --out that holds something else is refused before anything is measured, and left as it was
    before = sorted(p.name for p in bad.iterdir())
    assert main(["bench", str(digits_dir), "--out", str(bad)]) == 1
    assert "refusing to replace" in _one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in bad.iterdir()) == before
