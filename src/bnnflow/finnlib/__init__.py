"""FINN and QONNX integration below every stage: what compile, the CPU engine's writer and deployment share.

``finn_env`` prepares FINN's settings (import FINN through it first);
``steps`` runs build steps in FINN's builder form; ``execution`` runs graphs
fast and exactly; ``hwgraph`` reads hardware-layer graphs; the QONNX
Transformations are ``runtime_writable`` (``MakeRuntimeWritable``) and
``xnor_acc`` (``CorrectXnorAccumulators``); ``boards`` is the board table;
``zynq`` prepares a design as FINN's Zynq build does, and ``weight_memory`` is
the layout of the runtime-writable memories behind their AXI-lite ports.
"""
