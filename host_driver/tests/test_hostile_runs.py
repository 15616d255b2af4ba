"""Faults around a run: deadlines that a user can predict and would wait for, errors that say what failed,
and a report the board's user can read after ``sudo -E bnnflow-board bench``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from conftest import board_cli

from bnnflow_board.cli import build_parser
from bnnflow_board.deadline import BOARD_DEADLINE, SIMULATED_DEADLINE, deadline_terms, run_deadline_s


def _one_error(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("timeout", "batch", "simulated", "seconds"),
    [
        (None, 1, False, 5.01),  # a board: --timeout 5 s by default, plus 10 ms per image
        (None, 1000, False, 15.0),
        (1.0, 8, False, 1.08),
        (None, 1, True, 31.0),  # the simulated board: 30 s by default, plus 1 s per image
        (None, 8, True, 38.0),
        (1.0, 8, True, 9.0),
    ],
)
def test_run_deadline_rule(timeout: float | None, batch: int, simulated: bool, seconds: float) -> None:
    assert run_deadline_s(*deadline_terms(timeout, simulated), batch) == pytest.approx(seconds)


def test_the_help_states_the_deadline_rule() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = next(a.help for a in sub.choices["bench"]._actions if a.dest == "timeout")
    (b, bi), (s, si) = BOARD_DEADLINE, SIMULATED_DEADLINE
    assert help_text == (
        f"an FPGA run is stuck after SECONDS plus {bi * 1e3:g} ms per image of its batch (default {b:g}); "
        f"on the simulated board plus {si:g} s per image (default {s:g})"
    )
    docs = " ".join((Path(__file__).resolve().parents[2] / "docs" / "board.md").read_text().split())
    assert "`--timeout` plus 10 ms per image of the batch (default 5 s)" in docs
    assert "`--timeout` plus 1 s per image (default 30 s)" in docs


def _stand_in(tmp_path: Path, body: str) -> Path:
    """A "compiler Python" for the simulated board that is not one."""
    script = tmp_path / "stand-in-python"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (which only wait for pid 1 to reap them)."""
    alive = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat_file.parent.name))
    return alive


def test_an_accelerator_process_that_never_answers(designs: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pid"
    python = _stand_in(tmp_path, f"echo $$ > {pids}\nsleep 600\n")  # its child holds the pipe too
    t0 = time.monotonic()
    r = board_cli("bench", str(designs / "digits-pkg"), "--simulated-board", "--compiler-python", str(python),
                  "--sim-start-timeout", "2", "--out", str(tmp_path / "b"), timeout=90)  # fmt: skip
    assert time.monotonic() - t0 < 60
    assert _one_error(r) == (
        f"bnnflow-board: error: simulated board: the accelerator process ({python} -m "
        "bnnflow.deploy.simulated_accelerator) did not answer within 2 s of its start "
        "(--sim-start-timeout); it wrote nothing to stderr"
    )
    assert _alive_in_group(int(pids.read_text())) == []  # the stand-in and its sleep are gone
    assert not (tmp_path / "b").exists()


def test_an_accelerator_process_that_fails_says_why(designs: Path, tmp_path: Path) -> None:
    """Its log goes with the board's work folder: the error carries the log's last line instead."""
    python = _stand_in(tmp_path, "echo 'RuntimeError: no FINN here' >&2\nexit 1\n")
    r = board_cli("bench", str(designs / "digits-pkg"), "--simulated-board", "--compiler-python", str(python),
                  "--out", str(tmp_path / "b"), timeout=90)  # fmt: skip
    err = _one_error(r)
    assert err.startswith("bnnflow-board: error: simulated board: the accelerator process stopped (")
    assert err.endswith("; its last words: RuntimeError: no FINN here") and ".log" not in err
    # one whose stdout, where only the wire format may go, ends in the middle of a message
    python = _stand_in(tmp_path, "printf '\\002\\000\\000\\000{}'\necho 'ImportError: no FINN here' >&2\n")
    r = board_cli("bench", str(designs / "digits-pkg"), "--simulated-board", "--compiler-python", str(python),
                  "--out", str(tmp_path / "b"), timeout=90)  # fmt: skip
    assert _one_error(r).endswith("; its last words: ImportError: no FINN here")


def test_a_relative_compiler_python_is_the_one_in_the_current_folder(designs: Path, tmp_path: Path) -> None:
    """`--compiler-python ./name` runs ./name, as a shell would, not a `name` found on PATH."""
    ran = tmp_path / "ran"
    _stand_in(tmp_path, f"touch {ran}\necho 'RuntimeError: the stand-in' >&2\nexit 1\n")
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "stand-in-python").write_text("#!/bin/sh\necho 'RuntimeError: the one on PATH' >&2\nexit 1\n")
    (on_path / "stand-in-python").chmod(0o755)
    env_path = os.environ["PATH"]
    os.environ["PATH"] = f"{on_path}{os.pathsep}{env_path}"
    try:
        args = ["--compiler-python", "./stand-in-python", "--out", str(tmp_path / "b")]
        r = board_cli(
            "bench", str(designs / "digits-pkg"), "--simulated-board", *args, timeout=90, cwd=tmp_path
        )
    finally:
        os.environ["PATH"] = env_path
    assert _one_error(r).endswith("; its last words: RuntimeError: the stand-in") and ran.is_file()


