"""Bop's compact layout against float32 Bop: the same flips, the bytes it holds, checkpoints, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import BnnflowError
from bnnflow.export.qonnx_export import export_model
from bnnflow.models import binarize_weights_, binary_weight_modules, binary_weight_params, build_model
from bnnflow.runs import load_checkpoint, save_checkpoint
from bnnflow.training import Bop, Bop2ndOrder, bop, build_optimizer
from bnnflow.training.bop import pack_signs, unpack_signs
from bnnflow.training.trainer import TrainConfig, train


def _signs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)


def test_pack_and_unpack_signs_round_trip() -> None:
    for n in (1, 7, 8, 9, 1000):
        w = _signs(n, n).view(-1, 1)
        packed = pack_signs(w)
        assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
        assert torch.equal(unpack_signs(packed, w.shape), w)
    # bit i of byte j is weight 8 j + i; 0 counts as +1
    assert pack_signs(torch.tensor([1.0, -1.0, 0.0, -1.0, -1.0, -1.0, -1.0, -1.0, 1.0])).tolist() == [5, 1]


@pytest.mark.parametrize("cls", [Bop, Bop2ndOrder])
@pytest.mark.parametrize("slice_size", [None, 64])
def test_same_flips_as_float32_where_bfloat16_is_exact(
    cls: type, slice_size: int | None, monkeypatch
) -> None:
    # gamma = sigma = 1/2 and gradients in {-1/8, 0, 1/8}: after k steps each
    # average is a sum of k terms +-2^-j, at most 7 significant bits, which
    # bfloat16 holds exactly. The rounding then cannot matter, and the two
    # layouts must flip the same weights at every step.
    if slice_size:  # many slices, the last one shorter and not a whole byte
        monkeypatch.setattr(bop, "_SLICE", slice_size)
    n, steps = 4093, 6
    g = torch.Generator().manual_seed(3)
    grads = [(torch.randint(-1, 2, (n,), generator=g) / 8.0) for _ in range(steps)]
    kw = {"sigma": 0.5, "tau": 0.5, "eps": 0.0} if cls is Bop2ndOrder else {"tau": 1 / 64}
    wf = torch.nn.Parameter(_signs(n, 0))
    wc = torch.nn.Parameter(_signs(n, 0))
    fp = cls([wf], gamma=0.5, **kw)
    cp = cls([wc], gamma=0.5, compact=True, **kw)
    total = 0
    for grad in grads:
        wf.grad, wc.grad = grad.clone(), grad.clone()
        fp.step()
        cp.step()
        for key in cls._averages:
            exact = fp.state[wf][key]
            assert torch.equal(exact.bfloat16().float(), exact), "the test's trajectory must be exact"
            assert torch.equal(cp.state[wc][key].float(), exact), key
        assert torch.equal(cp.binary_weight(wc), wf.detach())
        assert int(cp.state[wc]["flips"]) == int(fp.state[wf]["flips"])
        total += int(fp.state[wf]["flips"])
    assert total > n // 10  # the schedule does flip


def test_one_step_flips_match_and_the_rounding_stays_within_one_bfloat16_step() -> None:
    # With arbitrary gradients the compact average is the float32 one rounded
    # to one of its two bfloat16 neighbours after every step (unbiased). From
    # the same state both layouts flip the same weights, since the flip test
    # uses the float32 value before it is rounded: the layouts differ only by
    # that per-step rounding of the stored average.
    n = 20000
    torch.manual_seed(5)
    wc = torch.nn.Parameter(_signs(n, 1))
    cp = Bop([wc], gamma=1e-2, tau=1e-3, compact=True)
    for step in range(30):
        grad = torch.randn(n) * 0.1
        wf = torch.nn.Parameter(cp.binary_weight(wc).clone())
        fp = Bop([wf], gamma=1e-2, tau=1e-3)
        fp.state[wf].update(
            exp_avg=cp.state[wc]["exp_avg"].float().clone(),
            flips=torch.zeros((), dtype=torch.int64),
            flips_total=torch.zeros((), dtype=torch.int64),
        )
        wf.grad, wc.grad = grad.clone(), grad.clone()
        fp.step()
        cp.step()
        assert torch.equal(cp.binary_weight(wc), wf.detach()), step
        # The bfloat16 neighbours of a float32 value: its high 16 bits
        # (towards zero) and the next bfloat16 away from zero.
        exact = fp.state[wf]["exp_avg"].view(torch.int32)
        stored = cp.state[wc]["exp_avg"].float().view(torch.int32)
        toward_zero = exact & -65536
        away = torch.where(exact == toward_zero, toward_zero, toward_zero + 65536)
        assert bool(((stored == toward_zero) | (stored == away)).all()), step
    assert (cp.binary_weight(wc) != _signs(n, 1)).any()


def _batches(shape: tuple[int, ...], steps: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(16, *shape, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(steps)
    ]


def _train_steps(name: str, method: str, compact: bool, steps: int) -> tuple[list, torch.nn.Module, object]:
    torch.manual_seed(0)
    model = build_model(name)
    binarize_weights_(model)
    opt = build_optimizer(model, method, gamma=1.0, tau=1e-6, compact=compact)
    flip = opt.flip_optimizer
    binary = binary_weight_params(model)
    seen = []
    model.train()
    for x, y in _batches(tuple(model_input(name)), steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if compact:  # folded and dropped inside backward()
            assert all(p.grad is None for p in binary)
        opt.step()
        seen.append(([flip.binary_weight(p).clone() for p in binary], loss.detach()))
    return seen, model, opt


def model_input(name: str) -> tuple[int, ...]:
    return {"digits-mlp": (1, 8, 8), "tfc": (1, 28, 28), "cnv": (3, 32, 32)}[name]


@pytest.mark.parametrize(("name", "method"), [("digits-mlp", "bop"), ("tfc", "bop"), ("digits-mlp", "bop2")])
def test_compact_training_through_brevitas_layers_matches_float32(name: str, method: str) -> None:
    # gamma = 1: the average is the gradient itself, so the flip test sees the
    # same float32 values in both layouts however the average is stored. The
    # gradients are folded during backward() in the compact layout and at
    # step() in the float32 one; weights, losses and the whole state_dict
    # (Adam's parameters, BatchNorm statistics) must agree after every step.
    float_run, float_model, _ = _train_steps(name, method, False, 4)
    compact_run, compact_model, _ = _train_steps(name, method, True, 4)
    for (wf, lf), (wc, lc) in zip(float_run, compact_run, strict=True):
        assert torch.equal(lf, lc)
        assert all(torch.equal(a, b) for a, b in zip(wf, wc, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(float_run[0][0], float_run[-1][0], strict=True))
    sd_f, sd_c = float_model.state_dict(), compact_model.state_dict()
    assert sd_f.keys() == sd_c.keys()
    for key in sd_f:
        assert torch.equal(sd_f[key], sd_c[key]), key


def test_weights_exist_only_while_their_layer_runs() -> None:
    _, model, opt = _train_steps("digits-mlp", "bop", True, 2)
    layers = binary_weight_modules(model)
    seen = {}

    def look(name: str):
        def hook(module: torch.nn.Module, args: object) -> None:  # runs after the optimizer's pre-hook
            seen[name] = module.weight.detach().clone()

        return hook

    after_forward = {}

    def storage_after(name: str):
        def hook(module: torch.nn.Module, args: object, out: object) -> None:  # after the optimizer's
            after_forward[name] = module.weight.untyped_storage().nbytes()

        return hook

    for name, module in layers:
        module.register_forward_pre_hook(look(name))
        module.register_forward_hook(storage_after(name))
    x, y = _batches((1, 8, 8), 1, seed=9)[0]
    loss = F.cross_entropy(model(x), y)
    # Brevitas saves the quantized copy, not the weight, for the backward
    # pass: each weight is released as soon as its layer's forward ends.
    assert after_forward == {name: 4 for name, _ in layers}
    loss.backward()
    opt.step()
    for name, module in layers:
        assert set(seen[name].unique().tolist()) <= {-1.0, 1.0}
        assert module.weight.untyped_storage().nbytes() == 4  # released again
        assert module.weight.grad is None
        assert module.weight.shape == seen[name].shape


def test_unbound_compact_weights_cannot_train_silently() -> None:
    torch.manual_seed(0)
    model = build_model("digits-mlp")
    binarize_weights_(model)
    Bop(binary_weight_params(model), compact=True)  # not bound to the model
    x, y = _batches((1, 8, 8), 1)[0]
    loss = F.cross_entropy(model(x), y)
    with pytest.raises(RuntimeError, match="not bound"):
        loss.backward()


def test_model_state_dict_round_trip() -> None:
    _, model, opt = _train_steps("digits-mlp", "bop", True, 3)
    flip = opt.flip_optimizer
    sd = model.state_dict()
    for (name, _), p in zip(binary_weight_modules(model), binary_weight_params(model), strict=True):
        assert torch.equal(sd[f"{name}.weight"], flip.binary_weight(p))
    # Into a plain model: the same network.
    plain = build_model("digits-mlp")
    plain.load_state_dict(sd)
    x, _ = _batches((1, 8, 8), 1, seed=4)[0]
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))
    # Into a bound model: loading sets its sign bits.
    _, other, other_opt = _train_steps("digits-mlp", "bop", True, 1)
    other.load_state_dict(sd)
    for p, q in zip(binary_weight_params(other), binary_weight_params(model), strict=True):
        assert torch.equal(other_opt.flip_optimizer.binary_weight(p), flip.binary_weight(q))
        assert p.untyped_storage().nbytes() == 4


def test_bad_uses_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="binary weights"):
        Bop([torch.nn.Parameter(torch.tensor([1.0, 0.5]))], compact=True)
    model = build_model("digits-mlp")
    binarize_weights_(model)
    float_state = Bop(binary_weight_params(model)).state_dict()
    with pytest.raises(ValueError, match="layouts differ"):
        Bop(binary_weight_params(model), compact=True).load_state_dict(float_state)
    with pytest.raises(ValueError, match="not in the model"):
        Bop([torch.nn.Parameter(torch.ones(3))], compact=True).bind(model)
    with pytest.raises(BnnflowError, match="--compact"):
        train(
            TrainConfig(model="digits-mlp", run_dir=str(tmp_path / "r"), method="latent-adam", compact=True)
        )


def test_export_of_a_compact_run_holds_the_signs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(
        TrainConfig(
            model="digits-mlp",
            run_dir=str(run),
            epochs=1,
            batch_size=50,
            limit_train=300,
            limit_test=100,
            tau=1e-6,
            compact=True,
            progress=False,
        )
    )
    payload = load_checkpoint(run / "checkpoint.pt")
    model = build_model("digits-mlp")
    names = [name for name, _ in binary_weight_modules(model)]
    state = payload["optimizer_state"]["optimizers"][0]["state"]
    signs = [
        unpack_signs(state[i]["signs"], payload["model_state"][f"{name}.weight"].shape)
        for i, name in enumerate(names)
    ]
    assert payload["history"][-1]["flips"] > 0
    for name, s in zip(names, signs, strict=True):
        assert torch.equal(payload["model_state"][f"{name}.weight"], s)
    export_model(run, out_dir=tmp_path / "export", n_verify=20)
    onnx = ModelWrapper(str(tmp_path / "export" / "model.onnx"))
    weights = [n.input[0] for n in onnx.graph.node if n.op_type == "BipolarQuant"]
    exported = [torch.from_numpy(onnx.get_initializer(w).copy()) for w in weights[: len(signs)]]
    for s, e in zip(signs, exported, strict=True):
        assert torch.equal(e, s)


def test_resuming_a_checkpoint_without_sign_bits_is_one_line(tmp_path: Path) -> None:
    # What a checkpoint of the earlier compact layout (float32 weights, no sign bits) holds.
    cfg = dict(model="digits-mlp", run_dir=str(tmp_path / "r"), epochs=2, batch_size=50)
    cfg.update(limit_train=100, limit_test=50, compact=True, progress=False)
    with pytest.raises(BnnflowError):
        train(TrainConfig(**cfg, interrupt_after_steps=1))
    path = tmp_path / "r" / "checkpoint.pt"
    payload = load_checkpoint(path)
    for state in payload["optimizer_state"]["optimizers"][0]["state"].values():
        del state["signs"]
    save_checkpoint(path, payload)
    with pytest.raises(BnnflowError, match="cannot resume .*no sign bits"):
        train(TrainConfig(**cfg, resume=True))
