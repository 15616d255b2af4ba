"""The CPU engine's side of bnnflow: the model file it runs, written from FINN's hardware graph.

``export_cpu_model(compile_dir)`` writes ``<compile_dir>/model.bnn`` in the
format of ``cpu/include/bnncpu.h``; ``read_model`` reads and validates one;
``CpuEngine`` runs one in the C engine (cpu/), loaded on first use.
"""

from bnnflow.cpu.engine import CpuEngine, kernel_name
from bnnflow.cpu.export import MODEL_FILE, build_cpu_model, export_cpu_model
from bnnflow.cpu.modelfile import (
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
    "read_model",
    "validate",
    "write_model",
]
