"""Declarations taken again from a manifest: `clearsight decide --manifest`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from datasets.errors import DatasetFormatError, InputError
from datasets.manifest import write_manifest
from pipeline.redeclare import NEVER_SCORED, read_declarations, redeclare
from pipeline.verdicts import ImageVerdict

POLICY = "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"


def _row(shipment: str, path: str, score: float, **declared: object) -> ImageVerdict:
    return ImageVerdict(
        path=path,
        sha256=f"{abs(hash(path)):064x}"[-64:],
        shipment_id=shipment,
        cargo_type="bulk_ore",
        score=score,
        threshold=0.5,
        hold_threshold=0.8,
        model_id="ore-m1",
        declaration={"shipment_id": shipment, "cargo_type": "bulk_ore", **declared},
    )


def test_a_shipments_rows_merged_as_the_scorer_merges_them(tmp_path: Path) -> None:
    """A flag on any row of the shipment counts, listed image or not: one raised on a row whose
    image was never scored must not be lost."""
    manifest = tmp_path / "m.csv"
    write_manifest(
        manifest,
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T1"},
            {"path": "b.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True},
            {"path": "c.png", "shipment_id": "S9", "cargo_type": "bulk_ore"},
        ],
    )
    listed = read_declarations(manifest)
    assert (listed["S1"].declaration["radiation_alarm"], listed["S1"].declaration["trader_id"]) == (
        True,
        "T1",
    )
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    rows, done = redeclare([_row("S1", a, 0.1), _row("S2", "x.png", 0.1)], listed)
    assert rows[0].declaration == listed["S1"].declaration and rows[1].declaration["cargo_type"] == "bulk_ore"
    assert (done.shipments, done.unscored, done.missing_pictures) == ({"S1"}, {"S9"}, {"S1": 1})
    assert (rows[2].path, rows[2].shipment_id, rows[2].error) == (
        b,
        "S1",
        NEVER_SCORED,
    )  # b never scored


def test_a_manifest_with_a_flag_spelt_otherwise_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "RadiationAlarm": true}\n'
    )
    with pytest.raises(DatasetFormatError, match="RadiationAlarm"):
        read_declarations(manifest)


def test_cli_decide_takes_an_alarm_raised_after_scoring_from_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scorer refuses to resume over a changed declaration, and deciding from the rows used the
    declaration as scored: a radiation alarm raised since left the shipment released unless the
    whole archive was scored again."""
    from pipeline.cli import app, run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "redeclare-test-audit-secret")
    verdicts = tmp_path / "rows.jsonl"
    rows = [_row("S1", "a.png", 0.1), _row("S1", "b.png", 0.2), _row("S2", "c.png", 0.1)]
    verdicts.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY + "random_audit: {rate: 0.0001}\n")
    manifest = tmp_path / "m.csv"
    write_manifest(
        manifest,
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": "b.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True},
            {"path": "d.png", "shipment_id": "S3", "cargo_type": "bulk_ore"},
        ],
    )
    base = ["decide", "--verdicts", str(verdicts), "--policy", str(policy)]
    assert run(app, [*base, "--out", "before.jsonl"]) == 0
    assert run(app, [*base, "--out", "after.jsonl", "--manifest", str(manifest)]) == 0
    captured = capsys.readouterr()

    def tiers(name: str) -> dict[str, str]:
        return {
            d["shipment_id"]: d["tier"] for d in map(json.loads, (tmp_path / name).read_text().splitlines())
        }

    assert tiers("before.jsonl") == {"S1": "RELEASE", "S2": "RELEASE"}
    assert tiers("after.jsonl") == {"S1": "PHYSICAL_INSPECTION", "S2": "RELEASE"}
    assert "1 shipments decided under their declaration in" in " ".join(captured.out.split())
    said = " ".join(captured.err.split())
    assert (
        "1 shipment(s) of --manifest have no rows in --verdicts (never scored), so they were not decided"
        in said
    )
    decided = json.loads((tmp_path / "after.jsonl").read_text().splitlines()[0])
    assert decided["declaration"]["radiation_alarm"] is True
    assert "override.radiation_alarm" in {r["rule"] for r in decided["reasons"]}


