"""Declarations taken again from a manifest: a shipment re-decided after its declaration changed.

A radiation alarm raised, or a document mismatch found, after the archive was scored changes the
shipment's decision but not one score. ``clearsight decide --verdicts ROWS --manifest MANIFEST``
decides each shipment the manifest lists under the declaration it gives now (every row of the
shipment merged, as the scorer's rows are: flags OR-ed, the first row's values), so nothing is
scored again. Shipments the manifest does not list keep the declaration their rows carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.decide import declaration_from_rows
from pipeline.verdicts import ImageVerdict

__all__ = ["Redeclared", "read_declarations", "redeclare"]


@dataclass
class Redeclared:
    """What :func:`redeclare` did: shipments whose rows took the manifest's declaration, and
    shipments the manifest lists that have no row (never scored, so not decided)."""

    shipments: set[str] = field(default_factory=set)
    unscored: set[str] = field(default_factory=set)


def read_declarations(manifest: Path) -> dict[str, dict[str, Any]]:
    """Each shipment's declaration as ``manifest`` gives it now, merged over its rows, as a row's
    ``declaration`` dict (which :func:`pipeline.decide.declaration_from_rows` reads back unchanged).

    Raises:
        DatasetFormatError, UnsafePathError: from the manifest reader, naming the line.
        InputError: a shipment whose declaration does not validate (a flag spelt otherwise, say).
    """
    from datasets.manifest import iter_manifest

    rows: dict[str, list[ImageVerdict]] = {}
    for row in iter_manifest(manifest, check_files=False):  # the images were read when scored
        rows.setdefault(row.shipment_id, []).append(
            ImageVerdict(path=str(row.path), shipment_id=row.shipment_id, declaration=dict(row.declaration))
        )
    return {
        shipment: declaration_from_rows(shipment, images).model_dump(mode="json")
        for shipment, images in rows.items()
    }


def redeclare(
    rows: Iterable[ImageVerdict], declarations: dict[str, dict[str, Any]], done: Redeclared
) -> Iterator[ImageVerdict]:
    """``rows`` with each listed shipment's rows carrying its declaration from ``declarations``
    (:func:`read_declarations`); ``done`` is filled in as the rows go by."""
    seen: set[str] = set()
    for row in rows:
        shipment = row.shipment_id or row.declaration.get("shipment_id")
        declared = declarations.get(str(shipment)) if shipment else None
        if declared is None:
            yield row
            continue
        seen.add(str(shipment))
        yield row.model_copy(update={"declaration": declared})
    done.shipments = seen
    done.unscored = set(declarations) - seen
