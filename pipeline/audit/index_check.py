"""Verification of the image indexes and the policy index against the chain, as
:func:`~pipeline.audit.verify.verify_chain` walks it.

The indexes are no part of the hashed chain, yet decisions are made from them: a picture sent again
is found there (``image_reused``, ``image_held_before``), so a held shipment's rows deleted let its
very picture pass as new under another id; and a policy version is checked against the policy
index, so its pair deleted lets the version be recorded under other rules. Each decision's rows are
therefore made again from its hashed content (:func:`~pipeline.audit.image_indexes.index_rows` and
:func:`~pipeline.audit.policy_index.policy_pair`, as the store wrote them; a pair's row belongs to
the first decision naming it) and compared with the stored ones: a row missing, altered or extra
names the record.

The stored rows are read in ``seq`` order, one streamed query per table beside the chain's pages,
so that the check holds one record's rows at a time however large the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, select

from pipeline.audit.image_indexes import index_rows
from pipeline.audit.policy_index import policy_pair
from pipeline.audit.records import Problem
from pipeline.audit.schema import image_index, image_likeness, policy_versions

__all__ = ["Finding", "IndexCheck"]

_YIELD = 1000


class Finding(NamedTuple):
    """What verification found wrong: the problem, the record it names, what to say, and the index
    it lies in (as the CLI names it)."""

    problem: Problem
    seq: int | None
    message: str
    index: str = "image index"


class _Stream:
    """One index table's rows in ``seq`` order, read a batch at a time, with one row looked ahead."""

    def __init__(self, conn: Connection, table: Table) -> None:
        self.table = table
        self.columns = list(table.columns.keys())
        self._at = self.columns.index("seq")
        query = select(*table.columns).order_by(table.c.seq)
        self._result = conn.execute(query.execution_options(yield_per=_YIELD))
        self._batches: Iterator[Sequence[Any]] = self._result.partitions()
        self._batch: Sequence[Any] = ()
        self._i = 0
        self._next: tuple[Any, ...] | None = None
        self._advance()

    def _advance(self) -> None:
        if self._i == len(self._batch):
            self._batch, self._i = next(self._batches, ()), 0
        if not self._batch:
            self._next = None
            return
        self._next = tuple(self._batch[self._i])
        self._i += 1

    def before(self, seq: int) -> tuple[Any, ...] | None:
        """The next row if it belongs to a record numbered before ``seq`` (one the walk passed)."""
        if self._next is None:
            return None
        at = self.seq_of(self._next)
        # a seq that is no number (damaged) lies before every record: named at once
        return self._next if not isinstance(at, int) or at < seq else None

    def take(self, seq: int) -> list[tuple[Any, ...]]:
        """The rows of record ``seq`` (the rows before it already taken or reported)."""
        taken = []
        while self._next is not None and self._next[self._at] == seq:
            taken.append(self._next)
            self._advance()
        return taken

    def rest(self) -> tuple[Any, ...] | None:
        """The next row not taken, if any."""
        return self._next

    def seq_of(self, row: tuple[Any, ...]) -> Any:
        """The record a row of this table names."""
        return row[self._at]

    def close(self) -> None:
        self._result.close()


class IndexCheck:
    """The indexes of ``tables`` compared, record by record, with what the chain's decisions give.

    Call :meth:`record` for each record in chain order after its chain checks passed, :meth:`end`
    once the whole chain passed, and :meth:`close` in any case.
    """

    def __init__(self, conn: Connection, tables: Sequence[Table]) -> None:
        self._streams: list[_Stream] = []
        self._pairs: set[tuple[str, str]] = set()  # the policy pairs of the decisions walked so far
        try:
            for table in tables:
                self._streams.append(_Stream(conn, table))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for stream in self._streams:
            stream.close()

    def record(self, seq: int, content: Any) -> Finding | None:
        """Check record ``seq`` (its parsed hashed ``content``): rows left for records before it
        (which the chain does not hold), then its own rows against those its content gives."""
        for stream in self._streams:
            orphan = stream.before(seq)
            if orphan is not None:
                return _not_in_chain(stream, orphan)
        try:
            expected = _expected(seq, content, self._pairs)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
            return Finding(
                "altered",
                seq,
                f"record {seq}: its decision's images cannot be indexed ({type(exc).__name__}: {exc})",
            )
        for stream in self._streams:
            want = expected[stream.table.name]
            got = stream.take(seq)
            # both sorted as the store writes them, as a rule; in another order, still the same rows
            if got != want and sorted(got) != sorted(want):
                return _differs(stream, seq, content, got, want)
        return None

    def end(self, head_seq: int) -> Finding | None:
        """Rows left after the whole chain: they name records past its head."""
        for stream in self._streams:
            row = stream.rest()
            if row is not None:
                return _not_in_chain(stream, row, head_seq=head_seq)
        return None


