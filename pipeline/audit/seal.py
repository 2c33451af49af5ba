"""Keyed seals on the audit chain: ``seal = HMAC-SHA256(K, record_hash)``, one per record.

The hash chain alone is public arithmetic: anyone who may write to the database can append a record
(a "clean" outcome that lifts a hold, by any officer, backdated) with one sha256 and move the head
row, and every check of the chain passes. A seal is made with a key only the server holds, so a
record added or rewritten by a database writer without it carries no seal, or a wrong one.

``K = HMAC-SHA256(audit_secret, b"clearsight audit seal v1")``: derived from the server's
``audit_secret`` under its own label, so the seals and the random-audit draws made with the same
secret never share a key.

What the seals do not prove: a holder of the secret can seal anything; a chain cut back to an
earlier record (its head row moved back) still carries valid seals, which only a head published
elsewhere catches (``clearsight audit verify --expect``); records written without a key, or before
sealing began, carry none (:class:`SealCheck` reports them before the first sealed record and
refuses them after it, where a forger would otherwise leave seals off).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import NamedTuple

from sqlalchemy import Connection, inspect, text

from pipeline.audit.schema import audit_records

__all__ = ["SEAL_LABEL", "SealCheck", "SealKey", "add_seal_column", "has_seal_column", "seals_unchecked"]

SEAL_LABEL = b"clearsight audit seal v1"
"""The label the seal key is derived under (domain separation from the random-audit draws)."""


class SealKey(NamedTuple):
    """The key records are sealed and checked with. ``weak``: derived from the public development
    secret (or one short enough to guess), so that anyone can compute the seals."""

    key: bytes
    weak: bool = False

    @classmethod
    def derive(cls, secret: str | bytes, *, weak: bool = False) -> SealKey:
        """``K = HMAC-SHA256(secret, SEAL_LABEL)`` of the server's ``audit_secret``."""
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        return cls(hmac.new(raw, SEAL_LABEL, hashlib.sha256).digest(), weak)

    def seal(self, record_hash: str) -> str:
        """The seal of a record: ``HMAC-SHA256(K, record_hash)`` as 64 lowercase hex digits."""
        return hmac.new(self.key, record_hash.encode("ascii"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"SealKey(weak={self.weak})"


class SealCheck:
    """The seals of a chain, checked record by record in chain order (constant memory).

    A record with a seal must carry the one its hash gives. A record without one is counted while
    no record before it is sealed (written before sealing began, or by a writer without the key);
    after a sealed record it is refused: a forger without the key would otherwise leave seals off.
    """

    def __init__(self, key: SealKey) -> None:
        self.key = key
        self._mac = hmac.new(key.key, digestmod=hashlib.sha256)  # copied per record: the key's pad once
        self.unsealed = 0  # records before the first sealed one
        self.first_sealed: int | None = None

    def check(self, seq: int, record_hash: str, seal: object) -> str | None:
        """Why record ``seq`` fails its seal, or None."""
        if seal is None or seal == "":
            if self.first_sealed is None:
                self.unsealed += 1
                return None
            return (
                f"record {seq}: carries no seal, though record {self.first_sealed} before it is sealed: "
                "written without the server's key (forged, or by a writer not given the key)"
            )
        mac = self._mac.copy()
        mac.update(record_hash.encode("utf-8", "surrogatepass"))
        if not isinstance(seal, str) or not hmac.compare_digest(mac.hexdigest(), seal):
            why = (
                " (checked with the public development audit_secret or one too short: set "
                "CLEARSIGHT_AUDIT_SECRET to the server's, or check without seals)"
                if self.key.weak
                else ""
            )
            return f"record {seq}: forged or altered (its seal does not match){why}"
        if self.first_sealed is None:
            self.first_sealed = seq
        return None

    def summary(self, checked: int) -> str:
        """What the seals of ``checked`` records, all of them passed, prove: a line for the report."""
        if self.first_sealed is None:
            said = (
                f"none of the {checked} records carries a seal (written before sealing or without a key): "
                "the chain proves no more than its hashes"
                if checked
                else "no records to check seals of"
            )
        else:
            said = f"{checked - self.unsealed} records sealed, every seal matches"
            if self.unsealed:
                said += (
                    f"; {self.unsealed} records before seq {self.first_sealed} carry no seal "
                    "(written before sealing or without a key)"
                )
        if self.key.weak:
            said += (
                "; the seals were checked with the public development audit_secret (or one shorter than "
                "16 characters): anyone can compute them, so they prove nothing"
            )
        return said


def seals_unchecked() -> str:
    """The report's line when no key was given."""
    return (
        "seals not checked (no key: set CLEARSIGHT_AUDIT_SECRET to the server's): a database writer "
        "could have added or rewritten records"
    )


def has_seal_column(conn: Connection) -> bool:
    """Whether the store's ``audit_records`` has the ``seal`` column (schema version 5)."""
    return any(column["name"] == "seal" for column in inspect(conn).get_columns(audit_records.name))


def add_seal_column(conn: Connection) -> None:
    """Give ``audit_records`` its nullable ``seal`` column (schema version 5), where it has none:
    records written before stay unsealed."""
    if not has_seal_column(conn):
        conn.execute(text("ALTER TABLE audit_records ADD COLUMN seal VARCHAR(64)"))
