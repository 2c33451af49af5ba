"""Request and response bodies of the HTTP API (what the OpenAPI document shows, with examples)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from datasets.shown_text import refuse_unshown
from datasets.type_names import TYPE_NAME_PATTERN, TYPE_NAME_RULE, is_type_name
from models.inference import Prediction
from pipeline.resolution import SCALE_TOLERANCE
from pipeline.settings import MAX_OUTCOME_NOTES_CHARS
from pipeline.verdicts import ShipmentDecision, Tier

__all__ = [
    "MAX_SEQ",
    "RECORDED_ID_PATTERN",
    "SHIPMENT_ID_PATTERN",
    "Health",
    "LatestDecision",
    "ModelCards",
    "OutcomeFor",
    "OutcomeIn",
    "OutcomeOut",
    "Readiness",
    "ScoreResponse",
    "ScoredImage",
    "ShipmentResponse",
    "ThresholdsOut",
    "found_type_name",
    "shown_notes",
]

SHIPMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SHIPMENT_ID_RE = re.compile(SHIPMENT_ID_PATTERN)

CLEAN = "clean"
"""What an officer records when the inspection found nothing."""

MAX_SEQ = 2**63 - 1
"""The largest audit seq a database's integer column holds (SQLite's, PostgreSQL's BIGINT): a
larger one never names a record, and the database driver fails on it (a 500) rather than finding
none."""


class ThresholdsOut(BaseModel):
    release: float = Field(description="Scores below this are released (label good).")
    hold: float = Field(description="Scores at or above this warrant a physical hold.")
    target_miss_rate: float
    method: str


class ScoredImage(BaseModel):
    """One uploaded image's verdict."""

    filename: str = Field(description="The upload's file name, as sent (a label only; never used as a path).")
    sha256: str
    width: int
    height: int
    score: float = Field(ge=0.0, le=1.0)
    label: str = Field(examples=["anomalous"])
    anomaly_type: str | None = Field(examples=["foreign_object"])
    type_probabilities: dict[str, float]
    thresholds: ThresholdsOut
    model_id: str
    heatmap_png_base64: str | None = Field(
        default=None,
        description="Heatmap overlay as a base64 PNG, only when heatmap=true was asked; drawn with its "
        "longer side at most 2048 px (the image's proportions kept), not at the image's width x height.",
    )
    scale_vs_training: float | None = Field(
        default=None,
        description="How the image is resized for the model against how its training images were "
        "(1.0: the same; 2.5: enlarged 2.5x more, so less detail or a closer view; 0.4: shrunk 2.5x "
        f"more, so a wider view or a sharper image). Outside {1 / SCALE_TOLERANCE:g}-{SCALE_TOLERANCE:g} "
        "the score was never validated, and a shipment is not released on it. Null for a model that "
        "does not record its training images' sizes.",
    )
    signal_log_odds: dict[str, float] | None = Field(
        default=None,
        description="What each fused signal of the model said, as calibrated log-odds (one_class, "
        "type_head, patch_head; a signal the model does not use is absent). The score is the sigmoid "
        "of their sum (a model fused by the max: of their max), so they show which signal flagged "
        "the image. Null for a model that does not report them.",
    )

    @classmethod
    def build(
        cls,
        *,
        filename: str,
        sha256: str,
        shape: tuple[int, ...],
        prediction: Prediction,
        heatmap: str | None,
    ) -> ScoredImage:
        t = prediction.thresholds
        return cls(
            filename=filename,
            sha256=sha256,
            width=int(shape[1]),
            height=int(shape[0]),
            score=float(prediction.score),
            label=prediction.label,
            anomaly_type=prediction.anomaly_type,
            type_probabilities={k: float(v) for k, v in prediction.type_probabilities.items()},
            thresholds=ThresholdsOut(
                release=t.release, hold=t.hold, target_miss_rate=t.target_miss_rate, method=t.method
            ),
            model_id=prediction.model_id,
            heatmap_png_base64=heatmap,
            scale_vs_training=prediction.scale_vs_training,
            signal_log_odds=prediction.signal_log_odds,
        )


