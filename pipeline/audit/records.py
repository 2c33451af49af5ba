"""What the audit store hands back: recorded decisions, officers' outcomes, verification reports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.verdicts import ShipmentDecision

__all__ = ["AuditRecord", "OutcomeRecord", "Problem", "VerifyReport"]

Problem = Literal["altered", "deleted", "inserted", "reordered", "forged"]


class OutcomeRecord(BaseModel):
    """An officer's finding for a recorded decision; ``found=None`` means the cargo was clean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    record_hash: str
    prev_hash: str
    created_at: str
    shipment_id: str
    decision_seq: int
    found: str | None
    officer: str
    notes: str = ""


class AuditRecord(BaseModel):
    """A recorded decision, its chain position and its latest outcome (if any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    record_hash: str
    prev_hash: str
    created_at: str
    decision: ShipmentDecision
    outcome: OutcomeRecord | None = None
    idempotency_key: str | None = None


class VerifyReport(BaseModel):
    """Result of re-computing the chain.

    ``first_bad`` is the sequence number of the first record found altered, deleted (the missing
    number), inserted, reordered or forged (its seal missing or wrong); ``in_index`` says the
    problem lies in an index row of that record (missing, altered or extra) rather than in the
    chain itself, and ``index`` which index ("image index" or "policy index").
    ``head_seq``/``head_hash`` are the chain's recorded head, worth copying somewhere else: a chain
    cut back to an earlier head can only be caught against an outside copy (its seals still match).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    records_checked: int
    first_bad: int | None = None
    problem: Problem | None = None
    in_index: bool = False
    index: str | None = None
    message: str
    head_seq: int = 0
    head_hash: str = ""
    seals: str = ""
    """What the records' seals prove, on a chain found intact: not checked (no key), how many were
    sealed (with a key, every one must be), or that the key is public (:mod:`pipeline.audit.seal`)."""
