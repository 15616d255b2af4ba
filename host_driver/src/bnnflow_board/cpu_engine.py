"""The ARM side: bnnflow's C CPU engine, built on the board and called through its C interface.

The package carries the engine's sources (``cpu/``, interface and model file
format in ``cpu/include/bnncpu.h``) and the model file (``model.bnn``). The
board's gcc builds them into a shared library with the board's SIMD flags
(NEON: ``-mfpu=neon`` on the Pynq-Z2's Cortex-A9, where it is optional;
always there on the Ultra96's Cortex-A53), and ctypes calls the header's
functions, so that batch-1 latency is the engine's and not a process start.

This module is the one seam between the board runtime and the engine: how
the sources are found and compiled, and the ctypes declarations of the
functions of bnncpu.h it calls (``bnn_model_load_file``, ``bnn_model_get_info``,
``bnn_context_new``, ``bnn_context_run``, ``bnn_context_run_threads`` and their
``_free``s).

A call's Python cost counts at batch 1 (on a Cortex-A9 it is several times the
x86 figure), so ``CpuEngine.run`` keeps it small with ctypes alone (the board
builds the engine with its Makefile, with no Python headers): prototypes set
once with plain ``c_void_p`` pointers, the data pointers taken through the
buffer protocol (``from_buffer``, several times cheaper than ``.ctypes.data``
or ``__array_interface__``), an image layout checked in full once and then
recognised by its (shape, strides), and ``out=`` to write into the caller's
arrays. Threads come from the context's worker pool, started once.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board.errors import BoardError

# The engine's own Makefile (cpu/Makefile) builds it; these are its per-CPU variables
# (platform.machine()): the boards' cores, with NEON only in the NEON kernels' file
# as the Makefile arranges (NEON_CFLAGS), so the portable code runs on any ARMv7.
MAKE_VARS = {
    "armv7l": {
        "VARIANT_CFLAGS": "-mcpu=cortex-a9 -mfpu=vfpv3-d16 -mfloat-abi=hard",
        "NEON_CFLAGS": "-mfpu=neon",
    },
    "aarch64": {"VARIANT_CFLAGS": "-mcpu=cortex-a53"},
    "x86_64": {},  # the simulated board runs the engine on the host; kernels are chosen at run time
}
# The board's gcc may warn where the development compiler does not: warnings are not errors here.
BOARD_WARNINGS = "-Wall"


class CpuEngineUnavailable(BoardError):
    """The package's engine cannot be built here; the bench reports the FPGA alone and says why."""


# struct bnn_model_info of bnncpu.h. The host's binding (bnnflow.cpu.engine) declares it too:
# the board cannot import bnnflow (torch, FINN, numpy 2), so each side declares what it calls.
class _ModelInfo(ctypes.Structure):
    _fields_ = [
        ("in_c", ctypes.c_uint32),
        ("in_h", ctypes.c_uint32),
        ("in_w", ctypes.c_uint32),
        ("n_classes", ctypes.c_uint32),
        ("n_layers", ctypes.c_uint32),
        ("dataset", ctypes.c_uint32),
        ("binary_macs", ctypes.c_uint64),
        ("integer_macs", ctypes.c_uint64),
        ("model_bytes", ctypes.c_uint64),
        ("context_bytes", ctypes.c_uint64),
    ]


