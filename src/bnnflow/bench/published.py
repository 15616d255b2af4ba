"""Published FPGA figures for the networks bnnflow shares with finn-examples, and how to recognise them.

bnnflow's ``tfc`` and ``cnv`` are the Brevitas ``bnn_pynq`` topologies that
finn-examples ships as ``tfc-w1a1`` and ``cnv-w1a1``. The figures are facts
quoted from that repository, with where they come from; nothing here is
measured by bnnflow.

The networks are recognised by their layers in the CPU engine's model file
(the dataset, the input shape, each MVAU's kernel and output channels), not by
a run's name: a run called ``tfc`` may hold anything, and a design compiled
from a checkpoint without a run folder has no name at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FINN_EXAMPLES = "Xilinx/finn-examples"
# The notebooks' outputs were committed in 00da6d36 (2020-10-22) and are unchanged at fad205f6 (2024-05-02).
FINN_EXAMPLES_COMMIT = "00da6d36fc2802ddd26c6baa12f6bdf691246293"
# The notebooks do not say which board printed them. Their matplotlib figures print as
# "<Figure at 0x7f6cc19160>", an address wider than 32 bits, which the Pynq-Z1/Z2's
# 32-bit ARM Python cannot print: most likely an aarch64 board (Ultra96 or ZCU104).
BOARD_NOT_NAMED = (
    "board not named in the notebook (its printed object addresses are 64-bit, so most likely an "
    "aarch64 board such as the Ultra96 or ZCU104, not a 32-bit Pynq-Z1/Z2)"
)


@dataclass(frozen=True)
class PublishedFigure:
    network: str  # finn-examples' name
    dataset: str
    images_per_s: float  # throughput[images/s] of accel.throughput_test()
    batch: int
    clock_mhz: float  # fclk[mhz]
    accuracy: float  # the notebook's accuracy on the whole test set
    dram_in_mb_s: float  # DRAM_in_bandwidth[Mb/s]: bytes read per second for the input images
    in_bytes: int  # per image
    board: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _notebook(name: str) -> str:
    return (
        f"{FINN_EXAMPLES}, finn_examples/notebooks/{name}: output of accel.throughput_test() "
        f"(commit {FINN_EXAMPLES_COMMIT[:8]}, 2020-10-22)"
    )


PUBLISHED: dict[str, PublishedFigure] = {
    "tfc": PublishedFigure(
        network="tfc-w1a1",
        dataset="mnist",
        images_per_s=837_019.36,
        batch=1000,
        clock_mhz=99.999,
        accuracy=0.9296,
        dram_in_mb_s=656.22,
        in_bytes=784,
        board=BOARD_NOT_NAMED,
        source=_notebook("0_mnist_with_fc_networks.ipynb"),
    ),
    "cnv": PublishedFigure(
        network="cnv-w1a1",
        dataset="cifar10",
        images_per_s=3_020.50,
        batch=1000,
        clock_mhz=99.999,
        accuracy=0.8419,
        dram_in_mb_s=9.28,
        in_bytes=3072,
        board=BOARD_NOT_NAMED,
        source=_notebook("1_cifar10_with_cnv_networks.ipynb"),
    ),
}

# (dataset, input C x H x W, (kernel, output channels) of every MVAU in order)
TOPOLOGIES: dict[str, tuple[str, tuple[int, int, int], tuple[tuple[int, int], ...]]] = {
    "tfc": ("mnist", (1, 28, 28), ((1, 64), (1, 64), (1, 64), (1, 10))),
    "cnv": (
        "cifar10",
        (3, 32, 32),
        ((3, 64), (3, 64), (3, 128), (3, 128), (3, 256), (3, 256), (1, 512), (1, 512), (1, 10)),
    ),
}


def identify_network(engine: Any) -> str | None:
    """``tfc`` or ``cnv`` where a loaded ``CpuEngine`` has exactly that topology, else None."""
    mvaus = tuple((int(la.kernel), int(la.out_shape[2])) for la in engine.layers if la.kind == "MVAU")
    for name, (dataset, shape, layers) in TOPOLOGIES.items():
        if engine.dataset == dataset and tuple(engine.input_shape) == shape and mvaus == layers:
            return name
    return None
