"""Declarations taken again from a manifest: a shipment re-decided after its declaration changed.

A radiation alarm raised, or a document mismatch found, after the archive was scored changes the
shipment's decision but not one score. ``clearsight decide --verdicts ROWS --manifest MANIFEST``
decides each shipment the manifest lists under the declaration it gives now (every row of the
shipment merged, as the scorer's rows are: flags OR-ed, the first row's values), so nothing is
scored again. Only a flag the manifest has a column for is taken from it: one it has no column for
(a manifest from another system, say) says nothing of the flag, and the rows' raised flag stands.
Each row keeps its own picture's cargo type from the manifest, so that a picture now declared
another cargo than its model's fails closed as it would have when scored. A picture the manifest
lists under a shipment but the rows lack was never scored: it becomes an error row, and the shipment
is never released. Shipments the manifest does not list keep the declaration their rows carry;
shipments it lists that no row was scored under or moves to are left undecided (another batch's,
say) and named (in rows no completion record vouches for, decided on their pictures never scored: a
killed run may not have reached them), while one whose rows all moved away is decided (the pictures
it lists never scored); a shipment it does not list whose rows all moved away has nothing to be
decided on and is named (:attr:`Redeclared.emptied`). A row names its picture as the scorer writes
it (a name that is not UTF-8 escaped), and is matched to the manifest's picture through that text
read back into the file's name.

Rows follow the manifest: every row of a picture the manifest lists under another shipment than the
one it was scored under (a correction moved the picture, or renamed its shipment) is decided under
the shipment that lists it, with its score, its error and the cargo type it was scored as, and no
longer counts for the one it was scored under: whichever shipment it was scored under, listed or
not, and whether or not the listing shipment has a row of the picture already (scored twice).
Deciding judges each row on its own and takes the strictest tier over them (no rule folds two rows
of one picture into one, nor takes the one for a picture reused by the other: the store is looked
up for other shipments only), so a stale second row of a picture can only hold the shipment listing
it, never release it: over-held, said (:attr:`Redeclared.several`). Moving only one row of a
picture (the worst by a ranking) released shipments the rows held: no ranking of rows agrees with
every policy (its own thresholds or fixed ones, trusted-trader factors, the rows it fails closed
on), and a row left behind decided its shipment alone (:func:`redeclare`). A flag on one row is the
shipment's, as the scorer merges rows (an alarm is the container's): a shipment a row moved away
from keeps every flag its rows raised (moved, stayed, or of a picture the manifest no longer
lists), and each shipment one of its rows moves to takes them all too (a split holds each part),
unless the manifest's column for the flag says false for that shipment: a flag never leaves a
shipment unsaid. A picture the manifest lists under two shipments is refused by the manifest
reader (a path listed twice).

A row is matched to a listed picture by its path, so each listed file a scored row is decided on is
read again and its sha256 compared with the row's (:mod:`pipeline.listed_content`): scanners reuse
file names, and a file written over with a new scan since it was scored was decided (released) on
the old picture's score. A row whose file holds other bytes now, whose file is there but cannot be
read, or that has no sha256 to compare while its file is there, becomes an error row (never
released, :attr:`Redeclared.changed`, :attr:`Redeclared.unreadable`, :attr:`Redeclared.unhashed`).
A listed file that is not there at all (archived away since it was scored) is decided on its row,
the record of what was scored, where a completion record vouches for the rows: no other picture lies
at its path to be confused with it, and holding every shipment of an archive moved elsewhere would
stop the manifest correcting it; each such row is counted and said (:attr:`Redeclared.absent`). In
rows no record vouches for (a run unfinished, or its record removed) it is an error row: an earlier
run's row of the same name could stand in its place. A row that could not be scored (its ``error``) is not
read again: it is never released as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from pipeline.listed_content import (
    ABSENT_UNVOUCHED,
    CHANGED,
    NO_SHA256,
    UNREADABLE_NOW,
    compare,
    hash_files,
)
from pipeline.score.batch import earlier_printable_path, path_of_printable, printable_path
from pipeline.shipment_rows import as_flag, declaration_from_rows
from pipeline.verdicts import OVERRIDE_FLAGS, PICTURE_FIELDS, SCORE_FIELDS, ImageVerdict, as_error_row

__all__ = [
    "MIXED_MODELS",
    "MIXED_RUNS",
    "NO_RUN",
    "NEVER_SCORED",
    "Listed",
    "Redeclared",
    "read_declarations",
    "redeclare",
]


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
    """Listed, but no row was scored under it or moved to it: not decided here (another batch's)."""
    missing_pictures: dict[str, int] = field(default_factory=dict)
    """Listed pictures with no row, per shipment: each an error row, never released."""
    cleared: dict[str, list[str]] = field(default_factory=dict)
    """Flags the rows raised that the manifest's column for the flag now says are not, per shipment."""
    flagged_unscored: dict[str, list[str]] = field(default_factory=dict)
    """Flags the manifest raises on shipments of ``unscored``: no decision here carries them."""
    moved: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Rows of a picture the manifest lists under another shipment than they were scored under, per
    the shipment that lists it (and decides them now): each row's path and the shipment it was
    scored under, where it no longer counts. One entry a row: two rows may name one path."""
    several: dict[str, list[str]] = field(default_factory=dict)
    """Pictures decided on more than one row under the shipment listing them, one of them moved
    there (scored twice, or under several shipments), per that shipment, each picture's path (as
    its first row names it) once: each row is judged and the strictest tier decides, so an older
    row may hold the shipment that a newer one alone would release."""
    emptied: set[str] = field(default_factory=set)
    """Shipments the manifest does not list whose rows all moved to shipments it lists: no row is
    left to decide them on, so they are not decided here (they were left out of the decisions
    without a word), and an earlier decision of one stands as it was, made on rows that count
    elsewhere now."""
    kept_flags: dict[str, list[str]] = field(default_factory=dict)
    """Flags raised only on rows that moved away from a shipment, per the shipment they were scored
    under: they stand on it still (the manifest has no column for them), as on the rows' new one."""
    brought_flags: dict[str, list[str]] = field(default_factory=dict)
    """Flags a shipment takes from the shipment a row moved to it was scored under, raised there on
    another row (one that stayed, or whose picture the manifest no longer lists), per the shipment
    taking them: none of its own rows raise them, and the manifest has no column for them."""
    unlisted: set[str] = field(default_factory=set)
    """Shipments rows are decided under that the manifest does not list (after the moves): decided
    on their rows alone, whatever pictures of theirs have no row. ``clearsight decide`` refuses
    them in rows that no completion record vouches for (a run killed before it reached them)."""
    changed: dict[str, list[str]] = field(default_factory=dict)
    """Rows of a listed picture whose file holds other bytes now than the row's sha256 (a new scan
    written over its name), per the shipment deciding them, each row's path: error rows
    (:data:`~pipeline.listed_content.CHANGED`), never released."""
    unreadable: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Rows of a listed picture whose file is there but could not be read now, per shipment, each
    row's path and why: error rows (:data:`~pipeline.listed_content.UNREADABLE_NOW`)."""
    unhashed: dict[str, list[str]] = field(default_factory=dict)
    """Scored rows without a sha256 of a listed picture whose file is there now, per shipment: error
    rows (:data:`~pipeline.listed_content.NO_SHA256`), nothing to compare the file with."""
    absent: dict[str, list[str]] = field(default_factory=dict)
    """Scored rows of a listed picture whose file is not there now (archived away), per shipment:
    decided on the row as scored, its content not checked."""
    mixed_models: dict[str, list[str]] = field(default_factory=dict)
    """Cargo types whose scored rows name several models, in rows no completion record vouches for,
    each with the model ids: all its scored rows error rows (:data:`MIXED_MODELS`)."""
    mixed_runs: list[str | None] = field(default_factory=list)
    """The score runs the rows name (None: rows naming none), where they name more than one, in rows
    no completion record vouches for: every row an error row (:data:`MIXED_RUNS`)."""
    held_for_runs: int = 0
    """Rows made error rows for :attr:`mixed_runs`."""
    held_without_run: int = 0
    """Sealed scored rows naming no score run, in rows that name none and that no completion record
    vouches for: error rows (:data:`NO_RUN`)."""
    unvouched: dict[str, list[str]] = field(default_factory=dict)
    """Scored rows of a listed picture whose file is not there now, in rows no completion record
    vouches for, per shipment: error rows (:data:`~pipeline.listed_content.ABSENT_UNVOUCHED`)."""
    compared: set[int] = field(default_factory=set)
    """The numbers of the rows (as given, and as returned: the rows keep their order, the error
    rows of pictures never scored come after them) whose listed file was read and compared here,
    whatever it found: ``clearsight decide`` reads every other scored row's file itself
    (:func:`pipeline.scored_content.check_at_paths`), and none twice."""


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


