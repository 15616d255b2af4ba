"""The simulated board: a software ``pynq.Device`` under the real PYNQ and finn-plus-driver.

PYNQ reaches hardware only through its ``Device`` (pynq/pl_server/device.py):
``Overlay`` asks it for the bitfile's metadata and to program the PL,
``allocate`` for DMA buffers, ``MMIO`` to read and write registers. PYNQ's
own tests drive Overlay, MMIO and buffers with software devices
(tests/mock_devices.py in Xilinx/PYNQ); this one models a whole Zynq board
behind that interface, so that ``pynq.Overlay``, ``pynq.allocate``,
``pynq.MMIO``, ``pynq.ps.Clocks`` and finn-plus-driver's ``FINNDMAOverlay``
run unchanged on top of it:

* DDR: every ``allocate`` gets physical addresses in the board's DDR range.
  Cacheable buffers have separate CPU and DDR copies that only ``flush`` and
  ``invalidate`` synchronise, as the ARM's caches do, so a driver that forgets
  one reads or sends stale data here as it would on the board.
* The processing system's clock registers (Zynq-7000 SLCR, UltraScale+
  CRL/CRF APB) as plain registers with a booted PYNQ image's PLL settings, so
  ``Clocks`` reads and programs the PL clocks as on the board.
* The PL after ``download``: each AXI-lite IP of the .hwh at its address. The
  IODMAs (``idma*``, ``odma*``) implement Vitis HLS's control register
  (ap_start, ap_done cleared on read, ap_idle, ap_ready), their buffer address
  and ``numReps``; on ap_start an input IODMA reads its frames from DDR and
  decodes them (streams.py), the accelerator (fabric.py: FINN executing the
  compiled design) computes, and the output IODMA writes the encoded results
  to DDR, then raises ap_done. The stream between them is a queue, so frames
  wait for an output DMA that has not been started, as back-pressure makes
  them wait in hardware.
* The runtime-writable layers' parameter memories (a design compiled with
  ``--runtime-weights``): each behind its AXI-lite port at the .hwh's
  address, holding at programming time what the bitstream initialises it
  with (the compiled values, from the accelerator process), taking
  finn-plus-driver's writes and answering its reads as FINN's ``axilite.sv``
  adapter does (an entry wider than 32 bits is committed when its last word
  is written and captured when its first word is read). Before the next
  frames, every memory written since the last run goes to the accelerator
  process, which decodes it and has FINN execute the graph with those
  weights and thresholds.
* Programming checks the .bit header's part against the simulated board's.

``fault="never-done"`` makes the accelerator swallow its input, so the
output IODMA never finishes: what a stuck design does to a driver.
``fault="flip-weight-bit"`` stores the first word of the first weight
memory with its lowest bit inverted: a memory that does not hold what was
written.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pynq
from pynq.buffer import PynqBuffer

from bnnflow_board.deployformat import BoardSpec, normalise_device
from bnnflow_board.errors import BoardError
from bnnflow_board.simulated import streams
from bnnflow_board.simulated.fabric import Fabric

FAULTS = ("never-done", "flip-weight-bit")
_DDR_BASE = 0x1000_0000  # buffers are placed from here; both boards' DDR starts at 0
_PAGE = 4096

# Processing-system register windows PYNQ's Clocks uses (pynq/ps.py)
_PS_WINDOWS = {
    "zynq-7000": ((0xF800_0000, 0x1000),),  # SLCR
    "zynq-ultrascale+": ((0xFF5E_0000, 0x1000), (0xFD1A_0000, 0x1000)),  # CRL_APB, CRF_APB
}


class _Register32:
    """A little-endian register file: address -> u32."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    def read(self, address: int) -> int:
        return self.words.get(address, 0)

    def write(self, address: int, value: int) -> None:
        self.words[address] = value & 0xFFFF_FFFF


