"""Bop and Bop2ndOrder against flips computed by hand."""

from __future__ import annotations

import io

import pytest
import torch

from bnnflow.training import Bop, Bop2ndOrder, HyperparameterScheduler


def _param(values: list[float]) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values))


def _step(opt: torch.optim.Optimizer, p: torch.nn.Parameter, grad: list[float]) -> None:
    p.grad = torch.tensor(grad)
    opt.step()


def test_flip_rule_by_hand() -> None:
    # gamma = 0.5 makes m = g / 2 after the first step; all values exact in float32.
    w = _param([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
    opt = Bop([w], gamma=0.5, tau=0.125)
    _step(opt, w, [1.0, -1.0, -1.0, 1.0, 0.25, -0.25, 0.0])
    # m = [.5, -.5, -.5, .5, .125, -.125, 0]
    # 0: m>tau, agrees with +1 -> flip      1: |m|>tau, agrees with -1 -> flip
    # 2: disagrees -> keep                   3: disagrees -> keep
    # 4, 5: |m| == tau, not strictly above -> keep
    # 6: m == 0 -> keep
    assert w.tolist() == [-1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0]
    assert opt.state[w]["exp_avg"].tolist() == [0.5, -0.5, -0.5, 0.5, 0.125, -0.125, 0.0]
    assert int(opt.state[w]["flips"]) == 2

    # Second step: m = 0.5 m + 0.5 g. Weight 4 (+1) now sees m = .0625 + .125 = .1875 > tau.
    _step(opt, w, [0.0, 0.0, 0.0, 0.0, 0.25, 0.0, 0.0])
    assert opt.state[w]["exp_avg"].tolist() == [0.25, -0.25, -0.25, 0.25, 0.1875, -0.0625, 0.0]
    # 0 is now -1 and m=+.25 disagrees; 1 is +1 and m=-.25 disagrees; 4 flips.
    assert w.tolist() == [-1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 1.0]
    assert opt.flip_counts()[0][1] == 3
    opt.reset_flip_counts()
    assert opt.flip_counts()[0][1] == 0
    assert int(opt.state[w]["flips"]) == 1  # the last step's count is kept


def test_zero_average_never_flips_even_with_zero_threshold() -> None:
    # sign(0) = 0 agrees with neither +1 nor -1.
    w = _param([1.0, -1.0, 1.0])
    opt = Bop([w], gamma=1.0, tau=0.0)
    _step(opt, w, [0.0, 0.0, 1e-30])
    assert w.tolist() == [1.0, -1.0, -1.0]


def test_weights_stay_exactly_binary() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.where(torch.randn(1000) >= 0, 1.0, -1.0))
    start = w.detach().clone()
    opt = Bop([w], gamma=0.1, tau=1e-3)
    flipped = 0
    for _ in range(20):
        before = w.detach().clone()
        _step(opt, w, torch.randn(1000).tolist())
        assert set(w.unique().tolist()) <= {-1.0, 1.0}
        flipped += int((w != before).sum())
    # The weights did move (a step that does nothing would pass the check above), and every
    # change was a flip counted by the optimizer.
    assert flipped > 0 and int((w != start).sum()) > 0
    assert opt.flip_counts()[0][1] == flipped


def test_param_without_grad_is_skipped() -> None:
    w = _param([1.0, -1.0])
    opt = Bop([w])
    opt.step()
    assert w.tolist() == [1.0, -1.0] and not opt.state


def test_invalid_hyperparameters() -> None:
    with pytest.raises(ValueError):
        Bop([_param([1.0])], gamma=2.0)
    with pytest.raises(ValueError):
        Bop([_param([1.0])], tau=-1.0)
    with pytest.raises(ValueError):
        Bop2ndOrder([_param([1.0])], sigma=1.5)


def test_callable_schedule_updates_param_group_each_step() -> None:
    w = _param([1.0, 1.0])
    seen = []
    opt = Bop([w], gamma=lambda step: 0.5 if step == 0 else 0.0, tau=lambda step: 0.1 * (step + 1))
    assert opt.param_groups[0]["gamma"] == 0.5
    _step(opt, w, [0.5, -0.5])  # m = [.25, -.25], tau .1 -> first flips
    seen.append(w.tolist())
    _step(opt, w, [1.0, 1.0])  # gamma 0: m unchanged; tau .2: second (+1, m=-.25) disagrees
    seen.append(w.tolist())
    assert seen == [[-1.0, 1.0], [-1.0, 1.0]]
    # After a step the group holds the values for the next one (step 2).
    assert opt.param_groups[0]["gamma"] == 0.0
    assert opt.param_groups[0]["tau"] == pytest.approx(0.3)
    assert opt.state[w]["exp_avg"].tolist() == [0.25, -0.25]


def test_hyperparameter_scheduler_steps_gamma_and_round_trips() -> None:
    w = _param([1.0])
    opt = Bop([w], gamma=1e-2, tau=1e-8)
    sched = HyperparameterScheduler(opt, "gamma", lambda t: 0.1 ** (t // 2))
    values = []
    for _ in range(5):
        values.append(opt.param_groups[0]["gamma"])
        sched.step()
    assert values == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4])
    opt2 = Bop([_param([1.0])], gamma=1e-2)
    sched2 = HyperparameterScheduler(opt2, "gamma", lambda t: 0.1 ** (t // 2))
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["gamma"] == pytest.approx(1e-4)  # t = 5
    with pytest.raises(KeyError):
        HyperparameterScheduler(opt, "beta", lambda t: 1.0)


@pytest.mark.parametrize("cls", [Bop, Bop2ndOrder])
@pytest.mark.parametrize("compact", [False, True])
def test_state_dict_resume_is_bit_identical(cls: type, compact: bool) -> None:
    torch.manual_seed(1)
    grads = [torch.randn(64) for _ in range(12)]

    def make() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
        w = torch.nn.Parameter(torch.where(torch.arange(64) % 3 == 0, 1.0, -1.0))
        return w, cls([w], gamma=0.05, tau=1e-3, compact=compact)

    w, opt = make()
    for g in grads:
        w.grad = g.clone()
        opt.step()
    straight = (opt.binary_weight(w).clone(), {k: v.clone() for k, v in opt.state[w].items()})

    w, opt = make()
    for g in grads[:5]:
        w.grad = g.clone()
        opt.step()
    buf = io.BytesIO()
    torch.save({"w": opt.binary_weight(w), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    torch.manual_seed(99)  # the rounding noise has its own, checkpointed stream
    w2, opt2 = make()
    if not compact:  # a compact optimizer holds the weights itself
        with torch.no_grad():
            w2.copy_(saved["w"])
    opt2.load_state_dict(saved["opt"])
    for g in grads[5:]:
        w2.grad = g.clone()
        opt2.step()
    assert torch.equal(opt2.binary_weight(w2), straight[0])
    assert set(opt2.state[w2]) == set(straight[1])
    for key, value in straight[1].items():
        assert torch.equal(opt2.state[w2][key], value), key
        assert opt2.state[w2][key].dtype == value.dtype


def test_bop2ndorder_by_hand() -> None:
    w = _param([1.0, 1.0, -1.0])
    opt = Bop2ndOrder([w], gamma=0.5, sigma=0.5, tau=0.6, eps=0.0)
    _step(opt, w, [2.0, 0.5, -1.0])
    # m = [1, .25, -.5]; v = [2, .125, .5]; m/sqrt(v) = [.707, .707, -.707]
    # all exceed .6 in magnitude; signs agree for 0 and 1 (+) and 2 (-): all flip.
    assert w.tolist() == [-1.0, -1.0, 1.0]
    _step(opt, w, [0.0, 0.0, 0.0])
    # m halves, v halves: ratio = .707 / sqrt(2) = .5 < .6 -> nothing flips.
    assert w.tolist() == [-1.0, -1.0, 1.0]
    assert opt.state[w]["exp_avg_sq"].tolist() == [1.0, 0.0625, 0.25]


def test_compact_state_is_bfloat16_and_unbiased() -> None:
    w = torch.nn.Parameter(torch.ones(20000))
    opt = Bop([w], gamma=1e-3, tau=1.0, compact=True)  # tau 1: nothing flips
    torch.manual_seed(0)
    for _ in range(200):
        w.grad = torch.full((20000,), 0.3)
        opt.step()
    m = opt.state[w]["exp_avg"]
    assert m.dtype == torch.bfloat16
    exact = 0.3 * (1 - (1 - 1e-3) ** 200)
    # Round-to-nearest would freeze m near zero after the first steps; the
    # stochastically rounded mean follows the float32 recursion.
    assert m.float().mean().item() == pytest.approx(exact, rel=0.02)
