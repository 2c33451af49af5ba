"""Declarations taken again from a manifest: a shipment re-decided after its declaration changed.

A radiation alarm raised, or a document mismatch found, after the archive was scored changes the
shipment's decision but not one score. ``clearsight decide --verdicts ROWS --manifest MANIFEST``
decides each shipment the manifest lists under the declaration it gives now (every row of the
shipment merged, as the scorer's rows are: flags OR-ed, the first row's values), so nothing is
scored again. Only a flag the manifest has a column for is taken from it: one it has no column for
(a manifest from another system, say) says nothing of the flag, and the rows' raised flag stands.
Each row keeps its own picture's cargo type from the manifest, so that a picture now declared
another cargo than its model's fails closed as it would have when scored. A picture the manifest
lists under a shipment but the rows lack was never scored: it becomes an error row, and the
shipment is never released. Shipments the manifest does not list keep the declaration their rows
carry; shipments it lists without a row are left undecided (another batch's, say) and named. A row
names its picture as the scorer writes it (a name that is not UTF-8 escaped), and is matched to the
manifest's picture through that text read back into the file's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from pipeline.score.batch import earlier_printable_path, path_of_printable, printable_path
from pipeline.shipment_rows import as_flag, declaration_from_rows
from pipeline.verdicts import OVERRIDE_FLAGS, ImageVerdict

__all__ = ["NEVER_SCORED", "Listed", "Redeclared", "read_declarations", "redeclare"]


@dataclass
class Listed:
    """One shipment as the manifest gives it now: its merged declaration (a row's ``declaration``
    dict, which :func:`pipeline.shipment_rows.declaration_from_rows` reads back unchanged), each listed
    picture (resolved path) with its own row's cargo type, and the flags the manifest gives (has a
    column for, on any row of the shipment): only those may clear a flag the scored rows raised.
    ``traders``: each listed picture's own row's trader_id and aeo_tier, where it gives them, so that
    rows naming different traders are decided as such (no AEO tier, said)."""

    declaration: dict[str, Any]
    pictures: dict[str, str]
    flags: frozenset[str]
    traders: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Redeclared:
    """What :func:`redeclare` did, by shipment id."""

    shipments: set[str] = field(default_factory=set)
    """Shipments decided under the manifest's declaration."""
    unscored: set[str] = field(default_factory=set)
    """Listed with no row at all: not decided here."""
    missing_pictures: dict[str, int] = field(default_factory=dict)
    """Listed pictures with no row, per shipment: each an error row, never released."""
    cleared: dict[str, list[str]] = field(default_factory=dict)
    """Flags the rows raised that the manifest's column for the flag now says are not, per shipment."""
    flagged_unscored: dict[str, list[str]] = field(default_factory=dict)
    """Flags raised on shipments of ``unscored``: no decision here carries them."""


_TRADER = ("trader_id", "aeo_tier")
"""Declaration fields each listed picture keeps from its own row, as its cargo type: rows that
disagree on them give the shipment no AEO tier (pipeline.shipment_rows.trader_conflicts)."""


def _shipment(value: Any) -> str:
    return str(value).strip()


NEVER_SCORED = (
    "listed under this shipment in the manifest, but no verdict row has this path: never scored, or "
    "scored under another path"
)
"""The error of a picture the manifest lists that no row has. Kept in the audit record and in the
decision's idempotency key, so it names no file: a copy of the manifest under another name must not
make the same decision a new one (a new hold over one an officer has lifted)."""


def read_declarations(manifest: Path) -> dict[str, Listed]:
    """Each shipment as ``manifest`` gives it now, by (stripped) shipment id.

    Raises:
        DatasetFormatError, UnsafePathError: from the manifest reader, naming the line.
        InputError: a shipment whose declaration does not validate, naming the manifest and line.
    """
    from datasets.manifest import iter_manifest

    rows: dict[str, list[ImageVerdict]] = {}
    lines: dict[str, int] = {}
    given: dict[str, set[str]] = {}
    for row in iter_manifest(manifest, check_files=False):  # the images were read when scored
        shipment = _shipment(row.shipment_id)
        lines.setdefault(shipment, row.line)
        # the row's declaration has a key for each column the manifest has (a JSON line, its own)
        given.setdefault(shipment, set()).update(f for f in OVERRIDE_FLAGS if f in row.declaration)
        rows.setdefault(shipment, []).append(
            ImageVerdict(path=str(row.path), shipment_id=shipment, declaration=dict(row.declaration))
        )
    listed = {}
    for shipment, images in rows.items():
        try:
            declaration = declaration_from_rows(shipment, images)
        except InputError as exc:
            raise InputError(f"--manifest {str(manifest)!r}, line {lines[shipment]}: {exc}") from exc
        listed[shipment] = Listed(
            declaration.model_dump(mode="json"),
            {
                image.path: str(image.declaration.get("cargo_type") or declaration.cargo_type)
                for image in images
            },
            frozenset(given[shipment]),
            {
                image.path: {k: image.declaration[k] for k in _TRADER if image.declaration.get(k)}
                for image in images
            },
        )
    return listed


