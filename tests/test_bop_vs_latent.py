"""The statistics of benchmarks/bop_vs_latent.py: Welch intervals and reaching a target accuracy."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from bnnflow.errors import BnnflowError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bop_vs_latent.py"
_spec = importlib.util.spec_from_file_location("bop_vs_latent", _PATH)
assert _spec is not None and _spec.loader is not None
bvl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bvl)


def test_welch_interval_equal_spread_matches_the_t_table() -> None:
    # Two samples of 3 with variance 1 each: standard error sqrt(2/3), Welch df = 2 (n - 1) = 4,
    # and t(0.975, 4) = 2.776445 from a printed t table.
    w = bvl.welch_interval([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    half = 2.776445 * math.sqrt(2 / 3)
    assert w["diff"] == pytest.approx(-1.0)
    assert w["df"] == pytest.approx(4.0)
    assert w["low"] == pytest.approx(-1.0 - half, abs=1e-5)
    assert w["high"] == pytest.approx(-1.0 + half, abs=1e-5)


def test_welch_interval_unequal_spread_uses_satterthwaite_df() -> None:
    # a: mean 2.5, variance 5/3, n 4; b: mean 4, variance 4, n 3.
    # se^2 = 5/12 + 4/3 = 1.75; df = 1.75^2 / ((5/12)^2 / 3 + (4/3)^2 / 2) = 3.23472 (by hand);
    # a pooled (equal-variance) test would have df = 5.
    w = bvl.welch_interval([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0])
    assert w["df"] == pytest.approx(3.23472, abs=1e-4)
    assert w["diff"] == pytest.approx(-1.5)
    # t(0.975, 3.23472) lies between the table's t(0.975, 4) = 2.776 and t(0.975, 3) = 3.182.
    half = (w["high"] - w["low"]) / 2
    assert 2.776 * math.sqrt(1.75) < half < 3.182 * math.sqrt(1.75)
    assert (w["low"] + w["high"]) / 2 == pytest.approx(-1.5)


def test_welch_interval_degenerate_cases() -> None:
    assert bvl.welch_interval([0.9], [0.8, 0.85]) is None
    # Both samples constant: the interval is the point, with no degrees of freedom and no
    # warning (scipy would warn of precision loss and report df = 1).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = bvl.welch_interval([0.9, 0.9], [0.8, 0.8])
    assert (w["diff"], w["low"], w["high"]) == pytest.approx((0.1, 0.1, 0.1))
    assert math.isnan(w["df"])


def _history(accs: list[float], seconds: float = 10.0) -> list[dict]:
    return [{"epoch": i + 1, "test_acc": a, "seconds": seconds} for i, a in enumerate(accs)]


def test_reach_first_epoch_at_or_above_target() -> None:
    assert bvl.reach(_history([0.80, 0.90, 0.95]), 0.90) == (2, 20.0)
    assert bvl.reach(_history([0.91, 0.89, 0.95]), 0.90) == (1, 10.0)
    assert bvl.reach(_history([0.80, 0.89, 0.899]), 0.90) is None


def test_describe_reach_not_reached_and_partial() -> None:
    never = [{"history": _history([0.5, 0.6])}, {"history": _history([0.5, 0.7])}]
    assert bvl.describe_reach(never, 0.9) == ("not reached", "not reached")
    some = [{"history": _history([0.5, 0.95])}, {"history": _history([0.5, 0.6])}]
    epochs, seconds = bvl.describe_reach(some, 0.9)
    assert epochs == "2.0 ± 0.0 (1/2 seeds)"
    assert seconds == "20 ± 0 (1/2 seeds)"
    all_ = [{"history": _history([0.95, 0.95])}, {"history": _history([0.5, 0.95])}]
    assert bvl.describe_reach(all_, 0.9) == ("1.5 ± 0.7", "15 ± 7")


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(BnnflowError, match="baseline"):
        bvl.parse_args(["--methods", "bop"])
    with pytest.raises(BnnflowError, match="no default target"):
        bvl.parse_args(["--models", "digits-mlp"])
    with pytest.raises(BnnflowError, match="MODEL=PERCENT"):
        bvl.parse_args(["--target", "tfc=ninety"])
    assert bvl.parse_args(["--target", "tfc=92.5"]).targets["tfc"] == pytest.approx(0.925)


def test_unfinished_runs_are_cut_to_the_epochs_all_runs_of_the_model_have() -> None:
    args = bvl.parse_args(["--models", "tfc", "--methods", "bop,latent-adam", "--seeds", "0,1"])
    done = {
        "tfc-bop-s0": {"summary": None, "history": _history([0.5, 0.8, 0.95])},
        "tfc-bop-s1": {"summary": None, "history": _history([0.6, 0.7])},
        "tfc-latent-adam-s0": {"summary": None, "history": _history([0.4, 0.9, 0.3, 0.2])},
    }
    groups = bvl.grouped(args, done)
    assert [len(r["history"]) for r in groups[("tfc", "bop")]] == [2, 2]
    base = groups[("tfc", "latent-adam")]
    assert len(base) == 1
    assert (bvl.final_acc(base[0]), bvl.best_acc(base[0])) == (0.9, 0.9)
    assert len(done["tfc-latent-adam-s0"]["history"]) == 4  # the stored results are left whole


def _bench(tmp_path: Path, name: str, *extra: str) -> int:
    from helpers import SHARED_DATA

    argv = ["--models", "tfc", "--methods", "latent-adam", "--seeds", "0", "--epochs", "3"]
    argv += [  # no --schedule: TFC's recipe, a cosine
        "--limit-train",
        "200",
        "--limit-test",
        "100",
        "--data-dir",
        str(SHARED_DATA),
    ]
    return bvl.main(
        [*argv, "--runs", str(tmp_path / name / "runs"), "--out", str(tmp_path / name / "out"), *extra]
    )


def test_runs_equal_one_uninterrupted_training_and_finished_runs_can_be_adopted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmark trains one epoch per call; a run must still follow its whole schedule."""
    from helpers import SHARED_DATA, need_mnist

    from bnnflow.training.trainer import TrainConfig, train

    need_mnist()
    assert _bench(tmp_path, "bench") == 0
    stored = json.loads((tmp_path / "bench" / "out" / "per_run" / "tfc-latent-adam-s0.json").read_text())
    direct_settings = dict(model="tfc", dataset="mnist", method="latent-adam", epochs=3, batch_size=100)
    direct_settings.update(limit_train=200, limit_test=100, seed=0, threads=1, progress=False)
    direct = train(
        TrainConfig(**direct_settings, data_dir=str(SHARED_DATA), run_dir=str(tmp_path / "direct"))
    )
    assert stored["summary"]["binary_weights_sha256"] == direct["binary_weights_sha256"]
    assert stored["config"]["schedule"] == "cosine"  # the recipe's, as the run was trained
    ours = json.loads((tmp_path / "direct" / "summary.json").read_text())
    assert stored["summary"]["final_test_acc"] == ours["final_test_acc"]
    assert "†" not in (tmp_path / "bench" / "out" / "results.md").read_text()

    # The same run made by `bnnflow train` stands in for the benchmark's own, marked as timed apart.
    assert _bench(tmp_path, "adopting", "--adopt", str(tmp_path / "direct")) == 0
    adopted = json.loads((tmp_path / "adopting" / "out" / "per_run" / "tfc-latent-adam-s0.json").read_text())
    assert adopted["adopted_from"] == str((tmp_path / "direct").resolve())
    assert [r["test_acc"] for r in adopted["history"]] == [r["test_acc"] for r in stored["history"]]
    assert not (tmp_path / "adopting" / "runs").exists()  # nothing was trained
    assert "† Includes runs trained before" in (tmp_path / "adopting" / "out" / "results.md").read_text()
    # A run saved before --label-smoothing existed trained without it, and is adopted as such.
    payload = torch.load(tmp_path / "direct" / "checkpoint.pt", weights_only=False)
    del payload["config"]["label_smoothing"]
    torch.save(payload, tmp_path / "direct" / "checkpoint.pt")
    assert _bench(tmp_path, "adopting-older", "--adopt", str(tmp_path / "direct")) == 0

    # A run with other settings is refused in one line, naming the difference.
    other = dict(direct_settings, schedule="constant")
    train(TrainConfig(**other, data_dir=str(SHARED_DATA), run_dir=str(tmp_path / "constant")))
    capsys.readouterr()
    assert _bench(tmp_path, "refusing", "--adopt", str(tmp_path / "constant")) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "schedule 'constant' (here 'cosine')" in err
