"""The types of the manifest values bnnflow-board reads, checked once where a manifest is loaded.

A manifest is JSON from wherever the package came from: ``files`` as a list
or a string in ``image_shape`` must be a one-line error when it is loaded,
not a traceback from whichever check first reads the value.

A table maps a dotted key (``[]`` for every item of a list) to its kind; a
kind ending in ``?`` may also be null or absent. A key's parent comes before
it in the table, and the keys under a null or absent parent are not looked at.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bnnflow_board.errors import BoardError

_MISSING = object()


def _int(v: Any, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


_KINDS = {
    "string": lambda v: isinstance(v, str),
    "true or false": lambda v: isinstance(v, bool),
    "an integer >= 0": lambda v: _int(v, 0),
    "an integer >= 1": lambda v: _int(v, 1),
    "a number > 0": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    ),
    "an object": lambda v: isinstance(v, dict),
    "a list": lambda v: isinstance(v, list),
    "a list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "a list of integers >= 0": lambda v: isinstance(v, list) and all(_int(x, 0) for x in v),
    "a list of integers >= 1": lambda v: isinstance(v, list) and bool(v) and all(_int(x, 1) for x in v),
    "an object of strings": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
}

_LAYERS = {
    "[]": "an object",
    "[].file": "string",
    "[].node": "string",
    "[].kind": "string",
    "[].words": "an integer >= 0",
    "[].layout": "an object?",
}

MANIFEST_TYPES: dict[str, str] = {
    "board": "string",
    "model": "string?",
    "created": "string?",
    "warnings": "a list of strings?",
    "clock_mhz": "a number > 0",
    "timing_report": "string?",
    "files": "an object of strings",
    "driver": "an object",
    "driver.settings": "string",
    "bitfile": "an object",
    "bitfile.present": "true or false",
    "bitfile.bit": "string?",
    "bitfile.hwh": "string?",
    "bitfile.why": "string?",
    "instances": "a list",
    "instances.[]": "an object",
    **{f"instances.[].{k}": "string" for k in ("name", "module", "vlnv", "role")},
    "instances.[].axilite": "true or false?",
    "instances.[].axilite_bytes": "an integer >= 0?",
    "instances.[].in_width": "an integer >= 0",
    "instances.[].out_width": "an integer >= 0",
    "fpga_input": "an object",
    "fpga_input.from_images": "a list",
    "fpga_input.from_images.[]": "an object",
    "fpga_input.from_images.[].op": "string",
    "fpga_input.from_images.[].perm": "a list of integers >= 0?",
    "fpga_input.from_images.[].shape": "a list of integers >= 1?",
    "fpga_input.from_images.[].values": "a list of integers >= 0?",  # a threshold op (hostbits.py)
    "fpga_input.shape": "a list of integers >= 1",
    "cpu": "an object",
    "cpu.sources": "string",
    "cpu.model": "string",
    "testset": "an object",
    "testset.n": "an integer >= 1",
    "testset.image_shape": "a list of integers >= 1",
    "testset.n_classes": "an integer >= 1",
    **{f"testset.{k}": "string" for k in ("images", "labels", "golden_classes", "golden_scores")},
    "testset.dataset": "string?",
    "testset.class_names": "a list of strings?",  # one per class; older packages have none
    "testset.golden_source": "string?",
    "runtime_weights": "an object?",
    "runtime_weights.dir": "string",
    "runtime_weights.layers": "a list",
    **{f"runtime_weights.layers.{k}": v for k, v in _LAYERS.items()},
    "design": "an object?",
    "design.fingerprint": "string?",
    "host": "an object?",
    "host.compile_dir": "string?",
    "host.python": "string?",
}

UPDATE_TYPES: dict[str, str] = {
    "board": "string",
    "files": "an object of strings",
    "design": "an object",
    "design.fingerprint": "string?",
    "runtime_weights": "an object",
    "runtime_weights.dir": "string",
    "runtime_weights.layers": "a list",
    **{f"runtime_weights.layers.{k}": v for k, v in _LAYERS.items()},
    "cpu": "an object",
    "cpu.model": "string",
    "testset": "an object",
    "testset.golden_classes": "string",
    "testset.golden_scores": "string",
    "testset.golden_source": "string?",
    "testset.images_sha256": "string?",
    "testset.n": "an integer >= 1?",
    "testset.n_classes": "an integer >= 1?",
}


def _values(node: Any, parts: list[str], where: str) -> Iterator[tuple[str, Any]]:
    """(dotted key with list indices, value or _MISSING) for every value a table key names."""
    if not parts:
        yield where, node
        return
    if node is None or node is _MISSING:  # an optional parent that is not there
        return
    head, rest = parts[0], parts[1:]
    if head == "[]":
        for i, item in enumerate(node):
            yield from _values(item, rest, f"{where}[{i}]")
    else:
        yield from _values(node.get(head, _MISSING), rest, f"{where}.{head}" if where else head)


def _name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}
    kind = names.get(type(value), type(value).__name__)
    shown = repr(value) if isinstance(value, (int, float, str)) else ""
    return f"{kind} {shown[:40]}".strip()


def check_types(manifest: dict[str, Any], table: dict[str, str], source: Path) -> None:
    """A one-line error naming ``source`` and the first value that is not of its table kind."""
    for key, kind in table.items():
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        for where, value in _values(manifest, key.split("."), ""):
            if value is _MISSING:
                if optional:
                    continue
                raise BoardError(f"{source} lacks {where!r}: the package is damaged")
            if (value is None and optional) or _KINDS[kind](value):
                continue
            article = "a " if kind == "string" else ""
            raise BoardError(f"{source}: {where} must be {article}{kind}, not {_name(value)}")


def read_manifest(
    mf: Path,
    fmt: tuple[str, int],
    keys: tuple[str, ...],
    table: dict[str, str],
    names: tuple[str, str, str],
    foreign: dict[str, str] | None = None,
) -> tuple[dict[str, Any], bytes]:
    """A manifest's JSON checked for its format and version (``fmt``), keys and types; with its bytes.

    ``names`` are the manifest's kind, its format's and its package's names in messages;
    ``foreign`` maps another format to a hint, for a manifest of the wrong kind.
    """
    kind_name, format_name, package_name = names
    try:
        raw = mf.read_bytes()
        manifest = json.loads(raw)
    except OSError as exc:
        raise BoardError(f"cannot read {mf}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise BoardError(f"{mf} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt[0]:
        kind = manifest.get("format") if isinstance(manifest, dict) else None
        hint = (foreign or {}).get(kind, "") if isinstance(kind, str) else ""
        raise BoardError(f"{mf} is not a {kind_name}{hint}")
    if manifest.get("version") != fmt[1]:
        raise BoardError(
            f"{mf}: {format_name} format {manifest.get('version')!r}; this bnnflow-board reads {fmt[1]}"
        )
    for key in keys:
        if key not in manifest:
            raise BoardError(f"{mf} lacks {key!r}: {package_name} is damaged")
    check_types(manifest, table, mf)
    return manifest, raw
