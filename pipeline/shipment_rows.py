"""Verdict rows to shipments: the rows read from a verdicts file, grouped into each shipment's
declaration and images, and the idempotency key of the decision made on them.

A shipment's rows each carry the declaration their manifest row gave: :func:`declaration_from_rows`
merges them into the shipment's (the first row's values, the override flags OR-ed over all rows,
no AEO tier where rows name several traders or tiers, :func:`trader_conflicts`), and
:func:`shipments_of` groups rows by :func:`row_shipment_id`, with a trader register's tiers where
one is given. :func:`inputs_key` keys a batch decision by these inputs and the policy, so the same
rows decided again under the same policy are recorded once. The policy applied to each shipment is
:func:`pipeline.decide.decide_shipment`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydantic import ValidationError

from datasets.errors import InputError
from pipeline.trader_register import TraderRegister
from pipeline.verdicts import (
    DECLARATION_FIELDS,
    OVERRIDE_FLAGS,
    AeoTierSource,
    Declaration,
    ImageVerdict,
    ShipmentDecision,
    field_like,
    first_field_like,
)

__all__ = [
    "TRADER_FIELDS",
    "as_flag",
    "declaration_from_rows",
    "image_cargo_type",
    "inputs_key",
    "row_shipment_id",
    "shipments_of",
    "tier_source",
    "trader_conflicts",
]


TRADER_FIELDS = {"trader_id": "traders", "aeo_tier": "AEO tiers"}
"""The declaration fields that name a shipment's trader, each with the words for several of them."""


def image_cargo_type(image: ImageVerdict) -> str | None:
    """The cargo type ``image``'s model scored it as: the row's, else its row declaration's; None
    where neither says."""
    cargo = image.cargo_type or image.declaration.get("cargo_type")
    return str(cargo) if cargo else None


def trader_conflicts(rows: Iterable[ImageVerdict]) -> dict[str, list[Any]]:
    """The trader fields (``trader_id``, ``aeo_tier``) to which the rows' own declarations give more
    than one value, each with its values in the rows' order (a trader id stripped, as registered; a
    row that gives none conflicts with nothing)."""
    named: dict[str, list[Any]] = {}
    for row in rows:
        for key in TRADER_FIELDS:
            value = row.declaration.get(key)
            if key == "trader_id" and isinstance(value, str):
                value = value.strip()
            if value is None or value == "":
                continue
            values = named.setdefault(key, [])
            if value not in values:
                values.append(value)
    return {key: values for key, values in named.items() if len(values) > 1}


def row_shipment_id(row: ImageVerdict) -> str:
    """The shipment ``row`` belongs to: its ``shipment_id``, else its declaration's.

    Raises:
        InputError: none, or one that is no text (a list or an object: put in a set, it failed as
            an unexpected TypeError; made text, ``['S1']`` became a shipment of its own), naming
            the row's image.
    """
    shipment = row.shipment_id or row.declaration.get("shipment_id")
    if not isinstance(shipment, str) and shipment not in (None, ""):
        raise InputError(
            f"image {row.path!r}: shipment_id {shipment!r} is not text; give the shipment id as a "
            'string ("S1")'
        )
    if not shipment:
        raise InputError(f"image {row.path!r} has no shipment_id (set the row's shipment_id or declaration)")
    return shipment