class ScoreResponse(BaseModel):
    """``POST /v1/score``: verdicts only, nothing recorded."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "5b0c3f6a9d2e4f1a8c7b6a5d4e3f2a1b",
                    "cargo_type": "bulk_ore",
                    "model_ids": ["bulk_ore-lite0-3f2a9c1b0d4e5f6a"],
                    "policy_version": "2025.1",
                    "images": [
                        {
                            "filename": "hold3.jpg",
                            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                            "width": 640,
                            "height": 480,
                            "score": 0.91,
                            "label": "anomalous",
                            "anomaly_type": "foreign_object",
                            "type_probabilities": {"good": 0.05, "foreign_object": 0.9, "wet_patch": 0.05},
                            "thresholds": {
                                "release": 0.42,
                                "hold": 0.8,
                                "target_miss_rate": 0.01,
                                "method": "miss_rate_on_validation",
                            },
                            "model_id": "bulk_ore-lite0-3f2a9c1b0d4e5f6a",
                            "heatmap_png_base64": None,
                            "scale_vs_training": 1.0,
                            "signal_log_odds": {"one_class": 1.2, "type_head": 1.1},
                        }
                    ],
                }
            ]
        }
    )

    request_id: str
    cargo_type: str
    model_ids: list[str]
    policy_version: str
    images: list[ScoredImage]


class OutcomeOut(BaseModel):
    """An officer's recorded finding, as the audit trail holds it."""

    seq: int = Field(description="The outcome's own position in the audit chain.")
    record_hash: str
    prev_hash: str
    created_at: str = Field(description="When it was recorded (ISO 8601, UTC).")
    shipment_id: str
    decision_seq: int = Field(description="The decision (its seq) the outcome judges.")
    found: str = Field(
        examples=["clean", "foreign_object"],
        description="'clean', or the anomaly type found, as the officer sent it (before this release "
        "'clean' read back as null).",
    )
    officer: str = Field(description="The officer's key, by name (role and fingerprint).")
    notes: str = ""

    @classmethod
    def of(cls, outcome: Any) -> OutcomeOut:
        """From the audit store's record, which keeps 'clean' as found=None."""
        return cls(**{**outcome.model_dump(mode="json"), "found": outcome.found or CLEAN})


class LatestDecision(BaseModel):
    """The shipment's latest decision, where an answer is about an earlier one."""

    seq: int = Field(description="The latest decision's position in the audit chain.")
    tier: Tier = Field(description="The tier the shipment stands at, as that decision has it.")


class ShipmentResponse(BaseModel):
    """A recorded decision: ``POST /v1/shipments`` (new or replayed), ``GET /v1/shipments/{id}``
    and an outcome's answer, the decision it was recorded on."""

    request_id: str
    seq: int = Field(description="Position in the audit chain; a retried submission returns the same seq.")
    record_hash: str
    idempotency_key: str | None = None
    policy_version: str
    model_ids: list[str]
    decision: ShipmentDecision
    outcome: OutcomeOut | None = Field(
        default=None, description="The officer's recorded outcome of this decision, if any."
    )
    superseded_by: LatestDecision | None = Field(
        default=None,
        description="The shipment's latest decision where it is not this one: an outcome's answer "
        "after a correction (amend) of an earlier decision's finding, or where the shipment was "
        "decided again while the outcome was written. The shipment stands at that decision's tier, "
        "which takes its own outcome; null where this decision is the latest.",
    )


