"""The tamper-evident audit trail: decisions and officers' outcomes in one hash chain.

``AuditStore.open(url)`` works on SQLite (``sqlite:///FILE``, the default) and PostgreSQL
(``postgresql+psycopg://...``); ``store.verify()`` names the first altered, deleted, inserted or
reordered record.
"""

from __future__ import annotations

from pipeline.audit.chain import GENESIS_HASH, canonical_json, chain_hash
from pipeline.audit.records import AuditRecord, OutcomeRecord, VerifyReport
from pipeline.audit.schema import SCHEMA_VERSION
from pipeline.audit.store import AuditStore

__all__ = [
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "AuditRecord",
    "AuditStore",
    "OutcomeRecord",
    "VerifyReport",
    "canonical_json",
    "chain_hash",
]
