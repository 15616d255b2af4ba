"""A .hwh and a .bit for the simulated board, standing in for Vivado's.

On a real build Vivado writes ``finn-accel.bit`` and ``finn-accel.hwh``. No
Vivado exists where bnnflow is tested, yet PYNQ's ``Overlay`` needs both: it
reads the .hwh to find the IP, their addresses and register maps, and the
processing system's clocks, and the .bit header names the part. These files
describe what FINN's Zynq flow builds for the design (finn-plus 1.6.1,
finn/transformation/fpgadataflow/templates.py and make_zynq_proj.py): the
processing system ``zynq_ps``, the Clocking Wizard ``clk_wiz_0`` FINN adds
for the accelerator clock, and one IP instance per dataflow partition named
as FINN names them (``idma0``, ``StreamingDataflowPartition_1``, ``odma0``),
the IODMAs with the AXI-lite register map Vitis HLS gives FINN's IODMA
(control at 0x00, the buffer address at 0x10/0x14, ``numReps`` at 0x1C),
placed from the shell's first peripheral address as FINN's
``assign_axi_addr_proc`` places them: each port's range (4 KiB, or a
runtime-writable layer's memory) aligned to itself.

They are marked as made for the simulated board, in an XML comment and in the
bitfile's header, and ``bnnflow-board check`` refuses them on a real board:
the real board's files are Vivado's, from ``make bitstream``.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from bnnflow_board.deployformat import BoardSpec
from bnnflow_board.hwh import SIMULATED_MARK

IODMA_WINDOW = 4096  # assign_axi_addr_proc: an aperture below 4 KiB is rounded up to 4 KiB

# Vitis HLS's AXI-lite layout for FINN's IODMA top function
# (ap_ctrl_hs on "return", a 64-bit m_axi offset and "numReps", one "control" bundle).
IODMA_REGISTERS = (
    (
        "CTRL",
        0x00,
        "read-write",
        (
            ("AP_START", 0, 1),
            ("AP_DONE", 1, 1),
            ("AP_IDLE", 2, 1),
            ("AP_READY", 3, 1),
            ("AUTO_RESTART", 7, 1),
        ),
    ),
    ("GIER", 0x04, "read-write", (("Enable", 0, 1),)),
    ("IP_IER", 0x08, "read-write", (("CHAN0_INT_EN", 0, 1), ("CHAN1_INT_EN", 1, 1))),
    ("IP_ISR", 0x0C, "read-write", (("CHAN0_INT_ST", 0, 1), ("CHAN1_INT_ST", 1, 1))),
    ("{ptr}_1", 0x10, "write-only", (("{ptr}", 0, 32),)),
    ("{ptr}_2", 0x14, "write-only", (("{ptr}", 0, 32),)),
    ("numReps", 0x1C, "write-only", (("numReps", 0, 32),)),
)

_AXILITE = (
    "AWADDR",
    "AWVALID",
    "AWREADY",
    "WDATA",
    "WSTRB",
    "WVALID",
    "WREADY",
    "BRESP",
    "BVALID",
    "BREADY",
    "ARADDR",
    "ARVALID",
    "ARREADY",
    "RDATA",
    "RRESP",
    "RVALID",
    "RREADY",
)
_AXIS = ("TDATA", "TVALID", "TREADY")


def _ps(board: BoardSpec) -> dict[str, str]:
    if board.family == "zynq-7000":
        return {
            "modtype": "processing_system7",
            "vlnv": "xilinx.com:ip:processing_system7:5.5",
            "master": "M_AXI_GP0",
            "slave": "S_AXI_HP0",
            "clk": "FCLK_CLK0",
            "arch": "zynq",
        }
    return {
        "modtype": "zynq_ultra_ps_e",
        "vlnv": "xilinx.com:ip:zynq_ultra_ps_e:3.5",
        "master": "M_AXI_HPM0_FPD",
        "slave": "S_AXI_HP0_FPD",
        "clk": "pl_clk0",
        "arch": "zynquplus",
    }


def _ps_clock_parameters(board: BoardSpec, ps_mhz: float) -> dict[str, str]:
    """The PL clock parameters PYNQ reads from the processing system (FINN sets clock 0 to 100 MHz)."""
    p: dict[str, str] = {}
    if board.family == "zynq-7000":
        for i in range(4):
            on = i == 0
            p[f"PCW_FPGA_FCLK{i}_ENABLE"] = "1" if on else "0"
            p[f"PCW_FPGA{i}_PERIPHERAL_FREQMHZ"] = f"{ps_mhz:g}" if on else "50"
            p[f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ"] = f"{ps_mhz:.6f}" if on else "10.000000"
            p[f"PCW_FCLK{i}_PERIPHERAL_CLKSRC"] = "IO PLL"
            # IO PLL 1000 MHz / (10 * 1) = 100 MHz
            p[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0"] = "10" if on else "1"
            p[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1"] = "1"
            # Not a Vivado parameter of a Zynq-7000 PS: pynq 4.0's Overlay.download
            # sets each enabled PL clock to the achieved frequency, which
            # pynqmetadata reads under this UltraScale+ name for every PS (pynq
            # 3.x, which the Pynq-Z2 images run, programs the divisors instead).
            # Without it pynq 4.0, the version the simulated board runs, cannot
            # load a Zynq-7000 overlay at all.
            p[f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ"] = p[f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ"]
        p["PCW_USE_S_AXI_HP0"] = "1"
        p["PCW_USE_M_AXI_GP0"] = "1"
    else:
        for i in range(4):
            on = i == 0
            p[f"PSU__FPGA_PL{i}_ENABLE"] = "1" if on else "0"
            p[f"PSU__CRL_APB__PL{i}_REF_CTRL__FREQMHZ"] = f"{ps_mhz:g}" if on else "100"
            p[f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ"] = f"{ps_mhz:.6f}" if on else "100.000000"
            p[f"PSU__CRL_APB__PL{i}_REF_CTRL__SRCSEL"] = "IOPLL"
            # IOPLL 1500 MHz / (15 * 1) = 100 MHz
            p[f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0"] = "15"
            p[f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1"] = "1"
        p["PSU__USE__S_AXI_GP2"] = "1"
        p["PSU__USE__M_AXI_GP0"] = "1"
    return p


class _Builder:
    def __init__(self) -> None:
        self.modules = ET.Element("MODULES")
        self._ports: dict[tuple[str, str], ET.Element] = {}

    def module(
        self, instance: str, vlnv: str, modtype: str, params: Mapping[str, str], **attrs: str
    ) -> ET.Element:
        mod = ET.SubElement(
            self.modules,
            "MODULE",
            {
                "FULLNAME": f"/{instance}",
                "HWVERSION": vlnv.rsplit(":", 1)[1],
                "INSTANCE": instance,
                "IPTYPE": "PERIPHERAL",
                "IS_ENABLE": "1",
                "MODCLASS": "PERIPHERAL",
                "MODTYPE": modtype,
                "VLNV": vlnv,
                **attrs,
            },
        )
        ET.SubElement(mod, "DOCUMENTS")
        ps = ET.SubElement(mod, "PARAMETERS")
        for k, v in params.items():
            ET.SubElement(ps, "PARAMETER", {"NAME": k, "VALUE": str(v)})
        ET.SubElement(mod, "PORTS")
        ET.SubElement(mod, "BUSINTERFACES")
        return mod

    def port(self, mod: ET.Element, name: str, direction: str, width: int = 1, **attrs: str) -> ET.Element:
        ports = mod.find("PORTS")
        assert ports is not None
        a = {"DIR": direction, "NAME": name, "SIGIS": "undef", "SIGNAME": f"{mod.get('INSTANCE')}_{name}"}
        if width > 1:
            a.update(LEFT=str(width - 1), RIGHT="0")
        a.update(attrs)
        el = ET.SubElement(ports, "PORT", a)
        ET.SubElement(el, "CONNECTIONS")
        self._ports[(str(mod.get("INSTANCE")), name)] = el
        return el

    def connect(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        for src, dst in ((a, b), (b, a)):
            cons = self._ports[src].find("CONNECTIONS")
            assert cons is not None
            ET.SubElement(cons, "CONNECTION", {"INSTANCE": dst[0], "PORT": dst[1]})

    def bus(
        self,
        mod: ET.Element,
        name: str,
        kind: str,
        btype: str,
        signals: Sequence[str],
        widths: Mapping[str, int] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> None:
        """A bus interface with its signals as ports named <bus>_<signal> (the Vivado convention)."""
        widths = widths or {}
        vlnv = {"aximm": "xilinx.com:interface:aximm:1.0", "axis": "xilinx.com:interface:axis:1.0"}[kind]
        bi = mod.find("BUSINTERFACES")
        assert bi is not None
        el = ET.SubElement(
            bi,
            "BUSINTERFACE",
            {"BUSNAME": f"{mod.get('INSTANCE')}_{name}", "NAME": name, "TYPE": btype, "VLNV": vlnv},
        )
        for k, v in (params or {}).items():
            ET.SubElement(el, "PARAMETER", {"NAME": k, "VALUE": str(v)})
        pm = ET.SubElement(el, "PORTMAPS")
        driver = btype in ("MASTER", "INITIATOR")
        for sig in signals:
            phys = f"{name}_{sig.lower()}"
            # who drives each handshake signal of a bus: the manager drives everything but *READY/*RESP/RDATA
            from_subordinate = sig.endswith("READY") or sig in ("BRESP", "BVALID", "RDATA", "RRESP", "RVALID")
            if kind == "axis":
                from_subordinate = sig == "TREADY"
            out = driver != from_subordinate
            self.port(mod, phys, "O" if out else "I", widths.get(sig, 1))
            ET.SubElement(pm, "PORTMAP", {"LOGICAL": sig, "PHYSICAL": phys})


def make_hwh(
    board: BoardSpec,
    instances: Sequence[Mapping[str, Any]],
    fclk_mhz: float,
    design: str = "top",
) -> tuple[str, dict[str, int]]:
    """The .hwh text and each AXI-lite instance's base address."""
    ps = _ps(board)
    b = _Builder()
    memmap = _ps_module(b, board, ps)
    hz = _clock_module(b, ps, fclk_mhz)
    bases: dict[str, int] = {}
    addr = board.axi_base
    previous: tuple[str, str] | None = None
    for inst in instances:
        name, role = str(inst["name"]), str(inst["role"])
        mod = b.module(
            name,
            str(inst["vlnv"]),
            str(inst["module"]),
            {"Component_Name": f"{design}_{name}_0"},
            COREREVISION="2",
        )
        b.port(mod, "ap_clk", "I", SIGIS="clk", CLKFREQUENCY=str(hz))
        b.connect((name, "ap_clk"), ("clk_wiz_0", "clk_out1"))
        _streams(b, mod, inst, hz, previous)
        previous = (name, "m_axis_0")
        if role in ("idma", "odma"):
            b.bus(mod, "m_axi_gmem0", "aximm", "MASTER", _AXILITE, {"AWADDR": 64, "ARADDR": 64})
        if inst.get("axilite"):
            bases[name] = base = _axilite_port(b, mod, memmap, inst, addr, ps["master"])
            addr = base + int(inst.get("axilite_bytes") or IODMA_WINDOW)
    return _document(b, board, ps, design), bases


