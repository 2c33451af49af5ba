"""`clearsight score --resume` reads each kept row's picture again: a file written over with a new scan
between the killed run and the resume is scored again, never kept on its old row
(pipeline.score.kept_content)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import FakePredictor, tiny_model_dir, write_png  # noqa: E402

from datasets.manifest import write_manifest  # noqa: E402
from pipeline.score import ImageTask, LocalEngine, ModelRouter, iter_rows, score_to_file  # noqa: E402
from pipeline.score.batch import earlier_paths_of, earlier_printable_path  # noqa: E402
from pipeline.score.completion import completion_path  # noqa: E402
from pipeline.score.done import SCORED  # noqa: E402
from pipeline.score.kept_content import KeptContent  # noqa: E402
from pipeline.score.runner import heatmap_name  # noqa: E402
from pipeline.score.summary import ScoreSummary  # noqa: E402
from pipeline.score.writer import open_output  # noqa: E402
from pipeline.verdicts import ImageVerdict  # noqa: E402


def _engine() -> LocalEngine:
    return LocalEngine(ModelRouter([FakePredictor()]))  # type: ignore[list-item]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _overlay_name(path: Path, out: Path) -> str:
    """The name of the overlay the fake draws of the picture at ``path`` now, for the output ``out``."""
    return heatmap_name(str(path), _sha256(path), "fake-bulk_ore", str(out.resolve()))


def _rows(out: Path) -> dict[str, list[ImageVerdict]]:
    found: dict[str, list[ImageVerdict]] = {}
    for row in iter_rows(out):
        found.setdefault(Path(row.path).name, []).append(row)
    return found


def _written_over(a: Path) -> None:
    write_png(a, 200)  # a new scan under the old name


def _same_bytes_again(a: Path) -> None:
    a.write_bytes(a.read_bytes())


def _archived_away(a: Path) -> None:
    a.unlink()


def _a_folder_now(a: Path) -> None:
    a.unlink()
    a.mkdir()


def _untouched(a: Path) -> None:
    pass


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
@pytest.mark.parametrize(
    ("change", "kept", "row_now", "said"),
    [
        (_untouched, True, "old", None),
        (_same_bytes_again, True, "old", None),
        (_written_over, False, "new", "changed"),
        # nothing to check the row against: an earlier run's row of the name could stand in its place
        (_archived_away, False, "error", "absent"),
        (_a_folder_now, False, "error", "unreadable"),  # something there that may be a new scan
    ],
    ids=["untouched", "same-bytes-again", "written-over", "archived-away", "a-folder-now"],
)
def test_a_kept_row_stands_only_on_the_bytes_it_was_scored_on(
    tmp_path: Path,
    suffix: str,
    change: Callable[[Path], None],
    kept: bool,
    row_now: str,
    said: str | None,
) -> None:
    a, b = write_png(tmp_path / "arc" / "a.png", 40), write_png(tmp_path / "arc" / "b.png", 60)
    old = _sha256(a)
    tasks = [ImageTask(str(a), shipment_id="S1"), ImageTask(str(b), shipment_id="S2")]
    out = tmp_path / f"rows{suffix}"
    score_to_file(tasks, _engine(), out)
    change(a)
    summary = score_to_file(tasks, _engine(), out, resume=True)
    rows = _rows(out)
    assert len(rows["a.png"]) == 1 and len(rows["b.png"]) == 1  # never the old row beside the new one
    row = rows["a.png"][0]
    if row_now == "old":
        assert (row.sha256, row.score) == (old, pytest.approx(40 / 255))
    elif row_now == "new":
        assert (row.sha256, row.score) == (_sha256(a), pytest.approx(200 / 255))
    else:
        assert row.error is not None and row.score is None
    assert summary.skipped_done == (2 if kept else 1)
    assert summary.taken_out == (0 if kept else 1)
    assert summary.taken_out_absent == (1 if said == "absent" else 0)
    warnings = " ".join(summary.warnings())
    if said in ("changed", "unreadable", "absent"):
        assert (
            "1 row(s) of the earlier run were taken out of the output, their file changed since it was "
            in warnings
        )
        assert f"{a}, for one" in warnings
    if said == "absent":
        assert f"{a}, for one: no file is at its path now (archived or moved away" in warnings
    assert completion_path(out).exists()  # every input has its row


def test_a_row_without_a_sha256_is_scored_again_while_its_file_is_there(tmp_path: Path) -> None:
    a = write_png(tmp_path / "a.png", 40)
    out = tmp_path / "rows.jsonl"
    score_to_file([ImageTask(str(a))], _engine(), out)
    row = next(iter_rows(out)).model_copy(update={"sha256": None})  # as a version without it wrote
    out.write_text(row.model_dump_json() + "\n")
    summary = score_to_file([ImageTask(str(a))], _engine(), out, resume=True)
    assert (summary.taken_out, summary.scored) == (1, 1)
    assert [r.sha256 for r in iter_rows(out)] == [_sha256(a)]
    assert "the row has no sha256 to compare its file with" in " ".join(summary.warnings())


def test_a_row_that_failed_to_score_is_not_read_again(tmp_path: Path) -> None:
    """It is never released as it is; --retry-errors scores it again, as before."""
    a = tmp_path / "a.png"
    a.write_bytes(b"not a picture")
    out = tmp_path / "rows.jsonl"
    score_to_file([ImageTask(str(a))], _engine(), out)
    write_png(a, 40)
    summary = score_to_file([ImageTask(str(a))], _engine(), out, resume=True)
    assert (summary.taken_out, summary.skipped_done, summary.kept_errors) == (0, 1, 1)
    again = score_to_file([ImageTask(str(a))], _engine(), out, resume=True, retry_errors=True)
    assert (again.scored, [r.sha256 for r in iter_rows(out)]) == (1, [_sha256(a)])


def test_a_picture_under_two_shipments_is_read_once_and_scored_again_for_each(tmp_path: Path) -> None:
    a, b = write_png(tmp_path / "a.png", 40), write_png(tmp_path / "b.png", 60)
    tasks = [ImageTask(str(a), "S1"), ImageTask(str(a), "S2"), ImageTask(str(b), "S2")]
    out = tmp_path / "rows.jsonl"
    score_to_file(tasks, _engine(), out)
    write_png(a, 200)
    asked: list[list[str]] = []

    def content(paths: object) -> dict[str, str]:
        asked.append(sorted(paths))  # type: ignore[call-overload]
        return {p: _sha256(Path(p)) for p in asked[-1]}

    check = KeptContent(content=content)
    writer, done = open_output(out, resume=True, overwrite=False, content=check)
    writer.close()
    assert asked == [sorted([str(a), str(b)])]
    assert (check.changed, sorted(check.stale), len(done)) == (2, [0, 1], 1)
    summary = score_to_file(tasks, _engine(), out, resume=True)
    assert (summary.scored, summary.skipped_done) == (2, 1)
    rows = _rows(out)
    assert sorted((r.shipment_id, r.sha256) for r in rows["a.png"]) == [
        ("S1", _sha256(a)),
        ("S2", _sha256(a)),
    ]


def test_a_row_taken_out_of_a_picture_this_run_does_not_list_leaves_no_completion_record(
    tmp_path: Path,
) -> None:
    """Not scored again (not given), so this run cannot say every picture of the earlier run has its
    row; said, as kept rows it does not list are."""
    a, b = write_png(tmp_path / "a.png", 40), write_png(tmp_path / "b.png", 60)
    out = tmp_path / "rows.jsonl"
    score_to_file([ImageTask(str(a), "S1"), ImageTask(str(b), "S2")], _engine(), out)
    write_png(a, 200)
    summary = score_to_file([ImageTask(str(b), "S2")], _engine(), out, resume=True)
    assert (summary.taken_out, summary.taken_out_unlisted, summary.kept_unlisted) == (1, 1, 0)
    assert sorted(_rows(out)) == ["b.png"] and not completion_path(out).exists()
    assert "1 of them are of pictures this run's inputs do not list" in " ".join(summary.warnings())


def test_the_kept_pictures_are_all_read_before_the_first_image_is_handled(tmp_path: Path) -> None:
    """checked_all ends the reading's progress line and starts the scoring's clock."""
    a, b, c = (write_png(tmp_path / f"{n}.png", 40) for n in "abc")
    out = tmp_path / "rows.jsonl"
    score_to_file([ImageTask(str(a)), ImageTask(str(b))], _engine(), out)
    events: list[str] = []
    score_to_file(
        [ImageTask(str(p)) for p in (a, b, c)],
        _engine(),
        out,
        resume=True,
        advance=lambda: events.append("advance"),
        checked=lambda: events.append("checked"),
        checked_all=lambda: events.append("all"),
    )
    assert events == ["checked", "checked", "all", "advance", "advance", "advance"]


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("changed", "its file holds other bytes than the row's sha256 (a new scan written over the name)"),
        (
            "unreadable",
            "its file is there but cannot be read, so whether it is the picture scored cannot be told",
        ),
        ("unhashed", "the row has no sha256 to compare its file with"),
        (
            "absent",
            "no file is at its path now (archived or moved away since it was scored?), so whether the "
            "row is of the picture scored there cannot be told, and a resume vouches only for rows it "
            "checked; a listed picture is scored again, an error row while its file is not there, which "
            "holds its shipment: score it from where it lies now",
        ),
    ],
)
def test_what_is_said_of_the_rows_taken_out_is_true_of_each_reason(how: str, why: str) -> None:
    """It said their pictures were "scored again", then that some were not, and that "the file at
    their path is not the picture scored" of an unreadable file and of a row without a sha256; the
    table's label said "their file is another picture now" of them too."""
    from rich.console import Console

    summary = ScoreSummary(taken_out=3, taken_out_example=("/arc/a.png", how), taken_out_unlisted=1)
    (said,) = [w for w in summary.warnings() if "taken out" in w]
    assert said == (
        "3 row(s) of the earlier run were taken out of the output, their file changed since it was "
        "scored, unreadable, no longer there, or without a sha256 in the row to compare it with, and "
        "their pictures "
        f"scored again where this run lists them: /arc/a.png, for one: {why}; 1 of them are of pictures "
        "this run's inputs do not list, not scored again, so no completion record was written: resume "
        "with the inputs the earlier run was given"
    )
    console = Console(width=200, record=True)
    for table in summary.tables():
        console.print(table)
    (line,) = [x for x in console.export_text().splitlines() if "taken out" in x]
    assert "rows taken out on resume (file changed, unreadable, or no sha256)" in line and "3" in line


