"""`clearsight decide --manifest` reads each listed picture again: a file written over since it was
scored is not decided on the old picture's score (pipeline.listed_content, pipeline.redeclare)."""

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
from score_fakes import tiny_model_dir, write_png  # noqa: E402

from datasets.manifest import write_manifest  # noqa: E402
from pipeline.listed_content import ABSENT_UNVOUCHED, CHANGED, NO_SHA256, UNREADABLE_NOW, hash_files  # noqa: E402
from pipeline.redeclare import MIXED_MODELS, read_declarations, redeclare  # noqa: E402
from pipeline.verdicts import ImageVerdict  # noqa: E402

OLD, NEW = "a" * 64, "b" * 64


def _row(path: str, *, sha256: str | None = OLD, error: str | None = None) -> ImageVerdict:
    scored = {"score": 0.1, "label": "good", "model_id": "ore-m1"} if error is None else {}
    return ImageVerdict(
        path=path,
        sha256=sha256,
        shipment_id="S1",
        cargo_type="bulk_ore",
        threshold=0.5,
        hold_threshold=0.8,
        error=error,
        declaration={"shipment_id": "S1", "cargo_type": "bulk_ore"},
        **scored,
    )


def _gone(code: int) -> OSError:
    return OSError(code, "(said by the system)")


