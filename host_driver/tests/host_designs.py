"""Compiled designs and deployment packages for the board-side tests, made in the compiler's environment.

Run with the project's .venv Python (the board environment cannot import
FINN): ``python host_driver/tests/host_designs.py OUT [--data-dir ../shared/data]``.
Writes, under OUT:

* ``digits/``: the 8x8-digits MLP trained for a few steps, exported and
  compiled for the Pynq-Z2, and ``digits-pkg/``, its package (no bitfile);
* ``tfc/`` and ``tfc-pkg/`` likewise for TFC on MNIST (where MNIST is found);
* ``digits-vivado/`` and ``digits-vivado-pkg/``: the digits design as a
  ``bnnflow bitstream`` folder would hold it after Vivado, with the simulated
  board's .bit/.hwh and a timing summary whose worst negative slack is
  negative standing in for Vivado's outputs (no Vivado here);
* ``rtw/``, ``rtw-pkg/`` (100 test images): the digits MLP compiled with
  ``--runtime-weights`` (folded so that MVAU_hls_1's weight memory entries are
  128 bits, four AXI-lite words each); ``rtw-later/`` the same run trained on (120 Adam steps
  instead of 40) and ``rtw-update/`` its weights-only update for ``rtw-pkg``;
  ``rtw-other/`` and ``rtw-other-pkg/``: the same network folded otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # helpers: quick_checkpoint, SHARED_DATA
sys.path.insert(0, str(REPO / "host_driver" / "src"))  # the simulated board's .hwh writer (no pynq needed)

# A Vivado report_timing_summary's Design Timing Summary, with setup violated (WNS < 0).
FAILED_TIMING = """\
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)
    -------      -------  ---------------------  -------------------      -------      -------
     -0.412      -15.231                     97                50902        0.026        0.000


Timing constraints are not met.
"""


def design(out: Path, name: str, model: str, dataset: str, steps: int, pixel_max: int, folding: str,
           data_dir: Path | None) -> Path:  # fmt: skip
    from bnnflow.deploy.package import build_package
    from bnnflow.export import export_model
    from bnnflow.hls import compile_model
    from helpers import quick_checkpoint

    run = out / name
    quick_checkpoint(run / "best.pt", model, dataset, steps, pixel_max, data_dir)
    export_model(run, n_verify=20, data_dir=data_dir)
    compiled = compile_model(
        run, "Pynq-Z2", folding=folding, n_verify=20, data_dir=data_dir, log=None
    ).out_dir
    build_package(compiled, out / f"{name}-pkg", n_images=24, data_dir=data_dir, log=None)
    return compiled


def runtime_weight_designs(out: Path) -> dict[str, str]:
    from bnnflow.deploy.package import build_package
    from bnnflow.deploy.update import build_weights_update
    from bnnflow.export import export_model
    from bnnflow.hls import compile_model
    from helpers import quick_checkpoint

    run = out / "rtw"
    quick_checkpoint(run / "best.pt", "digits-mlp", "digits", 40, 16)
    later = quick_checkpoint(out / "rtw-later" / "best.pt", "digits-mlp", "digits", 120, 16).parent
    export_model(run, n_verify=20)
    compiled = compile_model(
        run, "Pynq-Z2", folding="fps:100000", n_verify=20, runtime_weights=True, log=None
    ).out_dir
    pkg = build_package(compiled, out / "rtw-pkg", n_images=100, log=None)
    build_weights_update(later, pkg, out / "rtw-update", n_verify=10, log=None)
    other = compile_model(
        run,
        "Pynq-Z2",
        out_dir=out / "rtw-other",
        folding="fps:20000",
        n_verify=0,
        runtime_weights=True,
        log=None,
    ).out_dir
    build_package(other, out / "rtw-other-pkg", n_images=8, log=None)
    return {"rtw": str(compiled), "rtw-other": str(other)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    out = Path(args.out)
    import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
    from bnnflow.deploy.package import build_package
    from helpers import SHARED_DATA

    from bnnflow_board.boards import get_board
    from bnnflow_board.simulated.hwh import make_bit, make_hwh

    made = {}
    digits = design(out, "digits", "digits-mlp", "digits", 40, 16, "fps:20000", None)
    made["digits"] = str(digits)
    data = Path(args.data_dir) if args.data_dir else SHARED_DATA
    if (data / "mnist").is_dir():
        made["tfc"] = str(design(out, "tfc", "tfc", "mnist", 25, 255, "published", data))

    vivado = out / "digits-vivado"
    shutil.copytree(digits, vivado)
    pkg = json.loads((out / "digits-pkg" / "manifest.json").read_text())
    hwh, _ = make_hwh(get_board("Pynq-Z2"), pkg["instances"], float(pkg["clock_mhz"]))
    (vivado / "bitfile").mkdir()
    (vivado / "bitfile" / "finn-accel.hwh").write_text(hwh)
    (vivado / "bitfile" / "finn-accel.bit").write_bytes(make_bit(get_board("Pynq-Z2")))
    shutil.copytree(out / "digits-pkg" / "driver", vivado / "driver")
    (vivado / "report").mkdir(exist_ok=True)
    (vivado / "report" / "post_route_timing.rpt").write_text(FAILED_TIMING)
    build_package(vivado, out / "digits-vivado-pkg", n_images=8, log=None)
    made["digits-vivado"] = str(vivado)
    made.update(runtime_weight_designs(out))
    (out / "made.json").write_text(json.dumps(made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
