"""The training loop: one run folder per model, resumable to the step.

``train(TrainConfig(...))`` trains a model from ``bnnflow.models`` on a
dataset from ``bnnflow.data`` with Bop (or the latent-Adam baseline), and
writes into the run folder (see ``bnnflow.runs``): ``run.json``,
``checkpoint.pt`` and ``best.pt``, ``metrics.csv``, ``training.png`` and,
where TensorBoard is installed, ``tensorboard/``.

Under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel:
gradients are all-reduced before the optimizer step, so every rank's Bop sees
the same averaged gradient and flips the same weights; rank 0 alone writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

import bnnflow
from bnnflow import data as bdata
from bnnflow.errors import BnnflowError
from bnnflow.layout import RunDir
from bnnflow.models import NetworkSource, binarize_weights_, binary_weight_modules
from bnnflow.runs import (
    DATASET_KEY,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    network_of,
    save_checkpoint,
    save_network_source,
)
from bnnflow.training import network as net
from bnnflow.training.distill import distillation_loss, file_sha256, load_teacher, teacher_file
from bnnflow.training.optimizers import (
    METHODS,
    SCHEDULES,
    CaseOptimizer,
    HyperparameterScheduler,
    build_optimizer,
    schedule_factor,
    state_bytes_per_binary_weight,
)

# Where neither the command nor the network's recipe (models.ModelSpec.recipe) sets them.
GENERIC_DEFAULTS: dict[str, Any] = {
    "method": "bop",
    "epochs": 10,
    "batch_size": 100,
    "gamma": 1e-4,
    "lr": 1e-2,
    "schedule": "constant",
    "sigma": 1e-2,
    "tau_schedule": "constant",
}


@dataclass
class TrainConfig:
    """One run's settings. A field left None takes the named network's recipe, else
    ``GENERIC_DEFAULTS`` (``resolved`` fills them in)."""

    model: str = "digits-mlp"
    dataset: str | None = None  # None: the model's own dataset
    run_dir: str | None = None  # None: runs/<model>
    method: str | None = None  # None: the named network's recipe, else "bop"
    epochs: int | None = None
    batch_size: int | None = None
    gamma: float | None = None
    tau: float | None = None  # None: 1e-8 for bop, 1e-6 for bop2
    sigma: float | None = None  # bop2's second-moment rate; None: the recipe's, else 1e-2
    tau_schedule: str | None = None  # decay of tau, like ``schedule``; None: the recipe's, else constant
    lr: float | None = None
    compact: bool = False
    schedule: str | None = None  # for gamma (Bop) and lr (Adam), stepped per epoch
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    resize: str | None = None  # HxW, for folder: datasets
    test_fraction: float | None = None  # for a folder: dataset without train/ and test/
    augment: bool | str | None = None  # a data.ImageDataset augmentation; None: crop-flip for cifar10
    dropout: float | None = None  # every Dropout layer's rate; None: the network's own
    label_smoothing: float | None = None  # torch's cross_entropy label_smoothing; None: the recipe's, else 0
    teacher: str | None = None  # distill from this network (a .pt2 or a run folder; training.distill)
    distill_weight: float | None = None  # the soft target's share of the loss; None: 0.5 with a teacher
    distill_temperature: float | None = None  # None: 4 with a teacher
    limit_train: int | None = None
    limit_test: int | None = None
    device: str = "auto"
    threads: int = 0  # CPU threads for torch; 0: half the cores (see default_threads)
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: epoch ends only)
    # End this call after this many of the run's epochs, leaving a checkpoint to resume from; the
    # schedules still span ``epochs`` (None: train to the end). Runs trained in slices use it.
    stop_after: int | None = None
    progress: bool = True
    # Testing hook: behave as if SIGINT arrived after this many steps in total.
    interrupt_after_steps: int | None = field(default=None, repr=False)

    def resolved(self) -> TrainConfig:
        cfg = TrainConfig(**asdict(self))
        cfg.dataset = cfg.dataset or net.default_dataset(cfg.model)
        cfg.run_dir = cfg.run_dir or net.default_run_dir(cfg.model)
        # Resuming takes the checkpoint's settings (train() fills them in); what a run saved before
        # the recipes existed as None keeps the generic meaning it had then.
        recipe = {} if cfg.resume else net.recipe(cfg.model)
        recipe_method = recipe.get("method", "bop")
        if cfg.method is not None and cfg.method != recipe_method:
            # A recipe's flip settings belong to its own method: bop2's tau has another scale.
            for key in ("tau", "sigma", "tau_schedule"):
                recipe.pop(key, None)
        for key, value in {**GENERIC_DEFAULTS, **recipe}.items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        if cfg.augment is None:
            cfg.augment = "crop-flip" if cfg.dataset == "cifar10" else "none"
        cfg.augment = bdata.augmentation_name(cfg.augment)
        if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
            raise BnnflowError(f"--dropout must be in [0, 1), got {cfg.dropout}")
        if cfg.label_smoothing is None:
            cfg.label_smoothing = 0.0
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise BnnflowError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
        _resolve_distillation(cfg)
        if cfg.method not in METHODS:
            raise BnnflowError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
        cfg.dataset = bdata.canonical_name(cfg.dataset)
        bdata.parse_resize(cfg.resize)
        if bdata.dataset_kind(cfg.dataset) == "named":  # a named dataset's shape is known before reading it
            net.check_model_dataset(cfg.model, cfg.dataset)
        for name in ("epochs", "batch_size"):
            if getattr(cfg, name) < 1:
                raise BnnflowError(f"--{name.replace('_', '-')} must be at least 1")
        if cfg.stop_after is not None and cfg.stop_after < 1:
            raise BnnflowError("stop_after must be at least 1")
        for name in ("threads", "checkpoint_every"):
            if getattr(cfg, name) < 0:
                raise BnnflowError(f"--{name.replace('_', '-')} must be 0 or more")
        for name in ("gamma", "sigma"):
            if not 0.0 <= getattr(cfg, name) <= 1.0:
                raise BnnflowError(f"--{name} must be in [0, 1], got {getattr(cfg, name)}")
        if cfg.tau is not None and not 0.0 <= cfg.tau < math.inf:
            raise BnnflowError(f"--tau must be a finite number >= 0, got {cfg.tau}")
        _check_schedules(cfg)
        if not 0.0 < cfg.lr < math.inf:
            raise BnnflowError(f"--lr must be a finite positive number, got {cfg.lr}")
        if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
            raise BnnflowError(f"--run {cfg.run_dir} is a file, not a folder")
        return cfg


def _check_schedules(cfg: TrainConfig) -> None:
    for option, kind in (("--schedule", cfg.schedule), ("--tau-schedule", cfg.tau_schedule)):
        if kind not in SCHEDULES:
            raise BnnflowError(f"{option} must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    if cfg.method == "latent-adam" and cfg.tau_schedule != "constant":
        raise BnnflowError("--tau-schedule is for bop and bop2: latent-adam has no flip threshold")


def _resolve_distillation(cfg: TrainConfig) -> None:
    """Fill in and check the distillation settings (in place)."""
    if cfg.teacher is None:
        if cfg.distill_weight is not None or cfg.distill_temperature is not None:
            raise BnnflowError("--distill-weight and --distill-temperature need --teacher")
        return
    cfg.teacher = str(Path(cfg.teacher).resolve())  # a run resumed from another folder finds it
    if cfg.distill_weight is None:
        cfg.distill_weight = 0.5
    if cfg.distill_temperature is None:
        cfg.distill_temperature = 4.0
    if not 0.0 <= cfg.distill_weight <= 1.0:
        raise BnnflowError(f"--distill-weight must be in [0, 1], got {cfg.distill_weight}")
    if not 0.0 < cfg.distill_temperature < math.inf:
        raise BnnflowError(
            f"--distill-temperature must be a finite number > 0, got {cfg.distill_temperature}"
        )


# Keys that must match between a checkpoint and the command resuming it.
_RESUME_KEYS = (
    "model",
    "dataset",
    "resize",
    "test_fraction",
    "method",
    "batch_size",
    "seed",
    "compact",
    "dropout",
    "teacher",
    "distill_weight",
    "distill_temperature",
)


class _EpochSampler(Sampler[int]):
    """This rank's share of a seeded per-epoch permutation, from a given batch on.

    torch's samplers cannot start mid-epoch; resuming after a kill must skip
    exactly the batches already consumed, so the order is a pure function of
    (seed, epoch) and the consumed prefix is cut off. The permutation is padded
    to a multiple of the world size as DistributedSampler does.
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int, world: int, skip: int) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        per_rank = math.ceil(n / world)
        perm += perm[: per_rank * world - n]
        self.indices = perm[rank::world][skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = (
            "nccl" if torch.cuda.is_available() and os.environ.get("BNNFLOW_BACKEND") != "gloo" else "gloo"
        )
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def finish_distributed(ok: bool = True) -> None:
    """End the process group ``train`` started under torchrun, while the interpreter is alive.

    With ``ok``, every rank first waits for the others (a barrier), so no rank tears its
    connections down while another still uses them; after a failure the group is only
    destroyed, since the other ranks may never reach a barrier.

    A process that trained with DistributedDataParallel on gloo should then end with
    :func:`exit_after_distributed`: the group's worker threads outlive
    ``destroy_process_group`` there (measured with torch 2.13: after wrapping a module in DDP,
    deleting it and collecting garbage, the "pt_gloo_runloop" threads are still running), and
    one that releases a finished collective while the interpreter shuts down needs the GIL
    and aborts the process ("terminate called without an active exception"; caught in gdb
    in ``AsyncBarrierWork``'s destructor on the gloo run loop; 2 of 30 two-rank runs on a
    loaded 2-core machine).
    """
    global _GROUP_USED
    if not (dist.is_available() and dist.is_initialized()):
        return
    _GROUP_USED = True
    if ok:
        dist.barrier()
    dist.destroy_process_group()


_GROUP_USED = False


def exit_after_distributed(code: int) -> int:
    """Return ``code``, or, in a process that ran a process group, end the process with it.

    Ending with ``os._exit`` skips the interpreter's shutdown, during which the gloo threads
    that outlive the group may abort the process (see :func:`finish_distributed`). Standard
    streams are flushed first; the run folder's files were written atomically and closed.
    """
    if not _GROUP_USED:
        return code
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BnnflowError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BnnflowError(f"device {name!r} requested but CUDA is not available")
    return device


def default_threads() -> int:
    """Half the cores, at least one.

    Brevitas issues many small element-wise ops per layer; with every core
    in torch's OpenMP pool, a core busy with anything else stalls each op's
    barrier. benchmarks/threads.py measures it: on 2 cores with one busy, an
    SFC step takes about twice as long with two threads as with one.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode over ``loader``."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    model.train(was_training)
    return total_loss / max(count, 1), correct / max(count, 1)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def plot_history(rows: list[dict[str, Any]], layers: list[str], path: Path, title: str) -> None:
    """Accuracy and log10 flip ratio per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [100 * r["train_acc"] for r in rows], marker="o", label="train")
    ax1.plot(epochs, [100 * r["test_acc"] for r in rows], marker="o", label="test")
    ax1.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax1.grid(alpha=0.3)
    ax1.legend()
    for layer in layers:
        ys = [r.get(f"log_flip_ratio/{layer}", float("nan")) for r in rows]
        ax2.plot(epochs, ys, marker=".", label=layer)
    ax2.set(xlabel="epoch", ylabel="log10 flip ratio", title="flips per weight per step")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional: not installed is fine
        return None
    return SummaryWriter(str(Path(run_dir) / RunDir.TENSORBOARD))


