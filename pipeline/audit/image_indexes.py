"""The audit store's image indexes: where a picture, or a near-copy of it, was decided before.

Both are built from the decisions in the chain and are no part of its evidence: an upgrade makes
them again from the chain. ``audit_image_index`` holds each image's content hash (the same bytes);
``audit_image_likeness`` its perceptual hash, the coarse part cut into bands
(:mod:`datasets.perceptual_hash`), so that a re-encoded, resized or retouched copy is found by exact
band lookups and then judged by the fine part.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, func, or_, select

from datasets.perceptual_hash import COARSE_BITS, FINE_BITS, band_values, coarse_part, fine_distance
from pipeline.audit.hamming_sql import hamming64, signed64
from pipeline.audit.schema import audit_records, image_index, image_likeness, index_metadata

__all__ = [
    "MAX_NEAR_COPY_BITS",
    "Sighting",
    "add_decision",
    "check_bits",
    "rebuild",
    "sightings",
]

_BATCH = 10_000
_CANDIDATES = 5_000
"""Most rows within the coarse reach judged per picture, the latest first: bounds the work one request
can cause. Different pictures seldom come that near (3 pairs of 7,140 framed alike in
``bench/bench_near_copies.py``); a picture sent thousands of times does."""
MAX_NEAR_COPY_BITS = FINE_BITS // 4
"""The farthest ``near_copy_bits`` may reach: different pictures lie about half the fine bits apart."""
log = logging.getLogger("clearsight.audit")


class Sighting(NamedTuple):
    """Other shipments in which one picture was decided before, oldest first: ``seen_in`` with its
    very bytes, ``similar_in`` with a near-copy, whose fine hash lies ``similar_bits`` of 256 from
    this one's at the nearest of those named."""

    seen_in: list[str]
    similar_in: list[str]
    similar_bits: int | None


def _rows(decision: dict[str, Any], shipment_id: str, seq: int) -> tuple[list[dict], list[dict]]:
    """One decision's rows of each index: each distinct content hash, each distinct perceptual hash."""
    images = decision.get("images", [])
    hashes = {image.get("sha256") for image in images} - {None, ""}
    phashes = {image.get("phash") for image in images} - {None, ""}
    exact = [{"sha256": h, "shipment_id": shipment_id, "seq": seq} for h in sorted(hashes)]
    alike = [
        {"phash": p, "coarse": signed64(coarse_part(p)), "shipment_id": shipment_id, "seq": seq}
        | {f"band{i}": b for i, b in enumerate(band_values(p))}
        for p in sorted(phashes)
    ]
    return exact, alike


def add_decision(conn: Connection, decision: dict[str, Any], shipment_id: str, seq: int) -> None:
    """Index the images of a decision just appended."""
    _insert(conn, *_rows(decision, shipment_id, seq))


def rebuild(conn: Connection) -> None:
    """Make both indexes again from the chain's decisions (rows an early build made are dropped)."""
    index_metadata.create_all(conn)
    conn.execute(image_index.delete())
    conn.execute(image_likeness.delete())
    c = audit_records.c
    decisions = conn.execute(
        select(c.seq, c.shipment_id, c.content).where(c.kind == "decision").order_by(c.seq)
    )
    exact: list[dict] = []
    alike: list[dict] = []
    for row in decisions:
        more_exact, more_alike = _rows(json.loads(row.content)["decision"], row.shipment_id, row.seq)
        exact += more_exact
        alike += more_alike
        if len(exact) + len(alike) >= _BATCH:
            _insert(conn, exact, alike)
            exact, alike = [], []
    _insert(conn, exact, alike)


def _insert(conn: Connection, exact: list[dict], alike: list[dict]) -> None:
    if exact:
        conn.execute(image_index.insert(), exact)
    if alike:
        conn.execute(image_likeness.insert(), alike)


