"""`clearsight decide`: re-decide stored image verdicts under a policy, without re-scoring.

Used for what-if analysis: how many shipments each tier gets under a policy, and with
``--compare-policy`` how that differs from another one (how many more releases a threshold gives).
The two are compared on the same inputs: with ``--audit-db``, each shipment's pictures as looked up
in the store and the earlier holds read there, and this run's decision even where the store refused
to record it (a what-if that would lower a hold), not the decision the audit trail holds.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from datasets.errors import ConflictError, DatasetFormatError, InputError
from datasets.whole_files import keep_mode_and_owner, temporary_beside
from pipeline import verdict_rows
from pipeline.cli.output_paths import audit_file, check_name_fits, check_outputs_apart, output_error
from pipeline.cli.progress import count_steps, stage_progress
from pipeline.decide import decide_rows
from pipeline.listed_content import hash_files
from pipeline.policy import Policy, default_policy_path, load_policy
from pipeline.redeclare import Redeclared, read_declarations, redeclare
from pipeline.row_seal import untrusted
from pipeline.scored_content import check_at_paths
from pipeline.settings import Settings, audit_key, audit_seal_key, completion_seal_key, row_seal_key
from pipeline.shipment_rows import row_shipment_id, shipments_of
from pipeline.trader_register import TraderRegister, check_tiers, read_trader_register
from pipeline.verdicts import ImageVerdict, ShipmentDecision, Tier, declarations_as_scored

if TYPE_CHECKING:
    from pipeline.audit import AuditStore
    from pipeline.score.completion import OpenRows

__all__ = ["read_finished", "read_verdicts", "register"]


def read_verdicts(path: Path, source: BinaryIO | None = None) -> Iterator[ImageVerdict]:
    """Read image verdict rows (the batch scorer's output), naming ``--verdicts`` in errors;
    ``source``: the file's bytes, open (:func:`pipeline.verdict_rows.read_verdicts`)."""
    try:
        yield from verdict_rows.read_verdicts(path, source)
    except InputError as exc:
        if isinstance(exc, DatasetFormatError):
            raise
        raise InputError(f"--verdicts {exc}") from exc


def read_finished(
    verdicts: Path,
    manifest: Path | None,
    *,
    checked: Callable[[], None] | None = None,
    seal_key: bytes | None = None,
    unsealed: Callable[[str], None] | None = None,
) -> tuple[list[ImageVerdict], tuple[str, str] | None]:
    """The rows of ``verdicts``, refused unless a score run finished them (:func:`_check_finished`),
    and with ``manifest`` why no completion record vouches for them and what to do (None: one does).
    ``seal_key``: the completion record's seal is checked with it, and one that does not verify is
    refused (:func:`pipeline.score.completion.completion_seal_key`; None: not checked); ``unsealed``
    is told why no seal so checked vouches for the rows, where none does.

    The rows are read from the file that was checked, opened once
    (:class:`pipeline.score.completion.OpenRows`): checked by its name, then opened again by it,
    rows renamed over it in between (or written into it) were decided as vouched for. Rows written
    into the open file meanwhile are refused, before anything is decided. ``checked`` is called
    between the check and the read (for tests: the file replaced then).

    Raises:
        InputError: rows a completion record does not vouch for, without ``manifest``; rows that
            changed while they were read (those that fail to parse as well: half a line appended);
            rows altered since their record vouched for them, or whose record's seal does not verify.
        DatasetFormatError: rows that do not parse, unchanged since they were checked.
    """
    from pipeline.score.completion import OpenRows, RowsChanged

    if not verdicts.is_file():  # none there, or a folder: reading it says so
        return list(read_verdicts(verdicts)), None
    try:
        opened = OpenRows(verdicts)
    except OSError as exc:
        raise InputError(f"--verdicts {str(verdicts)!r}: cannot be read ({exc.strerror or exc})") from exc
    with opened:
        unfinished = _check_finished(verdicts, manifest, opened, seal_key)  # before any row is read
        if unsealed is not None and opened.unsealed is not None:
            unsealed(opened.unsealed)
        if checked is not None:
            checked()
        try:
            rows = opened.read_all(partial(read_verdicts, verdicts))
        except RowsChanged as exc:
            raise _changed(verdicts, exc.why) from exc
        changed = opened.changed()
    if changed is not None:
        raise _changed(verdicts, changed)
    if unfinished is None:
        _refuse_other_runs(verdicts, rows, opened.run_id)
    return rows, unfinished


def _refuse_other_runs(verdicts: Path, rows: list[ImageVerdict], run_id: str | None) -> None:
    """Refuse rows a completion record vouches for where one names another run than the record
    (``run_id``; None: a record naming none, of a version before run ids): the run wrote its id into
    every row, so such a row is not as it wrote it (the record's bytes checked, this is defence in
    depth).

    Raises:
        InputError: naming the row, both runs and what to do."""
    other = next((row for row in rows if row.run_id != run_id), None)
    if other is not None:
        raise InputError(
            f"--verdicts {str(verdicts)!r}: the row of {other.path!r} names score run {other.run_id!r}, "
            f"and its completion record vouches for the rows of run {run_id!r}, which wrote its id into "
            "every row: the rows were altered since; nothing was decided (with or without --manifest); "
            f"score its inputs again (`clearsight score ... --out {verdicts} --overwrite`, or into a new "
            "--out) and decide those rows"
        )


def _changed(verdicts: Path, why: str) -> InputError:
    """The refusal of rows that changed while they were read (``why``, from
    :meth:`pipeline.score.completion.OpenRows.changed`)."""
    return InputError(
        f"--verdicts {str(verdicts)!r}: {why}; nothing was decided: decide it again once no score run "
        "writes it"
    )


def _check_finished(
    verdicts: Path, manifest: Path | None, opened: OpenRows, seal_key: bytes | None = None
) -> tuple[str, str] | None:
    """Refuse ``verdicts`` unless a score run finished it (its completion record matches the file
    ``opened``, :meth:`pipeline.score.completion.OpenRows.incomplete`): the rows of a run killed
    partway, or still running, lack pictures that were never scored, and their shipments were
    released on the rest. With ``manifest`` it returns why the rows are not vouched for and what to
    do (None: they are): the caller decides every shipment the manifest lists, each listed picture
    without a row holding its shipment, and refuses a row of a shipment it does not list
    (:func:`_check_listed`). Rows whose bytes the record vouched for changed since (a held picture's
    scores edited down) are refused with ``manifest`` too: it makes up for rows that are missing,
    not for scores no model gave; so are rows whose record's seal does not verify under ``seal_key``
    (the record written again to match edited rows).

    Raises:
        InputError: without ``manifest``, naming the file, why, and what to do; with it too, where
            the rows the record vouched for were altered.
    """
    from pipeline.score.output_lock import held_by

    holder = held_by(opened.path)
    if holder is not None:
        why = f"a score run ({holder}) is still writing it, so pictures it lists may have no row yet"
    else:
        unvouched = opened.incomplete(seal_key)
        if unvouched is None and (seal_key is None or opened.unsealed is None):
            return None
        if unvouched is None:
            # a record without a seal, where this decide could check one: its size and sha256 are
            # arithmetic whoever edits the rows can redo, so it binds no row to its run (an earlier
            # run's sealed row put in place of today's, its picture archived, was released on it)
            why = f"{opened.unsealed}, so it vouches for nothing anyone who can edit the rows could not redo"
        else:
            why = unvouched.why
        if unvouched is not None and unvouched.altered:
            raise InputError(
                f"--verdicts {str(verdicts)!r}: {why}; nothing was decided (with or without --manifest): "
                "deciding on it could release a shipment on scores no model gave; score its inputs again "
                f"(`clearsight score ... --out {verdicts} --overwrite`, or into a new --out) and decide "
                "those rows"
            )
    finish = (
        "wait for that run to end"
        if holder is not None
        else f"finish it with `clearsight score ... --out {verdicts} --resume` (the same inputs)"
    )
    if manifest is not None:
        return why, finish
    raise InputError(
        f"--verdicts {str(verdicts)!r}: {why}; deciding on it would release shipments whose other "
        f"pictures were never scored; {finish}, or pass --manifest MANIFEST so that every picture "
        "the manifest lists without a row holds its shipment"
    )


def _check_listed(verdicts: Path, manifest: Path, unfinished: tuple[str, str], done: Redeclared) -> None:
    """Refuse rows no completion record vouches for (``unfinished``: why, and what to do) where a
    row's shipment, after the moves, is one ``manifest`` does not list: only a listed picture
    without a row holds its shipment, so a shipment of a killed run that a correction manifest
    leaves out was decided on the pictures scored before the kill (released, its defect pictures
    never reached, and the release recorded).

    Raises:
        InputError: naming the first such shipment, how many there are, and what to do.
    """
    if not done.unlisted:
        return
    why, finish = unfinished
    raise InputError(
        f"--verdicts {str(verdicts)!r}: {why}; --manifest {str(manifest)!r} does not list shipment "
        f"{sorted(done.unlisted)[0]!r} ({len(done.unlisted)} shipment(s) of the rows it does not list), "
        "so the pictures of it the run never reached would hold nothing, and it would be decided on "
        f"the rows scored before the run stopped; {finish}, or pass a --manifest that lists every "
        "shipment of the rows (the one the run scored)"
    )


@contextmanager
def _progress(stage: str, total: int) -> Iterator[Callable[[], None]]:
    """``advance()`` of one stage: a bar on a terminal, plain lines into a log (where a bar is silent)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with stage_progress(Console(stderr=True), *columns, transient=True) as progress:
        yield count_steps(progress, stage, total)


def _hash_listed(paths: list[str], *, max_bytes: int) -> dict[str, str | OSError]:
    """:func:`pipeline.listed_content.hash_files`, with a progress bar: an archive's pictures are read
    whole again to be compared with their rows."""
    with _progress("checking the listed pictures' content", len(paths)) as advance:
        return hash_files(paths, advance=advance, max_bytes=max_bytes)


def _hash_scored(paths: list[str], *, max_bytes: int) -> dict[str, str | OSError]:
    """:func:`pipeline.listed_content.hash_files`, with a progress bar: without --manifest every scored
    row's picture is read whole again to be compared with its row."""
    with _progress("checking the scored pictures' content", len(paths)) as advance:
        return hash_files(paths, advance=advance, max_bytes=max_bytes)


def _check_shipments(rows: list[ImageVerdict], traders: TraderRegister | None) -> None:
    """Refuse ``rows`` as deciding them would, before their pictures are read: a row without a
    shipment id, or one that is no text, or a shipment whose declaration does not validate
    (:func:`~pipeline.shipment_rows.shipments_of`, as :func:`~pipeline.decide.decide_rows` and the
    audit store's batch group them; reading a picture clears a row's scores, never its shipment or
    declaration, so nothing refused here would pass after it).

    Raises:
        InputError: as deciding would, naming the row or shipment.
    """
    for _ in shipments_of(rows, register=traders):
        pass


def _decide_all(
    policy: Policy, rows: list[ImageVerdict], key: bytes, label: str, traders: TraderRegister | None
) -> list[ShipmentDecision]:
    total = len({row_shipment_id(r) for r in rows})  # a row without one, or with a list, refused here
    decisions = []
    with _progress(label, total) as advance:
        for decision in decide_rows(policy, rows, audit_key=key, register=traders):
            decisions.append(decision)
            advance()
    return decisions


def _traders(path: Path | None, policies: list[Policy]) -> TraderRegister | None:
    """The trader register at ``path`` (None: none given), checked against every policy used."""
    if path is None:
        return None
    traders = read_trader_register(path)
    for policy in policies:
        check_tiers(traders, policy)
    return traders


def _decide_and_record(
    policy: Policy,
    other: Policy | None,
    rows: list[ImageVerdict],
    *,
    key: bytes,
    store: AuditStore,
    near_copy_bits: int,
    traders: TraderRegister | None,
) -> Iterator[tuple[ShipmentDecision, str | None, tuple[ShipmentDecision, ShipmentDecision] | None]]:
    """Each shipment decided and recorded in ``store`` as
    :func:`pipeline.batch_decisions.decide_and_record` yields it, and with ``other`` (None without)
    this run's decision (a refused one too) and the other policy's on the same inputs."""
    from pipeline.batch_decisions import decide_and_record, decide_record_and_compare

    if other is None:
        for decision, why in decide_and_record(
            policy, rows, audit_key=key, store=store, near_copy_bits=near_copy_bits, register=traders
        ):
            yield decision, why, None
        return
    for what_if in decide_record_and_compare(
        policy, other, rows, audit_key=key, store=store, near_copy_bits=near_copy_bits, register=traders
    ):
        yield what_if.decision, what_if.why, (what_if.decided, what_if.other)


class _DecisionsFile:
    """The ``--out`` decisions file, opened under a temporary name before any shipment is decided or
    recorded: an --out that cannot be written (its folder a file) fails now, not after the audit
    store holds every decision and no file says so. :meth:`write` renames it into place, so the file
    is either complete or absent. The temporary name is one no file had
    (:func:`~datasets.whole_files.temporary_beside`): a fixed ``--out``.tmp truncated and moved
    an audit store, policy or register of that name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp, fd = temporary_beside(path)
        except OSError as exc:
            raise output_error("--out", path, exc) from exc
        self._fh = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, decisions: list[ShipmentDecision]) -> None:
        try:
            with self._fh as fh:
                for decision in decisions:
                    fh.write(decision.model_dump_json() + "\n")
                keep_mode_and_owner(fh.fileno(), self.path)  # an --out kept to its owner stays so
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise output_error("--out", self.path, exc) from exc

    def discard(self) -> None:
        """Remove what is left of an unfinished write (nothing after :meth:`write`)."""
        self._fh.close()
        with contextlib.suppress(OSError):  # the error being reported matters more than this one
            self.tmp.unlink(missing_ok=True)


_NOT_RECORDED = "not recorded"
"""The summary's row of shipments whose decision the audit store refused: counted apart from the
tiers, as what was decided now is not what stands."""


def _counts(decisions: list[ShipmentDecision]) -> Counter[str]:
    counts: Counter[str] = Counter(d.tier.value for d in decisions if d.refused is None)
    counts[_NOT_RECORDED] = sum(d.refused is not None for d in decisions)
    counts["random_audit"] = sum(d.random_audit for d in decisions if d.refused is None)
    return counts


def _in_the_trail(decision: ShipmentDecision) -> bool:
    """Whether the decisions file takes ``decision``: each line says what the audit trail holds (a
    refused decision's shipment is written as it stands there, marked ``refused``), and a shipment
    the trail holds nothing of is left out."""
    return decision.refused is None or decision.refused.standing_seq is not None


def _labels(policy: Policy, other: Policy | None) -> tuple[str, str]:
    """How the two policies are named in the output: their versions, and their content hashes'
    first digits when the versions are equal (an edited policy whose version was not bumped)."""
    if other is None or other.version != policy.version or other.sha256 == policy.sha256:
        return policy.version, other.version if other is not None else ""
    return f"{policy.version} ({policy.sha256[:8]})", f"{other.version} ({other.sha256[:8]})"


def _summary(
    policy: Policy,
    decisions: list[ShipmentDecision],
    other: tuple[Policy, list[ShipmentDecision], list[ShipmentDecision]] | None,
) -> Table:
    """The count per tier of ``decisions``; with ``other`` (the other policy, this run's decisions
    and the other policy's on the same inputs), those two side by side, a refused decision counted
    at the tier decided now, and how many of them were not recorded on a row of their own."""
    mine = _counts(decisions)
    n = len(decisions)
    label, other_label = _labels(policy, other[0] if other is not None else None)
    table = Table(title=f"{n} shipments")
    table.add_column("tier")
    table.add_column(label, justify="right")
    theirs: Counter[str] = Counter()
    if other is not None:
        not_recorded = mine[_NOT_RECORDED]
        mine, theirs = _counts(other[1]), _counts(other[2])
        mine[_NOT_RECORDED] = not_recorded
        table.add_column(f"{other_label} (compare)", justify="right")
        table.add_column("difference", justify="right")

    def share(count: int) -> str:
        return f"{count} ({100.0 * count / n:.1f} %)" if n else "0"

    names = [t.value for t in Tier] + ([_NOT_RECORDED] if mine[_NOT_RECORDED] else []) + ["random_audit"]
    for name in names:
        cells = [name, share(mine[name])]
        if other is not None and name == _NOT_RECORDED:  # counted above as decided now; this policy's
            cells = [f"{name} (of the above)", share(mine[name]), "", ""]
        elif other is not None:
            cells += [share(theirs[name]), f"{mine[name] - theirs[name]:+d}"]
        table.add_row(*cells)
    return table


def _standing(store: AuditStore, shipments: set[str]) -> dict[str, tuple[str, int]]:
    """The tier and audit record of the latest decision ``store`` holds of each of ``shipments``
    that it holds one of (in one read)."""
    latest = {r.decision.shipment_id: r for r in store.decisions_of(sorted(shipments))}  # oldest first
    return {shipment: (r.decision.tier.value, r.seq) for shipment, r in latest.items()}


def _redeclared_warnings(done: Redeclared, standing: dict[str, tuple[str, int]] | None = None) -> list[str]:
    """What an officer should know of a ``--manifest`` run, first shipment named; ``standing``: the
    decisions the audit store holds of :attr:`Redeclared.emptied` (None: no store)."""
    said = []
    if done.emptied:
        text = (
            f"{len(done.emptied)} shipment(s) of --verdicts not decided here: all their rows' pictures are "
            f"listed under other shipments now: {sorted(done.emptied)[0]!r} first"
        )
        if standing:
            first = sorted(standing)[0]
            tier, seq = standing[first]
            text += (
                f"; {len(standing)} of them still has a decision in the audit store, made on their rows "
                f"before and not decided again here ({first!r}: {tier}, audit record {seq})"
            )
        said.append(text)
    if done.unscored:
        said.append(
            f"{len(done.unscored)} shipment(s) of --manifest have no rows in --verdicts (never scored), so "
            f"they were not decided: {sorted(done.unscored)[0]!r} first"
        )
    if done.missing_pictures:
        first = sorted(done.missing_pictures)[0]
        said.append(
            f"{sum(done.missing_pictures.values())} picture(s) that --manifest lists have no row with their "
            f"path in --verdicts (never scored, or scored under another path), so "
            f"{len(done.missing_pictures)} shipment(s) holding them are not released: {first!r} first"
        )
    said += _content_warnings(done)
    if done.moved:
        first = sorted(done.moved)[0]
        path, scored = sorted(done.moved[first])[0]
        # a moved row held for its file (said above) was decided with its score cleared
        held = {(s, p) for found in (done.changed, done.unhashed) for s, ps in found.items() for p in ps}
        held |= {(s, p) for s, ps in done.unreadable.items() for p, _ in ps}
        cleared = sum((s, p) in held for s, ps in done.moved.items() for p, _ in ps)
        but = (
            f" where it still stands ({cleared} held for the file at their path, said above)"
            if cleared
            else ""
        )
        said.append(
            f"{sum(map(len, done.moved.values()))} row(s) of pictures --manifest lists under another "
            "shipment than the one they were scored under were decided under the shipment listing them, "
            f"with their score{but}, and no longer count for the one they were scored under: "
            f"{path!r} from {scored!r} to {first!r} first"
        )
    if done.several:
        first = sorted(done.several)[0]
        said.append(
            f"{sum(map(len, done.several.values()))} picture(s) have more than one row under the shipment "
            "--manifest lists them under (scored twice, or under several shipments): each row is judged "
            "and the strictest tier decides, so an older row may hold a shipment that a newer one alone "
            f"would release: {sorted(done.several[first])[0]!r} under {first!r} first"
        )
    if done.kept_flags:
        first = sorted(done.kept_flags)[0]
        said.append(
            f"{len(done.kept_flags)} shipment(s) keep a flag raised on rows that moved away from them "
            "(--manifest lists their pictures under another shipment, which takes the flag too unless its "
            "column for the flag says false): "
            f"{first!r} ({', '.join(done.kept_flags[first])}) first"
        )
    if done.brought_flags:
        first = sorted(done.brought_flags)[0]
        said.append(
            f"{len(done.brought_flags)} shipment(s) take a flag raised on a row of the shipment their moved "
            "rows were scored under (a flag on one row is the shipment's): "
            f"{first!r} ({', '.join(done.brought_flags[first])}) first"
        )
    if done.cleared:
        first = sorted(done.cleared)[0]
        said.append(
            f"{len(done.cleared)} shipment(s) had a flag cleared by --manifest that --verdicts raised on a "
            "row scored or decided under them, or on a row of a shipment a row moved to them was scored "
            f"under (a flag on one row is the shipment's): {first!r} ({', '.join(done.cleared[first])}) "
            "first; their column in --manifest says false"
        )
    return said


def _content_warnings(done: Redeclared) -> list[str]:
    """What reading the listed pictures again found (:attr:`Redeclared.changed` and the rest), first
    row named: a row held for it names no file in its record, so the output does."""
    said = []

    def first(found: dict[str, list[str]]) -> str:
        shipment = sorted(found)[0]
        return f"{sorted(found[shipment])[0]!r} of {shipment!r} first"

    if done.changed:
        said.append(
            f"{sum(map(len, done.changed.values()))} row(s) of pictures --manifest lists are of another "
            "picture than the file at their path now (its sha256 is not the row's: a new scan written over "
            f"the name since it was scored), so {len(done.changed)} shipment(s) holding them are not "
            f"released: {first(done.changed)}; score the manifest again and decide those rows"
        )
    if done.unreadable:
        shipment = sorted(done.unreadable)[0]
        path, why = sorted(done.unreadable[shipment])[0]
        said.append(
            f"{sum(map(len, done.unreadable.values()))} row(s) of pictures --manifest lists could not be "
            "compared with the file at their path, which is there but cannot be read now, so "
            f"{len(done.unreadable)} shipment(s) holding them are not released: {path!r} of {shipment!r} "
            f"({why}) first"
        )
    if done.unhashed:
        said.append(
            f"{sum(map(len, done.unhashed.values()))} scored row(s) of pictures --manifest lists have no "
            "sha256 to compare with the file at their path now, so "
            f"{len(done.unhashed)} shipment(s) holding them are not released: {first(done.unhashed)}; "
            "score the manifest again"
        )
    if done.mixed_models:
        cargo, ids = sorted(done.mixed_models.items())[0]
        said.append(
            f"rows of {len(done.mixed_models)} cargo type(s) name more than one model, and no completion "
            f"record vouches for them, so the shipments holding them are not released: {cargo!r} "
            f"names {', '.join(map(repr, ids))}; score the manifest again"
        )
    if done.mixed_runs:
        named = ", ".join(repr(run) if run else "none" for run in done.mixed_runs)
        said.append(
            f"the rows name {len(done.mixed_runs)} score runs ({named}), and no completion record vouches "
            f"for them, so all {done.held_for_runs} of them were held and no shipment of the file is "
            "released: a score run writes one id into every row of its output; score the manifest again"
        )
    if done.unvouched:
        said.append(
            f"{sum(map(len, done.unvouched.values()))} row(s) of pictures --manifest lists have no file at "
            "their path now, and no completion record vouches for the rows, so "
            f"{len(done.unvouched)} shipment(s) holding them are not released: {first(done.unvouched)}; "
            "score the pictures again where they are"
        )
    if done.absent:
        said.append(
            f"{sum(map(len, done.absent.values()))} row(s) of pictures --manifest lists were decided on "
            "their scores as recorded without comparing their content: no file is at their path now "
            f"(archived or moved away since scoring?): {first(done.absent)}"
        )
    return said


def register(app: typer.Typer) -> None:
    """Add ``decide`` to the root app."""

    @app.command("decide")
    def decide(
        verdicts: Annotated[
            Path, typer.Option("--verdicts", help="Image verdicts: the scorer's .jsonl, .csv or .parquet.")
        ],
        out: Annotated[
            Path, typer.Option("--out", help="Where to write the decisions (JSONL, one shipment a line).")
        ],
        policy: Annotated[
            Path | None, typer.Option("--policy", help="Policy YAML (default: the bundled example).")
        ] = None,
        audit_db: Annotated[
            str | None,
            typer.Option("--audit-db", help="Also record each decision in this audit store (URL)."),
        ] = None,
        compare_policy: Annotated[
            Path | None,
            typer.Option("--compare-policy", help="Also decide under this policy and print the difference."),
        ] = None,
        trader_register: Annotated[
            Path | None,
            typer.Option(
                "--trader-register",
                help="CSV of trusted traders (trader_id, aeo_tier) as the customs authority keeps it: each "
                "trader's AEO tier comes from it, not from the rows.",
            ),
        ] = None,
        manifest: Annotated[
            Path | None,
            typer.Option(
                "--manifest",
                help="Take each shipment's declaration from this manifest as it stands now (a radiation "
                "alarm raised since scoring, say), not from the rows; nothing is scored again. A flag it "
                "has no column for stays as the rows raise it. A row is decided under the shipment it "
                "lists the row's picture under now. The file of each listed picture a scored row is "
                "decided on is read again: one whose bytes are not the ones its row was scored on (a new "
                "scan under the old name), that is there but cannot be read, or whose row has no sha256 "
                "to compare it with (an older version's) while it is there, holds its shipment; one "
                "no longer there at all (archived away) is decided on its row, and said. The scored rows "
                "of pictures it does not list are read again too, as without --manifest. A row that "
                "failed to score is never released and its file is not read.",
            ),
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing --out decisions file.")
        ] = False,
    ) -> None:
        """Re-decide stored image verdicts under a policy, without re-scoring (what-if analysis).

        --verdicts must be the rows of a score run that finished (its completion record matches
        them); a run stopped partway, or still running, is decided only with a --manifest that
        lists every shipment of its rows (each listed picture without a row holds its shipment).
        Rows changed since their run finished, or whose record carries a seal that does not verify
        under CLEARSIGHT_AUDIT_SECRET, are refused, with --manifest too: score them again. With the
        secret, a row whose own seal is missing or does not verify (edited after scoring, or scored
        without this secret) holds its shipment (fail_closed.image_error); the others are decided.
        Each scored row's picture is read again, with --manifest too (each file once): one whose
        bytes are not the ones scored (a new scan under the old name, or an earlier run's output
        copied over this one), that is there but cannot be read, or whose row has no sha256 to
        compare it with (an older version's row) while it is there, holds its shipment; one no
        longer at its path (archived away) is decided on its row, and counted.

        Prints the count per tier; with --compare-policy, how many more (or fewer) shipments each tier
        gets under --policy than under the other one. The random-audit key is CLEARSIGHT_AUDIT_SECRET.
        """
        # A link --out is written where it points, as score's is: the decisions file is written
        # beside --out and renamed over it, which replaced the link with a file and left the file
        # it named as it was
        check_name_fits("--out", out)  # is_symlink() raised OSError on a name too long
        out = Path(os.path.realpath(out)) if out.is_symlink() else out
        check_outputs_apart(
            files={"--out": out},
            inputs=[
                verdicts,
                *(p for p in (policy, compare_policy, trader_register, manifest) if p),
            ],
            kept=audit_file(audit_db),
        )
        if out.is_dir():
            raise InputError(f"--out {str(out)!r} is a folder; give the decisions file (JSONL)")
        if out.suffix.lower() not in (".jsonl", ".ndjson"):
            raise InputError(f"--out {str(out)!r}: decisions are written as JSON lines; name the file .jsonl")
        if out.exists() and not overwrite:  # an earlier what-if's decisions are kept unless told
            raise InputError(f"--out {str(out)!r} already exists; pass --overwrite to replace it")
        settings = Settings.load()
        key, key_warning = audit_key(settings, recording=audit_db is not None)
        chosen = load_policy(policy or default_policy_path())
        other = load_policy(compare_policy) if compare_policy is not None else None
        traders = _traders(trader_register, [p for p in (chosen, other) if p is not None])
        not_sealed: list[str] = []
        rows, unfinished = read_finished(
            verdicts, manifest, seal_key=completion_seal_key(settings), unsealed=not_sealed.append
        )
        # each row's own seal checked, whatever the record says (removed, stripped, the file still
        # being written): a row edited since it was scored holds its shipment, the others decided
        untrusted_rows = [0]
        rows = list(untrusted(row_seal_key(settings), rows, f"--verdicts {str(verdicts)!r}", untrusted_rows))
        redeclared = None
        standing = None  # the audit store's decisions of the shipments --manifest emptied
        if manifest is not None:
            # rows no record vouches for: every listed shipment decided, one without a row too
            rows, redeclared = redeclare(
                rows,
                read_declarations(manifest),
                hold_unscored=unfinished is not None,
                content=partial(_hash_listed, max_bytes=settings.max_image_bytes),
            )
            if unfinished is not None:
                _check_listed(verdicts, manifest, unfinished, redeclared)
                note = (
                    f"--verdicts {str(verdicts)!r}: {unfinished[0]}; decided with --manifest, so each "
                    "picture it lists without a row holds its shipment, a shipment it lists with no "
                    "row at all too"
                )
                Console(stderr=True).print(f"[yellow]Note:[/yellow] {escape(note)}", highlight=False)
        recorded = ""
        refused: list[str] = []
        unrecorded: set[str] = set()
        # (other policy, this run's decisions, the other policy's on the same inputs)
        compared: tuple[Policy, list[ShipmentDecision], list[ShipmentDecision]] | None = None
        with contextlib.ExitStack() as stack:
            # the rows were taken under the rules of their day: one refused by a newer character
            # check must not stop its run, nor an alarm raised since, being decided again (the
            # manifest's declarations, new input, were checked as it was read, above)
            stack.enter_context(declarations_as_scored())
            store = None
            if audit_db:  # a URL that is none fails before anything is made
                from pipeline.audit import AuditStore

                AuditStore.check_url(audit_db, option="--audit-db")
            target = _DecisionsFile(out)
            stack.callback(target.discard)
            if audit_db:  # opened before deciding: a store it cannot reach fails before the file is written
                store = stack.enter_context(
                    AuditStore.open(audit_db, seal_key=audit_seal_key(settings), option="--audit-db")
                )
                store.check_policy(chosen.version, chosen.sha256)  # before deciding, not at its first record
            # what deciding refuses of the rows' shipments, refused before any picture is read: a
            # folder run's rows (no shipment) read a whole archive again before they were refused
            _check_shipments(rows, traders)
            # each scored row's picture, once what can fail at once has not: an earlier output copied
            # over today's was decided on other pictures' scores. With --manifest too, but for the
            # rows redeclare compared (those of the pictures it lists): a manifest listing some
            # shipments or pictures (an alarm raised since scoring) left the others decided unread
            rows, at_paths = check_at_paths(
                rows,
                content=partial(_hash_scored, max_bytes=settings.max_image_bytes),
                compared=redeclared.compared if redeclared is not None else (),
            )
            if store is None:
                decisions = _decide_all(chosen, rows, key, f"deciding under {chosen.version}", traders)
                if other is not None:
                    compared = (
                        other,
                        decisions,
                        _decide_all(other, rows, key, f"deciding under {other.version}", traders),
                    )
            else:  # each shipment's pictures looked up in the store before it is decided and recorded
                decisions = []
                if other is not None:
                    # this run's decision (the refused one too) against the other policy's on the
                    # same pictures as looked up and the same earlier holds: only the rules differ
                    compared = (other, [], [])
                for decision, why, what_if in _decide_and_record(
                    chosen,
                    other,
                    rows,
                    key=key,
                    store=store,
                    near_copy_bits=settings.near_copy_bits,
                    traders=traders,
                ):
                    decisions.append(decision)
                    if compared is not None and what_if is not None:
                        compared[1].append(what_if[0])
                        compared[2].append(what_if[1])
                    if why is not None:  # the decision the trail holds, marked refused
                        refused.append(why)
                        unrecorded.add(decision.shipment_id)
                recorded = f", {len(decisions) - len(refused)} recorded in {store.url}"
                if refused:
                    left_out = sum(not _in_the_trail(d) for d in decisions)
                    recorded += (
                        f"; for {len(refused) - left_out} not recorded the file has the decision the audit "
                        'trail holds, marked "refused"'
                        + (f", and {left_out} the trail holds nothing of are left out" if left_out else "")
                    )
            if store is not None and redeclared is not None and redeclared.emptied:
                standing = _standing(store, redeclared.emptied)
            written = [d for d in decisions if _in_the_trail(d)]
            target.write(written)
        console = Console()
        console.print(_summary(chosen, decisions, compared))
        if compared is not None:
            gained = _counts(compared[1])[Tier.RELEASE.value] - _counts(compared[2])[Tier.RELEASE.value]
            changed = sum(a.tier is not b.tier for a, b in zip(compared[1], compared[2], strict=True))
            mine, theirs = _labels(chosen, compared[0])
            console.print(
                f"{mine} releases {gained:+d} shipments compared with {theirs} "
                f"({changed} shipments change tier)"
            )
            if chosen.version == compared[0].version and chosen.sha256 != compared[0].sha256:
                Console(stderr=True).print(
                    f"[yellow]Warning:[/yellow] both policies say policy_version {chosen.version!r} but "
                    "their rules differ; bump the version of the edited one, or decisions will not say "
                    "which rules decided them"
                )
        console.print(f"wrote {len(written)} decisions to {out}{recorded}")
        # the rows --manifest's listed pictures compared are counted in its own lines, below
        besides = "of the rows of pictures --manifest does not list: " if redeclared is not None else ""
        console.print(besides + at_paths.summary())
        warnings = at_paths.warnings()
        if redeclared is not None:
            missed = len(unrecorded & set(redeclared.shipments))
            console.print(
                f"{len(redeclared.shipments)} shipments decided under their declaration in {manifest}"
                + (f" ({missed} not recorded: see below)" if missed else "")
            )
            warnings += _redeclared_warnings(redeclared, standing)
        if untrusted_rows[0]:
            warnings.append(
                f"{untrusted_rows[0]} row(s) of --verdicts {str(verdicts)!r} have a row seal missing or "
                "not verifying under CLEARSIGHT_AUDIT_SECRET (changed after scoring, or scored without "
                "this secret): each held its shipment (fail_closed.image_error); score their inputs again"
            )
        if audit_db is not None and not_sealed:  # operative decisions on rows anyone could have edited
            warnings.append(
                f"--verdicts {str(verdicts)!r} is not sealed ({not_sealed[0]}), so anyone who could write "
                "it could have changed its scores, and the decisions recorded were made on them; score with "
                "CLEARSIGHT_AUDIT_SECRET set, the secret decide has, so that the run seals its rows"
            )
        warnings += [w for w in (key_warning, *chosen.warnings()) if w]
        declared = sum(d.declaration.aeo_tier is not None for d in decisions)
        if traders is None and declared:
            warnings.append(
                f"{declared} shipment(s) decided under the AEO tier their rows declare; pass "
                "--trader-register to take each trader's tier from the authority's register"
            )
        for warning in warnings:
            Console(stderr=True).print(f"[yellow]Warning:[/yellow] {warning}", highlight=False)
        problems = []
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            problems.append(
                f"{len(refused)} decisions were not recorded in the audit store{more}: {refused[0]}"
            )
        if redeclared is not None and redeclared.flagged_unscored:
            first = sorted(redeclared.flagged_unscored)[0]
            problems.append(
                f"{len(redeclared.flagged_unscored)} shipment(s) of --manifest raise a flag but have no rows "
                f"in --verdicts, so no decision here carries it: {first!r} "
                f"({', '.join(redeclared.flagged_unscored[first])}) first; decide them with the rows they "
                "were scored in"
            )
        if problems:
            raise ConflictError("; and ".join(problems))
