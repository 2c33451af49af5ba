"""`clearsight decide` without --manifest reads each scored row's picture again: an earlier output,
its sealed completion record with it, copied over today's is not decided on other pictures' scores
(pipeline.scored_content)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from blocking import unblocked  # noqa: E402
from decide_builders import run_finished, scored_line  # noqa: E402

from pipeline.score.batch import printable_path  # noqa: E402
from pipeline.scored_content import changed_error, check_at_paths  # noqa: E402
from pipeline.verdicts import PICTURE_FIELDS, SCORE_FIELDS, ImageVerdict  # noqa: E402

OLD, NEW = "a" * 64, "b" * 64

POLICY = (
    "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"
    "random_audit: {rate: 0.0001}\n"
)


def _row(path: str, *, sha256: str | None = OLD, shipment: str = "S1", score: float = 0.1) -> ImageVerdict:
    return ImageVerdict(
        path=path,
        sha256=sha256,
        # each picture its own: the audit store takes pictures of one phash for copies of one another
        phash=hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest() + "0" * 16,
        shipment_id=shipment,
        cargo_type="bulk_ore",
        threshold=0.5,
        hold_threshold=0.8,
        score=score,
        label="good",
        model_id="ore-m1",
        declaration={"shipment_id": shipment, "cargo_type": "bulk_ore"},
    )


@pytest.mark.parametrize(
    ("sha256", "now", "held", "said"),
    [
        (OLD, OLD, False, "same"),
        (OLD.upper(), OLD, False, "same"),  # hex written in capitals is the same hash
        (OLD, NEW, True, "changed"),  # a new scan written over the name, or an earlier run's row
        (None, NEW, True, "unhashed"),  # nothing to compare the file there with
        (OLD, OSError(errno.ENOENT, "gone"), False, "absent"),  # archived away: the row is the record
        (None, OSError(errno.ENOENT, "gone"), False, "absent"),
        (OLD, OSError(errno.EACCES, "denied"), True, "unreadable"),  # there, but cannot be compared
        (OLD, OSError(errno.EFBIG, "too big"), True, "unreadable"),
    ],
    ids=["same", "same-capitals", "changed", "no-sha256", "archived", "no-sha256-archived", "denied", "big"],
)
def test_a_scored_row_stands_only_on_the_bytes_it_was_scored_on(
    sha256: str | None, now: str | OSError, held: bool, said: str
) -> None:
    row = _row("arc/a.png", sha256=sha256)
    asked: list[list[str]] = []

    def content(paths: list[str]) -> dict[str, str | OSError]:
        asked.append(list(paths))
        return {"arc/a.png": now}

    (out,), found = check_at_paths([row], content=content)
    assert asked == [["arc/a.png"]]
    if held:
        assert out.error == changed_error("arc/a.png", said)
        assert all(getattr(out, f) is None for f in (*SCORE_FIELDS, *PICTURE_FIELDS))
        assert found.held_shipments == {"S1"} and found.held == 1
    else:
        assert out == row and found.held == 0
    assert (found.same, found.absent) == (int(said == "same"), ["arc/a.png"] if said == "absent" else [])


def test_a_row_that_failed_to_score_is_not_read() -> None:
    failed = ImageVerdict(path="arc/a.png", shipment_id="S1", error="could not decode the image")
    out, found = check_at_paths([failed], content=lambda paths: dict.fromkeys(paths, NEW))
    assert out == [failed] and found.held == found.same == 0 and not found.absent


def test_rows_compared_already_are_neither_read_nor_counted_again() -> None:
    """decide --manifest compares the rows of the pictures it lists itself (pipeline.redeclare):
    read twice, an archive cost two reads a picture, and each row was counted and said twice."""
    rows = [_row("arc/a.png"), _row("arc/b.png", shipment="S2")]
    asked: list[list[str]] = []

    def content(paths: list[str]) -> dict[str, str | OSError]:
        asked.append(list(paths))
        return dict.fromkeys(paths, NEW)

    out, found = check_at_paths(rows, content=content, compared={0})
    assert asked == [["arc/b.png"]] and out[0] == rows[0] and found.changed == ["arc/b.png"]
    assert check_at_paths(rows, content=content, compared={0, 1}) == (rows, check_at_paths([])[1])
    assert len(asked) == 1  # nothing left to read: not asked


def test_the_errors_name_the_file_and_read_as_one_clause_inside_the_decisions_reason() -> None:
    """The audit record and the officer's page say "image could not be scored (ERROR); never
    released": an error with parentheses of its own, or saying never released again, read garbled."""
    from pipeline.decide import decide_rows
    from pipeline.policy import default_policy_path, load_policy

    for how in ("changed", "unreadable", "unhashed"):
        error = changed_error("arc/a.png", how)
        assert "'arc/a.png'" in error and "since it was scored" in error
        row = _row("arc/a.png").model_copy(update={**dict.fromkeys(SCORE_FIELDS), "error": error})
        (decision,) = decide_rows(load_policy(default_policy_path()), [row], audit_key=b"k" * 32)
        (message,) = [r.message for r in decision.reasons if r.rule == "fail_closed.image_error"]
        assert message == f"image could not be scored ({error}); never released"
        assert (message.count("("), message.count(")"), message.count("never released")) == (1, 1, 1)


