"""The simulated board's FPGA fabric: FINN executing the compiled design.

``python -m bnnflow.deploy.simulated_accelerator COMPILE_DIR --board B`` is
started by the simulated board (bnnflow-board's ``SimulatedBoardDevice``,
which runs in the board environment and cannot import FINN). It prepares the
design as FINN's Zynq flow does (zynq.py) to tell the device which IODMAs it
has and how large their frames are, then answers one request per IODMA run:
the frames the simulated input IODMA decoded from memory in, the
accelerator's output frames back. How it computes:

* ``cppsim``: FINN's C simulation of the generated HLS (``PrepareCppSim``,
  ``CompileCppSim``, ``execute_onnx`` on ``model_hw.onnx``, the folded,
  specialised graph), with ../shared/hls-sim's headers standing in for Vitis
  HLS. FINN runs the graph's RTL layers (Thresholding, Reshape, ...) through
  their Python references in this mode.
* ``python``: FINN's Python execution of the hardware layers before
  specialisation (``intermediate_models/step_create_dataflow_partition.onnx``:
  the same partition, the same I/O), where no HLS headers are available.
* ``auto``: cppsim where hls-sim is found, python otherwise.

Runtime-writable weights (``compile --runtime-weights``): the hello message
describes each layer memory behind an AXI-lite port (weight_memory.py: the
layout of FINN's RTL) and carries its content as the bitstream initialises
it, the compiled values. The simulated board keeps those memories, takes
finn-plus-driver's writes and reads, and sends the words of every memory
written since the last run before the next frames (``op: parameters``); they
are decoded here from the hardware's layout, not by FINN's file writer, and
become the initializers of the graph FINN executes (node by node name in the
cppsim graph, by position among the writable layers in the Python one, whose
nodes carry the names from before specialisation).

It never runs the CPU engine (what the board compares the FPGA against) and
holds no table of answers: every frame goes through FINN.

Wire format: bnnflow_board/simulated/wire.py, which both processes import.
stdout carries only that protocol; everything FINN and the compilers print
goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import IO, Any

from bnnflow_board.simulated.wire import read_message, write_message

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.finnlib.hwgraph import base_op_type, writable_nodes
from bnnflow.finnlib.weight_memory import decode, encode, memory_layout
from bnnflow.finnlib.zynq import instances, iodmas, zynq_dataflow_model
from bnnflow.layout import CompileDir

HLS_SIM_ENV = ("XILINX_HLS", "FINN_DEPS", "FINN_CUSTOM_HLS")


def default_hls_sim() -> Path | None:
    """../shared/hls-sim from the project root, or BNNFLOW_HLS_SIM."""
    env = os.environ.get("BNNFLOW_HLS_SIM")
    if env:
        return Path(env) if (Path(env) / "env.sh").is_file() else None
    kit = Path(__file__).resolve().parents[4] / "shared" / "hls-sim"
    return kit if (kit / "env.sh").is_file() else None


def hls_sim_environment(kit: Path) -> dict[str, str]:
    """The three variables hls-sim's env.sh exports, sourced as its README says."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    out = subprocess.run(
        ["bash", "-c", f'source "{kit}/env.sh" >&2 && env -0'],
        env={**os.environ, "PATH": path},
        capture_output=True,
        check=True,
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: env[k] for k in HLS_SIM_ENV}


