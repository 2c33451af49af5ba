"""`clearsight decide` on rows of more than one score run: held where no completion record vouches for
them, refused where one does (pipeline.redeclare, pipeline.cli.decide). Someone who can write the
verdicts folder, not the audit secret, replaced every row of one cargo type in today's output with an
older run's genuine sealed rows of the same pictures (an older model's), and removed the record:
no cargo type's rows named two models, so nothing held, and the spliced file was decided."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from decide_builders import scored  # noqa: E402
from score_fakes import FakePredictor, write_png  # noqa: E402

from datasets.manifest import write_manifest  # noqa: E402
from pipeline import row_seal  # noqa: E402
from pipeline.cli import app, run  # noqa: E402
from pipeline.redeclare import MIXED_RUNS, NO_RUN, read_declarations, redeclare  # noqa: E402
from pipeline.score import ImageTask, LocalEngine, ModelRouter, iter_rows, score_to_file  # noqa: E402
from pipeline.score.completion import completion_path, record_completion  # noqa: E402
from pipeline.settings import Settings, completion_seal_key, row_seal_key  # noqa: E402
from pipeline.verdict_rows import row_json  # noqa: E402
from pipeline.verdicts import ImageVerdict  # noqa: E402

SECRET = "decide-runs-test-audit-secret"
POLICY = (
    "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"
    "  vacuum_pack: {release_threshold: 0.5, hold_threshold: 0.8}\nrandom_audit: {rate: 0.0001}\n"
)
LISTED = [("a.png", "S1", "bulk_ore"), ("b.png", "S2", "bulk_ore"), ("c.png", "S3", "vacuum_pack")]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", SECRET)
    monkeypatch.setenv("COLUMNS", "1000")  # a message the console wraps is no longer found whole
    (tmp_path / "p.yaml").write_text(POLICY)
    for n, (name, _, _) in enumerate(LISTED):
        write_png(tmp_path / name, 40 + 20 * n)  # all released on their scores
    write_manifest(tmp_path / "m.csv", [{"path": p, "shipment_id": s, "cargo_type": c} for p, s, c in LISTED])
    return tmp_path


def _score(env: Path, out: Path, ore_model: str) -> list[ImageVerdict]:
    """``out`` as `clearsight score m.csv --model ore --model pack --out OUT` writes it, sealed."""
    settings = Settings.load()
    models = [FakePredictor("bulk_ore", ore_model), FakePredictor("vacuum_pack", "pack-m1")]
    tasks = [
        ImageTask(str(env / name), shipment, cargo, {"shipment_id": shipment, "cargo_type": cargo})
        for name, shipment, cargo in LISTED
    ]
    score_to_file(
        tasks,
        LocalEngine(ModelRouter(models)),  # type: ignore[arg-type]
        out,
        row_key=row_seal_key(settings),
        completion_key=completion_seal_key(settings),
    )
    return list(iter_rows(out))


def _decide(env: Path, verdicts: Path, *more: str) -> tuple[int, dict[str, dict]]:
    out = env / "d.jsonl"
    argv = ["decide", "--verdicts", str(verdicts), "--policy", str(env / "p.yaml"), "--out", str(out)]
    code = run(app, [*argv, "--overwrite", *more])
    found = {d["shipment_id"]: d for d in map(json.loads, out.read_text().splitlines())} if code == 0 else {}
    return code, found


def test_an_older_runs_rows_of_a_whole_cargo_type_spliced_in_hold_every_shipment(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = _score(env, env / "older.jsonl", "ore-m1")
    today = env / "rows.jsonl"
    now = _score(env, today, "ore-m2")
    assert len({r.run_id for r in older} | {r.run_id for r in now}) == 2
    # every ore row of today's output replaced by the older run's genuine row of the same picture
    spliced = [next(o for o in older if o.path == r.path) if r.cargo_type == "bulk_ore" else r for r in now]
    today.write_bytes(b"".join(map(row_json, spliced)))
    completion_path(today).unlink()
    capsys.readouterr()
    code, decided = _decide(env, today, "--manifest", str(env / "m.csv"))
    assert code == 0
    assert {s: d["tier"] for s, d in decided.items()} == dict.fromkeys(
        ("S1", "S2", "S3"), "REMOTE_INSPECTION"
    )
    assert {i["error"] for d in decided.values() for i in d["images"]} == {MIXED_RUNS}
    assert all(i["score"] is None and i["sha256"] is None for d in decided.values() for i in d["images"])
    err = " ".join(capsys.readouterr().err.split())
    assert "the rows name 2 score runs" in err and "so all 3 of them were held" in err
    # today's rows as written, with their record, are decided on their scores
    today.write_bytes(b"".join(map(row_json, now)))
    assert _decide(env, today, "--manifest", str(env / "m.csv"))[1]["S1"]["tier"] == "RELEASE"


@pytest.mark.parametrize(
    ("runs", "held"),
    [
        (["20261208T000000.000000Z-00000000000000aa"] * 2, False),  # one run
        ([None, None], False),  # rows of a version before run ids
        (["20261208T000000.000000Z-00000000000000aa", "20261207T000000.000000Z-00000000000000bb"], True),
        (["20261208T000000.000000Z-00000000000000aa", None], True),  # none counts where one names one
    ],
    ids=["one-run", "no-run-ids", "two-runs", "a-row-naming-none"],
)
@pytest.mark.parametrize("vouched", [False, True], ids=["no-record", "record-vouches"])
def test_rows_naming_two_runs_hold_every_row_where_no_record_vouches_for_them(
    tmp_path: Path, runs: list[str | None], held: bool, vouched: bool
) -> None:
    """Error rows too: which rows are the run's own cannot be told. A record vouching for rows
    leaves them to the check of its run id (below)."""
    listed = [
        {"path": n, "shipment_id": s, "cargo_type": "bulk_ore"} for n, s in (("a.png", "S1"), ("b.png", "S2"))
    ]
    write_manifest(tmp_path / "m.csv", listed)
    rows = [
        ImageVerdict(
            path=str(tmp_path / n),
            sha256="a" * 64,
            shipment_id=s,
            cargo_type="bulk_ore",
            score=0.1,
            model_id="ore-m1",
            declaration={"shipment_id": s, "cargo_type": "bulk_ore"},
            run_id=run,
        )
        for (n, s), run in zip((("a.png", "S1"), ("b.png", "S2")), runs, strict=True)
    ]
    rows[1] = rows[1].model_copy(update={"score": None, "error": "ImageDecodeError: truncated"})
    found = {str((tmp_path / n).resolve()): "a" * 64 for n in ("a.png", "b.png")}
    out, done = redeclare(
        rows, read_declarations(tmp_path / "m.csv"), hold_unscored=not vouched, content=lambda _: found
    )
    held = held and not vouched
    assert [r.error for r in out] == ([MIXED_RUNS] * 2 if held else [None, "ImageDecodeError: truncated"])
    assert [r.sha256 for r in out] == ([None, None] if held else ["a" * 64] * 2)
    assert (done.held_for_runs, len(done.mixed_runs)) == ((2, 2) if held else (0, 0))


@pytest.mark.parametrize("record_run", ["20261208T000000.000000Z-00000000000000aa", None])
def test_a_vouched_row_naming_another_run_than_its_record_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str], record_run: str | None
) -> None:
    """Defence in depth: the record's bytes already bind its rows; a row naming another run than the
    run that wrote it (and its id into every row) is not as that run wrote it."""
    rows = [
        ImageVerdict(path=str(env / n), sha256="a" * 64, shipment_id=s, cargo_type=c, score=0.1, model_id="m")
        for n, s, c in LISTED[:2]
    ]
    rows = [
        rows[0].model_copy(update={"run_id": record_run}),
        rows[1].model_copy(update={"run_id": "20261207T000000.000000Z-00000000000000bb"}),
    ]
    verdicts = env / "rows.jsonl"
    verdicts.write_bytes(b"".join(row_json(scored(r)) for r in rows))
    # as the run that wrote it seals it: its id, where it has one, under the seal
    record_completion(verdicts, seal_key=completion_seal_key(Settings.load()), run_id=record_run)
    record = json.loads(completion_path(verdicts).read_text())
    assert record.get("run_id") == record_run
    capsys.readouterr()
    for more in ([], ["--manifest", str(env / "m.csv")]):
        assert _decide(env, verdicts, *more)[0] == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "names score run '20261207T000000.000000Z-00000000000000bb'" in err
        assert f"vouches for the rows of run {record_run!r}" in err and "nothing was decided" in err


def test_the_error_reads_as_one_clause_inside_the_decisions_reason() -> None:
    """It goes into the audit record and the officer's page ("image could not be scored (ERROR);
    never released"): no file named, no parentheses of its own."""
    from pipeline.decide import decide_rows
    from pipeline.policy import default_policy_path, load_policy

    declared = {"shipment_id": "S1", "cargo_type": "bulk_ore"}
    row = ImageVerdict(
        path="a.png", shipment_id="S1", cargo_type="bulk_ore", error=MIXED_RUNS, declaration=declared
    )
    (decision,) = decide_rows(load_policy(default_policy_path()), [row], audit_key=b"k" * 32)
    (message,) = [r.message for r in decision.reasons if r.rule == "fail_closed.image_error"]
    assert message == f"image could not be scored ({MIXED_RUNS}); never released"
    assert (message.count("("), message.count(")"), message.count("never released")) == (1, 1, 1)
    assert ".png" not in MIXED_RUNS and "/" not in MIXED_RUNS


