"""Run under torchrun by test_distributed.py: two gloo ranks train the digits MLP with Bop."""

import json
import sys

import torch.distributed as dist

from bnnflow.training.trainer import TrainConfig, exit_after_distributed, finish_distributed, train

summary = train(
    TrainConfig(
        model="digits-mlp",
        run_dir=sys.argv[1],
        epochs=2,
        batch_size=25,
        limit_train=300,
        limit_test=100,
        tau=1e-6,
        device="cpu",
        progress=False,
    )
)
digests = [None] * dist.get_world_size()
dist.all_gather_object(digests, summary["binary_weights_sha256"])
if dist.get_rank() == 0:
    with open(sys.argv[2], "w") as f:
        json.dump({"summary": summary, "digests": digests}, f)
finish_distributed()  # what `bnnflow train` does after training
exit_after_distributed(0)