def _truncated(a: Path) -> None:
    a.write_bytes(b"a new scan, truncated in transfer")


@pytest.mark.parametrize(
    ("change", "listed", "overlay"),
    [
        (_written_over, True, "new"),  # scored again: its overlay written anew under its name
        (_truncated, True, None),  # an error row now: no overlay
        (_written_over, False, None),  # not scored again
    ],
    ids=["scored-again", "an-error-now", "not-listed"],
)
def test_a_row_taken_out_takes_its_overlay_with_it(
    tmp_path: Path, change: Callable[[Path], None], listed: bool, overlay: str | None
) -> None:
    """The old picture's overlay stayed under the picture's overlay name, named by no row."""
    a, b = write_png(tmp_path / "arc" / "a.png", 40), write_png(tmp_path / "arc" / "b.png", 60)
    out, heat = tmp_path / "rows.jsonl", tmp_path / "heat"
    tasks = [ImageTask(str(a), "S1"), ImageTask(str(b), "S2")]
    score_to_file(tasks, _engine(), out, heatmap_dir=heat)
    was = heat / _overlay_name(a, out)
    old = was.read_bytes()
    change(a)
    summary = score_to_file(tasks if listed else tasks[1:], _engine(), out, heatmap_dir=heat, resume=True)
    assert summary.taken_out == 1
    named = {Path(r.heatmap).name for r in iter_rows(out) if r.heatmap}
    assert sorted(p.name for p in heat.iterdir()) == sorted(named)  # none left that no row names
    assert not was.exists()
    if overlay == "new":
        assert (heat / _overlay_name(a, out)).read_bytes() != old
    else:
        assert not (heat / _overlay_name(a, out)).exists()