def _make(cpu_dir: Path, build_dir: Path, target: str, arch: str | None) -> Path:
    """``build_dir/target`` built with the engine's Makefile; CpuEngineUnavailable when it cannot be."""
    arch = arch or platform.machine()
    if not (cpu_dir / "include" / "bnncpu.h").is_file():
        raise CpuEngineUnavailable(f"the package has no CPU engine interface ({cpu_dir}/include/bnncpu.h)")
    if not (cpu_dir / "Makefile").is_file() or not any((cpu_dir / "src").glob("*.c")):
        raise CpuEngineUnavailable("the package's cpu/ holds the engine's interface but no engine sources")
    cc = os.environ.get("CC", "gcc")
    for tool in (cc, "make"):
        if shutil.which(tool) is None:
            raise CpuEngineUnavailable(f"no {tool} on this board: apt-get install build-essential")
    build_dir = build_dir.absolute()
    out = build_dir / target
    variables = {"CC": cc, "BUILD": str(build_dir), "WARN": BOARD_WARNINGS, **MAKE_VARS.get(arch, {})}
    cmd = ["make", "--no-print-directory", "-C", str(cpu_dir), *(f"{k}={v}" for k, v in variables.items())]
    r = subprocess.run([*cmd, str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        errors = [line for line in (r.stderr + r.stdout).splitlines() if "error" in line.lower()]
        raise CpuEngineUnavailable(f"the CPU engine did not compile: {(errors or ['?'])[0].strip()}")
    return out


def build_engine(cpu_dir: Path, build_dir: Path, arch: str | None = None) -> Path:
    """Build ``build_dir/libbnncpu.so`` with the engine's Makefile; CpuEngineUnavailable when it cannot be."""
    return _make(cpu_dir, build_dir, "libbnncpu.so", arch)


def c_loop_bench(cpu_dir: Path, build_dir: Path, model: Path, runs: int = 1000) -> dict[str, Any]:
    """The engine timed by its own C tool, ``bnnflow-cpu bench MODEL --json``, with no Python in the loop.

    What Python's per-call overhead hides at batch 1 (on the x86 development machine a TFC
    image took 13 us per call through ctypes, 0.26 us in the C loop): the tool's 200
    warm-up runs, then ``runs`` timed ones on one context (latency min, median, p99), and
    its throughput on one thread and on every core.
    Its JSON also names the kernel set the engine chose on this CPU (``neon`` on the boards).
    """
    tool = _make(cpu_dir, build_dir, "bnnflow-cpu", None)
    cmd = [str(tool), "bench", str(model), "--runs", str(runs), "--json"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise CpuEngineUnavailable("bnnflow-cpu bench did not finish in 600 s") from None
    if r.returncode != 0:
        raise CpuEngineUnavailable(
            f"bnnflow-cpu bench failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    try:
        out = json.loads(r.stdout)
        return {
            "kernels": str(out["kernels"]),
            "runs": int(out["runs"]),
            "latency_us": {k: float(out["latency_us"][k]) for k in ("min", "median", "p99")},
            "batch": int(out["batch"]),
            "throughput": [
                {"threads": int(x["threads"]), "images_per_s": float(x["images_per_s"])}
                for x in out["throughput"]
            ],
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise CpuEngineUnavailable(f"bnnflow-cpu bench printed no report it could read ({exc})") from None


_U8, _I32 = np.dtype(np.uint8), np.dtype(np.int32)
_CHAR, _ADDRESS = ctypes.c_char, ctypes.addressof


class CpuEngine:
    """A loaded model: classes and scores for uint8 images in the dataset's (N, C, H, W) layout."""

    def __init__(self, lib_path: Path, model_path: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        vp, size = ctypes.c_void_p, ctypes.c_size_t
        lib.bnn_model_load_file.argtypes = [ctypes.c_char_p, ctypes.POINTER(vp), ctypes.c_char_p, size]
        lib.bnn_model_load_file.restype = ctypes.c_int
        lib.bnn_model_free.argtypes = [vp]
        lib.bnn_model_get_info.argtypes = [vp, ctypes.POINTER(_ModelInfo)]
        lib.bnn_context_new.argtypes = [vp]
        lib.bnn_context_new.restype = vp
        lib.bnn_context_free.argtypes = [vp]
        lib.bnn_context_run.argtypes = [vp, vp, size, vp, vp]
        lib.bnn_context_run.restype = ctypes.c_int
        lib.bnn_context_run_threads.argtypes = [vp, vp, size, vp, vp, ctypes.c_int]
        lib.bnn_context_run_threads.restype = ctypes.c_int
        lib.bnn_strerror.argtypes = [ctypes.c_int]
        lib.bnn_strerror.restype = ctypes.c_char_p
        self._lib = lib
        model, err = vp(), ctypes.create_string_buffer(256)
        status = lib.bnn_model_load_file(str(model_path).encode(), ctypes.byref(model), err, len(err))
        if status != 0:
            raise BoardError(f"the CPU engine rejected {model_path}: {err.value.decode(errors='replace')}")
        self._model = model
        info = _ModelInfo()
        lib.bnn_model_get_info(model, ctypes.byref(info))
        self.image_shape = (info.in_c, info.in_h, info.in_w)
        self.n_classes = int(info.n_classes)
        self._ctx = lib.bnn_context_new(model)
        self._layouts: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        self._run, self._run_threads = lib.bnn_context_run, lib.bnn_context_run_threads
        if not self._ctx:
            raise BoardError("the CPU engine could not allocate its working buffers")

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        """The images as the engine reads them; a (shape, strides) that passed once is known after."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            got = images.shape if isinstance(images, np.ndarray) else type(images).__name__
            raise BoardError(f"the CPU engine takes uint8 images (N, {self.image_shape}), got {got}")
        if tuple(images.shape[1:]) != self.image_shape:
            raise BoardError(f"the CPU engine takes uint8 images (N, {self.image_shape}), got {images.shape}")
        images = np.ascontiguousarray(images)
        self._layouts.add((images.shape, images.strides))
        return images

    def _check(self, status: int) -> None:
        if status != 0:
            raise BoardError(f"the CPU engine failed: {self._lib.bnn_strerror(status).decode()}")

    def run(
        self, images: np.ndarray, threads: int = 0, out: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(classes, scores), int32; threads=1 runs on the calling thread, 0 on every online core;
        ``out=(classes, scores)``: int32 arrays of shapes (N,) and (N, n_classes) to write into."""
        if (
            images.__class__ is not np.ndarray
            or images.dtype is not _U8
            or ((images.shape, images.strides) not in self._layouts)
        ):
            images = self._check_images(images)
        n = images.shape[0]
        if out is None:
            classes, scores = np.empty(n, _I32), np.empty((n, self.n_classes), _I32)
        else:
            classes, scores = out
            if (
                classes.shape != (n,)
                or scores.shape != (n, self.n_classes)
                or classes.dtype is not _I32
                or (
                    scores.dtype is not _I32 or not (classes.flags.c_contiguous and scores.flags.c_contiguous)
                )
            ):
                raise BoardError(
                    f"out must be int32 C-contiguous arrays of shapes ({n},), ({n}, {self.n_classes})"
                )
        if n:
            try:
                ptr = _ADDRESS(_CHAR.from_buffer(images))
            except (TypeError, ValueError):  # read-only images
                ptr = images.ctypes.data
            args = (ptr, n, _ADDRESS(_CHAR.from_buffer(classes)), _ADDRESS(_CHAR.from_buffer(scores)))
            if threads == 1:
                self._check(self._run(self._ctx, *args))
            else:
                self._check(self._run_threads(self._ctx, *args, threads))
        return classes, scores

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.bnn_context_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._lib.bnn_model_free(self._model)
            self._model = None
