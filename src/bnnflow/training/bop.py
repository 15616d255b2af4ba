"""Bop and Bop2ndOrder: latent-weight-free optimizers for binary weights.

Bop (Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized
Neural Network Optimization", NeurIPS 2019) keeps, per binary weight, an
exponential moving average ``m`` of the gradient with respect to that binary
weight, and flips the weight where the average is both strong and agrees in
sign with the weight::

    m <- (1 - gamma) * m + gamma * g
    w <- -w   where |m| > tau and sign(m) == sign(w)

A positive ``m`` says the loss keeps rising with ``w``; for ``w = +1`` that
is a consistent push towards ``-1``, hence the sign agreement. The parameter
holds exactly +1 or -1 at all times: there is no latent real-valued weight.

Bop2ndOrder (Suarez-Ramirez et al., "A Bop and Beyond: A Second Order
Optimizer for Binarized Neural Networks", CVPR-W 2021) also keeps a moving
average ``v`` of the squared gradient and tests the normalised average
``m / sqrt(v)`` against tau instead of ``m``.

Both are ``torch.optim.Optimizer`` subclasses: hyperparameters live in
``param_groups`` (so they are in ``state_dict()`` and can be changed by a
scheduler), the per-weight averages live in ``state``, ``step`` runs under
``torch.no_grad()``. Hand them only the binary weights; the rest of the
network goes to an ordinary optimizer (see :func:`bnnflow.training.build_optimizer`).

Example::

    model = bnnflow.models.build_model("tfc")
    bnnflow.models.binarize_weights_(model)
    opt = bnnflow.training.build_optimizer(model, "bop", gamma=1e-4, tau=1e-8, lr=1e-2)
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

Schedule = Callable[[int], float]


def _stochastic_round_to_bfloat16(x: torch.Tensor) -> torch.Tensor:
    """Round a float32 tensor to bfloat16 without bias.

    Bop's moving average changes by ``gamma * (g - m)`` per step, about 1e-4 of
    its value: far below bfloat16's 8-bit mantissa, so round-to-nearest would
    leave ``m`` frozen. Adding uniform noise below the kept bits before
    truncating rounds up with probability equal to the dropped fraction, so
    the average is right in expectation.
    """
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    # float32 -> bfloat16 keeps the high 16 bits; clear the low ones after the noise.
    rounded = (bits + noise) & -65536
    return rounded.view(torch.float32).to(torch.bfloat16)


class _FlipOptimizer(Optimizer):
    """What Bop and Bop2ndOrder share: schedules, flip bookkeeping, compact state."""

    _scheduled = ("gamma", "tau")

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        compact: bool,
    ) -> None:
        # A callable hyperparameter is evaluated every step with the step count
        # (starting at 0); the group then holds the plain float it returned, so
        # state_dict() stays picklable. The callables are kept aside.
        self._schedules: dict[str, Schedule] = {}
        for name in self._scheduled:
            if callable(defaults[name]):
                self._schedules[name] = defaults[name]
                defaults[name] = float(defaults[name](0))
        for name in self._scheduled:
            if defaults[name] < 0:
                raise ValueError(f"invalid {name}: {defaults[name]} (must be >= 0)")
        defaults["compact"] = bool(compact)
        super().__init__(params, defaults)
        self._steps = 0

    def _new_average(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        dtype = torch.bfloat16 if group["compact"] else p.dtype
        return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)

    @staticmethod
    def _update_average(avg: torch.Tensor, target: torch.Tensor, rate: float) -> torch.Tensor:
        """avg <- (1 - rate) * avg + rate * target; returns the float32 value."""
        if avg.dtype == torch.bfloat16:
            exact = avg.float().lerp_(target.float(), rate)
            avg.copy_(_stochastic_round_to_bfloat16(exact))
            return exact
        avg.lerp_(target, rate)
        return avg

    def _apply_schedules(self) -> None:
        for name, schedule in self._schedules.items():
            value = float(schedule(self._steps))
            for group in self.param_groups:
                group[name] = value

    @staticmethod
    def _flip_(p: torch.Tensor, signal: torch.Tensor, tau: float, state: dict[str, Any]) -> None:
        # Flip where |signal| > tau and sign(signal) == sign(p). For p in
        # {-1, +1} and tau >= 0 that is exactly signal * p > tau: the product
        # is |signal| where the signs agree and -|signal| where they do not.
        # A zero signal never flips (0 > tau is false), and |signal| == tau
        # does not flip either (strict >).
        flips = (signal * p) > tau
        p.mul_(flips.to(p.dtype).mul_(-2.0).add_(1.0))
        count = flips.sum()
        state["flips"] = count  # this step
        state["flips_total"].add_(count)  # since the last reset_flip_counts()

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["exp_avg"] = self._new_average(p, group)
        state["flips"] = torch.zeros((), dtype=torch.int64, device=p.device)
        state["flips_total"] = torch.zeros((), dtype=torch.int64, device=p.device)

    def _flip_signal(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        """Update the averages of ``p`` from its gradient; return what is tested against tau."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._apply_schedules()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if not state:
                    self._init_state(p, group, state)
                self._flip_(p, self._flip_signal(p, group, state), group["tau"], state)
        self._steps += 1
        return loss

    def flip_counts(self) -> list[tuple[torch.Tensor, int]]:
        """(parameter, flips since the last reset) for every parameter with state."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    out.append((p, int(state["flips_total"])))
        return out

    def reset_flip_counts(self) -> None:
        for state in self.state.values():
            if "flips_total" in state:
                state["flips_total"].zero_()

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["flip_optimizer_steps"] = self._steps
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self._steps = int(state_dict.pop("flip_optimizer_steps", 0))
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict casts all state to the parameter's dtype;
        # the flip counters are integers and compact averages stay bfloat16.
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                for key in ("flips", "flips_total"):
                    if key in state:
                        state[key] = state[key].to(torch.int64)
                if group["compact"]:
                    for key in ("exp_avg", "exp_avg_sq"):
                        if key in state:
                            state[key] = state[key].to(torch.bfloat16)


class Bop(_FlipOptimizer):
    """Binary optimizer: flips +-1 weights on a thresholded gradient average.

    Args:
        params: the binary weights (tensors holding exactly +1 or -1), or
            parameter groups as dicts.
        gamma: adaptivity rate of the gradient average, in [0, 1]. Larger
            reacts faster and flips more. A float, or a callable
            ``step -> gamma`` evaluated before each step.
        tau: flip threshold on ``|m|``. A float, or a callable ``step -> tau``.
        compact: keep ``m`` in bfloat16 (2 bytes per weight instead of 4),
            updated in float32 and stochastically rounded.

    Defaults are larq's (gamma=1e-4, tau=1e-8). ``state[p]["flips"]`` is the
    number of weights of ``p`` flipped by the last step, ``flip_counts()``
    the totals since ``reset_flip_counts()``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        gamma: float | Schedule = 1e-4,
        tau: float | Schedule = 1e-8,
        *,
        compact: bool = False,
    ) -> None:
        if not callable(gamma) and not 0.0 <= gamma <= 1.0:
            raise ValueError(f"invalid gamma: {gamma} (must be in [0, 1])")
        super().__init__(params, {"gamma": gamma, "tau": tau}, compact)

    def _flip_signal(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        return self._update_average(state["exp_avg"], p.grad, group["gamma"])


class Bop2ndOrder(_FlipOptimizer):
    """Bop with a second-moment normalisation of the gradient average.

    ``v <- (1 - sigma) * v + sigma * g**2`` and a weight flips where
    ``|m / (sqrt(v) + eps)| > tau`` and the sign of ``m`` agrees with it.

    Args:
        params: the binary weights, or parameter groups.
        gamma: adaptivity rate of ``m`` (float or callable ``step -> gamma``).
        sigma: adaptivity rate of ``v``.
        tau: flip threshold on the normalised average (float or callable).
        eps: keeps the ratio finite where ``v`` is still zero.
        compact: keep ``m`` and ``v`` in bfloat16.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        gamma: float | Schedule = 1e-4,
        tau: float | Schedule = 1e-6,
        sigma: float = 1e-2,
        eps: float = 1e-10,
        *,
        compact: bool = False,
    ) -> None:
        if not 0.0 <= sigma <= 1.0:
            raise ValueError(f"invalid sigma: {sigma} (must be in [0, 1])")
        super().__init__(params, {"gamma": gamma, "tau": tau, "sigma": sigma, "eps": eps}, compact)

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        super()._init_state(p, group, state)
        state["exp_avg_sq"] = self._new_average(p, group)

    def _flip_signal(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        g = p.grad
        m = self._update_average(state["exp_avg"], g, group["gamma"])
        v = self._update_average(state["exp_avg_sq"], g * g, group["sigma"])
        return m / (v.sqrt() + group["eps"])