def set_dropout_(model: nn.Module, rate: float) -> None:
    """Set the rate of every dropout layer of ``model`` (one line if it has none to set)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not layers and rate > 0:
        raise BnnflowError(f"--dropout {rate}: the network has no Dropout layer to set")
    for layer in layers:
        layer.p = float(rate)


# The settings a recipe may set; on --resume the checkpoint's own values fill them instead.
_RECIPE_FIELDS = (*GENERIC_DEFAULTS, "tau", "augment", "dropout", "label_smoothing")
# What --resume takes from the checkpoint where the command leaves it unset.
_RESUMED_FIELDS = (*_RECIPE_FIELDS, "teacher", "distill_weight", "distill_temperature")


def _settings_of_resumed_run(config: TrainConfig) -> TrainConfig:
    """``config`` with what it leaves unset taken from the checkpoint it resumes, not from a recipe.

    A run continues as it was started even if the network's recipe has changed
    since; a setting the command names still wins (and is checked where it must match).
    """
    if not config.resume:
        return config
    path = RunDir(Path(config.run_dir or net.default_run_dir(config.model))).checkpoint
    if not path.is_file():
        return config  # _Run reports "nothing to resume"
    saved = load_checkpoint(path).get("config", {})
    return replace(config, **{k: saved.get(k) for k in _RESUMED_FIELDS if getattr(config, k) is None})


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, checkpointing every epoch; returns the summary also written to ``summary.json``."""
    return _Run(_settings_of_resumed_run(config).resolved()).train()


