"""CpuEngine's batch entry point and worker threads, on random model files (cpu/build/make-model).

The entry point (_entry.c) must give what the checked path gives for every
layout it takes or refuses, write into ``out`` without allocating, and the
engine's worker threads must start once per engine, not per call, and be
joined by ``close``. One engine shared by several Python threads gives every
thread its correct results. Speed is not asserted here (benchmarks/cpu_inference.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import make_cpu

from bnnflow.bnncpu import engine as engine_module
from bnnflow.bnncpu.engine import BNN_ERR_BUSY, CpuEngine, threads_started

ROOT = Path(__file__).resolve().parents[1]
CPU = ROOT / "cpu"
pytestmark = pytest.mark.xdist_group("cpu-make")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    make_cpu("build/make-model", timeout=900)
    folder = tmp_path_factory.mktemp("random-models")
    out = {}
    for net in ("tfc", "cnv"):
        out[net] = folder / f"{net}.bnn"
        subprocess.run(
            [str(CPU / "build" / "make-model"), net, str(out[net]), "--seed", "3"], check=True, timeout=120
        )
    return out


def _images(engine: CpuEngine, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *engine.input_shape), dtype=np.uint8)


def _reference(engine: CpuEngine, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image at a time through the checked path (a list of layouts the entry point refuses)."""
    classes, scores = zip(*(engine._checked(im, 1, None, 1, 0) for im in images), strict=True)
    return np.concatenate(classes), np.concatenate(scores)


def test_entry_point_matches_the_checked_path(models: dict[str, Path]) -> None:
    with CpuEngine(models["tfc"]) as engine:
        images = _images(engine, 40)
        want_c, want_s = _reference(engine, images)
        layouts = {
            "batch": images,
            "(N, H, W)": images[:, 0],
            "read-only": np.frombuffer(images.tobytes(), np.uint8).reshape(images.shape),
            "not contiguous": np.ascontiguousarray(images[:, :, :, ::-1])[:, :, :, ::-1],
            "Fortran order": np.asfortranarray(images),
        }
        for name, x in layouts.items():
            classes, scores = engine.run(x)
            assert classes.dtype == np.int32 and scores.shape == (40, engine.n_classes), name
            assert np.array_equal(classes, want_c) and np.array_equal(scores, want_s), name
            assert np.array_equal(engine.classify(x), want_c) and np.array_equal(engine.scores(x), want_s), (
                name
            )
        assert np.array_equal(engine.run(images[3])[1], want_s[3:4])  # one image, no batch axis
        assert np.array_equal(engine.classify(images[3, 0]), want_c[3:4])  # (H, W)
        big = np.repeat(images, 10, axis=0)  # scores() past its 256 classes on the stack
        assert np.array_equal(engine.scores(big), np.repeat(want_s, 10, axis=0))


def _peak_bytes(fn: object, images: np.ndarray, out: object) -> int:
    """Peak bytes above the start that tracemalloc sees over 500 calls (Python and numpy memory)."""
    calls = [None] * 500
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in calls:
            fn(images, out=out)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_out_writes_into_the_callers_arrays_and_allocates_nothing(models: dict[str, Path]) -> None:
    with CpuEngine(models["tfc"]) as engine:
        images = _images(engine, 8)
        want_c, want_s = engine.run(images)
        out = (np.full(8, -1, np.int32), np.full((8, engine.n_classes), -1, np.int32))
        assert engine.run(images, out=out) is out
        assert np.array_equal(out[0], want_c) and np.array_equal(out[1], want_s)
        classes = np.full(8, -1, np.int32)
        assert engine.classify(images, out=classes) is classes and np.array_equal(classes, want_c)
        one = images[:1].copy()
        pair = (np.empty(1, np.int32), np.empty((1, engine.n_classes), np.int32))
        engine.run(one, out=pair)

        def noop(images: np.ndarray, out: object = None) -> object:
            return out

        # The loop's own allocations (its iterator) are the baseline: run must add none.
        peaks = [_peak_bytes(noop, one, pair), _peak_bytes(engine.run, one, pair)]
        assert peaks[1] <= peaks[0], f"run(out=...) allocated {peaks[1] - peaks[0]} bytes at its peak"
        for bad, match in [
            ((out[0],), "tuple"),
            ((out[0], out[1][:3]), r"shape \(8, 10\)"),
            ((out[0].astype(np.int64), out[1]), "int32"),
            ((out[0], np.zeros((8, 20), np.int32)[:, ::2]), "contiguous"),
        ]:
            with pytest.raises((TypeError, ValueError), match=match):
                engine.run(images, out=bad)
        frozen = np.zeros(8, np.int32)
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            engine.classify(images, out=frozen)
        with pytest.raises(ValueError, match="takes no out"):
            engine._checked(images, 1, classes, 2, 0)