class _Stream:
    """The AXI stream from the accelerator to an output IODMA: whole frames, in order."""

    def __init__(self) -> None:
        self.frames: deque[np.ndarray] = deque()
        self.cond = threading.Condition()
        self.closed = False

    def put(self, frames: np.ndarray) -> None:
        with self.cond:
            self.frames.extend(frames)
            self.cond.notify_all()

    def get(self) -> np.ndarray | None:
        with self.cond:
            while not self.frames and not self.closed:
                self.cond.wait()
            return self.frames.popleft() if self.frames else None

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _IODMA:
    """One of FINN's IODMAs behind its Vitis HLS AXI-lite control interface."""

    def __init__(self, device: SimulatedBoardDevice, name: str, config: dict[str, Any]) -> None:
        self.device, self.name, self.config = device, name, config
        self.start = self.done = self.ready = False
        self.idle = True
        self.regs = _Register32()
        self._lock = threading.Lock()

    def read(self, offset: int) -> int:
        if offset == 0x00:
            with self._lock:
                value = self.start | self.done << 1 | self.idle << 2 | self.ready << 3
                self.done = False  # ap_done is clear-on-read in Vitis HLS's control register
                self.ready = False
            return value
        return self.regs.read(offset)

    def write(self, offset: int, value: int) -> None:
        if offset == 0x00:
            if value & 1:
                with self._lock:
                    if self.start or not self.idle:
                        return  # ap_start while busy is ignored by the HLS control logic
                    self.start, self.idle = True, False
                threading.Thread(target=self._run, name=f"simulated {self.name}", daemon=True).start()
            return
        self.regs.write(offset, value)

    def _finish(self) -> None:
        with self._lock:
            self.start, self.idle, self.done, self.ready = False, True, True, True

    def _run(self) -> None:
        try:
            address = self.regs.read(0x10) | self.regs.read(0x14) << 32
            reps = self.regs.read(0x1C)
            nbytes = int(self.config["frame_bytes"])
            elements = int(np.prod(self.config["shape"]))
            if self.config["direction"] == "in":
                raw = self.device.ddr_read(address, reps * nbytes, self.name)
                frames = streams.decode(
                    raw, reps, elements, self.config["datatype"], int(self.config.get("words", 0)), nbytes
                )
                self._finish()  # the input DMA is done once it has streamed its frames in
                self.device.accelerate(frames)
            else:
                for k in range(reps):
                    frame = self.device.output_stream.get()
                    if frame is None:
                        return  # device closed while waiting: never done, as in hardware
                    self.device.ddr_write(address + k * nbytes, frame, self.name)
                self._finish()
        except Exception as exc:  # a bus error or a failed accelerator: the DMA never finishes
            self.device.record_fault(f"{self.name}: {exc}")


