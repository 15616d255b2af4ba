"""The simulated board's wire format, spoken by both of its processes.

The board side (``fabric.Fabric``, in the board environment) and the
accelerator process (``python -m bnnflow.deploy.simulated_accelerator``, in
the compiler's environment) exchange messages on the child's stdin/stdout,
both directions: a little-endian u32 length and that many bytes of JSON
header, then a u64 length and that many bytes of payload (int64
little-endian values, frame after frame; uint32 little-endian memory words
for the weight memories: the hello message's initial contents, the
``parameters`` request's written ones). Standard library only: the
accelerator process imports it next to numpy 2, the board next to numpy 1.
"""

from __future__ import annotations

import json
import struct
from typing import IO, Any


def write_message(stream: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    stream.write(struct.pack("<I", len(raw)) + raw + struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """One message, or None at a clean end of stream; EOFError for a message cut short."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise EOFError("truncated message")
    (n,) = struct.unpack("<I", head)
    header = json.loads(stream.read(n))
    (m,) = struct.unpack("<Q", stream.read(8))
    payload = stream.read(m)
    if len(payload) != m:
        raise EOFError("truncated payload")
    return header, payload