@pytest.mark.parametrize(
    ("sha256", "now", "error", "said"),
    [
        (OLD, OLD, None, None),  # the same bytes: decided on its score, as before
        (OLD.upper(), OLD, None, None),  # hex written in capitals is the same hash
        (OLD, NEW, CHANGED, "changed"),  # a new scan written over the name
        (None, NEW, NO_SHA256, "unhashed"),  # nothing to compare the file there with
        (OLD, _gone(errno.ENOENT), None, "absent"),  # archived away: the row is the record
        (OLD, _gone(errno.ENOTDIR), None, "absent"),  # its folder is gone (a file there now)
        (None, _gone(errno.ENOENT), None, "absent"),
        (OLD, _gone(errno.EACCES), UNREADABLE_NOW, "unreadable"),  # there, but cannot be compared
        (OLD, _gone(errno.EISDIR), UNREADABLE_NOW, "unreadable"),
        (OLD, _gone(errno.EIO), UNREADABLE_NOW, "unreadable"),
    ],
    ids=[
        "same",
        "same-capitals",
        "written-over",
        "no-sha256-file-there",
        "archived-away",
        "folder-gone",
        "no-sha256-archived-away",
        "permission",
        "a-folder-now",
        "io-error",
    ],
)
@pytest.mark.parametrize("vouched", [True, False], ids=["record-vouches", "no-record"])
def test_a_listed_pictures_row_stands_only_on_the_bytes_it_was_scored_on(
    tmp_path: Path, sha256: str | None, now: str | OSError, error: str | None, said: str | None, vouched: bool
) -> None:
    """Without a completion record vouching for the rows (a run unfinished, or its record removed), a
    row whose file is gone is held too: an earlier run's sealed row of the name replayed in its
    place, the pictures archived, was decided on its score and released."""
    if said == "absent" and not vouched:
        error, said = ABSENT_UNVOUCHED, "unvouched"
    write_manifest(tmp_path / "m.csv", [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    picture = str((tmp_path / "a.png").resolve())
    asked: list[list[str]] = []

    def content(paths: list[str]) -> dict[str, str | OSError]:
        asked.append(paths)
        return {picture: now}

    out, done = redeclare(
        [_row(str(tmp_path / "a.png"), sha256=sha256)],
        read_declarations(tmp_path / "m.csv"),
        hold_unscored=not vouched,
        content=content,
    )
    assert asked == [[picture]]
    assert out[0].error == error
    # a held row presents no picture's hash, as a never-scored one: its decision was made on none
    assert out[0].sha256 == (None if error else sha256)
    assert (out[0].score, out[0].label) == ((None, None) if error else (0.1, "good"))
    kinds = ("changed", "unhashed", "absent", "unreadable", "unvouched")
    found = {name: getattr(done, name) for name in kinds}
    want = {name: {} for name in found}
    if said == "unreadable":
        want[said] = {"S1": [(str(tmp_path / "a.png"), "(said by the system)")]}
    elif said is not None:
        want[said] = {"S1": [str(tmp_path / "a.png")]}
    assert found == want


def test_a_row_that_failed_to_score_is_not_read_again(tmp_path: Path) -> None:
    """It is never released as it is; its own error, the record of why, stays."""
    write_manifest(tmp_path / "m.csv", [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    asked: list[list[str]] = []

    def content(paths: list[str]) -> dict[str, str | OSError]:
        asked.append(paths)
        return {}

    row = _row(str(tmp_path / "a.png"), sha256=None, error="ImageDecodeError: truncated")
    out, done = redeclare([row], read_declarations(tmp_path / "m.csv"), content=content)
    assert asked == [[]] and out[0].error == "ImageDecodeError: truncated" and done.changed == {}


def test_the_errors_name_no_file() -> None:
    """They go into the audit record and the idempotency key (NEVER_SCORED's docstring)."""
    for error in (CHANGED, NO_SHA256, UNREADABLE_NOW, ABSENT_UNVOUCHED, MIXED_MODELS):
        assert ".png" not in error and "/" not in error.replace("--model", "")


@pytest.mark.parametrize(
    "error",
    [CHANGED, UNREADABLE_NOW, NO_SHA256, ABSENT_UNVOUCHED, MIXED_MODELS],
    ids=["changed", "unreadable", "no-sha256", "unvouched", "mixed-models"],
)
def test_the_errors_read_as_one_clause_inside_the_decisions_reason(error: str) -> None:
    """The audit record and the officer's page say "image could not be scored (ERROR); never
    released": an error with parentheses of its own, or saying never released again, read garbled."""
    from pipeline.decide import decide_rows
    from pipeline.policy import default_policy_path, load_policy

    row = _row("a.png").model_copy(update={"score": None, "label": None, "error": error})
    (decision,) = decide_rows(load_policy(default_policy_path()), [row], audit_key=b"k" * 32)
    (message,) = [r.message for r in decision.reasons if r.rule == "fail_closed.image_error"]
    assert message == f"image could not be scored ({error}); never released"
    assert (message.count("("), message.count(")"), message.count("never released")) == (1, 1, 1)


def test_hash_files_streams_each_file_and_says_why_one_cannot_be_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\x00\x01" * 3_000_000)  # read in several chunks
    ticks: list[None] = []
    found = hash_files(
        [str(big), str(tmp_path / "none.png"), str(tmp_path)], advance=lambda: ticks.append(None)
    )
    assert found[str(big)] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert isinstance(found[str(tmp_path / "none.png")], FileNotFoundError)
    assert isinstance(found[str(tmp_path)], IsADirectoryError)
    assert len(ticks) == 3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_at_a_listed_path_is_there_but_not_read(tmp_path: Path) -> None:
    """open() of a FIFO blocks until a writer comes: decide hung, in a worker thread SIGTERM does not
    stop. Something is at the path, so the row is held, as for a file that cannot be read."""
    write_manifest(tmp_path / "m.csv", [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    fifo = tmp_path / "a.png"
    os.mkfifo(fifo)
    found = unblocked(fifo, lambda: hash_files([str(fifo)]))
    assert isinstance(found, dict) and isinstance(found[str(fifo)], OSError)
    assert found[str(fifo)].strerror == "not a regular file: a FIFO"
    out, done = unblocked(  # type: ignore[misc]
        fifo, lambda: redeclare([_row(str(fifo))], read_declarations(tmp_path / "m.csv"))
    )
    assert out[0].error == UNREADABLE_NOW and out[0].score is None
    assert done.unreadable == {"S1": [(str(fifo), "not a regular file: a FIFO")]}


def test_an_error_hash_files_returns_holds_no_frame(tmp_path: Path) -> None:
    """Its traceback held the pool worker's frame and the future holding the error, a cycle only the
    cyclic collector frees: a few MB at 200,000 missing files (bench_resume.py, session 37)."""
    found = hash_files([str(tmp_path / "none.png")])
    assert isinstance(found[str(tmp_path / "none.png")], FileNotFoundError)
    assert found[str(tmp_path / "none.png")].__traceback__ is None


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "listed-content-test-audit-secret")
    monkeypatch.setenv("COLUMNS", "1000")  # a path the console wraps is no longer found whole
    return tmp_path


def _decide(env: Path, verdicts: Path, manifest: Path, policy: Path) -> tuple[dict[str, dict], str]:
    from pipeline.cli import app, run

    out = env / "d.jsonl"
    argv = ["decide", "--verdicts", str(verdicts), "--policy", str(policy), "--manifest", str(manifest)]
    assert run(app, [*argv, "--out", str(out), "--overwrite"]) == 0
    return {d["shipment_id"]: d for d in map(json.loads, out.read_text().splitlines())}


@pytest.mark.slow
def test_a_picture_scanned_again_under_its_name_after_scoring_is_held(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: rows the scorer wrote, then the scanner wrote a new picture over one listed file.
    Matched by path alone, the shipment was released on the old picture's score."""
    from pipeline.cli import app, run

    model = tiny_model_dir(env / "models")
    arc = env / "arc"
    a, b, c = write_png(arc / "a.png", 40), write_png(arc / "b.png", 60), write_png(arc / "c.png", 80)
    manifest = env / "m.csv"
    write_manifest(
        manifest,
        [
            {"path": str(a), "shipment_id": "S1", "cargo_type": "bulk_ore"},
            {"path": str(b), "shipment_id": "S2", "cargo_type": "bulk_ore"},
            {"path": str(c), "shipment_id": "S3", "cargo_type": "bulk_ore"},
        ],
    )
    verdicts = env / "rows.jsonl"
    assert run(app, ["score", str(manifest), "--model", str(model), "--out", str(verdicts)]) == 0
    policy = env / "p.yaml"  # every scored picture released: only the content check holds one
    policy.write_text(
        "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 1.0, hold_threshold: 1.0}\n"
        "random_audit: {rate: 0.0001}\n"
    )
    before = _decide(env, verdicts, manifest, policy)
    assert {s: d["tier"] for s, d in before.items()} == {"S1": "RELEASE", "S2": "RELEASE", "S3": "RELEASE"}
    capsys.readouterr()
    write_png(a, 200)  # a new scan under the old name
    b.write_bytes(b.read_bytes())  # written again, the same bytes
    c.unlink()  # archived away
    after = _decide(env, verdicts, manifest, policy)
    said = " ".join(capsys.readouterr().err.split())
    assert {s: d["tier"] for s, d in after.items()} == {
        "S1": "REMOTE_INSPECTION",
        "S2": "RELEASE",
        "S3": "RELEASE",
    }
    assert [i["error"] for i in after["S1"]["images"]] == [CHANGED]
    assert "1 row(s) of pictures --manifest lists are of another picture than the file at" in said
    assert f"{str(a)!r} of 'S1' first" in said
    assert "1 row(s) of pictures --manifest lists were decided on their scores as recorded" in said
    assert f"{str(c)!r} of 'S3' first" in said


def test_a_moved_row_held_for_its_file_is_not_said_decided_with_its_score(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The moved rows' warning said each was decided "with their score", one held for its file too."""

    (env / "a.png").write_bytes(b"first scan")
    s9 = {"shipment_id": "S9", "declaration": {"shipment_id": "S9", "cargo_type": "bulk_ore"}}
    old = hashlib.sha256(b"first scan").hexdigest()
    verdicts = env / "rows.jsonl"  # scored under S9, listed under S1 now
    verdicts.write_text(scored_line(_row(str(env / "a.png"), sha256=old).model_copy(update=s9)))
    run_finished(verdicts)
    manifest = env / "m.csv"
    write_manifest(manifest, [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    policy = env / "p.yaml"
    policy.write_text(
        "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"
        "random_audit: {rate: 0.0001}\n"
    )
    assert _decide(env, verdicts, manifest, policy)["S1"]["tier"] == "RELEASE"
    said = " ".join(capsys.readouterr().err.split())
    assert "decided under the shipment listing them, with their score, and no longer count" in said
    (env / "a.png").write_bytes(b"a new scan")
    assert _decide(env, verdicts, manifest, policy)["S1"]["tier"] == "REMOTE_INSPECTION"
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "decided under the shipment listing them, with their score where it still stands (1 held for the "
        "file at their path, said above), and no longer count" in said
    )


def test_decide_help_says_which_listed_files_are_read_and_what_one_gone_is_decided_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import app, run

    monkeypatch.setenv("COLUMNS", "1000")
    assert run(app, ["decide", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "one no longer there at all (archived away) is decided on its row, and said" in out
    assert "A row that failed to score is never released and its file is not read" in out


@pytest.mark.parametrize("finished", [True, False])  # rows a killed run left are checked the same
def test_rows_of_a_finished_or_killed_run_are_held_on_a_file_written_over(env: Path, finished: bool) -> None:

    (env / "a.png").write_bytes(b"first scan")
    (env / "b.png").write_bytes(b"other scan")
    rows = [
        _row(str(env / name)).model_copy(
            update={
                "shipment_id": shipment,
                "sha256": hashlib.sha256((env / name).read_bytes()).hexdigest(),
                "declaration": {"shipment_id": shipment, "cargo_type": "bulk_ore"},
                # a killed run's as a scorer writes them today: rows naming no run, no record
                # vouching for them, are held whatever their pictures
                "run_id": None if finished else "20261208T000000.000000Z-00000000000000aa",
            }
        )
        for name, shipment in (("a.png", "S1"), ("b.png", "S2"))
    ]
    verdicts = env / "rows.jsonl"
    verdicts.write_text("".join(map(scored_line, rows)))
    if finished:
        run_finished(verdicts)
    manifest = env / "m.csv"
    write_manifest(
        manifest,
        [
            {"path": n, "shipment_id": s, "cargo_type": "bulk_ore"}
            for n, s in (("a.png", "S1"), ("b.png", "S2"))
        ],
    )
    policy = env / "p.yaml"
    policy.write_text(
        "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"
        "random_audit: {rate: 0.0001}\n"
    )
    assert {s: d["tier"] for s, d in _decide(env, verdicts, manifest, policy).items()} == {
        "S1": "RELEASE",
        "S2": "RELEASE",
    }
    (env / "a.png").write_bytes(b"a new scan")
    assert {s: d["tier"] for s, d in _decide(env, verdicts, manifest, policy).items()} == {
        "S1": "REMOTE_INSPECTION",
        "S2": "RELEASE",
    }


def test_a_hold_for_a_file_written_over_is_not_indexed_as_made_on_the_old_picture(env: Path) -> None:
    """The audit store indexes each decided image's hashes as the picture its decision was made on.
    A row held because its file was written over kept the old picture's sha256 and phash, so the old
    bytes sent again later were found in the held shipment and carried its hold
    (override.image_held_before on fail_closed.image_error): raised a tier for a picture never
    judged. Sent again after the hold, they are decided as they would have been before it."""

    from pipeline.cli import app, run

    old = hashlib.sha256(b"first scan").hexdigest()
    phash = "0" * 80  # the scorer's perceptual hash: a near-copy is found by it
    rows = env / "rows.jsonl"
    rows.write_text(scored_line(_row(str(env / "a.png"), sha256=old).model_copy(update={"phash": phash})))
    later = env / "rows4.jsonl"  # the old a.png's bytes, sent again in S4
    s4 = {"shipment_id": "S4", "declaration": {"shipment_id": "S4", "cargo_type": "bulk_ore"}}
    later.write_text(
        scored_line(_row(str(env / "c.png"), sha256=old).model_copy(update={"phash": phash, **s4}))
    )
    for verdicts in (rows, later):
        run_finished(verdicts)
    manifest = env / "m.csv"
    write_manifest(manifest, [{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    policy = env / "p.yaml"  # an error holds at physical inspection: a hold carried over raises a tier
    policy.write_text(
        "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.5, hold_threshold: 0.8}\n"
        "random_audit: {rate: 0.0001}\nfail_closed: {image_error: PHYSICAL_INSPECTION}\n"
    )

    def decide(verdicts: Path, db: Path, *more: str) -> dict:
        out = env / "d.jsonl"
        argv = ["decide", "--verdicts", str(verdicts), "--policy", str(policy), "--out", str(out)]
        assert run(app, [*argv, "--audit-db", f"sqlite:///{db}", "--overwrite", *more]) == 0
        return json.loads(out.read_text().splitlines()[0])

    before = decide(later, env / "before.db")
    (env / "a.png").write_bytes(b"a new scan")  # written over after scoring, before S1 was decided
    held = decide(rows, env / "audit.db", "--manifest", str(manifest))
    assert held["tier"] == "PHYSICAL_INSPECTION" and [i["error"] for i in held["images"]] == [CHANGED]
    assert [(i["sha256"], i["phash"]) for i in held["images"]] == [(None, None)]  # no picture's
    after = decide(later, env / "audit.db")
    assert (after["tier"], sorted(r["rule"] for r in after["reasons"])) == (
        before["tier"],
        sorted(r["rule"] for r in before["reasons"]),
    )


@pytest.mark.parametrize(
    ("second_model", "vouched", "held"),
    [
        ("ore-m0", False, True),  # an older model's row of the same picture put among today's
        ("ore-m1", False, False),  # one model: a run's rows
        ("ore-m0", True, False),  # a record vouches for the rows as written
    ],
    ids=["two-models-no-record", "one-model", "two-models-vouched"],
)
def test_rows_of_one_cargo_type_naming_two_models_hold_where_no_record_vouches_for_them(
    tmp_path: Path, second_model: str, vouched: bool, held: bool
) -> None:
    """A run scores a cargo type with one model (a resume with another is refused): an older
    model's sealed row of the same, unchanged picture (its sha256 matched), put in place of today's
    with the record removed, was decided on its lower score and released."""
    listed = [{"path": n, "shipment_id": "S1", "cargo_type": "bulk_ore"} for n in ("a.png", "b.png")]
    write_manifest(tmp_path / "m.csv", listed)
    rows = [_row(str(tmp_path / "a.png")), _row(str(tmp_path / "b.png"))]
    rows[1] = rows[1].model_copy(update={"model_id": second_model})
    found = {str((tmp_path / n).resolve()): OLD for n in ("a.png", "b.png")}
    out, done = redeclare(
        rows, read_declarations(tmp_path / "m.csv"), hold_unscored=not vouched, content=lambda _: found
    )
    assert [r.error for r in out] == ([MIXED_MODELS] * 2 if held else [None, None])
    assert [r.score for r in out] == ([None, None] if held else [0.1, 0.1])
    assert done.mixed_models == ({"bulk_ore": ["ore-m0", "ore-m1"]} if held else {})


def test_a_file_larger_than_the_largest_image_accepted_is_not_read(tmp_path: Path) -> None:
    """A path in the rows may name any file: a huge one was read to its end (hours, on a disk image),
    though the scorer refuses a picture over max_image_bytes, so no such file is one scored."""
    fits, over = tmp_path / "fits.png", tmp_path / "over.png"
    fits.write_bytes(b"x" * 1000)
    with over.open("wb") as fh:
        fh.truncate(1001)
    found = hash_files([str(fits), str(over)], max_bytes=1000)
    assert found[str(fits)] == hashlib.sha256(b"x" * 1000).hexdigest()
    assert isinstance(found[str(over)], OSError) and found[str(over)].errno == errno.EFBIG
    assert "larger than the largest image accepted (1000 bytes, CLEARSIGHT_MAX_IMAGE_BYTES)" in str(
        found[str(over)].strerror
    )


def test_no_more_than_the_limit_is_read_of_a_file_whose_size_says_less() -> None:
    """A file still growing (appended to while it is read), or one of /proc (its size 0), holds more
    than its size said: read to its end, one appended to for ever was never done."""
    status = "/proc/self/status"
    assert os.stat(status).st_size == 0 and len(Path(status).read_bytes()) > 10
    found = hash_files([status], max_bytes=10)
    assert isinstance(found[status], OSError) and found[status].errno == errno.EFBIG


def test_what_is_not_a_regular_file_is_refused_before_it_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a device does things of its own (a tape rewinds, a watchdog arms, a terminal becomes
    the process's): a row naming one was opened, then refused."""
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: str, *args: object, **kw: object) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording_open)
    found = hash_files(["/dev/zero", "/dev/null", str(tmp_path)])
    assert [getattr(found[p], "strerror", None) for p in ("/dev/zero", "/dev/null")] == [
        "not a regular file: a character device"
    ] * 2
    assert isinstance(found[str(tmp_path)], IsADirectoryError)
    assert opened == []
