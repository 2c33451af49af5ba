"""`clearsight audit`: verify the chain, seal what an operator vouches for, record an officer's outcome,
export, show one shipment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from datasets.errors import AuditError, ConflictError, InputError
from datasets.shown_text import escape_unshown, refuse_unshown
from datasets.type_names import TYPE_NAME_RULE, is_type_name
from pipeline.audit import SCHEMA_VERSION, AuditStore, OutcomeRecord
from pipeline.audit.store import DecisionUnnamed, sqlite_file
from pipeline.cli.output_paths import check_outputs_apart
from pipeline.settings import MAX_OUTCOME_NOTES_CHARS, Settings, audit_seal_key, previous_audit_seal_key
from pipeline.verdicts import UNKNOWN_TYPE, Tier, finding_types

__all__ = ["register"]

_DB_HELP = "Audit store URL (default: CLEARSIGHT_AUDIT_DB, sqlite:///clearsight.db)."
DbOption = Annotated[str | None, typer.Option("--db", help=_DB_HELP)]


def db_option(db: str | None) -> str:
    """Where these commands took the store's URL from, as a bad URL's error names it: their --db, or
    the setting it defaults to (the server's --audit-db, which they do not take, was named)."""
    return "--db" if db else "CLEARSIGHT_AUDIT_DB"


_NO_SEALS_HELP = (
    "Check the chain without the server's key (CLEARSIGHT_AUDIT_SECRET): the seals are not checked, so "
    "records a database writer added or rewrote in full are not caught."
)


_NO_SEALS_SHOWN = (
    "Show the records as they are, their seals not checked (records without a seal, to look at before "
    "`audit seal`; or without the server's key)."
)


def _open(db: str | None, *, create: bool = False, seals: bool = True) -> AuditStore:
    """The store, sealing what it records and checking seals with the key of this run's settings
    (none with ``seals=False``)."""
    settings = Settings.load()
    key = audit_seal_key(settings) if seals else None
    return AuditStore.open(db or settings.audit_db, create=create, seal_key=key, option=db_option(db))


def _table_console() -> Console:
    """A terminal's width on a terminal; wide lines when piped (rich would assume 80 columns and fold
    every id in a file or a grep)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _shown(text: str, style: str = "", *, breaks: bool = False, name: bool = False) -> Text:
    """A recorded value as printed: its unshown characters escaped (a record decided before the
    character rule, or an outcome recorded before it; notes' line breaks), the rest as recorded.
    Escaped as an id by default, as a name with ``name`` (a cargo type, an officer), as free text
    with ``breaks`` (notes, messages): a joiner between letters is printed as it is only in those two
    (:func:`datasets.shown_text.escape_unshown`).

    A Text, never markup: ``[bold]`` in notes restyled the line and ``[/]`` failed the command, and
    rich.markup.escape, which kept them as typed, doubles a backslash that ends a value (officer
    ``DOM\\`` was shown as ``DOM\\\\``, and a shipment id so shown is not found when copied)."""
    return Text(escape_unshown(text, breaks=breaks, name=name), style=style)


def _anchor(text: str, *, option: str = "--expect") -> tuple[int, str]:
    """``SEQ:HASH`` -> (seq, hash); raises InputError naming the bad value."""
    seq, sep, digest = text.partition(":")
    if not (
        sep
        and seq.isascii()
        and seq.isdigit()
        and len(seq) <= 19  # int() of thousands of digits raised a ValueError, and seqs are 64-bit
        and int(seq) >= 1
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    ):
        raise InputError(
            f"{option} {text[:100]!r} is not SEQ:HASH (a record number >= 1, ':', 64 lowercase hex)"
        )
    return int(seq), digest


def _has_outcome(shipment_id: str, seq: int, outcome: OutcomeRecord) -> str:
    """Why an outcome is refused for a decision that has one, the recorded outcome's text escaped as
    `audit show` prints it (recorded before any rule, an officer's ESC rewrote the next one's terminal)."""
    found = "clean" if outcome.found is None else f"found {escape_unshown(outcome.found)}"
    return (
        f"shipment {shipment_id!r} already has an outcome for decision {seq} ({found}, recorded by "
        f"{escape_unshown(outcome.officer, name=True)} at {escape_unshown(outcome.created_at)}, "
        f"record {outcome.seq}); "
        "pass --amend to record a correction"
    )


def _refuse_an_unnamed_decision(store: AuditStore, shipment_id: str) -> None:
    """Refuse an outcome without --decision-seq for a shipment decided more than once, as the store
    does where it writes (which judged the latest decision, recorded maybe after the officer looked).

    Raises:
        ConflictError: naming the shipment's decisions and --decision-seq.
    """
    decided = [record.seq for record in store.decisions_of([shipment_id])]
    if len(decided) > 1:
        raise ConflictError(_unnamed(DecisionUnnamed(shipment_id, decided)))


def _unnamed(exc: DecisionUnnamed) -> str:
    """The store's refusal of an outcome naming no decision, in the CLI's words."""
    return (
        f"shipment {exc.shipment_id!r} was decided more than once ({exc.named()}): name the decision "
        "the officer inspected with --decision-seq (`clearsight audit show` gives the latest one's "
        "record), so that the outcome judges no decision recorded since"
    )


def register(app: typer.Typer) -> None:
    """Add the ``audit`` command group to the root app."""
    group = typer.Typer(
        help="The tamper-evident audit trail of decisions and outcomes.", no_args_is_help=True
    )
    app.add_typer(group, name="audit")
    from pipeline.cli.field_report import register_report  # it takes this module's --db option

    register_report(group)

    @group.command("verify")
    def verify(
        db: DbOption = None,
        expect: Annotated[
            list[str] | None,
            typer.Option(
                "--expect",
                help="SEQ:HASH of a head published earlier (repeatable): that record must still be in "
                "the chain with that hash. A chain cut back, or rewritten from scratch, passes every "
                "other check.",
            ),
        ] = None,
        no_seals: Annotated[bool, typer.Option("--no-seals", help=_NO_SEALS_HELP)] = False,
    ) -> None:
        """Re-compute the hash chain and check every record's seal with the server's key; exit
        non-zero naming the first bad record and what happened to it.

        Prints the head to publish (a ticket, an e-mail, a second system): a later --expect with it
        proves that no record up to it was removed or rewritten since.
        """
        anchors = [_anchor(text) for text in expect or []]
        with _open(db, seals=not no_seals) as store:
            report = store.verify()
            if not report.ok:
                what = report.index or "chain"
                broken = f"{what} broken at record {report.first_bad} ({report.problem})"
                raise AuditError(f"{store.url}: {broken}: {report.message}")
            for seq, published in anchors:
                found = store.hash_at(seq)
                if found is None:
                    raise AuditError(
                        f"{store.url}: record {seq}, published with hash {published}, is gone: the chain was "
                        f"cut back (its head is now record {report.head_seq})"
                    )
                if found != published:
                    raise AuditError(
                        f"{store.url}: record {seq} has hash {found}, but {published} was published: the "
                        "chain up to it was rewritten"
                    )
        checked = f"; {len(anchors)} published head(s) found unchanged" if anchors else ""
        publish = (
            f" (publish '{report.head_seq}:{report.head_hash}' to check against later with --expect)"
            if report.head_seq
            else ""
        )
        Console().print(
            f"{report.message}{checked}; head seq {report.head_seq} hash {report.head_hash}{publish}"
        )
        Console().print(f"seals: {report.seals}")

    @group.command("seal")
    def seal(
        expect: Annotated[
            str,
            typer.Option(
                "--expect",
                help="SEQ:HASH of the head you vouch for, as published (by `audit verify`) outside the "
                "database: the records up to it without a seal are sealed.",
            ),
        ],
        rotate: Annotated[
            bool,
            typer.Option(
                "--rotate",
                help="Rotate the secret: check every seal under the previous secret "
                "(CLEARSIGHT_PREVIOUS_AUDIT_SECRET), then seal every record again under "
                "CLEARSIGHT_AUDIT_SECRET. Needs --head. Stop every writer first.",
            ),
        ] = False,
        head: Annotated[
            str | None,
            typer.Option(
                "--head",
                help="With --rotate: SEQ:HASH of the chain's head as it stands (as `audit verify` prints "
                "it), once you have looked at the records after the head published last (--expect).",
            ),
        ] = None,
        db: DbOption = None,
    ) -> None:
        """Seal the records that carry no seal, with the server's key (CLEARSIGHT_AUDIT_SECRET),
        once you vouch for them by a head published earlier; upgrades a store from before seals.

        Records without a seal (a store from before seals, or records a writer without the key
        left) are refused by the service and the batch commands until then. First check the chain
        (`audit verify --no-seals`) and compare its head with the one published last: nothing is
        sealed if the chain is broken, the head is not in it, or a record after the head lacks a seal.

        With --rotate, a new secret replaces the old one (it leaked, or its holder left): stop the
        service and the batch jobs, check the chain under the old secret (`audit verify --expect`
        the head published last, looking at any records after it), then run this with both
        secrets set, --expect the head published last and --head the head as it stands, and
        restart every writer with the new secret. Writers still holding the old one refuse to
        append.
        """
        anchor = _anchor(expect)
        if rotate and head is None:
            raise InputError(
                "--rotate needs --head SEQ:HASH, the chain's head as it stands (`audit verify` prints "
                "it): the new secret vouches for every record, those after the published head too"
            )
        if head is not None and not rotate:
            raise InputError("--head names the chain's head for --rotate; pass --rotate, or leave --head out")
        now = _anchor(head, option="--head") if head is not None else None
        settings = Settings.load()
        key = audit_seal_key(settings)
        if key.weak and not settings.allow_development_audit_secret:
            # seals anyone can compute vouch for nothing, and the server's key refuses them after
            raise InputError(
                "CLEARSIGHT_AUDIT_SECRET is not set, or is the public development secret or one under 16 "
                "characters: set it to the server's secret to seal with the server's key "
                "(CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET=1 allows sealing a trial store with it)"
            )
        previous = previous_audit_seal_key(settings)
        if rotate and previous is None:
            raise InputError(
                "--rotate checks the seals under the previous secret: set CLEARSIGHT_PREVIOUS_AUDIT_SECRET "
                "to the secret the records were sealed under (and CLEARSIGHT_AUDIT_SECRET to the new one)"
            )
        if previous is not None and not rotate:
            raise InputError(
                "CLEARSIGHT_PREVIOUS_AUDIT_SECRET is set: pass --rotate to seal every record again under "
                "CLEARSIGHT_AUDIT_SECRET, or unset it to seal only the records without a seal"
            )
        with AuditStore.open(
            db or settings.audit_db, create=False, seal_key=key, option=db_option(db)
        ) as store:
            if previous is None:
                report = store.seal_unsealed(expect=anchor)
            else:
                assert now is not None  # --rotate needs --head, checked above
                report = store.rotate_seals(expect=anchor, head=now, previous=previous)
        upgraded = (
            f"; upgraded from schema version {report.upgraded_from} to {SCHEMA_VERSION}"
            if report.upgraded_from is not None
            else ""
        )
        if report.rotated:
            unsealed = f", {report.had_no_seal} of them without a seal before" if report.had_no_seal else ""
            sealed = (
                f"sealed all {report.sealed} records again under the new secret (seq {report.first} to "
                f"{report.last}{unsealed}), vouched for by the published head {anchor[0]} and the head "
                f"{report.head_seq} named: restart every writer with the new secret"
            )
        elif report.sealed:
            sealed = (
                f"sealed {report.sealed} records (seq {report.first} to {report.last}), vouched for by head "
                f"{anchor[0]}"
            )
        else:
            sealed = "no record lacked a seal: nothing sealed"
        Console().print(f"{sealed}{upgraded}; head seq {report.head_seq} hash {report.head_hash}")
        Console().print(f"seals: {report.seals}")

    @group.command("outcome")
    def outcome(
        shipment_id: Annotated[str, typer.Argument(help="The shipment inspected.")],
        officer: Annotated[str, typer.Option("--officer", help="Id of the officer who inspected it.")],
        found: Annotated[
            str | None, typer.Option("--found", help="Anomaly type found (e.g. foreign_object).")
        ] = None,
        clean: Annotated[
            bool, typer.Option("--clean", help="Nothing was found: the cargo was clean.")
        ] = False,
        notes: Annotated[
            str,
            typer.Option("--notes", help=f"Free-text notes, at most {MAX_OUTCOME_NOTES_CHARS} characters."),
        ] = "",
        new_type: Annotated[
            bool,
            typer.Option(
                "--new-type", help="--found names a kind of anomaly the shipment's model does not know."
            ),
        ] = False,
        amend: Annotated[
            bool,
            typer.Option(
                "--amend",
                help="Correct an outcome already recorded for the decision (refused without it, so that "
                "two officers do not overwrite each other's finding unawares); on an earlier decision "
                "(--decision-seq), only a finding: a clean outcome there is refused, as the cargo was "
                "decided again since.",
            ),
        ] = False,
        decision_seq: Annotated[
            int | None,
            typer.Option(
                "--decision-seq",
                min=1,
                help="The audit record of the decision judged (as `audit show` gives it): refused if the "
                "shipment was decided again since, but with --amend where it has a finding to correct "
                "(not a clean outcome, nor none); required where the shipment has more than one decision.",
            ),
        ] = None,
        db: DbOption = None,
    ) -> None:
        """Record an officer's inspection outcome for a shipment's latest decision (chained too).

        An outcome is kept for good: --found must be a type the shipment's model scored against (or
        unknown), unless --new-type says it is a kind the model does not know. A decision that has an
        outcome takes another only with --amend: an earlier decision too (--decision-seq) where its
        outcome is a finding, which, recorded by mistake, holds its pictures whenever they are sent
        again; a clean one there is refused, as the cargo was decided again since.
        """
        if (found is None) == (not clean):
            raise InputError("give exactly one of --found TYPE or --clean")
        if found is not None and not is_type_name(found):
            raise InputError(f"--found {found[:70]!r} is not a type name: {TYPE_NAME_RULE}")
        try:  # the store refuses them too, after the lookups: named here as the options they came in
            refuse_unshown(officer, "--officer", name=True)
            refuse_unshown(notes, "--notes", breaks=True)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if len(notes) > MAX_OUTCOME_NOTES_CHARS:  # kept in the chain for good, as the API bounds them
            raise InputError(
                f"--notes is {len(notes)} characters long; an outcome takes at most "
                f"{MAX_OUTCOME_NOTES_CHARS} (as the API and the review page do): shorten them, or keep the "
                "full report elsewhere and name it in the notes"
            )
        with _open(db) as store:
            latest = store.get(shipment_id)
            if latest is not None and decision_seq is None:
                # first, before the checks below judge the latest decision as the one inspected
                _refuse_an_unnamed_decision(store, shipment_id)
            # an outcome for an earlier decision is the store's to refuse as decided again, but for a
            # correction of a finding recorded on it, judged against that decision
            judged = latest if latest is not None and decision_seq in (None, latest.seq) else None
            if latest is not None and judged is None and amend:
                judged = next(
                    (
                        r
                        for r in store.decisions_of([shipment_id])
                        if r.seq == decision_seq and r.outcome is not None and r.outcome.found is not None
                    ),
                    None,
                )
            if judged is not None and not amend and judged.outcome is not None:
                raise ConflictError(_has_outcome(shipment_id, judged.seq, judged.outcome))
            if judged is not None and found is not None and not new_type:
                # the API's rule, with no model loaded: a model that knows no types (none labelled in
                # training) let any name become a finding, and a picture of another cargo type its own
                accepted = finding_types(judged.decision)
                if found not in accepted:
                    none = ": its model knows none" if accepted == [UNKNOWN_TYPE] else ""
                    raise InputError(
                        f"--found {found!r} is not a type the {judged.decision.cargo_type} pictures of "
                        f"shipment {shipment_id!r} were scored against{none} (accepted: "
                        f"{', '.join(accepted)}); pass --new-type if inspection found a kind of anomaly "
                        "its model does not know"
                    )
            try:
                record = store.record_outcome(
                    shipment_id,
                    found=found,
                    officer=officer,
                    notes=notes,
                    decision_seq=decision_seq,
                    amend=amend,
                )
            except DecisionUnnamed as exc:  # decided again since the check above
                raise ConflictError(_unnamed(exc)) from None
            except ConflictError:
                # the store checks again where it writes: another officer got there meanwhile
                now = store.get(shipment_id)
                if amend or now is None or now.outcome is None or decision_seq not in (None, now.seq):
                    raise
                raise ConflictError(_has_outcome(shipment_id, now.seq, now.outcome)) from None
            standing = store.get(shipment_id)
        what = "clean" if record.found is None else f"found {record.found}"
        # a correction of a superseded decision: the officer is told where the shipment stands
        later = (
            f"; its latest decision, {standing.seq} ({standing.decision.tier.value}), stands as recorded"
            if standing is not None and standing.seq != record.decision_seq
            else ""
        )
        Console().print(
            Text.assemble(
                "recorded outcome of ",
                _shown(shipment_id),
                f" for decision {record.decision_seq} (",
                _shown(what),
                f") as record {record.seq}{later}",
            )
        )

    @group.command("export")
    def export(
        out: Annotated[Path, typer.Option("--out", help="Output file, .csv or .jsonl.")],
        db: DbOption = None,
        chain: Annotated[
            bool,
            typer.Option(
                "--chain",
                help="Every record (decisions and outcomes) with its hashes and exact hashed content, "
                "as JSONL: a copy an auditor checks with `clearsight audit verify-file`.",
            ),
        ] = False,
        no_seals: Annotated[bool, typer.Option("--no-seals", help=_NO_SEALS_HELP)] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing --out file.")
        ] = False,
    ) -> None:
        """Export every recorded decision with its latest outcome to CSV or JSONL, or the whole chain,
        each record checked as it is read, its seal too with the server's key."""
        # As decide and score check theirs: an export replaced any file (a dataset's manifest.csv, a
        # scoring run's rows, the audit store itself) without asking
        store_file = sqlite_file(db or Settings.load().audit_db)
        check_outputs_apart(
            files={"--out": out}, inputs=[], kept={"--db": store_file} if store_file else None
        )
        if out.is_dir():
            raise InputError(f"--out {str(out)!r} is a folder; give a file")
        if out.exists() and not overwrite:  # an earlier export, or any other file, is kept unless told
            raise InputError(f"--out {str(out)!r} already exists; pass --overwrite to replace it")
        if chain and out.suffix.lower() not in (".jsonl", ".ndjson"):
            raise InputError(
                f"--out {str(out)!r}: the chain is written as JSON lines (what verify-file reads); name "
                "the file .jsonl"
            )
        with _open(db, seals=not no_seals) as store:
            if chain:
                count = store.export_chain(out)
                Console().print(f"exported {count} records, the whole chain up to its head, to {out}")
                return
            count = store.export(out)
        Console().print(f"exported {count} decisions to {out}")

    @group.command("verify-file")
    def verify_file(
        path: Annotated[
            Path, typer.Argument(help="A chain exported with `clearsight audit export --chain`.")
        ],
        expect: Annotated[
            str | None, typer.Option("--expect", help="SEQ:HASH of a published head the file must reach.")
        ] = None,
        headless: Annotated[
            bool,
            typer.Option(
                "--headless",
                help="Accept a file without a head line (exported before the head line was written); "
                "records missing from its end cannot be told.",
            ),
        ] = False,
        no_seals: Annotated[bool, typer.Option("--no-seals", help=_NO_SEALS_HELP)] = False,
    ) -> None:
        """Recompute every link of an exported chain, without the database, and check every record's
        seal with the server's key (CLEARSIGHT_AUDIT_SECRET)."""
        from pipeline.audit.chain_file import verify_chain_file

        key = None if no_seals else audit_seal_key(Settings.load())
        report = verify_chain_file(path, expect=dict([_anchor(expect)]) if expect else None, seal_key=key)
        # every export now begins with its head: a file without one is an old export or one whose
        # first line was taken away with its last records, and only the user can tell which
        if not report.tail_checked and report.records == 0:
            raise AuditError(f"{path}: empty: no head line and no record, not an exported chain")
        if not report.tail_checked and not headless:
            raise AuditError(
                f"{path}: no head line, so records missing from its end cannot be told ({report.records} "
                "records link up). Exports since Clearsight's session 28 begin with one: if this is an "
                "older export, check it with --headless (and --expect a head published earlier); "
                "otherwise its first line was removed"
            )
        head = f"head seq {report.head_seq} hash {report.head_hash}"
        untold = (
            ""
            if report.tail_checked
            else "; the file has no head line (exported by an older Clearsight), so records missing "
            "from its end cannot be told: check it against a published head with --expect"
        )
        Console().print(f"{report.records} records verified, chain intact; {head}{untold}")
        Console().print(f"seals: {report.seals}")

    @group.command("show")
    def show(
        shipment_id: Annotated[str, typer.Argument(help="The shipment to show.")],
        db: DbOption = None,
        no_seals: Annotated[bool, typer.Option("--no-seals", help=_NO_SEALS_SHOWN)] = False,
    ) -> None:
        """Show the latest recorded decision for a shipment, its reasons and its outcome, its records'
        seals checked with the server's key."""
        with _open(db, seals=not no_seals) as store:
            record = store.get(shipment_id)
        if record is None:
            raise InputError(f"no decision recorded for shipment {shipment_id!r}")
        d = record.decision
        console = _table_console()
        console.print(
            Text.assemble(
                _shown(d.shipment_id, "bold"),
                " ",
                _shown(d.cargo_type, name=True),
                ": ",
                (d.tier.value, "bold"),
                " (random audit)" if d.random_audit else "",
            )
        )
        console.print(
            Text.assemble(
                f"record {record.seq} {record.record_hash}; decided ",
                _shown(d.decided_at),
                " under policy ",
                _shown(d.policy_version),
                f" ({d.policy_sha256[:12]}); models ",
                _shown(", ".join(d.model_ids) or "-"),
            )
        )
        table = Table()
        table.add_column("rule", overflow="fold")
        table.add_column("tier", overflow="fold")
        # names are what an officer looks up: folded onto more lines, never cut short
        table.add_column("image", overflow="fold")
        table.add_column("score")
        table.add_column("threshold")
        table.add_column("message", overflow="fold")
        for r in d.reasons:
            table.add_row(
                _shown(r.rule),
                Text(r.tier.value),
                _shown(r.image or "", name=True),
                "" if r.score is None else f"{r.score:.4f}",
                "" if r.threshold is None else f"{r.threshold:.4f}",
                _shown(r.message, breaks=True),
            )
        console.print(table)
        o = record.outcome
        console.print(
            Text("outcome: pending")
            if o is None
            else Text.assemble(
                "outcome: ",
                _shown("clean" if o.found is None else o.found),
                " by ",
                _shown(o.officer, name=True),
                " at ",
                _shown(o.created_at),
                *((": ", _shown(o.notes, breaks=True)) if o.notes else ()),
            )
        )

    @group.command("list")
    def list_(
        tier: Annotated[
            list[Tier] | None, typer.Option("--tier", help="Only these tiers (repeatable).")
        ] = None,
        pending: Annotated[
            bool, typer.Option("--pending", help="Only decisions without an outcome.")
        ] = False,
        limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many.")] = 50,
        db: DbOption = None,
        no_seals: Annotated[bool, typer.Option("--no-seals", help=_NO_SEALS_SHOWN)] = False,
    ) -> None:
        """List the latest decision per shipment, newest first (the review queue), the seals of the
        records listed checked with the server's key."""
        with _open(db, seals=not no_seals) as store:
            records = store.list(tiers=tier or None, limit=limit, pending_outcome=True if pending else None)
        table = Table()
        table.add_column("seq")
        # the shipment id is what `audit outcome` is given: folded in a narrow terminal, never cut short
        for name in ("shipment", "cargo", "tier", "audit", "outcome", "decided"):
            table.add_column(name, overflow="fold")
        for r in records:
            o = r.outcome
            table.add_row(
                str(r.seq),
                _shown(r.decision.shipment_id),
                _shown(r.decision.cargo_type, name=True),
                Text(r.decision.tier.value),
                "yes" if r.decision.random_audit else "",
                "" if o is None else _shown(o.found or "clean"),
                _shown(r.decision.decided_at),
            )
        _table_console().print(table)