def test_only_the_overlay_the_run_names_for_a_row_taken_out_is_removed(tmp_path: Path) -> None:
    """A row's heatmap is text the output holds: one naming a file outside the run's heatmaps folder,
    or another name in it, is never followed."""
    a, b = write_png(tmp_path / "arc" / "a.png", 40), write_png(tmp_path / "arc" / "b.png", 60)
    out, heat = tmp_path / "rows.jsonl", tmp_path / "heat"
    tasks = [ImageTask(str(a), "S1"), ImageTask(str(b), "S2")]
    score_to_file(tasks, _engine(), out, heatmap_dir=heat)
    outside = write_png(tmp_path / "keep" / "x.png", 1)
    other = heat / _overlay_name(b, out)  # b's overlay, which b's row names
    for named in (outside, other):
        rows = [
            r.model_copy(update={"heatmap": str(named)}) if r.path == str(a) else r for r in iter_rows(out)
        ]
        out.write_text("".join(r.model_dump_json() + "\n" for r in rows))
        write_png(a, 200 if named == outside else 100)
        assert score_to_file(tasks, _engine(), out, heatmap_dir=heat, resume=True).taken_out == 1
        assert named.exists()
    assert (heat / _overlay_name(a, out)).exists()  # a's overlay: written anew as it was scored again


