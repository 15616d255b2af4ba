"""How a disagreement with the golden outputs is described (bnnflow_board.agreement)."""

from __future__ import annotations

import numpy as np

from bnnflow_board.agreement import first_mismatch


def _text(names: list[str] | None) -> str:
    golden = np.array([0, 1, 2, 3])
    got = np.array([0, 1, 2, 1])
    found = first_mismatch(golden, got, np.array([0, 1, 2, 3]), "the FPGA", names=names)
    assert found is not None and (found["image"], found["count"]) == (3, 1)
    return found["text"]


def test_a_class_is_named_where_the_dataset_names_it() -> None:
    text = _text(["plane", "car", "bird", "cat"])
    assert text == "image 3 (label 3 (cat)): the FPGA says class 1 (car), golden 3 (cat)"


def test_a_name_that_repeats_the_number_is_left_out() -> None:
    assert _text(["0", "1", "2", "3"]) == "image 3 (label 3): the FPGA says class 1, golden 3"
    assert _text(None) == "image 3 (label 3): the FPGA says class 1, golden 3"
