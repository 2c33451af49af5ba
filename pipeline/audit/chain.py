"""The hash chain: canonical JSON content and ``record_hash = sha256(prev_hash + content)``.

Decisions and outcomes share one chain. The sequence number is deliberately *not* hashed: the
order is carried by the ``prev_hash`` links, so that :mod:`pipeline.audit.verify` can tell a record
moved to another position ("reordered") from one whose content changed ("altered").
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["GENESIS_HASH", "canonical_json", "chain_hash", "created_at_now", "index_columns"]

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record."""


def canonical_json(content: Any) -> str:
    """JSON with sorted keys, no insignificant whitespace, UTF-8 text and no NaN/Infinity.

    Raises:
        ValueError: content holds NaN or infinity (not representable in strict JSON).
    """
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(prev_hash: str, content: str) -> str:
    """``sha256(prev_hash + content)`` as 64 lowercase hex digits."""
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


def created_at_now() -> str:
    """The ``created_at`` of a record appended now (and of a schema made now): UTC, to the microsecond."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def index_columns(content: dict[str, Any]) -> dict[str, Any]:
    """The queryable columns a record's content implies (the store writes them, verify checks them)."""
    decision = content.get("decision") or {}
    return {
        "kind": content.get("kind"),
        "shipment_id": content.get("shipment_id"),
        "tier": decision.get("tier") if content.get("kind") == "decision" else None,
        "ref_seq": content.get("decision_seq"),
        "idempotency_key": content.get("idempotency_key"),
        "created_at": content.get("created_at"),
    }
