"""The whole chain as a file an auditor can check without the database.

``clearsight audit export --chain`` writes every record, decisions and outcomes alike, in chain
order, one JSON object a line: ``seq``, ``prev_hash``, ``record_hash`` and ``content``, the exact
hashed text. :func:`verify_chain_file` recomputes every link from the file alone, so a copy kept by
an auditor, or published alongside a head, proves what the trail held at the time.

The first line is the chain's head as the store held it (``{"head_seq": N, "head_hash": H}``): a
prefix of a chain is itself a valid chain, so without it a copy missing its last records (deleted
from the store before the export, or cut off on the way to the auditor) would verify. The head line
is no signature: whoever rewrites the file can rewrite it too, which only a head published elsewhere
(``--expect``) catches. Files exported before the head line are still read; their tail cannot be
checked, and the report says so.

A record sealed in the store (:mod:`pipeline.audit.seal`) carries its ``seal`` in the file too, and
:func:`verify_chain_file` given the seal key checks them by the store's rules: every record must
carry one (an export made before seals is checked without the key, ``--no-seals``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from datasets.errors import AuditError, InputError
from pipeline.audit.chain import GENESIS_HASH, chain_hash
from pipeline.audit.export import replaced_whole
from pipeline.audit.seal import SealCheck, SealKey, seals_unchecked

__all__ = ["ChainFileReport", "verify_chain_file", "write_chain_file"]


class ChainFileReport(NamedTuple):
    """A chain file that verified: how many records, and its head. ``tail_checked`` is False for a
    file without a head line (an older export): records missing from its end would go unseen."""

    records: int
    head_seq: int
    head_hash: str
    tail_checked: bool = True
    seals: str = ""
    """What the seals prove (:meth:`~pipeline.audit.seal.SealCheck.summary`), or that they were not
    checked (no key)."""


def write_chain_file(rows: Iterable[Any], path: Path, *, head: tuple[int, str]) -> int:
    """Write the head line, then chain rows (``seq``, ``prev_hash``, ``record_hash``, ``content``) to
    ``path``; returns the number of rows. ``head`` is (seq, hash) of the record the rows end at;
    the caller checks that they do (:meth:`~pipeline.audit.store.AuditStore.export_chain`).

    The file appears whole or not at all: a prefix of a chain is itself a valid chain, so a file cut
    off midway would verify (:func:`~pipeline.audit.export.replaced_whole`).

    Raises:
        InputError: the file cannot be written.
    """
    count = 0
    try:
        with replaced_whole(path) as handle:
            handle.write(json.dumps({"head_seq": head[0], "head_hash": head[1]}) + "\n")
            for row in rows:
                line = {
                    "seq": row.seq,
                    "prev_hash": row.prev_hash,
                    "record_hash": row.record_hash,
                    "content": row.content,
                }
                seal = getattr(row, "seal", None)  # rows of a store with the seal column
                if seal is not None:
                    line["seal"] = seal
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
    except OSError as exc:
        # strerror: the message would name the temporary file, not the one asked for
        raise InputError(f"cannot write the chain to {path} ({exc.strerror or exc})") from exc
    return count


def verify_chain_file(
    path: Path, *, expect: Mapping[int, str] | None = None, seal_key: SealKey | None = None
) -> ChainFileReport:
    """Recompute every link of an exported chain.

    Args:
        path: the exported chain.
        expect: record number -> hash published earlier: the file must hold each, unchanged.
        seal_key: check each record's seal, as ``clearsight audit verify`` does in the store (None:
            the seals are not checked).

    Raises:
        InputError: the file cannot be read.
        AuditError: naming the first line that is not JSON, skips a number, does not link to the
            record before it, or whose content does not give its hash; a file that does not end at
            the head its first line names; a published record the file lacks or holds with
            another hash; or, with ``seal_key``, a record whose seal does not match, or records
            that carry none (how many, the first named).
    """
    expect = dict(expect or {})
    seals = None if seal_key is None else SealCheck(seal_key)
    previous, seq = GENESIS_HASH, 0
    head: tuple[int, str] | None = None
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                where = f"{path}:{number}"
                try:
                    line = json.loads(text)
                    if isinstance(line, dict) and "head_seq" in line:
                        head = _head(line, where, first=number == 1)
                        continue
                    got_seq, prev, digest, content = (
                        line["seq"],
                        line["prev_hash"],
                        line["record_hash"],
                        line["content"],
                    )
                except (
                    ValueError,
                    KeyError,
                    TypeError,
                ) as exc:  # ValueError: JSON, or an integer of 4,300+ digits
                    raise AuditError(f"{where}: not a chain record ({type(exc).__name__}: {exc})") from exc
                except RecursionError as exc:  # a value nested a thousand deep: no record of ours
                    raise AuditError(f"{where}: not a chain record (a value is nested too deeply)") from exc
                if got_seq != seq + 1:
                    raise AuditError(
                        f"{where}: record {got_seq} follows record {seq}: records are missing or reordered"
                    )
                if prev != previous:
                    raise AuditError(
                        f"{where}: record {got_seq} does not link to record {seq} (prev_hash differs)"
                    )
                if not isinstance(content, str) or chain_hash(prev, content) != digest:
                    raise AuditError(
                        f"{where}: record {got_seq}: its content does not give its record_hash (altered)"
                    )
                if got_seq in expect and expect.pop(got_seq) != digest:
                    raise AuditError(f"{where}: record {got_seq} has hash {digest}, not the one published")
                forged = None if seals is None else seals.check(got_seq, digest, line.get("seal"))
                if forged is not None:
                    raise AuditError(f"{where}: {forged}")
                previous, seq = digest, got_seq
    except OSError as exc:
        raise InputError(f"cannot read the chain file {path} ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:  # `audit export --chain` writes UTF-8: this is another file
        raise AuditError(
            f"{path}: not a chain file: after record {seq}, byte {exc.start} of a line is not UTF-8 "
            f"({exc.reason})"
        ) from exc
    if expect:
        raise AuditError(f"{path}: ends at record {seq}, before the published record {min(expect)}")
    unsealed = None if seals is None else seals.unsealed_fault()
    if unsealed is not None:
        raise AuditError(f"{path}: {unsealed}")
    said = seals_unchecked() if seals is None else seals.summary(seq)
    if head is None:
        return ChainFileReport(seq, seq, previous, tail_checked=False, seals=said)
    if seq < head[0]:
        raise AuditError(
            f"{path}: ends at record {seq}, but its head line says the chain ends at record {head[0]}: "
            f"records {seq + 1}..{head[0]} are missing (deleted, or the file was cut off)"
        )
    if (seq, previous) != head:
        raise AuditError(
            f"{path}: ends at record {seq} with hash {previous}, but its head line says record "
            f"{head[0]} with hash {head[1]}"
        )
    return ChainFileReport(seq, seq, previous, seals=said)


def _head(line: dict[str, Any], where: str, *, first: bool) -> tuple[int, str]:
    """(seq, hash) of a head line, which only the first line may be."""
    seq, digest = line.get("head_seq"), line.get("head_hash")
    if not first:
        raise AuditError(f"{where}: a head line where a record belongs (the head is the first line only)")
    if type(seq) is not int or seq < 0 or not isinstance(digest, str):
        raise AuditError(
            f"{where}: not a head line (head_seq {str(seq)[:30]!r} must be a number >= 0, head_hash "
            f"{str(digest)[:70]!r} a hash)"
        )
    return seq, digest
