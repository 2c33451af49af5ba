"""`clearsight audit report`: what the inspections recorded in the audit trail say of the models in
the field (:mod:`pipeline.field_report`), as ``field_report.json``, ``field_report.html`` and a
summary per cargo type."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from datasets.errors import InputError
from datasets.whole_files import keep_mode_and_owner, temporary_beside
from pipeline.cli.audit import DbOption, db_option
from pipeline.cli.output_paths import check_writable, output_error
from pipeline.settings import Settings, audit_seal_key

__all__ = ["REPORT_FILES", "register_report"]

REPORT_FILES = ("field_report.json", "field_report.html")


def _day(text: str | None, option: str) -> datetime | None:
    """``YYYY-MM-DD`` (or a full ISO 8601 time) as an aware UTC datetime; None for None."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} {text[:40]!r} is not a date (YYYY-MM-DD, or an ISO 8601 time)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _write_both(out: Path, figures: dict[str, object], page: str) -> None:
    """Write field_report.json and .html into ``out`` (made if missing), each to a temporary file
    beside it first (:func:`~datasets.whole_files.temporary_beside`) and then renamed over the old,
    so that a failure leaves no new file beside an old one."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {"field_report.json": json.dumps(figures, indent=2) + "\n", "field_report.html": page}
    staged: list[tuple[Path, Path]] = []
    try:
        for name, text in texts.items():
            final = out / name
            temporary, descriptor = temporary_beside(final)
            staged.append((temporary, final))
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                keep_mode_and_owner(handle.fileno(), final)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        for _, final in staged:  # what would fail one rename after the other had replaced its file
            if final.is_dir():
                raise IsADirectoryError(21, "is a folder", str(final))
        for temporary, final in staged:
            os.replace(temporary, final)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def register_report(group: typer.Typer) -> None:
    """Add ``report`` to the ``audit`` group."""

    @group.command("report")
    def report(
        out: Annotated[
            Path, typer.Option("--out", help="Folder for field_report.json and .html (made if missing).")
        ],
        db: DbOption = None,
        since: Annotated[
            str | None, typer.Option("--since", help="Count decisions decided on or after this day (UTC).")
        ] = None,
        until: Annotated[
            str | None, typer.Option("--until", help="Count decisions decided before this day (UTC).")
        ] = None,
        target: Annotated[
            float,
            typer.Option(
                "--target-miss-rate",
                help="The share of anomalous cargo the models may release (their validation target).",
            ),
        ] = 0.01,
        no_seals: Annotated[
            bool,
            typer.Option(
                "--no-seals",
                help="Check the chain as it is read without the server's key (seals not checked): figures "
                "from records a database writer added would count them.",
            ),
        ] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an earlier report in --out.")
        ] = False,
    ) -> None:
        """What the inspections say of the models in the field: per cargo type, week and model, the
        share of cargo released, the anomalies the random audits of would-be releases found, and the
        estimated share of anomalous cargo released against the target. The whole chain is checked as it
        is read (hashes, links, seals); each shipment counts once, by its audit of a would-be release
        (with what inspections found from it on), else its latest inspected decision, else its latest."""
        from pipeline.audit import AuditStore
        from pipeline.audit.seal import seals_unchecked
        from pipeline.field_report import field_report
        from pipeline.field_report_page import render_field_report

        start, end = _day(since, "--since"), _day(until, "--until")
        if start is not None and end is not None and end <= start:
            raise InputError(f"--until {until!r} is not after --since {since!r}: no decision lies between")
        if not 0 < target < 1:
            raise InputError(
                f"--target-miss-rate {target!r} not accepted (a share above 0 and below 1, e.g. 0.01)"
            )
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {str(out)!r} is a file; give a folder for the report (made if missing)")
        check_writable("--out", out, folder=True)
        taken = [name for name in REPORT_FILES if (out / name).exists()]
        if taken and not overwrite:
            raise InputError(
                f"--out {str(out)!r} already holds {', '.join(taken)}; pass --overwrite to replace "
                f"{'them' if len(taken) > 1 else 'it'}, or give another folder"
            )
        settings = Settings.load()
        key = None if no_seals else audit_seal_key(settings)
        with AuditStore.open(
            db or settings.audit_db, create=False, seal_key=key, option=db_option(db)
        ) as store:
            seals = store.seal_check()
            # read up to the head, every record checked as it is read: none appended since counts
            decisions = store.checked_decisions(
                seals=seals, refused="no figures drawn: they are not drawn from a trail that does not verify"
            )
            figures = field_report(decisions, target=target, since=start, until=end)
            shown = store.url
        said = seals.summary(seals.checked) if seals is not None else seals_unchecked()
        try:
            _write_both(out, figures.as_json(), render_field_report(figures, store=shown))
        except OSError as exc:
            raise output_error("--out", out, exc, folder=True) from exc
        console = Console(highlight=False, soft_wrap=True, markup=False)  # cargo types are anyone's text
        console.print(f"seals: {said}")
        for name, g in figures.by_cargo.items():
            console.print(
                f"{name}: {g.decided:,} shipments, {g.would_release:,} would be released (released or "
                f"audited; {g.audited_inspected:,} audited and inspected, {g.audited_found:,} found "
                "anomalous); anomalous cargo released: "
                f"{g.verdict(target)}"
            )
        console.print(f"wrote {out / 'field_report.html'} and {out / 'field_report.json'}")
