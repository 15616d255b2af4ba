"""Board-side tests: they run in .venv-board (pynq, finn-plus-driver, numpy 1.x)."""

from bnnflow_board._qonnx import ensure_qonnx_importable

# finn-plus-driver's packing imports qonnx, which imports onnx; .venv-board has no
# onnx, as the Pynq-Z2 has none (see bnnflow_board/_qonnx.py).
ensure_qonnx_importable()
