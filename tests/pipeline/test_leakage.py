"""Exact copies within training and between training and test are found, named and warned about."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.leakage import duplicates_report, leakage_warning


def _file(path: Path, content: bytes) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_copies_are_counted_and_named(tmp_path: Path) -> None:
    a, ha = _file(tmp_path / "train" / "good" / "a.png", b"a")
    b, hb = _file(tmp_path / "train" / "good" / "b.png", b"b")
    c, hc = _file(tmp_path / "train" / "wet_patch" / "c.png", b"a")  # a, labelled anomalous too
    t1, _ = _file(tmp_path / "test" / "good" / "t1.png", b"b")  # b again
    t2, _ = _file(tmp_path / "test" / "good" / "t2.png", b"fresh")
    report = duplicates_report(tmp_path, [(a, "good", ha), (b, "good", hb), (c, "wet_patch", hc)], [t1, t2])
    assert report == {
        "within_training": 1,
        "training_and_test": 1,
        "examples": {
            "within_training": [["train/good/a.png", "train/wet_patch/c.png (good and wet_patch)"]],
            "training_and_test": [["train/good/b.png", "test/good/t1.png"]],
        },
    }
    warning = leakage_warning(report)
    assert warning is not None
    assert warning.startswith("1 test image(s) are exact copies of training images (test/good/t1.png = ")
    assert (
        "1 training image(s) appear twice (train/good/a.png = train/wet_patch/c.png (good and wet_patch)"
        in warning
    )


def test_no_copies_no_warning(tmp_path: Path) -> None:
    a, ha = _file(tmp_path / "train" / "good" / "a.png", b"a")
    t, _ = _file(tmp_path / "test" / "good" / "t.png", b"t")
    report = duplicates_report(tmp_path, [(a, "good", ha)], [t])
    assert (report["within_training"], report["training_and_test"]) == (0, 0)
    assert leakage_warning(report) is None and leakage_warning(None) is None