def _real(path: str, folders: dict[str, str]) -> str:
    """``os.path.realpath(path)``, each folder resolved once (``folders`` caches them): an archive's
    rows lie in a few folders, and resolving each row's whole path took most of the time."""
    folder, name = os.path.split(path)
    if name in ("", ".", ".."):
        return os.path.realpath(path)
    real = folders.get(folder)
    if real is None:
        real = folders[folder] = os.path.realpath(folder)
    full = os.path.join(real, name)
    return os.path.realpath(full) if os.path.islink(full) else full


def _picture(
    text: str, pictures: dict[str, str], earlier: dict[str, str], folders: dict[str, str]
) -> str | None:
    """The picture of ``pictures`` (resolved paths) that a row naming ``text`` is of, or None.

    The scorer writes a name that is not UTF-8, or holds a ``\\xNN`` itself, escaped
    (:func:`~pipeline.score.batch.printable_path`): compared as it is, its row matched no picture,
    or another's (``caf\\xe9.png`` typed is the text of the file named ``caf<0xE9>.png``). The text
    is read back into its file's name first, as the scorer's resume reads it, and only where no file
    has that name today is it taken for the text an earlier version gave a listed picture.

    A name holding a NUL byte is no file's (the system refuses it, and resolving it raised
    ValueError, which stopped the run): it is of no listed picture, and its row is decided where it
    was scored, as without a manifest."""
    path = path_of_printable(text)
    if path is not None and "\0" not in path:
        picture = _real(path, folders)
        if picture in pictures:
            return picture
        if os.path.lexists(path):  # today's text of a file that is there: not another's earlier one
            return None
    return earlier.get(_real(text, folders)) if "\0" not in text else None