def _ps_module(b: _Builder, board: BoardSpec, ps: dict[str, str]) -> ET.Element:
    """FINN's Zynq processing system, its clock and its AXI ports; returns its memory map."""
    ps_mod = b.module(
        "zynq_ps",
        ps["vlnv"],
        ps["modtype"],
        _ps_clock_parameters(board, 100.0),
        IS_PL="FALSE",
        CONFIGURABLE="TRUE",
    )
    b.port(ps_mod, ps["clk"], "O", SIGIS="clk", CLKFREQUENCY="100000000")
    b.bus(
        ps_mod,
        ps["master"],
        "aximm",
        "MASTER",
        _AXILITE,
        {"AWADDR": 32, "ARADDR": 32, "WDATA": 32, "RDATA": 32, "WSTRB": 4, "BRESP": 2, "RRESP": 2},
    )
    b.bus(ps_mod, ps["slave"], "aximm", "SLAVE", _AXILITE, {"AWADDR": 32, "ARADDR": 32})
    addrblocks = ET.SubElement(ps_mod, "ADDRESSBLOCKS")
    ET.SubElement(
        addrblocks,
        "ADDRESSBLOCK",
        {
            "ACCESS": "",
            "INTERFACE": ps["slave"],
            "NAME": "HP0_DDR_LOWOCM",
            "RANGE": str(board.ddr_bytes),
            "USAGE": "memory",
        },
    )
    return ET.SubElement(ps_mod, "MEMORYMAP")


