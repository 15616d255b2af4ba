"""Training binary networks: Bop, its second-order variant, and the latent-Adam baseline."""

from bnnflow.training.bop import Bop, Bop2ndOrder
from bnnflow.training.optimizers import (
    METHODS,
    CaseOptimizer,
    HyperparameterScheduler,
    build_optimizer,
    state_bytes_per_binary_weight,
)

__all__ = [
    "METHODS",
    "Bop",
    "Bop2ndOrder",
    "CaseOptimizer",
    "HyperparameterScheduler",
    "build_optimizer",
    "state_bytes_per_binary_weight",
]
