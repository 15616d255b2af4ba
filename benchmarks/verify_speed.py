"""Images/s of the compile stage's verification chain on a compiled design.

    python benchmarks/verify_speed.py runs/cnv/compile/Pynq-Z2 --n 100 --workers 1
    python benchmarks/verify_speed.py runs/cnv/compile/Pynq-Z2 --n 10 --before

``--before`` runs the image-by-image implementation this replaced (read with
``git show b7dd232:src/bnnflow/hls/verify.py``) on the same graphs and images.
The dataset follows from the model's input shape (``--data-dir`` as for
``bnnflow compile``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BEFORE = "b7dd232"


def _old_verify_chain() -> Any:
    src = subprocess.run(
        ["git", "show", f"{BEFORE}:src/bnnflow/hls/verify.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "verify_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("verify_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["verify_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.verify_chain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compiled", help="compile folder (runs/<name>/compile/<board>)")
    p.add_argument("--n", type=int, default=100, help="test images")
    p.add_argument("--workers", type=int, default=None, help="verification processes (default: automatic)")
    p.add_argument("--before", action="store_true", help="time the previous image-by-image implementation")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    from bnnflow.finnlib.finn_env import prepare_finn

    prepare_finn()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from bnnflow.data import recorded_test_images
    from bnnflow.hls.verify import verify_chain

    inter = Path(args.compiled) / "intermediate_models"
    q = cleanup_model(ModelWrapper(str(inter / "input_qonnx.onnx")))
    shape = tuple(int(d) for d in q.get_tensor_shape(q.graph.input[0].name)[1:])
    images, labels, identity = recorded_test_images(args.compiled, shape, args.n, args.data_dir)
    dataset = identity.name
    streamlined = ModelWrapper(str(inter / "step_streamline.onnx"))
    graphs = (q, streamlined, ModelWrapper(str(inter / "step_convert_to_hw.onnx")))
    t0 = time.perf_counter()
    if args.before:
        result = _old_verify_chain()(*graphs, images, labels)
        how = f"before ({BEFORE}), image by image"
    else:
        result = verify_chain(*graphs, images, labels, workers=args.workers)
        how = f"{result.workers} process(es), batched: {', '.join(result.batched) or 'none'}"
    wall = time.perf_counter() - t0
    print(
        f"{dataset}: {result.n_images} images in {result.seconds:.1f} s ({wall:.1f} s wall), "
        f"{result.images_per_s:.2f} images/s, {how}; labels identical {result.labels_match}, "
        f"accumulators identical {result.accumulators_match}, first mismatch: {result.first_mismatch}"
    )


if __name__ == "__main__":
    main()
