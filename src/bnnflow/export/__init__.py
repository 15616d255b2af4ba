"""Export stage: trained checkpoint -> verified QONNX graphs for FINN (``bnnflow export``)."""

from bnnflow.export.qonnx_export import (
    EXPORT_FILE,
    LOGITS_FILE,
    MODEL_FILE,
    VERIFICATION_FILE,
    ExportResult,
    PixelScale,
    check_supported_layers,
    default_out_dir,
    export_model,
    export_network,
    read_export,
    run_qonnx,
    verify_export,
)

__all__ = [
    "EXPORT_FILE",
    "LOGITS_FILE",
    "MODEL_FILE",
    "VERIFICATION_FILE",
    "ExportResult",
    "PixelScale",
    "check_supported_layers",
    "default_out_dir",
    "export_model",
    "export_network",
    "read_export",
    "run_qonnx",
    "verify_export",
]
