"""Shared test setup.

`make test` runs this suite with pytest-xdist on every core (``-n auto``). The
designs that several modules check (the session's digits, TFC and CNV compiles,
the runtime-weights runs, CIFAR-10 in its binary layout) are made once per
run, whichever worker asks first, under a file lock in the folder all workers
share; the others wait for it and use the same files. The C engine is built
once the same way, before any test runs ``make`` in cpu/.
"""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock

# One thread per test process: the suite runs on 2-core machines where the
# other core is often busy, and torch's OpenMP barriers stall badly then.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

CPU = Path(__file__).resolve().parents[1] / "cpu"


def _run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder of this pytest run, shared by its xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> object:
    """``make(folder)`` run once per pytest run across workers; its JSON-able result for every caller.

    A failed ``make`` records nothing, so the next caller tries again and fails the same way.
    """
    root = _run_root(tmp_path_factory) / "made-once"
    root.mkdir(exist_ok=True)
    record = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not record.is_file():
            result = make(root / name)
            record.write_text(json.dumps(result, default=str))
        return json.loads(record.read_text())


@pytest.fixture(scope="session", autouse=True)
def cpu_engine_built(tmp_path_factory: pytest.TempPathFactory) -> None:
    """cpu/build made once, so that the ``make`` runs of tests on other workers find it up to date
    instead of compiling the same objects at the same time."""
    with FileLock(str(_run_root(tmp_path_factory) / "cpu-build.lock")):
        subprocess.run(["make", "-s", "-C", str(CPU), "all"], check=True, capture_output=True, timeout=900)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10 in the official binary layout.

    ``BNNFLOW_CIFAR10`` or /tmp/cifar10 when they hold it; otherwise written
    once per run from ../shared/data's JPEG copy by its own script (about
    25 s), so CI runs the CNV tests on real images.
    """
    for candidate in (os.environ.get("BNNFLOW_CIFAR10"), "/tmp/cifar10"):
        if candidate and (Path(candidate) / "cifar-10-batches-bin" / "test_batch.bin").is_file():
            return Path(candidate)
    script = Path(__file__).resolve().parents[2] / "shared" / "data" / "make_cifar10_bin.py"
    if not script.is_file():
        from helpers import unavailable

        unavailable(f"no CIFAR-10: {script} not found and BNNFLOW_CIFAR10 not set")

    def make(out: Path) -> str:
        out.mkdir()
        subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=600)
        return str(out)

    return Path(made_once(tmp_path_factory, "cifar10", make))


# Designs compiled once per run and shared by the modules that check the CPU
# engine's model file, the engine and the deployment package against FINN. Some
# BatchNorm scales are made negative before export, as training can make them:
# FINN absorbs those signs into the XNOR weights (tests/test_hls_signs.py).


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import compiled_with_negative_scales

    def make(root: Path) -> str:
        return str(compiled_with_negative_scales(root / "digits", "digits-mlp", "digits", 40, 16))

    return Path(made_once(tmp_path_factory, "digits", make))


@pytest.fixture(scope="session")
def tfc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import SHARED_DATA, compiled_with_negative_scales, need_mnist

    need_mnist()

    def make(root: Path) -> str:
        return str(compiled_with_negative_scales(root / "tfc", "tfc", "mnist", 25, 255, SHARED_DATA))

    return Path(made_once(tmp_path_factory, "tfc", make))


@pytest.fixture(scope="session")
def rtw_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits MLP after 40 Adam steps, compiled with --runtime-weights, and the same run
    trained on to 120 steps (its first 40 steps are the first run's): the retrained checkpoint."""
    from helpers import quick_checkpoint

    from bnnflow.export import export_model
    from bnnflow.hls import compile_model

    def make(root: Path) -> dict[str, str]:
        first = quick_checkpoint(root / "first" / "best.pt", "digits-mlp", "digits", 40, 16).parent
        later = quick_checkpoint(root / "later" / "best.pt", "digits-mlp", "digits", 120, 16).parent
        export_model(first, n_verify=50)
        compiled = compile_model(first, "Pynq-Z2", n_verify=20, runtime_weights=True, log=None)
        return {"first": str(first), "later": str(later), "compiled": str(compiled.out_dir)}

    return {k: Path(v) for k, v in made_once(tmp_path_factory, "rtw", make).items()}


@pytest.fixture(scope="session")
def cnv_dir(tmp_path_factory: pytest.TempPathFactory, cifar10_dir: Path) -> Path:
    from helpers import compiled_with_negative_scales

    def make(root: Path) -> str:
        return str(compiled_with_negative_scales(root / "cnv", "cnv", "cifar10", 5, 255, cifar10_dir))

    return Path(made_once(tmp_path_factory, "cnv", make))
