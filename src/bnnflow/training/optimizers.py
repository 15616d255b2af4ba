"""Building the optimizer for a whole binary network, and scheduling its hyperparameters.

Binary weights and real-valued parameters (BatchNorm, TensorNorm, biases) need
different optimizers. :func:`build_optimizer` sorts a model's parameters and
returns one :class:`CaseOptimizer` that steps, zeroes and checkpoints them all,
in the spirit of larq's ``CaseOptimizer``, so a training loop treats it as one
optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import Adam, Optimizer

from bnnflow.models import binary_weight_params
from bnnflow.training.bop import Bop, Bop2ndOrder

METHODS = {
    "bop": "Bop on the binary weights, Adam on the rest (Helwegen et al. 2019)",
    "bop2": "Bop2ndOrder on the binary weights, Adam on the rest (Suarez-Ramirez et al. 2021)",
    "latent-adam": "baseline: latent real weights, straight-through estimator, Adam, clipped to [-1, 1]",
}


class CaseOptimizer:
    """Several optimizers over disjoint parameter sets, used as one.

    ``optimizers`` is ordered; the first is the binary one for Bop methods.
    Schedulers attach to the individual optimizers (``case.optimizers[i]``).
    """

    def __init__(self, *optimizers: Optimizer, method: str = "") -> None:
        seen: set[int] = set()
        for opt in optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError("a parameter is handed to two optimizers")
                    seen.add(id(p))
        self.optimizers = list(optimizers)
        self.method = method

    def __iter__(self) -> Iterator[Optimizer]:
        return iter(self.optimizers)

    def __getitem__(self, index: int) -> Optimizer:
        return self.optimizers[index]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("method", self.method) != self.method:
            raise ValueError(f"state is for {state_dict.get('method')!r}, not {self.method!r}")
        states = state_dict["optimizers"]
        if len(states) != len(self.optimizers):
            raise ValueError("optimizer state does not match: different number of optimizers")
        for opt, sd in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(sd)

    @property
    def flip_optimizer(self) -> Bop | Bop2ndOrder | None:
        first = self.optimizers[0]
        return first if isinstance(first, (Bop, Bop2ndOrder)) else None


def _clip_binary_latents(params: list[nn.Parameter]) -> Callable[..., None]:
    # Brevitas' bnn_pynq recipe clips latent weights to [-1, 1] after each
    # step; beyond that range the sign can no longer be flipped back quickly.
    def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for p in params:
                p.clamp_(-1.0, 1.0)

    return hook


def build_optimizer(
    model: nn.Module,
    method: str = "bop",
    *,
    gamma: float = 1e-4,
    tau: float | None = None,
    sigma: float = 1e-2,
    lr: float = 1e-2,
    compact: bool = False,
) -> CaseOptimizer:
    """The optimizer for a binary network.

    ``bop``/``bop2``: the flip optimizer on the binary weights, Adam (``lr``)
    on everything else. ``latent-adam``: Adam (``lr``) on all parameters, the
    binary layers' latent weights clipped to [-1, 1] after each step.
    ``tau`` defaults to 1e-8 for Bop and 1e-6 for Bop2ndOrder. ``compact``:
    the flip optimizer's compact layout (sign bits, bfloat16 averages, no
    gradient kept), bound to ``model``, which must already be on its device.
    """
    binary = binary_weight_params(model)
    if not binary:
        raise ValueError("the model has no binary weight layers")
    binary_ids = {id(p) for p in binary}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in binary_ids]
    if method in ("bop", "bop2"):
        if method == "bop":
            flip: Bop | Bop2ndOrder = Bop(
                binary, gamma=gamma, tau=1e-8 if tau is None else tau, compact=compact
            )
        else:
            flip = Bop2ndOrder(
                binary, gamma=gamma, tau=1e-6 if tau is None else tau, sigma=sigma, compact=compact
            )
        if compact:
            flip.bind(model)
        return CaseOptimizer(flip, Adam(others, lr=lr), method=method)
    if compact:
        raise ValueError(f"the compact layout is Bop's; {method!r} has latent weights")
    if method == "latent-adam":
        adam = Adam([{"params": binary}, {"params": others}], lr=lr)
        adam.register_step_post_hook(_clip_binary_latents(binary))
        return CaseOptimizer(adam, method=method)
    raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def binary_state_bytes(model: nn.Module, optimizer: CaseOptimizer) -> dict[str, int]:
    """Bytes of storage held for the binary weights between steps, by tensor.

    Keys: ``weight`` (the parameters' own storage), ``grad`` (gradients left
    in ``.grad``) and one per optimizer state entry (``exp_avg``, ``signs``,
    ``step``, the flip counters, ...). Counted from the storages actually
    allocated, each once, so a released compact weight counts its
    one-element placeholder and a shared storage is not counted twice.
    """
    out: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()

    def add(key: str, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ident = (str(t.device), storage.data_ptr())
        if storage.nbytes() and ident not in seen:
            seen.add(ident)
            out[key] = out.get(key, 0) + storage.nbytes()

    for p in binary_weight_params(model):
        add("weight", p)
        if p.grad is not None:
            add("grad", p.grad)
        for opt in optimizer:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    add(key, value)
    return out


def state_bytes_per_binary_weight(model: nn.Module, optimizer: CaseOptimizer) -> float:
    """Persistent bytes per binary weight: :func:`binary_state_bytes` over the weight count.

    Float32 Bop: weight, average and gradient, 12 bytes; the compact layout:
    sign bit and bfloat16 average, 2.125 bytes; latent Adam: weight,
    gradient and two moments, 16 bytes (plus the small per-layer counters).
    """
    n = sum(p.numel() for p in binary_weight_params(model))
    return sum(binary_state_bytes(model, optimizer).values()) / n


class HyperparameterScheduler:
    """A torch-style scheduler for any param_group key (``gamma``, ``tau``, ``lr``).

    torch's schedulers only move ``lr``. This one sets
    ``group[name] = base * factor(t)`` like ``LambdaLR``, where ``t`` counts
    calls to :meth:`step` (per step or per epoch, as the caller chooses).
    ``state_dict`` holds the counter and the base values, not the callable.
    """

    def __init__(self, optimizer: Optimizer, name: str, factor: Callable[[int], float]) -> None:
        for group in optimizer.param_groups:
            if name not in group:
                raise KeyError(f"optimizer has no hyperparameter {name!r}")
        self.optimizer = optimizer
        self.name = name
        self.factor = factor
        self.base_values = [float(g[name]) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        f = float(self.factor(self.last_epoch))
        for group, base in zip(self.optimizer.param_groups, self.base_values, strict=True):
            group[self.name] = base * f

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_value(self) -> list[float]:
        return [float(g[self.name]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base_values": self.base_values, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_values = list(state_dict["base_values"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._apply()


SCHEDULES = ("constant", "step", "cosine")  # the kinds schedule_factor knows


def schedule_factor(kind: str, total: int, step_every: int = 0, decay: float = 0.1) -> Callable[[int], float]:
    """Factor functions for the CLI's ``--schedule``: constant, step or cosine."""
    if kind == "constant":
        return lambda t: 1.0
    if kind == "step":
        every = step_every or max(1, total // 3)
        return lambda t: decay ** (t // every)
    if kind == "cosine":
        return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / max(1, total)))
    raise ValueError(f"unknown schedule {kind!r}; choose constant, step or cosine")
