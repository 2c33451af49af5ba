"""Exact copies and near-copies within training and between training and test are found, named and
warned about."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from datasets.decode import DecodeLimits
from pipeline import leakage
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
        "near_within_training": 0,  # bytes that are no picture have no perceptual hash
        "near_training_and_test": 0,
        "near_copy_bits": 32,
        "too_large_for_near_copies": 0,
        "not_regular_files": 0,
        "examples": {
            "within_training": [["train/good/a.png", "train/wet_patch/c.png (good and wet_patch)"]],
            "training_and_test": [["train/good/b.png", "test/good/t1.png"]],
            "near_within_training": [],
            "near_training_and_test": [],
            "too_large_for_near_copies": [],
            "not_regular_files": [],
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


def _picture(seed: int) -> np.ndarray:
    """A 64 x 64 colour picture with a layout (smoothed noise): different seeds, different pictures."""
    noise = np.random.default_rng(seed).normal(size=(64, 64, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2)  # smoother, a JPEG's fine hash strays further
    return cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _png(path: Path, pixels: np.ndarray, level: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_PNG_COMPRESSION, level])
    return path


def _jpeg(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


Maker = Callable[[Path, np.ndarray], Path]


@pytest.mark.parametrize(
    ("make", "counts", "example"),
    [
        (lambda p, px: _png(p, px), (1, 0), ["train/good/000.png", "test/good/t.png"]),
        (lambda p, px: _png(p, px, 9), (0, 1), ["train/good/000.png", "test/good/t.png (0 of 256 bits)"]),
        (
            lambda p, px: _jpeg(p.with_suffix(".jpg"), px),
            (0, 1),
            ["train/good/000.png", "test/good/t.jpg (N of 256 bits)"],  # N: the codec's, a few
        ),
        (lambda p, px: _png(p, _picture(99)), (0, 0), None),
    ],
    ids=["byte_copy", "png_saved_again", "jpeg_q95", "another_picture"],
)
def test_a_test_image_is_an_exact_copy_or_a_near_copy_of_a_training_one(
    make: Maker, counts: tuple[int, int], example: list[str] | None, tmp_path: Path
) -> None:
    training = [_png(tmp_path / "train" / "good" / f"{n:03d}.png", _picture(n)) for n in range(4)]
    test = make(tmp_path / "test" / "good" / "t.png", _picture(0))  # of training image 000
    report = duplicates_report(tmp_path, [(p, "good", _sha(p)) for p in training], [test])
    assert (report["training_and_test"], report["near_training_and_test"]) == counts
    assert (report["within_training"], report["near_within_training"]) == (0, 0)
    kind = "training_and_test" if counts[0] else "near_training_and_test"
    if example and "(N of" in example[1]:
        bits = int(report["examples"][kind][0][1].split("(")[1].split()[0])
        assert 0 < bits <= 16
        example = [example[0], example[1].replace("(N of", f"({bits} of")]
    assert report["examples"][kind] == ([example] if example else [])
    warning = leakage_warning(report)
    if counts == (0, 1):
        assert warning == (
            f"1 test image(s) are near-copies of training images, the same picture saved again "
            f"({example[1]} ~ {example[0]}, for one): the test figures on them are optimistic"
        )
    assert (warning is None) == (example is None)


def test_a_near_copy_within_training_is_named_with_both_classes(tmp_path: Path) -> None:
    a = _png(tmp_path / "train" / "good" / "a.png", _picture(1))
    b = _png(tmp_path / "train" / "good" / "b.png", _picture(2))
    c = _jpeg(tmp_path / "train" / "wet_patch" / "c.jpg", _picture(1))
    training = [(p, p.parent.name, _sha(p)) for p in (a, b, c)]
    report = duplicates_report(tmp_path, training, [])
    assert (report["within_training"], report["near_within_training"]) == (0, 1)
    [[first, second]] = report["examples"]["near_within_training"]
    assert first == "train/good/a.png"
    assert second.startswith("train/wet_patch/c.jpg (") and second.endswith(
        " of 256 bits; good and wet_patch)"
    )
    assert "1 training image(s) are near-copies of another" in (leakage_warning(report) or "")


def test_near_copies_are_found_alike_in_any_chunk_and_from_the_callers_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    training = [_png(tmp_path / "train" / "good" / f"{n:03d}.png", _picture(n % 5)) for n in range(9)]
    test = [_jpeg(tmp_path / "test" / "good" / f"{n:03d}.jpg", _picture(n)) for n in range(3, 8)]
    items = [(p, "good", _sha(p)) for p in training]
    whole = duplicates_report(tmp_path, items, test)
    # 000-004 are five pictures, 005-008 the first four again (byte copies: exact); of the tests,
    # saved as JPEG, those of pictures 3 and 4 are near-copies, 5 to 7 are pictures not in training
    assert [whole[k] for k in ("within_training", "near_within_training", "near_training_and_test")] == [
        4,
        0,
        2,
    ]
    monkeypatch.setattr(leakage, "_PAIRS_PER_CHUNK", 3)  # a chunk of one query against the keys
    phashes = [leakage.picture_hashes(p)[1] for p in training]  # type: ignore[index]
    assert duplicates_report(tmp_path, items, test, phashes=phashes) == whole


@pytest.mark.parametrize(
    ("test_picture", "training_and_test", "near_training_and_test"),
    [(0, 1, 0), (99, 0, 0)],
    ids=["byte_copy_of_a_training_image", "another_picture"],
)
def test_a_test_file_over_the_byte_limit_is_hashed_in_chunks_not_read_whole(
    test_picture: int,
    training_and_test: int,
    near_training_and_test: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # stored uncompressed: the test file saved alike is a byte copy, and larger than one compressed
    training = [_png(tmp_path / "train" / "good" / f"{n:03d}.png", _picture(n), 0) for n in range(3)]
    big = _png(tmp_path / "test" / "good" / "big.png", _picture(test_picture), 0)
    small = _png(tmp_path / "test" / "good" / "small.png", _picture(1), 9)  # near-copy of 001
    phashes = [leakage.picture_hashes(p).phash for p in training]  # type: ignore[union-attr]
    limit = big.stat().st_size - 1  # the training images' own size: training decoded them itself
    assert small.stat().st_size <= limit
    monkeypatch.setattr(leakage, "_LIMITS", DecodeLimits(max_bytes=limit))
    decoded: list[str] = []
    decode_image = leakage.decode_image

    def spy(data: bytes, **kwargs: Any) -> Any:
        decoded.append(Path(kwargs["name"]).name)
        assert len(data) <= limit
        return decode_image(data, **kwargs)

    monkeypatch.setattr(leakage, "decode_image", spy)

    report = duplicates_report(
        tmp_path, [(p, "good", _sha(p)) for p in training], [big, small], phashes=phashes
    )
    assert decoded == ["small.png"]
    assert (report["training_and_test"], report["near_training_and_test"]) == (
        training_and_test,
        near_training_and_test + 1,
    )
    assert report["too_large_for_near_copies"] == 1
    assert report["examples"]["too_large_for_near_copies"] == ["test/good/big.png"]
    assert leakage.picture_hashes(big) == leakage.PictureHashes(_sha(big), None, too_large=True)
    warning = leakage_warning(report) or ""
    assert warning.endswith(
        f"1 image(s) are over the decoder's {limit / 2**20:g} MiB limit (test/good/big.png, for one): "
        "checked for exact copies only, not for near-copies"
    )


def test_a_training_file_over_the_byte_limit_is_named_when_hashed_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _png(tmp_path / "train" / "good" / "a.png", _picture(1))
    big = _png(tmp_path / "train" / "good" / "b.png", _picture(2), level=0)
    monkeypatch.setattr(leakage, "_LIMITS", DecodeLimits(max_bytes=big.stat().st_size - 1))
    report = duplicates_report(tmp_path, [(p, "good", _sha(p)) for p in (small, big)], [])
    assert report["too_large_for_near_copies"] == 1
    assert report["examples"]["too_large_for_near_copies"] == ["train/good/b.png"]


def test_a_test_file_over_the_decoders_own_limit_is_never_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "test" / "good" / "big.png"
    big.parent.mkdir(parents=True)
    with big.open("wb") as fp:
        fp.truncate(DecodeLimits().max_bytes + 1)  # sparse: no disk spent on it
    tracemalloc.start()
    try:
        report = duplicates_report(tmp_path, [], [big])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak} bytes held: read whole before the decoder refuses it"
    assert report["too_large_for_near_copies"] == 1
    assert report["examples"]["too_large_for_near_copies"] == ["test/good/big.png"]
    assert "over the decoder's 64 MiB limit (test/good/big.png, for one)" in (leakage_warning(report) or "")


def _special(folder: Path, kind: str) -> Path:
    """A path in ``folder`` that is no regular file: a FIFO, or a link to the device ``/dev/<kind>``."""
    path = folder / f"{kind}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(f"/dev/{kind}")
    return path


def _within_seconds(call: Callable[[], Any], fifo: Path | None = None) -> Any:
    """``call()``'s result, failing rather than hanging where it blocks (opening a FIFO to read waits
    for a writer: ``fifo`` is then opened to write, so that the reader is let go)."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("still reading after 10 s")
    assert result, "the call raised (see the thread's exception above)"
    return result[0]