def declaration_from_rows(shipment_id: str, rows: Sequence[ImageVerdict]) -> Declaration:
    """Build a shipment's declaration from its rows' ``declaration`` dicts.

    The first row's values win (empty ones, and a trader id of blanks, say nothing), except the
    override flags, which are OR-ed over all rows: a flag raised on any row must not be lost
    because another row was written without it; and the trader:
    rows naming different traders or AEO tiers (:func:`trader_conflicts`) give the shipment no AEO
    tier, and no trader where the traders differ, as the first row's would lend its tier to another
    trader's pictures. Keys that are not :class:`Declaration` fields go to ``extra``.

    Raises:
        InputError: no cargo type anywhere, a trader_id or aeo_tier that is no text on any row, or
            a value that does not validate (named).
    """
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    fields = DECLARATION_FIELDS
    for row in rows:
        for key, value in row.declaration.items():
            near = field_like(key, loose=True) if key not in fields else None
            if near is not None:
                raise InputError(
                    f"shipment {shipment_id!r}: declaration key {key!r} looks like {near!r}; write it as "
                    f"{near} (an unrecognised key is kept aside, so a misspelt flag would be lost)"
                )
            if key == "extra" and isinstance(value, dict):
                aside = first_field_like(value)
                if aside is not None:
                    raise InputError(
                        f"shipment {shipment_id!r}: declaration extra key {aside[0]!r} looks like "
                        f"{aside[1]!r}; give it as {aside[1]} (a flag kept aside under extra would be lost)"
                    )
                for k, v in value.items():
                    extra.setdefault(k, v)
            elif key in fields:
                if key in TRADER_FIELDS:
                    value = _trader_text(value, shipment_id, key, row)
                if key in OVERRIDE_FLAGS:
                    merged[key] = bool(merged.get(key)) or as_flag(value, shipment_id, key)
                elif value is not None and value != "":
                    # an empty cell says nothing: a first row without a trader took the shipment's
                    # trader (and AEO tier) away, a last row did not
                    merged.setdefault(key, value)
            else:
                extra.setdefault(key, value)
    merged["shipment_id"] = shipment_id
    conflicts = trader_conflicts(rows)
    for key in ("trader_id", "aeo_tier") if conflicts else ():
        if key in conflicts or key == "aeo_tier":
            merged[key] = None
    if not merged.get("cargo_type"):
        merged["cargo_type"] = next((c for c in (image_cargo_type(r) for r in rows) if c), None)
    if not merged.get("cargo_type"):
        raise InputError(f"shipment {shipment_id!r}: no cargo_type in its rows or their declaration")
    try:
        return Declaration.model_validate({**merged, "extra": extra})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"shipment {shipment_id!r}: invalid declaration: {problems}") from exc


def _trader_text(value: Any, shipment_id: str, key: str, row: ImageVerdict) -> str | None:
    """A row's ``trader_id`` (stripped, as registered and as :func:`trader_conflicts` reads it) or
    ``aeo_tier``, whichever row it is on: a trader id of blanks on the first row took the
    shipment's trader (and tier) away, on a later one not.

    Raises:
        InputError: a value that is no text (a number, a list), on any row: only the first row's
            was refused (by the declaration), a later one's was passed over.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(
            f"shipment {shipment_id!r}: {key} {value!r} of image {row.path!r} is not text; give it as a "
            'string ("T-1", "AEOF") or leave it empty'
        )
    return value.strip() if key == "trader_id" else value


_TRUE = {"true", "1", "yes", "y", "t", "on"}
_FALSE = {"false", "0", "no", "n", "f", "off", ""}


def as_flag(value: Any, shipment_id: str, key: str) -> bool:
    """A flag from JSON or a CSV cell; anything unrecognised is refused rather than guessed."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InputError(f"shipment {shipment_id!r}: flag {key} = {value!r} is not a boolean (true/false, 1/0)")


def tier_source(register: TraderRegister | None) -> AeoTierSource | None:
    """The AEO tier source of shipments grouped by :func:`shipments_of` with ``register``: the
    register's where one is given, else (None) as their rows declare it."""
    return "register" if register is not None else None


def shipments_of(
    rows: Iterable[ImageVerdict], *, register: TraderRegister | None = None
) -> Iterator[tuple[Declaration, list[ImageVerdict]]]:
    """Image rows grouped by shipment, each with the declaration built from its rows, in order of
    each shipment's first row (all rows are read first: a shipment's need not be adjacent). With a
    ``register``, each trader's AEO tier is the registered one (none for an unregistered trader, or
    where the rows name several traders or tiers), whatever the rows declare: a tier lowers scrutiny.

    Raises:
        InputError: a row without a shipment id, or a shipment whose declaration does not validate.
    """
    groups: dict[str, list[ImageVerdict]] = {}
    for row in rows:
        groups.setdefault(row_shipment_id(row), []).append(row)
    for shipment_id, images in groups.items():
        declaration = declaration_from_rows(shipment_id, images)
        if register is not None:
            tier = None if trader_conflicts(images) else register.tier_of(declaration.trader_id)
            if tier != declaration.aeo_tier:
                declaration = declaration.model_copy(update={"aeo_tier": tier})
        yield declaration, images


