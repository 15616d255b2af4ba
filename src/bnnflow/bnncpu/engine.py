"""``CpuEngine``: the C CPU engine (cpu/, bnncpu.h) from Python, through ctypes.

The engine computes exactly what the compiled FPGA design computes (classes
and the last layer's integer scores), so it is both bnnflow's CPU inference
path and the golden reference the board's answers are checked against. The
shared library is built with the package (setup.py) and loaded on first use;
nothing is compiled at import.

    from bnnflow.cpu import CpuEngine
    engine = CpuEngine("runs/tfc/compile/Pynq-Z2/model.bnn")
    classes = engine.classify(images)            # uint8 (N, 1, 28, 28) -> int32 (N,)
    classes, scores = engine.run(images, threads=0)   # all cores; scores int32 (N, 10)

ctypes rather than a CPython extension: the library is the same C API the
command-line tool and the board use, and a call costs a few microseconds,
which only batch-1 timing of the smallest networks notices (the C tool
``bnnflow-cpu bench`` measures those without Python).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import BnnflowError

DATASETS = {0: None, 1: "mnist", 2: "cifar10", 3: "digits"}


class _Info(ctypes.Structure):
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


class _LayerInfo(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("in_h", ctypes.c_uint32),
        ("in_w", ctypes.c_uint32),
        ("in_c", ctypes.c_uint32),
        ("out_h", ctypes.c_uint32),
        ("out_w", ctypes.c_uint32),
        ("out_c", ctypes.c_uint32),
        ("kernel", ctypes.c_uint32),
        ("stride", ctypes.c_uint32),
        ("input_type", ctypes.c_uint32),
        ("output_type", ctypes.c_uint32),
        ("n_thresholds", ctypes.c_uint32),
        ("act_val", ctypes.c_int32),
        ("binary_macs", ctypes.c_uint64),
        ("integer_macs", ctypes.c_uint64),
        ("weight_bytes", ctypes.c_uint64),
    ]


_lib: ctypes.CDLL | None = None


def library_path() -> Path:
    """The engine's shared library inside the installed package."""
    spec = importlib.util.find_spec("bnnflow.bnncpu._bnncpu")
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        raise BnnflowError(
            "the C engine is not built: reinstall bnnflow "
            "(`make install`, or `pip install -e .` with a C compiler)"
        )
    return Path(spec.origin)


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(str(library_path()))
    p, u32, i32, size = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_size_t
    lib.bnn_strerror.restype = ctypes.c_char_p
    lib.bnn_strerror.argtypes = [i32]
    lib.bnn_model_load_file.restype = i32
    lib.bnn_model_load_file.argtypes = [ctypes.c_char_p, ctypes.POINTER(p), ctypes.c_char_p, size]
    lib.bnn_model_free.restype = None
    lib.bnn_model_free.argtypes = [p]
    lib.bnn_model_get_info.restype = None
    lib.bnn_model_get_info.argtypes = [p, ctypes.POINTER(_Info)]
    lib.bnn_model_get_layer.restype = i32
    lib.bnn_model_get_layer.argtypes = [p, u32, ctypes.POINTER(_LayerInfo)]
    lib.bnn_layer_kind_name.restype = ctypes.c_char_p
    lib.bnn_layer_kind_name.argtypes = [u32]
    lib.bnn_type_name.restype = ctypes.c_char_p
    lib.bnn_type_name.argtypes = [u32]
    lib.bnn_context_new.restype = p
    lib.bnn_context_new.argtypes = [p]
    lib.bnn_context_free.restype = None
    lib.bnn_context_free.argtypes = [p]
    lib.bnn_context_run.restype = i32
    lib.bnn_context_run.argtypes = [p, p, size, p, p]
    lib.bnn_run.restype = i32
    lib.bnn_run.argtypes = [p, p, size, p, p, i32]
    lib.bnn_cpu_features.restype = ctypes.c_uint
    lib.bnn_kernel_name.restype = ctypes.c_char_p
    lib.bnn_version.restype = ctypes.c_char_p
    _lib = lib
    return lib


def kernel_name() -> str:
    """The kernel set the engine uses on this CPU: scalar, popcnt, avx2, avx512 or neon."""
    return _library().bnn_kernel_name().decode()


def engine_version() -> str:
    return _library().bnn_version().decode()


@dataclass(frozen=True)
class LayerInfo:
    kind: str
    in_shape: tuple[int, int, int]  # H, W, C
    out_shape: tuple[int, int, int]
    kernel: int
    stride: int
    input_type: str
    output_type: str
    binary_macs: int
    integer_macs: int


