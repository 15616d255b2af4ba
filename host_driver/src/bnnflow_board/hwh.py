"""What bnnflow-board reads from a bitfile's .hwh, its .bit header and Vivado's timing summary.

The checks only need a few facts, so the .hwh is read with ElementTree here
(PYNQ's own parser, pynqmetadata, reads it again when the overlay loads):
the die and board part in ``SYSTEMINFO``, the IP instances in ``MODULES``
with the addresses the processing system's ``MEMORYMAP`` gives them, and the
parameters of ``clk_wiz_0``, the Clocking Wizard FINN's Zynq shell feeds the
accelerator clock from (finn/transformation/fpgadataflow/templates.py):
``CLKOUT1_REQUESTED_OUT_FREQ`` is what the build asked for,
``CLKOUT1_OUT_FREQ`` what the PLL reaches.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnflow_board.deployformat import normalise_device
from bnnflow_board.errors import BoardError

SIMULATED_MARK = "bnnflow simulated board"


@dataclass
class HwhInfo:
    device: str  # xc7z020, xczu3eg
    package: str
    board_part: str
    simulated: bool
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> vlnv, base address
    clk_wiz: dict[str, str] = field(default_factory=dict)

    def clock_mhz(self) -> tuple[float | None, float | None]:
        """(requested, achieved) accelerator clock in MHz; None where the .hwh has no Clocking Wizard."""

        def num(key: str) -> float | None:
            try:
                return float(self.clk_wiz[key])
            except (KeyError, ValueError):
                return None

        return num("CLKOUT1_REQUESTED_OUT_FREQ"), num("CLKOUT1_OUT_FREQ")


def read_hwh(path: str | Path) -> HwhInfo:
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise BoardError(f"{path} is not a readable .hwh: {exc}") from None
    sysinfo = root.find("SYSTEMINFO")
    if root.tag != "EDKSYSTEM" or sysinfo is None:
        raise BoardError(f"{path} is not a Vivado hardware handoff (.hwh)")
    info = HwhInfo(
        device=normalise_device(sysinfo.get("DEVICE", "")),
        package=sysinfo.get("PACKAGE", ""),
        board_part=sysinfo.get("BOARD", ""),
        simulated=root.get("VIVADOVERSION", "") == SIMULATED_MARK,
    )
    for mod in root.iter("MODULE"):
        name = mod.get("INSTANCE", "")
        info.instances[name] = {"vlnv": mod.get("VLNV", ""), "base": None}
        if name == "clk_wiz_0":
            info.clk_wiz = {p.get("NAME", ""): p.get("VALUE", "") for p in mod.iter("PARAMETER")}
    for rng in root.iter("MEMRANGE"):
        inst = rng.get("INSTANCE", "")
        if rng.get("MEMTYPE") == "REGISTER" and inst in info.instances:
            info.instances[inst]["base"] = int(rng.get("BASEVALUE", "0"), 16)
    return info


def read_bit_part(path: str | Path) -> tuple[str, str]:
    """(part, design field) from a .bit header, read with PYNQ's own parser."""
    from pynq.pl_server.embedded_device import parse_bit_header

    try:
        header = parse_bit_header(Path(path).read_bytes())
    except Exception as exc:  # pynq's parser raises struct/index errors on a damaged header
        raise BoardError(f"{path} is not a Xilinx .bit file ({type(exc).__name__})") from None
    return normalise_device(str(header.get("part", ""))), str(header.get("design", "")) + str(
        header.get("version", "")
    )


def read_timing_summary(path: str | Path) -> dict[str, Any]:
    """WNS and WHS (ns) from Vivado's report_timing_summary ("Design Timing Summary" table)."""
    text = Path(path).read_text(errors="replace")
    m = re.search(r"Design Timing Summary.*?WNS\(ns\).*?\n\s*-+.*?\n(.*?)\n", text, re.S)
    if not m:
        raise BoardError(f"{path}: no Design Timing Summary table (not Vivado's report_timing_summary?)")
    values = m.group(1).split()
    try:
        wns, whs = float(values[0]), float(values[4])
    except (IndexError, ValueError):
        raise BoardError(f"{path}: cannot read WNS/WHS from the Design Timing Summary") from None
    return {"wns_ns": wns, "whs_ns": whs, "met": wns >= 0 and whs >= 0}
