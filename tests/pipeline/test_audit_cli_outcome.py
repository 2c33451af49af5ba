"""`clearsight audit outcome` is held to the API's rules for an outcome already recorded and for the
decision judged: a second outcome only with --amend, and --decision-seq refused once decided again."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from pipeline.audit import AuditStore
from pipeline.verdicts import ShipmentDecision, Tier

sys.path.insert(0, str(Path(__file__).parent))
import audit_builders  # noqa: E402
from audit_builders import cli_key  # noqa: E402


def decision(shipment: str, tier: Tier) -> ShipmentDecision:
    return audit_builders.decision(shipment, tier, score=0.9, rule="score.hold")


CASES = [
    # (name, arguments after the officer's first outcome on decision 1, exit code, said, outcome then)
    ("second-refused", ["--clean"], 2,
     "already has an outcome for decision 1 (found wet_patch, recorded by o-1 at", "wet_patch"),
    ("second-amends", ["--clean", "--amend"], 0,
     "recorded outcome of S1 for decision 1 (clean) as record 3", "clean"),
    ("same-decision-refused", ["--clean", "--decision-seq", "1"], 2,
     "pass --amend to record a correction", "wet_patch"),
    ("same-decision-amends", ["--clean", "--decision-seq", "1", "--amend"], 0, "as record 3", "clean"),
    ("no-such-decision", ["--clean", "--decision-seq", "7", "--amend"], 2,
     "shipment 'S1' has no decision 7", "wet_patch"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "said", "then"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_outcome_overwrites_an_outcome_only_when_told(
    db_url: str, capsys: pytest.CaptureFixture[str], args: list[str], code: int, said: str, then: str
) -> None:
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))
    first = [
        "audit",
        "outcome",
        "S1",
        "--officer",
        "o-1",
        "--found",
        "wet_patch",
        "--new-type",
        "--db",
        db_url,
    ]
    assert run(app, first) == 0
    capsys.readouterr()
    assert run(app, ["audit", "outcome", "S1", "--officer", "o-2", *args, "--db", db_url]) == code
    captured = capsys.readouterr()
    assert said in " ".join((captured.out + captured.err).split())
    if code:
        assert captured.err.startswith("Error: ")
    with AuditStore.open(db_url, create=False) as store:
        outcome = store.get("S1").outcome  # type: ignore[union-attr]
        assert outcome is not None and (outcome.found or "clean") == then
        assert store.verify().records_checked == (3 if code == 0 else 2)


def test_cli_outcome_for_a_decision_since_superseded_is_refused(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION))
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))  # decided again: record 2
    argv = ["audit", "outcome", "S1", "--officer", "o-1", "--clean", "--db", db_url]
    assert run(app, [*argv, "--decision-seq", "1"]) == 2
    assert "was decided again since decision 1: its latest decision is 2" in capsys.readouterr().err
    assert run(app, [*argv, "--decision-seq", "2"]) == 0


SUPERSEDED = [
    # (name, shipment, arguments, exit code, said, decision 1's outcome then)
    ("amends", "S1", ["--decision-seq", "1", "--clean", "--amend"], 0,
     "recorded outcome of S1 for decision 1 (clean) as record 6; its latest decision, 3 "
     "(PHYSICAL_INSPECTION), stands as recorded", "clean"),
    ("amends-to-another-finding", "S1", ["--decision-seq", "1", "--found", "unknown", "--amend"], 0,
     "recorded outcome of S1 for decision 1 (found unknown) as record 6; its latest decision, 3 "
     "(PHYSICAL_INSPECTION), stands as recorded", "unknown"),
    ("not-told", "S1", ["--decision-seq", "1", "--clean"], 2,
     "shipment 'S1' was decided again since decision 1: its latest decision is 3; judge that one, or "
     "correct the outcome recorded on decision 1 (record 2) with amend (the API's amend: true, the "
     "CLI's --amend)", "wet_patch"),
    ("judged-against-that-decision", "S1", ["--decision-seq", "1", "--found", "wet_ptach", "--amend"], 2,
     "--found 'wet_ptach' is not a type the bulk_ore pictures of shipment 'S1' were scored against: its "
     "model knows none (accepted: unknown); pass --new-type", "wet_patch"),
    ("none-to-correct", "S2", ["--decision-seq", "4", "--clean", "--amend"], 2,
     "shipment 'S2' was decided again since decision 4: its latest decision is 5; amend corrects an "
     "outcome already recorded, and decision 4 has none: judge the latest", "wet_patch"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("shipment", "args", "code", "said", "then"), [c[1:] for c in SUPERSEDED], ids=[c[0] for c in SUPERSEDED]
)
def test_cli_outcome_corrects_the_outcome_of_a_decision_since_superseded_with_amend(
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    shipment: str,
    args: list[str],
    code: int,
    said: str,
    then: str,
) -> None:
    """A finding recorded on S1's decision 1 by mistake, S1 decided again since (decision 3):
    --decision-seq 1 was refused as decided again, --amend or not, and the finding held its pictures
    whenever sent again. With --amend it is corrected, judged against decision 1's types, and the
    chain verifies; a superseded decision without an outcome (S2's 4) takes none."""
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION))
        store.record_outcome("S1", found="wet_patch", officer="o-1")
        for seq, (name, tier) in enumerate(
            [
                ("S1", Tier.PHYSICAL_INSPECTION),
                ("S2", Tier.REMOTE_INSPECTION),
                ("S2", Tier.PHYSICAL_INSPECTION),
            ],
            start=3,
        ):
            assert store.record(decision(name, tier)).seq == seq
    argv = ["audit", "outcome", shipment, "--officer", "o-2", *args, "--db", db_url]
    assert run(app, argv) == code
    captured = capsys.readouterr()
    assert said in " ".join((captured.out + captured.err).split())
    assert run(app, ["audit", "verify", "--db", db_url]) == 0
    with AuditStore.open(db_url, create=False) as store:
        first, later = store.decisions_of(["S1"])
        assert first.outcome is not None and (first.outcome.found or "clean") == then
        assert later.outcome is None and store.get("S1") == later
        assert [r.seq for r in store.list(pending_outcome=True)] == [5, 3]


