"""The tamper-evident audit trail: decisions and officers' outcomes in one hash chain.

``AuditStore.open(url)`` works on SQLite (``sqlite:///FILE``, the default) and PostgreSQL
(``postgresql+psycopg://...``); ``store.verify()`` names the first altered, deleted, inserted or
reordered record, and given the server's :class:`SealKey` (``AuditStore.open(url, seal_key=...)``)
seals every record it appends and names the first whose seal is missing or wrong.
"""

from __future__ import annotations

from pipeline.audit.chain import GENESIS_HASH, canonical_json, chain_hash
from pipeline.audit.records import AuditRecord, OutcomeRecord, VerifyReport
from pipeline.audit.schema import SCHEMA_VERSION
from pipeline.audit.seal import HeadSealError, SealBrokenError, SealKey
from pipeline.audit.store import AuditStore

__all__ = [
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "AuditRecord",
    "AuditStore",
    "HeadSealError",
    "OutcomeRecord",
    "SealBrokenError",
    "SealKey",
    "VerifyReport",
    "canonical_json",
    "chain_hash",
]