def _decide(
    tmp_path: Path, rows: list[ImageVerdict], manifest_rows: list[dict], *extra: str
) -> tuple[dict, str]:
    from pipeline.cli import app, run

    verdicts = tmp_path / "rows.jsonl"
    verdicts.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    policy = tmp_path / "p.yaml"
    policy.write_text(
        POLICY
        + "  vacuum_pack: {release_threshold: 0.5, hold_threshold: 0.8}\nrandom_audit: {rate: 0.0001}\n"
        + "trusted_traders: {AEOF: {release_odds_factor: 1.5}}\n"  # AEOF: released below 0.6
    )
    write_manifest(tmp_path / "m.csv", manifest_rows)
    out = tmp_path / "d.jsonl"
    argv = [
        "decide",
        "--verdicts",
        str(verdicts),
        "--policy",
        str(policy),
        "--manifest",
        str(tmp_path / "m.csv"),
    ]
    code = run(app, [*argv, "--out", str(out), "--overwrite", *extra])
    return code, {
        d["shipment_id"]: (d["tier"], sorted({r["rule"] for r in d["reasons"]}))
        for d in map(json.loads, out.read_text().splitlines())
    } if out.exists() else {}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "redeclare-test-audit-secret")
    return tmp_path


def test_a_picture_now_declared_another_cargo_fails_closed(env: Path) -> None:
    """Given the shipment's merged declaration, every row carried the first row's cargo type, and a
    picture the manifest now calls vacuum_pack, scored by the ore model, went out released."""
    rows = [_row("S1", str(env / "a.png"), 0.1), _row("S1", str(env / "b.png"), 0.1)]
    code, decided = _decide(
        env,
        rows,
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": "b.png", "shipment_id": "S1", "cargo_type": "vacuum_pack"},
        ],
    )
    assert code == 0 and decided["S1"] == (
        "REMOTE_INSPECTION",
        ["fail_closed.mixed_cargo_types", "score.clear"],
    )


def test_a_picture_re_declared_as_another_cargo_is_not_answered_by_the_release_recorded(env: Path) -> None:
    """Each picture's own declared cargo type was not in the decision's idempotency key: the store
    answered the re-declared shipment (mixed cargo, never released) with the release it held."""
    rows = [_row("S1", str(env / "a.png"), 0.1), _row("S1", str(env / "b.png"), 0.1)]
    db = f"sqlite:///{env / 'audit.db'}"
    ore = [{"path": p, "shipment_id": "S1", "cargo_type": "bulk_ore"} for p in ("a.png", "b.png")]
    assert _decide(env, rows, ore, "--audit-db", db) == (0, {"S1": ("RELEASE", ["score.clear"])})
    mixed = [ore[0], {**ore[1], "cargo_type": "vacuum_pack"}]
    code, decided = _decide(env, rows, mixed, "--audit-db", db)
    assert code == 0 and decided["S1"] == (
        "REMOTE_INSPECTION",
        ["fail_closed.mixed_cargo_types", "score.clear"],
    )
    # the manifest as it was, run again, does not lower the hold recorded since (refused: exit 2)
    code, decided = _decide(env, rows, ore, "--audit-db", db)
    assert code == 2 and decided["S1"][0] == "REMOTE_INSPECTION"


