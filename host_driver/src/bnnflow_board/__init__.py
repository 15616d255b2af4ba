"""bnnflow-board: run a bnnflow deployment package on a PYNQ board.

``bnnflow-board check DEPLOY_DIR`` checks a package against the board it runs
on; ``bnnflow-board bench DEPLOY_DIR`` runs its test set on the FPGA (through
finn-plus-driver's ``FINNDMAOverlay``) and on the ARM cores (bnnflow's C CPU
engine), and reports accuracy, agreement with the golden outputs, throughput
and latency. The same code runs on the simulated board (``--simulated-board``),
a software ``pynq.Device`` used to test the whole stack without an FPGA.
"""

__version__ = "0.1.0"
