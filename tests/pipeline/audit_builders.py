"""Shared by the audit store's tests: a decision to record (one bulk-ore picture and the reason it
was judged by, every field that the chain hashes given), SQL run straight at a store, and the
record a database writer without the secret appends.

Imported by putting this folder on ``sys.path`` (pytest's importlib mode does not).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from pipeline.audit import canonical_json, chain_hash
from pipeline.audit.chain import index_columns
from pipeline.audit.seal import SealKey
from pipeline.verdicts import Declaration, ImageVerdict, Reason, ShipmentDecision, Tier

__all__ = ["append_forged", "cli_key", "decision", "sql"]


def decision(
    shipment: str,
    tier: Tier = Tier.RELEASE,
    *,
    score: float = 0.1,
    sha: str = "ab" * 32,
    phash: str | None = None,
    seen_in: list[str] | None = None,
    rule: str = "score.clear",
    reason_threshold: float | None = None,
    extra: dict[str, Any] | None = None,
) -> ShipmentDecision:
    """A decision on shipment ``shipment`` of one picture ``<shipment>.png`` scored ``score``
    (``extra``: the declaration's extra columns)."""
    image = ImageVerdict(
        path=f"{shipment}.png",
        sha256=sha,
        phash=phash,
        shipment_id=shipment,
        cargo_type="bulk_ore",
        score=score,
        threshold=0.5,
        hold_threshold=0.8,
        model_id="ore-m1",
        seen_in=seen_in,
    )
    return ShipmentDecision(
        shipment_id=shipment,
        cargo_type="bulk_ore",
        tier=tier,
        reasons=[
            Reason(
                rule=rule, tier=tier, message="m", image=image.path, score=score, threshold=reason_threshold
            )
        ],
        declaration=Declaration(shipment_id=shipment, cargo_type="bulk_ore", extra=extra or {}),
        images=[image],
        policy_version="p1",
        policy_sha256="cd" * 32,
        model_ids=["ore-m1"],
        decided_at="2026-11-05T10:30:00.000000+00:00",
    )


def sql(url: str, statement: str, **params: object) -> list[tuple[Any, ...]]:
    """Run ``statement`` on the store at ``url`` as its database's own user would; the rows it gives."""
    engine = create_engine(url)
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        found = [tuple(r) for r in result] if result.returns_rows else []
    engine.dispose()
    return found


def append_forged(url: str, content: dict[str, Any], seal: str | None) -> int:
    """What a database writer without the secret does: a record of their own after the head, its
    hash right, the head moved, ``seal`` beside it. Returns its seq."""
    head_seq, head_hash = sql(url, "SELECT seq, record_hash FROM audit_head WHERE id = 1")[0]
    body = canonical_json(content)
    digest = chain_hash(str(head_hash), body)
    seq = int(str(head_seq)) + 1
    sql(
        url,
        "INSERT INTO audit_records (seq, kind, shipment_id, tier, ref_seq, idempotency_key, created_at, "
        "content, prev_hash, record_hash, seal) VALUES (:seq, :kind, :shipment_id, :tier, :ref_seq, "
        ":idempotency_key, :created_at, :c, :p, :h, :seal)",
        seq=seq,
        c=body,
        p=head_hash,
        h=digest,
        seal=seal,
        **index_columns(content),
    )
    sql(url, "UPDATE audit_head SET seq = :s, record_hash = :h WHERE id = 1", s=seq, h=digest)
    return seq


def cli_key() -> SealKey:
    """The seal key `clearsight audit` commands run with here (the test settings' secret): a store
    they write to must have been sealed with it, since with a key every record must carry a seal."""
    from pipeline.settings import Settings, audit_seal_key

    return audit_seal_key(Settings.load())