def _clock_module(b: _Builder, ps: dict[str, str], fclk_mhz: float) -> int:
    """The clocking wizard FINN's shell puts between the PS clock and the accelerator; returns its Hz."""
    hz = int(round(fclk_mhz * 1e6))
    clk = b.module(
        "clk_wiz_0",
        "xilinx.com:ip:clk_wiz:6.0",
        "clk_wiz",
        {
            "PRIMITIVE": "PLL",
            "PRIM_IN_FREQ": "100.000",
            "CLKOUT1_REQUESTED_OUT_FREQ": f"{fclk_mhz:.3f}",
            # Vivado writes the frequency its PLL reaches here; the simulated board
            # reaches exactly the requested one.
            "CLKOUT1_OUT_FREQ": f"{fclk_mhz:.5f}",
        },
    )
    b.port(clk, "clk_in1", "I", SIGIS="clk", CLKFREQUENCY="100000000")
    b.port(clk, "clk_out1", "O", SIGIS="clk", CLKFREQUENCY=str(hz))
    b.connect(("zynq_ps", ps["clk"]), ("clk_wiz_0", "clk_in1"))
    return hz


def _streams(
    b: _Builder, mod: ET.Element, inst: Mapping[str, Any], hz: int, previous: tuple[str, str] | None
) -> None:
    """An instance's AXI streams, its input connected to the previous instance's output."""
    name, role = str(inst["name"]), str(inst["role"])
    if role != "idma":
        width = int(inst["in_width"])
        b.bus(
            mod,
            "s_axis_0",
            "axis",
            "TARGET",
            _AXIS,
            {"TDATA": _bytes(width) * 8},
            {"TDATA_NUM_BYTES": str(_bytes(width)), "FREQ_HZ": str(hz)},
        )
        if previous is not None:
            for sig in _AXIS:
                b.connect((previous[0], f"m_axis_0_{sig.lower()}"), (name, f"s_axis_0_{sig.lower()}"))
    if role != "odma":
        width = int(inst["out_width"])
        b.bus(
            mod,
            "m_axis_0",
            "axis",
            "INITIATOR",
            _AXIS,
            {"TDATA": _bytes(width) * 8},
            {"TDATA_NUM_BYTES": str(_bytes(width)), "FREQ_HZ": str(hz)},
        )


