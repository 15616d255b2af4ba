"""The C engine's speed on the boards' ARM cores, estimated from its own instructions.

The engine's kernels are compiled with the board build's compiler and flags and
``-DBNN_MCA_MARKERS`` (``cpu/src/mca_markers.h``), which puts llvm-mca region
markers around each kernel's inner-loop body; LLVM's ``llvm-mca`` gives the
cycles per iteration of each region on the board's core (its Cortex-A9 and
Cortex-A53 scheduling models), and the model file gives how many times each
region runs per image, layer by layer. Modelled: the binary MVAU/conv inner
loops, the 8-bit first layer's inner loop and thresholding to bits. Neglected:
loop control around the marked bodies, each output block's epilogue (the
threshold compare and store), max-pooling, the int8 input copy, label select,
and cache misses (see ``Estimate.fits_l1``/``fits_l2``). The same method on the
x86 kernels, against the engine measured on the same CPU, calibrates it
(``benchmarks/arm_estimate.py --calibrate``, ``docs/arm-estimate.md``).

Everything here is an estimate, and is labelled as one wherever it is shown;
a missing tool gives a reason string, never an exception.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bnnflow.bnncpu.modelfile import CpuModel, LayerKind, ValueType, read_model

CPU_DIR = Path(__file__).resolve().parents[3] / "cpu"
LLVM_MCA = "llvm-mca"


@dataclass(frozen=True)
class Target:
    """A CPU core and the kernel set the engine runs on it."""

    key: str
    label: str  # e.g. "Pynq-Z2 (Zynq-7020), Cortex-A9 at 650 MHz"
    kernels: str  # "neon", "avx2", "avx512": the region names' prefix
    sources: tuple[str, ...]  # the kernel files under cpu/src
    compilers: tuple[tuple[str, ...], ...]  # candidates: the command and its flags, first found wins
    mca: tuple[str, ...]  # llvm-mca's -mtriple/-mcpu/-mattr
    group: int  # output pixels sharing one weight load in the binary kernel
    mhz: float = 0.0
    cores: int = 1
    l1d_kb: int = 0
    l2_kb: int = 0
    clock_source: str = ""


_BASE = ("-std=c11", "-O2", "-D_POSIX_C_SOURCE=200809L", "-fPIC", "-fvisibility=hidden", "-DBNN_MCA_MARKERS")
# The board build's flags (cpu/Makefile ARMHF_VARS / AARCH64_VARS, NEON_CFLAGS).
_ARMHF = ("-mcpu=cortex-a9", "-mfpu=vfpv3-d16", "-mfloat-abi=hard", "-mfpu=neon")
_CLANG_ARMHF = ("clang", "--target=armv7a-linux-gnueabihf", "-isystem", "/usr/arm-linux-gnueabihf/include")
_CLANG_A64 = ("clang", "--target=aarch64-linux-gnu", "-isystem", "/usr/aarch64-linux-gnu/include")

TARGETS: dict[str, Target] = {
    "pynq-z2": Target(
        "pynq-z2",
        "Pynq-Z2 (Zynq-7020), Cortex-A9 at 650 MHz",
        "neon",
        ("arm/neon.c",),
        (("arm-linux-gnueabihf-gcc", *_BASE, *_ARMHF), (*_CLANG_ARMHF, *_BASE, *_ARMHF)),
        ("-mtriple=armv7a-linux-gnueabihf", "-mcpu=cortex-a9", "-mattr=+neon"),
        2,
        650.0,
        2,
        32,
        512,
        "the TUL Pynq-Z2 and PYNQ documentation (the PS runs its Cortex-A9 at 650 MHz;"
        " Xilinx DS190 allows up to 667 MHz for the -1 part xc7z020clg400-1)",
    ),
    "ultra96": Target(
        "ultra96",
        "Ultra96 (ZU3EG), Cortex-A53 at 1200 MHz",
        "neon",
        ("arm/neon.c",),
        (("aarch64-linux-gnu-gcc", *_BASE, "-mcpu=cortex-a53"), (*_CLANG_A64, *_BASE, "-mcpu=cortex-a53")),
        ("-mtriple=aarch64-linux-gnu", "-mcpu=cortex-a53"),
        2,
        1200.0,
        4,
        32,
        1024,
        "Avnet's Ultra96 documentation and Xilinx DS891/DS925"
        " (ZU3EG, -1 part xczu3eg-sbva484-1: Cortex-A53 up to 1.2 GHz)",
    ),
    # The x86 kernel sets, for the calibration against the engine measured here.
    # LLVM 14 has no Zen 4 model: znver3 for AVX2, icelake-server for AVX-512.
    "x86-avx2": Target(
        "x86-avx2",
        "x86-64 AVX2 kernels, llvm-mca znver3",
        "avx2",
        ("x86/avx2.c",),
        (("gcc", *_BASE), ("clang", *_BASE)),
        ("-mtriple=x86_64-linux-gnu", "-mcpu=znver3"),
        4,
    ),
    "x86-avx512": Target(
        "x86-avx512",
        "x86-64 AVX-512 kernels, llvm-mca icelake-server",
        "avx512",
        ("x86/avx512.c", "x86/avx2.c"),  # its thresholding is AVX2's
        (("gcc", *_BASE), ("clang", *_BASE)),
        ("-mtriple=x86_64-linux-gnu", "-mcpu=icelake-server"),
        8,
    ),
}
BOARDS = ("pynq-z2", "ultra96")

_REGION = re.compile(r"Code Region - (\S+)")
_ITER = re.compile(r"^Iterations:\s+(\d+)", re.M)
_CYCLES = re.compile(r"^Total Cycles:\s+(\d+)", re.M)


def parse_mca(text: str) -> dict[str, float]:
    """Cycles per iteration of each named region in llvm-mca's output (total cycles over
    iterations, so loop-carried dependencies count). A name that appears more than once
    (one loop inlined at two call sites) keeps its largest figure."""
    out: dict[str, float] = {}
    parts = _REGION.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        it, cy = _ITER.search(body), _CYCLES.search(body)
        if not it or not cy or int(it.group(1)) == 0:
            continue
        per = int(cy.group(1)) / int(it.group(1))
        out[name] = max(per, out.get(name, 0.0))
    return out


def _compile_and_analyse(
    t: Target, cmd: tuple[str, ...], src: Path, mca: str, tmp: str
) -> str | dict[str, float]:
    asm = Path(tmp) / (src.stem + ".s")
    inc = ["-I", str(CPU_DIR / "include"), "-I", str(CPU_DIR / "src")]
    r = subprocess.run([*cmd, *inc, "-S", str(src), "-o", str(asm)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"{cmd[0]} failed on {src.name}: {r.stderr.strip()[-300:]}"
    r = subprocess.run([mca, *t.mca, str(asm)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"llvm-mca failed on {src.name}: {r.stderr.strip()[-300:]}"
    return parse_mca(r.stdout)


@functools.cache
def kernel_cycles(key: str, mca: str = LLVM_MCA) -> dict[str, float] | str:
    """Cycles per iteration of the target's marked loops, or why there are none."""
    t = TARGETS[key]
    if shutil.which(mca) is None:
        return f"llvm-mca not found ({mca}; Debian: apt-get install llvm-14)"
    cmd = next((c for c in t.compilers if shutil.which(c[0])), None)
    if cmd is None:
        return f"no compiler for {t.key} ({' or '.join(c[0] for c in t.compilers)})"
    cycles: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in t.sources:
            src = CPU_DIR / "src" / name
            if not src.is_file():
                return f"the engine's source is not here ({src})"
            got = _compile_and_analyse(t, cmd, src, mca, tmp)
            if isinstance(got, str):
                return got
            cycles.update({k: v for k, v in got.items() if k not in cycles})
    return cycles or "llvm-mca found no marked regions"