def _stored_entries(spec: dict[str, Any]) -> np.ndarray:
    """Which entries of the address space hold something (bool per entry).

    A Thresholding layer's address concatenates channel fold, PE and step, each
    field a power of two wide; entries of a PE or step beyond the real ones, or
    of a channel fold beyond the last, store nothing: FINN's thresholding.sv
    drops writes to them and reads them as 0 (a read-back goes down the
    pipeline with value 0 and no stage replaces it). An MVAU's entries are its
    memory lines, all stored.
    """
    entries = int(spec["words"]) // int(spec["slot_words"])
    if spec["kind"] != "thresholds":
        return np.ones(entries, dtype=bool)
    pe, steps, channels = int(spec["pe"]), int(spec["cols"]), int(spec["rows"])
    nb, pb = max(steps - 1, 0).bit_length(), max(pe - 1, 0).bit_length()
    e = np.arange(entries)
    return (
        ((e & ((1 << nb) - 1)) < steps)
        & (((e >> nb) & ((1 << pb) - 1)) < pe)
        & ((e >> (nb + pb)) < channels // pe)
    )


class _WeightMemory:
    """A runtime-writable layer's parameter memory behind FINN's AXI-lite adapter (axilite.sv)."""

    def __init__(self, name: str, spec: dict[str, Any], init: np.ndarray, size: int, flip: bool) -> None:
        self.name, self.spec = name, spec
        self.fold, self.slot = int(spec["fold"]), int(spec["slot_words"])
        self.stored = _stored_entries(spec)
        self.words = np.zeros(len(self.stored) * self.slot, dtype=np.uint32)
        self.words[: len(init)] = init
        self.flip = flip
        self.staged = [0] * self.fold  # slices of an entry waiting for its last one
        self.captured = [0] * self.fold  # the entry fetched by the last read of its first slice
        self.dirty = True  # the accelerator has not seen this content yet
        self.lock = threading.Lock()

    def write(self, offset: int, value: int) -> None:
        word = offset // 4
        line, part = divmod(word, self.slot)
        if part >= self.fold or line >= len(self.stored) or not self.stored[line]:
            return  # no slice or no entry there: the write is dropped
        if self.flip and word == 0:
            value ^= 1
        with self.lock:
            if self.fold == 1:
                self.words[word] = value
            else:
                self.staged[part] = value
                if part == self.fold - 1:
                    self.words[line * self.slot : line * self.slot + self.fold] = self.staged
            self.dirty = True

    def read(self, offset: int) -> int:
        word = offset // 4
        line, part = divmod(word, self.slot)
        if part >= self.fold or line >= len(self.stored) or not self.stored[line]:
            return 0
        if self.fold == 1:
            return int(self.words[word])
        if part == 0:
            self.captured = [int(w) for w in self.words[line * self.slot : line * self.slot + self.fold]]
        return self.captured[part]

    def take(self) -> np.ndarray | None:
        """The memory's words if written since the last call, else None."""
        with self.lock:
            if not self.dirty:
                return None
            self.dirty = False
            return self.words[: int(self.spec["n"])].copy()


class SimulatedBoardDevice(pynq.Device):
    """A Pynq-Z2 or Ultra96 in software; see the module docstring."""

    def __init__(self, board: BoardSpec, fabric: Fabric | None, fault: str | None = None) -> None:
        super().__init__(f"simulated_{board.name}")
        if fault is not None and fault not in FAULTS:
            raise BoardError(f"simulated board: unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        self.board = board
        self.simulated_board = board.name
        self.name = f"simulated {board.name}"
        self.arch = board.arch  # pynq.ps.Clocks picks the Zynq-7000 or UltraScale+ clock registers by this
        self.capabilities = {"REGISTER_RW": True}  # MMIO goes through read_registers / write_registers
        self.fabric = fabric
        self.fault = fault
        self.faults: list[str] = []
        self.bitfile_name = ""
        self.timestamp = ""
        self.downloads = 0  # times the PL was programmed
        self.output_stream = _Stream()
        self._ps = _Register32()
        self._ips: dict[int, tuple[int, Any]] = {}  # base -> (range, _IODMA or _WeightMemory)
        self.memories: dict[str, _WeightMemory] = {}
        self.parameter_writes: list[list[dict[str, Any]]] = []  # what the accelerator took, per run
        self._buffers: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # bo -> (address, ddr, host)
        self._next_bo = 1
        self._next_address = _DDR_BASE
        self._init_ps_clocks()

    # --- pynq.Device: metadata and programming -------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str) -> Any:
        """PYNQ's own parsers: pynqmetadata for the .hwh, pynq's header parser for the .bit."""
        from pynq.pl_server.embedded_device import bit2bin
        from pynqmetadata.frontends import Metadata
        from pynqmetadata.views.runtime import RuntimeMetadataParser

        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise BoardError(f"no {hwh.name} next to {bitfile_name}: PYNQ needs it to load the overlay")
        parser = RuntimeMetadataParser(Metadata(input=str(hwh)))
        parser.bin_data = bit2bin(Path(bitfile_name).read_bytes())
        parser.xclbin_data = None
        parser.dtbo_data = None
        return parser

    def download(self, bitstream: Any, parser: Any = None) -> None:
        from pynq.pl_server.embedded_device import parse_bit_header

        header = parse_bit_header(Path(bitstream.bitfile_name).read_bytes())
        part = normalise_device(str(header.get("part", "")))
        want = self.board.device + self.board.package
        if part != want:
            # The FPGA manager refuses a bitstream for another device.
            raise BoardError(f"{self.name}: cannot program a bitstream for {part} into a {want}")
        self._reset_pl()
        self.downloads += 1
        if self.fabric is not None and self.fault != "never-done":
            self.fabric.prepare()
        memories = self.fabric.memories if self.fabric is not None else {}
        for name, ip in (parser.ip_dict if parser is not None else {}).items():
            if name.startswith(("idma", "odma")):
                if self.fabric is None or name not in self.fabric.iodmas:
                    raise BoardError(f"{self.name}: the .hwh's {name} is not an IODMA of the compiled design")
                self._ips[int(ip["phys_addr"])] = (
                    int(ip["addr_range"]),
                    _IODMA(self, name, self.fabric.iodmas[name]),
                )
            elif name.startswith("StreamingDataflowPartition_"):
                if name not in memories:
                    raise BoardError(
                        f"{self.name}: the .hwh gives {name} an AXI-lite port, but it holds no "
                        "runtime-writable layer of the compiled design"
                    )
                spec, init = memories[name]
                size = int(ip["addr_range"])
                if size < 4 * int(spec["words"]):
                    raise BoardError(
                        f"{self.name}: the .hwh gives {name} {size} bytes, its memory spans "
                        f"{4 * int(spec['words'])}"
                    )
                flip = self.fault == "flip-weight-bit" and not self.memories
                self.memories[name] = _WeightMemory(name, spec, init, size, flip)
                self._ips[int(ip["phys_addr"])] = (size, self.memories[name])
        missing = sorted(set(memories) - set(self.memories))
        if missing:
            raise BoardError(f"{self.name}: the .hwh has no AXI-lite port for {', '.join(missing)}")
        # pynq.ps.Clocks keeps one instance per process, bound to the first device it saw
        if getattr(pynq.ps.Clocks, "_real_instance", None) is not None:
            del pynq.ps.Clocks._real_instance
        self.post_download(bitstream, parser, self.name)

    def _reset_pl(self) -> None:
        self.output_stream.close()
        self.output_stream = _Stream()
        self._ips.clear()
        self.memories.clear()
        self.faults.clear()

    def close(self) -> None:
        self._reset_pl()
        if self.fabric is not None:
            self.fabric.close()

    # --- the accelerator between the IODMAs ----------------------------------------------------
    def accelerate(self, frames: np.ndarray) -> None:
        if self.fault == "never-done":
            return
        assert self.fabric is not None
        written = [(name, words) for name, mem in self.memories.items() if (words := mem.take()) is not None]
        if written:
            self.parameter_writes.append(self.fabric.write_parameters(written))
        idma = next(d for d in self.fabric.iodmas.values() if d["direction"] == "in")
        odma = next(d for d in self.fabric.iodmas.values() if d["direction"] == "out")
        out = self.fabric.run(frames, idma["shape"], odma["shape"])
        self.output_stream.put(list(streams.encode(out, odma["datatype"])))

    def record_fault(self, message: str) -> None:
        self.faults.append(message)

    # --- DDR ----------------------------------------------------------------------------------------
    def allocate(self, shape: Any, dtype: Any, cacheable: bool = True, **_kwargs: Any) -> PynqBuffer:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        address = self._next_address
        self._next_address += (max(nbytes, 1) + _PAGE - 1) // _PAGE * _PAGE
        if self._next_address > self.board.ddr_bytes:
            raise BoardError(f"{self.name}: out of DDR for a {nbytes}-byte buffer")
        ddr = np.zeros(nbytes, dtype=np.uint8)
        host = np.zeros(nbytes, dtype=np.uint8) if cacheable else ddr
        bo, self._next_bo = self._next_bo, self._next_bo + 1
        self._buffers[bo] = (address, ddr, host)
        buf = PynqBuffer(
            shape, dtype, buffer=host, device=self, device_address=address, bo=bo, coherent=not cacheable
        )
        weakref.finalize(buf, self._buffers.pop, bo, None)
        return buf

    def flush(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        _, ddr, host = self._buffers[bo]
        ddr[offset : offset + length] = host[offset : offset + length]

    def invalidate(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        _, ddr, host = self._buffers[bo]
        host[offset : offset + length] = ddr[offset : offset + length]

    def _ddr_region(self, address: int, length: int, who: str) -> np.ndarray:
        for start, ddr, _ in list(self._buffers.values()):
            if start <= address and address + length <= start + len(ddr):
                return ddr[address - start : address - start + length]
        raise BoardError(f"{who} accessed {length} bytes at 0x{address:x}, outside every allocated buffer")

    def ddr_read(self, address: int, length: int, who: str) -> np.ndarray:
        return self._ddr_region(address, length, who).copy()

    def ddr_write(self, address: int, data: np.ndarray, who: str) -> None:
        self._ddr_region(address, len(data), who)[:] = data

    # --- registers ------------------------------------------------------------------------------------
    def _target(self, address: int) -> tuple[Any, int]:
        for base, (size, ip) in self._ips.items():
            if base <= address < base + size:
                return ip, address - base
        for base, size in _PS_WINDOWS[self.board.family]:
            if base <= address < base + size:
                return self._ps, address
        raise BoardError(f"{self.name}: bus error, nothing answers at 0x{address:08x}")

    def read_registers(self, address: int, length: int) -> bytes:
        out = bytearray()
        for a in range(address, address + length, 4):
            target, offset = self._target(a)
            out += int(target.read(offset)).to_bytes(4, "little")
        return bytes(out[:length])

    def write_registers(self, address: int, data: bytes) -> None:
        data = bytes(data) + b"\0" * (-len(data) % 4)
        for k in range(0, len(data), 4):
            target, offset = self._target(address + k)
            target.write(offset, int.from_bytes(data[k : k + 4], "little"))

    def _init_ps_clocks(self) -> None:
        """The PLL and PL clock settings of a booted PYNQ image, through PYNQ's own register maps."""
        from pynq.ps import ZU_CRF_REGISTERS, ZU_CRL_REGISTERS, ZYNQ_SLCR_REGISTERS
        from pynq.registers import RegisterMap

        if self.board.family == "zynq-7000":
            slcr = RegisterMap.create_subclass("SimSLCR", ZYNQ_SLCR_REGISTERS)(
                pynq.MMIO(0xF800_0000, 0x200, device=self).array
            )
            slcr.IO_PLL_CTRL.PLL_FDIV = 20  # 50 MHz PS_CLK x 20 = IO PLL 1000 MHz
            slcr.ARM_PLL_CTRL.PLL_FDIV = 26  # ARM PLL 1300 MHz
            slcr.DDR_PLL_CTRL.PLL_FDIV = 21
            slcr.ARM_CLK_CTRL.SRCSEL = 0
            slcr.ARM_CLK_CTRL.DIVISOR = 2  # Cortex-A9 at 650 MHz
            for fclk in (slcr.FPGA0_CLK_CTRL, slcr.FPGA1_CLK_CTRL, slcr.FPGA2_CLK_CTRL, slcr.FPGA3_CLK_CTRL):
                fclk.SRCSEL = 0
                fclk.DIVISOR0 = 10  # 1000 MHz / 10 = 100 MHz
                fclk.DIVISOR1 = 1
        else:
            crl = RegisterMap.create_subclass("SimCRL", ZU_CRL_REGISTERS)(
                pynq.MMIO(0xFF5E_0000, 0x100, device=self).array
            )
            crf = RegisterMap.create_subclass("SimCRF", ZU_CRF_REGISTERS)(
                pynq.MMIO(0xFD1A_0000, 0x100, device=self).array
            )
            crl.IOPLL_CTRL.FBDIV = 90  # 33.333 MHz x 90 / 2 = 1500 MHz
            crl.IOPLL_CTRL.DIV2 = 1
            crf.APLL_CTRL.FBDIV = 72  # 33.333 MHz x 72 / 2 = 1200 MHz
            crf.APLL_CTRL.DIV2 = 1
            crf.ACPU_CTRL.SRCSEL = 0
            crf.ACPU_CTRL.DIVISOR0 = 1  # Cortex-A53 at 1200 MHz
            for pl in (crl.PL0_REF_CTRL, crl.PL1_REF_CTRL, crl.PL2_REF_CTRL, crl.PL3_REF_CTRL):
                pl.SRCSEL = 0
                pl.DIVISOR0 = 15  # 1500 MHz / 15 = 100 MHz
                pl.DIVISOR1 = 1