def _flags(declaration: dict[str, Any]) -> set[str]:
    """The override flags a declaration (as a row's dict) raises."""
    return {flag for flag in OVERRIDE_FLAGS if declaration.get(flag)}


def _raised(rows: list[ImageVerdict], shipment: str, given: frozenset[str]) -> set[str]:
    """The flags the rows of one shipment raise, OR-ed over its rows as they would be decided (each
    flag read alone: the rows' declaration need not validate where the manifest's replaces it).

    Raises:
        InputError: a flag that is no boolean on a row, where the manifest has no column to
            replace it (deciding from the rows alone refuses it too).
    """
    raised = set()
    for row in rows:
        for flag in OVERRIDE_FLAGS:
            try:
                if as_flag(row.declaration.get(flag), shipment, flag):
                    raised.add(flag)
            except InputError as exc:
                if flag not in given:
                    raise InputError(
                        f"--verdicts {exc}, and --manifest has no {flag} column to give it"
                    ) from exc
    return raised


def _earlier_texts(pictures: dict[str, str]) -> dict[str, str]:
    """The listed pictures a version before backslashes were escaped named otherwise than today's
    does (:func:`~pipeline.score.batch.earlier_printable_path`), by that earlier text: a few names
    in an archive, if any."""
    earlier = {}
    for picture in pictures:
        text = earlier_printable_path(picture)
        if text != printable_path(picture):
            earlier[text] = picture
    return earlier


def _picture(text: str, pictures: dict[str, str], earlier: dict[str, str]) -> str | None:
    """The picture of ``pictures`` (resolved paths) that a row naming ``text`` is of, or None.

    The scorer writes a name that is not UTF-8, or holds a ``\\xNN`` itself, escaped
    (:func:`~pipeline.score.batch.printable_path`): compared as it is, its row matched no picture,
    or another's (``caf\\xe9.png`` typed is the text of the file named ``caf<0xE9>.png``). The text
    is read back into its file's name first, as the scorer's resume reads it, and only where no file
    has that name today is it taken for the text an earlier version gave a listed picture."""
    path = path_of_printable(text)
    if path is not None:
        picture = os.path.realpath(path)
        if picture in pictures:
            return picture
        if os.path.lexists(path):  # today's text of a file that is there: not another's earlier one
            return None
    return earlier.get(os.path.realpath(text))


def redeclare(rows: list[ImageVerdict], listed: dict[str, Listed]) -> tuple[list[ImageVerdict], Redeclared]:
    """``rows`` with each listed shipment's rows under its declaration from ``listed``
    (:func:`read_declarations`), and an error row for each listed picture without a row."""
    done = Redeclared()
    by_shipment: dict[str, list[int]] = {}
    for n, row in enumerate(rows):
        shipment = row.shipment_id or row.declaration.get("shipment_id")
        if shipment is not None and _shipment(shipment) in listed:
            by_shipment.setdefault(_shipment(shipment), []).append(n)
    out = list(rows)
    for shipment, numbers in by_shipment.items():
        now = listed[shipment]
        before = _raised([rows[n] for n in numbers], str(rows[numbers[0]].shipment_id or shipment), now.flags)
        cleared = sorted((before & now.flags) - _flags(now.declaration))
        if cleared:
            done.cleared[shipment] = cleared
        # a flag the manifest has no column for is not cleared by it: the rows' stands (OR-ed)
        declared = {**now.declaration, **dict.fromkeys(sorted(before - now.flags), True)}
        seen = set()
        earlier = _earlier_texts(now.pictures)
        for n in numbers:
            row = rows[n]
            picture = _picture(row.path, now.pictures, earlier)
            seen.add(picture)
            cargo = now.pictures[picture] if picture is not None else now.declaration["cargo_type"]
            own = now.traders.get(picture, {}) if picture is not None else {}
            out[n] = row.model_copy(
                update={
                    "shipment_id": shipment,
                    # the cargo it was scored as stays with the row, where the row's declaration
                    # alone said it: a picture now declared another cargo must fail closed
                    "cargo_type": row.cargo_type or row.declaration.get("cargo_type"),
                    "declaration": {**declared, **own, "cargo_type": cargo},
                }
            )
        missing = [p for p in now.pictures if p not in seen]
        if missing:
            done.missing_pictures[shipment] = len(missing)
        for picture in missing:
            out.append(
                ImageVerdict(
                    path=printable_path(picture),  # as the scorer names it: a row holds no surrogate
                    shipment_id=shipment,
                    cargo_type=now.pictures[picture],
                    error=NEVER_SCORED,
                    declaration={
                        **declared,
                        **now.traders.get(picture, {}),
                        "cargo_type": now.pictures[picture],
                    },
                )
            )
        done.shipments.add(shipment)
    done.unscored = set(listed) - done.shipments
    for shipment in done.unscored:
        raised = _flags(listed[shipment].declaration)
        if raised:
            done.flagged_unscored[shipment] = [flag for flag in OVERRIDE_FLAGS if flag in raised]
    return out, done
