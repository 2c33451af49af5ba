"""The audit store's image indexes: where a picture, or a near-copy of it, was decided before.

Both are built from the decisions in the chain and are outside its hash: an upgrade makes them
again from the chain, and verification checks them against it (:mod:`pipeline.audit.index_check`).
``audit_image_index`` holds each image's content hash (the same bytes);
``audit_image_likeness`` its perceptual hash, the coarse part cut into bands
(:mod:`datasets.perceptual_hash`), so that a re-encoded, resized or retouched copy is found by exact
band lookups and then judged by the fine part. The index keeps each picture's own hash; a lookup may
bring the hashes of its mirror images and turns as well (:class:`Picture`), so that a copy flipped or
turned before it was sent again is found too.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Connection,
    Integer,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    union_all,
)

from datasets.perceptual_hash import (
    BANDS,
    COARSE_BITS,
    FINE_BITS,
    INVERSE_TURNS,
    TURNS,
    band_values,
    coarse_part,
    fine_distance,
)
from pipeline.audit.hamming_sql import hamming64, signed64
from pipeline.audit.schema import audit_records, image_index, image_likeness, index_metadata

__all__ = [
    "MAX_NEAR_COPY_BITS",
    "NearCopy",
    "Picture",
    "Sighting",
    "Unnamed",
    "add_decision",
    "check_bits",
    "index_rows",
    "rebuild",
    "sightings",
]

_BATCH = 10_000
_CANDIDATES = 5_000
"""Most rows within the coarse reach judged per hash of a picture (its own, and each of its mirror
images and turns), the latest first: bounds the work one request can cause. Different pictures
seldom come that near (3 pairs of 7,140 framed alike in ``bench/bench_near_copies.py``); a picture
sent thousands of times does."""
MAX_NEAR_COPY_BITS = FINE_BITS // 4
"""The farthest ``near_copy_bits`` may reach: different pictures lie about half the fine bits apart."""
log = logging.getLogger("clearsight.audit")


class Picture(NamedTuple):
    """A picture to look up: its content hash, its perceptual hash (None: no layout to tell), and
    the perceptual hashes of its mirror images and turns, in the order of ``TURNS[1:]`` (none: the
    picture as sent only)."""

    sha256: str
    phash: str | None
    turns: Sequence[str] = ()


class Sighting(NamedTuple):
    """Other shipments in which one picture was decided before, oldest first: ``seen_in`` with its
    very bytes, ``similar_in`` with a near-copy, whose fine hash lies ``similar_bits`` of 256 from
    this one's at the nearest of those named; ``similar_turn`` says how this picture is that nearest
    one turned or mirrored (a name from ``TURNS``; None: as it was), and ``turned_phash`` is this
    picture's hash turned back so (the one that matched)."""

    seen_in: list[str]
    similar_in: list[str]
    similar_bits: int | None
    similar_turn: str | None = None
    turned_phash: str | None = None

    @staticmethod
    def verdict_fields(found: Sighting | None) -> dict[str, Any]:
        """An image verdict's fields for where its picture was decided before (all None: nowhere)."""
        return {
            "seen_in": (found.seen_in or None) if found else None,
            "similar_in": (found.similar_in or None) if found else None,
            "similar_bits": found.similar_bits if found else None,
            "similar_turn": found.similar_turn if found else None,
            "turned_phash": found.turned_phash if found else None,
        }


class NearCopy(NamedTuple):
    """A shipment holding a near-copy of a picture, as :class:`Sighting` names the nearest: its fine
    hash ``bits`` of 256 away, ``turn`` how the picture is it turned or mirrored (None: as it was),
    and ``turned_phash`` the picture's hash turned back so."""

    shipment_id: str
    bits: int
    turn: str | None
    turned_phash: str | None


class Unnamed(NamedTuple):
    """Other shipments a picture was decided in past the ``most`` its :class:`Sighting` names:
    whether more hold its very bytes (``same``: they are found again by its content hash), and those
    that hold a near-copy (``similar_in``, oldest first, as far as the lookup found them). A hold
    among them carries over as well as one among those named
    (:func:`pipeline.batch_decisions.with_earlier_holds`)."""

    same: bool
    similar_in: list[NearCopy]


def index_rows(decision: dict[str, Any], shipment_id: str, seq: int) -> tuple[list[dict], list[dict]]:
    """One decision's rows of each index: each distinct content hash, each distinct perceptual hash
    (what it is written with, an upgrade makes again, and verification expects)."""
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
    _insert(conn, *index_rows(decision, shipment_id, seq))


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
        more_exact, more_alike = index_rows(json.loads(row.content)["decision"], row.shipment_id, row.seq)
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