def _test_set_check(pkg: Path) -> dict:
    r = board_cli("check", str(pkg), "--simulated-board", "--json")
    return next(c for c in json.loads(r.stdout) if c["name"] == "test set")


def test_a_failing_test_set_check_says_what_failed(designs: Path, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(designs / "digits-pkg", pkg)
    passing = _test_set_check(pkg)
    assert passing["status"] == "ok" and ", but" not in passing["detail"]
    images = pkg / "testset" / "images.u8"
    images.write_bytes(images.read_bytes()[:-64])  # one 8x8 image short
    failing = _test_set_check(pkg)
    assert failing["status"] == "FAIL" and failing["detail"] != passing["detail"]
    assert failing["detail"].endswith(f", but testset/images.u8 holds {24 * 64 - 64} bytes, not {24 * 64}")
    shutil.copy2(designs / "digits-pkg" / "testset" / "images.u8", images)
    settings = pkg / "driver" / "settings.json"
    s = json.loads(settings.read_text())
    s["driver_information"]["io_shape_dict"]["idt"] = ["DataType['INT8']"]
    settings.write_text(json.dumps(s))
    failing = _test_set_check(pkg)
    assert failing["status"] == "FAIL"
    assert failing["detail"].endswith(
        ", but driver/settings.json's input type is DataType['INT8'], not UINT8"
    )


def test_the_report_has_the_modes_of_new_files(designs: Path, tmp_path: Path) -> None:
    """After `sudo -E bnnflow-board bench` the board's user reads and copies the report: its folders and
    files get 0777/0666 less the umask, not mkdtemp's 0700."""
    before = os.umask(0o027)
    try:
        r = board_cli("bench", str(designs / "digits-pkg"), "--simulated-board", "--sim-exec", "python",
                      "--batch-sizes", "1", "--warmup", "0", "--repeats", "1", "--no-cpu",
                      "--out", str(tmp_path / "report"))  # fmt: skip
    finally:
        os.umask(before)
    assert r.returncode == 0, r.stderr[-3000:]
    report = tmp_path / "report"
    paths = [report, *report.rglob("*")]
    assert {p.name for p in paths} >= {"report", "bench.json", "bench.txt", "simulated-bitfile"}
    for p in paths:
        want = 0o750 if p.is_dir() else 0o640
        assert stat.S_IMODE(p.stat().st_mode) == want, f"{p}: {oct(stat.S_IMODE(p.stat().st_mode))}"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_the_start_timeout_is_finite_and_positive(made: dict, value: float) -> None:
    from conftest import HOST_PYTHON

    from bnnflow_board.errors import BoardError
    from bnnflow_board.simulated.fabric import Fabric

    with pytest.raises(BoardError, match="the start timeout must be a finite number of seconds above 0"):
        Fabric(made["digits"], "Pynq-Z2", HOST_PYTHON, "python", start_timeout_s=value)
    r = board_cli("check", made["digits"], "--simulated-board", f"--sim-start-timeout={value}")
    assert r.returncode == 2 and "argument --sim-start-timeout: the timeout must be a finite" in r.stderr
