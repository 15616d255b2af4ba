"""The C CPU engine's Python side, as a library: its model file, its binding, and the writer from FINN.

``modelfile`` reads, validates and writes the format of ``cpu/include/bnncpu.h``;
``engine`` runs a model file in the C engine (ctypes, loaded on first use);
``writer`` turns a compile folder's FINN hardware graph into a model file.
The ``cpu`` stage (``bnnflow cpu``) and the compile stage both use it.
"""

from bnnflow.bnncpu.engine import CpuEngine, kernel_name
from bnnflow.bnncpu.modelfile import (
    CpuModel,
    Dataset,
    InputOrder,
    Layer,
    LayerKind,
    ValueType,
    decode_model,
    encode_model,
    read_model,
    validate,
    write_model,
)
from bnnflow.bnncpu.writer import MODEL_FILE, build_cpu_model, export_cpu_model, read_design_model

__all__ = [
    "MODEL_FILE",
    "CpuEngine",
    "CpuModel",
    "Dataset",
    "InputOrder",
    "Layer",
    "LayerKind",
    "ValueType",
    "build_cpu_model",
    "decode_model",
    "encode_model",
    "export_cpu_model",
    "kernel_name",
    "read_design_model",
    "read_model",
    "validate",
    "write_model",
]