def test_an_overlay_a_kept_row_names_stays_when_another_row_of_its_picture_is_taken_out(
    tmp_path: Path,
) -> None:
    """A picture under two shipments has one overlay name: S1's row, scored on the old scan, is taken
    out; S2's, scored on the new one (the scan written over between the two) and kept, names that
    file, which was removed with S1's row."""
    a, heat = write_png(tmp_path / "arc" / "a.png", 40), tmp_path / "heat"
    out, later = tmp_path / "rows.jsonl", tmp_path / "later.jsonl"
    score_to_file([ImageTask(str(a), "S1")], _engine(), out, heatmap_dir=heat)
    write_png(a, 200)  # a new scan, within the one run
    score_to_file([ImageTask(str(a), "S2")], _engine(), later, heatmap_dir=heat)
    out.write_text(out.read_text() + later.read_text())  # that run's rows: S1 old, S2 new
    summary = score_to_file([ImageTask(str(a), "S2")], _engine(), out, heatmap_dir=heat, resume=True)
    assert (summary.taken_out, summary.skipped_done) == (1, 1)
    (kept,) = iter_rows(out)
    assert kept.shipment_id == "S2" and kept.heatmap and Path(kept.heatmap).exists()


_TYPED = [b"caf\\xe9.png", b"\\x41\xff.png"]
"""Names an earlier version wrote unescaped (:func:`earlier_printable_path`): one typed with a
backslash, x, e, 9; one typed ``\\x41`` and the byte 0xFF (no UTF-8)."""


def _named(folder: Path, name: bytes, value: int) -> Path:
    """A flat PNG of ``value`` at ``folder``/``name`` (cv2 writes no name that is not UTF-8)."""
    png = write_png(folder.parent / "png" / f"{value}.png", value).read_bytes()
    path = Path(os.fsdecode(bytes(folder) + b"/" + name))
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


