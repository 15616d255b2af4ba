"""Weights-only updates on the host: the memory layout behind the AXI-lite ports, the deployment
package of a --runtime-weights design, ``bnnflow package --weights-only``, and the simulated
board's accelerator taking written weights.

The board side (``bnnflow-board update-weights`` on the simulated board) is tested in
host_driver/tests/test_weight_update.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.cli import main
from bnnflow.deploy.package import build_package
from bnnflow.deploy.update import build_weights_update
from bnnflow.errors import BnnflowError
from bnnflow.finnlib.weight_memory import decode, encode, memory_layout

N_IMAGES = 100


def _finn_words(path: Path) -> np.ndarray:
    return np.array([int(w, 16) for w in path.read_text().split()], dtype=np.uint32)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _node(op: str, **attrs):  # type: ignore[no-untyped-def]
    """A one-node graph holding a FINN layer, its parameter initializer set by the caller."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper

    domain = "finn.custom_op.fpgadataflow." + ("hls" if op.endswith("_hls") else "rtl")
    node = helper.make_node(
        op, ["x", "p"], ["y"], domain=domain, backend="fpgadataflow", name=f"{op}_0", **attrs
    )
    io = [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 1]) for t in ("x", "y")]
    return ModelWrapper(helper.make_model(helper.make_graph([node], "g", io[:1], io[1:])))


def _finns_file_and_layout(model, values: np.ndarray, dt, tmp_path: Path) -> tuple[np.ndarray, object]:
    """FINN's runtime weight file for the one-node ``model`` carrying ``values``, and bnnflow's layout."""
    from qonnx.custom_op.registry import getCustomOp

    model.set_initializer("p", values)
    model.set_tensor_datatype("p", dt)
    node = model.graph.node[0]
    getCustomOp(node).make_weight_file(values, "decoupled_runtime", str(tmp_path / "p.dat"))
    return _finn_words(tmp_path / "p.dat"), memory_layout(node)


@pytest.mark.parametrize(
    "mw, mh, pe, simd, wdt",
    [
        (64, 32, 4, 16, "BINARY"),  # 64-bit entries: two words each
        (96, 8, 4, 24, "BINARY"),  # 96-bit entries: three words in a four-word slot
        (48, 12, 3, 8, "BINARY"),
        (16, 8, 2, 4, "INT4"),
        (8, 4, 4, 8, "BIPOLAR"),
    ],
)
def test_weight_memory_layout_is_finns(
    mw: int, mh: int, pe: int, simd: int, wdt: str, tmp_path: Path
) -> None:
    """The layout written from FINN's RTL gives the words FINN's own runtime weight file holds."""
    from qonnx.core.datatype import DataType

    from bnnflow.finnlib.finn_env import prepare_finn

    prepare_finn()
    xnor = int(wdt == "BINARY")
    model = _node("MVAU_hls", MW=mw, MH=mh, PE=pe, SIMD=simd, weightDataType=wdt, inputDataType="BINARY",
                  outputDataType="INT32", accDataType="INT32", noActivation=1, binaryXnorMode=xnor,
                  mem_mode="internal_decoupled", runtime_writeable_weights=1,
                  numInputVectors=[1])  # fmt: skip
    dt = DataType[wdt]
    rng = np.random.default_rng(mw * mh + pe)
    w = rng.integers(int(dt.min()), int(dt.max()) + 1, size=(mw, mh)).astype(np.float32)
    if wdt == "BIPOLAR":
        w = np.where(w > 0, 1.0, -1.0).astype(np.float32)
    finn, layout = _finns_file_and_layout(model, w, dt, tmp_path)
    assert layout.words == len(finn) and layout.fold == (pe * simd * dt.bitwidth() + 31) // 32
    assert np.array_equal(encode(layout, w), finn)
    assert np.array_equal(decode(layout, finn), w)


