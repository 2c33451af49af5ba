"""Re-compute the audit chain and name the first record that was altered, deleted, inserted or reordered.

The walk goes through the records in ``seq`` order, a page at a time (constant memory), and checks:

* ``record_hash == sha256(prev_hash + content)`` and the query columns match the content -> altered;
* ``prev_hash`` is the previous record's hash; when it is not, where it points tells what happened:
  nowhere (the predecessor's real successor comes later: inserted; a gap in ``seq``: deleted;
  otherwise the predecessor was altered and re-hashed), to a record further back (the records in
  between were inserted), to a later record (reordered);
* records past the head row were not appended by the store (inserted); a chain that stops short of
  the head lost its tail (deleted);
* given the seal key, each record's seal (:mod:`pipeline.audit.seal`) -> forged;
* the image indexes hold, for each decision, the rows its hashed content gives, and nothing else,
  and the policy index the pair of each policy the decisions name, with the first decision naming
  it (:mod:`pipeline.audit.index_check`): they are no part of the hash, yet a picture sent again is
  looked up there, so a held picture's rows deleted would let it pass as new, and so is a policy
  version, so its pair deleted would let the version be recorded under other rules.

A plain hash chain catches anyone who edits rows without re-computing everything after them; one
rewritten from scratch, head included, is caught only by the seals (where the rewriter lacks the
key) or against an outside copy of the head hash (which the report returns).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.exc import OperationalError

from datasets.errors import AuditError
from pipeline.audit.chain import GENESIS_HASH, chain_hash, index_columns
from pipeline.audit.index_check import Finding, IndexCheck
from pipeline.audit.records import Problem, VerifyReport
from pipeline.audit.schema import (
    audit_head,
    audit_records,
    image_index,
    image_likeness,
    policy_versions,
    sealed_records,
)
from pipeline.audit.seal import SealCheck, seals_unchecked

__all__ = ["checked", "verify_chain"]

_PAGE = 1000


class _Bad(Exception):
    def __init__(self, problem: Problem, seq: int | None, message: str, index: str | None = None) -> None:
        super().__init__(message)
        self.problem: Problem = problem
        self.seq = seq
        self.message = message
        self.index = index  # the index the problem lies in; None: the chain


def _seq_of_hash(conn: Connection, record_hash: str) -> int | None:
    return conn.execute(
        select(audit_records.c.seq).where(audit_records.c.record_hash == record_hash)
    ).scalar()


def _check_seq(seq: Any, prev_seq: int) -> None:
    """A seq that is no number (text, a blob, a fraction: SQLite keeps what it is given) names the
    record as the one after the last good one: the walk reads such a row after every number."""
    if type(seq) is not int:
        raise _Bad(
            "altered",
            prev_seq + 1,
            f"record {prev_seq + 1}: its seq is stored as {str(seq)[:40]!r} ({type(seq).__name__}), "
            "not a number",
        )


def _check_row(row: Any) -> Any:
    """Hash and column checks of one record on its own (its seq checked already); returns its parsed
    content."""
    for column in ("content", "prev_hash", "record_hash"):
        value = getattr(row, column)
        if not isinstance(value, str):  # a blob of the same bytes, a number: no text hashes so
            raise _Bad(
                "altered",
                row.seq,
                f"record {row.seq}: its {column} is stored as {type(value).__name__}, not text",
            )
    if chain_hash(row.prev_hash, row.content) != row.record_hash:
        raise _Bad("altered", row.seq, f"record {row.seq}: content does not match its record_hash")
    try:
        content = json.loads(row.content)
        expected = index_columns(content if isinstance(content, dict) else {})
    except (ValueError, RecursionError, AttributeError) as exc:  # a forger's, hashed as it is
        raise _Bad(
            "altered", row.seq, f"record {row.seq}: content is not a record ({type(exc).__name__})"
        ) from exc
    for column, value in expected.items():
        if getattr(row, column) != value:
            raise _Bad(
                "altered",
                row.seq,
                f"record {row.seq}: column {column} = {getattr(row, column)!r} "
                f"but the hashed content says {value!r}",
            )
    return content


def _raise(finding: Finding | None) -> None:
    if finding is not None:
        raise _Bad(*finding)


def _check_link(conn: Connection, row: Any, prev_seq: int, expected_prev: str) -> None:
    """The record's ``prev_hash`` against its predecessor; classify a broken link."""
    if row.prev_hash == expected_prev:
        if row.seq != prev_seq + 1:
            raise _Bad(
                "reordered",
                row.seq,
                f"record {row.seq}: links to record {prev_seq} but seq jumps "
                f"from {prev_seq} to {row.seq} (renumbered)",
            )
        return
    target = _seq_of_hash(conn, row.prev_hash) if row.prev_hash != GENESIS_HASH else 0
    if target is not None:
        _check_seq(target, prev_seq)  # the predecessor, read out of order for its damaged seq
    if target is None:
        # The record links nowhere. If the predecessor's true successor sits further on, this record
        # (and any up to that successor) was slipped in between them.
        successor = conn.execute(
            select(audit_records.c.seq).where(audit_records.c.prev_hash == expected_prev)
        ).scalar()
        if isinstance(successor, int) and successor > row.seq:
            raise _Bad(
                "inserted",
                row.seq,
                f"record {row.seq}: records {row.seq}..{successor - 1} were inserted between record "
                f"{prev_seq} and its successor {successor}",
            )
        if row.seq > prev_seq + 1:
            raise _Bad(
                "deleted",
                prev_seq + 1,
                f"record {prev_seq + 1} is missing: seq jumps from {prev_seq} "
                f"to {row.seq} and record {row.seq} links to a hash no record has",
            )
        raise _Bad(
            "altered",
            prev_seq,
            f"record {prev_seq}: record {row.seq} links to a hash it no longer has "
            f"(altered and re-hashed, or a record after it deleted and the rest renumbered)",
        )
    if target < prev_seq:
        first = conn.execute(
            select(func.min(audit_records.c.seq)).where(audit_records.c.seq > target)
        ).scalar()
        raise _Bad(
            "inserted",
            first,
            f"record {first}: records {first}..{prev_seq} were inserted; record "
            f"{row.seq} links to record {target}",
        )
    raise _Bad("reordered", row.seq, f"record {row.seq}: links to record {target}, which comes after it")