def test_a_name_written_with_escapes_is_read_as_the_file_it_names(tmp_path: Path) -> None:
    """A name that is not UTF-8 is written into its row as ``\\xNN`` escapes: read as that text, no
    file was there, and the row was decided as archived away over a new scan at the real name."""
    name = os.fsdecode(str(tmp_path).encode() + b"/caf\xe9.png")
    Path(name).write_bytes(b"a new scan")
    text = printable_path(name)
    assert "\\xe9" in text
    (out,), found = check_at_paths([_row(text, sha256=hashlib.sha256(b"first scan").hexdigest())])
    assert found.changed == [text] and out.error == changed_error(text, "changed")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "scored-content-test-audit-secret")
    monkeypatch.setenv("COLUMNS", "1000")  # a path the console wraps is no longer found whole
    (tmp_path / "p.yaml").write_text(POLICY)
    return tmp_path


def _decide(env: Path, verdicts: Path, *extra: str) -> dict[str, dict]:
    from pipeline.cli import app, run

    out = env / "d.jsonl"
    argv = ["decide", "--verdicts", str(verdicts), "--policy", str(env / "p.yaml"), "--out", str(out)]
    assert run(app, [*argv, "--overwrite", *extra]) == 0
    return {d["shipment_id"]: d for d in map(json.loads, out.read_text().splitlines())}


def _scored(env: Path, pictures: dict[str, tuple[bytes, str, float]]) -> Path:
    """``pictures`` (name: bytes, shipment, score) written under ``env/arc`` and their rows into
    ``env/out/rows.jsonl`` as a finished score run leaves them (rows and record sealed)."""
    rows = []
    for name, (data, shipment, score) in pictures.items():
        (env / "arc").mkdir(exist_ok=True)
        (env / "arc" / name).write_bytes(data)
        row = _row(str(env / "arc" / name), sha256=hashlib.sha256(data).hexdigest(), shipment=shipment)
        rows.append(row.model_copy(update={"score": score}))
    verdicts = env / "out" / "rows.jsonl"
    verdicts.parent.mkdir(exist_ok=True)
    verdicts.write_text("".join(map(scored_line, rows)))
    run_finished(verdicts)
    return verdicts


