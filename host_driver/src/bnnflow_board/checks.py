"""``bnnflow-board check``: is this package complete, intact and for this board?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnnflow_board.active_weights import active_weights
from bnnflow_board.boards import get_board
from bnnflow_board.deployformat import BoardSpec, board_matches, board_of_device, family_of_device
from bnnflow_board.detect import RunningBoard
from bnnflow_board.errors import BoardError
from bnnflow_board.hostbits import THRESHOLD_OP
from bnnflow_board.hwh import HwhInfo, read_bit_part, read_hwh, read_timing_summary
from bnnflow_board.package import Package, checksum_problems

OK, FAIL, NOTE = "ok", "FAIL", "note"


@dataclass
class Check:
    name: str
    status: str  # ok, FAIL, note
    detail: str


class _Checks(list[Check]):
    def add(self, name: str, ok: bool, detail: str, note: bool = False) -> bool:
        self.append(Check(name, NOTE if note else OK if ok else FAIL, detail))
        return ok


def run_checks(pkg: Package, board: RunningBoard, bitfile: Path | None) -> list[Check]:
    """All checks, each passing, failing or noted; ``bitfile`` is the .bit to load (its .hwh beside it).

    A check the later ones depend on (the package's board, the bitfile and its
    .hwh) ends the list where it fails.
    """
    out = _Checks()
    _files(out, pkg)
    try:
        spec = get_board(pkg.board)
    except BoardError as exc:
        out.add("package board", False, str(exc))
        return list(out)
    out.add(
        "board",
        spec.family == board.family and (board.name is None or board_matches(spec.name, board.name)),
        f"package for {spec.name} ({spec.part}); running on {board.describe()}",
    )
    _testset(out, pkg)
    hwh = _bitfile(out, pkg, board, spec, bitfile)
    if hwh is not None:
        _clock_and_timing(out, pkg, hwh)
    return list(out)


def _files(out: _Checks, pkg: Package) -> None:
    """Checksums, files the package does not list, and the weights the design is to hold."""
    errors, extra = checksum_problems(pkg)
    out.add(
        "checksums",
        not errors,
        errors[0] if errors else f"{len(pkg.manifest['files'])} files match their sha256",
    )
    if len(errors) > 1:
        out[-1].detail += f" (and {len(errors) - 1} more)"
    if extra:
        out.add(
            "extra files",
            True,
            f"{extra[0]}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
            True,
        )
    try:
        weights = active_weights(pkg)
        if weights.update is not None:
            out.add(
                "weights",
                True,
                f"{weights.label} ({weights.update.root.relative_to(pkg.root)}), applied by update-weights",
            )
        elif weights.runtime_dir is not None:
            out.add(
                "weights",
                True,
                "the compiled design's, written at run time from "
                + str(pkg.manifest["runtime_weights"]["dir"]),
            )
    except BoardError as exc:
        out.add("weights", False, str(exc))


def _testset(out: _Checks, pkg: Package) -> None:
    """The test set and the accelerator's input agree with FINN's driver settings; a failure says which
    of them does not."""
    shapes = pkg.driver.get("io_shape_dict", {})
    ts = pkg.manifest["testset"]
    want = [int(d) for d in pkg.manifest["fpga_input"]["shape"]]
    got = [int(d) for d in shapes.get("ishape_normal", [[0]])[0]]
    idt = str(shapes.get("idt", [""])[0])
    images, size = pkg.root / ts["images"], ts["n"] * int(np.prod(ts["image_shape"]))
    problems = [] if want == got else [f"the manifest says {want}"]
    if not images.is_file():
        problems.append(f"{ts['images']} is missing")
    elif images.stat().st_size != size:
        problems.append(f"{ts['images']} holds {images.stat().st_size} bytes, not {size}")
    ops = pkg.manifest["fpga_input"]["from_images"]
    # a host-binarized design (hostbits.py) takes the thresholded bits, any other the pixels
    want_idt = "BINARY" if ops and ops[0].get("op") == THRESHOLD_OP else "UINT8"
    if want_idt not in idt:
        problems.append(f"driver/settings.json's input type is {idt or 'missing'}, not {want_idt}")
    out.add(
        "test set",
        not problems,
        f"{ts['n']} {ts['dataset']} images {ts['image_shape']} uint8 -> accelerator input {got}"
        + (f", but {'; '.join(problems)}" if problems else ""),
    )


def _bitfile(
    out: _Checks, pkg: Package, board: RunningBoard, spec: BoardSpec, bitfile: Path | None
) -> HwhInfo | None:
    """The bitfile and its .hwh: there, for the package's board and this one, with FINN's DMAs;
    returns the .hwh where there is one to read."""
    if bitfile is None:
        out.add(
            "bitfile", False, "the package has no bitfile: " + str(pkg.manifest["bitfile"].get("why", ""))
        )
        return None
    hwh_path = bitfile.with_suffix(".hwh")
    if not out.add(
        "bitfile",
        bitfile.is_file() and hwh_path.is_file(),
        f"{bitfile.name} and {hwh_path.name}"
        if hwh_path.is_file()
        else f"no {hwh_path.name} beside {bitfile}",
    ):
        return None
    hwh = read_hwh(hwh_path)
    bit_part, design = read_bit_part(bitfile)
    out.add(
        "bit/hwh",
        bit_part == hwh.device + hwh.package,
        f".bit is for {bit_part}, .hwh for {hwh.device}{hwh.package}",
    )
    hwh_spec = board_of_device(hwh.device)
    out.add(
        "bitfile board",
        hwh.device == spec.device,
        f"bitfile for {hwh.device} ({hwh_spec.name if hwh_spec else 'no bnnflow board'}), "
        f"package for {spec.name} ({spec.device})",
    )
    out.add(
        "bitfile on this board",
        family_of_device(hwh.device) == board.family,
        f"{hwh.device} is a {family_of_device(hwh.device)}; this board is a {board.family}",
    )
    if hwh.simulated or "simulated" in design:
        out.add(
            "made by",
            board.simulated,
            "made for the simulated board, not by Vivado"
            + ("" if board.simulated else ": a real board needs Vivado's bitfile (make bitstream)"),
            note=board.simulated,
        )
    shapes = pkg.driver.get("io_shape_dict", {})
    dmas = list(shapes.get("idma_names", [])) + list(shapes.get("odma_names", []))
    missing = [d for d in dmas if d not in hwh.instances or hwh.instances[d]["base"] is None]
    out.add(
        "DMA names",
        bool(dmas) and not missing,
        f"settings.json's {', '.join(dmas)} "
        + (f"not in the .hwh: {', '.join(missing)}" if missing else "are AXI-lite IP in the .hwh"),
    )
    return hwh


def _clock_and_timing(out: _Checks, pkg: Package, hwh: HwhInfo) -> None:
    """The accelerator's clock as compiled, and Vivado's timing summary where the package has one."""
    requested, achieved = hwh.clock_mhz()
    asked = float(pkg.manifest.get("clock_mhz", 0) or 0)
    if achieved is None:
        out.add("clock", True, "no clk_wiz_0 in the .hwh: the accelerator runs on the PS clock", True)
    else:
        out.add(
            "clock",
            requested is None or abs(requested - asked) < 1e-3,
            f"accelerator clock {achieved:g} MHz (requested {requested:g} MHz, compiled for {asked:g} MHz)",
        )
    report = pkg.manifest.get("timing_report")
    if report:
        t = read_timing_summary(pkg.root / report)
        out.add(
            "timing",
            t["met"],
            f"WNS {t['wns_ns']:+.3f} ns, WHS {t['whs_ns']:+.3f} ns"
            + ("" if t["met"] else ": timing not met, results cannot be trusted"),
        )
    else:
        out.add("timing", True, "no timing report in the package (only a Vivado build has one)", True)


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    return "\n".join(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}" for c in checks)