@pytest.mark.parametrize(
    "channels, steps, pe, tdt",
    [(16, 1, 4, "INT8"), (12, 3, 3, "INT8"), (8, 3, 2, "UINT5"), (6, 1, 2, "INT12"), (64, 1, 1, "UINT9")],
)
def test_threshold_memory_layout_is_finns(
    channels: int, steps: int, pe: int, tdt: str, tmp_path: Path
) -> None:
    from qonnx.core.datatype import DataType

    from bnnflow.finnlib.finn_env import prepare_finn

    prepare_finn()
    model = _node("Thresholding_rtl", NumChannels=channels, PE=pe, numSteps=steps, inputDataType="INT16",
                  weightDataType=tdt, outputDataType="UINT2" if steps == 3 else "BINARY", ActVal=0,
                  runtime_writeable_weights=1, numInputVectors=[1])  # fmt: skip
    dt = DataType[tdt]
    rng = np.random.default_rng(channels * steps + pe)
    t = np.sort(rng.integers(int(dt.min()), int(dt.max()) + 1, size=(channels, steps)), axis=1).astype(
        np.float32
    )
    finn, layout = _finns_file_and_layout(model, t, dt, tmp_path)
    # FINN's file stops after the last real channel; the address space spans whole powers of two
    assert len(finn) <= layout.words
    assert np.array_equal(encode(layout, t)[: len(finn)], finn)
    assert np.array_equal(decode(layout, np.pad(finn, (0, layout.words - len(finn)))), t)