def _scored_under(row: ImageVerdict) -> str | None:
    """The (stripped) shipment ``row`` was scored under, or None where it names none."""
    shipment = row.shipment_id or row.declaration.get("shipment_id")
    return _shipment(shipment) if shipment is not None and _shipment(shipment) else None


def _still_raised(row: ImageVerdict, flags: set[str]) -> ImageVerdict:
    """``row`` of a shipment the manifest does not list, with ``flags`` raised in its declaration
    where it says false or nothing of them (a value that is no flag is left, for deciding to refuse)."""
    declaration = dict(row.declaration)
    for flag in flags:
        try:
            if not as_flag(declaration.get(flag), "", flag):
                declaration[flag] = True
        except InputError:
            continue
    return row.model_copy(update={"declaration": declaration})


MIXED_MODELS = (
    "rows of this cargo type name more than one model, and no completion record vouches for them, its "
    "run unfinished or its record removed: a run scores a cargo type with one model, so rows of "
    "another run may stand among them; score the manifest again"
)
"""The error of each row of a cargo type whose rows name several models, in rows no completion record
vouches for: an older model's genuine, sealed row of the same picture put in place of today's (its
file unchanged, so its sha256 matched) was decided on its lower score."""


MIXED_RUNS = (
    "the rows name more than one score run, and no completion record vouches for them, its run "
    "unfinished or its record removed: an output is one run's, so rows of another run stand among them; "
    "score the manifest again"
)
"""The error of every row of rows naming several score runs, in rows no completion record vouches
for: an earlier run's genuine, sealed rows of the same pictures, put in place of today's rows of a
whole cargo type (so that no cargo type's rows named two models), were decided on their scores."""


NO_RUN = (
    "the row names no score run, as versions before run ids wrote rows, and no completion record "
    "vouches for the rows, their run unfinished or its record removed: the rows of any number of "
    "older runs put together read as one run's, so an earlier run's sealed row of the picture could "
    "stand in place of today's; score the manifest again"
)
"""The error of each sealed scored row naming no run, in rows naming none that no completion record
vouches for: older runs' genuine sealed rows spliced together (an older model's lower score of an
unchanged picture among them, one model per cargo type still) named one run, the none, and were
decided."""