class SubmissionReceipt(BaseModel):
    """What ``POST /v1/shipments`` tells a submitter: the tier to act on and the record to cite.

    Scores, thresholds, reasons, the officer's outcome and whether a random audit chose the shipment
    stay with officers: a submitter who saw them could tune pictures until they pass, or resubmit
    under another id what an audit picked.
    """

    request_id: str
    shipment_id: str
    tier: Tier
    seq: int = Field(description="Position in the audit chain; a retried submission returns the same seq.")
    record_hash: str
    decided_at: str
    policy_version: str


def shown_notes(notes: str) -> str:
    """``notes`` as sent, refused (``ValueError``, the field's error) if they hold a character that
    does not show as itself: free text, taking tabs, line breaks and the joiners
    (:func:`datasets.shown_text.refuse_unshown`). The JSON routes' and the review page's form's."""
    refuse_unshown(notes, "notes", breaks=True)
    return notes


def found_type_name(found: str) -> str:
    """``found`` as sent, refused (``ValueError``, the field's error) if it is not a type name
    (:data:`datasets.type_names.TYPE_NAME_RULE`): the pattern cannot refuse the names training keeps
    for its synthetic classes, which ``new_type`` then let into the trail for good. ``clean`` and
    ``unknown`` are type names. The JSON routes' and the review page's form's."""
    if not is_type_name(found):
        raise ValueError(f"found {found!r} is not a type name: {TYPE_NAME_RULE}")
    return found


class OutcomeIn(BaseModel):
    """What the officer found: ``clean`` or an anomaly type, with optional notes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"found": "foreign_object", "notes": "scrap cable in hold 3"},
                {"found": "clean", "notes": ""},
            ]
        },
    )

    found: Annotated[str, AfterValidator(found_type_name)] = Field(
        min_length=1,
        max_length=64,
        pattern=TYPE_NAME_PATTERN,
        description="'clean', or the anomaly type found.",
    )
    # refused here, before the store refuses them too: a 422 naming the field, as any other
    # field's; an ESC or a bidi override was kept in the trail for good
    notes: Annotated[str, AfterValidator(shown_notes)] = Field(default="", max_length=MAX_OUTCOME_NOTES_CHARS)
    # strict, here and below: true was read as decision 1 (and judged it), "7" as 7, "false" as false
    decision_seq: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_SEQ,
        description="The decision (its seq) the officer judged: refused with 409 if the shipment has "
        "been decided again since, but for a correction (amend) of a finding recorded on it. "
        "Required (409 otherwise) where the shipment has more than one decision, so that the outcome "
        "judges none recorded after the officer looked.",
    )
    new_type: StrictBool = Field(
        default=False,
        description="'found' names a kind of anomaly the shipment's model does not know; without it, "
        "'found' must be 'clean', 'unknown' or a type the shipment was scored against or its cargo "
        "type's model knows (422 otherwise: a typo would be kept in the audit trail for good).",
    )
    amend: StrictBool = Field(
        default=False,
        description="Correct an outcome already recorded for this decision; on an earlier one of the "
        "shipment (decision_seq), only a finding (one recorded by mistake holds its pictures whenever "
        "sent again): a clean outcome there is refused with 409, as the cargo was decided again since. "
        "Without it, a second outcome is refused with 409 (two officers must not overwrite each "
        "other's finding unawares).",
    )


RECORDED_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
"""A shipment id as recorded: a batch's may hold '/' or spaces, which the service's own ids do not."""


class OutcomeFor(OutcomeIn):
    """An outcome naming its shipment in the body (``POST /v1/outcomes``): any recorded id, a
    batch's with '/' or spaces included, which a path cannot carry whole."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"shipment_id": "SHP/2026/0001", "found": "clean", "notes": ""}]},
    )

    shipment_id: str = Field(pattern=RECORDED_ID_PATTERN, description="The shipment's id, as recorded.")


class ModelCards(BaseModel):
    models: list[dict[str, Any]]


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    """Open to anyone (a load balancer asks): which models and policy are loaded is for officers
    (``GET /v1/models``)."""

    status: str = Field(examples=["ready"])
    models_loaded: int
    audit: str
