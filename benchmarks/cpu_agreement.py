"""FINN's classes and scores on a whole test set, stored for the CPU engine to be compared with.

    python benchmarks/cpu_agreement.py runs/tfc/compile/Pynq-Z2 --data-dir ../shared/data --workers 2
    python benchmarks/cpu_agreement.py runs/cnv/compile/Pynq-Z2 --data-dir data --workers 2 --oracle

Runs FINN's Python execution of the compile folder's hardware-layer graph
(``intermediate_models/step_convert_to_hw.onnx``, what the compile stage
verifies) on the test split of the dataset the model's input shape names
(``--limit N``: bnnflow.data's seeded, class-stratified N, as the compile's
verification takes them), in ``--workers`` processes, and writes
``--out`` (default ``<compile dir>/finn_reference.npz``):

    classes  int32 (N,)             FINN's class per image
    scores   int32 (N, n_classes)   the LabelSelect's input: the last MVAU's accumulators
    labels   int64 (N,)             the dataset's labels
    dataset, split, model_bnn_sha256 (of the compile folder's model.bnn, if any)
    limit    the --limit it was made with (-1: all)

The images are bnnflow.data's test split in its order (or the --limit
subset), so any engine can be compared image by image; the oracle and the
engine are fed the same images, checked by their labels. ``--oracle`` also runs tests/cpu_reference.py (the
numpy interpreter of the model file) and counts the images where its classes
or scores differ; ``--reuse`` takes FINN's results from an existing ``--out``
instead of running FINN again. ``--engine`` runs the C engine's command-line
tool (cpu/build/bnnflow-cpu, built with ``make -C cpu``) on the same images
once per kernel set this CPU has (chosen with BNNCPU_DISABLE: avx512, avx2,
popcnt, scalar) and counts, for each, the images whose class or scores differ
from FINN's. Prints one Markdown table row per run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _oracle() -> Any:
    spec = importlib.util.spec_from_file_location("cpu_reference", ROOT / "tests" / "cpu_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cpu_reference"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_test_split(
    compile_dir: Path, data_dir: str | None, limit: int | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """The test images (uint8 N,C,H,W) and labels of the dataset the compiled run recorded."""
    from bnnflow.bnncpu.writer import PARENT_GRAPH
    from bnnflow.data import recorded_test_images
    from bnnflow.finnlib.finn_env import prepare_finn

    prepare_finn()
    from qonnx.core.modelwrapper import ModelWrapper

    parent = ModelWrapper(str(compile_dir / PARENT_GRAPH))
    shape = tuple(int(d) for d in parent.get_tensor_shape(parent.graph.input[0].name)[1:])
    images, labels, identity = recorded_test_images(compile_dir, shape, limit, data_dir)
    return np.asarray(images), np.asarray(labels), identity.name


# BNNCPU_DISABLE settings that leave each x86 kernel set, best first; on other CPUs
# the engine reports what it chose and repeated choices are skipped.
KERNEL_SETTINGS = ("", "avx512", "avx512,avx2", "all")


def engine_differences(
    bnn: Path, images: np.ndarray, classes: np.ndarray, scores: np.ndarray
) -> dict[str, str]:
    """Per kernel set: 'classes differ / scores differ' of the C engine against FINN."""
    cli = ROOT / "cpu" / "build" / "bnnflow-cpu"
    subprocess.run(["make", "-s", "-C", str(ROOT / "cpu"), "all"], check=True, timeout=900)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "images.u8"
        raw.write_bytes(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
        for disable in KERNEL_SETTINGS:
            env = dict(os.environ, BNNCPU_DISABLE=disable)
            kernels = subprocess.run(
                [str(cli), "info", str(bnn)], capture_output=True, text=True, env=env, check=True
            ).stdout
            name = next(line.split()[1] for line in kernels.splitlines() if line.startswith("kernels"))
            if name in out:
                continue
            c_out, s_out = Path(tmp) / "classes.i32", Path(tmp) / "scores.i32"
            cmd = [str(cli), "run", str(bnn), str(raw), "--quiet", "--threads", "0"]
            cmd += ["--classes-out", str(c_out), "--scores-out", str(s_out)]
            subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=1800)
            got_c = np.fromfile(c_out, dtype="<i4")
            got_s = np.fromfile(s_out, dtype="<i4").reshape(len(got_c), -1)
            out[name] = f"{int((got_c != classes).sum())} / {int((got_s != scores).any(axis=1).sum())}"
    return out


def finn_reference_npz(
    compile_dir: str | Path,
    out: str | Path | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    workers: int = 2,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Run FINN on the test split and write the npz; returns its path and contents."""
    from bnnflow.bnncpu.writer import MODEL_FILE
    from bnnflow.cpu.finn_reference import finn_outputs
    from bnnflow.runs import atomic_write_bytes

    compile_dir = Path(compile_dir)
    out = Path(out) if out is not None else compile_dir / "finn_reference.npz"
    images, labels, dataset = load_test_split(compile_dir, data_dir, limit)

    def report(done: int, total: int) -> None:
        if progress:
            print(
                f"\r  FINN: {done:,}/{total:,} images",
                end="" if done < total else "\n",
                file=sys.stderr,
                flush=True,
            )

    result = finn_outputs(compile_dir, images, workers=workers, progress=report)
    bnn = compile_dir / MODEL_FILE
    data = {
        "classes": result.classes.astype(np.int32),
        "scores": result.scores.astype(np.int32),
        "labels": labels.astype(np.int64),
        "dataset": np.array(dataset),
        "split": np.array("test"),
        "model_bnn_sha256": np.array(hashlib.sha256(bnn.read_bytes()).hexdigest() if bnn.is_file() else ""),
        "limit": np.array(-1 if limit is None else int(limit)),  # which images: see load_test_split
        "seconds": np.array(result.seconds),
        "workers": np.array(result.workers),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **data)
    atomic_write_bytes(out, buffer.getvalue())
    return out, data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compiled", help="compile folder (runs/<name>/compile/<board>)")
    p.add_argument("--data-dir", default=None, help="dataset folder, as for bnnflow compile")
    p.add_argument(
        "--limit", type=int, default=None, help="N test images, seeded and class-stratified (default: all)"
    )
    p.add_argument("--workers", type=int, default=2, help="FINN processes")
    p.add_argument("--out", default=None, help="npz to write (default <compiled>/finn_reference.npz)")
    p.add_argument("--reuse", action="store_true", help="take FINN's results from an existing --out")
    p.add_argument("--oracle", action="store_true", help="compare tests/cpu_reference.py with FINN")
    p.add_argument("--engine", action="store_true", help="compare the C engine, every kernel set, with FINN")
    args = p.parse_args()

    from bnnflow.bnncpu.writer import MODEL_FILE, export_cpu_model

    compile_dir = Path(args.compiled)
    out = Path(args.out) if args.out else compile_dir / "finn_reference.npz"
    if args.reuse and out.is_file():
        with np.load(out) as f:
            data = {k: f[k] for k in f.files}
        stored = int(data.get("limit", -1))
        if stored != (-1 if args.limit is None else args.limit):
            # --limit N takes a seeded, class-stratified subset (bnnflow.data.test_subset), not the
            # first N images: another N is another set of images.
            sys.exit(f"cpu_agreement: {out} holds FINN's results for --limit {stored}, not {args.limit}")
    else:
        out, data = finn_reference_npz(compile_dir, out, args.data_dir, args.limit, args.workers)
    n = len(data["classes"])
    seconds, workers = float(data["seconds"]), int(data["workers"])
    row = [
        str(compile_dir),
        f"{n:,}",
        str(workers),
        f"{seconds:.1f}",
        f"{n / seconds:.1f}",
        f"{10_000 * seconds / n / 60:.1f} min",
        f"{(data['classes'] == data['labels']).mean():.2%}",
    ]
    head = ["compile folder", "images", "FINN workers", "FINN s", "images/s", "10,000 images", "accuracy"]
    bnn = compile_dir / MODEL_FILE
    if (args.oracle or args.engine) and not bnn.is_file():  # compiled before compile wrote it
        bnn = export_cpu_model(compile_dir, Path(tempfile.mkdtemp()) / MODEL_FILE)
    if args.oracle or args.engine:
        images, labels, _ = load_test_split(compile_dir, args.data_dir, args.limit)
        if not np.array_equal(labels, data["labels"]):  # the same images, in the same order
            sys.exit("cpu_agreement: the test images are not the ones FINN's results were made from")
    if args.oracle:
        ref = _oracle()
        t0 = time.perf_counter()
        classes, scores = ref.run(ref.load(bnn), images)
        oracle_s = time.perf_counter() - t0
        class_diff = int((classes != data["classes"]).sum())
        score_diff = int((scores != data["scores"]).any(axis=1).sum())
        head += ["oracle s", "classes differ", "scores differ"]
        row += [f"{oracle_s:.1f}", str(class_diff), str(score_diff)]
    if args.engine:
        for name, diff in engine_differences(bnn, images, data["classes"], data["scores"]).items():
            head.append(f"engine {name}: classes / scores differ")
            row.append(diff)
    print(f"FINN's classes and scores: {out}")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
