"""The compile stage: a QONNX model to a folded FINN dataflow design.

``compile_model`` runs FINN's own build steps (QONNX to FINN, tidy-up,
streamlining, conversion to hardware layers, dataflow partition,
specialisation, folding, estimates, HLS/RTL code generation) into a folder
that FINN's builder can resume from; ``build_bitstream`` does that resume
with Vivado. See docs/compile.md.
"""

from __future__ import annotations

from bnnflow.finnlib.boards import BOARDS, Board, get_board
from bnnflow.hls.flow import CompileOptions, CompileResult, compile_model
from bnnflow.hls.iobound import IOBound, io_bound

__all__ = [
    "BOARDS",
    "Board",
    "CompileOptions",
    "CompileResult",
    "IOBound",
    "compile_model",
    "get_board",
    "io_bound",
]
