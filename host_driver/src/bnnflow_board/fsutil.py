"""Writes that are complete or absent: a report or a weights record is never seen half-written.

The board can lose power or be interrupted at any moment, and ``bench`` and
``update-weights`` write into the deployment package the user copied there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bnnflow_board.errors import BoardError


def confined(root: Path, rel: object, source: Path, what: str = "the package") -> Path:
    """``root / rel`` where ``rel`` names a path inside ``root``; a one-line error naming ``source`` else.

    A manifest is data from wherever the package came from: an absolute path,
    a ``..`` or a symlink out of the folder would let ``check`` vouch for, and
    ``bench`` read or run, files anywhere on the board.
    """
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise BoardError(f"{source} names {rel!r}, outside {what}")
    path = root / rel
    real_root, real = root.resolve(), path.resolve()
    if real != real_root and real_root not in real.parents:
        raise BoardError(f"{source} names {rel}, a symlink to {real}, outside {what}")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_replaceable(path: Path, marker: str | None = None) -> None:
    """A one-line error unless ``path`` is absent, an empty folder, or a folder holding ``marker``.

    What an earlier run of the same command wrote may be replaced; anything
    else (a file, a mistyped ``--out`` naming the package itself) may not.
    """
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise BoardError(f"refusing to replace {path}: it is not a folder")
    if marker is not None and any(path.iterdir()) and not (path / marker).is_file():
        raise BoardError(f"refusing to replace {path}: it is not empty and holds no {marker}")


@contextlib.contextmanager
def atomic_directory(path: Path, marker: str | None = None, prefix: str | None = None) -> Iterator[Path]:
    """A folder built under a temporary name beside ``path``, renamed to ``path`` only when complete.

    An existing ``path`` is replaced only as ``check_replaceable`` allows; on
    any exception the temporary folder goes and ``path`` stays as it was.
    """
    check_replaceable(path, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix or f".{path.name}."))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the folder from other users
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
