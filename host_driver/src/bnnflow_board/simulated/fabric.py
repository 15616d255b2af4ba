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

import contextlib
import math
import os
import signal
import struct
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow_board.deadline import START_TIMEOUT_S
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
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        """Start the accelerator process; it must load the design within ``start_timeout_s``."""
        self.design = Path(design)
        # Absolute, so that `./python` runs the one in the current folder: Path() drops the "./",
        # and a bare name given to Popen is looked up on PATH.
        python = Path(python).absolute()
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
        self.command = f"{python} -m bnnflow.deploy.simulated_accelerator"
        self.start_timeout_s = float(start_timeout_s)
        if not (math.isfinite(self.start_timeout_s) and self.start_timeout_s > 0):
            raise BoardError(
                f"the start timeout must be a finite number of seconds above 0, got {start_timeout_s}"
            )
        self._expired = False
        self._log = open(self.log_path, "ab")
        # a session of its own: at a deadline the whole group goes, so no child of a stuck
        # process keeps the pipe open and the read waiting
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
            start_new_session=True,
        )  # fmt: skip
        self._lock = threading.Lock()
        try:
            hello = self._receive(self.start_timeout_s, "start")
        except BaseException:
            self.close()
            raise
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

    def _kill(self) -> None:
        self._expired = True
        with contextlib.suppress(OSError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def _tail(self) -> str:
        """The accelerator process's last line of stderr: the log itself goes with the board's work folder."""
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        except OSError:
            lines = []
        return f"; its last words: {lines[-1][:300]}" if lines else "; it wrote nothing to stderr"

    def _receive(self, within_s: float | None = None, step: str = "") -> tuple[dict[str, Any], bytes]:
        """The accelerator process's next message; at ``within_s`` seconds the process is killed."""
        assert self._proc.stdout is not None
        timer = threading.Timer(within_s, self._kill) if within_s is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            msg = read_message(self._proc.stdout)
        except (EOFError, ValueError, struct.error) as exc:  # a process that prints on stdout
            msg = None
            why = str(exc)
        else:
            why = "it exited"
        finally:
            if timer is not None:
                timer.cancel()
        if self._expired:
            self._proc.wait(timeout=30)
            raise BoardError(
                f"simulated board: the accelerator process ({self.command}) did not answer within "
                f"{within_s:g} s of its {step} (--sim-start-timeout){self._tail()}"
            )
        if msg is None:
            self._proc.wait(timeout=30)
            raise BoardError(f"simulated board: the accelerator process stopped ({why}){self._tail()}")
        return msg

    def _request(
        self, header: dict[str, Any], payload: bytes = b"", within_s: float | None = None, step: str = ""
    ) -> tuple[dict[str, Any], bytes]:
        """One message to the accelerator process and its reply, one request at a time."""
        with self._lock:
            assert self._proc.stdin is not None
            try:
                write_message(self._proc.stdin, header, payload)
            except BrokenPipeError:
                raise BoardError(f"simulated board: the accelerator process stopped{self._tail()}") from None
            return self._receive(within_s, step)

    def prepare(self) -> None:
        """Load the design (cppsim: compile the generated HLS), as programming an FPGA takes its time."""
        header, _ = self._request({"op": "prepare"}, within_s=self.start_timeout_s, step="preparation")
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
                self._kill()
                self._proc.wait()
        self._log.close()