def _first_held(conn: Connection, hashes: Sequence[str], shipment_id: str) -> dict[str, int]:
    """For each content hash ``shipment_id`` was decided with before, the first record holding it."""
    wanted = sorted({h for h in hashes if h})
    if not wanted:
        return {}
    c = image_index.c
    rows = conn.execute(
        select(c.sha256, func.min(c.seq).label("first"))
        .where(c.sha256.in_(wanted), c.shipment_id == shipment_id)
        .group_by(c.sha256)
    )
    return {row.sha256: row.first for row in rows}


def _seen_elsewhere(
    conn: Connection,
    hashes: Sequence[str],
    other_than: str,
    *,
    most: int = 5,
    after: int | None = None,
    before: dict[str, int] | None = None,
    crowded: set[str] | None = None,
) -> dict[str, list[str]]:
    """For each content hash, the other shipments it was decided in, oldest first (at most ``most``);
    with ``after``, only in records after that sequence number; a hash in ``before`` only in
    shipments that held it before that sequence number. ``crowded``, where given, takes the hashes
    decided in more shipments than ``most``."""
    before = before or {}
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
        if row.sha256 in before and row.first >= before[row.sha256]:
            continue
        shipments = found.setdefault(row.sha256, [])
        if len(shipments) < most:
            shipments.append(row.shipment_id)
        elif crowded is not None:
            crowded.add(row.sha256)
    return found


def _near(
    conn: Connection, picture: Picture, other_than: str, bits: int, after: int | None, before: int | None
) -> list[tuple[int, str, int, int]]:
    """(first seq, shipment, fine distance, turn) of the other shipments holding a near-copy of the
    picture, as sent or mirrored or turned (``turn`` indexes ``TURNS``, the nearest one's): a coarse
    part within ``COARSE_BITS`` and a fine part within ``bits``, in records after ``after`` and
    before ``before`` where given. A shipment holding the very bytes is left out, however many do
    (it is named as the same picture)."""
    turns: dict[str, int] = {}  # hash -> turn: a symmetric picture is its own mirror image
    for turn, phash in enumerate((picture.phash, *picture.turns)):
        if phash is not None:
            turns.setdefault(phash, turn)
    hashes = list(turns)
    params: dict[str, Any] = {
        "sha256": picture.sha256,
        "other_than": other_than,
        "after": after or 0,
        "before": before or 0,
    }
    for n, phash in enumerate(hashes):
        params[f"coarse{n}"] = signed64(coarse_part(phash))
        params |= {f"band{n}_{i}": value for i, value in enumerate(band_values(phash))}
    query = _near_query(len(hashes), after is not None, before is not None, _CANDIDATES)
    rows = conn.execute(query, params).all()
    read = Counter(row.hash for row in rows)
    for n in (n for n, count in read.items() if count == _CANDIDATES):
        log.warning(
            "near-copy lookup: %d pictures lie within %d coarse bits of %s (%s); only the latest were judged",
            _CANDIDATES,
            COARSE_BITS,
            coarse_part(hashes[n]),
            TURNS[turns[hashes[n]]],
        )
    nearest: dict[str, tuple[int, int, int]] = {}
    for row in rows:  # the database kept each row within the coarse reach of the hash that found it
        distance = fine_distance(hashes[row.hash], row.phash)
        if distance > bits:
            continue
        turn = turns[hashes[row.hash]]
        first, best, best_turn = nearest.get(row.shipment_id, (row.seq, distance, turn))
        if (distance, turn) < (best, best_turn):
            best, best_turn = distance, turn
        nearest[row.shipment_id] = (min(first, row.seq), best, best_turn)
    return sorted((seq, shipment, distance, turn) for shipment, (seq, distance, turn) in nearest.items())