@pytest.mark.parametrize(
    ("name", "files", "read"),
    [
        # caf<0xE9>.png, today's name of the text, is not there: the typed one is read too
        (b"caf\\xe9.png", [b"caf\\xe9.png"], [b"caf\xe9.png", b"caf\\xe9.png"]),
        # never A<0xFF>.png: a \\x41 is typed, no escape an earlier version wrote
        (b"\\x41\xff.png", [b"\\x41\\xff.png", b"\\x41\xff.png"], [b"\\x41\\xff.png", b"\\x41\xff.png"]),
    ],
    ids=["typed", "typed-and-odd-byte"],
)
def test_a_row_an_earlier_version_wrote_of_a_typed_escape_reads_the_files_it_may_be_kept_for(
    tmp_path: Path, name: bytes, files: list[bytes], read: list[bytes]
) -> None:
    a = _named(tmp_path / "share", name, 40)
    text = earlier_printable_path(str(a))
    prefix = bytes(tmp_path / "share") + b"/"
    assert earlier_paths_of(text) == [os.fsdecode(prefix + f) for f in files]
    asked: list[str] = []

    def content(paths: object) -> dict[str, str | OSError]:
        asked.extend(paths)  # type: ignore[call-overload]
        return {p: _sha256(Path(p)) if os.path.lexists(p) else FileNotFoundError(2, "gone") for p in asked}

    check = KeptContent(content=content)
    check.note(b"row", text, "0" * 64, SCORED)
    check.finish()
    assert sorted(asked) == sorted(os.fsdecode(prefix + f) for f in read)
    assert (check.changed, check.absent, list(check.stale)) == (1, 0, [0])


def test_a_name_of_a_typed_high_escape_and_an_odd_byte_is_scored_again_not_kept_unread(
    tmp_path: Path,
) -> None:
    """\\xe9<0xFF>.png: its text as an earlier version wrote it is that of 2**n names; the row is
    kept for none of them that the content check does not read: the picture is scored again (and the
    row, none of the names it reads there, taken out: its picture not listed, no record)."""
    a = _named(tmp_path / "share", b"\\xe9\xff.png", 40)
    text = earlier_printable_path(str(a))
    assert str(a) not in earlier_paths_of(text)
    out = tmp_path / "rows.jsonl"
    score_to_file([ImageTask(str(a), "S1")], _engine(), out)
    row = next(iter_rows(out)).model_copy(update={"path": text})
    out.write_text(row.model_dump_json() + "\n")
    _named(tmp_path / "share", b"\\xe9\xff.png", 200)
    summary = score_to_file([ImageTask(str(a), "S1")], _engine(), out, resume=True)
    assert (summary.scored, summary.skipped_done, summary.kept_unlisted) == (1, 0, 0)
    assert (summary.taken_out_absent, summary.taken_out_unlisted) == (1, 1)
    assert [r.sha256 for r in iter_rows(out)] == [_sha256(a)] and not completion_path(out).exists()


def test_a_row_of_a_text_today_gives_a_file_that_is_there_reads_that_file_alone(tmp_path: Path) -> None:
    """caf<0xE9>.png is there: the row is its own (the resume keeps it for it, never for the typed
    caf\\xe9.png), so the typed one is not read."""
    share = tmp_path / "share"
    typed, latin = _named(share, b"caf\\xe9.png", 40), _named(share, b"caf\xe9.png", 60)
    asked: list[str] = []

    def content(paths: object) -> dict[str, str]:
        asked.extend(paths)  # type: ignore[call-overload]
        return {p: _sha256(Path(p)) for p in asked}

    check = KeptContent(content=content)
    check.note(b"row", earlier_printable_path(str(typed)), _sha256(latin), SCORED)
    check.finish()
    assert (asked, check.stale) == ([str(latin)], {})


@pytest.mark.parametrize("name", _TYPED, ids=["typed", "typed-and-odd-byte"])
@pytest.mark.parametrize(
    ("change", "taken_out", "absent"),
    [(_untouched, 0, 0), (_written_over, 1, 0), (_archived_away, 1, 1)],
    ids=["untouched", "written-over", "archived-away"],
)
def test_a_row_an_earlier_version_wrote_of_a_typed_escape_is_checked_against_its_picture(
    tmp_path: Path, name: bytes, change: Callable[[Path], None], taken_out: int, absent: int
) -> None:
    """The check read the text with every \\xNN as a byte, a file not there: the row was kept as
    archived away, and a new scan written over the picture was released on the old one's score."""
    a = _named(tmp_path / "share", name, 40)
    old = _sha256(a)
    task = ImageTask(str(a), "S1")
    out = tmp_path / "rows.jsonl"
    score_to_file([task], _engine(), out)
    row = next(iter_rows(out)).model_copy(update={"path": earlier_printable_path(str(a))})
    out.write_text(row.model_dump_json() + "\n")  # as a version before backslashes were escaped wrote it
    if change is _written_over:
        _named(tmp_path / "share", name, 200)
    else:
        change(a)
    summary = score_to_file([task], _engine(), out, resume=True, listed_only=True)
    assert (summary.taken_out, summary.taken_out_absent) == (taken_out, absent)
    assert (summary.scored, summary.errors) == (taken_out - absent, absent)
    (now,) = iter_rows(out)  # one row of the picture
    if absent:  # scored again: its file is not there
        assert now.error is not None and now.score is None
    elif taken_out:
        assert (now.sha256, now.score) == (_sha256(a), pytest.approx(200 / 255))
    else:
        assert (now.path, now.sha256) == (row.path, old)
    assert summary.taken_out_unlisted == 0 and completion_path(out).exists()  # listed: scored again


