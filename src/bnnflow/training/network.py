"""Which network a run trains: a named one (models.MODEL_SPECS) or the user's own, sized by the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from bnnflow import data as bdata
from bnnflow.errors import BnnflowError
from bnnflow.models import (
    NetworkSource,
    build_model,
    build_user_network,
    get_spec,
    is_user_model,
    model_label,
)


def network_io(dataset: str | bdata.DatasetIdentity) -> tuple[tuple[int, ...], int]:
    """(input shape C, H, W; number of classes) that a run on ``dataset`` builds its network for."""
    info = bdata.identity_of(dataset)
    return tuple(int(d) for d in info.input_shape), int(info.num_classes)


def default_dataset(model: str) -> str:
    """A named network's own dataset; a user network has none and needs ``--dataset``."""
    if is_user_model(model):
        raise BnnflowError(f"--dataset is required for a user network ({model})")
    return get_spec(model).dataset


def recipe(model: str) -> dict[str, Any]:
    """A named network's training recipe (TrainConfig field -> value); none for a user network."""
    return {} if is_user_model(model) else dict(get_spec(model).recipe)


def default_run_dir(model: str) -> str:
    return str(Path("runs") / model_label(model))


def check_model_dataset(model: str, dataset: str | bdata.DatasetIdentity) -> None:
    """A named network must fit the dataset's images (its last layer takes the dataset's class
    count); a user network is built for them."""
    if is_user_model(model):
        return
    info = bdata.identity_of(dataset)
    bdata.check_model_fits(info, get_spec(model).input_shape, info.num_classes, f"model {model!r}")


def new_network(
    model: str, dataset: str | bdata.DatasetIdentity
) -> tuple[nn.Module, NetworkSource | None, bytes | None]:
    """A freshly initialised network for ``dataset``; for a user network also its record and source."""
    check_model_dataset(model, dataset)
    if not is_user_model(model):
        return build_model(model, bdata.identity_of(dataset).num_classes), None, None
    return build_user_network(model, *network_io(dataset))


def describe(model: str, source: NetworkSource | None) -> str:
    if source is None:
        return get_spec(model).description
    return f"user network {source.callable} from {source.file} (sha256 {source.sha256[:12]})"
