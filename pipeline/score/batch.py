"""Decode one image and score one batch, turning every failure into an error row.

Shared by the local engine and the Ray actors, so that both produce the same rows.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from datasets.errors import ClearsightError, DatasetFormatError, ImageDecodeError
from models.inference import Prediction, Predictor
from pipeline.heatmap import overlay_png
from pipeline.score.sources import ImageTask
from pipeline.verdicts import ImageVerdict

log = logging.getLogger("clearsight.score")

__all__ = ["Decoded", "ScoredRow", "decode_task", "error_row", "score_batch"]


class Decoded(NamedTuple):
    """The outcome of decoding one image: ``pixels`` (H, W[, C]), its sha256 and perceptual hash
    (:mod:`datasets.perceptual_hash`; None for a picture with no layout to tell), or an error."""

    pixels: np.ndarray | None
    sha256: str | None
    error: str | None
    phash: str | None = None


class ScoredRow(NamedTuple):
    """One output row and, when heatmaps were asked for, its overlay PNG (written by the runner)."""

    verdict: ImageVerdict
    heatmap_png: bytes | None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def decode_task(path: str, limits: Any) -> Decoded:
    """Decode ``path`` under ``limits`` (``datasets.decode`` limits), never raising.

    A module-level function so that a process pool can pickle it. Any failure (corrupt, too
    large, unreadable, or a bug in a codec) becomes ``Decoded(error=...)``: one bad file must
    never stop an archive run.
    """
    from datasets.decode import decode_image
    from datasets.perceptual_hash import perceptual_hash

    try:
        # named printably: the decoder's messages quote the name, and a row must hold them
        image = decode_image(path, limits=limits, name=printable_path(path))
    except ImageDecodeError as exc:  # its bytes' hash kept: the record names the file that was sent
        return Decoded(None, exc.sha256, _describe(exc))
    except ClearsightError as exc:
        return Decoded(None, None, _describe(exc))
    except Exception as exc:  # a codec bug or an OS error the decoder did not translate
        return Decoded(None, None, f"unexpected {_describe(exc)}")
    # recorded with the verdict, so that the audit store can find a near-copy of a picture decided in
    # a batch when it is sent again to the service; only a help to that lookup, never the score's end
    try:
        phash = perceptual_hash(image.pixels)
    except Exception as exc:
        log.warning(
            "%s: no perceptual hash (%s); found again by its bytes only", printable_path(path), _describe(exc)
        )
        phash = None
    return Decoded(image.pixels, image.sha256, None, phash)


ESCAPE = re.compile(r"\\x[0-9a-f]{2}")
"""What :func:`printable_path` writes for a byte that is not UTF-8 (``backslashreplace``'s form): a
row's text holds one only where its name was escaped, today or by an earlier version."""


def printable_path(path: str) -> str:
    """``path`` as a row can hold it, one text per file: a file name that is not UTF-8 (GBK or CP-1252
    bytes from a file share) reaches Python with surrogates that no JSON, CSV or Parquet writer
    accepts, so its odd bytes are written as ``\\xNN`` escapes instead of failing the whole run.

    A name that is UTF-8 is written as it is, unless it holds such an escape itself (``caf\\xe9.png``
    typed with a backslash): it then named the same row as the file whose name holds the byte 0xE9,
    which was counted as a duplicate input and never scored. Such a name, and any name that needs an
    escape, is written with each backslash byte escaped too (``\\x5c``), so that every backslash of
    an escaped text starts an escape and two files never share a text; every other name (an
    ordinary one, or one whose odd bytes hold no backslash) is written as before, and outputs that
    hold it resume as before."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        if not ESCAPE.search(path):
            return path
    return os.fsencode(path).replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")


def earlier_printable_path(path: str) -> str:
    """``path`` as versions before :func:`printable_path` escaped backslashes wrote it in a row: a name
    that is not UTF-8 with its odd bytes as ``\\xNN`` and its backslashes as they are, every UTF-8 name
    as it is (``caf\\xe9.png`` typed, too). A resumed run knows the rows of their outputs by it; it
    differs from :func:`printable_path` only for a UTF-8 name that holds a ``\\xNN`` itself and for a
    name that is not UTF-8 and holds a backslash."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


_ESCAPED = re.compile(r"(?:[^\\]|\\x[0-9a-f]{2})*", re.DOTALL)
"""A text every backslash of which starts a ``\\xNN`` escape: how :func:`printable_path` writes a
name it escapes."""


def path_of_printable(text: str) -> str | None:
    """The file name whose :func:`printable_path` is ``text``, or None where no name's is.

    A resumed run asks it of a row an earlier version wrote (:func:`earlier_printable_path`): its
    text may also be the one today's version gives another file (``caf\\xe9.png``, typed, was written
    as ``caf<0xE9>.png`` is now), and the row is then not taken for the first file while the other
    is there."""
    if not ESCAPE.search(text):
        return text
    if not _ESCAPED.fullmatch(text):
        return None
    try:
        raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no row text holds one
        return None
    path = os.fsdecode(raw)
    return path if printable_path(path) == text else None


def present_path_of_printable(text: str) -> str | None:
    """:func:`path_of_printable` of ``text`` where something is at that path (a link too), else None.

    A row naming ``text`` is that file's while it is there, never another's an earlier version wrote
    alike (:func:`earlier_paths_of`): the rule a resume keeps rows by (``runner._earlier_row``) and
    reads their pictures again by (:mod:`pipeline.score.kept_content`)."""
    path = path_of_printable(text)
    return path if path is not None and os.path.lexists(path) else None


_HIGH_ESCAPE = re.compile(r"\\x[89a-f][0-9a-f]")
"""An escape :func:`earlier_printable_path` may have written: ``backslashreplace`` escapes only bytes
that are no UTF-8, 0x80 and above; a lower one (``\\x41``) was typed."""


def earlier_paths_of(text: str) -> list[str]:
    """The file names whose :func:`earlier_printable_path` is ``text`` and whose
    :func:`printable_path` is another text, that a resume keeps a row naming ``text`` for
    (``runner._earlier_row``) and reads for it (:mod:`pipeline.score.kept_content`): at most two.

    A UTF-8 name that holds a ``\\xNN`` was written as it is (``text`` itself); a name that is not
    UTF-8 and holds a backslash with its odd bytes as ``\\xNN`` and its backslashes as they are:
    ``text`` with each high escape read back as its byte (``backslashreplace`` escapes no byte below
    0x80: ``\\x41<0xFF>.png`` was written ``\\x41\\xff.png``, its ``\\x41`` typed, never read
    back). A name holding both a typed high ``\\xNN`` and an odd byte is neither (one text may be of
    2**n such names): its row is not kept for it, and the picture is scored again."""
    found = []
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no row text holds one
        return []
    if ESCAPE.search(text):
        found.append(text)
    if _HIGH_ESCAPE.search(text):
        path = os.fsdecode(re.sub(rb"\\x([89a-f][0-9a-f])", lambda m: bytes([int(m[1], 16)]), raw))
        if earlier_printable_path(path) == text != printable_path(path):
            found.append(path)
    return found


def _printable_text(text: str) -> str:
    """``text`` (an error message) as a row can hold it: odd bytes as ``\\xNN``, nothing else changed
    (a message quotes a file name as :func:`printable_path` wrote it, backslashes and all)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def error_row(
    task: ImageTask,
    error: str,
    *,
    cargo_type: str | None = None,
    sha256: str | None = None,
    phash: str | None = None,
) -> ScoredRow:
    """The row of an image that could not be scored: ``error`` set, every score field ``None``.

    A picture a manifest lists (a task with a shipment) that is not there is the manifest's error,
    not a picture that failed to decode: said as such (it read ``ImageDecodeError: ... file not
    found``). The manifest's own name is left out, as the row's error is among the inputs a
    decision is keyed by, and a copy of the manifest must decide the same."""
    if (
        task.shipment_id is not None
        and error.startswith(f"{ImageDecodeError.__name__}: ")
        and not os.path.exists(task.path)
    ):
        from datasets.decode.source import stripped_spelling

        other = stripped_spelling(task.path)
        said = "" if other is None else f" (the path has spaces at its ends; without them it names {other})"
        error = (
            f"{DatasetFormatError.__name__}: {printable_path(task.path)}: listed in the manifest under "
            f"shipment {task.shipment_id!r}, but file not found{said}"
        )
    verdict = ImageVerdict(
        path=printable_path(task.path),
        sha256=sha256,
        phash=phash,
        shipment_id=task.shipment_id,
        cargo_type=cargo_type if cargo_type is not None else task.cargo_type,
        error=_printable_text(error),  # a message may quote a file name that is not UTF-8
        declaration=dict(task.declaration),
    )
    return ScoredRow(verdict, None)


def _scored_row(
    task: ImageTask, decoded: Decoded, prediction: Prediction, cargo_type: str, heatmaps: bool
) -> ScoredRow:
    verdict = ImageVerdict(
        path=printable_path(task.path),
        sha256=decoded.sha256,
        phash=decoded.phash,
        shipment_id=task.shipment_id,
        cargo_type=cargo_type,
        score=float(prediction.score),
        label=prediction.label,
        anomaly_type=prediction.anomaly_type,
        type_probabilities={str(k): float(v) for k, v in prediction.type_probabilities.items()},
        threshold=float(prediction.thresholds.release),
        hold_threshold=float(prediction.thresholds.hold),
        model_id=prediction.model_id,
        declaration=dict(task.declaration),
        scale_vs_training=prediction.scale_vs_training,
        signal_log_odds=prediction.signal_log_odds,
    )
    png = None
    if heatmaps and decoded.pixels is not None:
        try:
            png = overlay_png(decoded.pixels, prediction.anomaly_map)
        except Exception:  # noqa: S110 - a bad map loses its picture, never the image's score
            png = None
    return ScoredRow(verdict, png)


def _predict(predictor: Predictor, images: list[np.ndarray]) -> list[Prediction]:
    predictions = predictor.predict(images)
    if len(predictions) != len(images):
        # A short answer cannot be matched to images safely: treat it as a failed batch.
        raise RuntimeError(f"predictor returned {len(predictions)} predictions for {len(images)} images")
    return predictions


def score_batch(
    predictor: Predictor,
    items: Sequence[tuple[ImageTask, Decoded]],
    *,
    heatmaps: bool,
) -> list[ScoredRow]:
    """Score decoded images of one cargo type with ``predictor``.

    If the batch raises, each image is retried alone so that one poisonous image costs only its
    own row; images that still fail get error rows naming the model error.

    Args:
        predictor: the model for these images' cargo type.
        items: (task, decoded) pairs whose ``decoded.pixels`` is set.
        heatmaps: also render each scored image's overlay PNG.

    Returns:
        One row per item, in order.
    """
    if not items:
        return []
    cargo_type = predictor.cargo_type
    images = [decoded.pixels for _, decoded in items]
    try:
        predictions = _predict(predictor, images)  # type: ignore[arg-type]
    except Exception:
        rows: list[ScoredRow] = []
        for task, decoded in items:
            try:
                (prediction,) = _predict(predictor, [decoded.pixels])  # type: ignore[list-item]
            except Exception as exc:
                message = f"model error in {predictor.model_id!r}: {_describe(exc)}"
                rows.append(
                    error_row(
                        task, message, cargo_type=cargo_type, sha256=decoded.sha256, phash=decoded.phash
                    )
                )
            else:
                rows.append(_scored_row(task, decoded, prediction, cargo_type, heatmaps))
        return rows
    return [
        _scored_row(task, decoded, prediction, cargo_type, heatmaps)
        for (task, decoded), prediction in zip(items, predictions, strict=True)
    ]