def _one_run(rows: list[ImageVerdict], done: Redeclared) -> list[ImageVerdict]:
    """``rows``, every one made an error row (:data:`MIXED_RUNS`) without its scores and picture
    hashes where they name more than one score run, a row naming none counting as one where another
    names one (an older version's row among a run's): which of them are the run's own cannot be
    told, so every shipment of the file is held. A run writes one id into all its rows, and a
    resume goes on with it, so only rows of two runs mixed name two.

    Rows that all name none are no one run's either: each scored row of them that carries a row
    seal is made an error row (:data:`NO_RUN`), counted in ``done.held_without_run``. A decide with
    the audit secret has made every scored row whose seal does not verify an error row already, so
    there it is every scored row naming no run; without the secret nothing was verified, and a seal
    says the row was written where one was kept. Rows scored without any secret (no seal) are
    decided as before: nothing of them could be told from an edit anyway."""
    runs = {row.run_id for row in rows}
    if runs == {None}:
        return _sealed_runless_held(rows, done)
    if len(runs) < 2:
        return rows
    done.mixed_runs = sorted(runs, key=lambda run: run or "")
    done.held_for_runs = len(rows)
    return [as_error_row(row, MIXED_RUNS) for row in rows]


def _sealed_runless_held(rows: list[ImageVerdict], done: Redeclared) -> list[ImageVerdict]:
    """``rows`` (naming no run), each scored one with a row seal an error row (:data:`NO_RUN`)."""
    held = [
        as_error_row(row, NO_RUN) if row.error is None and row.row_seal is not None else row for row in rows
    ]
    done.held_without_run = sum(row.error == NO_RUN for row in held)
    return held


def _one_model_per_cargo(rows: list[ImageVerdict], done: Redeclared) -> list[ImageVerdict]:
    """``rows``, each scored row of a cargo type whose scored rows name more than one model made an
    error row (:data:`MIXED_MODELS`), counted per cargo type in ``done.mixed_models``. A run scores
    each cargo type with one model, and a resume with another is refused, so only rows of two runs
    mixed name two."""
    models: dict[str, set[str]] = {}
    for row in rows:
        if row.error is None and row.model_id is not None:
            models.setdefault(str(row.cargo_type), set()).add(row.model_id)
    mixed = {cargo: sorted(ids) for cargo, ids in models.items() if len(ids) > 1}
    if not mixed:
        return rows
    done.mixed_models.update(mixed)
    return [
        as_error_row(row, MIXED_MODELS) if row.error is None and str(row.cargo_type) in mixed else row
        for row in rows
    ]


def _compared(row: ImageVerdict, now: str | OSError) -> tuple[str, str | None]:
    """How the file of ``row``'s listed picture, as read now (its sha256, or why it could not be
    read), stands against the row's sha256: ``("same" | "absent" | "changed" | "unreadable" |
    "unhashed", the row's error now: None where it stands)`` (:func:`~pipeline.listed_content.compare`)."""
    how = compare(row.sha256, now)
    return how, _ERRORS.get(how)


_ERRORS = {"changed": CHANGED, "unreadable": UNREADABLE_NOW, "unhashed": NO_SHA256}
"""The error a row becomes by how it stands against its listed file now."""


