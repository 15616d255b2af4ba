"""The CPU stage (``bnnflow cpu``): the engine's model file for a compiled design, run and evaluated.

The library it stands on is ``bnnflow.bnncpu``; its public names are
re-exported here, where users have imported them from
(``from bnnflow.cpu import CpuEngine``). ``export_cpu_model(compile_dir)``
writes ``<compile_dir>/model.bnn`` in the format of ``cpu/include/bnncpu.h``;
``read_model`` reads and validates one; ``CpuEngine`` runs one in the C
engine (cpu/), loaded on first use.
"""

from bnnflow.bnncpu import (
    MODEL_FILE,
    CpuEngine,
    CpuModel,
    Dataset,
    InputOrder,
    Layer,
    LayerKind,
    ValueType,
    build_cpu_model,
    decode_model,
    encode_model,
    export_cpu_model,
    kernel_name,
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