def _axilite_port(
    b: _Builder, mod: ET.Element, memmap: ET.Element, inst: Mapping[str, Any], addr: int, master: str
) -> int:
    """An instance's AXI-lite port, placed at the first aligned address from ``addr``; returns its base.

    A runtime-writable layer's port spans its parameter memory (the manifest's
    axilite_bytes, from FINN's RTL); the IODMAs' registers fit in the minimum.
    Interface names as FINN's stitched IP names them: the HLS IODMA's
    s_axi_control, a layer's s_axilite, numbered per IP.
    """
    name, role = str(inst["name"]), str(inst["role"])
    window = int(inst.get("axilite_bytes") or IODMA_WINDOW)
    dma = role in ("idma", "odma")
    intf = "s_axi_control_0" if dma else "s_axilite_0"
    bits = 6 if dma else max(window.bit_length() - 1, 2)
    b.bus(
        mod,
        intf,
        "aximm",
        "SLAVE",
        _AXILITE,
        {"AWADDR": bits, "ARADDR": bits, "WDATA": 32, "RDATA": 32},
    )
    base = (addr + window - 1) & ~(window - 1)
    params = mod.find("PARAMETERS")
    assert params is not None
    ET.SubElement(params, "PARAMETER", {"NAME": "C_BASEADDR", "VALUE": f"0x{base:08X}"})
    ET.SubElement(params, "PARAMETER", {"NAME": "C_HIGHADDR", "VALUE": f"0x{base + window - 1:08X}"})
    if dma:
        _iodma_registers(mod, "in0_V" if role == "idma" else "out0_V")
    else:  # a memory, no registers (FINN addresses it as the segment Reg*)
        blocks = ET.SubElement(mod, "ADDRESSBLOCKS")
        ET.SubElement(
            blocks,
            "ADDRESSBLOCK",
            {
                "ACCESS": "",
                "INTERFACE": intf,
                "NAME": "Reg0",
                "RANGE": str(window),
                "USAGE": "memory",
            },
        )
    ET.SubElement(
        memmap,
        "MEMRANGE",
        {
            "ADDRESSBLOCK": "Reg0",
            "BASENAME": "C_BASEADDR",
            "BASEVALUE": f"0x{base:08X}",
            "HIGHNAME": "C_HIGHADDR",
            "HIGHVALUE": f"0x{base + window - 1:08X}",
            "INSTANCE": name,
            "IS_DATA": "TRUE",
            "IS_INSTRUCTION": "TRUE",
            "MASTERBUSINTERFACE": master,
            "MEMTYPE": "REGISTER",
            "SLAVEBUSINTERFACE": intf,
        },
    )
    return base


