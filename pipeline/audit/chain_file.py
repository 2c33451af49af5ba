"""The whole chain as a file an auditor can check without the database.

``clearsight audit export --chain`` writes every record, decisions and outcomes alike, in chain
order, one JSON object a line: ``seq``, ``prev_hash``, ``record_hash`` and ``content``, the exact
hashed text. :func:`verify_chain_file` recomputes every link from the file alone, so a copy kept by
an auditor, or published alongside a head, proves what the trail held at the time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from datasets.errors import AuditError, InputError
from pipeline.audit.chain import GENESIS_HASH, chain_hash
from pipeline.audit.export import replaced_whole

__all__ = ["ChainFileReport", "verify_chain_file", "write_chain_file"]


class ChainFileReport(NamedTuple):
    """A chain file that verified: how many records, and its head."""

    records: int
    head_seq: int
    head_hash: str


def write_chain_file(rows: Iterable[Any], path: Path) -> int:
    """Write chain rows (``seq``, ``prev_hash``, ``record_hash``, ``content``) to ``path``; returns the count.

    The file appears whole or not at all: a prefix of a chain is itself a valid chain, so a file cut
    off midway would verify (:func:`~pipeline.audit.export.replaced_whole`).

    Raises:
        InputError: the file cannot be written.
    """
    count = 0
    try:
        with replaced_whole(path) as handle:
            for row in rows:
                line = {
                    "seq": row.seq,
                    "prev_hash": row.prev_hash,
                    "record_hash": row.record_hash,
                    "content": row.content,
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
    except OSError as exc:
        # strerror: the message would name the temporary file, not the one asked for
        raise InputError(f"cannot write the chain to {path} ({exc.strerror or exc})") from exc
    return count


def verify_chain_file(path: Path, *, expect: Mapping[int, str] | None = None) -> ChainFileReport:
    """Recompute every link of an exported chain.

    Args:
        path: the exported chain.
        expect: record number -> hash published earlier: the file must hold each, unchanged.

    Raises:
        InputError: the file cannot be read.
        AuditError: naming the first line that is not JSON, skips a number, does not link to the
            record before it, or whose content does not give its hash; or a published record the
            file lacks or holds with another hash.
    """
    expect = dict(expect or {})
    previous, seq = GENESIS_HASH, 0
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                where = f"{path}:{number}"
                try:
                    line = json.loads(text)
                    got_seq, prev, digest, content = (
                        line["seq"],
                        line["prev_hash"],
                        line["record_hash"],
                        line["content"],
                    )
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
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
    return ChainFileReport(seq, seq, previous)
