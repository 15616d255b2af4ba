"""The compiled design as FINN's Zynq flow turns it into a PYNQ overlay.

FINN's ``ZynqBuild`` (finn/transformation/fpgadataflow/make_zynq_proj.py)
prepares the hardware-layer graph for the Zynq shell with five of FINN's own
transformations, ``InsertIODMA(port width)``, ``InsertDWC``,
``SpecializeLayers``, ``Floorplan`` and ``CreateDataflowPartition``, and then,
in ``MakeZYNQProject`` while writing the Vivado block design, names each
dataflow partition's IP instance: a partition fed by a graph input becomes
``idma0``, ``idma1``, ..., one feeding a graph output ``odma0``, ..., any
other keeps its node name (``StreamingDataflowPartition_1``). FINN's
``MakePYNQDriver`` reads those instance names back (``get_driver_shapes``), so
outside a Vivado build the DMA names in settings.json come out empty.

``zynq_dataflow_model`` runs the same five transformations and then applies
the same naming rule (``MakeZYNQProject`` itself cannot run without the
stitched IP Vivado makes), so FINN's ``MakePYNQDriver`` fills the names in as
a Vivado build would. The board side checks them against the real .hwh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.boards import get_board
from bnnflow.finnlib.weight_memory import MIN_APERTURE, memory_layout


@dataclass(frozen=True)
class Instance:
    """One IP instance of the overlay's block design that bnnflow needs to know."""

    name: str  # instance name in the block design / .hwh (idma0, odma0, StreamingDataflowPartition_1)
    module: str  # the stitched IP's module name (its VLNV is xilinx_finn:finn:<module>:1.0)
    role: str  # "idma", "odma" or "kernel"
    axilite: bool  # has an AXI-lite control interface (the IODMAs always do)
    in_width: int  # AXI-stream widths in bits (0 where there is no such stream)
    out_width: int
    axilite_bytes: int = 0  # the AXI-lite port's address range in the block design (0: no port)
    writable: str | None = None  # the runtime-writable layer behind a kernel's AXI-lite port

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "vlnv": f"xilinx_finn:finn:{self.module}:1.0",
            "role": self.role,
            "axilite": self.axilite,
            "axilite_bytes": self.axilite_bytes,
            "writable": self.writable,
            "in_width": self.in_width,
            "out_width": self.out_width,
        }


def name_instances(parent: Any) -> dict[str, str]:
    """Set each partition's ``instance_name`` as MakeZYNQProject names it; node name -> instance."""
    from qonnx.custom_op.registry import getCustomOp

    names: dict[str, str] = {}
    idma = odma = 0
    for node in parent.get_nodes_by_op_type("StreamingDataflowPartition"):
        producer = parent.find_producer(node.input[0]) if len(node.input) else None
        consumers = parent.find_consumers(node.output[0])
        if producer is None:
            name, idma = f"idma{idma}", idma + 1
        elif not consumers:
            name, odma = f"odma{odma}", odma + 1
        else:
            name = node.name
        getCustomOp(node).set_nodeattr("instance_name", name)
        names[node.name] = name
    return names


def zynq_dataflow_model(model: Any, board: str, partition_dir: str | Path) -> Any:
    """The hardware-layer graph prepared as FINN's ZynqBuild prepares it, partitions named."""
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise BnnflowError("the compiled design must have one input and one output to be deployed")
    model = zynq_shell_model(model, board, partition_dir)
    name_instances(model)
    return model