def _as_before_run_ids(rows: list[ImageVerdict]) -> bytes:
    """``rows`` as a version before run ids wrote them: no run id, sealed under the environment's key."""
    key = row_seal_key(Settings.load())
    return b"".join(row_json(row_seal.sealed(key, r.model_copy(update={"run_id": None}))) for r in rows)


def test_older_versions_rows_spliced_with_no_record_hold_where_the_seals_are_checked(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs of a version before run ids, an older model's rows of the ore pictures (unchanged
    since) spliced into the newer run's: one model per cargo type, one run (none) named, and S1 was
    released on the older model's score."""
    older = _score(env, env / "older.jsonl", "ore-m1")
    now = _score(env, env / "rows.jsonl", "ore-m2")
    today = env / "rows.jsonl"
    spliced = [next(o for o in older if o.path == r.path) if r.cargo_type == "bulk_ore" else r for r in now]
    today.write_bytes(_as_before_run_ids(spliced))
    completion_path(today).unlink()
    code, decided = _decide(env, today, "--manifest", str(env / "m.csv"))
    assert code == 0
    assert {s: d["tier"] for s, d in decided.items()} == dict.fromkeys(
        ("S1", "S2", "S3"), "REMOTE_INSPECTION"
    )
    assert {i["error"] for d in decided.values() for i in d["images"]} == {NO_RUN}
    assert all(i["score"] is None and i["sha256"] is None for d in decided.values() for i in d["images"])
    # rows a sealed record vouches for (the older version's run finished) are decided as before
    today.write_bytes(_as_before_run_ids(now))
    record_completion(today, seal_key=completion_seal_key(Settings.load()))
    assert _decide(env, today, "--manifest", str(env / "m.csv"))[1]["S1"]["tier"] == "RELEASE"


