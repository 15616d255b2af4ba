"""How long an FPGA run may take before it counts as stuck: one rule for the board and the simulated board;
and how long the simulated board's accelerator process may take to start.

A run of a batch of N images may take ``--timeout`` plus an allowance per
image: 10 ms per image on a board (default ``--timeout`` 5 s), 1 s per image
on the simulated board (default 30 s). The FPGA computes an image in
microseconds; on the simulated board FINN executes the design in software,
which takes up to about a second per image (CNV in FINN's Python execution).
"""

from __future__ import annotations

# (default --timeout, seconds per image of the batch)
BOARD_DEADLINE = (5.0, 0.01)
SIMULATED_DEADLINE = (30.0, 1.0)
# Loading the design (FINN's import, the graph) and preparing it (cppsim: compiling the generated
# HLS, a minute or more per design when not cached) each get this long.
START_TIMEOUT_S = 600.0


def deadline_terms(timeout_s: float | None, simulated: bool) -> tuple[float, float]:
    """(base seconds, seconds per image): ``--timeout`` or its default, and this board's allowance."""
    base, per_image = SIMULATED_DEADLINE if simulated else BOARD_DEADLINE
    return (base if timeout_s is None else float(timeout_s)), per_image


def run_deadline_s(base_s: float, per_image_s: float, batch: int) -> float:
    """Seconds a run of ``batch`` images may take."""
    return base_s + per_image_s * batch


def timeout_help() -> str:
    (b, bi), (s, si) = BOARD_DEADLINE, SIMULATED_DEADLINE
    return (
        f"an FPGA run is stuck after SECONDS plus {bi * 1e3:g} ms per image of its batch (default {b:g}); "
        f"on the simulated board plus {si:g} s per image (default {s:g})"
    )


def start_timeout_help() -> str:
    return (
        "seconds the accelerator process may take to load the design, and again to prepare it "
        f"(default {START_TIMEOUT_S:g}: cppsim compiles the design first)"
    )