class Accelerator:
    """The compiled design, ready to run frames in the chosen execution mode."""

    def __init__(self, compile_dir: Path, board: str, mode: str, cache: Path) -> None:
        self.compile_dir = compile_dir
        model_hw = compile_dir / CompileDir.HW_GRAPH
        if not model_hw.is_file():
            raise BnnflowError(f"{compile_dir} is not a compile folder (no model_hw.onnx)")
        self.key = hashlib.sha256(model_hw.read_bytes()).hexdigest()[:16]
        self.work = cache / self.key
        self.work.mkdir(parents=True, exist_ok=True)
        prepare_finn(self.work / "finn-build")

        from qonnx.core.modelwrapper import ModelWrapper

        self.design = ModelWrapper(str(model_hw))
        with tempfile.TemporaryDirectory() as tmp:
            parent = zynq_dataflow_model(ModelWrapper(str(model_hw)), board, tmp)
            self.iodmas = [d.to_json() for d in iodmas(parent)]
            writable = {i.name: i.writable for i in instances(parent) if i.writable}
        by_name = {n.name: n for n in self.design.graph.node}
        # instance -> (layout, the words the bitstream initialises the memory with)
        self.memories: dict[str, tuple[Any, Any]] = {}
        for instance, node_name in writable.items():
            if node_name not in by_name:
                raise BnnflowError(f"{instance}'s runtime-writable layer {node_name} is not in model_hw.onnx")
            node = by_name[node_name]
            layout = memory_layout(node)
            self.memories[instance] = (layout, encode(layout, self.design.get_initializer(node.input[1])))
        self.mode = mode
        self.model: Any = None
        self._targets: dict[str, str] = {}  # design node -> parameter tensor of the executed graph

    def prepare(self) -> None:
        """Load the graph for the mode; cppsim compiles the HLS once per design (kept under the cache)."""
        from qonnx.core.modelwrapper import ModelWrapper

        if self.mode == "python":
            self.model = ModelWrapper(
                str(self.compile_dir / "intermediate_models" / "step_create_dataflow_partition.onnx")
            )
            self._map_parameters()
            return
        compiled = self.work / "model_cppsim.onnx"
        if compiled.is_file():
            self.model = ModelWrapper(str(compiled))
            self._map_parameters()
            return
        from finn.transformation.fpgadataflow.compile_cppsim import CompileCppSim
        from finn.transformation.fpgadataflow.prepare_cppsim import PrepareCppSim
        from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode

        model = ModelWrapper(str(self.compile_dir / CompileDir.HW_GRAPH))
        model = model.transform(SetExecMode("cppsim")).transform(PrepareCppSim()).transform(CompileCppSim())
        tmp = compiled.with_name(compiled.name + ".tmp")
        model.save(str(tmp))
        os.replace(tmp, compiled)
        self.model = model
        self._map_parameters()

    def _map_parameters(self) -> None:
        """Which tensor of the executed graph each runtime-writable layer's memory feeds."""
        ours = writable_nodes(self.design)
        theirs = [n for n in self.model.graph.node if base_op_type(n.op_type) in ("MVAU", "Thresholding")]
        if [base_op_type(n.op_type) for n in ours] != [base_op_type(n.op_type) for n in theirs]:
            raise BnnflowError("the executed graph's MVAU and Thresholding layers are not the design's")
        for a, b in zip(ours, theirs, strict=True):
            if self.mode == "cppsim" and a.name != b.name:
                raise BnnflowError(f"the executed graph has {b.name} where the design has {a.name}")
            self._targets[a.name] = b.input[1]

    def write_parameters(self, memories: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """Memory words as the simulated board holds them -> the executed graph's initializers.

        Returns, per memory, how many values differ from what the graph held before.
        """
        import numpy as np

        if self.model is None:
            self.prepare()
        out = []
        for instance, words in memories:
            if instance not in self.memories:
                raise BnnflowError(f"{instance} has no runtime-writable memory in this design")
            layout, _ = self.memories[instance]
            values = decode(layout, words)
            tensor = self._targets[layout.node]
            before = self.model.get_initializer(tensor)
            if layout.kind == "thresholds":
                if layout.cols > 1 and np.any(np.diff(values, axis=1) < 0):
                    # FINN's RTL thresholding searches sorted thresholds; unsorted ones give other answers
                    raise BnnflowError(f"{layout.node}: the written thresholds are not in ascending order")
                if before.shape[0] == 1 and np.all(values == values[:1]):
                    values = values[:1]
            changed = (
                int(np.sum(np.broadcast_to(before, values.shape) != values)) if before is not None else -1
            )
            self.model.set_initializer(tensor, np.ascontiguousarray(values, dtype=np.float32))
            out.append({"instance": instance, "node": layout.node, "changed_values": changed})
        return out

    def run(self, frames: Any) -> Any:
        import numpy as np
        from finn.core.onnx_exec import execute_onnx

        if self.model is None:
            self.prepare()
        model = self.model
        iname, oname = model.graph.input[0].name, model.graph.output[0].name
        ishape = tuple(model.get_tensor_shape(iname))
        outs = []
        for frame in frames:
            y = execute_onnx(model, {iname: frame.reshape(ishape).astype(np.float32)})[oname]
            if not np.array_equal(y, np.round(y)):
                raise ValueError("the accelerator produced a non-integer output")
            outs.append(np.asarray(y, dtype=np.int64).reshape(-1))
        return np.stack(outs)


def serve(args: argparse.Namespace, proto_in: IO[bytes], proto_out: IO[bytes]) -> int:
    import numpy as np

    try:
        kit = default_hls_sim()
        mode = args.exec
        if mode == "auto":
            mode = "cppsim" if kit is not None else "python"
        if mode == "cppsim":
            if kit is None:
                raise RuntimeError("cppsim needs ../shared/hls-sim (or BNNFLOW_HLS_SIM); use --exec python")
            # Only in this process: FINN and bnnflow read XILINX_HLS as "Vitis HLS is installed".
            os.environ.update(hls_sim_environment(kit))
        cache = (
            Path(args.cache)
            if args.cache
            else Path(tempfile.gettempdir()) / f"bnnflow-simboard-{os.getuid()}"
        )
        acc = Accelerator(Path(args.compile_dir).absolute(), args.board, mode, cache)
    except Exception as exc:
        traceback.print_exc()
        write_message(proto_out, {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
        return 1
    memories, init = [], []
    for instance, (layout, words) in acc.memories.items():
        memories.append({"instance": instance, "n": int(len(words)), **layout.to_json()})
        init.append(np.asarray(words, dtype="<u4").tobytes())
    write_message(
        proto_out,
        {
            "exec": mode,
            "iodmas": acc.iodmas,
            "memories": memories,
            "design": str(acc.compile_dir),
            "hls_sim": str(kit),
        },
        b"".join(init),
    )
    idma = next(d for d in acc.iodmas if d["direction"] == "in")
    while True:
        try:
            msg = read_message(proto_in)
        except EOFError:  # the board side died mid-message: nobody is left to answer
            return 0
        if msg is None or msg[0].get("op") == "quit":
            return 0
        header, payload = msg
        try:
            if header.get("op") == "prepare":
                acc.prepare()
                write_message(proto_out, {"prepared": acc.mode})
                continue
            if header.get("op") == "parameters":
                words = np.frombuffer(payload, dtype="<u4")
                items, at = [], 0
                for mem in header["memories"]:
                    items.append((str(mem["instance"]), words[at : at + int(mem["n"])]))
                    at += int(mem["n"])
                write_message(proto_out, {"parameters": acc.write_parameters(items)})
                continue
            n = int(header["n"])
            frames = np.frombuffer(payload, dtype="<i8").reshape(n, *idma["shape"][1:])
            out = acc.run(frames)
            write_message(proto_out, {"n": n}, np.ascontiguousarray(out, dtype="<i8").tobytes())
        except Exception as exc:
            traceback.print_exc()
            write_message(proto_out, {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bnnflow.deploy.simulated_accelerator", description=__doc__)
    p.add_argument("compile_dir")
    p.add_argument("--board", required=True)
    p.add_argument("--exec", choices=("auto", "cppsim", "python"), default="auto")
    p.add_argument("--cache", default=None, help="where compiled C simulations are kept, per design")
    args = p.parse_args(argv)
    # The protocol keeps the real stdout; fd 1 becomes stderr so that FINN's prints and
    # the C simulation binaries it runs cannot corrupt it.
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        return serve(args, sys.stdin.buffer, proto_out)
    finally:
        proto_out.close()


if __name__ == "__main__":
    raise SystemExit(main())