def test_a_row_taken_out_of_a_file_named_alike_is_not_the_typed_names(tmp_path: Path) -> None:
    """caf<0xE9>.png is scored and written over; the resume lists only the typed caf\\xe9.png, whose
    earlier text is that row's: the row is not the typed file's, and its picture, not listed, is not
    scored again, so no completion record (one was written, the row counted as listed)."""
    share = tmp_path / "share"
    latin, typed = _named(share, b"caf\xe9.png", 40), _named(share, b"caf\\xe9.png", 60)
    out = tmp_path / "rows.jsonl"
    score_to_file([ImageTask(str(latin), "S1")], _engine(), out)
    _named(share, b"caf\xe9.png", 200)  # a new scan over it
    summary = score_to_file([ImageTask(str(typed), "S1")], _engine(), out, resume=True)
    assert (summary.taken_out, summary.taken_out_unlisted, summary.scored) == (1, 1, 1)
    assert not completion_path(out).exists()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "resume-content-test-audit-secret")
    monkeypatch.setenv("COLUMNS", "1000")  # a path the console wraps is no longer found whole
    return tmp_path


def _tiny_model_and_two_scans(env: Path) -> tuple[Path, Path, tuple[int, float], tuple[int, float]]:
    """A tiny model, the folder of two probe pictures p<value>.png, and (value, score) of the one it
    scores lower (the old scan) and of the higher (the new)."""
    from pipeline.cli import app, run

    model = tiny_model_dir(env / "models")
    probe = env / "probe"
    for value in (40, 200):
        write_png(probe / f"p{value}.png", value)
    assert run(app, ["score", str(probe), "--model", str(model), "--out", str(env / "probe.jsonl")]) == 0
    scores = {Path(r.path).name: r.score or 0.0 for r in iter_rows(env / "probe.jsonl")}
    low, high = sorted(((int(n[1:-4]), s) for n, s in scores.items()), key=lambda v: v[1])
    assert high[1] - low[1] > 1e-4, scores
    return model, probe, low, high


def _policy(env: Path, lo: float, hi: float) -> Path:
    """A policy that releases the old scan's score and holds the new one's."""
    policy = env / "p.yaml"
    policy.write_text(
        f"policy_version: p\ncargo_types:\n  bulk_ore: {{release_threshold: {(lo + hi) / 2!r}, "
        "hold_threshold: 1.0}\nrandom_audit: {rate: 0.0001}\n"
    )
    return policy