def zynq_shell_model(model: Any, board: str, partition_dir: str | Path) -> Any:
    """The hardware-layer graph through ZynqBuild's preparation for the Zynq shell, partitions unnamed."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from finn.transformation.fpgadataflow.floorplan import Floorplan
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.util.basic import pynq_native_port_width
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

    brd = get_board(board)
    # The same list, in the same order, with the same renaming after each step
    # as ZynqBuild.apply (no instrumentation, no FINN switch).
    steps = [
        InsertIODMA(pynq_native_port_width[brd.name]),
        InsertDWC(),
        SpecializeLayers(brd.part),
        Floorplan(),
        CreateDataflowPartition(partition_model_dir=str(partition_dir)),
    ]
    for step in steps:
        model = model.transform(step)
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(GiveReadableTensorNames())
    return model


def instances(parent: Any) -> list[Instance]:
    """The overlay's FINN IP instances, in partition order, with their stream widths."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for node in parent.get_nodes_by_op_type("StreamingDataflowPartition"):
        sdp = getCustomOp(node)
        name = str(sdp.get_nodeattr("instance_name"))
        kernel = ModelWrapper(str(sdp.get_nodeattr("model")))
        first, last = getCustomOp(kernel.graph.node[0]), getCustomOp(kernel.graph.node[-1])
        role = "idma" if name.startswith("idma") else "odma" if name.startswith("odma") else "kernel"
        in_width = 0 if role == "idma" else int(first.get_instream_width())
        out_width = 0 if role == "odma" else int(last.get_outstream_width())
        # Only IODMAs and layers with runtime-writable parameters get an AXI-lite
        # port in FINN's stitched IP (compile --runtime-weights makes every MVAU and
        # Thresholding writable, each heading a partition of its own).
        writable = [
            n
            for n in kernel.graph.node
            if "runtime_writeable_weights" in getCustomOp(n).get_nodeattr_types()
            and getCustomOp(n).get_nodeattr("runtime_writeable_weights")
        ]
        if len(writable) > 1:
            raise BnnflowError(
                f"{name} holds {len(writable)} runtime-writable layers behind one AXI-lite port; "
                "finn-plus-driver writes only one"
            )
        if role != "kernel":
            aperture = MIN_APERTURE  # the IODMA's control registers: 6 address bits
        elif writable:
            aperture = memory_layout(writable[0]).aperture
        else:
            aperture = 0
        out.append(
            Instance(
                name,
                node.name,
                role,
                aperture > 0,
                in_width,
                out_width,
                aperture,
                writable[0].name if writable else None,
            )
        )
    return out


@dataclass(frozen=True)
class IODMA:
    """What an IODMA moves: one frame is ``frame_bytes`` bytes of memory per repetition."""

    instance: str
    direction: str  # "in" (memory to stream) or "out"
    datatype: str  # FINN DataType name of the elements, e.g. UINT8
    bitwidth: int
    shape: tuple[int, ...]  # the accelerator's tensor for one frame (normal shape, batch 1)
    frame_bytes: int
    # FINN's IODMA moves a frame as ``words`` stream words of frame_bytes / words bytes each, each
    # word's elements from its lowest bit up and the rest of its last byte padding (a 14-bit word
    # of a BINARY input takes 2 bytes: InsertIODMA's NumChannels, the padded stream's bytes)
    words: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "direction": self.direction,
            "datatype": self.datatype,
            "bitwidth": self.bitwidth,
            "shape": list(self.shape),
            "frame_bytes": self.frame_bytes,
            "words": self.words,
        }


def iodmas(parent: Any) -> list[IODMA]:
    """The IODMAs of the prepared design, read from FINN's IODMA_hls nodes."""
    import numpy as np
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for node in parent.get_nodes_by_op_type("StreamingDataflowPartition"):
        sdp = getCustomOp(node)
        name = str(sdp.get_nodeattr("instance_name"))
        if not (name.startswith("idma") or name.startswith("odma")):
            continue
        kernel = ModelWrapper(str(sdp.get_nodeattr("model")))
        dma = getCustomOp(kernel.graph.node[0])
        elems = int(np.prod(dma.get_normal_input_shape()))
        # IODMA_hls.defines: NumBytes1 = bits of one frame / 8 (asserted whole); InsertIODMA
        # makes the DMA's own elements the padded stream words' bytes (UINT8)
        frame_bytes = elems * dma.get_input_datatype().bitwidth() // 8
        words = int(np.prod(dma.get_nodeattr("numInputVectors")))
        tensor = node.input[0] if name.startswith("idma") else node.output[0]
        # an input's elements are the graph input's (BINARY where the host thresholds); the
        # output DMA's its own bytes, except where each stream word is one unsigned element (a
        # class index): Stream2Mem writes it zero-extended to the word's whole bytes, so it is one
        # unsigned element of the word's width (UINT8 for a UINT4 index, UINT16 above 256 classes)
        shape = tuple(int(d) for d in parent.get_tensor_shape(tensor))
        if name.startswith("idma"):
            dt = parent.get_tensor_datatype(tensor)
        elif words == int(np.prod(shape)) and not parent.get_tensor_datatype(tensor).signed():
            dt = DataType[f"UINT{8 * frame_bytes // words}"]
        else:
            dt = dma.get_input_datatype()
        out.append(
            IODMA(name, str(dma.get_nodeattr("direction")), dt.name, dt.bitwidth(), shape, frame_bytes, words)
        )
    return out
