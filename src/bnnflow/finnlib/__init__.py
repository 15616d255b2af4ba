"""FINN and QONNX integration below every stage: what compile, the CPU engine's writer and deployment share.

``finn_env`` prepares FINN's settings (import FINN through it first);
``execution`` runs graphs fast and exactly; ``hwgraph`` reads and rewrites
hardware-layer graphs (``MakeRuntimeWritable``); ``xnor_acc`` corrects FINN's
XNOR accumulator widths (``CorrectXnorAccumulators``); ``boards`` is the board
table.
"""