@functools.cache
def _near_query(hashes: int, since: bool, until: bool, most: int) -> CompoundSelect:
    """The candidates of a near-copy lookup of ``hashes`` hashes (a picture's own and its distinct
    turns), the ``most`` latest of each (so that look-alikes of one turn cannot crowd out a copy
    found by another), after ``after`` where ``since`` and before ``before`` where ``until``; column
    ``hash`` says which hash found the row. Built once per shape: building its forty-odd terms takes
    longer than running them.

    Each term is one band of one hash, with the coarse distance to that hash measured by the
    database before the limit, so that pictures framed alike, which share bands without being near,
    do not use up the rows read; measured only for the rows that term's band found."""
    c = image_likeness.c
    same_bytes = select(image_index.c.shipment_id).where(image_index.c.sha256 == bindparam("sha256"))
    if until:
        # only those named in seen_in, that is, holding the bytes before ``before``: a shipment whose
        # near-copy came before it and the very bytes only after must still be named
        same_bytes = same_bytes.where(image_index.c.seq < bindparam("before"))
    found = []
    for n in range(hashes):
        coarse = bindparam(f"coarse{n}", type_=BigInteger())
        reach = []
        for i in range(BANDS):
            term = and_(
                c[f"band{i}"] == bindparam(f"band{n}_{i}"), hamming64(c.coarse, coarse) <= COARSE_BITS
            )
            # from ``after`` on (or up to ``before``): its (band, seq) index reads only those
            if since:
                term = and_(term, c.seq > bindparam("after"))
            if until:
                term = and_(term, c.seq < bindparam("before"))
            reach.append(term)
        latest = (
            select(c.phash, c.shipment_id, c.seq, literal(n, Integer()).label("hash"))
            .where(or_(*reach), c.shipment_id != bindparam("other_than"), c.shipment_id.not_in(same_bytes))
            .order_by(c.seq.desc())
            .limit(most)
            .subquery()
        )
        found.append(select(latest))
    return union_all(*found)


def _turn_name(turn: int) -> str | None:
    """How a picture is the near-copy its hash's turn ``turn`` (of ``TURNS``) found turned or
    mirrored: the inverse turn's name (None: as it was)."""
    return TURNS[INVERSE_TURNS[turn]] if turn else None


def check_bits(near_copy_bits: int) -> None:
    """Raise ValueError for a fine distance past ``MAX_NEAR_COPY_BITS``."""
    if not 0 <= near_copy_bits <= MAX_NEAR_COPY_BITS:
        raise ValueError(f"near_copy_bits {near_copy_bits} not in 0 to {MAX_NEAR_COPY_BITS}")


def sightings(
    conn: Connection,
    images: Sequence[Picture | tuple[str, str | None]],
    other_than: str,
    *,
    near_copy_bits: int,
    most: int = 5,
    after: int | None = None,
    unnamed: dict[str, Unnamed] | None = None,
) -> dict[str, Sighting]:
    """Where each image, a :class:`Picture` or (content hash, perceptual hash or None), was decided
    in another shipment than ``other_than`` (with ``after``, in records after that sequence number);
    images seen nowhere are left out. A shipment that holds the same bytes is named in ``seen_in``
    only. ``near_copy_bits`` (of the fine part's 256; :func:`check_bits`) 0 looks for the same bytes
    only.

    A picture ``other_than`` was decided with before is looked for only in what came before its
    first decision holding it: a shipment decided again (a what-if under a new policy, a picture
    added) is the first to have sent it, not a copy of a later shipment that reused it. A picture
    it never held is looked for everywhere.

    ``unnamed``, where given, takes for each picture decided in more shipments than the ``most``
    named what is past them (:class:`Unnamed`).
    """
    pictures = [Picture(*image) for image in images]
    hashes = [p.sha256 for p in pictures]
    firsts = _first_held(conn, hashes, other_than)
    crowded: set[str] = set()
    seen = _seen_elsewhere(conn, hashes, other_than, most=most, after=after, before=firsts, crowded=crowded)
    found: dict[str, Sighting] = {}
    for picture in pictures:
        exact = seen.get(picture.sha256, [])
        near = []
        before = firsts.get(picture.sha256)
        if (
            picture.phash
            and near_copy_bits
            and not (after is not None and before is not None and before <= after)
        ):
            near = _near(conn, picture, other_than, near_copy_bits, after, before)
        if exact or near:
            named = near[:most]
            bits, turn = min(((d, t) for *_, d, t in named), default=(None, 0))
            found[picture.sha256] = Sighting(
                seen_in=exact,
                similar_in=[shipment for _, shipment, _, _ in named],
                similar_bits=bits,
                similar_turn=_turn_name(turn),
                turned_phash=picture.turns[turn - 1] if turn else None,
            )
        if unnamed is not None and (picture.sha256 in crowded or len(near) > most):
            past = [
                NearCopy(shipment, d, _turn_name(t), picture.turns[t - 1] if t else None)
                for _, shipment, d, t in near[most:]
            ]
            unnamed[picture.sha256] = Unnamed(same=picture.sha256 in crowded, similar_in=past)
    return found
