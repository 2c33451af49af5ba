"""Images that appear twice: in training and in the test split, or twice within training.

A test image that is also a training image makes every figure ``clearsight evaluate`` reports on it
optimistic, and the same picture in two training classes (``good`` and an anomaly type) teaches the
model both labels. Training compares content hashes (sha256 of the file bytes: an exact copy under
any name), records what it finds in the card and warns; it does not refuse, because a deliberate
copy (a canonical example kept in both splits) is the owner's call.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MAX_EXAMPLES", "duplicates_report", "leakage_warning"]

MAX_EXAMPLES = 5
"""Duplicate pairs named in the card, per kind."""


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # evaluate reports unreadable test images itself


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def duplicates_report(
    root: Path, training: Sequence[tuple[Path, str, str]], test: Sequence[Path]
) -> dict[str, Any]:
    """Exact copies among the training images, and between them and the test images.

    Args:
        root: the dataset folder (paths are shown relative to it).
        training: (path, class, content sha256) of every training and validation image.
        test: the test split's image paths.

    Returns:
        ``{"within_training": n, "training_and_test": n, "examples": {kind: [[a, b], ...]}}``: n
        counts pairs (each extra copy pairs with the first), at most :data:`MAX_EXAMPLES` named each.
    """
    root = root.resolve()
    first: dict[str, tuple[Path, str]] = {}
    within: list[list[str]] = []
    for path, label, digest in training:
        seen = first.get(digest)
        if seen is None:
            first[digest] = (path, label)
        else:
            note = "" if seen[1] == label else f" ({seen[1]} and {label})"
            within.append([_shown(seen[0].resolve(), root), _shown(path.resolve(), root) + note])
    crossing: list[list[str]] = []
    by_hash: dict[str, list[Path]] = defaultdict(list)
    for path in test:
        digest = _sha256(path)
        if digest is not None:
            by_hash[digest].append(path)
    for digest, (path, _) in first.items():
        for other in by_hash.get(digest, []):
            crossing.append([_shown(path.resolve(), root), _shown(other.resolve(), root)])
    return {
        "within_training": len(within),
        "training_and_test": len(crossing),
        "examples": {"within_training": within[:MAX_EXAMPLES], "training_and_test": crossing[:MAX_EXAMPLES]},
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
    if report["within_training"]:
        a, b = report["examples"]["within_training"][0]
        parts.append(
            f"{report['within_training']} training image(s) appear twice ({a} = {b}, for one): a copy "
            "in two classes teaches both labels, and one in training and validation flatters validation"
        )
    return "; ".join(parts) or None
