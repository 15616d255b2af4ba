"""Run folders, atomic writes and checkpoints.

A run folder (``runs/<name>/`` by default) holds a model's whole history::

    runs/<name>/
      run.json             what was trained: model, dataset, optimizer, hyperparameters
      checkpoint.pt        the latest epoch (resume from here)
      best.pt              the epoch with the best test accuracy
      metrics.csv          one row per epoch
      training.png         accuracy and log flip ratio per epoch
      export/              QONNX model and its verification (bnnflow export)
      compile/<board>/     FINN hardware graph, folding, estimates, HLS (bnnflow compile)

Every file is written to a temporary name in the same folder and renamed into
place, so a kill at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bnnflow.errors import BnnflowError
from bnnflow.layout import RunDir
from bnnflow.models import NetworkSource, build_model, get_spec, rebuild_user_network

CHECKPOINT_FORMAT = "bnnflow-checkpoint"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


CHECKPOINT_VERSION = 1


def make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders, shallowest first; returns those it created.

    A parent that exists but is a file is a one-line error (mkdir's own is a FileExistsError
    naming neither path).
    """
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise BnnflowError(f"cannot write {path}: {parent} is not a folder")
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            pass  # made meanwhile by another process
        except OSError as exc:
            raise BnnflowError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return list(reversed(missing))


def remove_made(folders: list[Path]) -> None:
    """Remove the folders ``make_parents`` made, deepest first, where they are still empty, so a
    failed stage leaves no empty run or compile folder behind."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    make_parents(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the usual mode so a
        # run folder copied to a board or shared stays readable.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], overwrite: bool = True, marker: str | None = None
) -> Iterator[Path]:
    """Build a folder under a temporary name; it appears at ``path`` only on success.

    On any exception the temporary folder is removed and ``path`` is left as
    it was, so no half-written output folder is ever visible. An existing
    ``path`` is replaced only if it is a folder that is empty or holds
    ``marker`` (the file every output of that stage writes), so a mistyped
    ``--out`` cannot wipe an unrelated file or folder.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise BnnflowError(f"{path} already exists")
        if not path.is_dir() or path.is_symlink():
            raise BnnflowError(f"refusing to replace {path}: it is not a folder")
        if marker is not None and any(path.iterdir()) and not (path / marker).exists():
            raise BnnflowError(f"refusing to replace {path}: it is not empty and holds no {marker}")
    made = make_parents(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made(made)
        raise


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically. ``payload`` must hold ``model`` (a model name)
    and ``model_state``; the trainer adds optimizer, scheduler and RNG state."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a bnnflow checkpoint, or raise a one-line BnnflowError."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        if not run.best.exists() and not run.checkpoint.exists():
            raise BnnflowError(f"{path} is not a run folder: it holds no best.pt or checkpoint.pt")
        path = run.best if run.best.exists() else run.checkpoint
    if not path.is_file():
        raise BnnflowError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".onnx":
        raise BnnflowError(f"{path} is an ONNX model, not a checkpoint: give the run folder or its best.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise BnnflowError(f"corrupted checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BnnflowError(f"{path} is not a bnnflow checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise BnnflowError(f"{path}: unsupported checkpoint version {payload.get('version')!r}")
    for key in ("model", "model_state"):
        if key not in payload:
            raise BnnflowError(f"corrupted checkpoint {path}: missing {key!r}")
    if not isinstance(payload.get("config", {}), dict):
        raise BnnflowError(f"corrupted checkpoint {path}: its training settings ('config') are not a mapping")
    return payload


# The checkpoint's record of its dataset: bnnflow.data.DatasetIdentity.to_json() (absent before it existed).
DATASET_KEY = "dataset_identity"


def dataset_record(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The dataset record a checkpoint carries, None for one written before the record existed."""
    record = payload.get(DATASET_KEY)
    return record if isinstance(record, dict) else None


def _dataset_classes(payload: dict[str, Any]) -> int | None:
    """The class count the network was sized for: its dataset's, else (older checkpoints) its own."""
    record = dataset_record(payload)
    if record is None:
        return None
    try:
        return int(record["num_classes"])
    except (KeyError, TypeError, ValueError):
        raise BnnflowError("corrupted checkpoint: its dataset record has no class count") from None


def save_network_source(run_dir: str | os.PathLike[str], source: NetworkSource, data: bytes) -> None:
    """Copy a user network's source into the run folder's ``network/`` with its record (network.json)."""
    folder = RunDir(Path(run_dir)).network
    atomic_write_bytes(folder / source.file, data)
    atomic_write_json(folder / NETWORK_RECORD, source.to_json())


NETWORK_RECORD = "network.json"


def network_of(payload: dict[str, Any], path: str | os.PathLike[str]) -> torch.nn.Module:
    """A fresh network of the checkpoint ``payload`` read from ``path``: named, or rebuilt from the
    run folder's copy of the user's source (``network/``, checked against the checkpoint's sha256)."""
    record = payload.get("network_source")
    if record is None:  # a named network, sized for its dataset's classes
        return build_model(payload["model"], _dataset_classes(payload))  # raises on an unknown architecture
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    return rebuild_user_network(NetworkSource.from_json(record), RunDir(run_dir).network)


def checkpoint_network(payload: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    """(dataset, input shape) a checkpoint's network was built for."""
    record = payload.get("network_source")
    if record is not None:
        source = NetworkSource.from_json(record)
        return str(payload.get("dataset") or ""), source.input_shape
    spec = get_spec(payload["model"])
    return str(payload.get("dataset") or spec.dataset), tuple(spec.input_shape)


def load_model(path: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network of a checkpoint (or run folder), in eval mode, and the checkpoint."""
    payload = load_checkpoint(path)
    model = network_of(payload, path)
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise BnnflowError(f"checkpoint {path} does not match model {payload['model']!r}: {first}") from None
    model.eval()
    return model, payload
