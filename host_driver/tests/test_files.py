"""The simulated board's .hwh/.bit read by PYNQ's own parsers; bnnflow-board's readers; the engine seam."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bnnflow_board.boards import get_board
from bnnflow_board.cpu_engine import CpuEngineUnavailable, build_engine
from bnnflow_board.errors import BoardError
from bnnflow_board.hwh import read_bit_part, read_hwh, read_timing_summary
from bnnflow_board.simulated.hwh import make_bit, make_hwh

REPO = Path(__file__).resolve().parents[2]


def _instance(name: str, module: int, role: str, axilite: bool, in_width: int, out_width: int) -> dict:
    vlnv = f"xilinx_finn:finn:StreamingDataflowPartition_{module}:1.0"
    return {"name": name, "module": f"StreamingDataflowPartition_{module}", "vlnv": vlnv, "role": role,
            "axilite": axilite, "in_width": in_width, "out_width": out_width}  # fmt: skip


INSTANCES = [
    _instance("idma0", 0, "idma", True, 0, 224),
    _instance("StreamingDataflowPartition_1", 1, "kernel", False, 224, 8),
    _instance("odma0", 2, "odma", True, 8, 0),
]


@pytest.mark.parametrize(("board", "base"), [("Pynq-Z2", 0x4000_0000), ("Ultra96-V2", 0xA000_0000)])
def test_pynq_reads_the_simulated_hwh(board: str, base: int, tmp_path: Path) -> None:
    from pynq.pl_server.embedded_device import bit2bin, parse_bit_header
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser

    spec = get_board(board)
    text, bases = make_hwh(spec, INSTANCES, 125.0)
    (tmp_path / "a.hwh").write_text(text)
    (tmp_path / "a.bit").write_bytes(make_bit(spec))
    parser = RuntimeMetadataParser(Metadata(input=str(tmp_path / "a.hwh")))
    # the IODMAs where FINN's assign_axi_addr_proc puts them, with the registers the driver writes
    assert bases == {"idma0": base, "odma0": base + 0x1000}
    for name, ptr in (("idma0", "in0_V"), ("odma0", "out0_V")):
        ip = parser.ip_dict[name]
        assert (ip["phys_addr"], ip["addr_range"]) == (bases[name], 4096)
        regs = {k: v["address_offset"] for k, v in ip["registers"].items()}
        assert regs == {
            "CTRL": 0,
            "GIER": 4,
            "IP_IER": 8,
            "IP_ISR": 12,
            f"{ptr}_1": 16,
            f"{ptr}_2": 20,
            "numReps": 28,
        }
    assert parser.clock_dict[0]["enable"] == 1 and parser.clock_dict[0]["frequency"] == 100.0
    header = parse_bit_header((tmp_path / "a.bit").read_bytes())
    assert header["part"] == spec.device[2:] + spec.package and bit2bin((tmp_path / "a.bit").read_bytes())
    info = read_hwh(tmp_path / "a.hwh")
    assert (info.device, info.package, info.simulated) == (spec.device, spec.package, True)
    assert info.clock_mhz() == (125.0, 125.0) and info.instances["odma0"]["base"] == base + 0x1000
    assert read_bit_part(tmp_path / "a.bit")[0] == spec.device + spec.package


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "x.hwh").write_text("not xml")
    with pytest.raises(BoardError, match="not a readable .hwh"):
        read_hwh(tmp_path / "x.hwh")
    (tmp_path / "x.bit").write_bytes(b"\x00\x01")
    with pytest.raises(BoardError, match="not a Xilinx .bit file"):
        read_bit_part(tmp_path / "x.bit")
    (tmp_path / "t.rpt").write_text("Timing Summary Report\n")
    with pytest.raises(BoardError, match="no Design Timing Summary"):
        read_timing_summary(tmp_path / "t.rpt")


def test_timing_summary() -> None:
    text = (
        "| Design Timing Summary\n| ---------------------\n\n"
        "    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)\n"
        "    -------      -------  ---------------------  -------------------      -------      -------\n"
        "      0.245        0.000                      0                50902        0.026        0.000\n"
    )
    path = Path(__file__).with_name("tmp_timing.rpt")
    try:
        path.write_text(text)
        assert read_timing_summary(path) == {"wns_ns": 0.245, "whs_ns": 0.026, "met": True}
        path.write_text(text.replace("0.026", "-0.010"))
        assert read_timing_summary(path)["met"] is False
    finally:
        path.unlink()


def test_engine_built_with_its_makefile_and_an_engine_that_is_not_there(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    (cpu / "include").mkdir(parents=True)
    (cpu / "include" / "bnncpu.h").write_text("/* the interface */\n")
    with pytest.raises(CpuEngineUnavailable, match="no engine sources"):
        build_engine(cpu, tmp_path / "build")
    shutil.rmtree(cpu)
    # the repository's engine, copied as the package copies it (no build folder)
    shutil.copytree(REPO / "cpu", cpu, ignore=shutil.ignore_patterns("build"))
    lib = build_engine(cpu, tmp_path / "build")  # the library builds with the board's flags (here the host's)
    assert lib == (tmp_path / "build" / "libbnncpu.so").absolute() and lib.is_file()
    (cpu / "src" / "model.c").write_text("this is not C\n")
    with pytest.raises(CpuEngineUnavailable, match="did not compile: .*error"):
        build_engine(cpu, tmp_path / "build2")


def _report(cpu: dict) -> dict:
    row = {"engine": "fpga", "mode": "accelerator", "batch": 1, "threads": None, "warmup": 1, "repeats": 2,
           "median_ms": 0.5, "p99_ms": 0.6, "throughput_fps": 2000.0}  # fmt: skip
    return {
        "simulated_board": False,
        "board": {"name": "Pynq-Z2", "family": "zynq-7000", "cpu": "Cortex-A9 x2"},
        "package": {"model": "tfc", "board": "Pynq-Z2"},
        "testset": {"n": 4, "dataset": "mnist", "golden_source": "cpu-engine"},
        "accelerator_clock_mhz": {"requested": 100.0, "achieved": 99.999, "from": "hwh clk_wiz_0"},
        "fpga": {"accuracy": 0.75, "agree_classes": 4, "first_mismatch": None},
        "cpu": cpu,
        "agreement": "100%" if not cpu.get("first_mismatch") else "MISMATCH",
        "timing": [row, {**row, "engine": "cpu", "mode": "1 thread", "threads": 1}],
    }


def test_report_with_the_cpu_engine_and_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnnflow_board.report import format_report, plot_report

    mismatch = {"image": 2, "count": 1, "text": "image 2: the CPU engine's score 7 is 40, golden 41"}
    cpu = {
        "available": True,
        "accuracy": 0.75,
        "agree_classes": 4,
        "agree_scores": 3,
        "first_mismatch": mismatch,
    }
    text = format_report(_report(cpu))
    assert "accelerator clock: 99.999 MHz (requested 100 MHz, from the .hwh)" in text
    assert "CPU engine" in text and "3/4 (75.00%)" in text and "first mismatch: image 2" in text
    assert "agreement with the golden outputs: MISMATCH" in text
    assert (
        plot_report(_report(cpu), tmp_path / "b.png") == "b.png" and (tmp_path / "b.png").stat().st_size > 0
    )
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as on an image without it
    assert plot_report(_report(cpu), tmp_path / "c.png") == "matplotlib is not installed"
    assert not (tmp_path / "c.png").exists()