@pytest.mark.parametrize("kind", ["fifo", "zero", "null"])
@pytest.mark.parametrize("split", ["test", "train"])
def test_a_path_that_is_no_regular_file_is_named_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, split: str
) -> None:
    """Their size says 0: a test/good/zero.png linked to /dev/zero was read on and on (memory grew
    about 1 GiB a second), and a FIFO held `clearsight train` at its end for good."""
    special = _special(tmp_path / split / "good", kind)
    read_bytes = Path.read_bytes

    def to_the_end(self: Path) -> bytes:  # /dev/zero has no end: fail, rather than fill the memory
        assert self != special, f"{special.name} read to its end"
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", to_the_end)
    fifo = special if kind == "fifo" else None
    assert _within_seconds(lambda: leakage.picture_hashes(special), fifo) == leakage.PictureHashes(
        "", None, too_large=False, not_regular=True
    )
    training, test = ([(special, "good", "0" * 64)], []) if split == "train" else ([], [special])
    report = _within_seconds(lambda: duplicates_report(tmp_path, training, test), fifo)
    assert report["not_regular_files"] == 1
    assert report["examples"]["not_regular_files"] == [f"{split}/good/{kind}.png"]
    assert (report["training_and_test"], report["too_large_for_near_copies"]) == (0, 0)
    assert leakage_warning(report) == (
        f"1 test or training path(s) are not regular files ({split}/good/{kind}.png, for one: a FIFO, "
        "a device, or a link to one): not read, so not checked for copies"
    )


