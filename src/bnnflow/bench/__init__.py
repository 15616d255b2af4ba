"""FPGA against CPU for a compiled design: ``bnnflow bench``.

``bench_design(path)`` measures bnnflow's C engine on this machine, reads
FINN's estimates and the DMA bound of the design, and, given the report
``bnnflow-board bench`` wrote on a board (or on the simulated board), puts
the board's figures beside them, each labelled by where it comes from.
"""

from bnnflow.bench.published import PUBLISHED, identify_network
from bnnflow.bench.report import BenchResult, bench_design, format_bench

__all__ = ["PUBLISHED", "BenchResult", "bench_design", "format_bench", "identify_network"]
