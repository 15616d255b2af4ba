"""build_optimizer, the latent baseline, state accounting, and gradients through Brevitas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnnflow.models import binarize_weights_, binary_weight_params, build_model
from bnnflow.training import Bop, Bop2ndOrder, build_optimizer, state_bytes_per_binary_weight
from bnnflow.training.optimizers import binary_state_bytes


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)


def _grads_at(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in binary_weight_params(model)]


def test_gradient_reaches_binary_weights_unmasked() -> None:
    """Brevitas' binary weight quantizer must be a plain straight-through sign.

    A clamp-style STE would zero the gradient at |w| >= 1, where every Bop
    weight lives. Scaling the latent weights to +-1 and to +-0.5 leaves the
    quantized forward unchanged, so an unmasked STE gives identical gradients.
    """
    torch.manual_seed(0)
    model = build_model("digits-mlp")
    model.eval()  # no dropout, BN in inference mode: a deterministic forward
    binarize_weights_(model)
    x, y = _batch()
    at_one = _grads_at(model, x, y)
    with torch.no_grad():
        for p in binary_weight_params(model):
            p.mul_(0.5)
    at_half = _grads_at(model, x, y)
    for g1, gh in zip(at_one, at_half, strict=True):
        assert g1.abs().sum() > 0
        assert torch.equal(g1, gh)


def test_build_optimizer_sorts_every_parameter() -> None:
    model = build_model("tfc")
    binarize_weights_(model)
    opt = build_optimizer(model, "bop")
    flip, adam = opt.optimizers
    assert isinstance(flip, Bop) and isinstance(adam, torch.optim.Adam)
    binary = {id(p) for p in binary_weight_params(model)}
    in_flip = {id(p) for g in flip.param_groups for p in g["params"]}
    in_adam = {id(p) for g in adam.param_groups for p in g["params"]}
    assert in_flip == binary
    assert in_flip | in_adam == {id(p) for p in model.parameters()}
    assert not in_flip & in_adam
    assert adam.param_groups[0]["lr"] == 1e-2
    assert isinstance(build_optimizer(model, "bop2").optimizers[0], Bop2ndOrder)
    with pytest.raises(ValueError):
        build_optimizer(model, "sgd")


def test_latent_adam_clips_to_unit_interval() -> None:
    torch.manual_seed(0)
    model = build_model("digits-mlp")
    opt = build_optimizer(model, "latent-adam", lr=10.0)  # a huge step pushes far past +-1
    x, y = _batch()
    model.train()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    for p in binary_weight_params(model):
        assert p.abs().max() <= 1.0
        assert (p.abs() == 1.0).any()


# Bytes per binary weight by tensor after a step: the float32 layouts keep the
# weight, its gradient and their averages; the compact layout one sign bit and
# a bfloat16 average per weight, and a one-element placeholder per layer.
@pytest.mark.parametrize(
    ("method", "compact", "per_weight"),
    [
        ("bop", False, {"weight": 4, "grad": 4, "exp_avg": 4}),
        ("bop", True, {"signs": 1 / 8, "exp_avg": 2}),
        ("bop2", False, {"weight": 4, "grad": 4, "exp_avg": 4, "exp_avg_sq": 4}),
        ("bop2", True, {"signs": 1 / 8, "exp_avg": 2, "exp_avg_sq": 2}),
        ("latent-adam", False, {"weight": 4, "grad": 4, "exp_avg": 4, "exp_avg_sq": 4}),
    ],
)
def test_state_bytes_per_binary_weight(method: str, compact: bool, per_weight: dict[str, float]) -> None:
    torch.manual_seed(0)
    model = build_model("digits-mlp")
    if method != "latent-adam":
        binarize_weights_(model)
    opt = build_optimizer(model, method, compact=compact)
    x, y = _batch()
    model.train()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    binary = binary_weight_params(model)
    n, layers = sum(p.numel() for p in binary), len(binary)
    expected = {key: round(b * n) for key, b in per_weight.items()}
    # The scalars: two int64 flip counters per layer (Bop), one float32 step
    # count per layer (Adam), a float32 placeholder per released weight.
    if method == "latent-adam":
        expected["step"] = 4 * layers
    else:
        expected["flips"] = expected["flips_total"] = 8 * layers
    if compact:
        expected["weight"] = 4 * layers
    assert binary_state_bytes(model, opt) == expected
    assert state_bytes_per_binary_weight(model, opt) == sum(expected.values()) / n
    assert (state_bytes_per_binary_weight(model, opt) <= 2.25) == (method == "bop" and compact)


def test_case_optimizer_round_trip_and_mismatch() -> None:
    model = build_model("digits-mlp")
    binarize_weights_(model)
    opt = build_optimizer(model, "bop")
    x, y = _batch()
    model.train()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    sd = opt.state_dict()
    opt2 = build_optimizer(model, "bop")
    opt2.load_state_dict(sd)
    assert torch.equal(
        opt2.optimizers[0].state[binary_weight_params(model)[0]]["exp_avg"],
        opt.optimizers[0].state[binary_weight_params(model)[0]]["exp_avg"],
    )
    with pytest.raises(ValueError):
        build_optimizer(model, "latent-adam").load_state_dict(sd)


def test_bop_training_step_flips_and_keeps_weights_binary() -> None:
    torch.manual_seed(0)
    model = build_model("digits-mlp")
    binarize_weights_(model)
    opt = build_optimizer(model, "bop", gamma=1e-2, tau=1e-6)
    before = [p.detach().clone() for p in binary_weight_params(model)]
    model.train()
    for seed in range(3):
        x, y = _batch(seed)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    changed = sum(int((b != p).sum()) for b, p in zip(before, binary_weight_params(model), strict=True))
    assert changed > 0
    for p in binary_weight_params(model):
        assert set(p.unique().tolist()) <= {-1.0, 1.0}