@pytest.mark.parametrize("kind", ["regular", "missing", "fifo", "zero", "null"])
def test_file_sha256_hashes_a_regular_file_and_reads_nothing_else(tmp_path: Path, kind: str) -> None:
    """What `clearsight evaluate` compares the test images with the training images by: a training
    path linked to /dev/zero or a FIFO must neither fill the memory nor hang the evaluation."""
    path = tmp_path / "train" / "good" / "a.png"
    if kind == "regular":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\x89PNG not decoded here")
    elif kind != "missing":
        path = _special(path.parent, kind)
    fifo = path if kind == "fifo" else None
    expected = hashlib.sha256(b"\x89PNG not decoded here").hexdigest() if kind == "regular" else None
    assert _within_seconds(lambda: leakage.file_sha256(path), fifo) == expected


@pytest.mark.parametrize(("limit", "too_large"), [(16, True), (1 << 20, False)])
def test_a_file_whose_size_stat_does_not_tell_is_read_no_further_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int, too_large: bool
) -> None:
    """A file of /proc is a regular file of size 0 however much it holds: its size is what is read."""
    proc = Path("/proc/self/cmdline")
    content = proc.read_bytes()
    assert proc.stat().st_size == 0 and 16 < len(content) < 1 << 20
    link = tmp_path / "test" / "good" / "cmdline.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(proc)
    monkeypatch.setattr(leakage, "_LIMITS", DecodeLimits(max_bytes=limit))
    hashes = leakage.picture_hashes(link)
    assert hashes == leakage.PictureHashes(hashlib.sha256(content).hexdigest(), None, too_large=too_large)