def redeclare(
    rows: list[ImageVerdict],
    listed: dict[str, Listed],
    *,
    hold_unscored: bool = False,
    content: Callable[[list[str]], Mapping[str, str | OSError]] = hash_files,
) -> tuple[list[ImageVerdict], Redeclared]:
    """``rows`` with each listed shipment's rows under its declaration from ``listed``
    (:func:`read_declarations`), each row of a listed picture moved to the shipment that lists it,
    and an error row for each listed picture without a row.

    ``hold_unscored``: decide every listed shipment, one with no row at all too, on an error row of
    each picture it lists without one (none is :attr:`Redeclared.unscored`). For rows no completion
    record vouches for: a run killed partway may have stopped before a listed shipment's first
    picture, and left undecided as another batch's, it kept a release it had before. And a row of
    such rows whose listed file is gone is an error row too
    (:data:`~pipeline.listed_content.ABSENT_UNVOUCHED`): with no file to compare it with and no
    record binding it to the file, an earlier run's sealed row of the name put in its place was
    decided on its score. So is every row of such rows naming more than one score run
    (:data:`MIXED_RUNS`), every sealed scored row of such rows where they name none (:data:`NO_RUN`),
    and every scored row of a cargo type whose rows name more than one model
    (:data:`MIXED_MODELS`).

    Every row of a listed picture scored under another shipment moves, beside any row of it the
    listing shipment has already (the picture scored twice): deciding takes the strictest tier over
    a shipment's rows, so a second, stale row can hold the shipment, never release it
    (:attr:`Redeclared.several`, said). Leaving a row where it was scored decided that shipment on
    it alone (released on a stale row of a picture another row of which held), and moving only one
    row of several released the listing shipment wherever the row chosen was not the one the policy
    holds on. A row that names no shipment, or one that is no text, is never moved: deciding
    refuses it, as without a manifest. A listed shipment that a row was scored under is decided
    though all its rows moved away; one the manifest does not list is not (no row is left to
    decide it on), and is named in :attr:`Redeclared.emptied`.

    ``content``: each listed picture's file's sha256 now, or the OSError reading it raised
    (:func:`~pipeline.listed_content.hash_files`, called once, with the pictures scored rows are
    decided on); a row whose sha256 the file does not match now is an error row (the module's
    docstring)."""
    done = Redeclared()
    if hold_unscored:
        rows = _one_model_per_cargo(_one_run(rows, done), done)
    where = {picture: shipment for shipment, now in listed.items() for picture in now.pictures}
    earlier = _earlier_texts(where)
    scored = [_scored_under(row) for row in rows]
    folders: dict[str, str] = {}
    pictures = [_picture(row.path, where, earlier, folders) for row in rows]
    for row, picture, shipment in zip(rows, pictures, scored, strict=True):
        if picture is not None and shipment is None and row.shipment_id is None and not row.declaration:
            # nothing ties the file a folder run scored to the one listed now (a scanner reuses
            # names): placed, a picture overwritten since was released on the old one's score
            raise InputError(
                f"image {row.path!r} was scored without a shipment (a folder run); --manifest does not "
                "place such rows under the shipment listing their picture: score the manifest itself "
                "(clearsight score MANIFEST --model M --out NEW_ROWS)"
            )
    decided = list(scored)  # the shipment each row is decided under
    for n, (picture, shipment) in enumerate(zip(pictures, scored, strict=True)):
        if picture is None or shipment is None or where[picture] == shipment:
            continue
        if not isinstance(rows[n].shipment_id or rows[n].declaration.get("shipment_id"), str):
            continue  # a shipment id that is no text (a list): left for deciding to refuse, as before
        # every row of the picture, beside any the listing shipment has: the strictest decides
        decided[n] = where[picture]
        done.moved.setdefault(where[picture], []).append((rows[n].path, shipment))
    # the pictures decided on several rows, one of them moved: an older row may hold the shipment
    count: dict[str, list[int]] = {}
    for n, picture in enumerate(pictures):
        if picture is not None and decided[n] == where[picture]:
            count.setdefault(picture, []).append(n)
    for picture, numbers in count.items():
        if len(numbers) > 1 and any(decided[n] != scored[n] for n in numbers):
            done.several.setdefault(where[picture], []).append(rows[numbers[0]].path)
    # each listed file a scored row is decided on, read now: matched by path alone, a new scan
    # written over the name since was decided (released) on the old picture's score
    found = content(
        sorted(
            {
                p
                for n, p in enumerate(pictures)
                if p is not None and rows[n].error is None and decided[n] == where[p]
            }
        )
    )
    # the flags each row raises, read as the shipment it is decided under reads them
    raised: dict[int, set[str]] = {
        n: _raised([row], str(row.shipment_id or shipment), listed[shipment].flags)
        for n, (row, shipment) in enumerate(zip(rows, decided, strict=True))
        if shipment in listed
    }
    # as the scorer merges rows, a flag on one row is the shipment's (an alarm is the container's):
    # a shipment a row moved away from keeps the flags of all its rows (merged), and each shipment
    # one of its rows moves to takes them, though raised on a row that stayed or that no longer
    # counts (its picture dropped from the manifest)
    sources = {s for n, s in enumerate(scored) if s is not None and decided[n] != s}
    away: dict[str, set[str]] = {source: set() for source in sources}
    for n, shipment in enumerate(scored):
        if shipment in away:
            # read as the source reads it, with its own columns (none where it is not listed): a
            # moved row's flag that is no boolean, read with its destination's column, was swallowed
            # there and the source released; it is refused here, as deciding the rows refused it
            own = listed[shipment].flags if shipment in listed else frozenset()
            away[shipment] |= _raised([rows[n]], shipment, own)
    into: dict[str, set[str]] = {}
    for n, shipment in enumerate(scored):
        if shipment is not None and decided[n] != shipment:
            into.setdefault(str(decided[n]), set()).update(away[shipment])
    out = list(rows)
    by_shipment: dict[str, list[int]] = {}
    for n, shipment in enumerate(decided):
        if shipment is not None and (shipment in listed or away.get(shipment)):
            by_shipment.setdefault(shipment, []).append(n)
    # a listed shipment a row was scored under belongs to this batch though all its rows moved away:
    # decided, each picture it lists without a row never scored (never released), its flags standing;
    # left undecided, an earlier decision of it (a release) stood in the audit store
    for shipment in sources & listed.keys():
        by_shipment.setdefault(shipment, [])
    if hold_unscored:  # rows of a run that may not have reached it: its pictures never scored
        for shipment in listed:
            by_shipment.setdefault(shipment, [])
    done.unlisted = {s for s in decided if s is not None and s not in listed}
    done.emptied = sources - listed.keys() - set(decided)
    for shipment in away.keys() - listed.keys():  # not listed: its rows left keep their declaration
        numbers = by_shipment.pop(shipment, [])
        kept = away[shipment] - set().union(*(_flags(rows[n].declaration) for n in numbers))
        if numbers and kept:
            done.kept_flags[shipment] = [flag for flag in OVERRIDE_FLAGS if flag in kept]
        for n in numbers:
            out[n] = _still_raised(rows[n], away[shipment])
    for shipment, numbers in by_shipment.items():
        now = listed[shipment]
        own_rows = set().union(*(raised[n] for n in numbers))
        before = own_rows | away.get(shipment, set()) | into.get(shipment, set())
        cleared = sorted((before & now.flags) - _flags(now.declaration))
        if cleared:
            done.cleared[shipment] = cleared
        kept = away.get(shipment, set()) - own_rows - now.flags
        if kept:
            done.kept_flags[shipment] = [flag for flag in OVERRIDE_FLAGS if flag in kept]
        brought = into.get(shipment, set()) - own_rows - away.get(shipment, set()) - now.flags
        if brought:
            done.brought_flags[shipment] = [flag for flag in OVERRIDE_FLAGS if flag in brought]
        # a flag the manifest has no column for is not cleared by it: the rows' stands (OR-ed)
        declared = {**now.declaration, **dict.fromkeys(sorted(before - now.flags), True)}
        seen = set()
        for n in numbers:
            row, picture = rows[n], pictures[n]
            if picture is not None and where[picture] != shipment:
                picture = None  # a row not moved (its shipment id no text): deciding refuses it
            seen.add(picture)
            cargo = now.pictures[picture] if picture is not None else now.declaration["cargo_type"]
            own = now.traders.get(picture, {}) if picture is not None else {}
            changes: dict[str, Any] = {
                "shipment_id": shipment,
                # the cargo it was scored as stays with the row, where the row's declaration
                # alone said it: a picture now declared another cargo must fail closed
                "cargo_type": row.cargo_type or row.declaration.get("cargo_type"),
                "declaration": {**declared, **own, "cargo_type": cargo},
            }
            if picture is not None and row.error is None:
                done.compared.add(n)
                how, error = _compared(row, found[picture])
                if how == "absent" and hold_unscored:  # nothing vouches that it is this run's row
                    how, error = "unvouched", ABSENT_UNVOUCHED
                if how == "unreadable":
                    why = found[picture]
                    reason = why.strerror if isinstance(why, OSError) and why.strerror else str(why)
                    done.unreadable.setdefault(shipment, []).append((row.path, reason))
                elif how != "same":
                    getattr(done, how).setdefault(shipment, []).append(row.path)
                if error is not None:
                    changes.update({**dict.fromkeys((*SCORE_FIELDS, *PICTURE_FIELDS)), "error": error})
            out[n] = row.model_copy(update=changes)
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
    for shipment in done.unscored:  # no row was scored under it: only the manifest raises its flags
        raised_here = _flags(listed[shipment].declaration)
        if raised_here:
            done.flagged_unscored[shipment] = [flag for flag in OVERRIDE_FLAGS if flag in raised_here]
    return out, done
