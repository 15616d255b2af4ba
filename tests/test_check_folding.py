"""Folding is legal for every layer shape: SIMD divides each FINN node's input width, PE its output width."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.hls.check import check_design, folding_problems
from tests.test_check import act, conv, linear, tensor_norm

PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97]


class Centred(nn.Module):
    """Pixels in [0, 1] to [-1, 1] before the layers, as brevitas_examples' bnn_pynq networks do."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(2 * x - 1)


def random_mlp(rng: random.Random, width: int) -> tuple[nn.Module, tuple[int, int, int], int]:
    """An MLP on a 1 x 1 x ``width`` input with random hidden widths (primes among them) and classes."""
    hidden = [rng.choice([rng.randint(1, 100), rng.choice(PRIMES)]) for _ in range(rng.randint(1, 2))]
    classes = rng.choice([2, 10, 43, rng.randint(2, 100)])
    layers: list[nn.Module] = [nn.Flatten(), act(rng.choice([1, 8]))]
    n_in = width
    for h in hidden:
        layers += [linear(n_in, h), nn.BatchNorm1d(h), act()]
        n_in = h
    layers += [linear(n_in, classes), tensor_norm()]
    return Centred(*layers), (1, 1, width), classes


def random_cnn(rng: random.Random) -> tuple[nn.Module, tuple[int, int, int], int]:
    """A conv layer (odd or prime channels, kernel 1/3/5, stride 1/2, padding 0 or same) and an FC."""
    c_in, c_out = rng.choice([1, 3]), rng.choice([rng.randint(1, 40), rng.choice(PRIMES[:12])])
    k = rng.choice([1, 3, 5])
    stride, pad = rng.choice([1, 2]), rng.choice([0, k // 2])
    size = rng.choice([9, 11, 12])
    out = (size + 2 * pad - k) // stride + 1
    classes = rng.choice([2, 10, 43])
    layers = [act(8), conv(c_in, c_out, k, stride=stride, padding=pad), nn.BatchNorm2d(c_out), act()]
    if out >= 4 and rng.random() < 0.5:
        layers.append(nn.MaxPool2d(2))
        out //= 2
    layers += [nn.Flatten(), linear(c_out * out * out, classes), tensor_norm()]
    return Centred(*layers), (c_in, size, size), classes


def shapes(seed: int, n: int) -> list[tuple[str, nn.Module, tuple[int, int, int], int]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            model, shape, classes = random_mlp(rng, rng.choice([27, 75, 49, 97]))
        else:
            model, shape, classes = random_cnn(rng)
        out.append((f"{i}", model, shape, classes))
    return out


def fixed_cases() -> list[tuple[str, nn.Module, tuple[int, int, int], int]]:
    """A 1-D network ((1, k) kernels on a 1 x W signal, stride 2, same padding) and a non-square kernel."""
    one_d = Centred(
        act(8), conv(1, 7, (1, 5), stride=(1, 2), padding=(0, 2)), nn.BatchNorm2d(7), act(),
        nn.MaxPool2d((1, 2)), nn.Flatten(), linear(7 * 19, 10), tensor_norm(),
    )  # fmt: skip
    tall = Centred(
        act(8),
        conv(3, 11, (3, 1)),
        nn.BatchNorm2d(11),
        act(),
        nn.Flatten(),
        linear(11 * 7 * 9, 4),
        tensor_norm(),
    )
    return [("1-D", one_d, (1, 1, 75), 10), ("3x1", tall, (3, 9, 9), 4)]


CASES = shapes(seed=13, n=3) + fixed_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}:{c[2]}->{c[3]}" for c in CASES])
def test_folding_is_legal(case: tuple) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    _, model, shape, classes = case
    report = check_design(model, shape, classes, 255)
    assert report.graph is not None and report.folding
    assert folding_problems(report.graph) == []
    for node in report.folding:  # the same rule, from the report's own figures
        assert node.get("PE", 1) >= 1 and node.get("SIMD", 1) >= 1


def test_an_illegal_fold_is_found() -> None:
    from qonnx.custom_op.registry import getCustomOp

    torch.manual_seed(0)
    model, shape, classes = random_mlp(random.Random(1), 75)
    report = check_design(model, shape, classes, 255)
    mvau = next(n for n in report.graph.graph.node if n.op_type.startswith("MVAU"))
    inst = getCustomOp(mvau)
    inst.set_nodeattr("SIMD", int(inst.get_nodeattr("MW")) + 1)
    problems = folding_problems(report.graph)
    assert problems and problems[0].startswith(f"{mvau.name} ({mvau.op_type}): SIMD")