@dataclass
class LayerEstimate:
    index: int  # 1-based, as bnnflow-cpu info numbers them
    kind: str
    regions: dict[str, int]  # region -> iterations per image
    cycles: float
    binary_macs: int = 0
    int8_macs: int = 0
    weight_bytes: int = 0
    note: str = ""


@dataclass
class Estimate:
    target: Target
    layers: list[LayerEstimate] = field(default_factory=list)
    neglected: list[str] = field(default_factory=list)

    @property
    def cycles(self) -> float:
        return sum(la.cycles for la in self.layers)

    @property
    def binary_macs(self) -> int:
        return sum(la.binary_macs for la in self.layers)

    @property
    def weight_bytes(self) -> int:
        return sum(la.weight_bytes for la in self.layers)

    @property
    def macs_per_cycle(self) -> float:
        return self.binary_macs / self.cycles if self.cycles else 0.0

    def seconds(self, mhz: float | None = None) -> float:
        return self.cycles / ((mhz or self.target.mhz) * 1e6)

    @property
    def images_per_s(self) -> float:
        """Batch 1, one core."""
        return 1.0 / self.seconds()

    @property
    def images_per_s_all_cores(self) -> float:
        """A batch split over every core, each running at the one-core rate: an upper bound
        (the cores share the L2 and the memory port)."""
        return self.images_per_s * self.target.cores

    @property
    def fits_l1(self) -> bool:
        return self.weight_bytes <= self.target.l1d_kb * 1024

    @property
    def fits_l2(self) -> bool:
        return self.weight_bytes <= self.target.l2_kb * 1024


