"""A decision to record, shared by the audit store's tests: one bulk-ore picture and the reason it
was judged by, every field that the chain hashes given.

Imported by putting this folder on ``sys.path`` (pytest's importlib mode does not).
"""

from __future__ import annotations

from pipeline.verdicts import Declaration, ImageVerdict, Reason, ShipmentDecision, Tier

__all__ = ["decision"]


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
) -> ShipmentDecision:
    """A decision on shipment ``shipment`` of one picture ``<shipment>.png`` scored ``score``."""
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
        declaration=Declaration(shipment_id=shipment, cargo_type="bulk_ore"),
        images=[image],
        policy_version="p1",
        policy_sha256="cd" * 32,
        model_ids=["ore-m1"],
        decided_at="2026-11-05T10:30:00.000000+00:00",
    )