def test_a_picture_added_to_a_shipment_after_scoring_holds_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scan the manifest lists that the rows lack was left out, and the shipment released."""
    code, decided = _decide(
        env,
        [_row("S1", str(env / "a.png"), 0.1), _row(" S2", str(env / "c.png"), 0.1)],
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": "new-scan.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": "c.png", "shipment_id": "S2", "cargo_type": "bulk_ore", "radiation_alarm": True},
        ],
    )
    assert code == 0
    assert decided["S1"] == ("REMOTE_INSPECTION", ["fail_closed.image_error", "score.clear"])
    # the rows' " S2" is the manifest's S2 (the scorer strips ids): its alarm reaches the decision
    assert decided["S2"] == ("PHYSICAL_INSPECTION", ["override.radiation_alarm", "score.clear"])
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "1 picture(s) that --manifest lists have no row with their path in --verdicts (never scored, or"
        in said
    )


def test_a_flag_cleared_by_the_manifest_is_said_and_no_hold_is_lowered(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest whose alarm column says false clears the alarm: said; and with an audit store, a
    hold recorded for the alarm stands until an officer lifts it."""
    rows = [_row("S1", str(env / "a.png"), 0.1, radiation_alarm=True)]
    db = f"sqlite:///{env / 'audit.db'}"
    listed = [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True}]
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0 and decided["S1"][0] == "PHYSICAL_INSPECTION"
    code, decided = _decide(env, rows, [{**listed[0], "radiation_alarm": False}], "--audit-db", db)
    captured = capsys.readouterr()
    said = " ".join(captured.err.split())
    # counted as decided under the manifest, and said not to be recorded (it once read as done)
    out = " ".join(captured.out.split())
    assert "1 shipments decided under their declaration in" in out and "(1 not recorded: see below)" in out
    assert (
        "1 shipment(s) had a flag their rows raised cleared by --manifest ('S1': radiation_alarm): their "
        "column in --manifest says false" in said
    )
    assert (
        code == 2 and "is held (PHYSICAL_INSPECTION, audit record 1) and this decision would lower it" in said
    )


@pytest.mark.parametrize(
    ("name", "listed", "tier", "cleared"),
    [
        # a manifest from another system, say: no alarm column at all
        ("m.csv", [{}, {}], "PHYSICAL_INSPECTION", False),
        ("m.jsonl", [{}, {}], "PHYSICAL_INSPECTION", False),
        # a flag column is the manifest's word: false clears it (and says so), true raises it
        ("m.csv", [{"radiation_alarm": False}, {}], "RELEASE", True),
        ("m.jsonl", [{"radiation_alarm": False}, {}], "RELEASE", True),
        ("m.csv", [{"radiation_alarm": True}, {}], "PHYSICAL_INSPECTION", False),
        # another flag's column says nothing of the alarm
        ("m.csv", [{"document_mismatch": False}, {}], "PHYSICAL_INSPECTION", False),
    ],
    ids=["csv-no-column", "jsonl-no-key", "csv-false", "jsonl-false-on-one-line", "csv-true", "other-column"],
)
def test_only_a_flag_the_manifest_has_a_column_for_is_taken_from_it(
    env: Path, name: str, listed: list[dict], tier: str, cleared: bool
) -> None:
    """A manifest with no radiation_alarm column read as the alarm cleared: the rows' alarm was
    dropped and a RELEASE recorded, with a warning only."""
    rows = [_row("S1", str(env / "a.png"), 0.1), _row("S1", str(env / "b.png"), 0.1, radiation_alarm=True)]
    write_manifest(
        env / name,
        [
            {"path": p, "shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T-1", **more}
            for p, more in zip(("a.png", "b.png"), listed, strict=True)
        ],
    )
    out, done = redeclare(rows, read_declarations(env / name))
    assert {row.declaration["radiation_alarm"] for row in out} == {tier != "RELEASE"}
    assert {row.declaration["trader_id"] for row in out} == {"T-1"}  # the manifest's word on the rest
    assert done.cleared == ({"S1": ["radiation_alarm"]} if cleared else {})
    from pipeline.decide import decide_rows
    from pipeline.policy import parse_policy

    policy = parse_policy({"policy_version": "p", "cargo_types": {"bulk_ore": {}}})
    assert next(decide_rows(policy, out, audit_key=b"k")).tier.value == tier