def _check_unique(conn: Connection) -> None:
    """Every record number is held by one row. The walk pages on ``seq > last``, so a second row
    numbered as the last of a page was never read (a forger who rebuilt the table without its keys
    had one sealed beside the genuine record)."""
    seq = audit_records.c.seq
    twice = conn.execute(select(seq).group_by(seq).having(func.count() > 1).order_by(seq).limit(1)).scalar()
    if twice is not None:
        raise _Bad(
            "inserted",
            twice,
            f"record {twice}: its number is held by more than one row (the table lost its unique key): "
            "the store never appended them",
        )


def _check_seal(seals: SealCheck | None, row: Any) -> None:
    """The record's seal, where a key was given (a store without the seal column: none)."""
    if seals is not None:
        why = seals.check(row.seq, row.record_hash, getattr(row, "seal", None))
        if why is not None:
            raise _Bad("forged", row.seq, why)


def _check_unsealed(seals: SealCheck | None, *, sealed: bool = True) -> None:
    """With a key, every record must carry a seal: those without are counted as the walk goes, and
    fail it at its end, the first of them named. A store read at a version before seals (no seal
    column) fails so too, saying why: a forger who dropped the column and set the version back
    would otherwise have every seal unchecked."""
    why = None if seals is None else seals.unsealed_fault()
    if why is not None:
        if not sealed:
            why += (
                " (the store is at a schema version before seals: an operator seals its records, "
                "vouching for them by a published head, with `clearsight audit seal --expect SEQ:HASH`; "
                "until then check it with --no-seals)"
            )
        raise _Bad("forged", seals.first_unsealed if seals else None, why)


def _seals_line(seals: SealCheck | None, checked: int) -> str:
    return seals_unchecked() if seals is None else seals.summary(checked)


def _page(conn: Connection, records: Table, prev_seq: int) -> list[Any]:
    """The records after ``prev_seq``, a page of them (``records``: the table with its seals or
    without); a row whose text SQLite cannot decode as UTF-8 (it fails the whole page) is found and
    named by reading the page a row at a time."""
    after = records.c.seq > prev_seq
    try:
        return list(conn.execute(select(records).where(after).order_by(records.c.seq).limit(_PAGE)))
    except OperationalError as exc:
        if conn.dialect.name != "sqlite" or "decode" not in str(exc.orig).lower():
            raise
        said = str(exc.orig)[:120]
    try:
        seqs = conn.execute(select(records.c.seq).where(after).order_by(records.c.seq).limit(_PAGE))
        numbers = list(seqs.scalars())
    except OperationalError:
        raise _Bad(
            "altered", prev_seq + 1, f"record {prev_seq + 1}: its seq is not UTF-8 text ({said})"
        ) from None
    for seq in numbers:
        try:
            conn.execute(select(records).where(records.c.seq == seq)).all()
        except OperationalError:
            _check_seq(seq, prev_seq)
            raise _Bad("altered", seq, f"record {seq}: a column is not UTF-8 text ({said})") from None
    raise _Bad("altered", prev_seq + 1, f"record {prev_seq + 1}: a column is not UTF-8 text ({said})")


