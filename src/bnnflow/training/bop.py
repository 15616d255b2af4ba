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

Compact layout (``compact=True``): per binary weight, one bit for its sign
(packed eight to a byte in ``state["signs"]``) and a bfloat16 average, so
2.125 bytes instead of float32 Bop's 12 (weight, average and gradient) and
latent Adam's 16. The parameter's own storage is released to a one-element
NaN placeholder of the right shape (Brevitas' binary quantizer maps NaN to
-1, so an unbound layer's gradient is refused with an error);
:meth:`_FlipOptimizer.bind` hooks the
layers holding the weights so the float +-1 values exist only while a layer
runs, and each gradient is folded into the average and dropped as soon as
autograd has accumulated it (``register_post_accumulate_grad_hook``): no
float32 gradient outlives the backward pass. The flips are then made during
``backward()``; ``step()`` only counts the step and moves the schedules, so
accumulating gradients over several backward passes is not supported in
this layout. ``model.state_dict()`` and ``load_state_dict()`` see ordinary
+-1 float weights, so checkpoints and export do not change.

Example::

    model = bnnflow.models.build_model("tfc")
    bnnflow.models.binarize_weights_(model)
    opt = bnnflow.training.build_optimizer(model, "bop", gamma=1e-4, tau=1e-8, lr=1e-2)
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    opt = bnnflow.training.build_optimizer(model, "bop", compact=True)  # binds the model
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

Schedule = Callable[[int], float]


def _stochastic_round_to_bfloat16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round a float32 tensor to bfloat16 without bias.

    Bop's moving average changes by ``gamma * (g - m)`` per step, about 1e-4 of
    its value: far below bfloat16's 8-bit mantissa, so round-to-nearest would
    leave ``m`` frozen. Adding uniform noise below the kept bits before
    truncating rounds up with probability equal to the dropped fraction, so
    the average is right in expectation. A value bfloat16 holds exactly
    (low 16 bits zero) is kept as it is: the noise never carries.
    """
    bits = x.contiguous().view(torch.int32)
    # 16 random bits per element, drawn as full-range 64-bit words (four
    # elements per draw: a quarter of the generator's work).
    words = torch.empty((bits.numel() + 3) // 4, dtype=torch.int64, device=bits.device)
    words.random_(-(1 << 63), None, generator=generator)
    noise = words.view(torch.int16)[: bits.numel()].view(bits.shape).to(torch.int32) & 0xFFFF
    # float32 -> bfloat16 keeps the high 16 bits; clear the low ones after the noise.
    rounded = (bits + noise) & -65536
    return rounded.view(torch.float32).to(torch.bfloat16)


# Elements per slice when the compact layout updates or unpacks a weight
# tensor: the temporaries (float32 average, rounding noise, flip masks) then
# take a few MiB instead of several times the layer's size. A multiple of 8,
# so slices start on a byte of the packed signs.
_SLICE = 1 << 20


def _pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """A flat bool tensor as uint8, bit i of byte j holding element 8 * j + i.

    torch has no packbits; OR-ing the eight shifted columns was twice as fast
    as a weighted sum on a 16M-element tensor (one thread).
    """
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    columns = bits.view(-1, 8).to(torch.uint8)
    packed = columns[:, 0].clone()
    for i in range(1, 8):
        packed.bitwise_or_(columns[:, i] << i)
    return packed


def _byte_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Row b: the eight elements packed in byte b, as 0/1 (bool) or -1/+1 (a float dtype).

    Unpacking is then one gather of eight values per byte: for the bool
    masks 3.7 times faster than shifting and masking each bit position
    (16M elements, one thread).
    """
    bits = (torch.arange(256, device=device).unsqueeze(1) >> torch.arange(8, device=device)) & 1
    return bits.bool() if dtype == torch.bool else (2 * bits - 1).to(dtype)


def _unpack(packed: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    table = _byte_table(dtype, packed.device)
    out = torch.empty(packed.numel(), 8, dtype=dtype, device=packed.device)
    for start in range(0, packed.numel(), _SLICE // 8):
        stop = min(packed.numel(), start + _SLICE // 8)
        torch.index_select(table, 0, packed[start:stop].long(), out=out[start:stop])
    return out.view(-1)[:n]


def _unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    return _unpack(packed, n, torch.bool)


def pack_signs(weight: torch.Tensor) -> torch.Tensor:
    """The signs of ``weight`` (flattened), one bit each: set for >= 0 (+1), clear for -1.

    0 counts as +1, Brevitas' ``binary_sign`` and FINN's bipolar convention.
    """
    return _pack_bits(weight.detach().reshape(-1) >= 0)


def unpack_signs(packed: torch.Tensor, shape: torch.Size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The +-1 tensor of ``shape`` whose signs :func:`pack_signs` packed."""
    return _unpack(packed, math.prod(shape), dtype).view(shape)


def _placeholder(p: torch.Tensor) -> torch.Tensor:
    # One element of storage with the parameter's shape, so autograd's shape
    # checks and state_dict keys still hold. NaN, so that no plain float layer
    # reading it by mistake computes anything finite.
    return torch.full((), math.nan, dtype=p.dtype, device=p.device).expand(p.shape)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class _FlipOptimizer(Optimizer):
    """What Bop and Bop2ndOrder share: schedules, flip bookkeeping, the compact layout."""

    _scheduled = ("gamma", "tau")
    _averages: tuple[str, ...] = ("exp_avg",)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        compact: bool,
    ) -> None:
        # A callable hyperparameter is evaluated with the step count (from 0)
        # before each step; the group holds the plain float it returned, so
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
        self._steps = 0
        self._grad_hooks: list[Any] = []
        self._module_hooks: list[Any] = []
        self._rounding: dict[str, torch.Generator] = {}
        self._bound: set[int] = set()
        super().__init__(params, defaults)

    # -- the compact layout ---------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["compact"]:
            for p in group["params"]:
                self._init_compact(p, group)

    @torch.no_grad()
    def _init_compact(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        if not bool(((p == 1) | (p == -1)).all()):
            raise ValueError("the compact layout needs binary weights (exactly +1 or -1): binarize first")
        state = self.state[p]
        self._init_state(p, group, state)
        state["signs"] = pack_signs(p)
        self._release(p)
        self._grad_hooks.append(p.register_post_accumulate_grad_hook(self._gradient_ready))

    def _is_compact(self, p: torch.Tensor) -> bool:
        return "signs" in self.state.get(p, {})

    def _group_of(self, p: torch.Tensor) -> dict[str, Any]:
        # Looked up each time: load_state_dict() replaces the group dicts.
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                return group
        raise KeyError("parameter not in this optimizer")

    def _materialise(self, p: torch.Tensor) -> None:
        p.data = unpack_signs(self.state[p]["signs"], p.shape, p.dtype)

    @staticmethod
    def _release(p: torch.Tensor) -> None:
        p.data = _placeholder(p)

    @torch.no_grad()
    def _gradient_ready(self, p: torch.Tensor) -> None:
        # Runs inside backward() as soon as p's gradient is complete: fold it
        # into the average, flip, and drop it.
        if id(p) not in self._bound:
            # Its layer ran on the placeholder, which a binary quantizer turns
            # into all -1 without complaint: the gradient is meaningless.
            raise RuntimeError(
                f"{type(self).__name__}(compact=True) is not bound to the model: call bind(model)"
            )
        self._fold(p, self._group_of(p), p.grad)

    def binary_weight(self, p: torch.Tensor) -> torch.Tensor:
        """The +-1 values of ``p`` (unpacked from the sign bits in the compact layout)."""
        if self._is_compact(p):
            return unpack_signs(self.state[p]["signs"], p.shape, p.dtype)
        return p.detach()

    def bind(self, model: nn.Module) -> None:
        """Hook the modules of ``model`` that hold this optimizer's compact weights.

        Each such module gets its weights materialised from the sign bits by a
        forward pre-hook and released by a forward hook; where autograd saved
        the weight itself for the backward pass (Brevitas' binary quantizers
        do not: they save the quantized copy), the release waits for the
        weight's gradient. ``state_dict()`` hooks hand out +-1 float weights and
        ``load_state_dict()`` hooks pack the loaded ones. Bind after moving
        the model to its device.
        """
        wanted = {id(p) for g in self.param_groups if g["compact"] for p in g["params"]}
        found: set[int] = set()
        for module in model.modules():
            names = [n for n, q in module.named_parameters(recurse=False) if id(q) in wanted]
            if names:
                found.update(id(getattr(module, n)) for n in names)
                self._bind_module(module, names)
        if found != wanted:
            raise ValueError(f"{len(wanted - found)} compact parameters are not in the model")
        self._bound |= found

    def _bind_module(self, module: nn.Module, names: list[str]) -> None:
        params = [getattr(module, n) for n in names]
        open_forwards: list[tuple[Any, dict[str, bool]]] = []

        def before(mod: nn.Module, args: Any) -> None:
            for p in params:
                self._materialise(p)
            ours = {p.untyped_storage().data_ptr() for p in params}
            seen = {"saved": False}

            def pack(t: torch.Tensor) -> torch.Tensor:
                if t.layout == torch.strided and t.untyped_storage().data_ptr() in ours:
                    seen["saved"] = True
                return t

            hooks = torch.autograd.graph.saved_tensors_hooks(pack, _identity)
            hooks.__enter__()
            open_forwards.append((hooks, seen))

        def after(mod: nn.Module, args: Any, out: Any) -> None:
            hooks, seen = open_forwards.pop()
            hooks.__exit__(None, None, None)
            if not (seen["saved"] and torch.is_grad_enabled()):
                for p in params:
                    self._release(p)

        def state_dict_hook(mod: nn.Module, sd: dict[str, Any], prefix: str, meta: Any) -> None:
            for n, p in zip(names, params, strict=True):
                if prefix + n in sd:
                    sd[prefix + n] = self.binary_weight(p)

        def load_hook(mod: nn.Module, sd: dict[str, Any], prefix: str, *rest: Any) -> None:
            for n, p in zip(names, params, strict=True):
                value = sd.get(prefix + n)
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    self.state[p]["signs"] = pack_signs(value.to(p.device))
                    p.data = torch.empty(p.shape, dtype=p.dtype, device=p.device)  # copied into

        def loaded_hook(mod: nn.Module, incompatible: Any) -> None:
            for p in params:
                self._release(p)

        self._module_hooks += [
            module.register_forward_pre_hook(before),
            module.register_forward_hook(after),
            module.register_state_dict_post_hook(state_dict_hook),
            module.register_load_state_dict_pre_hook(load_hook),
            module.register_load_state_dict_post_hook(loaded_hook),
        ]

    @staticmethod
    def _flip_packed_(state: dict[str, Any], signal: torch.Tensor, tau: float) -> torch.Tensor:
        # The float rule signal * w > tau, for w = +1 and w = -1 separately:
        # negation is exact, so both layouts flip exactly the same weights.
        positive = _unpack_bits(state["signs"], signal.numel()).view(signal.shape)
        up, down = signal > tau, signal < -tau  # never both, as tau >= 0
        flips = down ^ ((up ^ down) & positive)  # up where positive, down elsewhere
        state["signs"].bitwise_xor_(_pack_bits(flips.reshape(-1)))
        return flips

    # -- shared -----------------------------------------------------------------

    def _new_average(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if group["compact"]:
            return torch.zeros(p.shape, dtype=torch.bfloat16, device=p.device)
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    def _rounding_generator(self, device: torch.device) -> torch.Generator:
        # The rounding noise has its own stream, seeded from the run's seed
        # without drawing from it: the model's dropout sees the same random
        # numbers in both layouts, and the stream is checkpointed.
        key = str(device)
        if key not in self._rounding:
            self._rounding[key] = torch.Generator(device).manual_seed(torch.initial_seed() + 1)
        return self._rounding[key]

    def _update_average(self, avg: torch.Tensor, target: torch.Tensor, rate: float) -> torch.Tensor:
        """avg <- (1 - rate) * avg + rate * target; returns the float32 value."""
        if avg.dtype == torch.bfloat16:
            exact = avg.float().lerp_(target.float(), rate)
            avg.copy_(_stochastic_round_to_bfloat16(exact, self._rounding_generator(avg.device)))
            return exact
        avg.lerp_(target, rate)
        return avg

    def _apply_schedules(self) -> None:
        for name, schedule in self._schedules.items():
            value = float(schedule(self._steps))
            for group in self.param_groups:
                group[name] = value

    @staticmethod
    def _flip_(p: torch.Tensor, signal: torch.Tensor, tau: float) -> torch.Tensor:
        # Flip where |signal| > tau and sign(signal) == sign(p). For p in
        # {-1, +1} and tau >= 0 that is exactly signal * p > tau: the product
        # is |signal| where the signs agree and -|signal| where they do not.
        # A zero signal never flips (0 > tau is false), and |signal| == tau
        # does not flip either (strict >).
        flips = (signal * p) > tau
        p.mul_(flips.to(p.dtype).mul_(-2.0).add_(1.0))
        return flips

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        for key in self._averages:
            state[key] = self._new_average(p, group)
        state["flips"] = torch.zeros((), dtype=torch.int64, device=p.device)
        state["flips_total"] = torch.zeros((), dtype=torch.int64, device=p.device)

    def _flip_signal(self, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        """Update the averages from the gradient; return what is tested against tau."""
        raise NotImplementedError

    def _fold(self, p: torch.Tensor, group: dict[str, Any], grad: torch.Tensor) -> None:
        """One Bop update of ``p`` from ``grad``: the averages, the flips, their counts."""
        if grad.is_sparse:
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        state = self.state[p]
        if not state:
            self._init_state(p, group, state)
        if self._is_compact(p):
            count = self._fold_compact(state, group, grad)
            p.grad = None
            self._release(p)  # the float values, if still there, are stale now
        else:
            count = self._flip_(p, self._flip_signal(grad, group, state), group["tau"]).sum()
        state["flips"] = count  # this step
        state["flips_total"].add_(count)  # since the last reset_flip_counts()

    def _fold_compact(self, state: dict[str, Any], group: dict[str, Any], grad: torch.Tensor) -> torch.Tensor:
        """The compact update, slice by slice (see ``_SLICE``); returns the flip count."""
        flat_grad = grad.reshape(-1)
        averages = {key: state[key].view(-1) for key in self._averages}
        count = torch.zeros((), dtype=torch.int64, device=grad.device)
        for start in range(0, flat_grad.numel(), _SLICE):
            stop = min(flat_grad.numel(), start + _SLICE)
            part = {key: avg[start:stop] for key, avg in averages.items()}
            part["signs"] = state["signs"][start // 8 : (stop + 7) // 8]
            signal = self._flip_signal(flat_grad[start:stop], group, part)
            count += self._flip_packed_(part, signal, group["tau"]).sum()
        return count

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Compact weights whose gradient went through the hook have no .grad
        # left; those given a .grad by hand (or under DDP) are folded here.
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._fold(p, group, p.grad)
        self._steps += 1
        # The groups now hold the values for the next step, which the
        # gradient hooks of the compact layout use during backward().
        self._apply_schedules()
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
        sd["rounding_rng"] = {key: g.get_state() for key, g in self._rounding.items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        saved = [bool(g.get("compact")) for g in state_dict.get("param_groups", [])]
        if saved != [g["compact"] for g in self.param_groups]:
            raise ValueError("optimizer state does not match: compact and float32 layouts differ")
        self._steps = int(state_dict.pop("flip_optimizer_steps", 0))
        for key, rng in state_dict.pop("rounding_rng", {}).items():
            self._rounding_generator(torch.device(key)).set_state(rng)
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict casts all state to the parameter's dtype;
        # the flip counters are integers, compact averages bfloat16, signs uint8.
        casts = {"flips": torch.int64, "flips_total": torch.int64, "signs": torch.uint8}
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                for key, value in state.items():
                    if key in casts:
                        state[key] = value.to(casts[key])
                    elif group["compact"] and key in self._averages:
                        state[key] = value.to(torch.bfloat16)
                if group["compact"]:
                    if "signs" not in state:
                        raise ValueError("optimizer state has no sign bits for a compact weight")
                    self._release(p)


class Bop(_FlipOptimizer):
    """Binary optimizer: flips +-1 weights on a thresholded gradient average.

    Args:
        params: the binary weights (tensors holding exactly +1 or -1), or
            parameter groups as dicts.
        gamma: adaptivity rate of the gradient average, in [0, 1]. Larger
            reacts faster and flips more. A float, or a callable
            ``step -> gamma`` evaluated before each step.
        tau: flip threshold on ``|m|``. A float, or a callable ``step -> tau``.
        compact: the compact layout (see the module docstring): ``m`` in
            bfloat16, updated in float32 and stochastically rounded, the
            weights as sign bits; call :meth:`bind` with the model.

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

    def _flip_signal(self, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        return self._update_average(state["exp_avg"], grad, group["gamma"])


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
        compact: the compact layout, ``m`` and ``v`` in bfloat16 (4.125 bytes
            per weight); call :meth:`bind` with the model.
    """

    _averages = ("exp_avg", "exp_avg_sq")

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

    def _flip_signal(self, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        g = grad
        m = self._update_average(state["exp_avg"], g, group["gamma"])
        v = self._update_average(state["exp_avg_sq"], g * g, group["sigma"])
        return m / (v.sqrt() + group["eps"])
