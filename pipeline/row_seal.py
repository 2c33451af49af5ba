"""Row seals: each row of a score output vouched for by the run that scored it.

A completion record (:mod:`pipeline.score.completion`) says a run gave every input a row; it cannot
say the rows are the ones it wrote: a record removed, stripped of its seal, or written again by a
``--resume`` over edited rows vouched for scores no model gave (a held picture's score lowered,
then released). So where the audit secret is set, ``clearsight score`` seals each row it writes:
``row_seal = HMAC-SHA256(K, canonical(row))`` in hex, ``K = HMAC-SHA256(audit_secret,
ROW_SEAL_LABEL)`` (its own label: never the completion records' key, the audit chain's nor the
random-audit draws'). ``clearsight decide`` fails a row closed whose seal is missing or does not
verify (:func:`untrusted`), and ``score --resume`` takes such a row out and scores it again.

The canonical form is that of the row as read back (:func:`canonical`), so that JSONL, CSV and
Parquet rows verify alike: the verdict's JSON (``row_seal`` and the never-written fields left out,
keys sorted, ASCII), an empty text ``""`` as ``None`` (a CSV cell reads back so). Floats round-trip
exactly in all three formats (JSON's shortest repr, CSV's ``repr``, Parquet's float64).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from typing import Literal

from pipeline.verdicts import ImageVerdict, as_error_row

__all__ = ["ROW_SEAL_LABEL", "canonical", "fault", "row_seal_key", "seal", "sealed", "untrusted"]

ROW_SEAL_LABEL = b"clearsight verdict row seal v1"
"""The label the row seal key is derived under (:func:`row_seal_key`)."""


def row_seal_key(secret: str | bytes) -> bytes:
    """``K = HMAC-SHA256(secret, ROW_SEAL_LABEL)`` of the audit secret: the key that seals score
    output rows (never the completion records' key, derived under another label)."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(raw, ROW_SEAL_LABEL, hashlib.sha256).digest()


def canonical(verdict: ImageVerdict) -> bytes:
    """The bytes a row's seal is over: its fields as read back, in every format alike."""
    data = verdict.model_dump(mode="json")  # row_seal is excluded from dumps, phash_turns too
    for name, value in data.items():
        if value == "":  # an empty CSV cell reads back as None
            data[name] = None
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def seal(key: bytes, verdict: ImageVerdict) -> str:
    """The seal of ``verdict``'s row under ``key`` (hex)."""
    return hmac.new(key, canonical(verdict), hashlib.sha256).hexdigest()


def sealed(key: bytes | None, verdict: ImageVerdict) -> ImageVerdict:
    """``verdict`` carrying its row seal under ``key`` (as it is where ``key`` is None)."""
    if key is None:
        return verdict
    return verdict.model_copy(update={"row_seal": seal(key, verdict)})


def fault(key: bytes, verdict: ImageVerdict) -> Literal["missing", "does not verify"] | None:
    """Why ``verdict``'s row seal does not vouch for it under ``key``; None where it does."""
    if verdict.row_seal is None:
        return "missing"
    # as bytes: compare_digest refuses text that is not ASCII, which an edited seal may be
    found = verdict.row_seal.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(seal(key, verdict).encode("ascii"), found):
        return "does not verify"
    return None


def untrusted(
    key: bytes | None, rows: Iterable[ImageVerdict], where: str, counted: list[int] | None = None
) -> Iterator[ImageVerdict]:
    """``rows`` (of the file named ``where``), each whose seal is missing or does not verify under
    ``key`` made an error row with its scores and hashes cleared, so that it holds its shipment
    (``fail_closed.image_error``) while the file's other rows are decided; ``counted[0]`` counts
    them. As they are where ``key`` is None (no secret: nothing to verify with)."""
    if key is None:
        yield from rows
        return
    for number, row in enumerate(rows, start=1):
        why = fault(key, row)
        if why is None:
            yield row
            continue
        if counted is not None:
            counted[0] += 1
        error = (
            f"row seal {why} (row {number} of {where}): the verdict file was changed after scoring, "
            "or written without this CLEARSIGHT_AUDIT_SECRET; score its inputs again"
        )
        yield as_error_row(row, error)