class CpuEngine:
    """One model file loaded into the C engine.

    ``images`` are uint8 in the dataset's layout: (N, C, H, W), or (N, H, W)
    for single-channel images, or one image without the N axis. Results are
    int32: a class per image and, from ``scores``/``run``, the last layer's
    integer scores (what FINN's LabelSelect reads). ``threads``: 1 runs on the
    calling thread with buffers kept between calls; N > 1 splits the batch
    over N threads, 0 over every online core; the results never depend on it.
    """

    def __init__(self, model: str | os.PathLike[str]) -> None:
        lib = _library()
        self.path = Path(model)
        if not self.path.exists():
            raise BnnflowError(f"CPU model file not found: {self.path}")
        handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(512)
        status = lib.bnn_model_load_file(str(self.path).encode(), ctypes.byref(handle), err, len(err))
        if status != 0:
            message = err.value.decode(errors="replace") or lib.bnn_strerror(status).decode()
            # The library's file errors already start with the path it was given.
            raise BnnflowError(message if message.startswith(f"{self.path}: ") else f"{self.path}: {message}")
        self._model: int | None = handle.value
        self._ctx: int | None = None
        info = _Info()
        lib.bnn_model_get_info(self._model, ctypes.byref(info))
        self.input_shape = (int(info.in_c), int(info.in_h), int(info.in_w))
        self.n_classes = int(info.n_classes)
        self.dataset = DATASETS.get(int(info.dataset))
        self.binary_macs = int(info.binary_macs)
        self.integer_macs = int(info.integer_macs)
        self.model_bytes = int(info.model_bytes)
        self.context_bytes = int(info.context_bytes)
        self.layers = [self._layer(lib, i) for i in range(int(info.n_layers))]

    def _layer(self, lib: ctypes.CDLL, index: int) -> LayerInfo:
        li = _LayerInfo()
        lib.bnn_model_get_layer(self._model, index, ctypes.byref(li))
        return LayerInfo(
            kind=lib.bnn_layer_kind_name(li.kind).decode(),
            in_shape=(li.in_h, li.in_w, li.in_c),
            out_shape=(li.out_h, li.out_w, li.out_c),
            kernel=li.kernel,
            stride=li.stride,
            input_type=lib.bnn_type_name(li.input_type).decode(),
            output_type=lib.bnn_type_name(li.output_type).decode(),
            binary_macs=int(li.binary_macs),
            integer_macs=int(li.integer_macs),
        )

    # -- inference ------------------------------------------------------------------------

    def _batch(self, images: Any) -> np.ndarray:
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8 (the dataset's pixels), got {images.dtype}")
        c, h, w = self.input_shape
        shape = images.shape
        if shape == (c, h, w) or (c == 1 and shape == (h, w)):
            images = images.reshape(1, c, h, w)
        elif images.ndim == 4 and shape[1:] == (c, h, w):
            pass
        elif c == 1 and images.ndim == 3 and shape[1:] == (h, w):
            images = images.reshape(-1, 1, h, w)
        else:
            expected = f"(N, {c}, {h}, {w})" + (f" or (N, {h}, {w})" if c == 1 else "")
            raise ValueError(
                f"images of shape {shape} do not fit this model: it takes {expected} uint8"
                + (f" ({self.dataset})" if self.dataset else "")
            )
        return np.ascontiguousarray(images)

    def run(self, images: Any, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(classes (N,), scores (N, n_classes)), both int32."""
        return self._run(images, threads, want_scores=True)

    def classify(self, images: Any, threads: int = 1) -> np.ndarray:
        """The class of each image, int32 (N,)."""
        return self._run(images, threads, want_scores=False)[0]

    def scores(self, images: Any, threads: int = 1) -> np.ndarray:
        """The last layer's integer scores, int32 (N, n_classes)."""
        return self._run(images, threads, want_scores=True)[1]

    def _run(self, images: Any, threads: int, want_scores: bool) -> tuple[np.ndarray, np.ndarray]:
        if self._model is None:
            raise ValueError("this CpuEngine is closed")
        if not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be 0 (all cores) or a positive integer, got {threads!r}")
        batch = self._batch(images)
        n = len(batch)
        classes = np.empty(n, dtype=np.int32)
        scores = np.empty((n, self.n_classes), dtype=np.int32) if want_scores else None
        scores_ptr = scores.ctypes.data if scores is not None else None
        lib = _library()
        if n == 0:
            status = 0
        elif threads == 1:
            if self._ctx is None:
                self._ctx = lib.bnn_context_new(self._model)
                if not self._ctx:
                    raise MemoryError("the CPU engine could not allocate its working buffers")
            status = lib.bnn_context_run(self._ctx, batch.ctypes.data, n, classes.ctypes.data, scores_ptr)
        else:
            status = lib.bnn_run(self._model, batch.ctypes.data, n, classes.ctypes.data, scores_ptr, threads)
        if status != 0:
            raise RuntimeError(f"CPU engine: {lib.bnn_strerror(status).decode()}")
        return classes, (scores if scores is not None else np.empty((n, 0), dtype=np.int32))

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        lib = _lib
        if lib is None:
            return
        if self._ctx:
            lib.bnn_context_free(self._ctx)
            self._ctx = None
        if self._model:
            lib.bnn_model_free(self._model)
            self._model = None

    def __enter__(self) -> CpuEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (
            f"CpuEngine({str(self.path)!r}, input {c}x{h}x{w}, "
            f"{self.n_classes} classes, {len(self.layers)} layers)"
        )