def verify_chain(
    conn: Connection,
    *,
    seals: SealCheck | None = None,
    sealed: bool = False,
    indexes: Sequence[Table] = (image_index, image_likeness, policy_versions),
    unchecked: str | None = None,
) -> VerifyReport:
    """Walk the chain on ``conn`` (inside one snapshot transaction) and report the first problem.

    Args:
        seals: checks each record's seal (None: no key, the seals are not checked).
        sealed: the store has the seal column (schema version 5), to read the seals from.
        indexes: the index tables to check against the chain's decisions.
        unchecked: why some are not checked (a store at an older version read as it is), said in
            the report of a chain found intact.
    """
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.record_hash).where(audit_head.c.id == 1)
    ).first()
    head_seq, head_hash = (head.seq, head.record_hash) if head is not None else (0, GENESIS_HASH)
    checked, prev_seq, expected_prev = 0, 0, GENESIS_HASH
    records = sealed_records if sealed else audit_records  # the same table, with its seals or without
    index = IndexCheck(conn, indexes) if head is not None else None
    try:
        if head is None:
            raise _Bad("deleted", None, "the chain head row (audit_head id 1) is missing")
        # The walk starts after 0, so a row numbered 0 or below would never be checked while the
        # store still reads it (an outcome there lifted a hold unseen): the store numbers from 1.
        before = conn.execute(select(func.max(audit_records.c.seq)).where(audit_records.c.seq < 1)).scalar()
        if before is not None:
            raise _Bad(
                "inserted",
                before,
                f"record {before} lies before the chain's first record (seq 1): the store never appended it",
            )
        _check_unique(conn)
        while True:
            page = _page(conn, records, prev_seq)
            for row in page:
                _check_seq(row.seq, prev_seq)
                if row.seq > head_seq:
                    raise _Bad(
                        "inserted",
                        row.seq,
                        f"record {row.seq} lies past the chain head (seq {head_seq}): "
                        "the store never appended it",
                    )
                content = _check_row(row)
                _check_link(conn, row, prev_seq, expected_prev)
                _check_seal(seals, row)
                if index is not None:
                    _raise(index.record(row.seq, content))
                checked, prev_seq, expected_prev = checked + 1, row.seq, row.record_hash
            if len(page) < _PAGE:
                break
        if prev_seq < head_seq:
            raise _Bad(
                "deleted",
                prev_seq + 1,
                f"records {prev_seq + 1}..{head_seq} are missing: the chain ends "
                f"at {prev_seq} but its head says {head_seq}",
            )
        if expected_prev != head_hash:
            raise _Bad(
                "altered", head_seq, f"record {head_seq}: its hash differs from the one in the chain head"
            )
        if index is not None:
            _raise(index.end(head_seq))
        _check_unsealed(seals, sealed=sealed)
    except _Bad as bad:
        return VerifyReport(
            ok=False,
            records_checked=checked,
            first_bad=bad.seq,
            problem=bad.problem,
            in_index=bad.index is not None,
            index=bad.index,
            message=bad.message,
            head_seq=head_seq,
            head_hash=head_hash,
        )
    finally:
        if index is not None:
            index.close()
    return VerifyReport(
        ok=True,
        records_checked=checked,
        message=f"{checked} records verified, chain intact" + (f"; {unchecked}" if unchecked else ""),
        head_seq=head_seq,
        head_hash=head_hash,
        seals=_seals_line(seals, checked),
    )


def checked(
    rows: Iterable[Any],
    head_seq: int,
    head_hash: str,
    url: str,
    *,
    seals: SealCheck | None = None,
    refused: str = "nothing exported",
) -> Iterator[Any]:
    """``rows`` (the chain in order up to its head), each once it passed the checks a record has on
    its own (:func:`_check_row`), its link to the one before and, with ``seals``, its seal; then an
    error if they did not end at the head: an export of a tampered store must not pass for a copy
    of the trail, and a copy of a chain whose tail was deleted is itself a valid chain. Streams as
    :func:`verify_chain` does; what went wrong is named, its kind left to ``clearsight audit verify``.

    Raises:
        AuditError: naming the store at ``url`` and the first record that fails.
    """
    done = f"{refused} (`clearsight audit verify` names what happened)"
    prev_seq, expected_prev = 0, GENESIS_HASH
    for row in rows:
        try:
            _check_seq(row.seq, prev_seq)
            _check_row(row)
        except _Bad as bad:
            raise AuditError(f"audit store {url}: {bad.message}; {done}") from None
        if row.seq != prev_seq + 1 or row.prev_hash != expected_prev:
            raise AuditError(
                f"audit store {url}: record {row.seq} does not link to record {prev_seq} before it (a "
                f"record deleted, inserted, moved, or altered and re-hashed); {done}"
            )
        try:
            _check_seal(seals, row)
        except _Bad as bad:
            raise AuditError(f"audit store {url}: {bad.message}; {done}") from None
        yield row
        prev_seq, expected_prev = row.seq, row.record_hash
    try:
        _check_unsealed(seals)
    except _Bad as bad:
        raise AuditError(f"audit store {url}: {bad.message}; {done}") from None
    if prev_seq < head_seq:
        raise AuditError(
            f"audit store {url}: the chain ends at record {prev_seq} but its head says {head_seq}: "
            f"records after {prev_seq} are missing; {done}"
        )
    if expected_prev != head_hash:
        raise AuditError(
            f"audit store {url}: record {head_seq} does not have the hash its head holds; {done}"
        )
