"""The simulated board's programmable logic: the compiled design, run by FINN in the compiler's environment.

The board environment cannot import FINN (finn-plus needs numpy 2, the board
stack numpy 1), so the design runs in a child process started with the
compiler's Python (``python -m bnnflow.deploy.simulated_accelerator``), which
executes the compile folder's graph with FINN: C simulation of the generated
HLS where ../shared/hls-sim provides the headers, FINN's Python execution of
the hardware layers otherwise. The simulated IODMAs hand it the frames they
decoded from memory and get the accelerator's output frames back; the
simulated weight memories hand it their words whenever they were written
(``write_parameters``), and it runs the next frames with those values.

Wire format: wire.py, shared with the accelerator process.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board.errors import BoardError
from bnnflow_board.simulated.wire import read_message, write_message


class Fabric:
    """A running simulated accelerator (one child process) for one compiled design."""

    def __init__(
        self,
        design: str | Path,
        board: str,
        python: str | Path,
        exec_mode: str = "auto",
        cache_dir: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.design = Path(design)
        if not (self.design / "model_hw.onnx").is_file():
            raise BoardError(f"simulated board: {self.design} is not a compile folder (no model_hw.onnx)")
        if not Path(python).is_file():
            raise BoardError(
                f"simulated board: compiler Python {python} not found (build .venv: make install)"
            )
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="simboard-", suffix=".log")[1])
        )
        cmd = [
            str(python),
            "-m",
            "bnnflow.deploy.simulated_accelerator",
            str(self.design),
            "--board",
            board,
            "--exec",
            exec_mode,
        ]
        if cache_dir is not None:
            cmd += ["--cache", str(cache_dir)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        self._lock = threading.Lock()
        hello = self._receive()
        if "error" in hello[0]:
            self.close()
            raise BoardError(f"simulated board: the compiled design did not load: {hello[0]['error']}")
        self.info: dict[str, Any] = hello[0]
        self.exec_mode = str(self.info["exec"])
        self.iodmas: dict[str, dict[str, Any]] = {d["instance"]: d for d in self.info["iodmas"]}
        # instance -> (layout description, the words the bitstream initialises the memory with)
        self.memories: dict[str, tuple[dict[str, Any], np.ndarray]] = {}
        words, at = np.frombuffer(hello[1], dtype="<u4"), 0
        for mem in self.info.get("memories", []):
            n = int(mem["n"])
            self.memories[str(mem["instance"])] = (mem, words[at : at + n].copy())
            at += n

    def _receive(self) -> tuple[dict[str, Any], bytes]:
        assert self._proc.stdout is not None
        try:
            msg = read_message(self._proc.stdout)
        except (EOFError, ValueError) as exc:
            msg = None
            why = str(exc)
        else:
            why = "it exited"
        if msg is None:
            self._proc.wait(timeout=30)
            raise BoardError(f"simulated board: the accelerator process stopped ({why}); see {self.log_path}")
        return msg

    def _request(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """One message to the accelerator process and its reply, one request at a time."""
        with self._lock:
            assert self._proc.stdin is not None
            try:
                write_message(self._proc.stdin, header, payload)
            except BrokenPipeError:
                raise BoardError(
                    f"simulated board: the accelerator process stopped; see {self.log_path}"
                ) from None
            return self._receive()

    def prepare(self) -> None:
        """Load the design (cppsim: compile the generated HLS), as programming an FPGA takes its time."""
        header, _ = self._request({"op": "prepare"})
        if "error" in header:
            raise BoardError(f"simulated board: the compiled design did not load: {header['error']}")

    def write_parameters(self, memories: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Weight memories' words -> the weights and thresholds FINN runs the next frames with."""
        header = {"op": "parameters", "memories": [{"instance": name, "n": len(w)} for name, w in memories]}
        payload = b"".join(np.ascontiguousarray(w, dtype="<u4").tobytes() for _, w in memories)
        reply, _ = self._request(header, payload)
        if "error" in reply:
            raise BoardError(f"simulated board: the written weights could not be used: {reply['error']}")
        return list(reply["parameters"])

    def run(self, frames: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
        """The accelerator's output frames (n x elements) for n input frames."""
        frames = np.ascontiguousarray(frames, dtype="<i8")
        n = int(frames.shape[0])
        header, payload = self._request({"op": "run", "n": n, "shape": list(in_shape)}, frames.tobytes())
        if "error" in header:
            raise BoardError(f"simulated board: the accelerator failed: {header['error']}")
        out = np.frombuffer(payload, dtype="<i8")
        return out.reshape(n, int(np.prod(out_shape)))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                write_message(self._proc.stdin, {"op": "quit"})
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log.close()