def _document(b: _Builder, board: BoardSpec, ps: dict[str, str], design: str) -> str:
    """The modules in Vivado's .hwh document, marked as the simulated board's."""
    root = ET.Element(
        "EDKSYSTEM",
        {
            "EDWVERSION": "1.2",
            "TIMESTAMP": datetime.now(timezone.utc).strftime("%a %b %d %H:%M:%S %Y"),
            "VIVADOVERSION": SIMULATED_MARK,
        },
    )
    ET.SubElement(
        root,
        "SYSTEMINFO",
        {
            "ARCH": ps["arch"],
            "BOARD": board.board_part,
            "DEVICE": _hwh_device(board),
            "NAME": design,
            "PACKAGE": board.package,
            "SPEEDGRADE": "-1",
        },
    )
    ET.SubElement(root, "EXTERNALPORTS")
    ET.SubElement(root, "EXTERNALINTERFACES")
    root.append(b.modules)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    comment = (
        f"<!-- Made by bnnflow for the {SIMULATED_MARK} from the deployment package, not by Vivado.\n"
        "     It describes the IP instances FINN's Zynq flow creates for this design; a real board\n"
        "     needs the .hwh Vivado writes next to the bitfile (make bitstream). -->\n"
    )
    return '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n' + comment + text + "\n"


def _bytes(bits: int) -> int:
    return max(1, (int(bits) + 7) // 8)


def _hwh_device(board: BoardSpec) -> str:
    # Vivado names a Zynq-7000 die without its "xc" in a .hwh (7z020)
    return board.device[2:] if board.family == "zynq-7000" else board.device


def _iodma_registers(mod: ET.Element, ptr: str) -> None:
    blocks = ET.SubElement(mod, "ADDRESSBLOCKS")
    block = ET.SubElement(
        blocks,
        "ADDRESSBLOCK",
        {
            "ACCESS": "",
            "INTERFACE": "s_axi_control_0",
            "NAME": "Reg0",
            "RANGE": str(IODMA_WINDOW),
            "USAGE": "register",
        },
    )
    regs = ET.SubElement(block, "REGISTERS")
    for name, offset, access, fields in IODMA_REGISTERS:
        reg = ET.SubElement(regs, "REGISTER", {"NAME": name.format(ptr=ptr)})
        for k, v in (
            ("DESCRIPTION", ""),
            ("ADDRESS_OFFSET", str(offset)),
            ("SIZE", "32"),
            ("ACCESS", access),
            ("IS_ENABLED", "true"),
            ("RESET_VALUE", "0"),
        ):
            ET.SubElement(reg, "PROPERTY", {"NAME": k, "VALUE": v})
        fl = ET.SubElement(reg, "FIELDS")
        for fname, bit, width in fields:
            f = ET.SubElement(fl, "FIELD", {"NAME": fname.format(ptr=ptr)})
            for k, v in (
                ("DESCRIPTION", ""),
                ("ACCESS", access),
                ("BIT_OFFSET", str(bit)),
                ("BIT_WIDTH", str(width)),
            ):
                ET.SubElement(f, "PROPERTY", {"NAME": k, "VALUE": v})


def make_bit(board: BoardSpec, design: str = "top_wrapper") -> bytes:
    """A file in the .bit container format (Xilinx's header, then a data field) holding no bitstream.

    The header fields are the ones Vivado writes (design, part, date, time);
    the data field holds a line of text saying what the file is, so nothing
    could ever program a real FPGA with it.
    """
    now = datetime.now(timezone.utc)
    part = f"{board.device[2:]}{board.package}"

    def field(key: bytes, text: str) -> bytes:
        raw = text.encode() + b"\0"
        return key + struct.pack(">H", len(raw)) + raw

    # The fixed preamble every .bit starts with: a 9-byte field, then 1.
    head = struct.pack(">H", 9) + bytes.fromhex("0ff00ff00ff00ff000") + struct.pack(">H", 1)
    head += field(b"a", f"{design};UserID=0XFFFFFFFF;Version={SIMULATED_MARK}")
    head += field(b"b", part)
    head += field(b"c", now.strftime("%Y/%m/%d"))
    head += field(b"d", now.strftime("%H:%M:%S"))
    payload = f"{SIMULATED_MARK}: not a bitstream; made by bnnflow for {board.name} ({board.part})\n".encode()
    payload += b"\0" * (-len(payload) % 4)
    return head + b"e" + struct.pack(">I", len(payload)) + payload
