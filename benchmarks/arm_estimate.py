"""The C engine's speed on the boards' ARM cores, estimated with llvm-mca (estimates, not measurements).

    python benchmarks/arm_estimate.py                 # every network, both boards, with the x86 calibration
    python benchmarks/arm_estimate.py --json
    python benchmarks/arm_estimate.py --networks tfc cnv --no-calibrate

For each network (a model file with the published shapes from
``cpu/build/make-model NAME FILE --seed 1``, or ``--models-dir`` holding
NAME.bnn) and board: cycles per image on one core from the NEON kernels' inner
loops (bnnflow.bench.armestimate), images/s at batch 1 on one core, on all
cores (the batch split over the cores, each at the one-core rate: an upper
bound), binary MACs per cycle, the engine-layout weight bytes against the L1 and
L2, and BNN-PYNQ's published software figure beside it (its unoptimised path).

The calibration runs the same estimate for the x86 kernel sets this CPU has
(AVX2 with llvm-mca's znver3 model, AVX-512 with icelake-server: LLVM 14 has no
Zen 4 model) and measures the engine here (``bnnflow-cpu bench --json``, batch
1 median latency, one thread, BNNCPU_DISABLE to pick the set); measured over
estimated, per network, is the spread carried into the ARM figures as
"likely" = estimate x ratio over the smallest to the largest ratio.
Needs ``make -C cpu all`` (bnnflow-cpu, make-model) and llvm-mca (Debian llvm-14).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bnnflow.bench.armestimate import (  # noqa: E402
    BNN_PYNQ_SOFTWARE_MS,
    BOARDS,
    TARGETS,
    Estimate,
    estimate,
)

NETWORKS = ("digits", "tfc", "sfc", "lfc", "cnv")
ENGINE = ROOT / "cpu" / "build" / "bnnflow-cpu"
MAKE_MODEL = ROOT / "cpu" / "build" / "make-model"
# BNNCPU_DISABLE setting that leaves each x86 kernel set selected.
X86_SETS = {"x86-avx2": "avx512", "x86-avx512": ""}


def host_mhz() -> float:
    """The clock /proc/cpuinfo states (the nominal one; boost is not seen here)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1])
    raise SystemExit("no 'cpu MHz' in /proc/cpuinfo: pass --host-mhz")


def model_files(names: list[str], models_dir: Path | None, tmp: Path) -> dict[str, Path]:
    out = {}
    for n in names:
        if models_dir:
            out[n] = models_dir / f"{n}.bnn"
            continue
        out[n] = tmp / f"{n}.bnn"
        subprocess.run([str(MAKE_MODEL), n, str(out[n]), "--seed", "1"], check=True, capture_output=True)
    return out


def measure_us(model: Path, disable: str) -> tuple[str, float]:
    env = dict(os.environ, BNNCPU_DISABLE=disable)
    cmd = [str(ENGINE), "bench", str(model), "--json", "--threads", "1", "--batch", "16", "--runs", "2000"]
    r = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    got = json.loads(r.stdout)
    return got["kernels"], float(got["latency_us"]["median"])


def calibrate(models: dict[str, Path], mhz: float) -> list[dict]:
    flags = Path("/proc/cpuinfo").read_text()
    rows = []
    for key, disable in X86_SETS.items():
        if key == "x86-avx512" and "avx512_vpopcntdq" not in flags:
            continue
        for net, path in models.items():
            est = estimate(path, key)
            if isinstance(est, str):
                raise SystemExit(f"{key}: {est}")
            kernels, us = measure_us(path, disable)
            want = TARGETS[key].kernels
            if kernels != want:
                raise SystemExit(f"BNNCPU_DISABLE={disable!r} selected {kernels}, not {want}")
            est_us = est.cycles / mhz
            rows.append(
                {
                    "network": net,
                    "kernels": want,
                    "mca_cpu": TARGETS[key].mca[1].split("=")[1],
                    "estimated_cycles": round(est.cycles),
                    "estimated_us": est_us,
                    "measured_us": us,
                    "ratio": us / est_us,
                }
            )
    return rows


def arm_rows(models: dict[str, Path], cal: list[dict]) -> list[dict]:
    rows = []
    for net, path in models.items():
        ratios = [c["ratio"] for c in cal if c["network"] == net]
        for board in BOARDS:
            est = estimate(path, board)
            if isinstance(est, str):
                raise SystemExit(f"{board}: {est}")
            rows.append(_arm_row(net, est, ratios))
    return rows


