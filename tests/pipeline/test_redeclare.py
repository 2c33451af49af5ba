"""Declarations taken again from a manifest: `clearsight decide --manifest`."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from datasets.errors import DatasetFormatError, InputError
from datasets.manifest import write_manifest
from pipeline.redeclare import NEVER_SCORED, read_declarations, redeclare
from pipeline.verdicts import ImageVerdict

sys.path.insert(0, str(Path(__file__).parent))

from decide_builders import run_finished, scored_line  # noqa: E402

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
    verdicts.write_text("".join(map(scored_line, rows)))
    run_finished(verdicts)  # a finished run's
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


def test_an_alarm_is_recorded_beside_a_shipment_whose_goods_description_has_two_lines(env: Path) -> None:
    """S2's goods description is a quoted CSV cell of two lines. Refused as an unshown character, it
    stopped the whole batch before anything was recorded: the radiation alarm raised on S1 since
    scoring was never recorded, and S1 kept its RELEASE."""
    from pipeline.audit import AuditStore
    from pipeline.cli import app, run

    goods = "copper ore\nbulk, 20 t"
    rows = [_row("S1", "a.png", 0.1), _row("S2", "c.png", 0.1, x_goods=goods)]
    (env / "rows.jsonl").write_text("".join(map(scored_line, rows)))
    run_finished(env / "rows.jsonl")
    (env / "p.yaml").write_text(POLICY + "random_audit: {rate: 0.0001}\n")
    base = ["decide", "--verdicts", "rows.jsonl", "--policy", "p.yaml", "--audit-db", "sqlite:///a.db"]
    assert run(app, [*base, "--out", "first.jsonl"]) == 0
    assert _recorded("sqlite:///a.db", "S1", "S2") == {"S1": "RELEASE", "S2": "RELEASE"}
    write_manifest(
        env / "m.csv",
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "radiation_alarm": True},
            {"path": "c.png", "shipment_id": "S2", "cargo_type": "bulk_ore", "x_goods": goods},
        ],
    )
    assert run(app, [*base, "--manifest", "m.csv", "--out", "d.jsonl", "--overwrite"]) == 0
    assert _recorded("sqlite:///a.db", "S1", "S2") == {"S1": "PHYSICAL_INSPECTION", "S2": "RELEASE"}
    with AuditStore.open("sqlite:///a.db", create=False) as store:
        assert store.get("S1").decision.declaration.radiation_alarm is True
        assert store.get("S2").decision.declaration.extra == {"x_goods": goods}


FIXED = (
    POLICY
    + "  vacuum_pack: {release_threshold: 0.5, hold_threshold: 0.8}\nrandom_audit: {rate: 0.0001}\n"
    + "trusted_traders: {AEOF: {release_odds_factor: 1.5}}\n"  # AEOF: released below 0.6
)
MODEL = (
    "policy_version: m\ncargo_types:\n  bulk_ore: {release_threshold: model, hold_threshold: model}\n"
    "  vacuum_pack: {release_threshold: model, hold_threshold: 0.9}\nrandom_audit: {rate: 0.0001}\n"
    "trusted_traders: {AEOF: {release_odds_factor: 1.5}}\n"
)
"""The bundled policy's kind: each row judged against its own model's thresholds."""


def _decide(
    tmp_path: Path, rows: list[ImageVerdict], manifest_rows: list[dict], *extra: str, policy_text: str = FIXED
) -> tuple[dict, str]:
    from pipeline.cli import app, run

    verdicts = tmp_path / "rows.jsonl"
    verdicts.write_text("".join(map(scored_line, rows)))
    run_finished(verdicts)  # a finished run's
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text)
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


def _recorded(db: str, *shipments: str) -> dict[str, str | None]:
    """The tier the audit store holds for each shipment (None: no record)."""
    from pipeline.audit import AuditStore

    with AuditStore.open(db, create=False) as store:
        return {s: (r.decision.tier.value if (r := store.get(s)) is not None else None) for s in shipments}


def _model_row(shipment: str, path: str, score: float | None, model: str, thr: float | None, **more: object):
    return _row(shipment, path, 0.0).model_copy(
        update={
            "score": score,
            "model_id": model,
            "threshold": thr,
            "hold_threshold": None if thr is None else 0.9,
            **more,
        }
    )


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
        "1 shipment(s) had a flag cleared by --manifest that --verdicts raised on a row scored or decided "
        "under them, or on a row of a shipment a row moved to them was scored under (a flag on one row is "
        "the shipment's): 'S1' (radiation_alarm) first; their column in --manifest says false" in said
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


def test_a_manifest_is_held_to_the_character_check_that_the_rows_it_corrects_are_not(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rows, an earlier score run's, are decided as written; the manifest is new input."""
    row = _row("S1", str(env / "a.png"), 0.1, trader_id="T\u00ad42")
    code, decided = _decide(env, [row], [{"path": "z.png", "shipment_id": "S9", "cargo_type": "bulk_ore"}])
    assert code == 0 and decided["S1"][0] == "RELEASE"
    listed = [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T\u00ad42"}]
    code, _ = _decide(env, [row], listed)
    assert code == 2
    said = " ".join(capsys.readouterr().err.split())
    # refused as the manifest is read (datasets.shown_text), as by score
    assert f"{env / 'm.csv'}:2: column 'trader_id' holds U+00AD (SOFT HYPHEN)" in said


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
        scored = "S0" if n == 0 else "S1"  # the first moved to S1 since: found by its name too
        # the empty file's sha256, as scored: the file is read again and must be the same
        same = {"declaration": {"trader_id": f"T-{n}"}, "sha256": hashlib.sha256(b"").hexdigest()}
        rows.append(_row(scored, text, 0.1).model_copy(update=same))
    write_manifest(env / "m.csv", listed)
    out, done = redeclare(rows, read_declarations(env / "m.csv"))
    assert done.missing_pictures == {} and len(out) == len(rows)
    assert done.moved == {"S1": [(rows[0].path, "S0")]} and {row.shipment_id for row in out} == {"S1"}
    # each row found its own picture: its own line's trader
    assert [row.declaration["trader_id"] for row in out] == [f"T-{n}" for n in range(len(names))]
    code, decided = _decide(env, rows, listed)
    assert code == 0 and decided["S1"][0] != "REMOTE_INSPECTION"
    # one such listed without a row is held, named as a row names it (its text stopped the run)
    (env / "l4.png").symlink_to(os.fsdecode(os.path.join(os.fsencode(share), b"new\xe9.png")))
    code, decided = _decide(env, rows, [*listed, {**listed[0], "path": "l4.png"}])
    assert code == 0 and decided["S1"][0] == "REMOTE_INSPECTION"
    assert "fail_closed.image_error" in decided["S1"][1]


def test_a_picture_the_correction_moved_is_decided_under_the_shipment_listing_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows stayed under the shipment they were scored under: the shipment a picture was moved from
    was decided on its score (held for another's anomaly), and the one it was moved to held for a
    picture "never scored"."""
    p = str(env / "p.png")
    rows = [
        _row("S1", str(env / "a.png"), 0.1),
        _row("S1", p, 0.95),  # anomalous, and S2's now
        _row("S2", str(env / "c.png"), 0.1),
        _row("S9", str(env / "q.png"), 0.1),  # a shipment the manifest does not list
        _row("S1", str(env / "e.png"), 0.1).model_copy(update={"score": None, "error": "unreadable"}),
        _row("S1", str(env / "v.png"), 0.1),  # scored as ore
    ]
    ore = {"cargo_type": "bulk_ore"}
    listed = [
        {"path": "a.png", "shipment_id": "S1", **ore},
        {"path": "p.png", "shipment_id": "S2", **ore},
        {"path": "c.png", "shipment_id": "S2", **ore},
        {"path": "q.png", "shipment_id": "S2", **ore},
        {"path": "e.png", "shipment_id": "S3", **ore},
        {"path": "v.png", "shipment_id": "S4", "cargo_type": "vacuum_pack"},
    ]
    code, decided = _decide(env, rows, listed)
    assert code == 0
    assert decided["S1"] == ("RELEASE", ["score.clear"])  # p no longer counts, nor e's error
    assert decided["S2"][0] == "PHYSICAL_INSPECTION" and "fail_closed.image_error" not in decided["S2"][1]
    assert decided["S3"][0] == "REMOTE_INSPECTION" and "fail_closed.image_error" in decided["S3"][1]
    assert decided["S4"][0] != "RELEASE" and "fail_closed.mixed_cargo_types" in decided["S4"][1]
    assert "S9" not in decided  # its only row went to S2
    said = " ".join(capsys.readouterr().err.split())
    assert "never scored" not in said
    assert (
        "4 row(s) of pictures --manifest lists under another shipment than the one they were scored "
        "under were decided under the shipment listing them, with their score, and no longer count for "
        f"the one they were scored under: {p!r} from 'S1' to 'S2' first" in said
    )


def test_a_row_scored_from_a_folder_is_not_placed_under_the_shipment_listing_its_picture(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing ties the file a folder run scored to the one a manifest lists now (a scanner reuses
    names): placed by its path, a picture overwritten since was released on the old one's score.
    Refused, saying to score the manifest."""
    a = str(env / "a.png")
    rows = [_row("", a, 0.1).model_copy(update={"shipment_id": None, "declaration": {}})]
    code, _ = _decide(env, rows, [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    said = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"image {a!r} was scored without a shipment (a folder run); --manifest does not place" in said
    assert "score the manifest itself (clearsight score MANIFEST --model M --out NEW_ROWS)" in said


def test_a_renamed_shipment_keeps_the_alarm_its_rows_raised(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A correction that renamed S1 to S1b (every picture of S1 listed under S1b, S1 no longer) in
    a manifest with no radiation_alarm column: the alarm the rows raised left with S1, and S1b was
    released and recorded so. A flag goes with its row and stands where it is decided; rows that
    stay keep theirs, and the shipment a flagged row left keeps the flag too. A flag of the shipment
    goes with each of its rows that moves (S3's to S4)."""
    from pipeline.audit import AuditStore

    alarm = {"radiation_alarm": True}
    rows = [
        _row("S1", str(env / "a.png"), 0.1, **alarm),
        _row("S1", str(env / "b.png"), 0.1, **alarm),
        _row("S3", str(env / "c.png"), 0.1, **alarm),  # stays in S3
        _row("S3", str(env / "d.png"), 0.1),  # moves to S4, which takes S3's alarm (c's)
        _row("S5", str(env / "e.png"), 0.1, **alarm),  # moves to S6, with its alarm
        _row("S5", str(env / "f.png"), 0.1),
    ]
    ore = {"cargo_type": "bulk_ore"}
    listed = [
        {"path": "a.png", "shipment_id": "S1b", **ore},
        {"path": "b.png", "shipment_id": "S1b", **ore},
        {"path": "c.png", "shipment_id": "S3", **ore},
        {"path": "d.png", "shipment_id": "S4", **ore},
        {"path": "e.png", "shipment_id": "S6", **ore},
        {"path": "f.png", "shipment_id": "S5", **ore},
    ]
    db = f"sqlite:///{env / 'audit.db'}"
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0
    assert {s: tier for s, (tier, _) in decided.items()} == {
        "S1b": "PHYSICAL_INSPECTION",
        "S3": "PHYSICAL_INSPECTION",
        "S4": "PHYSICAL_INSPECTION",
        "S5": "PHYSICAL_INSPECTION",
        "S6": "PHYSICAL_INSPECTION",
    }
    assert "override.radiation_alarm" in decided["S1b"][1]
    with AuditStore.open(db, create=False) as store:
        recorded = store.get("S1b")
        assert recorded is not None and recorded.decision.tier.value == "PHYSICAL_INSPECTION"
        assert recorded.decision.declaration.radiation_alarm is True
        assert store.get("S1") is None
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "1 shipment(s) keep a flag raised on rows that moved away from them (--manifest lists their "
        "pictures under another shipment, which takes the flag too unless its column for the flag says "
        "false): 'S5' (radiation_alarm) first" in said
    )


def test_a_flag_of_a_moved_row_is_cleared_only_by_the_column_of_the_shipment_listing_it(
    env: Path,
) -> None:
    """Where the manifest has the flag's column, it is its word, for the shipment the row moved to
    as for any (said as cleared); a shipment the manifest lists without rows left keeps the flag its
    rows raised unless its own column says otherwise, and is decided (its picture never scored)."""
    manifest = env / "m.jsonl"
    manifest.write_text(
        '{"path": "e.png", "shipment_id": "S6", "cargo_type": "bulk_ore", "radiation_alarm": false}\n'
        '{"path": "g.png", "shipment_id": "S8", "cargo_type": "bulk_ore"}\n'
        '{"path": "n.png", "shipment_id": "S7", "cargo_type": "bulk_ore"}\n'
        '{"path": "k.png", "shipment_id": "S8", "cargo_type": "bulk_ore"}\n'
    )
    rows = [
        _row("S5", str(env / "e.png"), 0.1, radiation_alarm=True),
        _row("S7", str(env / "g.png"), 0.1, radiation_alarm=True),
        _row("S9", str(env / "h.png"), 0.1),  # S9, not listed, keeps k's alarm through h...
        _row("S9", str(env / "k.png"), 0.1, radiation_alarm=True),  # ...though k moved to S8
    ]
    out, done = redeclare(rows, read_declarations(manifest))
    assert [(r.shipment_id, r.declaration.get("radiation_alarm")) for r in out[:4]] == [
        ("S6", False),
        ("S8", True),
        ("S9", True),
        ("S8", True),
    ]
    assert done.cleared == {"S6": ["radiation_alarm"]}
    assert done.kept_flags == {"S9": ["radiation_alarm"], "S7": ["radiation_alarm"]}
    # S7, all its rows gone: decided, on n.png never scored, with its alarm
    assert [(r.shipment_id, r.error, r.declaration.get("radiation_alarm")) for r in out[4:]] == [
        ("S7", NEVER_SCORED, True)
    ]
    assert done.flagged_unscored == {} and done.unscored == set()


def test_a_picture_listed_under_two_shipments_is_refused(tmp_path: Path) -> None:
    """Which shipment would its row go to: the manifest reader refuses a path listed twice."""
    write_manifest(
        tmp_path / "m.csv",
        [
            {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": "./a.png", "shipment_id": "S2", "cargo_type": "bulk_ore"},
        ],
    )
    with pytest.raises(DatasetFormatError, match="duplicate path"):
        read_declarations(tmp_path / "m.csv")


@pytest.mark.parametrize(
    ("first", "second", "worst", "tier", "rule"),
    [
        ("S3", "S5", {"score": 0.95}, "PHYSICAL_INSPECTION", "score.hold"),
        (
            "S3",
            "S5",
            {"score": None, "error": "unreadable image"},
            "REMOTE_INSPECTION",
            "fail_closed.image_error",
        ),
        ("S3", "S3", {"score": 0.95}, "PHYSICAL_INSPECTION", "score.hold"),  # re-scored, appended
    ],
    ids=["anomalous-elsewhere", "error-elsewhere", "both-under-one-shipment"],
)
def test_a_picture_scored_twice_elsewhere_moves_every_row(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    first: str,
    second: str,
    worst: dict,
    tier: str,
    rule: str,
) -> None:
    """r.png scored twice, neither time under S4 that lists it now: the first row in file order
    (0.1) moved and S4 was released and recorded so, while the picture's anomalous or unreadable
    row stayed under a shipment the picture is no longer in. Both rows move: the strictest decides."""

    r = str(env / "r.png")
    rows = [
        _row("S4", str(env / "s.png"), 0.1),
        _row(first, r, 0.1),
        _row(second, r, 0.1).model_copy(update=worst),
    ]
    listed = [{"path": p, "shipment_id": "S4", "cargo_type": "bulk_ore"} for p in ("s.png", "r.png")]
    write_manifest(env / "m.csv", listed)
    out, done = redeclare(rows, read_declarations(env / "m.csv"))
    assert [(row.shipment_id, row.score, row.error) for row in out if row.path == r] == [
        ("S4", 0.1, None),
        ("S4", worst["score"], worst.get("error")),
    ]
    assert done.moved == {"S4": [(r, first), (r, second)]} and done.several == {"S4": [r]}
    db = f"sqlite:///{env / 'audit.db'}"
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0 and decided["S4"][0] == tier and rule in decided["S4"][1]
    assert _recorded(db, "S3", "S4", "S5") == {"S3": None, "S4": tier, "S5": None}
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "1 picture(s) have more than one row under the shipment --manifest lists them under (scored "
        "twice, or under several shipments): each row is judged and the strictest tier decides, so an "
        f"older row may hold a shipment that a newer one alone would release: {r!r} under 'S4' first" in said
    )


def test_a_shipments_flag_goes_with_each_of_its_rows_that_moves(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """S1 (a.png alarmed, b, c) renamed S1b by a correction that lists b and c only: the rows that
    moved carried their own flags alone, and S1b was released and recorded with no alarm (the
    alarm is the container's, raised on whichever row). A split takes it to each part."""
    from pipeline.audit import AuditStore

    alarm = {"radiation_alarm": True}
    rows = [
        _row("S1", str(env / "a.png"), 0.1, **alarm),  # not in the corrected manifest
        _row("S1", str(env / "b.png"), 0.1),
        _row("S1", str(env / "c.png"), 0.1),
        _row("S7", str(env / "g.png"), 0.1, **alarm),  # S7 split: g stays...
        _row("S7", str(env / "h.png"), 0.1),  # ...h goes to S8
    ]
    ore = {"cargo_type": "bulk_ore"}
    listed = [
        {"path": "b.png", "shipment_id": "S1b", **ore},
        {"path": "c.png", "shipment_id": "S1b", **ore},
        {"path": "g.png", "shipment_id": "S7", **ore},
        {"path": "h.png", "shipment_id": "S8", **ore},
    ]
    db = f"sqlite:///{env / 'audit.db'}"
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0
    assert {s: tier for s, (tier, _) in decided.items()} == dict.fromkeys(
        ("S1", "S1b", "S7", "S8"), "PHYSICAL_INSPECTION"
    )
    with AuditStore.open(db, create=False) as store:
        for shipment in ("S1b", "S8"):
            recorded = store.get(shipment)
            assert recorded is not None and recorded.decision.tier.value == "PHYSICAL_INSPECTION"
            assert recorded.decision.declaration.radiation_alarm is True
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "2 shipment(s) take a flag raised on a row of the shipment their moved rows were scored under "
        "(a flag on one row is the shipment's): 'S1b' (radiation_alarm) first" in said
    )
    # the column of the shipment a row moves to is the manifest's word there: false clears it, said
    (env / "m.jsonl").write_text(
        "".join(
            json.dumps({**line, **({"radiation_alarm": False} if line["shipment_id"] == "S8" else {})}) + "\n"
            for line in listed
        )
    )
    out, done = redeclare(rows, read_declarations(env / "m.jsonl"))
    assert {r.shipment_id: r.declaration.get("radiation_alarm") for r in out} == {
        "S1": True,
        "S1b": True,
        "S7": True,
        "S8": False,
    }
    assert done.cleared == {"S8": ["radiation_alarm"]} and done.brought_flags == {"S1b": ["radiation_alarm"]}


@pytest.mark.parametrize(
    ("alarm", "tier"), [({}, "REMOTE_INSPECTION"), ({"radiation_alarm": True}, "PHYSICAL_INSPECTION")]
)
def test_a_listed_shipment_whose_rows_all_moved_away_is_decided(
    env: Path, capsys: pytest.CaptureFixture[str], alarm: dict, tier: str
) -> None:
    """S1 scored on b.png and released; the correction lists b.png under S2 and a.png (never
    scored) under S1. S1 was taken for "never scored" and not decided: its release stood in the
    audit store, and an alarm the manifest raised on it reached no decision (exit 2, with advice
    that could not be followed)."""
    from pipeline.audit import AuditStore
    from pipeline.cli import app, run

    rows = [_row("S1", str(env / "b.png"), 0.1), _row("S2", str(env / "c.png"), 0.1)]
    (env / "rows.jsonl").write_text("".join(map(scored_line, rows)))
    run_finished(env / "rows.jsonl")  # a finished run's
    # the policy _decide decides under: one policy_version is one rule set in a trail
    (env / "p.yaml").write_text(FIXED)
    db = f"sqlite:///{env / 'audit.db'}"
    base = ["decide", "--verdicts", str(env / "rows.jsonl"), "--policy", str(env / "p.yaml")]
    assert run(app, [*base, "--out", str(env / "before.jsonl"), "--audit-db", db]) == 0
    ore = {"cargo_type": "bulk_ore"}
    listed = [
        {"path": "a.png", "shipment_id": "S1", **ore, **alarm},
        {"path": "b.png", "shipment_id": "S2", **ore},
        {"path": "c.png", "shipment_id": "S2", **ore},
    ]
    capsys.readouterr()
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0 and decided["S1"][0] == tier and "fail_closed.image_error" in decided["S1"][1]
    with AuditStore.open(db, create=False) as store:
        recorded = store.get("S1")
        assert recorded is not None and recorded.decision.tier.value == tier
        assert recorded.decision.declaration.radiation_alarm is bool(alarm)
    said = " ".join(capsys.readouterr().err.split())
    assert "not decided" not in said
    assert (
        "1 picture(s) that --manifest lists have no row with their path in --verdicts (never scored, or "
        "scored under another path), so 1 shipment(s) holding them are not released: 'S1' first" in said
    )
    out, done = redeclare(rows, read_declarations(env / "m.csv"))
    assert done.shipments == {"S1", "S2"} and done.unscored == set() and done.flagged_unscored == {}
    assert [(r.shipment_id, r.error) for r in out if r.path == str(env / "a.png")] == [("S1", NEVER_SCORED)]


def test_a_row_whose_folder_holds_a_nul_matches_no_picture(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resolving every row's folder stopped the run on one holding a NUL ("unexpected ValueError:
    embedded null byte"), though its shipment is not listed and was decided on its rows before.

    The row's shipment is held now: decide compares every scored row's picture, --manifest or not
    (pipeline.scored_content), and a path no file can have is none that vouches for the row, as
    without a manifest. (That a held row scored 0.95 is decided at the fail-closed tier, not at
    physical inspection, is the policy's rule for error rows, asked apart.)"""
    odd = str(env) + "/odd\x00dir/a.png"  # a.png's name, in a folder no file can be in
    rows = [_row("S1", str(env / "a.png"), 0.1), _row("S9", odd, 0.95), _row("S1", odd, 0.1)]
    listed = [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}]
    write_manifest(env / "m.csv", listed)
    out, done = redeclare(rows, read_declarations(env / "m.csv"))
    assert [r.shipment_id for r in out] == ["S1", "S9", "S1"] and done.moved == {}
    code, decided = _decide(env, rows[:2], listed)
    assert code == 0 and decided["S1"] == ("RELEASE", ["score.clear"])
    assert decided["S9"][0] != "RELEASE" and decided["S9"][1] == ["fail_closed.image_error"]
    assert "unexpected" not in capsys.readouterr().err


def test_every_row_of_a_picture_goes_to_the_shipment_listing_it_whatever_the_fixed_thresholds(
    env: Path,
) -> None:
    """r.png scored by two models, under S3 (0.45, model a's threshold 0.3) and S5 (0.70, model b's
    0.75), listed under S4: only the "worst" row moved, ranked against its own model's thresholds,
    and under a policy of fixed thresholds (0.5) S4 was released and recorded on 0.45 while 0.70
    stayed under S5."""
    r, s = str(env / "r.png"), str(env / "s.png")
    rows = [
        _model_row("S4", s, 0.1, "bulk_ore-a-00000001", 0.3),
        _model_row("S3", r, 0.45, "bulk_ore-a-00000001", 0.3),
        _model_row("S5", r, 0.70, "bulk_ore-b-00000002", 0.75),
    ]
    listed = [{"path": p, "shipment_id": "S4", "cargo_type": "bulk_ore"} for p in ("s.png", "r.png")]
    db = f"sqlite:///{env / 'audit.db'}"
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0 and decided == {"S4": ("REMOTE_INSPECTION", ["score.clear", "score.review"])}
    assert _recorded(db, "S3", "S4", "S5") == {"S3": None, "S4": "REMOTE_INSPECTION", "S5": None}


@pytest.mark.parametrize(
    ("other", "rule"),
    [
        (
            {"score": 0.2, "cargo_type": "vacuum_pack", "model": "vacuum_pack-b-00000002", "thr": 0.5},
            "fail_closed.mixed_cargo_types",
        ),
        ({"score": 0.6, "model": "bulk_ore-b-00000002", "thr": None}, "fail_closed.missing_threshold"),
    ],
    ids=["scored-as-another-cargo", "no-threshold-in-the-row"],
)
def test_a_row_the_policy_fails_closed_on_goes_with_its_picture(env: Path, other: dict, rule: str) -> None:
    """The ranking knew nothing of the policy: r.png's row at 0.32 against its own 0.3 was taken
    for the worst and moved to S4 (an AEOF trader's: 0.3 raised to 0.39, released, recorded), and
    the row the policy fails closed on (scored as another cargo, or with no threshold) stayed."""
    r, s = str(env / "r.png"), str(env / "s.png")
    other = dict(other)
    cargo = other.pop("cargo_type", "bulk_ore")
    rows = [
        _model_row("S4", s, 0.1, "bulk_ore-a-00000001", 0.3),
        _model_row("S3", r, 0.32, "bulk_ore-a-00000001", 0.3),
        _model_row("S5", r, other.pop("score"), other.pop("model"), other.pop("thr"), cargo_type=cargo),
    ]
    trader = {"cargo_type": "bulk_ore", "trader_id": "T1", "aeo_tier": "AEOF"}
    listed = [{"path": p, "shipment_id": "S4", **trader} for p in ("s.png", "r.png")]
    db = f"sqlite:///{env / 'audit.db'}"
    code, decided = _decide(env, rows, listed, "--audit-db", db, policy_text=MODEL)
    assert code == 0 and decided["S4"][0] == "REMOTE_INSPECTION" and rule in decided["S4"][1]
    assert _recorded(db, "S4", "S5") == {"S4": "REMOTE_INSPECTION", "S5": None}


@pytest.mark.parametrize("order", ["listing-first", "source-first"])
def test_a_stale_row_of_a_moved_picture_does_not_decide_its_source_alone(
    env: Path, capsys: pytest.CaptureFixture[str], order: str
) -> None:
    """r.png scored twice under S3 (0.1, re-scored 0.95), listed under S4 by a manifest that lists no
    S3: the worst row moved and the other, left, decided S3 alone: released and recorded on a stale
    row of a picture the manifest says is S4's (held on the rows alone)."""
    r, s = str(env / "r.png"), str(env / "s.png")
    mine = [_row("S3", r, 0.1), _row("S3", r, 0.95)]
    rows = [_row("S4", s, 0.1), *mine] if order == "listing-first" else [*mine, _row("S4", s, 0.1)]
    listed = [{"path": p, "shipment_id": "S4", "cargo_type": "bulk_ore"} for p in ("s.png", "r.png")]
    db = f"sqlite:///{env / 'audit.db'}"
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0 and decided == {"S4": ("PHYSICAL_INSPECTION", ["score.clear", "score.hold"])}
    assert _recorded(db, "S3", "S4") == {"S3": None, "S4": "PHYSICAL_INSPECTION"}
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "1 picture(s) have more than one row under the shipment --manifest lists them under" in said
        and f"{r!r} under 'S4' first" in said
    )


def test_a_listing_shipments_clean_row_does_not_hide_the_pictures_rows_elsewhere(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """p.png scored under S2 (0.1), which lists it now, and twice under S1 (0.95, 0.97): the rows
    under S1 stayed there, and S2 was released and recorded on its clean row of a picture whose
    other rows hold it."""
    p = str(env / "p.png")
    rows = [_row("S2", p, 0.1), _row("S1", p, 0.95), _row("S1", p, 0.97), _row("S1", str(env / "a.png"), 0.1)]
    ore = {"cargo_type": "bulk_ore"}
    listed = [{"path": "p.png", "shipment_id": "S2", **ore}, {"path": "a.png", "shipment_id": "S1", **ore}]
    db = f"sqlite:///{env / 'audit.db'}"
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0 and decided["S2"] == ("PHYSICAL_INSPECTION", ["score.clear", "score.hold"])
    assert decided["S1"] == ("RELEASE", ["score.clear"])  # p.png is S2's now
    assert _recorded(db, "S1", "S2") == {"S1": "RELEASE", "S2": "PHYSICAL_INSPECTION"}
    out, done = redeclare(rows, read_declarations(env / "m.csv"))
    assert [r.shipment_id for r in out] == ["S2", "S2", "S2", "S1"]
    assert done.moved == {"S2": [(p, "S1"), (p, "S1")]} and done.several == {"S2": [p]}
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "2 row(s) of pictures --manifest lists under another shipment than the one they were scored under "
        f"were decided under the shipment listing them, with their score, and no longer count for the one "
        f"they were scored under: {p!r} from 'S1' to 'S2' first" in said
    )


def test_a_shipment_not_listed_whose_rows_all_moved_away_is_named(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """S3's only row's picture is listed under S4 now, and the manifest lists no S3: S3 was left out
    of --out without a word, and its release recorded from the rows alone stood in the audit store
    as if this run had nothing to say of it."""
    from pipeline.cli import app, run

    rows = [_row("S3", str(env / "x.png"), 0.1), _row("S4", str(env / "s.png"), 0.1)]
    (env / "rows.jsonl").write_text("".join(map(scored_line, rows)))
    run_finished(env / "rows.jsonl")  # a finished run's
    (env / "p.yaml").write_text(FIXED)
    db = f"sqlite:///{env / 'audit.db'}"
    base = ["decide", "--verdicts", str(env / "rows.jsonl"), "--policy", str(env / "p.yaml")]
    assert run(app, [*base, "--out", str(env / "before.jsonl"), "--audit-db", db]) == 0
    listed = [{"path": p, "shipment_id": "S4", "cargo_type": "bulk_ore"} for p in ("s.png", "x.png")]
    capsys.readouterr()
    code, decided = _decide(env, rows, listed, "--audit-db", db)
    assert code == 0 and set(decided) == {"S4"}
    assert _recorded(db, "S3") == {"S3": "RELEASE"}  # not decided again: it stands, and is said so
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "1 shipment(s) of --verdicts not decided here: all their rows' pictures are listed under other "
        "shipments now: 'S3' first; 1 of them still has a decision in the audit store, made on their "
        "rows before and not decided again here ('S3': RELEASE, audit record 1)" in said
    )
    code, _ = _decide(env, rows, listed)
    said = " ".join(capsys.readouterr().err.split())
    assert code == 0 and "'S3' first" in said and "audit store" not in said
    _, done = redeclare(rows, read_declarations(env / "m.csv"))
    assert done.emptied == {"S3"} and done.shipments == {"S4"}


def test_a_flag_brought_by_a_moved_row_and_cleared_is_said_as_such(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """S7 split (g.png alarmed stays, h.png to S8, whose column says false): none of S8's rows raise
    the alarm, yet the warning said S8 "had a flag their rows raised cleared". S5 split (e.png
    alarmed to S6, whose column says false): S5's kept alarm was said to be taken by S6 too."""
    from pipeline.cli import app, run

    alarm = {"radiation_alarm": True}
    rows = [
        _row("S7", str(env / "g.png"), 0.1, **alarm),
        _row("S7", str(env / "h.png"), 0.1),
        _row("S5", str(env / "e.png"), 0.1, **alarm),
        _row("S5", str(env / "f.png"), 0.1),
    ]
    ore = {"cargo_type": "bulk_ore"}
    listed = [
        {"path": "g.png", "shipment_id": "S7", **ore},
        {"path": "h.png", "shipment_id": "S8", **ore, "radiation_alarm": False},
        {"path": "e.png", "shipment_id": "S6", **ore, "radiation_alarm": False},
        {"path": "f.png", "shipment_id": "S5", **ore},
    ]
    (env / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in listed))
    _, done = redeclare(rows, read_declarations(env / "m.jsonl"))
    assert done.cleared == {"S6": ["radiation_alarm"], "S8": ["radiation_alarm"]}
    assert done.kept_flags == {"S5": ["radiation_alarm"]} and done.brought_flags == {}
    (env / "rows.jsonl").write_text("".join(map(scored_line, rows)))
    run_finished(env / "rows.jsonl")  # a finished run's
    (env / "p.yaml").write_text(FIXED)
    argv = ["decide", "--verdicts", str(env / "rows.jsonl"), "--policy", str(env / "p.yaml")]
    assert run(app, [*argv, "--manifest", str(env / "m.jsonl"), "--out", str(env / "d.jsonl")]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "a flag their rows raised" not in said
    assert (
        "2 shipment(s) had a flag cleared by --manifest that --verdicts raised on a row scored or decided "
        "under them, or on a row of a shipment a row moved to them was scored under (a flag on one row is "
        "the shipment's): 'S6' (radiation_alarm) first; their column in --manifest says false" in said
    )
    assert (
        "1 shipment(s) keep a flag raised on rows that moved away from them (--manifest lists their "
        "pictures under another shipment, which takes the flag too unless its column for the flag says "
        "false): 'S5' (radiation_alarm) first" in said
    )


@pytest.mark.parametrize("source_listed", [False, True])
def test_a_moved_rows_flag_that_is_no_boolean_is_refused_as_its_source_reads_it(
    tmp_path: Path, source_listed: bool
) -> None:
    """The review's repro: x's radiation_alarm 'maybe' moved with it to S4, whose JSON-lines manifest
    line says false, and was swallowed there: S3, unlisted or listed without the key, was released
    on y. Deciding the rows alone refused the run, as it does now."""
    x, y = str(tmp_path / "x.png"), str(tmp_path / "y.png")
    rows = [_row("S3", x, 0.1, radiation_alarm="maybe"), _row("S3", y, 0.1)]
    lines = [{"path": "x.png", "shipment_id": "S4", "cargo_type": "bulk_ore", "radiation_alarm": False}]
    if source_listed:
        lines.append({"path": "y.png", "shipment_id": "S3", "cargo_type": "bulk_ore"})  # no radiation_alarm
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(
        InputError, match=r"radiation_alarm = 'maybe' is not a boolean .*no radiation_alarm column"
    ):
        redeclare(rows, read_declarations(manifest))
