"""Shared test setup."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One thread per test process: the suite runs on 2-core machines where the
# other core is often busy, and torch's OpenMP barriers stall badly then.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10 in the official binary layout.

    ``BNNFLOW_CIFAR10`` or /tmp/cifar10 when they hold it; otherwise written
    once per session from ../shared/data's JPEG copy by its own script (about
    25 s), so CI runs the CNV tests on real images.
    """
    for candidate in (os.environ.get("BNNFLOW_CIFAR10"), "/tmp/cifar10"):
        if candidate and (Path(candidate) / "cifar-10-batches-bin" / "test_batch.bin").is_file():
            return Path(candidate)
    script = Path(__file__).resolve().parents[2] / "shared" / "data" / "make_cifar10_bin.py"
    if not script.is_file():
        from helpers import unavailable

        unavailable(f"no CIFAR-10: {script} not found and BNNFLOW_CIFAR10 not set")
    out = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=600)
    return out


# Designs compiled once per session and shared by the modules that check the CPU
# engine's model file, the engine and the deployment package against FINN. Some
# BatchNorm scales are made negative before export, as training can make them:
# FINN absorbs those signs into the XNOR weights (tests/test_hls_signs.py).


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import compiled_with_negative_scales

    return compiled_with_negative_scales(
        tmp_path_factory.mktemp("cpu") / "digits", "digits-mlp", "digits", 40, 16
    )


@pytest.fixture(scope="session")
def tfc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import SHARED_DATA, compiled_with_negative_scales, need_mnist

    need_mnist()
    return compiled_with_negative_scales(
        tmp_path_factory.mktemp("cpu") / "tfc", "tfc", "mnist", 25, 255, SHARED_DATA
    )


@pytest.fixture(scope="session")
def rtw_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits MLP after 40 Adam steps, compiled with --runtime-weights, and the same run
    trained on to 120 steps (its first 40 steps are the first run's): the retrained checkpoint."""
    from helpers import quick_checkpoint

    from bnnflow.export import export_model
    from bnnflow.hls import compile_model

    root = tmp_path_factory.mktemp("rtw")
    first = quick_checkpoint(root / "first" / "best.pt", "digits-mlp", "digits", 40, 16).parent
    later = quick_checkpoint(root / "later" / "best.pt", "digits-mlp", "digits", 120, 16).parent
    export_model(first, n_verify=50)
    compiled = compile_model(first, "Pynq-Z2", n_verify=20, runtime_weights=True, log=None)
    return {"first": first, "later": later, "compiled": compiled.out_dir}


@pytest.fixture(scope="session")
def cnv_dir(tmp_path_factory: pytest.TempPathFactory, cifar10_dir: Path) -> Path:
    from helpers import compiled_with_negative_scales

    return compiled_with_negative_scales(
        tmp_path_factory.mktemp("cpu") / "cnv", "cnv", "cifar10", 5, 255, cifar10_dir
    )