class _Run:
    """One training run: its data, model and optimizer, the epoch loop and the checkpoints.

    The set-up follows a fixed order (seeding, then the data, then the model and
    its optimizer): the random draws of a run, and so its resumption bit for
    bit, depend on it.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rank, self.world, local_rank = _distributed()
        self.device = _device(cfg.device, local_rank)
        if self.device.type == "cpu":
            threads = cfg.threads or max(1, default_threads() // self.world)
            torch.set_num_threads(threads)
        self.run_dir = RunDir(Path(cfg.run_dir))
        self.is_main = self.rank == 0
        if cfg.compact and (self.world > 1 or cfg.method == "latent-adam"):
            # DDP broadcasts and all-reduces the parameters' own storage, which
            # the compact layout releases; latent weights have nothing to pack.
            raise BnnflowError("--compact is for Bop and bop2 in one process")
        resume_payload = self._resume_payload()

        torch.manual_seed(cfg.seed + self.rank)
        np.random.seed(cfg.seed + self.rank)
        random.seed(cfg.seed + self.rank)

        data = bdata.open_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.resize, cfg.test_fraction)
        self.dataset = data.identity
        net.check_model_dataset(cfg.model, self.dataset)  # before the split is subset or a network built
        # --limit-*: a class-stratified subset, so a class-ordered file still gives every class
        keep = np.sort(bdata.test_subset(data.y_train, cfg.limit_train, cfg.seed))
        x_train, y_train = data.x_train[keep], data.y_train[keep]
        keep = np.sort(bdata.test_subset(data.y_test, cfg.limit_test, cfg.seed))
        x_test, y_test = data.x_test[keep], data.y_test[keep]
        pixel_max = self.dataset.pixel_max
        self.train_set = bdata.ImageDataset(x_train, y_train, pixel_max, augment=cfg.augment)
        self.test_loader = DataLoader(bdata.ImageDataset(x_test, y_test, pixel_max), batch_size=1000)

        if resume_payload is not None and resume_payload.get("network_source"):  # the run folder's copy
            self.model = network_of(resume_payload, self.run_dir.checkpoint)
            self.network_source = NetworkSource.from_json(resume_payload["network_source"])
        else:
            self.model, self.network_source, network_bytes = net.new_network(cfg.model, self.dataset)
            if self.network_source is not None and self.is_main:
                save_network_source(self.run_dir.path, self.network_source, network_bytes or b"")
        if cfg.dropout is not None:
            set_dropout_(self.model, cfg.dropout)
        if cfg.method != "latent-adam":
            binarize_weights_(self.model)
        self.model.to(self.device)
        self.teacher = self._teacher(resume_payload)
        self.optimizer = build_optimizer(
            self.model,
            cfg.method,
            gamma=cfg.gamma,
            tau=cfg.tau,
            sigma=cfg.sigma,
            lr=cfg.lr,
            compact=cfg.compact,
        )
        factor = schedule_factor(cfg.schedule, cfg.epochs)
        self.schedulers: list[Any] = []
        for opt in self.optimizer:
            name = "gamma" if "gamma" in opt.param_groups[0] else "lr"
            self.schedulers.append(HyperparameterScheduler(opt, name, factor))
        if cfg.tau_schedule != "constant":  # appended last: a constant tau's checkpoints have no entry
            flips = [opt for opt in self.optimizer if "tau" in opt.param_groups[0]]
            tau_factor = schedule_factor(cfg.tau_schedule, cfg.epochs)
            self.schedulers += [HyperparameterScheduler(opt, "tau", tau_factor) for opt in flips]

        self.layers = [name for name, _ in binary_weight_modules(self.model)]
        self.binary_params = [m.weight for _, m in binary_weight_modules(self.model)]
        self.n_per_layer = [p.numel() for p in self.binary_params]
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.skip_batches, self.global_step, self.best_acc = 0, 0, 0, -1.0
        self.epoch_accum: dict[str, Any] | None = None
        if resume_payload is not None:
            self._restore(resume_payload)

        self.train_model: nn.Module = self.model
        if self.world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.is_main:
            self._write_config()
        self.writer = _tensorboard(self.run_dir.path) if self.is_main else None

    def _teacher(self, resume_payload: dict[str, Any] | None) -> nn.Module | None:
        """The distillation teacher (None without --teacher); a resumed run must keep the same file."""
        cfg = self.cfg
        self.teacher_sha256 = None
        if cfg.teacher is None:
            return None
        self.teacher_sha256 = file_sha256(teacher_file(cfg.teacher))
        saved = (resume_payload or {}).get("teacher_sha256")
        if resume_payload is not None and saved != self.teacher_sha256:
            raise BnnflowError(f"cannot resume: the teacher {cfg.teacher} has changed since the run began")
        example = torch.stack([self.train_set[i][0] for i in range(min(2, len(self.train_set)))])
        teacher = load_teacher(cfg.teacher, example, self.dataset.num_classes)
        return teacher.to(self.device)

    def _resume_payload(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (checked against this command's settings), or None."""
        cfg, ckpt_path = self.cfg, self.run_dir.checkpoint
        if not cfg.resume:
            if ckpt_path.exists() and not cfg.overwrite:
                raise BnnflowError(
                    f"{self.run_dir.path} already holds a checkpoint: pass --resume to continue or "
                    "--overwrite"
                )
            return None
        if not ckpt_path.exists():
            raise BnnflowError(f"nothing to resume: {ckpt_path} does not exist")
        payload = load_checkpoint(ckpt_path)
        saved = payload.get("config", {})
        for key in _RESUME_KEYS:
            if saved.get(key) != getattr(cfg, key):
                raise BnnflowError(
                    f"cannot resume {ckpt_path}: it was trained with {key}={saved.get(key)!r}, "
                    f"this command has {key}={getattr(cfg, key)!r}"
                )
        # A threshold schedule adds a scheduler to the checkpoint; a run saved before it existed had none.
        saved_tau_schedule = saved.get("tau_schedule") or "constant"
        if saved_tau_schedule != cfg.tau_schedule:
            raise BnnflowError(
                f"cannot resume {ckpt_path}: it was trained with --tau-schedule {saved_tau_schedule}, "
                f"this command has --tau-schedule {cfg.tau_schedule}"
            )
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model_state"])
        try:
            self.optimizer.load_state_dict(payload["optimizer_state"])
        except ValueError as e:  # e.g. a float32-layout state for --compact
            raise BnnflowError(f"cannot resume {self.run_dir.checkpoint}: {e}") from None
        for sched, sd in zip(self.schedulers, payload["scheduler_states"], strict=True):
            sched.load_state_dict(sd)
        self.start_epoch = payload["epoch"]
        self.skip_batches = payload.get("batches_done", 0)
        self.global_step = payload["global_step"]
        self.best_acc = payload["best_acc"]
        self.history = list(payload["history"])
        self.epoch_accum = payload.get("epoch_accum")
        if self.world == 1:  # with several ranks each has its own stream; rank 0's is saved
            _set_rng_state(payload["rng"])
        if self.is_main:
            print(f"resuming {self.run_dir.path} at epoch {self.start_epoch + 1}, batch {self.skip_batches}")

    def _write_config(self) -> None:
        cfg = self.cfg
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        bdata.write_identity(self.run_dir.path, self.dataset)
        atomic_write_json(
            self.run_dir.config,
            {
                "config": {
                    k: v for k, v in asdict(cfg).items() if k not in ("interrupt_after_steps", "stop_after")
                },
                "method_description": METHODS[cfg.method],
                "model_description": net.describe(cfg.model, self.network_source),
                "world_size": self.world,
                "teacher_sha256": self.teacher_sha256,
                "versions": {"bnnflow": bnnflow.__version__, "torch": torch.__version__},
            },
        )

    def _checkpoint(
        self, epoch_done: int, batches_done: int, accum: dict[str, Any] | None, path: Path
    ) -> None:
        if not self.is_main:
            return
        cfg = self.cfg
        save_checkpoint(
            path,
            {
                "model": cfg.model,
                # what rebuilds a user network from the run folder alone (runs.network_of)
                "network_source": self.network_source.to_json() if self.network_source else None,
                "dataset": cfg.dataset,
                DATASET_KEY: self.dataset.to_json(),
                "method": cfg.method,
                "config": asdict(cfg),
                "teacher_sha256": self.teacher_sha256,
                "epoch": epoch_done,
                "batches_done": batches_done,
                "epoch_accum": accum,
                "global_step": self.global_step,
                "best_acc": self.best_acc,
                "history": self.history,
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_states": [s.state_dict() for s in self.schedulers],
                "rng": _rng_state(),
            },
        )

    def train(self) -> dict[str, Any]:
        started = time.perf_counter()
        end = min(self.cfg.epochs, self.cfg.stop_after or self.cfg.epochs)
        with _Interrupt() as interrupt:
            for epoch in range(self.start_epoch, end):
                accum = self._train_epoch(epoch, interrupt)
                row = self._epoch_row(epoch, accum)
                self.history.append(row)
                for sched in self.schedulers:
                    sched.step()
                if self.is_main:
                    self._end_epoch(epoch, row, accum)
        summary = self._summary(started)
        if self.is_main and len(self.history) >= self.cfg.epochs:  # a run stopped early has no final figures
            atomic_write_json(self.run_dir.summary, summary)
        if self.writer is not None:
            self.writer.close()
        return summary

    def _batches(self, epoch: int) -> tuple[DataLoader, Any]:
        """The epoch's loader (resuming mid-epoch where a checkpoint stopped) and what to iterate."""
        cfg = self.cfg
        sampler = _EpochSampler(
            len(self.train_set), cfg.seed, epoch, self.rank, self.world, self.skip_batches * cfg.batch_size
        )
        # A private generator: creating the loader's iterator must not draw from
        # the global RNG, or a resumed epoch would see a shifted dropout stream.
        loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size, sampler=sampler, generator=torch.Generator()
        )
        if not (cfg.progress and self.is_main):
            return loader, loader
        from tqdm import tqdm  # only for a progress bar; the import is slow

        return loader, tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            initial=self.skip_batches,
            total=self.skip_batches + len(loader),
            leave=False,
            dynamic_ncols=True,
            disable=None,  # no bar when stderr is not a terminal (logs, CI)
        )

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch_index: int) -> tuple[Any, Any, Any]:
        """One optimizer step: (loss, logits, flips per binary layer)."""
        cfg, ckpt_path = self.cfg, self.run_dir.checkpoint
        logits = self.train_model(x)
        if self.teacher is None:
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        else:
            with torch.no_grad():
                soft = self.teacher(x)
            loss = distillation_loss(
                logits, soft, y, cfg.distill_weight, cfg.distill_temperature, cfg.label_smoothing
            )
        finite = torch.isfinite(loss.detach()).to(torch.int32)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            raise BnnflowError(
                f"loss is not finite at epoch {epoch + 1}, batch {batch_index + 1}; stopped. "
                f"The last good checkpoint is {ckpt_path}"
                + (" (none written yet)" if not ckpt_path.exists() else "")
            )
        self.optimizer.zero_grad()
        loss.backward()
        flip_opt = self.optimizer.flip_optimizer
        if flip_opt is None:  # latent weights: a flip is a change of sign (0 counts as +)
            before = [p.detach() >= 0 for p in self.binary_params]
        self.optimizer.step()
        with torch.no_grad():
            if flip_opt is None:
                counts = [(b != (p >= 0)).sum() for b, p in zip(before, self.binary_params, strict=True)]
            else:
                counts = [flip_opt.state[p]["flips"] for p in self.binary_params]
            return loss, logits, torch.stack(counts).cpu()

    def _stop_requested(self, interrupt: _Interrupt) -> bool:
        """Ctrl-C (or the test hook) on any rank stops every rank at the same step."""
        cfg = self.cfg
        if cfg.interrupt_after_steps is not None and self.global_step >= cfg.interrupt_after_steps:
            interrupt.requested = True
        stop = interrupt.requested
        if self.world > 1:
            flag = torch.tensor([int(stop)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _train_epoch(self, epoch: int, interrupt: _Interrupt) -> dict[str, Any]:
        """The epoch's training steps, from where a checkpoint stopped; its running totals."""
        cfg = self.cfg
        loader, batches = self._batches(epoch)
        accum = self.epoch_accum or {
            "loss": 0.0,
            "correct": 0,
            "count": 0,
            "steps": 0,
            "seconds": 0.0,
            "flips": [0] * len(self.layers),
        }
        self.epoch_accum = None
        flips = torch.tensor(accum["flips"], dtype=torch.int64)
        t0 = time.perf_counter()
        self.train_model.train()
        batch_index = self.skip_batches
        for x, y in batches:
            x, y = x.to(self.device), y.to(self.device)
            loss, logits, counts = self._step(x, y, epoch, batch_index)
            flips += counts
            accum["loss"] += loss.item() * y.numel()
            accum["correct"] += (logits.detach().argmax(1) == y).sum().item()
            accum["count"] += y.numel()
            accum["steps"] += 1
            batch_index += 1
            self.global_step += 1
            if batches is not loader:
                batches.set_postfix(loss=f"{loss.item():.3f}")
            stop = self._stop_requested(interrupt)
            if stop or (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0):
                accum["flips"] = flips.tolist()
                accum["seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                self._checkpoint(epoch, batch_index, dict(accum), self.run_dir.checkpoint)
            if stop:
                raise BnnflowError(
                    f"interrupted at epoch {epoch + 1}, batch {batch_index}; checkpoint saved, "
                    f"continue with --resume",
                    exit_code=130,
                )
        self.skip_batches = 0
        accum["seconds"] += time.perf_counter() - t0
        accum["flips"] = flips.tolist()
        return accum

    def _epoch_row(self, epoch: int, accum: dict[str, Any]) -> dict[str, Any]:
        """metrics.csv's row: losses, accuracies, hyperparameters and flips per layer."""
        test_loss, test_acc = evaluate(self.model, self.test_loader, self.device)
        steps = max(accum["steps"], 1)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": accum["loss"] / max(accum["count"], 1),
            "train_acc": accum["correct"] / max(accum["count"], 1),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "seconds": accum["seconds"],
            "steps": accum["steps"],
        }
        for opt in self.optimizer:
            for key in ("gamma", "tau", "lr"):
                if key in opt.param_groups[0]:
                    row[key] = opt.param_groups[0][key]
        for layer, count, n in zip(self.layers, accum["flips"], self.n_per_layer, strict=True):
            ratio = count / (n * steps)
            row[f"flips_per_step/{layer}"] = count / steps
            row[f"log_flip_ratio/{layer}"] = math.log10(ratio) if ratio > 0 else float("nan")
        row["flips"] = int(sum(accum["flips"]))
        return row

    def _end_epoch(self, epoch: int, row: dict[str, Any], accum: dict[str, Any]) -> None:
        """Checkpoints, metrics.csv, the plot, TensorBoard and the console line of a finished epoch."""
        cfg, test_acc = self.cfg, row["test_acc"]
        if test_acc > self.best_acc:
            self.best_acc = test_acc
            self._checkpoint(epoch + 1, 0, None, self.run_dir.best)
        self._checkpoint(epoch + 1, 0, None, self.run_dir.checkpoint)
        _write_csv(self.run_dir.metrics, self.history)
        plot_history(self.history, self.layers, self.run_dir.plot, f"{cfg.model} / {cfg.method}")
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, epoch + 1)
            self.writer.flush()
        steps = max(accum["steps"], 1)
        print(
            f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
            f"train {100 * row['train_acc']:6.2f}%  test {100 * test_acc:6.2f}%  "
            f"flips/step {row['flips'] / steps:9.1f}  {accum['seconds']:6.1f}s",
            flush=True,
        )

    def _binary_values(self) -> list[torch.Tensor]:
        flip_opt = self.optimizer.flip_optimizer
        if flip_opt is None:
            return self.binary_params
        return [flip_opt.binary_weight(p) for p in self.binary_params]

    def _summary(self, started: float) -> dict[str, Any]:
        cfg, history = self.cfg, self.history
        return {
            "run_dir": str(self.run_dir.path),
            "model": cfg.model,
            "dataset": cfg.dataset,
            "method": cfg.method,
            "epochs": cfg.epochs,
            "final_test_acc": history[-1]["test_acc"] if history else None,
            "best_test_acc": self.best_acc,
            "train_seconds": sum(r["seconds"] for r in history),
            "wall_seconds": time.perf_counter() - started,
            "total_flips": int(sum(r["flips"] for r in history)),
            "bytes_per_binary_weight": state_bytes_per_binary_weight(self.model, self.optimizer),
            "binary_weights": int(sum(self.n_per_layer)),
            "world_size": self.world,
            "binary_weights_sha256": _binary_weights_digest(self._binary_values()),
        }


def _binary_weights_digest(params: list[torch.Tensor]) -> str:
    """A fingerprint of the binary weights, to check that DDP ranks agree bit for bit."""
    h = hashlib.sha256()
    for p in params:
        h.update((p.detach().cpu() >= 0).numpy().tobytes())
    return h.hexdigest()


__all__ = ["TrainConfig", "train", "evaluate", "CaseOptimizer", "plot_history"]
