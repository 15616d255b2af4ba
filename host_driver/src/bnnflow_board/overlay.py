"""The FPGA side: finn-plus-driver's ``FINNDMAOverlay`` with a deadline and checked inputs.

finn-plus-driver (1.6.1) polls the output DMA's ap_done bit with no time limit
(``wait_until_finished``): a design that never finishes, or a bitfile that is
not the design settings.json describes, hangs Python. ``DeadlineDMAOverlay``
polls the same register with a deadline and then fails with a clear error;
everything else (buffers, packing, DMA programming) is finn-plus-driver's.
``FpgaRunner`` adds the checks a user's images need before they reach the
packing code (whose own checks are bare asserts).

Runtime-writable weights (a design compiled with ``--runtime-weights``) are
written by finn-plus-driver's ``load_runtime_weights`` (each
``<partition>_<layer>_<node>.dat`` to ``StreamingDataflowPartition_<partition>``'s
AXI-lite port from offset 0), when the overlay loads and again by
``FpgaRunner.load_weights``. Its own check of what it wrote is a bare
``assert`` over a numpy copy of the port's memory map, which is no numpy
array where PYNQ reaches the registers by reads and writes; here every word
is read back through the same MMIO and a difference is a
``WeightReadbackError`` naming the file, the word and both values.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board._qonnx import ensure_qonnx_importable
from bnnflow_board.deadline import run_deadline_s
from bnnflow_board.errors import BoardError
from bnnflow_board.hostbits import pack_bits

ensure_qonnx_importable()

from finn_plus_driver.overlays.dma import FINNDMAOverlay  # noqa: E402

# Vitis HLS control register of FINN's IODMAs (offset 0x00)
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
SPIN_S = 1e-3  # poll without sleeping this long first: a small design answers in microseconds


class AcceleratorTimeout(BoardError):
    pass


class WeightReadbackError(BoardError):
    """A runtime-writable layer's memory does not read back what was written into it."""


def runtime_weight_files(folder: Path) -> list[tuple[Path, int, np.ndarray]]:
    """The .dat files finn-plus-driver loads from ``folder``: (file, partition index, 32-bit words)."""
    out = []
    for path in sorted(folder.glob("*.dat")):
        try:
            words = np.array([int(x, 16) for x in path.read_text().split()], dtype=np.uint32)
            sdp = int(path.name.split("_")[0])
        except (OSError, ValueError) as exc:
            raise BoardError(f"{path} is not one of FINN's runtime weight files: {exc}") from None
        out.append((path, sdp, words))
    return out


class DeadlineDMAOverlay(FINNDMAOverlay):
    """FINNDMAOverlay whose wait for the output DMA gives up at a deadline."""

    def __init__(self, *args: Any, timeout_s: float = 10.0, per_frame_s: float = 0.01, **kwargs: Any) -> None:
        self.timeout_s = float(timeout_s)
        self.per_frame_s = float(per_frame_s)
        self.stuck = False
        self._batch_in_flight = 1
        super().__init__(*args, **kwargs)

    def load_runtime_weights(self, flush_accel: bool = True, verify: bool = True) -> None:
        """finn-plus-driver's writes, then every word read back and compared, then the flush run."""
        try:
            super().load_runtime_weights(flush_accel=False, verify=False)
        except (FileNotFoundError, RuntimeError) as exc:
            raise BoardError(f"runtime weights: {str(exc).splitlines()[0]}") from None
        folder = Path(self.runtime_weight_dir)
        files = runtime_weight_files(folder) if folder.is_dir() else []
        self.runtime_weights_written = [(f.name, len(w)) for f, _, w in files]
        if verify:
            for path, sdp, words in files:
                name = f"StreamingDataflowPartition_{sdp}"
                got = np.fromiter((int(v) for v in getattr(self, name).mmio.array[: len(words)]), np.uint32)
                bad = np.flatnonzero(got != words)
                if len(bad):
                    i = int(bad[0])
                    raise WeightReadbackError(
                        f"runtime weights read back wrong: {path.name}: word {i} (offset 0x{4 * i:x} of "
                        f"{name}) reads 0x{int(got[i]):08x}, 0x{int(words[i]):08x} was written "
                        f"({len(bad)} of {len(words)} words differ)"
                    )
        if flush_accel and files:
            # as finn-plus-driver does: one run pushes stale weights out of the weight streamers' FIFOs
            self.execute_on_buffers()

    def pack_input(self, ibuf_folded: Any, ind: int = 0) -> Any:
        """A 1-bit input (a host-binarized design's) packed by numpy in finn-plus-driver's bit order
        (hostbits.py); any other datatype by finn-plus-driver."""
        if self.idt(ind).bitwidth() == 1 and self.idt(ind).min() == 0:  # BINARY, not BIPOLAR
            return pack_bits(ibuf_folded)
        return super().pack_input(ibuf_folded, ind)

    def execute_on_buffers(self, asynch: bool = False, batch_size: int | None = None) -> None:
        if self.stuck:
            raise AcceleratorTimeout("the accelerator did not finish an earlier run; reload the bitfile")
        self._batch_in_flight = self.batch_size if batch_size is None else batch_size
        super().execute_on_buffers(asynch=asynch, batch_size=batch_size)

    def wait_until_finished(self) -> None:
        if self.platform != "zynq-iodma":
            return super().wait_until_finished()
        limit = run_deadline_s(self.timeout_s, self.per_frame_s, self._batch_in_flight)
        start = time.monotonic()
        deadline = start + limit
        for o, odma in enumerate(self.odma):
            status = odma.read(0x00)
            while not status & AP_DONE:
                faults = getattr(self.device, "faults", None)  # the simulated board's record of a failure
                if faults:
                    self.stuck = True
                    raise BoardError(f"simulated board: the accelerator failed: {faults[0]}")
                now = time.monotonic()
                if now > deadline:
                    self.stuck = True
                    name = self.io_shape_dict.get("odma_names", [f"odma{o}"])[o]
                    raise AcceleratorTimeout(
                        f"the FPGA did not finish a batch of {self._batch_in_flight} within {limit:g} s: "
                        f"{name} still busy (control 0x{status:02x}: ap_start={status & AP_START}, "
                        f"ap_idle={int(bool(status & AP_IDLE))}); the design is stuck or is not the one "
                        f"driver/settings.json describes"
                    )
                if now - start > SPIN_S:
                    time.sleep(1e-4)
                status = odma.read(0x00)
        return None