@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
@pytest.mark.parametrize("vouched", [False, True], ids=["no-record", "record-vouches"])
def test_sealed_rows_naming_no_run_hold_where_no_record_vouches_for_them(
    tmp_path: Path, sealed: bool, vouched: bool
) -> None:
    """Only the scored rows: an error row holds already. Rows scored without any secret carry no
    seal and are decided as before (a decide with the secret has made them error rows)."""
    write_manifest(tmp_path / "m.csv", [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    row = ImageVerdict(
        path=str(tmp_path / "a.png"),
        sha256="a" * 64,
        shipment_id="S1",
        cargo_type="bulk_ore",
        score=0.1,
        model_id="ore-m1",
        declaration={"shipment_id": "S1", "cargo_type": "bulk_ore"},
    )
    rows = [row, row.model_copy(update={"score": None, "error": "ImageDecodeError: truncated"})]
    if sealed:
        rows = [row_seal.sealed(b"k" * 32, r) for r in rows]
    found = {str((tmp_path / "a.png").resolve()): "a" * 64}
    out, done = redeclare(
        rows, read_declarations(tmp_path / "m.csv"), hold_unscored=not vouched, content=lambda _: found
    )
    held = sealed and not vouched
    assert [r.error for r in out] == [NO_RUN if held else None, "ImageDecodeError: truncated"]
    assert (out[0].score, out[0].sha256) == ((None, None) if held else (0.1, "a" * 64))
    assert done.held_without_run == int(held)