RELEASED = [
    # (name, arguments, exit code, said, then: decision 1's outcome, decision 3's)
    ("finding-refused", ["--decision-seq", "1", "--found", "unknown", "--amend"], 2,
     "Error: shipment 'S' was decided again since decision 1: its latest decision is 3 (RELEASE); amend "
     "corrects a finding recorded by mistake, and decision 1's outcome is clean (record 2, by o-1 at ",
     ("clean", None)),
    ("not-judged-against-decision-1", ["--decision-seq", "1", "--found", "wet_ptach", "--amend"], 2,
     "its latest decision is 3 (RELEASE); amend corrects a finding recorded by mistake", ("clean", None)),
    ("finding-on-the-latest", ["--decision-seq", "3", "--found", "unknown"], 0,
     "recorded outcome of S for decision 3 (found unknown) as record 4", ("clean", "unknown")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "said", "then"), [c[1:] for c in RELEASED], ids=[c[0] for c in RELEASED]
)
def test_cli_outcome_takes_no_finding_on_a_clean_decision_since_superseded(
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    said: str,
    then: tuple[str, str | None],
) -> None:
    """S held (decision 1), inspected clean (2), released by a batch (3): --decision-seq 1 --amend
    --found recorded the finding on decision 1 (exit 0) while S stood released with no outcome. It
    is refused as decided again, naming decision 3 and its tier, where the finding is recorded."""
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S", Tier.PHYSICAL_INSPECTION))
        store.record_outcome("S", found=None, officer="o-1")
        store.record(audit_builders.decision("S", Tier.RELEASE), idempotency_key="batch:S")  # 3
    assert run(app, ["audit", "outcome", "S", "--officer", "o-2", *args, "--db", db_url]) == code
    captured = capsys.readouterr()
    assert said in " ".join((captured.out + captured.err).split())
    with AuditStore.open(db_url, create=False) as store:
        first, latest = store.decisions_of(["S"])
        shown = [None if r.outcome is None else (r.outcome.found or "clean") for r in (first, latest)]
        assert tuple(shown) == then and store.verify().ok


