"""The audit store's policy index: each (policy_version, policy_sha256) its decisions name, and the
first decision naming it.

A decision under a policy version the trail holds under another sha256 is refused (a version must
name one rule set). Reading every record for it took 2.4 s on a trail of 200,000 records at each
start of a run or the service, and each write read the records since under the write lock; the
index makes both one indexed read. Like the image indexes it lies outside the chain's hash: a
writer adds a decision's pair in the transaction that appends it, an upgrade makes it from the
chain, and verification checks it against the chain (:mod:`pipeline.audit.index_check`), since a
pair missing from it lets the version pass under other rules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Insert, select
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.audit.schema import audit_records, policy_versions

__all__ = ["Recorded", "add_decision", "policy_pair", "rebuild", "recorded_otherwise"]

_PAGE = 1000
"""Records read per query as an upgrade makes the index: bounded memory on PostgreSQL too, whose
driver holds a whole result."""


class Recorded(NamedTuple):
    """A pair the trail holds: the policy's sha256 and the first decision recorded under it."""

    sha256: str
    seq: int


def policy_pair(decision: Any) -> tuple[str, str] | None:
    """The (policy_version, policy_sha256) a decision's content names, or None where it names no
    pair of strings (no decision this store wrote: verification names such a record by its hash
    or its parse first)."""
    if not isinstance(decision, dict):
        return None
    version, sha = decision.get("policy_version"), decision.get("policy_sha256")
    return (version, sha) if isinstance(version, str) and isinstance(sha, str) else None


def _insert_new(conn: Connection) -> Insert:
    """An insert that skips a pair already there: two writers adding one pair at once both go on
    (the write lock serialises appends; the key is the backstop, and the first seq is kept)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(policy_versions).on_conflict_do_nothing()


def add_decision(conn: Connection, decision: dict[str, Any], seq: int) -> None:
    """Add the pair of a decision just appended, where it is new."""
    pair = policy_pair(decision)
    if pair is not None:
        conn.execute(_insert_new(conn), [{"policy_version": pair[0], "policy_sha256": pair[1], "seq": seq}])


def rebuild(conn: Connection) -> None:
    """Make the index again from the chain's decisions, a page of records at a time."""
    policy_versions.create(conn, checkfirst=True)
    conn.execute(policy_versions.delete())
    c = audit_records.c
    first: dict[tuple[str, str], int] = {}
    after: Any = None
    while True:
        query = select(c.seq, c.content).where(c.kind == "decision").order_by(c.seq).limit(_PAGE)
        if after is not None:
            query = query.where(c.seq > after)
        rows: Sequence[Any] = conn.execute(query).all()
        for row in rows:
            try:
                pair = policy_pair(json.loads(row.content).get("decision"))
            except (ValueError, AttributeError, RecursionError):
                pair = None  # not a record this store wrote: verification names it
            if pair is not None and pair not in first:
                first[pair] = row.seq
        if len(rows) < _PAGE:
            break
        after = rows[-1].seq
    if first:
        conn.execute(
            _insert_new(conn),
            [{"policy_version": v, "policy_sha256": s, "seq": seq} for (v, s), seq in first.items()],
        )


def recorded_otherwise(conn: Connection, version: str, sha256: str) -> Recorded | None:
    """The first decision recorded under ``version`` with another sha256 than ``sha256``, or None."""
    c = policy_versions.c
    row = conn.execute(
        select(c.policy_sha256, c.seq)
        .where(c.policy_version == version, c.policy_sha256 != sha256)
        .order_by(c.seq)
        .limit(1)
    ).first()
    return None if row is None else Recorded(row.policy_sha256, row.seq)
