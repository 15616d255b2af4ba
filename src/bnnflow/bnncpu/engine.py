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
    engine.run(images, out=(classes, scores))     # into the caller's arrays: nothing allocated

The model's loading and description go through ctypes (the C API that the
command-line tool and the board use); a batch goes through one C function of
the same library (``_entry.c``, METH_FASTCALL and the buffer protocol), because
a ctypes call with its pointer conversions costs more than TFC's whole
inference. That function checks the arrays itself (type, dtype, shape, layout,
``out``) and refuses whatever it does not take; only then does the checked
path here run, to say what is wrong or to resolve it (a contiguous copy, a
second context for a call that finds the engine busy on another thread).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import BnnflowError

DATASETS = {0: None, 1: "mnist", 2: "cifar10", 3: "digits"}
BNN_ERR_BUSY = -12  # bnncpu.h: the context is running a batch for another thread
_CLASSES, _BOTH, _SCORES = 0, 1, 2  # what the entry point returns (_entry.c)


_UINT8, _INT32 = np.dtype(np.uint8), np.dtype(np.int32)  # the dtype objects the entry point compares with


class _Refused(Exception):
    """The entry point's refusal (args: the engine's status, or 0 for arguments it does not take)."""


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
        ("kernel_w", ctypes.c_uint32),
        ("stride_w", ctypes.c_uint32),
        ("pad", ctypes.c_uint32 * 4),
    ]


_lib: ctypes.CDLL | None = None
_entry: Any = None


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
    lib.bnn_context_run_threads.restype = i32
    lib.bnn_context_run_threads.argtypes = [p, p, size, p, p, i32]
    lib.bnn_threads_started.restype = ctypes.c_uint
    lib.bnn_cpu_features.restype = ctypes.c_uint
    lib.bnn_kernel_name.restype = ctypes.c_char_p
    lib.bnn_version.restype = ctypes.c_char_p
    global _entry
    entry = importlib.import_module("bnnflow.bnncpu._bnncpu")
    probe = np.zeros((3, 5), np.int32)
    entry.setup(np.ndarray, np.empty, _UINT8, _INT32, _Refused, (probe, probe.__array_interface__["data"][0]))
    _entry = entry.run
    _lib = lib
    return lib


def threads_started() -> int:
    """Worker threads the engine has started in this process (tests: a call must start none)."""
    return int(_library().bnn_threads_started())


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
    kernel_w: int  # the window: kernel x kernel_w pixels, stride x stride_w steps
    stride_w: int
    pad: tuple[int, int, int, int]  # top, left, bottom, right


