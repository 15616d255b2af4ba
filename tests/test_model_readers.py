"""The two readers of the model file, bnnflow.bnncpu.modelfile (Python) and cpu/src/model.c (C),
accept exactly the same files.

The seeds are the real model files in cpu/tests/corpus (written from FINN graphs) and the
generated ones the fuzzer starts from (`make-model --corpus`); each is mutated many times,
a header or layer word set to an edge value or a random one, with the checksum recomputed
so that the mutation reaches the checks behind it, and both readers judge every variant.
"""

from __future__ import annotations

import ctypes
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from bnnflow.bnncpu.engine import library_path
from bnnflow.bnncpu.modelfile import CRC_OFFSET, HEADER_BYTES, LAYER_HEADER_BYTES, InputOrder, decode_model
from bnnflow.errors import BnnflowError

CPU = Path(__file__).resolve().parents[1] / "cpu"
VARIANTS_PER_SEED = 400
EDGE_VALUES = [
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    9,
    16,
    31,
    32,
    63,
    64,
    255,
    256,
    4095,
    4096,
    65535,
    1 << 31,
    0xFFFFFFFF,
]


@pytest.fixture(scope="module")
def c_reader():
    lib = ctypes.CDLL(str(library_path()))
    lib.bnn_model_load_memory.restype = ctypes.c_int
    lib.bnn_model_load_memory.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t,
    ]  # fmt: skip
    lib.bnn_model_free.restype = None
    lib.bnn_model_free.argtypes = [ctypes.c_void_p]

    def read(data: bytes) -> str | None:
        """None where the C reader accepts the file, else its message."""
        handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(256)
        status = lib.bnn_model_load_memory(data, len(data), ctypes.byref(handle), err, len(err))
        if status == 0:
            lib.bnn_model_free(handle)
            return None
        return err.value.decode(errors="replace") or f"status {status}"

    return read


def _python_reader(data: bytes) -> str | None:
    try:
        decode_model(data)
    except BnnflowError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("seeds")
    subprocess.run([str(CPU / "build" / "make-model"), "--corpus", str(out)], check=True, timeout=120)
    found = sorted((CPU / "tests" / "corpus").glob("*.bnn")) + sorted(out.iterdir())
    assert len(found) >= 4
    return found


def _with_crc(data: bytearray) -> bytes:
    data[CRC_OFFSET : CRC_OFFSET + 4] = bytes(4)
    data[CRC_OFFSET : CRC_OFFSET + 4] = zlib.crc32(data).to_bytes(4, "little")
    return bytes(data)


def _mutants(seed: bytes, rng: np.random.Generator, n: int):
    """(what, bytes): one 32-bit word of the file header or of a layer header set to another value."""
    n_layers = int.from_bytes(seed[28:32], "little")
    words = [o for o in range(8, HEADER_BYTES, 4) if o != CRC_OFFSET]
    offset = HEADER_BYTES
    for _ in range(n_layers):  # the records' headers, found by walking their record_bytes
        words += range(offset, offset + LAYER_HEADER_BYTES, 4)
        offset += int.from_bytes(seed[offset + 4 : offset + 8], "little")
    for _ in range(n):
        at = int(rng.choice(words))
        value = int(rng.choice(EDGE_VALUES)) if rng.random() < 0.7 else int(rng.integers(0, 1 << 12))
        data = bytearray(seed)
        data[at : at + 4] = value.to_bytes(4, "little")
        yield f"word at {at} = {value}", _with_crc(data)


def test_the_readers_accept_the_same_files(seeds: list[Path], c_reader) -> None:
    rng = np.random.default_rng(0)
    accepted = refused = 0
    for seed_path in seeds:
        seed = seed_path.read_bytes()
        assert _python_reader(seed) is None and c_reader(seed) is None, seed_path
        for what, data in _mutants(seed, rng, VARIANTS_PER_SEED):
            py, c = _python_reader(data), c_reader(data)
            assert (py is None) == (c is None), f"{seed_path.name}, {what}: Python {py!r}, C {c!r}"
            accepted += py is None
            refused += py is not None
    # Both kinds of verdict occur: the mutations are neither all fatal nor all harmless.
    assert accepted > 50 and refused > 1000, (accepted, refused)


def test_a_multichannel_image_in_stored_order_is_refused_by_both(seeds: list[Path], c_reader) -> None:
    """A first layer reading a 3-channel image as an image (not flat) needs the HWC transpose:
    CHW ("stored order") is refused by the C reader, and by the Python reader and writer too."""
    models = [(s, decode_model(s.read_bytes())) for s in seeds]
    cnv = next(
        s
        for s, m in models
        if m.in_c == 3 and m.in_h * m.in_w > 1 and m.layers[0].in_shape == (m.in_h, m.in_w, 3)
    )
    data = bytearray(cnv.read_bytes())
    data[44:48] = int(InputOrder.CHW).to_bytes(4, "little")
    data = _with_crc(data)
    assert "input_order CHW" in (c_reader(data) or "")
    with pytest.raises(BnnflowError, match="CHW"):
        decode_model(data)
