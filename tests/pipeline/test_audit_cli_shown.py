"""What `clearsight audit show`, `audit list` and `audit outcome` print of recorded text: each value
exactly as recorded, its unshown characters escaped, never read as rich markup."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.audit import AuditStore
from pipeline.verdicts import Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import cli_key  # noqa: E402


def _cells(out: str, first: str) -> list[str]:
    """The cells of the table row of ``out`` whose first cell is ``first``."""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{out}")


def test_cli_prints_a_value_ending_in_a_backslash_as_recorded(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """rich.markup.escape doubles a backslash at the end of a string (it would escape the markup
    that follows), so an officer ``DOM\\`` was shown as ``DOM\\\\`` and a shipment id ``S7\\`` in
    the listing as ``S7\\\\``: an officer who copied it found no such shipment."""
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(audit_builders.decision("S7\\", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold"))
    argv = ["audit", "outcome", "S7\\", "--officer", "DOM\\", "--clean", "--notes", "C:\\scans\\"]
    assert run(app, [*argv, "--db", db_url]) == 0
    assert capsys.readouterr().out.strip() == "recorded outcome of S7\\ for decision 1 (clean) as record 2"

    assert run(app, ["audit", "show", "S7\\", "--db", db_url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "S7\\ bulk_ore: PHYSICAL_INSPECTION"
    assert _cells("\n".join(lines), "score.hold")[2] == "S7\\.png"
    assert lines[-1].startswith("outcome: clean by DOM\\ at "), lines[-1]
    assert lines[-1].endswith(": C:\\scans\\"), lines[-1]

    assert run(app, ["audit", "list", "--db", db_url]) == 0
    assert _cells(capsys.readouterr().out, "1")[:3] == ["1", "S7\\", "bulk_ore"]


def test_cli_prints_markup_in_recorded_text_as_typed(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Markup in notes is text: ``[bold]`` restyles nothing and a stray ``[/]`` fails nothing."""
    from pipeline.cli import app, run

    notes = "[bold]B[/bold] stray [/] back\\[red]x end\\"
    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(audit_builders.decision("S1", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold"))
        store.record_outcome("S1", found="wet_patch", officer="of[/]f", notes=notes)
    assert run(app, ["audit", "show", "S1", "--db", db_url]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f": {notes}")


def test_cli_prints_a_joiner_that_shapes_no_letters_escaped(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The joiners were printed raw everywhere: a shipment id ``S\u200d7`` recorded before the
    character rule was listed as ``S7``, beside the real S7, and the officer ``alice\u200d`` shown
    as ``alice``. An id prints every joiner escaped; a name or notes print one raw only between two
    letters, where it shapes them (``حسن\u200cزاده``)."""
    from pipeline.cli import app, run
    from pipeline.verdicts import Declaration

    legacy = "S\u200d7"
    persian = "\u062d\u0633\u0646\u200c\u0632\u0627\u062f\u0647"
    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(audit_builders.decision("S7", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold"))
        made = audit_builders.decision("S8", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold")
        cargo = f"ore \u200d{persian}"  # a joiner after a space shapes nothing
        declared = Declaration.model_construct(shipment_id=legacy, cargo_type=cargo)
        store.record(
            made.model_copy(update={"shipment_id": legacy, "cargo_type": cargo, "declaration": declared})
        )
        store.record_outcome("S7", found=None, officer="alice\u200d", notes=f"{persian} \u200c")
    assert run(app, ["audit", "list", "--db", db_url]) == 0
    listed = capsys.readouterr().out
    assert _cells(listed, "1")[1] == "S7" and _cells(listed, "2")[1] == "S\\u200d7", listed
    assert run(app, ["audit", "show", "S7", "--db", db_url]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("outcome: clean by alice\\u200d at ") and last.endswith(f": {persian} \\u200c")
    assert run(app, ["audit", "show", legacy, "--db", db_url]) == 0
    first = capsys.readouterr().out.strip().splitlines()[0]
    assert first == f"S\\u200d7 ore \\u200d{persian}: PHYSICAL_INSPECTION", first


def test_cli_refusal_of_a_second_outcome_escapes_the_recorded_one(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "already has an outcome" refusal named the recorded officer and finding raw: an outcome
    recorded before any character rule wrote its ESC to the terminal of the next officer."""
    import pipeline.audit.store as store_module
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(audit_builders.decision("S1", Tier.PHYSICAL_INSPECTION, score=0.9, rule="score.hold"))
        with monkeypatch.context() as before:  # as a version without the outcome rule recorded it
            before.setattr(store_module, "check_outcome", lambda *args: None)
            store.record_outcome("S1", found="wet\u202epatch", officer="o-\x1b[2J", notes="")
    assert run(app, ["audit", "outcome", "S1", "--officer", "o-2", "--clean", "--db", db_url]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err, err
    assert "(found wet\\u202epatch, recorded by o-\\x1b[2J at " in err, err
