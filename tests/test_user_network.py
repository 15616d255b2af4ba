"""A user's own network: named by file or module, kept in the run folder, rebuilt from it alone."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.errors import BnnflowError
from bnnflow.layout import RunDir
from bnnflow.models import model_label, resolve_source
from bnnflow.runs import load_checkpoint, load_model
from bnnflow.training.trainer import TrainConfig, train

#: A small W1A1 MLP written the way a user writes one: Brevitas layers, bias-free weight layers.
MLP_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from brevitas.nn import QuantIdentity, QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    def _act():
        return QuantIdentity(act_quant=CommonActQuant, bit_width=1)

    def _linear(n_in, n_out):
        return QuantLinear(n_in, n_out, bias=False, weight_bit_width=1, weight_quant=CommonWeightQuant)

    class TinyMLP(nn.Module):
        def __init__(self, input_shape, num_classes, hidden=32):
            super().__init__()
            n_in = 1
            for d in input_shape:
                n_in *= d
            self.body = nn.Sequential(
                nn.Flatten(), _act(), _linear(n_in, hidden), nn.BatchNorm1d(hidden), _act(),
                _linear(hidden, num_classes), TensorNorm(),
            )

        def forward(self, x):
            return self.body(2.0 * x - 1.0)

    def build(input_shape, num_classes):
        return TinyMLP(input_shape, num_classes)
    """
)


def write_network(folder: Path, name: str = "mynet.py", source: str = MLP_SOURCE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source)
    return path


def short_run(model: str, run_dir: Path, **kw: object) -> dict:
    torch.set_num_threads(1)
    settings: dict = {
        "dataset": "digits",
        "epochs": 1,
        "batch_size": 50,
        "limit_train": 200,
        "limit_test": 100,
        "device": "cpu",
        "threads": 1,
        "progress": False,
        **kw,
    }
    return train(TrainConfig(model=model, run_dir=str(run_dir), **settings))


def test_train_from_file_then_rebuild_from_moved_run_folder(tmp_path: Path) -> None:
    user = write_network(tmp_path / "user")
    run = tmp_path / "runs" / "mine"
    short_run(f"{user}:build", run)
    record = load_checkpoint(run / "best.pt")["network_source"]
    assert record["callable"] == "build" and record["num_classes"] == 10
    assert record["input_shape"] == [1, 8, 8]
    assert (RunDir(run).network / "mynet.py").read_text() == MLP_SOURCE
    trained, _ = load_model(run)

    moved = tmp_path / "elsewhere" / "moved-run"
    moved.parent.mkdir()
    shutil.move(str(run), str(moved))
    shutil.rmtree(user.parent)  # the user's file is gone
    model, payload = load_model(moved)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    assert type(model).__name__ == "TinyMLP"
    # evaluate and export from the moved folder alone
    from bnnflow.export import export_model
    from bnnflow.training.commands import evaluate_checkpoint

    assert evaluate_checkpoint(str(moved / "best.pt"), limit=50)["images"] == 50

    result = export_model(moved, n_verify=40)
    assert result.verification["label_agreement"] == 1.0


def test_a_changed_copy_is_refused(tmp_path: Path) -> None:
    user = write_network(tmp_path / "user")
    run = tmp_path / "run"
    short_run(f"{user}:build", run)
    copy = RunDir(run).network / "mynet.py"
    copy.write_text(MLP_SOURCE.replace("hidden=32", "hidden=33"))
    with pytest.raises(BnnflowError, match="changed after training"):
        load_model(run)


def test_module_path_and_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkgroot" / "usernets"
    write_network(package, "__init__.py", "")
    write_network(package, "mlps.py")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgroot"))
    run = tmp_path / "run"
    summary = short_run("usernets.mlps:TinyMLP", run)
    assert summary["model"] == "usernets.mlps:TinyMLP"
    assert (RunDir(run).network / "mlps.py").is_file()
    monkeypatch.delitem(sys.modules, "usernets.mlps")
    monkeypatch.delitem(sys.modules, "usernets")
    shutil.rmtree(package)
    model, _ = load_model(run)
    assert type(model).__name__ == "TinyMLP"


def test_resume_uses_the_run_folders_copy(tmp_path: Path) -> None:
    user = write_network(tmp_path / "user")
    run = tmp_path / "run"
    short_run(f"{user}:build", run)
    user.write_text("raise SystemExit('the original must not run again')\n")
    summary = short_run(f"{user}:build", run, resume=True, epochs=2)
    assert summary["epochs"] == 2


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nosuch", "unknown model"),
        ("nets/mynet.py", r"unknown model.*for that file: nets/mynet\.py:build, naming the callable"),
        ("missing.py:build", "not found"),
        ("bnnflow_no_such_module:build", "cannot import"),
    ],
)
def test_bad_references_are_one_line(ref: str, message: str) -> None:
    with pytest.raises(BnnflowError, match=message):
        resolve_source(ref)


def test_bad_user_code_is_one_line(tmp_path: Path) -> None:
    broken = write_network(tmp_path, "broken.py", "import nosuchmodule_xyz\n")
    with pytest.raises(BnnflowError, match="failed to run: ModuleNotFoundError"):
        short_run(f"{broken}:build", tmp_path / "r1")
    wrong = write_network(tmp_path, "wrong.py", "def build(shape, n):\n    return 3\n")
    with pytest.raises(BnnflowError, match="not a torch.nn.Module"):
        short_run(f"{wrong}:build", tmp_path / "r2")
    with pytest.raises(BnnflowError, match="no callable 'nope'"):
        short_run(f"{wrong}:nope", tmp_path / "r3")
    assert not (tmp_path / "r1" / "checkpoint.pt").exists()


def test_labels() -> None:
    assert model_label("tfc") == "tfc"
    assert model_label("nets/my.net.py:build") == "my.net-build"
    assert model_label("pkg.mod:Net") == "mod-Net"
