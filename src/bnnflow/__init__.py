"""bnnflow: binarized neural networks from Bop training to FPGA dataflow designs."""

from bnnflow import _compat  # noqa: F401  (must run before brevitas is imported)
from bnnflow.errors import BnnflowError

__version__ = "0.1.0"

__all__ = ["BnnflowError", "__version__"]