def inputs_key(decision: ShipmentDecision) -> str:
    """Idempotency key of a batch decision: the shipment's inputs and the policy, not the decision time.

    ``clearsight score --policy`` and ``clearsight decide`` share it, so the same verdicts decided under
    the same policy are recorded once, whichever command (or resumed run) records them. Every input
    the decision rests on is in it: the declaration (a radiation alarm raised later is a new
    decision, not a retry of the old one), where its AEO tier came from (a register confirming a
    declared tier is a new decision), the earlier holds it carried over (its
    ``override.image_held_before`` reasons: a hold raised, or cleared, on another shipment since
    is a new decision, not answered by the record made before), each image's thresholds, scale
    and cargo type as well as its score, each image's own row declaration of what decides beyond
    the shipment's (:func:`_deciding_declaration`: its cargo type) where the rows of the shipment do
    not all declare it alike (a picture re-declared as another cargo fails closed, and must not be
    answered by the release recorded before), and the traders or tiers its rows name where they
    differ (:func:`trader_conflicts`).

    Rows that declare alike what decides add nothing to the key, whatever else they declare (each
    manifest row's own container_id, hs_code or x_ keys, as ``clearsight score`` writes them): the
    shipment's declaration says all that decides, and the key stays the one earlier versions
    recorded, so a run again over unchanged inputs is still answered from its record (not recorded
    again beside another record of the shipment made since, a what-if under another policy).

    The HTTP service keys a submission otherwise (its declaration and its pictures' hashes, known
    before anything is scored), so that a client's retry of the same request is answered from its
    record whatever was decided elsewhere since.
    """
    inputs: dict[str, Any] = {
        "policy_sha256": decision.policy_sha256,
        "shipment_id": decision.shipment_id,
        "declaration": decision.declaration.model_dump(mode="json"),
        "aeo_tier_source": decision.aeo_tier_source,
        # the carried holds as the decision states them: shipment, tier, rules and audit record
        "held_before": sorted(
            (r.image or "", r.tier.value, r.message)
            for r in decision.reasons
            if r.rule == "override.image_held_before"
        ),
        "images": sorted(
            (
                image.path,
                image.sha256 or "",
                repr(image.score),
                image.error or "",
                image.model_id or "",
                repr(image.threshold),
                repr(image.hold_threshold),
                repr(image.scale_vs_training),
                image.cargo_type or "",
            )
            for image in decision.images
        ),
    }
    declared = [(image.path, _canonical_json(_deciding_declaration(image))) for image in decision.images]
    if len({text for _, text in declared}) > 1:
        # each row's own declared cargo type decides too: a picture declared another cargo than its
        # shipment's fails closed
        inputs["row_declarations"] = sorted(declared)
    conflicts = trader_conflicts(decision.images)
    if conflicts:  # rows naming several traders or tiers: the shipment takes none (its reason says so)
        inputs["trader_conflicts"] = _canonical_json(conflicts)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()
    return f"decision:{decision.shipment_id[:100]}:{digest}"


def _deciding_declaration(image: ImageVerdict) -> dict[str, Any]:
    """What ``image``'s own row declaration decides beyond the shipment's declaration (which the key
    holds): its cargo type, an empty one as none. The override flags are OR-ed into the shipment's
    declaration, and a trader named on one row and not another is the shipment's (rows naming
    different ones are :func:`trader_conflicts`, keyed apart), so a flag raised on one row only, as a
    manifest raises it, keeps the key earlier versions recorded; the free keys (container_id,
    hs_code, x_ keys) decide nothing."""
    cargo = image.declaration.get("cargo_type")
    return {"cargo_type": None if cargo == "" else cargo}


def _canonical_json(value: dict[str, Any]) -> str:
    """``value`` as JSON with sorted keys, so that equal declarations read alike (a value JSON does not
    know, from a Parquet file, say, as its text)."""
    return json.dumps(value, sort_keys=True, default=str)
