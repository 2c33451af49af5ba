"""Images that appear twice: in training and in the test split, or twice within training.

A test image that is also a training image makes every figure ``clearsight evaluate`` reports on it
optimistic, and the same picture in two training classes (``good`` and an anomaly type) teaches the
model both labels. Training records what it finds in the card and warns; it does not refuse,
because a deliberate copy (a canonical example kept in both splits) is the owner's call.

Two kinds are told apart. An **exact copy** has the same bytes (sha256 of the file: a copy under any
name). A **near-copy** is the same picture in other bytes (saved again as PNG, or as JPEG): its
perceptual hash (:mod:`datasets.perceptual_hash`) lies as near as the service's reused-picture
lookup requires, a coarse part within ``COARSE_BITS`` and a fine part within :data:`NEAR_COPY_BITS`
of 256. A turned, mirrored or cropped copy is not looked for. A file over the decoder's byte limit
(:class:`~datasets.decode.DecodeLimits`) is hashed in chunks and looked at for exact copies only: the
report counts it as too large to check for near-copies. A path that is no regular file (a FIFO, a
device, a link to one) is never read, as the decoder reads none: the report names it. Its size says
nothing (0 for both): reading a link to ``/dev/zero`` grew memory about 1 GiB a second, and a FIFO
held training at its end for good.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from datasets.decode import DecodeLimits, decode_image
from datasets.errors import InputError
from datasets.perceptual_hash import COARSE_BITS, perceptual_hash

__all__ = [
    "MAX_EXAMPLES",
    "NEAR_COPY_BITS",
    "PictureHashes",
    "duplicates_report",
    "file_sha256",
    "leakage_warning",
    "picture_hashes",
]

MAX_EXAMPLES = 5
"""Duplicate pairs named in the card, per kind."""
NEAR_COPY_BITS = 32
"""How far apart (of 256 fine bits) a near-copy's perceptual hash may lie: the service's default
``near_copy_bits``. A copy saved again lies 0 to a few bits away (JPEG q40: up to 26 on real
photographs), different pictures about half the bits (the nearest of thousands of pairs framed
alike: 52; ``bench/bench_near_copies.py``)."""
_PAIRS_PER_CHUNK = 1 << 20
"""Hash pairs compared at once: bounds the memory of the comparison (about 40 bytes a pair)."""
_LIMITS = DecodeLimits()
"""The decoder's bounds: a test file over its byte limit is never decoded, so never read whole."""
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_CHUNK = 1 << 20
"""Bytes read at a time past what ``stat`` said: a file over the byte limit is hashed this much at
a time."""
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class PictureHashes(NamedTuple):
    """What :func:`picture_hashes` found out about one image file."""

    sha256: str
    """Of the file's bytes."""
    phash: str | None
    """Perceptual hash; None where the picture has no layout to tell, does not decode or is too large."""
    too_large: bool
    """Over the decoder's byte limit: hashed in chunks, never decoded, so no perceptual hash."""
    not_regular: bool = False
    """No regular file (a FIFO, a device): never read, so ``sha256`` is empty and matches nothing."""


def picture_hashes(path: Path) -> PictureHashes | None:
    """The hashes of an image file from one read, None where the file cannot be read (evaluate
    reports unreadable test images itself).

    A file over the decoder's byte limit is hashed in chunks instead: read whole it cost its size in
    memory, only for the decoder to refuse it. Its size is what is read, not what ``stat`` says (0
    for a file of ``/proc``). A path that is no regular file is not read at all.
    """
    limit = _LIMITS.max_bytes
    try:
        # opened before it is looked at, so that what is read is what was checked; O_NONBLOCK,
        # because opening a FIFO to read otherwise waits for a writer
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    except OSError:
        return None
    with open(fd, "rb") as fp:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return PictureHashes("", None, too_large=False, not_regular=True)
            digest = hashlib.sha256()
            data = b""
            if info.st_size <= limit:
                # the size is a hint (0 for a file of /proc, stale for one still being written):
                # read on to the end, but never hold more than one byte past the limit
                data = fp.read(info.st_size + 1)
                while len(data) <= limit and (more := fp.read(min(_CHUNK, limit + 1 - len(data)))):
                    data += more
                digest.update(data)
            if info.st_size > limit or len(data) > limit:
                while chunk := fp.read(_CHUNK):
                    digest.update(chunk)
                return PictureHashes(digest.hexdigest(), None, too_large=True)
        except OSError:
            return None
    try:
        phash = perceptual_hash(decode_image(data, limits=_LIMITS, name=str(path)).pixels)
    except InputError:
        phash = None
    return PictureHashes(digest.hexdigest(), phash, too_large=False)


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file's bytes, read in chunks and never decoded; None where the file cannot be
    read or is no regular file (a FIFO, a device: never read, as :func:`picture_hashes` reads none).

    ``clearsight evaluate`` compares the test images with the training images by it: an exact copy
    only, the training images' pixels are not needed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)  # O_NONBLOCK: a FIFO would wait for a writer
    except OSError:
        return None
    with open(fd, "rb") as fp:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            digest = hashlib.sha256()
            while chunk := fp.read(_CHUNK):
                digest.update(chunk)
        except OSError:
            return None
    return digest.hexdigest()


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _unresolved(path: Path) -> Path:
    """``path`` with its folder resolved but not its own name: a link to ``/dev/zero`` is named as
    the dataset's file, not as the device."""
    return path.parent.resolve() / path.name