def _seen_elsewhere(
    conn: Connection, hashes: Sequence[str], other_than: str, *, most: int = 5, after: int | None = None
) -> dict[str, list[str]]:
    """For each content hash, the other shipments it was decided in, oldest first (at most ``most``);
    with ``after``, only in records after that sequence number."""
    wanted = sorted({h for h in hashes if h})
    if not wanted:
        return {}
    c = image_index.c
    where = [c.sha256.in_(wanted), c.shipment_id != other_than]
    if after is not None:
        where.append(c.seq > after)
    found: dict[str, list[str]] = {}
    rows = conn.execute(
        select(c.sha256, c.shipment_id, func.min(c.seq).label("first"))
        .where(*where)
        .group_by(c.sha256, c.shipment_id)
        .order_by(c.sha256, "first")
    )
    for row in rows:
        shipments = found.setdefault(row.sha256, [])
        if len(shipments) < most:
            shipments.append(row.shipment_id)
    return found


def _near(
    conn: Connection, sha256: str, phash: str, other_than: str, bits: int, after: int | None
) -> list[tuple[int, str, int]]:
    """(first seq, shipment, fine distance) of the other shipments holding a near-copy: a coarse part
    within ``COARSE_BITS`` and a fine part within ``bits``. A shipment holding the very bytes is
    left out, however many do (it is named as the same picture)."""
    c = image_likeness.c
    bands = [c[f"band{i}"] == value for i, value in enumerate(band_values(phash))]
    if after is not None:  # each band from ``after`` on: its (band, seq) index reads only those
        bands = [and_(band, c.seq > after) for band in bands]
    same_bytes = select(image_index.c.shipment_id).where(image_index.c.sha256 == sha256)
    rows = conn.execute(
        select(c.phash, c.shipment_id, c.seq)
        .where(
            or_(*bands),
            # measured by the database before the limit, so that pictures framed alike, which share
            # bands without being near, do not use up the rows read
            hamming64(c.coarse, signed64(coarse_part(phash))) <= COARSE_BITS,
            c.shipment_id != other_than,
            c.shipment_id.not_in(same_bytes),
        )
        .order_by(c.seq.desc())
        .limit(_CANDIDATES)
    ).all()
    if len(rows) == _CANDIDATES:
        log.warning(
            "near-copy lookup: %d pictures lie within %d coarse bits of %s; only the latest were judged",
            _CANDIDATES,
            COARSE_BITS,
            coarse_part(phash),
        )
    nearest: dict[str, tuple[int, int]] = {}
    for row in rows:
        distance = fine_distance(phash, row.phash)
        if distance <= bits:
            seq, best = nearest.get(row.shipment_id, (row.seq, distance))
            nearest[row.shipment_id] = (min(seq, row.seq), min(best, distance))
    return sorted((seq, shipment, distance) for shipment, (seq, distance) in nearest.items())


def check_bits(near_copy_bits: int) -> None:
    """Raise ValueError for a fine distance past ``MAX_NEAR_COPY_BITS``."""
    if not 0 <= near_copy_bits <= MAX_NEAR_COPY_BITS:
        raise ValueError(f"near_copy_bits {near_copy_bits} not in 0 to {MAX_NEAR_COPY_BITS}")


def sightings(
    conn: Connection,
    images: Sequence[tuple[str, str | None]],
    other_than: str,
    *,
    near_copy_bits: int,
    most: int = 5,
    after: int | None = None,
) -> dict[str, Sighting]:
    """Where each image, given as (content hash, perceptual hash or None), was decided in another
    shipment than ``other_than`` (with ``after``, in records after that sequence number); images seen
    nowhere are left out. A shipment that holds the same bytes is named in ``seen_in`` only.
    ``near_copy_bits`` (of the fine part's 256; :func:`check_bits`) 0 looks for the same bytes only.
    """
    seen = _seen_elsewhere(conn, [sha for sha, _ in images], other_than, most=most, after=after)
    found: dict[str, Sighting] = {}
    for sha, phash in images:
        exact = seen.get(sha, [])
        near = _near(conn, sha, phash, other_than, near_copy_bits, after) if phash and near_copy_bits else []
        if exact or near:
            found[sha] = Sighting(
                seen_in=exact,
                similar_in=[shipment for _, shipment, _ in near[:most]],
                similar_bits=min((d for _, _, d in near[:most]), default=None),
            )
    return found