@pytest.fixture(scope="module")
def deployed(rtw_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The --runtime-weights design's deployment package and the retrained checkpoint's update for it."""
    root = tmp_path_factory.mktemp("update")
    pkg = build_package(rtw_runs["compiled"], root / "deploy", n_images=N_IMAGES, log=None)
    update = build_weights_update(rtw_runs["later"], pkg, n_verify=10, log=None)
    return {**rtw_runs, "deploy": pkg, "update": update}


def test_runtime_weights_package_carries_finns_files(deployed: dict[str, Path], tmp_path: Path) -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.finnlib.boards import get_board
    from bnnflow.hls.runtime_weights import finn_weight_files, structure_fingerprint

    pkg, compiled = deployed["deploy"], deployed["compiled"]
    m = json.loads((pkg / "manifest.json").read_text())
    settings = json.loads((pkg / "driver" / "settings.json").read_text())
    assert settings["driver_information"]["runtime_weights"] is True
    design = ModelWrapper(str(compiled / "model_hw.onnx"))
    assert m["design"]["fingerprint"] == structure_fingerprint(design)
    finn = finn_weight_files(design, get_board("Pynq-Z2"), tmp_path / "finn")
    layers = m["runtime_weights"]["layers"]
    assert m["runtime_weights"]["dir"] == "driver/runtime_weights"
    assert [la["node"] for la in layers] == list(finn)
    for la in layers:
        path = pkg / "driver" / "runtime_weights" / la["file"]
        assert path.read_bytes() == finn[la["node"]].read_bytes()
        assert m["files"][f"driver/runtime_weights/{la['file']}"] == _sha(path)
        assert la["words"] == len(_finn_words(path)) <= la["layout"]["words"]
    # every writable layer heads a partition with an AXI-lite port spanning its memory
    by_node = {i["writable"]: i for i in m["instances"] if i["writable"]}
    assert sorted(by_node) == sorted(finn)
    for la in layers:
        inst = by_node[la["node"]]
        assert la["file"].startswith(inst["name"].rsplit("_", 1)[1] + "_0_")
        assert (
            inst["axilite"] and inst["axilite_bytes"] == la["layout"]["aperture"] >= 4 * la["layout"]["words"]
        )


def test_weights_only_update_package(deployed: dict[str, Path]) -> None:
    """Files, checksums, words changed; golden outputs equal FINN running the design with the files."""
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.cpu import read_model
    from bnnflow.finnlib.execution import execute, integer_tensors
    from bnnflow.finnlib.hwgraph import writable_nodes
    from bnnflow.hls.runtime_weights import SUMMARY_FILE, structure_fingerprint

    pkg, upd = deployed["deploy"], deployed["update"]
    assert upd == pkg.parent / "weights-later"
    m = json.loads((upd / "manifest.json").read_text())
    deploy = json.loads((pkg / "manifest.json").read_text())
    assert m["format"] == "bnnflow-weights" and m["board"] == "Pynq-Z2"
    assert sorted(p.relative_to(upd).as_posix() for p in upd.rglob("*") if p.is_file()) == sorted(
        [*m["files"], "manifest.json"]
    )
    assert all(_sha(upd / rel) == digest for rel, digest in m["files"].items())
    design = ModelWrapper(str(deployed["compiled"] / "model_hw.onnx"))
    assert m["design"]["fingerprint"] == deploy["design"]["fingerprint"] == structure_fingerprint(design)
    assert m["testset"]["images_sha256"] == deploy["files"]["testset/images.u8"]
    summary = json.loads((upd / "runtime_weights" / SUMMARY_FILE).read_text())
    rw = m["runtime_weights"]
    assert [(la["file"], la["words"]) for la in rw["layers"]] == [
        (la["file"], la["words"]) for la in deploy["runtime_weights"]["layers"]
    ]
    assert [la["changed_words"] for la in rw["layers"]] == [la["changed_words"] for la in summary["layers"]]
    assert rw["changed_words"] == summary["changed_words"] > 0
    kinds = {la["kind"] for la in rw["layers"] if la["changed_words"]}
    assert kinds == {"weights", "thresholds"}

    # the update's files decoded from the hardware's layout, into the compiled design, run by FINN
    for node in writable_nodes(design):
        la = next(x for x in rw["layers"] if x["node"] == node.name)
        layout = memory_layout(node)
        words = _finn_words(upd / "runtime_weights" / la["file"])
        before = design.get_initializer(node.input[1])
        old_words = encode(layout, before)
        values = decode(layout, np.concatenate([words, old_words[len(words) :]]))
        if before.shape[0] == 1:
            assert np.all(values == values[:1])
            values = values[:1]
        assert int(np.sum(values != before)) == la["changed_values"]
        design.set_initializer(node.input[1], values)
    for node in design.graph.node:  # FINN's Python references of the specialised layers
        if node.op_type.endswith(("_hls", "_rtl")):
            node.op_type = node.op_type.rsplit("_", 1)[0]
            node.domain = "finn.custom_op.fpgadataflow"
    images = np.fromfile(pkg / "testset" / "images.u8", dtype=np.uint8).reshape(N_IMAGES, 1, 8, 8)
    classes = np.fromfile(upd / "testset" / "golden_classes.i32", dtype="<i4")
    scores = np.fromfile(upd / "testset" / "golden_scores.i32", dtype="<i4").reshape(N_IMAGES, 10)
    ints = integer_tensors(design)
    select = next(n for n in design.graph.node if n.op_type == "LabelSelect")
    for i in range(N_IMAGES):
        ctx, _ = execute(design, images[i : i + 1].astype(np.float32), ints)
        assert np.array_equal(np.ravel(ctx[select.input[0]]), scores[i]), i
        assert int(np.ravel(ctx[select.output[0]])[0]) == classes[i], i
    old = np.fromfile(pkg / "testset" / "golden_classes.i32", dtype="<i4")
    assert m["testset"]["classes_changed"] == int(np.sum(classes != old)) > 0
    # the engine's model file of the new values: valid, and not the package's
    read_model(upd / "model.bnn")
    assert (upd / "model.bnn").read_bytes() != (pkg / "model.bnn").read_bytes()


def test_weights_only_refusals(
    deployed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnnflow.models import build_model
    from bnnflow.runs import save_checkpoint

    pkg, later = deployed["deploy"], deployed["later"]

    def fails(*args: str) -> str:
        assert main(["package", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        # progress lines may come first; the error is one line, the last
        assert [line for line in err if "error" in line] == err[-1:], err
        return err[-1]

    out = tmp_path / "out"
    assert fails("--weights-only", str(later), "--out", str(out)).endswith(
        "needs both --weights-only CHECKPOINT_OR_RUN and --design DIR"
    )
    assert "not as a positional folder" in fails(str(pkg), "--weights-only", str(later), "--design", str(pkg))
    tfc = tmp_path / "tfc" / "best.pt"
    save_checkpoint(tfc, {"model": "tfc", "model_state": build_model("tfc").state_dict()})
    assert fails("--weights-only", str(tfc), "--design", str(pkg), "--out", str(out)).startswith(
        "bnnflow: error: weights from another architecture: the checkpoint is a tfc, "
    )
    assert "checkpoint not found" in fails("--weights-only", str(tmp_path / "no.pt"), "--design", str(pkg))

    # a design compiled without --runtime-weights, as a compile folder and as a package
    plain = tmp_path / "plain"
    shutil.copytree(deployed["compiled"], plain)
    info = json.loads((plain / "compile.json").read_text())
    (plain / "compile.json").write_text(json.dumps({**info, "runtime_weights": False}))
    assert "compiled without --runtime-weights" in fails("--weights-only", str(later), "--design", str(plain))
    old_pkg = tmp_path / "old-pkg"
    shutil.copytree(pkg, old_pkg)
    manifest = json.loads((old_pkg / "manifest.json").read_text())
    (old_pkg / "manifest.json").write_text(json.dumps({**manifest, "runtime_weights": None}))
    assert "holds no runtime weight files" in fails("--weights-only", str(later), "--design", str(old_pkg))
    # a package whose compile folder was compiled again since (another structure)
    (old_pkg / "manifest.json").write_text(json.dumps({**manifest, "design": {"fingerprint": "0" * 64}}))
    assert "compiled again since" in fails("--weights-only", str(later), "--design", str(old_pkg))
    # missing and changed files of the package
    (old_pkg / "manifest.json").write_text(json.dumps(manifest))
    (old_pkg / "testset" / "labels.u8").unlink()
    assert fails("--weights-only", str(later), "--design", str(old_pkg)).endswith(
        "testset/labels.u8 is missing"
    )
    images = old_pkg / "testset" / "images.u8"
    images.write_bytes(bytes([images.read_bytes()[0] ^ 1]) + images.read_bytes()[1:])
    assert "images.u8 does not match its sha256" in fails(
        "--weights-only", str(later), "--design", str(old_pkg)
    )
    # --out: never the package itself, never a folder holding something else
    assert "refusing to replace" in fails(
        "--weights-only", str(later), "--design", str(pkg), "--out", str(pkg)
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "refusing to replace" in fails(
        "--weights-only", str(later), "--design", str(pkg), "--out", str(other)
    )
    assert (other / "notes.txt").read_text() == "mine" and not out.exists()
    assert not (tmp_path / "weights-later").exists()


def test_simulated_accelerator_runs_written_weights(deployed: dict[str, Path]) -> None:
    """The simulated board's FINN process: memory words in, FINN's execution with those values out."""
    from bnnflow.deploy.simulated_accelerator import Accelerator
    from bnnflow.finnlib.hwgraph import writable_nodes
    from bnnflow.finnlib.weight_memory import MIN_APERTURE

    pkg, upd = deployed["deploy"], deployed["update"]
    m = json.loads((upd / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as cache:
        acc = Accelerator(deployed["compiled"], "Pynq-Z2", "python", Path(cache))
        images = np.fromfile(pkg / "testset" / "images.u8", dtype=np.uint8).reshape(N_IMAGES, 1, 8, 8)
        frames = images[:, None].astype(np.int64)
        old = np.fromfile(pkg / "testset" / "golden_classes.i32", dtype="<i4")
        new = np.fromfile(upd / "testset" / "golden_classes.i32", dtype="<i4")
        assert np.array_equal(acc.run(frames)[:, 0], old)  # the bitstream's values
        items = []
        for la in m["runtime_weights"]["layers"]:
            instance = f"StreamingDataflowPartition_{la['file'].split('_')[0]}"
            layout, init = acc.memories[instance]
            assert layout.node == la["node"] and layout.aperture >= MIN_APERTURE
            words = init.copy()
            written = _finn_words(upd / "runtime_weights" / la["file"])
            words[: len(written)] = written
            items.append((instance, words))
        changes = acc.write_parameters(items)
        assert [c["changed_values"] for c in changes] == [
            la["changed_values"] for la in m["runtime_weights"]["layers"]
        ]
        assert np.array_equal(acc.run(frames)[:, 0], new)
        # back to the bitstream's values
        acc.write_parameters([(name, init) for name, (_, init) in acc.memories.items()])
        assert np.array_equal(acc.run(frames)[:, 0], old)
        with pytest.raises(BnnflowError, match="StreamingDataflowPartition_1 has no runtime-writable memory"):
            acc.write_parameters([("StreamingDataflowPartition_1", init)])
        # C simulation executes model_hw.onnx, whose layers carry the design's names (not compiled here)
        from qonnx.core.modelwrapper import ModelWrapper

        acc.mode, acc.model = "cppsim", ModelWrapper(str(deployed["compiled"] / "model_hw.onnx"))
        acc._map_parameters()
        assert acc._targets == {n.name: n.input[1] for n in writable_nodes(acc.model)}