class CpuEngine:
    """One model file loaded into the C engine.

    ``images`` are uint8 in the dataset's layout: (N, C, H, W), or (N, H, W)
    for single-channel images, or one image without the N axis. Results are
    int32: a class per image and, from ``scores``/``run``, the last layer's
    integer scores (what FINN's LabelSelect reads). ``threads``: 1 runs on the
    calling thread with buffers kept between calls; N > 1 splits a batch big
    enough to gain over up to N threads, 0 over every online core, on worker
    threads the engine starts once and joins in ``close``; the results never
    depend on it. One engine may be called from several threads at once: a
    call that finds it busy runs on a second set of buffers.
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
        self._model_addr: int = handle.value
        # One context for the calls, more for calls made while another thread runs on it.
        self._ctx_addr: int = lib.bnn_context_new(handle.value) or 0
        self._contexts: list[int] = [self._ctx_addr]
        self._spares: list[int] = []
        if not self._ctx_addr:
            self.close()
            raise MemoryError("the CPU engine could not allocate its working buffers")
        info = _Info()
        lib.bnn_model_get_info(self._model_addr, ctypes.byref(info))
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
        lib.bnn_model_get_layer(self._model_addr, index, ctypes.byref(li))
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
            kernel_w=li.kernel_w,
            stride_w=li.stride_w,
            pad=tuple(li.pad),
        )

    # -- inference ------------------------------------------------------------------------
    # run/classify/scores are one C call (_entry) when the arrays are what the engine
    # takes; _checked says why not, or resolves it.

    def run(self, images: Any, threads: int = 1, out: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(classes (N,), scores (N, n_classes)), both int32; ``out=(classes, scores)``
        writes into those arrays (int32, C-contiguous, of those shapes) and returns them."""
        try:
            return _entry(self._ctx_addr, self._model_addr, images, threads, out, _BOTH)
        except _Refused as why:
            return self._checked(images, threads, out, _BOTH, why.args[0])

    def classify(self, images: Any, threads: int = 1, out: Any = None) -> np.ndarray:
        """The class of each image, int32 (N,); ``out``: an int32 (N,) array to write them into."""
        try:
            return _entry(self._ctx_addr, self._model_addr, images, threads, out, _CLASSES)
        except _Refused as why:
            return self._checked(images, threads, out, _CLASSES, why.args[0])

    def scores(self, images: Any, threads: int = 1) -> np.ndarray:
        """The last layer's integer scores, int32 (N, n_classes)."""
        try:
            return _entry(self._ctx_addr, self._model_addr, images, threads, None, _SCORES)
        except _Refused as why:
            return self._checked(images, threads, None, _SCORES, why.args[0])

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
        # Base ndarray with numpy's own uint8 dtype object: what the entry point compares.
        return np.ascontiguousarray(images).view(dtype=_UINT8, type=np.ndarray)

    def _check_out(self, out: Any, n: int, mode: int) -> None:
        if out is None:
            return
        if mode == _SCORES:
            raise ValueError("scores() takes no out; run(images, out=(classes, scores)) writes both")
        wanted = [("classes", (n,))] + ([("scores", (n, self.n_classes))] if mode == _BOTH else [])
        arrays = [out] if mode == _CLASSES else out
        if mode == _BOTH and (not isinstance(out, tuple) or len(out) != 2):
            raise TypeError("out must be a tuple (classes, scores) of int32 arrays")
        for (name, shape), arr in zip(wanted, arrays, strict=True):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.int32:
                got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
                raise TypeError(f"out {name} must be an int32 numpy array, got {got}")
            if arr.shape != shape or not arr.flags.c_contiguous or not arr.flags.writeable:
                raise ValueError(
                    f"out {name} must be a writable C-contiguous int32 array of shape {shape}, "
                    f"got shape {arr.shape}"
                    + ("" if arr.flags.c_contiguous else ", not contiguous")
                    + ("" if arr.flags.writeable else ", read-only")
                )

    def _checked(self, images: Any, threads: Any, out: Any, mode: int, status: int) -> Any:
        if self._model_addr == 0:
            raise ValueError("this CpuEngine is closed")
        if type(threads) is not int or threads < 0 or threads > 1024:
            raise ValueError(f"threads must be 0 (all cores) or an integer from 1 to 1024, got {threads!r}")
        batch = self._batch(images)
        self._check_out(out, len(batch), mode)
        given = out
        if out is not None:  # base-class views with numpy's own int32 dtype object
            out = (
                out.view(dtype=_INT32, type=np.ndarray)
                if mode == _CLASSES
                else tuple(a.view(dtype=_INT32, type=np.ndarray) for a in out)
            )
        for _ in range(2):
            if status == 0:  # the arguments: checked above, so the contiguous batch must pass
                ctx = self._ctx_addr
            elif status == BNN_ERR_BUSY:  # another thread runs on the engine's context
                ctx = self._spare_context()
            else:
                raise RuntimeError(f"CPU engine: {_library().bnn_strerror(status).decode()}")
            try:
                result = _entry(ctx, self._model_addr, batch, threads, out, mode)
                return given if given is not None else result
            except _Refused as why:
                status = why.args[0]
            finally:
                if ctx != self._ctx_addr:
                    self._spares.append(ctx)
        raise RuntimeError(f"CPU engine: the entry point refused a checked batch (status {status})")

    def _spare_context(self) -> int:
        """A context no other thread holds (list.pop and append are atomic under the GIL)."""
        try:
            return self._spares.pop()
        except IndexError:
            ctx = _library().bnn_context_new(self._model_addr)
            if not ctx:
                raise MemoryError("the CPU engine could not allocate its working buffers") from None
            self._contexts.append(ctx)
            return ctx

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Free the model and its contexts (joining their worker threads)."""
        lib = _lib
        if lib is None:
            return
        self._ctx_addr = 0
        for ctx in getattr(self, "_contexts", ()):
            if ctx:
                lib.bnn_context_free(ctx)
        self._contexts, self._spares = [], []
        if getattr(self, "_model_addr", 0):
            lib.bnn_model_free(self._model_addr)
            self._model_addr = 0

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