def _hash_bytes(hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The coarse (N, 8) and fine (N, 32) parts of perceptual hashes as bytes."""
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=np.uint8).reshape(-1, 40)
    return raw[:, :8], raw[:, 8:]


def _nearest(
    queries: Sequence[str], keys: Sequence[str], *, earlier_only: bool = False
) -> list[tuple[int, int] | None]:
    """For each query hash, (index of the nearest key hash within the near-copy reach, its fine
    distance), or None; ``earlier_only``: queries and keys are one list, and a query looks only at
    the keys before it. Compared a chunk of queries against every key at once."""
    found: list[tuple[int, int] | None] = [None] * len(queries)
    if not queries or not keys:
        return found
    q_coarse, q_fine = _hash_bytes(queries)
    k_coarse, k_fine = _hash_bytes(keys)
    step = max(1, _PAIRS_PER_CHUNK // len(keys))
    for start in range(0, len(queries), step):
        stop = min(start + step, len(queries))
        coarse = _POPCOUNT[q_coarse[start:stop, None, :] ^ k_coarse[None, :, :]].sum(axis=2, dtype=np.int32)
        reach = coarse <= COARSE_BITS
        if earlier_only:
            reach &= np.arange(len(keys))[None, :] < np.arange(start, stop)[:, None]
        rows, cols = np.nonzero(reach)
        if not len(rows):
            continue
        fine = _POPCOUNT[q_fine[start + rows] ^ k_fine[cols]].sum(axis=1, dtype=np.int32)
        near = fine <= NEAR_COPY_BITS
        rows, cols, fine = rows[near], cols[near], fine[near]
        # per query the nearest key, then the earliest, sorted in NumPy: a Python sort of the pairs
        # grew with their square on a folder of look-alike pictures (6.9 s at 4,000)
        order = np.lexsort((cols, fine, rows))
        firsts = order[np.unique(rows[order], return_index=True)[1]]
        for r, c, d in zip(rows[firsts], cols[firsts], fine[firsts], strict=True):
            found[start + int(r)] = (int(c), int(d))
    return found


def duplicates_report(
    root: Path,
    training: Sequence[tuple[Path, str, str]],
    test: Sequence[Path],
    *,
    phashes: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Exact copies and near-copies among the training images, and between them and the test images.

    Args:
        root: the dataset folder (paths are shown relative to it).
        training: (path, class, content sha256) of every training and validation image.
        test: the test split's image paths (each read and decoded once here; one over the decoder's
            byte limit is hashed in chunks and not decoded).
        phashes: the perceptual hash of each training image (None: no layout to tell), from the
            pixels the caller decoded; None: the training images are decoded here for them.

    Returns:
        ``{"within_training": n, "training_and_test": n, "near_within_training": n,
        "near_training_and_test": n, "near_copy_bits": NEAR_COPY_BITS, "too_large_for_near_copies": n,
        "examples": {kind: [[a, b], ...], "too_large_for_near_copies": [a, ...]}}``: n counts pairs
        (each extra copy pairs with the first; each near-copy, not also an exact copy, with the
        nearest), at most :data:`MAX_EXAMPLES` named each; ``too_large_for_near_copies`` counts and
        names the images read here that were over the decoder's byte limit, looked at for exact
        copies only; ``not_regular_files`` counts and names the paths here that are no regular file
        (a FIFO, a device), never read.
    """
    root = root.resolve()
    too_large: list[str] = []
    not_regular: list[str] = []
    if phashes is None:
        phashes = []
        for path, _, _ in training:
            hashes = picture_hashes(path)
            phashes.append(hashes.phash if hashes else None)
            if hashes and hashes.too_large:
                too_large.append(_shown(path.resolve(), root))
            if hashes and hashes.not_regular:
                not_regular.append(_shown(_unresolved(path), root))
    first: dict[str, tuple[Path, str]] = {}
    within: list[list[str]] = []
    copied: set[int] = set()  # training images that are exact copies of an earlier one
    for n, (path, label, digest) in enumerate(training):
        seen = first.get(digest)
        if seen is None:
            first[digest] = (path, label)
        else:
            copied.add(n)
            note = "" if seen[1] == label else f" ({seen[1]} and {label})"
            within.append([_shown(seen[0].resolve(), root), _shown(path.resolve(), root) + note])
    crossing: list[list[str]] = []
    test_hashes: list[tuple[Path, str | None]] = []
    for path in test:
        hashes = picture_hashes(path)
        if hashes is None:
            continue
        if hashes.not_regular:
            not_regular.append(_shown(_unresolved(path), root))
            continue
        digest, phash, oversized, _ = hashes
        if oversized:
            too_large.append(_shown(path.resolve(), root))
        if digest in first:
            crossing.append([_shown(first[digest][0].resolve(), root), _shown(path.resolve(), root)])
        else:
            test_hashes.append((path, phash))

    # near-copies: by perceptual hash, among the pictures that are no exact copy
    kept = [n for n, h in enumerate(phashes) if h is not None and n not in copied]
    kept_hashes = [phashes[n] for n in kept]
    near_within: list[list[str]] = []
    for n, hit in zip(kept, _nearest(kept_hashes, kept_hashes, earlier_only=True), strict=True):
        if hit is not None:
            (a, a_label), (b, b_label) = training[kept[hit[0]]][:2], training[n][:2]
            note = "" if a_label == b_label else f"; {a_label} and {b_label}"
            near_within.append(
                [_shown(a.resolve(), root), _shown(b.resolve(), root) + f" ({hit[1]} of 256 bits{note})"]
            )
    queried = [(p, h) for p, h in test_hashes if h is not None]
    near_crossing: list[list[str]] = []
    for (path, _), hit in zip(queried, _nearest([h for _, h in queried], kept_hashes), strict=True):
        if hit is not None:
            near_crossing.append(
                [
                    _shown(training[kept[hit[0]]][0].resolve(), root),
                    _shown(path.resolve(), root) + f" ({hit[1]} of 256 bits)",
                ]
            )
    return {
        "within_training": len(within),
        "training_and_test": len(crossing),
        "near_within_training": len(near_within),
        "near_training_and_test": len(near_crossing),
        "near_copy_bits": NEAR_COPY_BITS,
        "too_large_for_near_copies": len(too_large),
        "not_regular_files": len(not_regular),
        "examples": {
            "within_training": within[:MAX_EXAMPLES],
            "training_and_test": crossing[:MAX_EXAMPLES],
            "near_within_training": near_within[:MAX_EXAMPLES],
            "near_training_and_test": near_crossing[:MAX_EXAMPLES],
            "too_large_for_near_copies": too_large[:MAX_EXAMPLES],
            "not_regular_files": not_regular[:MAX_EXAMPLES],
        },
    }


def leakage_warning(report: dict[str, Any] | None) -> str | None:
    """The card's duplicates report in words, or None when there are none (or no report)."""
    if not report:
        return None
    parts = []
    if report["training_and_test"]:
        a, b = report["examples"]["training_and_test"][0]
        parts.append(
            f"{report['training_and_test']} test image(s) are exact copies of training images ({b} = {a}, "
            "for one): the test figures on them are optimistic"
        )
    if report.get("near_training_and_test"):
        a, b = report["examples"]["near_training_and_test"][0]
        parts.append(
            f"{report['near_training_and_test']} test image(s) are near-copies of training images, the "
            f"same picture saved again ({b} ~ {a}, for one): the test figures on them are optimistic"
        )
    if report["within_training"]:
        a, b = report["examples"]["within_training"][0]
        parts.append(
            f"{report['within_training']} training image(s) appear twice ({a} = {b}, for one): a copy "
            "in two classes teaches both labels, and one in training and validation flatters validation"
        )
    if report.get("near_within_training"):
        a, b = report["examples"]["near_within_training"][0]
        parts.append(
            f"{report['near_within_training']} training image(s) are near-copies of another, the same "
            f"picture saved again ({a} ~ {b}, for one): a copy in two classes teaches both labels, and "
            "one in training and validation flatters validation"
        )
    if report.get("too_large_for_near_copies"):
        limit = _LIMITS.max_bytes / 2**20
        example = report["examples"]["too_large_for_near_copies"][0]
        parts.append(
            f"{report['too_large_for_near_copies']} image(s) are over the decoder's {limit:g} MiB limit "
            f"({example}, for one): checked for exact copies only, not for near-copies"
        )
    if report.get("not_regular_files"):
        example = report["examples"]["not_regular_files"][0]
        parts.append(
            f"{report['not_regular_files']} test or training path(s) are not regular files ({example}, "
            "for one: a FIFO, a device, or a link to one): not read, so not checked for copies"
        )
    return "; ".join(parts) or None
