"""The records that flow from scoring to decisions to the audit store.

The batch scorer writes one :class:`ImageVerdict` per image (a JSONL/CSV/Parquet row); the decision
layer groups them by shipment, adds the :class:`Declaration`, and produces one
:class:`ShipmentDecision` per shipment, which the audit store records. The HTTP service builds the
same objects from a request.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from datasets.manifest import CUSTOM_PREFIX, DECLARATION_COLUMNS
from datasets.shown_text import refuse_unshown
from datasets.type_names import PSEUDO_PREFIX, is_type_name

__all__ = [
    "DECLARATION_FIELDS",
    "PICTURE_FIELDS",
    "RUN_ID_PATTERN",
    "SCORE_FIELDS",
    "EXTRA_DECLARATION_KEYS",
    "OVERRIDE_FLAGS",
    "ROW_DECLARATION_KEYS",
    "AeoTierSource",
    "Declaration",
    "ImageVerdict",
    "Reason",
    "Refused",
    "ShipmentDecision",
    "Tier",
    "as_error_row",
    "declarations_as_scored",
    "field_like",
    "UNKNOWN_TYPE",
    "finding_types",
    "first_field_like",
    "scored_anomaly_types",
]

SCORE_FIELDS = ("score", "label", "anomaly_type", "type_probabilities", "signal_log_odds", "heatmap")
"""A row's fields that a model's scoring of its picture gave: an error row (a picture changed since it
was scored, a row not vouched for) holds none of them."""

PICTURE_FIELDS = (
    *("sha256", "phash", "phash_turns", "turned_phash", "scale_vs_training"),
    *("seen_in", "similar_in", "similar_bits", "similar_turn"),
)
"""A row's fields that describe its picture: an error row holds none of them either, as the audit
store indexes each image's hashes as the picture its decision was made on, and an error row's
decision was made on none (they may name another picture): kept, the old picture's bytes sent again
later were found "held before" on such a hold and raised a tier, though that picture was never
judged anomalous. The row as scored stays in the verdicts file."""


RUN_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{16}$"
"""A score run's id: its start time (UTC, to the microsecond, so that ids sort as the runs started)
and 16 random hex digits (so that two runs started in one microsecond differ)."""


def as_error_row(row: ImageVerdict, error: str) -> ImageVerdict:
    """``row`` made an error row: ``error`` set, and none of its scores nor picture hashes
    (:data:`SCORE_FIELDS`, :data:`PICTURE_FIELDS`: none was given by a model for certain, and the
    hashes may name another picture, which the audit store would index the hold under)."""
    return row.model_copy(update={**dict.fromkeys((*SCORE_FIELDS, *PICTURE_FIELDS)), "error": error})


AeoTierSource = Literal["register", "declared_unverified", "none"]
"""Where a decision's AEO tier came from: the customs authority's trader register (consulted,
whatever it gave), the declaration as sent, not checked against a register (a batch's rows without
``--trader-register``, or an officer's word), or nowhere (no tier, no register)."""


class Tier(str, enum.Enum):  # noqa: UP042 - str() and format() of members must stay as they are
    """Decision tiers, in increasing order of severity."""

    RELEASE = "RELEASE"
    REMOTE_INSPECTION = "REMOTE_INSPECTION"
    PHYSICAL_INSPECTION = "PHYSICAL_INSPECTION"

    @property
    def severity(self) -> int:
        return list(Tier).index(self)


def _number(value: Any) -> Any:
    """A score or threshold as a number: ``true`` or ``"0.5"`` in a verdict row is a mistake, not
    1.0 or 0.5 (a threshold of ``true`` would release everything below 1)."""
    if isinstance(value, bool | str):
        raise ValueError(f"expected a number, got {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_number)]
"""A float that refuses booleans and text (rows from CSV and Parquet are converted before)."""


class ImageVerdict(BaseModel):
    """One scored (or failed) image. ``error`` set means it could not be scored; score fields are None."""

    model_config = ConfigDict(extra="forbid")

    path: str
    # not checked here, where stored records are read too: an earlier version recorded any text
    # (:func:`pipeline.batch_decisions.decide_and_record` checks new rows)
    sha256: str | None = None
    shipment_id: str | None = None
    cargo_type: str | None = None
    score: Number | None = None
    label: str | None = None  # "good" | "anomalous"
    anomaly_type: str | None = None
    type_probabilities: dict[str, float] | None = None
    threshold: Number | None = None  # release threshold of the model that scored it
    hold_threshold: Number | None = None
    model_id: str | None = None
    heatmap: str | None = None
    error: str | None = None
    # The declaration as the manifest row gave it: keys of ROW_DECLARATION_KEYS or custom x_ keys
    # (checked in new rows; a decision's images are read back as they were decided)
    declaration: dict[str, Any] = Field(default_factory=dict)
    # The image's scale against its model's training images (models.inference.Prediction); None for
    # a model that does not record its training images' sizes, and in rows written before this field.
    scale_vs_training: Annotated[Number, Field(gt=0)] | None = None
    # What each fused signal said, as calibrated log-odds (models.inference.Prediction): which one
    # flagged the image or let it through. None from predictors that do not report them, and in
    # rows written before this field.
    signal_log_odds: dict[str, float] | None = None
    # Other shipments in which the same picture (by content hash) was decided before, as the audit
    # store's image index found them when this image was submitted: a photograph of other cargo, or
    # a shipment sent again under a new id. None where nobody looked (batch rows, older rows).
    seen_in: list[str] | None = None
    # The picture's perceptual hash (datasets.perceptual_hash, 80 hex digits), and the other
    # shipments in which a near-copy of it (re-encoded, resized, retouched: not the same bytes) was
    # decided, its fine hash ``similar_bits`` of 256 bits away at the nearest. None where nobody
    # looked, or for a picture with no layout to hash.
    phash: str | None = Field(default=None, pattern=r"^[0-9a-f]{80}$")
    similar_in: list[str] | None = None
    similar_bits: int | None = None
    # How this picture is the nearest near-copy named turned or mirrored (a name in
    # datasets.perceptual_hash.TURNS: "mirrored left to right", ...); None: as it was, and where
    # nobody looked.
    similar_turn: str | None = Field(default=None, max_length=64)
    # This picture's perceptual hash turned back as ``similar_turn`` says: the one that matched, so
    # that the review page finds the earlier picture without turning this one again. None as it was.
    turned_phash: str | None = Field(default=None, pattern=r"^[0-9a-f]{80}$")
    # The perceptual hashes of the picture's mirror images and turns (TURNS[1:]), for the lookups
    # while it is decided; never recorded or answered: the audit index keeps the picture's own hash.
    phash_turns: tuple[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{80}$")], ...] | None = Field(
        default=None, max_length=7, exclude=True, repr=False
    )
    # The verdict file row's seal (pipeline.row_seal), HMAC-SHA256 hex of the row's other fields under
    # a key of the audit secret: a row edited after scoring (a held picture's score lowered) no longer
    # verifies. A property of the score output's row, not of the verdict: never dumped (audit records,
    # answers), written by the row codec alone (pipeline.verdict_rows.row_data); None without a key,
    # and in rows written before this field. Not checked here: a row with a bad one fails closed.
    row_seal: str | None = Field(default=None, exclude=True, repr=False)
    # The score run that wrote the row (:data:`RUN_ID_PATTERN`), under its row seal: sealed rows of an
    # earlier run put among today's (its older model's lower scores of the same pictures) are told
    # apart from them. One per output (a --resume adopts the id of the rows it keeps). None in rows
    # written before this field and in the HTTP service's verdicts, and then left out of every dump,
    # so that their row seals, audit records and answers stay as they were.
    run_id: str | None = Field(
        default=None, pattern=RUN_ID_PATTERN, max_length=64, exclude_if=lambda value: value is None
    )

    @field_validator("type_probabilities", "signal_log_odds")
    @classmethod
    def _finite(cls, values: dict[str, float] | None, info: ValidationInfo) -> dict[str, float] | None:
        # A NaN or an infinity is written to the audit trail as null, which no record reads back
        # as a number: the shipment would not be recorded (and a stored record would look broken).
        for key, value in (values or {}).items():
            if not math.isfinite(value):
                raise ValueError(
                    f"{info.field_name}[{key!r}] = {value!r} of image {info.data.get('path')!r} is not a "
                    "finite number"
                )
        return values

    @field_validator("declaration")
    @classmethod
    def _declared_keys(cls, declaration: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if _AS_RECORDED.get():
            return declaration
        image = info.data.get("path")
        shipment = declaration.get("shipment_id")
        if shipment is not None and not isinstance(shipment, str):
            # refused here, where the reader names the file and line (pipeline.shipment_rows.row_shipment_id,
            # which refuses it too, names the image alone)
            raise ValueError(
                f"shipment_id {shipment!r} of image {image!r} is not text; give the shipment id as a "
                'string ("S1")'
            )
        for key, value in declaration.items():
            if key == "extra" and not isinstance(value, dict):
                raise ValueError(
                    f"key 'extra' of image {image!r} is a {type(value).__name__}; give it as an "
                    "object of keys of their own"
                )
            if key == "extra":
                _extra_keys(value, image)
            if key in ROW_DECLARATION_KEYS or key.startswith(CUSTOM_PREFIX):
                continue
            # a key of no field would be kept aside under extra and never reach the rules: a flag
            # under a name of its own ("solid_waste", "radiation") would release the shipment
            near = field_like(key, loose=True)
            if near is not None:
                raise ValueError(f"key {key!r} of image {image!r} looks like {near!r}; write it as {near}")
            raise ValueError(
                f"key {key!r} of image {image!r} is not a declaration field (accepted: "
                f"{', '.join(ROW_DECLARATION_KEYS)}, or a custom key starting with {CUSTOM_PREFIX!r})"
            )
        return declaration


def _extra_keys(extra: dict[Any, Any], image: Any) -> None:
    """Hold a row declaration's ``extra`` keys to the rule of its own keys: a manifest's declaration
    columns kept under extra (:data:`EXTRA_DECLARATION_KEYS`) or custom ``x_`` keys. ``{"extra":
    {"solid_waste": true}}`` passed the check of the keys above it, was kept aside and never reached
    the rules: the shipment was released.

    Raises:
        ValueError: any other key, naming it, the image and the keys accepted (or the field a
            re-spelt one looks like).
    """
    for key in extra:
        if isinstance(key, str) and (key in EXTRA_DECLARATION_KEYS or key.startswith(CUSTOM_PREFIX)):
            continue
        near = field_like(key, loose=True) if isinstance(key, str) else None
        if near is not None:
            said = "is the field" if key == near else "looks like"
            raise ValueError(
                f"extra key {key!r} of image {image!r} {said} {near!r}; write it as {near}, not under extra"
            )
        raise ValueError(
            f"extra key {key!r} of image {image!r} is not a declaration column kept under extra "
            f"(accepted: {', '.join(EXTRA_DECLARATION_KEYS)}, or a custom key starting with "
            f"{CUSTOM_PREFIX!r})"
        )


_AS_RECORDED: ContextVar[bool] = ContextVar("_AS_RECORDED", default=False)
"""Set while a decision's images and declaration are read back (:class:`ShipmentDecision`): they
were checked when they were decided, some by earlier versions that kept any key aside or took any
character in a trader id."""

_AS_SCORED: ContextVar[bool] = ContextVar("_AS_SCORED", default=False)
"""Set while an earlier score run's verdict rows are decided again (:func:`declarations_as_scored`):
the declarations built from them are read as written, without the character check."""


@contextmanager
def declarations_as_scored() -> Iterator[None]:
    """Declarations validated inside are read as an earlier score run wrote them: the character check
    of :class:`Declaration` (:func:`datasets.shown_text.refuse_unshown`: shipment_id, cargo_type,
    trader_id, aeo_tier, extra) is off, as it is for a recorded decision's
    (:class:`ShipmentDecision`); every other check stays.

    For ``clearsight decide --verdicts`` alone, around deciding rows it read from a score run's file:
    they were taken under the rules of their day (a soft hyphen in a trader id, a BOM in a goods
    description), and refused now, the run could never be decided again, nor an alarm raised since
    on one of its shipments recorded. New input keeps the check: a manifest, checked when it is read
    (:func:`datasets.manifest.iter_manifest`, for ``score`` with or without ``--policy`` and for
    ``decide --manifest``), and the HTTP service's submissions, which never enter this.
    """
    token = _AS_SCORED.set(True)
    try:
        yield
    finally:
        _AS_SCORED.reset(token)


def _characters_checked() -> bool:
    """Whether a :class:`Declaration` validated now is new input, held to the character check: not a
    recorded decision's (:data:`_AS_RECORDED`) nor an earlier score run's (:data:`_AS_SCORED`)."""
    return not (_AS_RECORDED.get() or _AS_SCORED.get())


class Declaration(BaseModel):
    """What the trader declared for a shipment, plus the flags raised by other systems.

    Unknown extra columns (HS code, origin, ...) are kept in ``extra`` and carried into the audit record.
    """

    model_config = ConfigDict(extra="forbid")

    shipment_id: str = Field(min_length=1, max_length=128)
    cargo_type: str = Field(min_length=1, max_length=64)
    trader_id: str | None = Field(default=None, max_length=128)
    aeo_tier: str | None = Field(default=None, max_length=32)  # e.g. "AEOC", "AEOS", "AEOF" or None
    # strict: "false" or 0 was read as a flag, silently ("no" and "yes" too); a batch's CSV cells
    # are made flags first (pipeline.shipment_rows.as_flag), records hold JSON true/false
    radiation_alarm: StrictBool = False
    suspected_solid_waste: StrictBool = False
    document_mismatch: StrictBool = False
    declared_foreign_inclusions: StrictBool = False
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("trader_id", mode="before")
    @classmethod
    def _trader_id_as_registered(cls, value: Any) -> Any:
        # the register strips its ids: "T-A " must be T-A, or the trader loses its tier and its
        # other keys their shipments
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("shipment_id", "cargo_type", "trader_id", "aeo_tier")
    @classmethod
    def _shown_as_sent(cls, value: str | None, info: ValidationInfo) -> str | None:
        # a record decided before, or a score run's row, keeps what it holds (the review page
        # isolates it: <bdi>); a shipment id "\u202e24-S" reads as S-42 in every message and page,
        # a cargo type "\u202ebulk_ore" picks no model but was decided and recorded under it
        if value is not None and _characters_checked():
            # a cargo type is a name of goods (models.artifact.cargo_type_problem), the joiners of
            # Persian "لوله\u200cها" included; the ids take none
            refuse_unshown(value, str(info.field_name), name=info.field_name == "cargo_type")
        return value

    @field_validator("extra")
    @classmethod
    def _no_field_in_extra(cls, extra: dict[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            field = field_like(key)
            if field is not None:
                # a flag kept aside under extra would never reach the rules: refuse, do not lose it
                raise ValueError(
                    f"extra key {key!r} is the field {field!r}; give it as {field}, not under extra"
                )
            if isinstance(value, float) and not math.isfinite(value):
                # the audit trail writes it as null: the record would say nothing was declared
                raise ValueError(
                    f"extra key {key!r} is {value}, not a finite number (the audit trail would record null)"
                )
        if _characters_checked():
            # a multi-line goods description is ordinary: refused, it stopped the whole batch, and
            # an alarm raised on another of its shipments went unrecorded
            refuse_unshown(extra, "extra", breaks=True)
        return extra


def field_like(key: str, *, loose: bool = False) -> str | None:
    """The :class:`Declaration` field ``key`` names, allowing for case, spaces, hyphens and dots
    (``RADIATION_ALARM``, ``radiation alarm``); None for a key of its own (an HS code, an origin).

    ``loose`` also takes a field run together or in CamelCase (``RadiationAlarm``), and a flag with
    a plural ``s`` or a ``flag`` after it (``radiation_alarms``, ``Radiation_Alarm_Flag``): what a
    new declaration is checked with, where a flag kept aside under extra would never reach the
    rules. Records already stored were checked with the strict form, and are read with it."""
    normal = re.sub(r"[\s\-.]+", "_", key.strip().lower())
    if normal in DECLARATION_FIELDS:
        return normal
    if not loose:
        return None
    bare = re.sub(r"[^a-z0-9]", "", key.lower())
    for field in sorted(DECLARATION_FIELDS):
        name = field.replace("_", "")
        if bare == name or (field in OVERRIDE_FLAGS and bare in (name + "s", name + "flag")):
            return field
    return None


def first_field_like(keys: Iterable[str]) -> tuple[str, str] | None:
    """(key, field) of the first of a new declaration's ``extra`` keys that is a field under another
    spelling (:func:`field_like` ``loose``); None when there is none."""
    for key in keys:
        field = field_like(key, loose=True)
        if field is not None:
            return key, field
    return None


DECLARATION_FIELDS = frozenset(Declaration.model_fields) - {"extra"}
"""The named fields of a declaration (``extra`` holds the rest)."""
OVERRIDE_FLAGS = (
    "radiation_alarm",
    "suspected_solid_waste",
    "document_mismatch",
    "declared_foreign_inclusions",
)
"""The declaration's flags that force an inspection (the policy's ``overrides``)."""
ROW_DECLARATION_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(("shipment_id", "cargo_type", *DECLARATION_COLUMNS, *sorted(DECLARATION_FIELDS), "extra"))
)
"""The keys an image verdict row's ``declaration`` may hold, besides custom ``x_`` keys: the
:class:`Declaration` fields, the other declaration columns of a manifest (``hs_code``, ``origin``,
..., kept under ``extra``), and ``extra`` itself (an object of keys of their own, as a
:class:`Declaration` dump holds them: :data:`EXTRA_DECLARATION_KEYS` or custom ``x_`` keys)."""
EXTRA_DECLARATION_KEYS: tuple[str, ...] = tuple(k for k in DECLARATION_COLUMNS if k not in DECLARATION_FIELDS)
"""The keys a row declaration's ``extra`` may hold, besides custom ``x_`` keys: the manifest's
declaration columns that are no :class:`Declaration` field (``hs_code``, ``origin``, ...)."""


class Reason(BaseModel):
    """Why a rule fired: which rule, for which image, which value against which threshold."""

    model_config = ConfigDict(extra="forbid")

    rule: str  # e.g. "override.radiation_alarm", "score.hold", "random_audit", "fail_closed.no_image"
    tier: Tier
    message: str
    image: str | None = None
    score: float | None = None
    threshold: float | None = None


class Refused(BaseModel):
    """A decision this run made that the audit store did not record (one that would lower an
    unresolved hold, or whose pictures kept being decided in other shipments meanwhile).

    Set only in a decisions file, on the decision the audit trail holds for the shipment (its
    record ``standing_seq``), so that the file never says what the trail does not; never recorded.
    ``standing_seq`` None: the trail holds no decision of the shipment, and the decision carrying
    this is the one not recorded (``clearsight decide`` leaves it out of its file)."""

    model_config = ConfigDict(extra="forbid")

    tier: Tier
    policy_version: str
    policy_sha256: str
    decided_at: str
    why: str
    standing_seq: int | None = None


class ShipmentDecision(BaseModel):
    """The decision for one shipment, with everything needed to reconstruct it later."""

    model_config = ConfigDict(extra="forbid")

    shipment_id: str
    cargo_type: str
    tier: Tier
    reasons: list[Reason]
    declaration: Declaration
    images: list[ImageVerdict]
    policy_version: str
    policy_sha256: str
    model_ids: list[str]
    random_audit: bool = False
    decided_at: str  # ISO 8601 UTC
    # Who sent the shipment: the HTTP service's caller (``submitter:3f2a9c1b0d4e``); None for batch
    # decisions and decisions recorded before this field.
    submitted_by: str | None = None
    # Where ``declaration.aeo_tier`` came from (:data:`AeoTierSource`), so that an auditor can tell
    # a registered tier from one the rows declared; None in decisions recorded before this field.
    aeo_tier_source: AeoTierSource | None = None
    # A newer decision refused by the audit store (:class:`Refused`): in a decisions file only, left
    # out of every dump when None, so that recorded decisions (and their hashes) do not carry it.
    refused: Refused | None = Field(default=None, exclude_if=lambda value: value is None)

    @field_validator("images", "declaration", mode="wrap")
    @classmethod
    def _as_decided(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # read back as they were decided: a record of an earlier version, which kept any key of a
        # row's declaration aside or took a bidi control in a trader id, stays readable (a new
        # decision is given its Declaration checked, which is not validated again)
        token = _AS_RECORDED.set(True)
        try:
            return handler(value)
        finally:
            _AS_RECORDED.reset(token)


def scored_anomaly_types(decisions: list[ShipmentDecision]) -> set[str]:
    """The anomaly types the decisions' images were scored against (their models' type heads), less
    ``good`` and the synthetic types models train on when no anomaly is labelled: what an officer
    may say inspection found, besides ``unknown``."""
    return {
        name
        for decision in decisions
        for image in decision.images
        for name in (image.type_probabilities or {})
        if name != "good" and not name.startswith(PSEUDO_PREFIX)
    }


UNKNOWN_TYPE = "unknown"
"""An anomaly of a kind nobody could name: always a finding."""


def finding_types(decision: ShipmentDecision, model_types: Iterable[str] = ()) -> list[str]:
    """The anomaly types an officer may record as found in ``decision``'s shipment (``clean``
    aside), sorted, ``unknown`` among them: those its pictures of its declared cargo type were scored
    against, and ``model_types`` (the loaded model's for that cargo type, where a service has one).
    Never another cargo type's: a puncture is no finding in a bulk-ore wagon. Only type names
    (:func:`datasets.type_names.is_type_name`): a model trained before folders were held to them
    may know a type no outcome can name.
    """
    own = [i for i in decision.images if i.cargo_type in (None, decision.cargo_type)]
    names = scored_anomaly_types([decision.model_copy(update={"images": own})]) | set(model_types)
    return sorted({n for n in names if is_type_name(n)} | {UNKNOWN_TYPE})
