"""The llvm-mca estimate of the C engine on the boards' ARM cores (bnnflow.bench.armestimate)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import make_cpu, unavailable

from bnnflow.bench import armestimate
from bnnflow.bench.armestimate import BOARDS, Estimate, estimate_arm, parse_mca

# make-model shares cpu/build with the other C-engine tests: one worker at a time.
pytestmark = pytest.mark.xdist_group("cpu-make")
CPU = Path(__file__).resolve().parents[1] / "cpu"
MAKE_MODEL = CPU / "build" / "make-model"

# llvm-mca 14's output for two regions (cut: the per-instruction tables dropped), the
# second region inlined at two call sites, as in the AVX2 kernels.
SAMPLE = """\
[0] Code Region - neon_bgemm_p2

Iterations:        100
Instructions:      3000
Total Cycles:      4104
Total uOps:        3300

Dispatch Width:    2
Block RThroughput: 33.0

[1] Code Region - neon_bgemm_p1

Iterations:        100
Instructions:      1700
Total Cycles:      3104
Block RThroughput: 13.0

[2] Code Region - neon_bgemm_p1

Iterations:        100
Instructions:      1700
Total Cycles:      2906
Block RThroughput: 13.0
"""


def test_parse_mca_gives_cycles_per_iteration() -> None:
    assert parse_mca(SAMPLE) == {"neon_bgemm_p2": 41.04, "neon_bgemm_p1": 31.04}
    assert parse_mca("no regions here") == {}


def _need_tools() -> None:
    missing = [t for t in ("make", "cc", "llvm-mca") if not shutil.which(t)]
    cross = ("arm-linux-gnueabihf-gcc", "aarch64-linux-gnu-gcc")
    if not all(shutil.which(c) for c in cross) and not shutil.which("clang"):
        missing.append("the ARM cross compilers or clang")
    if missing:
        unavailable(f"{', '.join(missing)} not installed: no ARM estimate (Debian: llvm-14, see README)")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _need_tools()
    make_cpu("build/make-model", timeout=600)
    out = tmp_path_factory.mktemp("arm-models")
    paths = {}
    for name in ("tfc", "lfc"):
        paths[name] = out / f"{name}.bnn"
        subprocess.run([str(MAKE_MODEL), name, str(paths[name]), "--seed", "1"], check=True, timeout=60)
    return paths


@pytest.mark.parametrize("board", BOARDS)
def test_tfc_has_cycles_in_every_modelled_layer(models: dict[str, Path], board: str) -> None:
    est = estimate_arm(models["tfc"], board)
    assert isinstance(est, Estimate), est
    kinds = [la.kind for la in est.layers]
    assert kinds == ["THRESHOLD", "MVAU", "MVAU", "MVAU", "MVAU", "LABEL_SELECT"]
    for la in est.layers[:-1]:
        assert la.cycles > 0 and la.regions, la
    assert est.layers[-1].cycles == 0 and "neglected" in est.layers[-1].note
    assert est.binary_macs == 784 * 64 + 64 * 64 * 2 + 64 * 10
    assert est.images_per_s > 0 and est.images_per_s_all_cores == est.images_per_s * est.target.cores
    assert est.fits_l1 and est.fits_l2


@pytest.mark.parametrize("board", BOARDS)
def test_lfc_costs_more_than_tfc_roughly_by_its_macs(models: dict[str, Path], board: str) -> None:
    tfc, lfc = (estimate_arm(models[n], board) for n in ("tfc", "lfc"))
    assert isinstance(tfc, Estimate) and isinstance(lfc, Estimate), (tfc, lfc)
    by_cycles = lfc.cycles / tfc.cycles
    by_macs = lfc.binary_macs / tfc.binary_macs
    assert 0.5 < by_cycles / by_macs < 1.5, (by_cycles, by_macs)
    assert not lfc.fits_l1 and lfc.fits_l2  # 362 KB of weights


def test_without_llvm_mca_gives_the_reason(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    armestimate.kernel_cycles.cache_clear()
    try:
        got = estimate_arm(models["tfc"], "pynq-z2")
    finally:
        armestimate.kernel_cycles.cache_clear()
    assert isinstance(got, str) and "llvm-mca not found" in got and "llvm-14" in got


def test_bad_board_and_bad_file_give_reasons(models: dict[str, Path], tmp_path: Path) -> None:
    assert "no ARM estimate for board" in estimate_arm(models["tfc"], "zcu104")
    bad = tmp_path / "bad.bnn"
    bad.write_bytes(b"not a model")
    got = estimate_arm(bad, "ultra96")
    assert isinstance(got, str) and got.startswith("cannot read the model file")


def test_bench_summary_and_its_row_are_labelled_estimates(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bnnflow.bench.report import _arm_estimate_row

    got = armestimate.bench_summary(models["tfc"], "Pynq-Z2", 1e6)
    assert got["available"] and got["where"] == "estimated" and got["mhz"] == 650 and got["cores"] == 2
    assert got["fpga_expected_over_arm_1_core"] == pytest.approx(1e6 / got["images_per_s_1_core"])
    assert got["fpga_expected_over_arm_all_cores"] == pytest.approx(got["fpga_expected_over_arm_1_core"] / 2)
    row = _arm_estimate_row(got)
    assert row["where"] == "ARM CPU, estimated" and "Cortex-A9 at 650 MHz" in row["what"]
    assert armestimate.bench_summary(models["tfc"], "Ultra96-V2", 1e6)["cpu"] == "Cortex-A53 at 1200 MHz"
    # without llvm-mca the row says so, and nothing else changes
    monkeypatch.setenv("PATH", str(tmp_path))
    armestimate.kernel_cycles.cache_clear()
    try:
        missing = armestimate.bench_summary(models["tfc"], "Pynq-Z2", 1e6)
    finally:
        armestimate.kernel_cycles.cache_clear()
    assert not missing["available"] and "llvm-mca not found" in missing["why"]
    row = _arm_estimate_row(missing)
    assert row["what"].startswith("not available: llvm-mca not found") and "images_per_s" not in row


def test_a_board_measurement_replaces_the_estimate() -> None:
    from bnnflow.bench.report import _arm_estimate_lines, _arm_estimate_rows

    arm = {"available": False, "why": "llvm-mca not found"}
    unmeasured = {"arm_estimate": arm, "ratios": {"fpga_measured_over_arm_cpu": None}}
    assert [r["where"] for r in _arm_estimate_rows(unmeasured)] == ["ARM CPU, estimated"]
    assert _arm_estimate_lines(unmeasured) == [
        "FPGA expected / ARM CPU estimated: not available: llvm-mca not found"
    ]
    measured = {"arm_estimate": arm, "ratios": {"fpga_measured_over_arm_cpu": {"accelerator": 9.0}}}
    assert _arm_estimate_rows(measured) == [] and _arm_estimate_lines(measured) == []
    older = {"ratios": {"fpga_measured_over_arm_cpu": None}}  # a bench.json from before the estimate
    assert _arm_estimate_rows(older) == [] and _arm_estimate_lines(older) == []