# The AVX2 kernel's nibble-table path (cpu/src/model.c: splits_weights): layers
# of bits out with 4 output pixels or more and windows of at most 511 words.
NIB_MAX_WORDS = 511


def _bgemm_counts(t: Target, n_pix: int, n_blocks: int, window: int, bits_out: bool) -> dict[str, int]:
    if t.kernels == "avx2" and bits_out and n_pix >= 4 and window <= NIB_MAX_WORDS:
        # Steps of two window nibbles (8 per word), 2 pixels x 4 groups of 16 channels.
        quads, ones = divmod(math.ceil(n_blocks / 2), 4)
        pairs, odd = divmod(n_pix, 2)
        counts = {
            f"avx2_bgemm_nib_p{p}c{c}": n_p * n_c * window * 8
            for p, n_p in ((2, pairs), (1, odd))
            for c, n_c in ((4, quads), (1, ones))
        }
        return {k: v for k, v in counts.items() if v}
    g = t.group
    counts = {
        f"{t.kernels}_bgemm_p{g}": n_blocks * (n_pix // g) * window,
        f"{t.kernels}_bgemm_p1": n_blocks * (n_pix % g) * window,
    }
    return {k: v for k, v in counts.items() if v}


def _i8gemm_counts(t: Target, n_pix: int, n_blocks8: int, kernel: int, run_pairs: int) -> dict[str, int]:
    fours, ones = divmod(n_blocks8, 4)
    if t.kernels == "neon":
        return {"neon_i8gemm": n_pix * n_blocks8 * kernel * run_pairs}
    if t.kernels == "avx512" and kernel * run_pairs <= 64:
        # Pairs of pairs; a row's odd last pair counts as a whole iteration (a bound).
        per = kernel * math.ceil(run_pairs / 2)
        counts = {}
        for p, n in ((2, n_pix // 2), (1, n_pix % 2)):
            counts[f"avx512_i8gemm_p{p}b4"] = n * fours * per
            counts[f"avx512_i8gemm_p{p}b1"] = n * ones * per
    elif kernel * run_pairs <= 64:  # AVX2: 2 pixels x 4 blocks, 16-bit sums throughout
        per = kernel * run_pairs
        counts = {
            f"avx2_i8gemm_short_p{p}b{b}": n_p * n_b * per
            for p, n_p in ((2, n_pix // 2), (1, n_pix % 2))
            for b, n_b in ((4, fours), (1, ones))
        }
    else:  # AVX2's long windows, and AVX-512's fallback to them
        per = kernel * run_pairs
        counts = {"avx2_i8gemm_b4": n_pix * fours * per, "avx2_i8gemm_b1": n_pix * ones * per}
    return {k: v for k, v in counts.items() if v}


def _layer(t: Target, index: int, la, cycles: dict[str, float]) -> LayerEstimate:
    kind = la.kind.name
    n_pix = la.out_h * la.out_w
    if la.kind == LayerKind.MVAU and la.input_type == ValueType.BITS:
        wpp = math.ceil(la.in_c / 64)
        window, n_blocks = la.kernel * la.kernel_w * wpp, math.ceil(la.out_c / 8)
        regions = _bgemm_counts(t, n_pix, n_blocks, window, la.output_type == ValueType.BITS)
        macs = n_pix * la.out_c * la.k
        est = LayerEstimate(
            index, kind, regions, 0.0, binary_macs=macs, weight_bytes=n_blocks * 8 * window * 8
        )
    elif la.kind == LayerKind.MVAU:
        run_pairs, n_blocks8 = math.ceil(la.kernel_w * la.in_c / 2), math.ceil(la.out_c / 16)
        regions = _i8gemm_counts(t, n_pix, n_blocks8, la.kernel, run_pairs)
        macs = n_pix * la.out_c * la.k
        wbytes = n_blocks8 * 16 * la.kernel * run_pairs * 2
        est = LayerEstimate(index, kind, regions, 0.0, int8_macs=macs, weight_bytes=wbytes)
    elif la.kind == LayerKind.THRESHOLD and la.output_type == ValueType.BITS:
        name = "avx2_threshold" if t.kernels == "avx512" else f"{t.kernels}_threshold"
        est = LayerEstimate(index, kind, {name: la.in_h * la.in_w * math.ceil(la.in_c / 64)}, 0.0)
    else:
        note = {
            "THRESHOLD": "int8 input copy, neglected",
            "MAXPOOL": "OR of bit words, neglected",
            "LABEL_SELECT": "argmax over the scores, neglected",
        }[kind]
        return LayerEstimate(index, kind, {}, 0.0, note=note)
    est.cycles = sum(n * cycles[r] for r, n in est.regions.items())
    return est


def estimate(model: str | Path | CpuModel, key: str, mca: str = LLVM_MCA) -> Estimate | str:
    """Cycles per image of ``model`` on target ``key`` (a board or an x86 kernel set), or
    the reason there is no estimate (llvm-mca or a compiler missing, a bad model file)."""
    if key not in TARGETS:
        return f"no such target {key!r} (one of {', '.join(TARGETS)})"
    cycles = kernel_cycles(key, mca)
    if isinstance(cycles, str):
        return cycles
    try:
        m = model if isinstance(model, CpuModel) else read_model(model)
    except Exception as e:  # noqa: BLE001  (the reason is the product here)
        return f"cannot read the model file: {e}"
    t = TARGETS[key]
    est = Estimate(t)
    for i, la in enumerate(m.layers, 1):
        le = _layer(t, i, la, cycles)
        missing = [r for r in le.regions if r not in cycles]
        if missing:
            return f"llvm-mca gave no figure for {', '.join(missing)}"
        est.layers.append(le)
        if le.note:
            est.neglected.append(f"layer {i} {le.kind}: {le.note}")
    return est


def estimate_arm(model: str | Path | CpuModel, board: str, mca: str = LLVM_MCA) -> Estimate | str:
    """The engine's estimated speed on ``board``'s ARM core ("pynq-z2" or "ultra96")."""
    if board not in BOARDS:
        return f"no ARM estimate for board {board!r} (one of {', '.join(BOARDS)})"
    return estimate(model, board, mca)


# BNN-PYNQ's published figure for its software path on the Pynq-Z2's Cortex-A9
# (its unoptimised C++ reference, not an XNOR engine): ms per image.
BNN_PYNQ_SOFTWARE_MS = {
    "cnv": (418.0, "BNN-PYNQ notebooks/CNV-QNN_Cifar10.ipynb"),
    "lfc": (17.2, "BNN-PYNQ notebooks/LFC-QNN_MNIST.ipynb"),
}


def board_key(board: str) -> str | None:
    """The estimate's key for a board name of the deployment format (Pynq-Z2, Ultra96, Ultra96-V2)."""
    b = board.lower()
    return "pynq-z2" if b.startswith("pynq-z2") else "ultra96" if b.startswith("ultra96") else None


def bench_summary(model: str | Path, board: str, fpga_fps: float) -> dict:
    """What ``bnnflow bench`` shows of the estimate: the figures, or ``why`` there are none.
    Every figure here is an llvm-mca estimate, never a measurement."""
    key = board_key(board)
    est = estimate_arm(model, key) if key else f"no ARM estimate for board {board!r}"
    if isinstance(est, str):
        return {"where": "estimated", "available": False, "why": est}
    t = est.target
    return {
        "where": "estimated",
        "available": True,
        "why": None,
        "method": "llvm-mca on the NEON kernels' inner loops x the model's iteration counts",
        "cpu": t.label.split(", ", 1)[1],
        "board": t.key,
        "mhz": t.mhz,
        "cores": t.cores,
        "clock_source": t.clock_source,
        "cycles_per_image": est.cycles,
        "images_per_s_1_core": est.images_per_s,
        "images_per_s_all_cores": est.images_per_s_all_cores,
        "binary_macs_per_cycle": est.macs_per_cycle,
        "weight_bytes": est.weight_bytes,
        "weights_fit": "L1" if est.fits_l1 else "L2" if est.fits_l2 else "neither L1 nor L2",
        "neglected": est.neglected,
        "fpga_expected_over_arm_1_core": fpga_fps / est.images_per_s,
        "fpga_expected_over_arm_all_cores": fpga_fps / est.images_per_s_all_cores,
    }