def _expected(seq: int, content: Any, pairs: set[tuple[str, str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's rows that record ``seq`` gives, as tuples in the table's column order; a policy
    pair not in ``pairs`` (those of the decisions before it) is added there."""
    expected: dict[str, list[tuple[Any, ...]]] = {table.name: [] for table in _TABLES}
    if not isinstance(content, dict) or content.get("kind") != "decision":
        return expected
    decision = content.get("decision")
    exact, alike = index_rows(decision if isinstance(decision, dict) else {}, content.get("shipment_id"), seq)
    for table, rows in ((image_index, exact), (image_likeness, alike)):
        names = _COLUMNS[table.name]
        expected[table.name] = [tuple(row[name] for name in names) for row in rows]
    pair = policy_pair(decision)
    if pair is not None and pair not in pairs:
        pairs.add(pair)
        expected[policy_versions.name] = [(*pair, seq)]
    return expected


_TABLES = (image_index, image_likeness, policy_versions)
_COLUMNS = {table.name: tuple(table.columns.keys()) for table in _TABLES}


def _key(stream: _Stream, row: tuple[Any, ...]) -> str:
    """What a row is of, as the message names it: a picture's content or perceptual hash, or a
    policy's version and sha256."""
    key = f"{stream.columns[0]} {str(row[0])[:80]!r}"
    if stream.table is policy_versions:
        key += f", {stream.columns[1]} {str(row[1])[:80]!r}"
    return key


def _index(stream: _Stream) -> str:
    return "policy index" if stream.table is policy_versions else "image index"


def _not_in_chain(stream: _Stream, row: tuple[Any, ...], *, head_seq: int | None = None) -> Finding:
    seq = stream.seq_of(row)
    where = "" if head_seq is None else f" (its head is record {head_seq})"
    return Finding(
        "inserted",
        seq if isinstance(seq, int) else None,
        f"{stream.table.name} holds a row for record {seq!r}, which the chain does not hold{where} "
        f"({_key(stream, row)})",
        _index(stream),
    )


def _differs(
    stream: _Stream, seq: int, content: Any, got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]
) -> Finding:
    missing = list((Counter(want) - Counter(got)).elements())
    extra = list((Counter(got) - Counter(want)).elements())
    table = stream.table.name
    index = _index(stream)
    kind = content.get("kind") if isinstance(content, dict) else None
    if not missing and kind != "decision":
        return Finding(
            "inserted",
            seq,
            f"record {seq} is not a decision (kind {str(kind)[:20]!r}), yet {table} holds a row for it "
            f"({_key(stream, extra[0])})",
            index,
        )
    if not extra:
        lacks = (
            "of its policy, the first decision under it ({}): a policy version missing from the index "
            "passes when recorded under another policy_sha256"
            if stream.table is policy_versions
            else "of its picture ({}): a picture missing from the index passes as new when it is sent again"
        )
        said = lacks.format(_key(stream, missing[0]))
        return Finding("deleted", seq, f"record {seq}: {table} lacks the row {said}", index)
    if not missing:
        return Finding(
            "inserted",
            seq,
            f"record {seq}: {table} holds a row its content does not give ({_key(stream, extra[0])})",
            index,
        )
    said, gives = extra[0], missing[0]
    diffs = [
        f"{name} {str(said[i])[:80]!r} where its content gives {str(gives[i])[:80]!r}"
        for i, name in enumerate(stream.columns)
        if said[i] != gives[i]
    ]
    return Finding("altered", seq, f"record {seq}: a row of {table} says {', '.join(diffs)}", index)