def test_an_earlier_output_copied_over_todays_holds_the_shipments_of_new_scans(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Yesterday's genuine output and its genuine sealed completion record, copied whole over
    today's by someone who can write the verdicts folder: today's new scans lie at the names
    yesterday's rows give, and decide released them on yesterday's scores of other pictures."""
    verdicts = _scored(
        env,
        {
            "a.png": (b"yesterday's clean scan", "S1", 0.1),
            "b.png": (b"a scan kept as it was", "S2", 0.1),
            "c.png": (b"a scan archived since", "S3", 0.1),
        },
    )
    yesterday = {p.name: p.read_bytes() for p in verdicts.parent.iterdir()}  # record included
    assert any(name.endswith(".complete.json") for name in yesterday)
    assert {s: d["tier"] for s, d in _decide(env, verdicts).items()} == dict.fromkeys(
        ("S1", "S2", "S3"), "RELEASE"
    )
    (env / "arc" / "c.png").unlink()  # archived away
    for p in verdicts.parent.iterdir():
        p.unlink()
    today = _scored(env, {"a.png": (b"today's scan, a knife in it", "S1", 0.95)})
    assert _decide(env, today)["S1"]["tier"] == "PHYSICAL_INSPECTION"
    for p in verdicts.parent.iterdir():
        p.unlink()
    for name, data in yesterday.items():  # the replay
        (verdicts.parent / name).write_bytes(data)
    capsys.readouterr()
    decided = _decide(env, verdicts)
    out, err = (" ".join(text.split()) for text in capsys.readouterr())
    assert {s: d["tier"] for s, d in decided.items()} == {
        "S1": "REMOTE_INSPECTION",  # held: fail_closed.image_error, never released
        "S2": "RELEASE",  # the same bytes
        "S3": "RELEASE",  # archived away: decided on its row, as before
    }
    a = str(env / "arc" / "a.png")
    assert [i["error"] for i in decided["S1"]["images"]] == [changed_error(a, "changed")]
    assert [(i["score"], i["sha256"], i["phash"]) for i in decided["S1"]["images"]] == [(None, None, None)]
    assert (
        "2 scored picture(s) compared with the file at their path: 1 held, their shipments not released "
        "(1 changed since scoring, 0 unreadable, 0 without a sha256); 1 pictures no longer at their "
        "path: not compared" in out
    )
    assert f"so 1 shipment(s) holding them are not released: {a!r} (changed since scoring) first" in err
    c = str(env / "arc" / "c.png")
    assert "1 scored row(s) of --verdicts were decided on their scores as recorded" in err
    assert f"{c!r} first" in err
    assert "checking the scored pictures' content: 0/3" in err  # the progress, stderr no terminal


@pytest.mark.parametrize("audit_db", [False, True], ids=["no-store", "audit-db"])
def test_a_manifest_listing_some_shipments_or_pictures_holds_the_new_scans_it_leaves_out(
    env: Path, audit_db: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --manifest only the pictures it lists were read again, and a manifest listing a few
    shipments (an alarm raised on S2 since scoring) or a few of a shipment's pictures is an ordinary
    one: an earlier output copied over today's, new scans at a.png (S1, not listed) and c.png (S2's,
    not listed), released both shipments on the earlier scores, with --audit-db recorded over the
    releases made on the genuine rows before. Each picture is read once, listed or not."""
    import pipeline.cli.decide as decide_cli
    from pipeline.listed_content import hash_files

    verdicts = _scored(
        env,
        {
            "a.png": (b"yesterday's clean a", "S1", 0.1),
            "b.png": (b"b as it was", "S2", 0.1),
            "c.png": (b"yesterday's clean c", "S2", 0.1),
            "d.png": (b"d as it was", "S3", 0.1),
        },
    )
    store = ("--audit-db", f"sqlite:///{env / 'audit.db'}") if audit_db else ()
    if audit_db:  # the genuine rows decided and recorded first: released
        assert {s: d["tier"] for s, d in _decide(env, verdicts, *store).items()} == dict.fromkeys(
            ("S1", "S2", "S3"), "RELEASE"
        )
    # today's scans at the names the rows give: the rows are another picture's, as replayed
    (env / "arc" / "a.png").write_bytes(b"today's scan, a knife in it")
    (env / "arc" / "c.png").write_bytes(b"today's scan c, a gun in it")
    b, d = env / "arc" / "b.png", env / "arc" / "d.png"
    (env / "alarm.csv").write_text(f"path,shipment_id,cargo_type,radiation_alarm\n{b},S2,bulk_ore,false\n")
    read: list[str] = []

    def counted(paths: list[str], **kw: object) -> dict[str, str | OSError]:
        read.extend(paths)
        return hash_files(paths, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(decide_cli, "hash_files", counted)
    capsys.readouterr()
    decided = _decide(env, verdicts, "--manifest", str(env / "alarm.csv"), *store)
    out, err = (" ".join(text.split()) for text in capsys.readouterr())
    assert {s: (d["tier"], d.get("refused")) for s, d in decided.items()} == {
        "S1": ("REMOTE_INSPECTION", None),  # a shipment the manifest does not list
        "S2": ("REMOTE_INSPECTION", None),  # listed, c.png of it not
        "S3": ("RELEASE", None),  # not listed, its picture as scored
    }
    a, c = str(env / "arc" / "a.png"), str(env / "arc" / "c.png")
    assert [i["error"] for i in decided["S1"]["images"]] == [changed_error(a, "changed")]
    assert sorted(i["error"] or "" for i in decided["S2"]["images"]) == ["", changed_error(c, "changed")]
    assert sorted(read) == sorted([a, str(b), c, str(d)])  # each once
    assert (
        "of the rows of pictures --manifest does not list: 3 scored picture(s) compared with the file at "
        "their path: 2 held, their shipments not released (2 changed since scoring" in out
    )
    assert f"so 2 shipment(s) holding them are not released: {a!r} (changed since scoring) first" in err


@pytest.mark.parametrize(
    ("bad", "refused"),
    [
        ({"shipment_id": None, "declaration": {}}, "has no shipment_id"),  # a folder run's row
        ({"shipment_id": "S9", "cargo_type": None, "declaration": {"shipment_id": "S9"}}, "no cargo_type"),
    ],
    ids=["no-shipment", "no-cargo-type"],
)
def test_rows_deciding_refuses_are_refused_before_any_picture_is_read(
    env: Path, bad: dict, refused: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every scored picture was read again, an archive's worth, and only then was the row deciding
    refuses refused (exit 2): a bad input fails before the reading."""
    import pipeline.cli.decide as decide_cli
    from pipeline.cli import app, run

    verdicts = _scored(env, {"a.png": (b"a scan", "S1", 0.1), "b.png": (b"b scan", "S2", 0.1)})
    odd = _row(str(env / "arc" / "a.png"), sha256=hashlib.sha256(b"a scan").hexdigest())
    verdicts.write_text(verdicts.read_text() + scored_line(odd.model_copy(update=bad)))
    run_finished(verdicts)
    read: list[str] = []
    monkeypatch.setattr(decide_cli, "hash_files", lambda paths, **kw: read.extend(paths) or {})
    argv = ["decide", "--verdicts", str(verdicts), "--policy", str(env / "p.yaml"), "--out", "d.jsonl"]
    assert run(app, argv) == 2
    assert refused in " ".join(capsys.readouterr().err.split()) and read == []


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_fifo_or_folder_at_a_rows_path_holds_its_shipment_and_hangs_nothing(
    env: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Something is at the path that cannot be read: it may be a new scan, so the row is not
    decided on its score. A FIFO's open() blocked until a writer came, forever."""
    verdicts = _scored(env, {"a.png": (b"first scan", "S1", 0.1), "b.png": (b"other scan", "S2", 0.1)})
    there = env / "arc" / "a.png"
    there.unlink()
    if kind == "fifo":
        os.mkfifo(there)
    else:
        there.mkdir()
    decided = unblocked(there, lambda: _decide(env, verdicts))
    assert isinstance(decided, dict)
    assert {s: d["tier"] for s, d in decided.items()} == {"S1": "REMOTE_INSPECTION", "S2": "RELEASE"}
    assert [i["error"] for i in decided["S1"]["images"]] == [changed_error(str(there), "unreadable")]
    err = " ".join(capsys.readouterr().err.split())
    why = "not a regular file: a FIFO" if kind == "fifo" else os.strerror(errno.EISDIR)
    assert f"{str(there)!r} (cannot be read: {why}) first" in err


def test_decide_reads_no_picture_past_the_settings_largest_image(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The limit is the command's settings' (CLEARSIGHT_MAX_IMAGE_BYTES, as the scorer decodes), read
    once where the command starts: a picture over it is not one any run scored."""
    verdicts = _scored(env, {"a.png": (b"x" * 11, "S1", 0.1), "b.png": (b"y" * 10, "S2", 0.1)})
    monkeypatch.setenv("CLEARSIGHT_MAX_IMAGE_BYTES", "10")
    decided = _decide(env, verdicts)
    assert {s: d["tier"] for s, d in decided.items()} == {"S1": "REMOTE_INSPECTION", "S2": "RELEASE"}
    err = " ".join(capsys.readouterr().err.split())
    assert "larger than the largest image accepted (10 bytes, CLEARSIGHT_MAX_IMAGE_BYTES)" in err


def test_decide_help_says_the_scored_pictures_are_read_again(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import app, run

    monkeypatch.setenv("COLUMNS", "1000")
    assert run(app, ["decide", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "Each scored row's picture is read again, with --manifest too (each file once)" in out
    # a row without a sha256 is held too, where its file is there: an officer reads why
    assert "or whose row has no sha256 to compare it with (an older version's row) while it is there" in out
    assert "or whose row has no sha256 to compare it with (an older version's) while it is there" in out
    assert "The scored rows of pictures it does not list are read again too, as without --manifest" in out


def test_a_rows_path_holding_a_nul_byte_holds_its_shipment(env: Path) -> None:
    """No scorer writes one (no file name holds it), so such a row is not the scorer's: reading it
    raised ValueError, and decide ended with a traceback, nothing decided."""
    verdicts = _scored(env, {"b.png": (b"other scan", "S2", 0.1)})
    rows = verdicts.read_text() + scored_line(_row(str(env / "arc" / "a\0.png"), shipment="S1"))
    verdicts.write_text(rows)
    run_finished(verdicts)
    decided = _decide(env, verdicts)
    assert {s: d["tier"] for s, d in decided.items()} == {"S1": "REMOTE_INSPECTION", "S2": "RELEASE"}
    assert [i["error"] for i in decided["S1"]["images"]] == [
        changed_error(str(env / "arc" / "a\0.png"), "unreadable")
    ]