@pytest.mark.slow
def test_a_kept_picture_scanned_again_before_the_resume_is_not_released_on_its_old_row(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: a run killed after scoring S1's and S2's pictures; the scanner wrote a new picture
    over S1's name; `--resume --policy` kept the old row and released S1 on the old picture's score."""
    from pipeline.cli import app, run

    model, probe, (low, lo), (high, hi) = _tiny_model_and_two_scans(env)
    arc = env / "arc"
    a, b, c = write_png(arc / "a.png", low), write_png(arc / "b.png", low), write_png(arc / "c.png", low)
    manifest = env / "m.csv"
    write_manifest(
        manifest,
        [
            {"path": str(p), "shipment_id": s, "cargo_type": "bulk_ore"}
            for p, s in ((a, "S1"), (b, "S2"), (c, "S3"))
        ],
    )
    policy = _policy(env, lo, hi)  # the old scan released, the new one held
    out = env / "rows.jsonl"
    argv = ["score", str(manifest), "--model", str(model), "--out", str(out), "--policy", str(policy)]
    assert run(app, argv) == 0
    decided = out.with_suffix(".decisions.jsonl")
    assert {d["shipment_id"]: d["tier"] for d in map(json.loads, decided.read_text().splitlines())} == {
        "S1": "RELEASE",
        "S2": "RELEASE",
        "S3": "RELEASE",
    }
    # as a run killed before it reached c.png leaves the output: its rows of a and b, no record
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(line for line in lines if "c.png" not in line))
    completion_path(out).unlink()
    decided.unlink()
    b_row = next(line for line in lines if "b.png" in line)
    shutil.copyfile(probe / f"p{high}.png", a)  # a new scan under the old name
    b.write_bytes(b.read_bytes())  # written again, the same bytes
    capsys.readouterr()
    assert run(app, [*argv, "--resume"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    tiers = {d["shipment_id"]: d for d in map(json.loads, decided.read_text().splitlines())}
    assert {s: d["tier"] for s, d in tiers.items()} == {
        "S1": "REMOTE_INSPECTION",
        "S2": "RELEASE",
        "S3": "RELEASE",
    }
    rows = _rows(out)
    assert [r.sha256 for r in rows["a.png"]] == [_sha256(a)]  # the new scan's row alone
    assert rows["a.png"][0].score == pytest.approx(hi, abs=1e-6)
    assert b_row in out.read_text()  # the same bytes: its row kept as it was
    assert "1 row(s) of the earlier run were taken out of the output" in said
    assert f"{a}, for one: its file holds other bytes than the row's sha256" in said
    assert completion_path(out).exists()


@pytest.mark.slow
def test_a_typed_escape_s_row_an_earlier_version_wrote_is_not_released_after_a_new_scan(
    env: Path,
) -> None:
    """End to end: S1's picture is named caf\\xe9.png (typed) and its row, as a version before
    backslashes were escaped wrote it, names it so; a new scan is written over it; `--resume --policy`
    read caf<0xE9>.png (not there) for it, kept the row as archived away and released S1."""
    from pipeline.cli import app, run

    model, probe, (low, lo), (high, hi) = _tiny_model_and_two_scans(env)
    a, b = write_png(env / "arc" / "caf\\xe9.png", low), write_png(env / "arc" / "b.png", low)
    manifest = env / "m.csv"
    write_manifest(
        manifest,
        [{"path": str(p), "shipment_id": s, "cargo_type": "bulk_ore"} for p, s in ((a, "S1"), (b, "S2"))],
    )
    out = env / "rows.jsonl"
    argv = [
        "score",
        str(manifest),
        "--model",
        str(model),
        "--out",
        str(out),
        "--policy",
        str(_policy(env, lo, hi)),
    ]
    assert run(app, argv) == 0
    rows = [
        r.model_copy(update={"path": earlier_printable_path(str(a))}) if r.path != str(b) else r
        for r in iter_rows(out)
    ]
    assert rows[0].path != rows[1].path and str(a) in {r.path for r in rows}  # the earlier version's text
    out.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    completion_path(out).unlink()
    out.with_suffix(".decisions.jsonl").unlink()
    shutil.copyfile(probe / f"p{high}.png", a)  # a new scan under the old name
    assert run(app, [*argv, "--resume"]) == 0
    decided = out.with_suffix(".decisions.jsonl").read_text().splitlines()
    assert {d["shipment_id"]: d["tier"] for d in map(json.loads, decided)} == {
        "S1": "REMOTE_INSPECTION",
        "S2": "RELEASE",
    }
    (now,) = _rows(out)["caf\\x5cxe9.png"]  # named as this version does
    assert (now.sha256, now.score) == (_sha256(a), pytest.approx(hi, abs=1e-6))
    assert completion_path(out).exists()  # its picture listed, and scored again