REFUSED = [
    # (name, arguments, said)
    ("notes-esc", ["--officer", "o-1", "--notes", "wiped \x1b[2J"], "--notes holds U+001B: control and"),
    ("notes-rlo", ["--officer", "o-1", "--notes", "hold \u202e3"], "--notes holds U+202E (RIGHT-TO-LEFT"),
    ("officer-rlo", ["--officer", "o-\u202e1"], "--officer holds U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("officer-newline", ["--officer", "o-1\n"], "--officer holds U+000A: control and format"),
    ("officer-zero-width-space", ["--officer", "o\u200b1"], "--officer holds U+200B (ZERO WIDTH SPACE)"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "said"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_cli_outcome_holds_notes_and_officer_to_the_character_rule(
    db_url: str, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    """Notes and the officer's id took any character but half a one: an ESC or a bidi override was
    kept in the trail for good. The officer is a name (the joiners taken), the notes free text (line
    breaks, tabs and the joiners taken)."""
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))
    assert run(app, ["audit", "outcome", "S1", "--clean", *args, "--db", db_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and said in err, err
    with AuditStore.open(db_url, create=False) as store:
        assert store.get("S1").outcome is None  # type: ignore[union-attr]
    notes = "scrap cable\nin hold 3\tport side, \u0645\u06cc\u200c\u0634\u0648\u062f"
    assert (
        run(app, ["audit", "outcome", "S1", "--officer", "o-1", "--clean", "--notes", notes, "--db", db_url])
        == 0
    )
    with AuditStore.open(db_url, create=False) as store:
        assert store.get("S1").outcome.notes == notes  # type: ignore[union-attr]


def test_cli_outcome_takes_an_officer_whose_name_holds_a_joiner(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The officer Hassanzadeh is spelt in Persian with a zero-width non-joiner, which shapes the
    letters and moves none: refused as an id's character, he could record no outcome under his name.
    An officer is a name, as a cargo type is (datasets.shown_text); the store takes it too."""
    from pipeline.cli import app, run

    officer = "\u062d\u0633\u0646\u200c\u0632\u0627\u062f\u0647"
    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))
    notes = "\u0627\u0633\u06a9\u0646 C:\\scans\\2026\\ \u0645\u06cc\u200c\u0634\u0648\u062f"
    argv = ["audit", "outcome", "S1", "--officer", officer, "--clean", "--notes", notes, "--db", db_url]
    assert run(app, argv) == 0, capsys.readouterr().err
    with AuditStore.open(db_url, create=False) as store:
        assert store.get("S1").outcome.officer == officer  # type: ignore[union-attr]
    # printed as typed: the joiners were escaped ("\\u200c"), and so every backslash was doubled
    capsys.readouterr()
    assert run(app, ["audit", "show", "S1", "--db", db_url]) == 0
    shown = capsys.readouterr().out
    assert f"outcome: clean by {officer} at " in shown and shown.rstrip().endswith(f": {notes}"), shown


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"officer": "o-\u202e1"}, "officer holds U+202E"),
        ({"found": "wet_\u202epatch"}, "found holds U+202E"),
        ({"found": "wet_patch\n"}, "found holds U+000A"),
        ({"notes": "wiped \x1b[2J"}, "notes holds U+001B"),
    ],
)
def test_the_store_holds_an_outcome_to_the_character_rule(
    db_url: str, kwargs: dict[str, str], said: str
) -> None:
    """What any writer records (the CLI and the service check before): officer as a name (the joiners
    taken), found as an id, notes as free text."""
    from datasets.errors import InputError

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))
        with pytest.raises(InputError, match=f"^outcome of shipment 'S1': {re.escape(said)}"):
            store.record_outcome("S1", **{"found": None, "officer": "o-1", **kwargs})  # type: ignore[arg-type]
        assert store.get("S1").outcome is None  # type: ignore[union-attr]
        store.record_outcome("S1", found=None, officer="o\u200c1", notes="line\r\nbreaks\tand a\u200djoiner")


def test_an_outcome_recorded_before_the_character_rule_is_read_and_verified(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule holds where an outcome is recorded, never where it is read: one recorded before it
    keeps its text, reads back and verifies."""
    import pipeline.audit.store as store_module
    from pipeline.cli import app, run

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION))
        with monkeypatch.context() as before:  # as a version without the rule recorded it
            before.setattr(store_module, "check_outcome", lambda *args: None)
            store.record_outcome("S1", found="wet_\u202epatch", officer="o-\u202e1", notes="wiped \x1b[2J")
    with AuditStore.open(db_url, create=False, seal_key=cli_key()) as store:
        outcome = store.get("S1").outcome  # type: ignore[union-attr]
        assert (outcome.found, outcome.officer, outcome.notes) == (
            "wet_\u202epatch",
            "o-\u202e1",
            "wiped \x1b[2J",
        )
        assert store.verify().ok
    assert run(app, ["audit", "verify", "--db", db_url]) == 0
    assert run(app, ["audit", "show", "S1", "--db", db_url]) == 0
    assert "wiped \\x1b[2J" in capsys.readouterr().out


@pytest.mark.parametrize("meanwhile", [False, True], ids=["before", "decided-again-meanwhile"])
def test_cli_outcome_names_the_decision_inspected_once_there_are_several(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, meanwhile: bool
) -> None:
    """Without --decision-seq, an outcome judged whichever decision was latest: one recorded after
    the officer looked (a radiation alarm) was cleared by a finding made for the one before.
    ``meanwhile``: decided again after the command's own check, refused by the store's, in the
    same words."""
    from pipeline.cli import app, run

    if meanwhile:
        monkeypatch.setattr(AuditStore, "decisions_of", lambda self, shipments: [])

    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        store.record(decision("S1", Tier.REMOTE_INSPECTION))
        store.record(decision("S1", Tier.PHYSICAL_INSPECTION), idempotency_key="batch:S1:alarm")
    argv = ["audit", "outcome", "S1", "--officer", "o-1", "--clean", "--db", db_url]
    assert run(app, argv) == 2
    assert capsys.readouterr().err == (
        "Error: shipment 'S1' was decided more than once (decisions 1, 2 (the latest 2)): name the "
        "decision the officer inspected with --decision-seq (`clearsight audit show` gives the latest "
        "one's record), so that the outcome judges no decision recorded since\n"
    )
    with AuditStore.open(db_url, seal_key=cli_key()) as store:
        assert [r.seq for r in store.list(pending_outcome=True)] == [2]
    assert run(app, [*argv, "--decision-seq", "1"]) == 2
    assert "was decided again since decision 1" in capsys.readouterr().err
    assert run(app, [*argv, "--decision-seq", "2"]) == 0
    assert capsys.readouterr().out == "recorded outcome of S1 for decision 2 (clean) as record 3\n"