def _task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def test_threads_start_once_per_engine_and_are_joined_by_close(models: dict[str, Path]) -> None:
    """CNV images are long enough for the engine to split even a small batch."""
    with CpuEngine(models["cnv"]) as engine:
        images = _images(engine, 12)
        want_c, want_s = engine.run(images)
        tasks, started = _task_count(), threads_started()
        for threads in (0, 2, 3, 5):
            classes, scores = engine.run(images, threads=threads)
            assert np.array_equal(classes, want_c) and np.array_equal(scores, want_s), threads
        grown = threads_started()
        assert grown > started, "a 12-image CNV batch on several threads never split"
        assert _task_count() == tasks + grown - started
        for i in range(60):
            n = 1 + i % 12
            assert np.array_equal(engine.classify(images[:n], threads=2 + i % 4), want_c[:n])
        assert threads_started() == grown, "calls after the pool had grown started threads"
        assert _task_count() == tasks + grown - started
    assert _task_count() == tasks, "close() left worker threads running"


def test_split_results_on_every_kernel_set(models: dict[str, Path], tmp_path: Path) -> None:
    """Big batches split over threads give the one-thread results with each x86 kernel set."""
    code = (
        "import sys, numpy as np; from bnnflow.bnncpu.engine import CpuEngine, kernel_name, threads_started\n"
        "for path, n in ((sys.argv[1], 3000), (sys.argv[2], 16)):\n"
        "    e = CpuEngine(path)\n"
        "    x = np.random.default_rng(1).integers(0, 256, (n, *e.input_shape), dtype=np.uint8)\n"
        "    c1, s1 = e.run(x)\n"
        "    for t in (0, 2, 3):\n"
        "        c, s = e.run(x, threads=t); assert (c == c1).all() and (s == s1).all(), (path, t)\n"
        "print(kernel_name(), threads_started())\n"
    )
    seen = set()
    for disable in ("", "avx512", "avx512,avx2", "all"):
        env = dict(os.environ, BNNCPU_DISABLE=disable)
        cmd = [sys.executable, "-c", code, str(models["tfc"]), str(models["cnv"])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        kernels, started = proc.stdout.split()
        assert int(started) > 0, f"{kernels}: no batch was split"
        seen.add(kernels)
    assert "scalar" in seen and len(seen) >= 2


def test_one_engine_from_several_python_threads(models: dict[str, Path]) -> None:
    with CpuEngine(models["tfc"]) as engine:
        batches = [_images(engine, 300 + 50 * i, seed=i) for i in range(4)]
        wants = [engine.run(b) for b in batches]
        failures: list[str] = []

        def work(i: int) -> None:
            for k in range(40):
                classes, scores = engine.run(batches[i], threads=1 + k % 2)
                if not (np.array_equal(classes, wants[i][0]) and np.array_equal(scores, wants[i][1])):
                    failures.append(f"thread {i}, call {k}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:5]
        # The path a call takes when it finds the context busy: a second context, kept for reuse.
        n_contexts = len(engine._contexts)
        classes, scores = engine._checked(batches[0], 1, None, 1, BNN_ERR_BUSY)
        assert np.array_equal(classes, wants[0][0]) and np.array_equal(scores, wants[0][1])
        assert len(engine._contexts) in (n_contexts, n_contexts + 1) and engine._spares
    assert engine._contexts == [] and engine_module._entry is not None