class FpgaRunner:
    """Loads the bitfile and runs uint8 images (in the accelerator's input layout) through it."""

    def __init__(
        self,
        bitfile: Path,
        driver: dict[str, Any],
        device: Any = None,
        timeout_s: float = 10.0,
        per_frame_s: float = 0.01,
        runtime_weight_dir: Path | None = None,
    ) -> None:
        """Program the FPGA with ``bitfile``; finn-plus-driver then writes the runtime weight files of
        ``runtime_weight_dir`` (the package's ``driver/runtime_weights``, or the active update's)."""
        self.driver = driver
        shapes = driver["io_shape_dict"]
        self.in_shape = tuple(int(d) for d in shapes["ishape_normal"][0][1:])
        self.out_shape = tuple(int(d) for d in shapes["oshape_normal"][0][1:])
        try:
            self.overlay = DeadlineDMAOverlay(
                str(bitfile),
                platform=driver["platform"],
                io_shape_dict=dict(shapes),
                batch_size=1,
                fclk_mhz=driver.get("fclk_mhz", 100.0),
                device=device,
                # a design without runtime-writable layers has no such folder, and the driver skips it
                runtime_weight_dir=str(runtime_weight_dir or Path(bitfile).parent / "runtime_weights"),
                runtime_weights=driver.get("runtime_weights", False),
                timeout_s=timeout_s,
                per_frame_s=per_frame_s,
            )
        except BoardError:
            raise
        except AttributeError as exc:  # pynq: an IP named in settings.json is not in the overlay
            raise BoardError(f"the bitfile lacks an IP driver/settings.json names: {exc}") from None
        self.fclk_mhz_actual = getattr(self.overlay, "fclk_mhz_actual", None)

    def _check(self, images: np.ndarray) -> np.ndarray:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            got = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            raise BoardError(f"images must be a uint8 numpy array (raw pixels), got {got}")
        if images.ndim != len(self.in_shape) + 1 or tuple(images.shape[1:]) != self.in_shape:
            raise BoardError(
                f"the accelerator takes images of shape (N, {', '.join(map(str, self.in_shape))}), "
                f"got {images.shape}"
            )
        if len(images) == 0:
            raise BoardError("no images to run")
        return images

    def set_batch(self, n: int) -> None:
        if self.overlay.batch_size != n:
            self.overlay.batch_size = n  # reallocates the DMA buffers

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Class indices (int64) for a batch of images, through packing, DMA and the accelerator."""
        images = self._check(images)
        self.set_batch(len(images))
        out = self.overlay.execute(images)
        return np.asarray(out).reshape(len(images), -1)[:, 0].astype(np.int64)

    def classify_all(self, images: np.ndarray, chunk: int) -> np.ndarray:
        """``classify`` over a whole set, ``chunk`` images per DMA run."""
        return np.concatenate([self.classify(images[i : i + chunk]) for i in range(0, len(images), chunk)])

    def load(self, images: np.ndarray) -> None:
        """Pack and copy a batch into the input buffer, not run (to time the accelerator alone)."""
        images = self._check(images)
        self.set_batch(len(images))
        packed = self.overlay.pack_input(self.overlay.fold_input(images))
        self.overlay.copy_input_data_to_device(packed)

    def run_loaded(self) -> None:
        self.overlay.execute_on_buffers()

    def load_weights(self, folder: Path) -> list[tuple[str, int]]:
        """Write a folder of runtime weight files into the running FPGA (no new bitstream), read every
        word back, flush; returns (file, words) per layer written."""
        if not list(Path(folder).glob("*.dat")):
            raise BoardError(f"{folder} holds no runtime weight files")
        self.overlay.runtime_weight_dir = str(folder)
        self.overlay.load_runtime_weights()
        return list(self.overlay.runtime_weights_written)