def test_a_manifest_naming_different_traders_in_a_shipment_gives_it_no_aeo_tier(env: Path) -> None:
    """Merged first, the manifest's first row lent its trader and tier to every row of the shipment:
    another trader's picture at 0.55 went out released."""
    rows = [_row("S1", str(env / "a.png"), 0.1), _row("S1", str(env / "b.png"), 0.55)]
    code, decided = _decide(
        env,
        rows,
        [
            {
                "path": "a.png",
                "shipment_id": "S1",
                "cargo_type": "bulk_ore",
                "trader_id": "T-F",
                "aeo_tier": "AEOF",
            },
            {"path": "b.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T-X"},
        ],
    )
    assert code == 0 and decided["S1"] == (
        "REMOTE_INSPECTION",
        ["score.clear", "score.review", "trusted_trader.conflict"],
    )


def test_a_flag_of_the_rows_that_is_no_boolean_is_refused_where_the_manifest_has_no_column(
    tmp_path: Path,
) -> None:
    write_manifest(tmp_path / "m.csv", [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    row = _row("S1", str(tmp_path / "a.png"), 0.1, radiation_alarm="maybe")
    with pytest.raises(
        InputError, match=r"radiation_alarm = 'maybe' is not a boolean .*no radiation_alarm column"
    ):
        redeclare([row], read_declarations(tmp_path / "m.csv"))
    write_manifest(
        tmp_path / "m.csv",
        [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True}],
    )
    out, _ = redeclare([row], read_declarations(tmp_path / "m.csv"))  # the manifest's column replaces it
    assert out[0].declaration["radiation_alarm"] is True


def test_a_bad_declaration_in_the_manifest_names_it_and_its_line(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _decide(
        env,
        [_row("S1", str(env / "a.png"), 0.1)],
        [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T" * 200}],
    )
    assert code == 2
    assert capsys.readouterr().err.startswith(
        f"Error: --manifest {str(env / 'm.csv')!r}, line 2: shipment 'S1'"
    )


def test_a_row_that_names_its_cargo_in_its_declaration_only_keeps_it(env: Path) -> None:
    """Rows without cargo_type (older, or another tool's) said it in their declaration alone, which
    the manifest replaced: the ore-scored pictures, now declared vacuum_pack, went out released."""
    rows = [_row("S1", str(env / "a.png"), 0.1).model_copy(update={"cargo_type": None})]
    code, decided = _decide(env, rows, [{"path": "a.png", "shipment_id": "S1", "cargo_type": "vacuum_pack"}])
    assert code == 0 and decided["S1"][0] != "RELEASE"
    assert "fail_closed.mixed_cargo_types" in decided["S1"][1]


def test_rows_whose_own_declaration_does_not_validate_are_corrected_by_the_manifest(env: Path) -> None:
    row = _row("S1", str(env / "a.png"), 0.1).model_copy(
        update={"declaration": {"shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": "maybe"}}
    )
    listed = [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True}]
    code, decided = _decide(env, [row], listed)
    assert code == 0 and decided["S1"] == ("PHYSICAL_INSPECTION", ["override.radiation_alarm", "score.clear"])


def test_a_flag_on_a_listed_shipment_without_rows_is_an_error(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its alarm reached no decision and the command said only "not decided", exit 0."""
    code, decided = _decide(
        env,
        [_row("S1", str(env / "a.png"), 0.1)],
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": "z.png", "shipment_id": "S9", "cargo_type": "bulk_ore", "radiation_alarm": True},
        ],
    )
    assert code == 2 and decided["S1"][0] == "RELEASE"  # the decisions file is written all the same
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "1 shipment(s) of --manifest raise a flag but have no rows in --verdicts, so no decision here" in said
    )
    assert "'S9' (radiation_alarm) first" in said


def test_a_copy_of_the_manifest_under_another_name_decides_the_same(tmp_path: Path) -> None:
    """The never-scored row named the manifest's file, which goes into the decision's idempotency
    key: a copy of the manifest under a new name recorded a new hold over one an officer had lifted."""
    from pipeline.decide import decide_rows
    from pipeline.policy import parse_policy
    from pipeline.shipment_rows import inputs_key

    keys = []
    for name in ("monday.csv", "copy-of-monday.csv"):
        write_manifest(
            tmp_path / name,
            [
                {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
                {"path": "new-scan.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            ],
        )
        rows, _ = redeclare([_row("S1", str(tmp_path / "a.png"), 0.1)], read_declarations(tmp_path / name))
        policy = parse_policy({"policy_version": "p", "cargo_types": {"bulk_ore": {}}})
        keys.append(inputs_key(next(decide_rows(policy, rows, audit_key=b"k"))))
    assert keys[0] == keys[1]


def test_the_count_not_recorded_is_of_the_manifests_shipments(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shipment the manifest does not list, refused by the store, was counted among the manifest's."""
    db = f"sqlite:///{env / 'audit.db'}"
    listed = [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}]
    s1 = _row("S1", str(env / "a.png"), 0.1)
    _decide(env, [s1, _row("S2", str(env / "c.png"), 0.1, radiation_alarm=True)], listed, "--audit-db", db)
    capsys.readouterr()
    code, _ = _decide(env, [s1, _row("S2", str(env / "c.png"), 0.1)], listed, "--audit-db", db)
    captured = capsys.readouterr()
    assert code == 2 and "shipment 'S2' is held" in captured.err  # S2's hold stands, said below
    out = " ".join(captured.out.split())
    assert "1 shipments decided under their declaration in" in out and "not recorded: see below" not in out


@pytest.mark.skipif(sys.platform != "linux", reason="file names of any bytes: Linux")
def test_a_picture_whose_name_the_rows_escape_is_found_by_it(env: Path) -> None:
    """The scorer writes a name that is not UTF-8, or holds a ``\\xNN`` itself, escaped; the rows
    were compared with the manifest's paths as they are, so such a picture was taken for never
    scored (an error row: its shipment held) although its row was there."""
    from pipeline.score.batch import earlier_printable_path, printable_path

    share = env / "share"
    share.mkdir()
    names = {  # the file's name -> the link the manifest lists it by (None: listed by its own name)
        b"caf\xe9.png": "l1.png",  # not UTF-8
        b"caf\\xe9.png": None,  # UTF-8, typed with a backslash: escaped as caf\x5cxe9.png
        b"scan\x07\xe9.png": "l2.png",  # a control character beside a byte that is not UTF-8
        b"a\\b\xe9.png": "l3.png",  # its row written as a version before backslashes were escaped
    }
    listed, rows = [], []
    for n, (name, link) in enumerate(names.items()):
        file = os.path.join(os.fsencode(share), name)
        Path(os.fsdecode(file)).write_bytes(b"")
        if link is not None:
            (env / link).symlink_to(os.fsdecode(file))
        listed.append(
            {
                "path": link or f"share/{os.fsdecode(name)}",
                "shipment_id": "S1",
                "cargo_type": "bulk_ore",
                "trader_id": f"T-{n}",
            }
        )
        text = (earlier_printable_path if name == b"a\\b\xe9.png" else printable_path)(os.fsdecode(file))
        rows.append(_row("S1", text, 0.1).model_copy(update={"declaration": {"trader_id": f"T-{n}"}}))
    write_manifest(env / "m.csv", listed)
    out, done = redeclare(rows, read_declarations(env / "m.csv"))
    assert done.missing_pictures == {} and len(out) == len(rows)
    # each row found its own picture: its own line's trader
    assert [row.declaration["trader_id"] for row in out] == [f"T-{n}" for n in range(len(names))]
    code, decided = _decide(env, rows, listed)
    assert code == 0 and decided["S1"][0] != "REMOTE_INSPECTION"
    # one such listed without a row is held, named as a row names it (its text stopped the run)
    (env / "l4.png").symlink_to(os.fsdecode(os.path.join(os.fsencode(share), b"new\xe9.png")))
    code, decided = _decide(env, rows, [*listed, {**listed[0], "path": "l4.png"}])
    assert code == 0 and decided["S1"][0] == "REMOTE_INSPECTION"
    assert "fail_closed.image_error" in decided["S1"][1]