def _arm_row(net: str, est: Estimate, ratios: list[float]) -> dict:
    t = est.target
    row = {
        "network": net,
        "board": t.key,
        "cpu": t.label,
        "mhz": t.mhz,
        "cores": t.cores,
        "clock_source": t.clock_source,
        "cycles_per_image": round(est.cycles),
        "ms_per_image": est.seconds() * 1e3,
        "images_per_s_1core": est.images_per_s,
        "images_per_s_all_cores_upper_bound": est.images_per_s_all_cores,
        "binary_macs": est.binary_macs,
        "binary_macs_per_cycle": est.macs_per_cycle,
        "weight_bytes": est.weight_bytes,
        "fits_l1": est.fits_l1,
        "fits_l2": est.fits_l2,
        "neglected": est.neglected,
        "layers": [
            {
                "layer": la.index,
                "kind": la.kind,
                "cycles": round(la.cycles),
                "regions": la.regions,
                "note": la.note,
            }
            for la in est.layers
        ],
    }
    if ratios:
        row["calibration_ratios"] = ratios
        row["likely_images_per_s_1core"] = [est.images_per_s / max(ratios), est.images_per_s / min(ratios)]
    pub = BNN_PYNQ_SOFTWARE_MS.get(net)
    if pub and t.key == "pynq-z2":
        row["bnn_pynq_software_ms"], row["bnn_pynq_source"] = pub
    return row


def print_tables(cal: list[dict], rows: list[dict], mhz: float) -> None:
    if cal:
        print(
            f"Calibration: measured here (bnnflow-cpu bench, batch 1 median, 1 thread) over estimated "
            f"(llvm-mca, at {mhz:.0f} MHz)"
        )
        print(
            f"{'network':8} {'kernels':8} {'mca model':15} {'est cycles':>11} "
            f"{'est us':>9} {'meas us':>9} {'ratio':>6}"
        )
        for c in cal:
            print(
                f"{c['network']:8} {c['kernels']:8} {c['mca_cpu']:15} {c['estimated_cycles']:>11,} "
                f"{c['estimated_us']:>9.2f} {c['measured_us']:>9.2f} {c['ratio']:>6.2f}"
            )
        print()
    print("ARM CPU, ESTIMATED with llvm-mca (batch 1; 'all cores' = batch split, an upper bound)")
    print(
        f"{'network':8} {'board':8} {'MHz':>5} {'cycles/img':>12} {'ms/img':>9} {'img/s 1 core':>13} "
        f"{'likely (calibr.)':>17} {'img/s all':>10} {'bMAC/cyc':>8} {'weights':>9} {'fits':>5}  BNN-PYNQ sw"
    )
    for r in rows:
        likely = r.get("likely_images_per_s_1core")
        lk = f"{likely[0]:,.0f}-{likely[1]:,.0f}" if likely else "-"
        fits = "L1" if r["fits_l1"] else "L2" if r["fits_l2"] else "DRAM"
        pub = f"{r['bnn_pynq_software_ms']} ms/img" if "bnn_pynq_software_ms" in r else ""
        print(
            f"{r['network']:8} {r['board']:8} {r['mhz']:>5.0f} {r['cycles_per_image']:>12,} "
            f"{r['ms_per_image']:>9.4f} {r['images_per_s_1core']:>13,.0f} {lk:>17} "
            f"{r['images_per_s_all_cores_upper_bound']:>10,.0f} {r['binary_macs_per_cycle']:>8.1f} "
            f"{r['weight_bytes'] / 1024:>7.1f}KB {fits:>5}  {pub}"
        )
    print("\nBNN-PYNQ sw: its published unoptimised software path on the Pynq-Z2's Cortex-A9.")
    for key in BOARDS:
        print(f"{TARGETS[key].label}: clock per {TARGETS[key].clock_source}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    ap.add_argument("--models-dir", type=Path, help="NAME.bnn files to use instead of make-model's")
    ap.add_argument("--no-calibrate", action="store_true", help="skip the x86 calibration")
    ap.add_argument(
        "--host-mhz", type=float, help="this CPU's clock for the calibration (default: /proc/cpuinfo)"
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        models = model_files(a.networks, a.models_dir, Path(tmp))
        mhz = a.host_mhz or host_mhz()
        cal = [] if a.no_calibrate else calibrate(models, mhz)
        rows = arm_rows(models, cal)
    if a.json:
        print(
            json.dumps(
                {"estimate": "llvm-mca, not a measurement", "host_mhz": mhz, "calibration": cal, "arm": rows},
                indent=1,
            )
        )
    else:
        print_tables(cal, rows, mhz)
    return 0


if __name__ == "__main__":
    sys.exit(main())
