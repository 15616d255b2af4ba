"""The training loop: run folder contents, resume to the bit, NaN handling."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from bnnflow.errors import BnnflowError
from bnnflow.runs import load_checkpoint, load_model
from bnnflow.training import trainer
from bnnflow.training.trainer import TrainConfig, train


def _cfg(run_dir: Path, **kw: object) -> TrainConfig:
    base = dict(
        model="digits-mlp",
        run_dir=str(run_dir),
        epochs=2,
        batch_size=50,
        limit_train=300,
        limit_test=100,
        tau=1e-6,
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _states_equal(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for key, value in ca["model_state"].items():
        assert torch.equal(value, cb["model_state"][key]), key
    opt_a, opt_b = ca["optimizer_state"]["optimizers"], cb["optimizer_state"]["optimizers"]
    for sa, sb in zip(opt_a, opt_b, strict=True):
        for pid, state in sa["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, sb["state"][pid][key]), key


def test_run_folder_contents(tmp_path: Path) -> None:
    summary = train(_cfg(tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("run.json", "checkpoint.pt", "best.pt", "metrics.csv", "training.png", "summary.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    flip_cols = [c for c in rows[0] if c.startswith("log_flip_ratio/")]
    assert len(flip_cols) == 3  # one per binary layer
    assert summary["total_flips"] > 0
    assert 12.0 < summary["bytes_per_binary_weight"] < 12.01  # weight, gradient, average (+ counters)
    assert (run / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, payload = load_model(run)
    assert payload["model"] == "digits-mlp" and not model.training
    weights = payload["model_state"]["features.2.weight"]
    assert set(weights.unique().tolist()) == {-1.0, 1.0}


def test_resume_after_epoch_is_bit_identical(tmp_path: Path) -> None:
    train(_cfg(tmp_path / "straight", epochs=3))
    train(_cfg(tmp_path / "split", epochs=1))
    train(_cfg(tmp_path / "split", epochs=3, resume=True))
    _states_equal(tmp_path / "straight" / "checkpoint.pt", tmp_path / "split" / "checkpoint.pt")


@pytest.mark.parametrize(
    ("method", "compact"), [("bop", False), ("bop", True), ("bop2", True), ("latent-adam", False)]
)
def test_resume_after_kill_mid_epoch_is_bit_identical(tmp_path: Path, method: str, compact: bool) -> None:
    train(_cfg(tmp_path / "straight", method=method, compact=compact))
    with pytest.raises(BnnflowError) as info:
        # 6 steps per epoch
        train(_cfg(tmp_path / "killed", method=method, compact=compact, interrupt_after_steps=4))
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["batches_done"] == 4
    train(_cfg(tmp_path / "killed", method=method, compact=compact, resume=True))
    _states_equal(tmp_path / "straight" / "checkpoint.pt", tmp_path / "killed" / "checkpoint.pt")
    a = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()
    b = (tmp_path / "killed" / "metrics.csv").read_text().splitlines()
    # Same losses, accuracies and flips; only the seconds column differs.
    strip = lambda rows: [[v for i, v in enumerate(r.split(",")) if i != 5] for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    train(_cfg(run, epochs=1))
    good = (run / "checkpoint.pt").read_bytes()
    real = trainer.F.cross_entropy
    calls = {"n": 0}

    def poisoned(logits: torch.Tensor, y: torch.Tensor, **kw: object) -> torch.Tensor:
        calls["n"] += 1
        loss = real(logits, y, **kw)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(trainer.F, "cross_entropy", poisoned)
    with pytest.raises(BnnflowError, match="not finite at epoch 2, batch 3"):
        train(_cfg(run, epochs=2, resume=True))
    assert (run / "checkpoint.pt").read_bytes() == good


def test_refuses_to_clobber_or_resume_mismatch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, epochs=1))
    with pytest.raises(BnnflowError, match="already holds a checkpoint"):
        train(_cfg(run, epochs=1))
    with pytest.raises(BnnflowError, match="method"):
        train(_cfg(run, epochs=2, resume=True, method="latent-adam"))
    with pytest.raises(BnnflowError, match="nothing to resume"):
        train(_cfg(tmp_path / "empty", resume=True))


def test_bad_names_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BnnflowError, match="unknown model"):
        train(_cfg(tmp_path / "r", model="resnet"))
    with pytest.raises(BnnflowError, match="unknown dataset"):
        train(_cfg(tmp_path / "r", dataset="imagenet"))
    with pytest.raises(BnnflowError, match="takes"):
        train(_cfg(tmp_path / "r", dataset="mnist"))  # 28x28 images into the 8x8 MLP
    bad = [
        ({"gamma": 2.0}, "--gamma"),
        ({"tau": -1.0}, "--tau"),
        ({"sigma": -0.5}, "--sigma"),
        ({"lr": 0.0}, "--lr"),
        ({"threads": -1}, "--threads"),
        ({"checkpoint_every": -3}, "--checkpoint-every"),
        ({"device": "tpu9"}, "unknown device"),
    ]
    for kw, message in bad:
        with pytest.raises(BnnflowError, match=message):
            train(_cfg(tmp_path / "r", **kw))
    assert not (tmp_path / "r").exists()


def test_bop2_and_compact_train(tmp_path: Path) -> None:
    s2 = train(_cfg(tmp_path / "b2", method="bop2", epochs=1))
    sc = train(_cfg(tmp_path / "c", compact=True, epochs=1))
    # weight, gradient, two averages; sign bit and bfloat16 average (plus
    # the per-layer counters and placeholders: under 0.01 byte per weight here)
    assert 16.0 < s2["bytes_per_binary_weight"] < 16.01
    assert 2.125 < sc["bytes_per_binary_weight"] < 2.135
    assert s2["final_test_acc"] > 0.5 and sc["final_test_acc"] > 0.5


def test_dropout_rate_is_set_recorded_and_checked_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    seen: list[float] = []
    original = trainer.set_dropout_

    def spy(model: torch.nn.Module, rate: float) -> None:
        original(model, rate)
        seen.extend(m.p for m in model.modules() if isinstance(m, torch.nn.Dropout))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "set_dropout_", spy)
        train(_cfg(run, epochs=1, dropout=0.05))
    assert seen and set(seen) == {0.05}
    assert json.loads((run / "run.json").read_text())["config"]["dropout"] == 0.05
    with pytest.raises(BnnflowError, match="dropout=0.05"):
        train(_cfg(run, epochs=2, resume=True, dropout=0.2))  # another rate, named on the command
    with pytest.raises(BnnflowError, match="--dropout must be in"):
        train(_cfg(tmp_path / "r", dropout=1.0))


def test_label_smoothing_reaches_the_loss_and_is_recorded(tmp_path: Path) -> None:
    plain = train(_cfg(tmp_path / "plain", epochs=1))
    smooth = train(_cfg(tmp_path / "smooth", epochs=1, label_smoothing=0.2))
    config = json.loads((tmp_path / "smooth" / "run.json").read_text())["config"]
    assert config["label_smoothing"] == 0.2
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["config"]["label_smoothing"] == 0.0
    # Same seed, same batches: only the loss differs, so the flips differ too.
    assert smooth["binary_weights_sha256"] != plain["binary_weights_sha256"]
    with pytest.raises(BnnflowError, match="--label-smoothing must be in"):
        train(_cfg(tmp_path / "r", label_smoothing=1.0))


def test_tau_schedule_decays_the_threshold_and_resumes_to_the_bit(tmp_path: Path) -> None:
    settings = dict(method="bop2", epochs=3, tau=1e-3, tau_schedule="cosine")
    whole = train(_cfg(tmp_path / "whole", **settings))
    rows = list(csv.DictReader((tmp_path / "whole" / "metrics.csv").open()))
    # The threshold each epoch ran with: a half cosine from 1e-3 over the 3 epochs.
    assert [float(r["tau"]) for r in rows] == pytest.approx([1e-3, 0.75e-3, 0.25e-3])
    assert json.loads((tmp_path / "whole" / "run.json").read_text())["config"]["tau_schedule"] == "cosine"
    constant = train(_cfg(tmp_path / "constant", **{**settings, "tau_schedule": "constant"}))
    assert constant["binary_weights_sha256"] != whole["binary_weights_sha256"]  # fewer flips held back
    split = tmp_path / "split"
    train(_cfg(split, **settings, stop_after=1))
    resumed = train(_cfg(split, **{**settings, "tau_schedule": None}, resume=True))  # the run's own
    assert resumed["binary_weights_sha256"] == whole["binary_weights_sha256"]
    with pytest.raises(
        BnnflowError, match="trained with --tau-schedule cosine, this command has --tau-schedule constant"
    ):
        train(_cfg(split, **{**settings, "epochs": 4, "tau_schedule": "constant"}, resume=True))
    with pytest.raises(BnnflowError, match="--tau-schedule is for bop and bop2"):
        train(_cfg(tmp_path / "latent", method="latent-adam", tau_schedule="cosine"))
    with pytest.raises(BnnflowError, match="--tau-schedule must be one of"):
        train(_cfg(tmp_path / "bad", tau_schedule="linear"))


def test_dropout_on_a_network_without_dropout_is_refused() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(BnnflowError, match="no Dropout layer"):
        trainer.set_dropout_(net, 0.1)
    trainer.set_dropout_(net, 0.0)  # nothing to set, nothing asked


def test_a_named_networks_recipe_fills_what_the_command_leaves_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from bnnflow import models

    spec = models.MODEL_SPECS["digits-mlp"]
    recipe = {"epochs": 7, "schedule": "cosine", "dropout": 0.1, "augment": "shift", "tau": 3e-8}
    monkeypatch.setitem(models.MODEL_SPECS, "digits-mlp", dataclasses.replace(spec, recipe=recipe))
    cfg = TrainConfig(model="digits-mlp", run_dir="r").resolved()
    assert (cfg.epochs, cfg.schedule, cfg.dropout, cfg.augment, cfg.tau) == (7, "cosine", 0.1, "shift", 3e-8)
    assert (cfg.batch_size, cfg.gamma, cfg.lr) == (100, 1e-4, 1e-2)  # not in the recipe: the generic ones
    # What the command says wins; bop2 keeps its own flip threshold.
    cfg = TrainConfig(model="digits-mlp", run_dir="r", epochs=2, dropout=0.0, method="bop2").resolved()
    assert (cfg.epochs, cfg.dropout, cfg.tau) == (2, 0.0, None)
    # A user network has no recipe.
    assert trainer.net.recipe("net.py:build") == {}


def test_a_recipe_may_name_a_method_whose_flip_settings_go_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from bnnflow import models

    spec = models.MODEL_SPECS["digits-mlp"]
    recipe = {"method": "bop2", "tau": 1e-3, "sigma": 3e-3, "tau_schedule": "cosine", "label_smoothing": 0.1}
    monkeypatch.setitem(models.MODEL_SPECS, "digits-mlp", dataclasses.replace(spec, recipe=recipe))
    cfg = TrainConfig(model="digits-mlp", run_dir="r").resolved()
    assert (cfg.method, cfg.tau, cfg.sigma, cfg.tau_schedule, cfg.label_smoothing) == (
        "bop2",
        1e-3,
        3e-3,
        "cosine",
        0.1,
    )
    # Another method named on the command keeps its own flip threshold, not bop2's.
    cfg = TrainConfig(model="digits-mlp", run_dir="r", method="bop").resolved()
    assert (cfg.method, cfg.tau, cfg.sigma, cfg.tau_schedule, cfg.label_smoothing) == (
        "bop",
        None,
        1e-2,
        "constant",
        0.1,
    )
    cfg = TrainConfig(model="digits-mlp", run_dir="r", method="latent-adam").resolved()
    assert cfg.tau_schedule == "constant"
    cfg = TrainConfig(model="digits-mlp", run_dir="r", method="bop2").resolved()
    assert (cfg.tau, cfg.sigma, cfg.tau_schedule) == (1e-3, 3e-3, "cosine")
    monkeypatch.setitem(models.MODEL_SPECS, "digits-mlp", dataclasses.replace(spec, recipe={}))
    assert TrainConfig(model="digits-mlp", run_dir="r").resolved().method == "bop"


def test_resume_takes_the_method_from_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, epochs=1, method="bop2"))
    summary = train(_cfg(run, epochs=2, resume=True, tau=None))  # no method named: the run's own
    assert summary["method"] == "bop2"
    with pytest.raises(BnnflowError, match="method"):
        train(_cfg(run, epochs=3, resume=True, method="bop"))


def test_shipped_recipes_are_valid_settings() -> None:
    from bnnflow.models import MODEL_SPECS

    fields = set(TrainConfig.__dataclass_fields__)
    with_recipe = {name for name, spec in MODEL_SPECS.items() if spec.recipe}
    assert {"tfc", "sfc", "lfc"} <= with_recipe
    for name in with_recipe:
        recipe = MODEL_SPECS[name].recipe
        assert set(recipe) <= fields, name
        cfg = TrainConfig(model=name, run_dir="r").resolved()  # validates every value
        assert {k: getattr(cfg, k) for k in recipe} == recipe, name


def test_resume_keeps_the_runs_own_settings_when_the_recipe_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from bnnflow import models

    spec = models.MODEL_SPECS["digits-mlp"]

    def use_recipe(recipe: dict) -> None:
        monkeypatch.setitem(models.MODEL_SPECS, "digits-mlp", dataclasses.replace(spec, recipe=recipe))

    run = tmp_path / "run"
    use_recipe({"dropout": 0.1, "augment": "shift", "schedule": "cosine"})
    base = {k: v for k, v in _cfg(run).__dict__.items() if k not in ("epochs", "interrupt_after_steps")}
    train(TrainConfig(**{**base, "epochs": 1}))
    use_recipe({"dropout": 0.3, "augment": "none", "schedule": "constant"})  # the recipe changes
    train(TrainConfig(**{**base, "epochs": 2, "resume": True}))  # a dropout mismatch would refuse
    saved = load_checkpoint(run / "checkpoint.pt")["config"]
    assert (saved["dropout"], saved["augment"], saved["schedule"]) == (0.1, "shift", "cosine")
    # A run saved before the recipes (no dropout key, augment as a boolean) resumes as it was.
    payload = load_checkpoint(run / "checkpoint.pt")
    del payload["config"]["dropout"]
    del payload["config"]["tau_schedule"]
    payload["config"]["augment"] = False
    torch.save(payload, run / "checkpoint.pt")
    train(TrainConfig(**{**base, "epochs": 3, "resume": True}))
    saved = load_checkpoint(run / "checkpoint.pt")["config"]
    assert (saved["dropout"], saved["augment"], saved["tau_schedule"]) == (None, "none", "constant")


def test_a_run_trained_in_slices_keeps_its_schedule_and_ends_as_one_run(tmp_path: Path) -> None:
    """stop_after ends a call early without shortening the schedule (benchmarks/bop_vs_latent.py)."""
    settings = dict(epochs=3, schedule="cosine")
    whole = train(_cfg(tmp_path / "whole", **settings))
    sliced = tmp_path / "sliced"
    for stop in (1, 2):
        train(_cfg(sliced, **settings, stop_after=stop, resume=stop > 1, overwrite=stop == 1))
        assert not (sliced / "summary.json").exists()  # no final figures before the end
        assert load_checkpoint(sliced / "checkpoint.pt")["epoch"] == stop
    last = train(_cfg(sliced, **settings, stop_after=3, resume=True))
    assert last["binary_weights_sha256"] == whole["binary_weights_sha256"]
    history = [load_checkpoint(p / "checkpoint.pt")["history"] for p in (tmp_path / "whole", sliced)]
    assert [r["lr"] for r in history[1]] == [r["lr"] for r in history[0]]
    assert history[0][1]["lr"] > 0.1 * history[0][0]["lr"]  # the cosine over 3 epochs, not over 2
    assert json.loads((sliced / "summary.json").read_text())["epochs"] == 3
    with pytest.raises(BnnflowError, match="stop_after"):
        train(_cfg(tmp_path / "bad", stop_after=0))


def test_resuming_a_checkpoint_with_damaged_settings_is_a_one_line_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, epochs=1))
    payload = torch.load(run / "checkpoint.pt", weights_only=False)
    payload["config"] = ["not", "a", "mapping"]
    torch.save(payload, run / "checkpoint.pt")
    with pytest.raises(BnnflowError, match="training settings .* not a mapping"):
        train(_cfg(run, epochs=2, resume=True))
