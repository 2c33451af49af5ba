"""Output rows: format round trips, torn-tail recovery for --resume, the Parquet journal."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datasets.errors import DatasetFormatError, InputError
from pipeline.score.done import Done
from pipeline.score.writer import FIELDS, check_output, finish_output, iter_rows, journal_path, open_output
from pipeline.verdict_rows import to_cells
from pipeline.verdicts import ImageVerdict

ROWS = [
    ImageVerdict(
        path="/data/ship 1/a,b\"c'.png",
        sha256="ab" * 32,
        shipment_id="S-1",
        cargo_type="bulk_ore",
        score=0.1 + 0.2,  # 0.30000000000000004: floats must round-trip exactly
        label="good",
        anomaly_type=None,
        type_probabilities={"good": 0.75, "foreign_object": 0.25},
        threshold=0.5,
        hold_threshold=0.8,
        model_id="bulk_ore-lite0-3f2a9c1b",
        heatmap="/heat/0123.png",
        declaration={"trader_id": "T1", "radiation_alarm": False, "extra": {"hs_code": "2601"}},
        signal_log_odds={"one_class": -1.25, "patch_head": 0.1 + 0.2},
    ),
    ImageVerdict(
        path="/data/ünïcode\nnewline.png", error="ImageDecodeError: truncated", cargo_type="vacuum_pack"
    ),
    ImageVerdict(path="plain.png"),
]


def _holds(done: Done, rows: list[ImageVerdict]) -> bool:
    """``done`` holds exactly these rows (by image and shipment)."""
    return len(done) == len(rows) and all((row.path, row.shipment_id) in done for row in rows)


def _write(out: Path, rows: list[ImageVerdict]) -> None:
    writer, done = open_output(out, resume=out.exists() or journal_path(out).exists(), overwrite=False)
    with writer:
        for row in rows:
            writer.write(row)
    finish_output(out)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    _write(out, ROWS)
    assert list(iter_rows(out)) == ROWS


def test_csv_and_parquet_nest_as_json_strings(tmp_path: Path) -> None:
    _write(tmp_path / "out.parquet", ROWS[:1])
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == list(FIELDS)
    assert json.loads(table.column("type_probabilities")[0].as_py()) == {"foreign_object": 0.25, "good": 0.75}
    assert json.loads(table.column("signal_log_odds")[0].as_py()) == ROWS[0].signal_log_odds
    assert not journal_path(tmp_path / "out.parquet").exists()
    _write(tmp_path / "out.csv", ROWS[:1])
    header, line = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert header == ",".join(FIELDS)
    assert '"{""foreign_object"": 0.25, ""good"": 0.75}"' in line


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("cut", [1, 7, 20, 41])
def test_resume_cuts_a_torn_last_row(tmp_path: Path, suffix: str, cut: int) -> None:
    out = tmp_path / f"out{suffix}"
    _write(out, ROWS[:1])
    whole = out.read_bytes()
    # A crash while the second row was being written: only its first `cut` bytes reached the file.
    _write(tmp_path / f"full{suffix}", ROWS[:2])
    full = (tmp_path / f"full{suffix}").read_bytes()
    out.write_bytes(full[: len(whole) + cut])
    writer, done = open_output(out, resume=True, overwrite=False)
    writer.close()
    assert _holds(done, ROWS[:1])
    assert out.read_bytes() == whole
    _write(out, ROWS[1:])
    assert list(iter_rows(out)) == ROWS


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_cell_longer_than_csvs_own_limit_is_kept_on_resume(tmp_path: Path, suffix: str) -> None:
    """A declaration from a JSONL manifest may hold more than csv's 128 KiB a cell: read as a torn
    row, it cut every row after it."""
    long = ROWS[0].model_copy(update={"declaration": {"declared_goods": "x" * 200_000}})
    out = tmp_path / f"out{suffix}"
    _write(out, [long, *ROWS[1:]])
    before = out.read_bytes()
    writer, done = open_output(out, resume=True, overwrite=False)
    writer.close()
    assert _holds(done, ROWS) and out.read_bytes() == before
    assert list(iter_rows(out)) == [long, *ROWS[1:]]


def test_a_whole_last_line_that_does_not_parse_is_refused_not_cut(tmp_path: Path) -> None:
    """A crash leaves a last line without its newline; one with it is something else (a decisions
    file given as --out by mistake) and must not be truncated away."""
    out = tmp_path / "out.jsonl"
    _write(out, ROWS[:1])
    out.write_bytes(out.read_bytes() + b'{"shipment_id": "S1", "tier": "RELEASE"}\n')
    before = out.read_bytes()
    with pytest.raises(DatasetFormatError, match=r"out\.jsonl:2"):
        open_output(out, resume=True, overwrite=False)
    assert out.read_bytes() == before


def test_csv_row_torn_at_an_embedded_newline(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    _write(out, ROWS[:2])
    data = out.read_bytes()
    cut = data.index(b"newline.png") - 1  # just after the newline inside the quoted path
    out.write_bytes(data[:cut])
    writer, done = open_output(out, resume=True, overwrite=False)
    writer.close()
    assert _holds(done, ROWS[:1])
    assert list(iter_rows(out)) == ROWS[:1]


@pytest.mark.parametrize("name", ["/share/cr\rx.png", "\rstarts.png", "/share/crlf\r\nx.png"])
def test_a_csv_cell_holding_a_carriage_return_stays_one_row(tmp_path: Path, name: str) -> None:
    """Left unquoted, a name with a carriage return split its row in two for every reader: a row
    naming the folder with no score, another carrying the score, and a --resume that failed."""
    odd = ROWS[0].model_copy(update={"path": name})
    out = tmp_path / "out.csv"
    _write(out, [odd, ROWS[2]])
    assert list(iter_rows(out)) == [odd, ROWS[2]]
    with out.open(newline="", encoding="utf-8") as fh:  # any csv reader: one row per verdict
        assert [row[0] for row in csv.reader(fh)][1:] == [to_cells(odd)[0], "plain.png"]
    before = out.read_bytes()
    writer, done = open_output(out, resume=True, overwrite=False)
    writer.close()
    assert _holds(done, [odd, ROWS[2]]) and out.read_bytes() == before
    _write(out, ROWS[1:2])
    assert list(iter_rows(out)) == [odd, ROWS[2], ROWS[1]]


def test_csv_torn_header_starts_again(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_bytes(b"path,sha")
    writer, done = open_output(out, resume=True, overwrite=False)
    with writer:
        writer.write(ROWS[2])
    assert _holds(done, [])
    assert list(iter_rows(out)) == ROWS[2:]


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (".jsonl", b'{"path": "a.png"}\nnot json\n{"path": "b.png"}\n', r"out\.jsonl:2: not JSON"),
        (".csv", b"a,b,c\n1,2,3\n", r"header \['a', 'b', 'c'\] is not Clearsight's score header"),
    ],
)
def test_resume_refuses_a_file_that_is_not_a_score_output(
    tmp_path: Path, suffix: str, content: bytes, message: str
) -> None:
    out = tmp_path / f"out{suffix}"
    out.write_bytes(content)
    with pytest.raises(DatasetFormatError, match=message):
        open_output(out, resume=True, overwrite=False)


@pytest.mark.parametrize(("suffix", "kind"), [(".jsonl", "FIFO"), (".csv", "device"), (".parquet", "FIFO")])
def test_resume_refuses_an_output_or_journal_that_is_no_regular_file(
    tmp_path: Path, suffix: str, kind: str
) -> None:
    """Whoever can write the output's folder can put a FIFO at its name, or its journal's (a resume
    blocked reading it, forever), or a link to a device (``/dev/zero``: read as one endless row;
    ``/dev/null``: resumed as an empty output, the run's rows written into it): no run wrote those."""
    out = tmp_path / f"out{suffix}"
    there = journal_path(out) if suffix == ".parquet" else out
    if kind == "FIFO":
        os.mkfifo(there)
    else:
        there.symlink_to("/dev/null")
    said: list[BaseException | None] = []

    def resume() -> None:
        try:
            open_output(out, resume=True, overwrite=False)[0].close()
        except InputError as exc:
            said.append(exc)
        else:
            said.append(None)

    thread = threading.Thread(target=resume, daemon=True)
    thread.start()
    thread.join(timeout=60)  # no speed is measured: a blocked open never returns
    if thread.is_alive():
        os.close(os.open(there, os.O_WRONLY | os.O_NONBLOCK))  # the blocked reader gets EOF
        thread.join(timeout=60)
        pytest.fail(f"resuming {there} blocked until a writer came")
    assert f"output {str(there)!r} is not a regular file" in str(said[0])
    assert os.path.lexists(there)  # left for whoever put it there


@pytest.mark.parametrize(
    ("suffix", "content"),
    [
        (".csv", b"container MSCU1234567 held by officer 4411: seal number does not match the declaration"),
        (".jsonl", b'{"case": "C-2291", "officer": "4411", "finding": "undeclared cigarettes"}'),
        (".jsonl", b'{"path": "a.png", "note": "typed by hand"}'),
        (".csv", b"path,officer,finding"),  # starts as a header does, then is none
        (".csv", b'"case" C-2291\n'),  # a whole first line that is no CSV was cut too
        (".csv", b'"an unclosed quote\n'),
    ],
)
def test_resume_refuses_a_one_line_file_that_no_crash_of_ours_left(
    tmp_path: Path, suffix: str, content: bytes
) -> None:
    """A one-line file without a final newline was taken for a torn write and cut to 0 bytes: an
    unrelated note or case file named by mistake was emptied instead of refused."""
    out = tmp_path / f"out{suffix}"
    out.write_bytes(content)
    with pytest.raises(DatasetFormatError, match="not a Clearsight score output: its (only|first) line"):
        open_output(out, resume=True, overwrite=False)
    assert out.read_bytes() == content


@pytest.mark.parametrize(
    ("suffix", "torn"),
    [
        (".jsonl", b"{"),
        (".jsonl", b'{"pa'),
        (".jsonl", b'{"path":"/data/a.png","sha2'),
        (".csv", b"pat"),
        (".csv", b"path,sha256,shipment_id,"),
        (".csv", b"path,sha256,shipment_id,cargo_type,score,label,anomaly_type,type_probabilities,thr"),
        (".csv", b"path,sha256,cargo_type,sc"),  # an earlier version's header, without shipment_id
    ],
)
def test_resume_cuts_a_torn_first_row_or_header(tmp_path: Path, suffix: str, torn: bytes) -> None:
    """What a crash during the first write leaves is still cut, and the run starts the file again."""
    out = tmp_path / f"out{suffix}"
    out.write_bytes(torn)
    writer, done = open_output(out, resume=True, overwrite=False)
    with writer:
        writer.write(ROWS[2])
    assert _holds(done, [])
    assert list(iter_rows(out)) == ROWS[2:]


def _older_csv(out: Path, rows: list[ImageVerdict], dropped: tuple[str, ...], torn: bytes = b"") -> None:
    """A CSV output as an earlier version wrote it: without the columns ``dropped`` (added since)."""
    keep = [n for n, name in enumerate(FIELDS) if name not in dropped]
    lines = [[FIELDS[n] for n in keep]] + [[to_cells(row)[n] for n in keep] for row in rows]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    out.write_bytes(text.getvalue().encode("utf-8") + torn)


def test_resume_upgrades_an_older_versions_csv_without_losing_rows(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    old = [ROWS[0].model_copy(update={"signal_log_odds": None}), ROWS[1]]
    # written before scale_vs_training and signal_log_odds existed, cut by a crash in a third row
    _older_csv(out, old, ("scale_vs_training", "signal_log_odds"), torn=b"/data/c.png,ab")
    writer, done = open_output(out, resume=True, overwrite=False)
    with writer:
        writer.write(ROWS[2])
    assert _holds(done, ROWS[:2])
    assert out.read_text(encoding="utf-8").splitlines()[0] == ",".join(FIELDS)
    assert list(iter_rows(out)) == [*old, ROWS[2]]
    assert not list(tmp_path.glob("*.tmp"))


def test_an_older_csv_with_a_bad_row_before_the_end_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    _older_csv(out, ROWS, ("signal_log_odds",))
    lines = out.read_bytes().split(b"\n")
    lines[1] = b"a.png,too,few"  # corruption in the middle, not a crash at the end
    out.write_bytes(b"\n".join(lines))
    before = out.read_bytes()
    with pytest.raises(DatasetFormatError, match=r"out\.csv: a row with 3 cells before the end"):
        open_output(out, resume=True, overwrite=False)
    assert out.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_resume_refuses_a_header_with_the_columns_out_of_order(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("sha256,path\n" + "ab,a.png\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="is not Clearsight's score header"):
        open_output(out, resume=True, overwrite=False)


@pytest.mark.parametrize(
    ("header", "cells"),
    [
        (["path", "score", "score"], ["a.png", "0.95", "0.01"]),  # an older header, a column twice
        (["path", "sha256", "sha256", "shipment_id"], ["a.png", "ab", "cd", "S1"]),
        ([*FIELDS, "score"], [*to_cells(ROWS[0]), "0.01"]),  # today's, with one more
    ],
    ids=["older-score-twice", "older-hash-twice", "todays-and-one-more"],
)
def test_resume_refuses_a_header_with_a_column_twice(
    tmp_path: Path, header: list[str], cells: list[str]
) -> None:
    """An older header naming 'score' twice was taken, and the file rewritten under today's header
    with the last of the two scores (0.01, where a spreadsheet shows 0.95 first)."""
    out = tmp_path / "out.csv"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, cells])
    out.write_text(text.getvalue(), encoding="utf-8")
    repeated = next(name for name in header if header.count(name) > 1)
    with pytest.raises(DatasetFormatError) as info:
        open_output(out, resume=True, overwrite=False)
    assert str(info.value) == (
        f"{out}:1: duplicate column {repeated!r} (which cell holds the row's value cannot be told); "
        "pass --overwrite to replace the file"
    )
    assert out.read_text(encoding="utf-8") == text.getvalue() and not list(tmp_path.glob("*.tmp"))


def _retry_errors(out: Path) -> None:
    writer, _ = open_output(out, resume=True, overwrite=False, retry_errors=True)
    writer.close()


@pytest.mark.parametrize(
    ("name", "old_temporary", "before", "then", "expected"),
    [
        ("out.parquet", "out.parquet.tmp", [], lambda out: _write(out, ROWS), ROWS),
        (
            "out.parquet",
            "out.parquet.journal.jsonl.tmp",
            ROWS[:2],
            lambda out: _write(out, ROWS[2:]),  # the finished file back to a journal, to append
            ROWS,
        ),
        (
            "out.csv",
            "out.csv.upgrade.tmp",
            None,  # an earlier version's CSV (below), rewritten under today's header
            lambda out: _write(out, ROWS[:1]),
            [*ROWS[1:], ROWS[0]],
        ),
        ("out.jsonl", "out.jsonl.retry.tmp", ROWS, _retry_errors, [ROWS[0], ROWS[2]]),
        (
            "out.jsonl",
            "out.jsonl.retry.tmp",
            [ROWS[0], ROWS[2]],  # no error row to drop: the temporary file was removed
            _retry_errors,
            [ROWS[0], ROWS[2]],
        ),
    ],
    ids=["parquet-output", "parquet-resumed", "csv-upgrade", "retry-errors", "retry-errors-none"],
)
def test_a_file_named_like_an_old_temporary_file_is_left_alone(
    tmp_path: Path,
    name: str,
    old_temporary: str,
    before: list[ImageVerdict] | None,
    then: object,
    expected: list[ImageVerdict],
) -> None:
    """Each rewrite went through a fixed name beside the output (``out.parquet.tmp``,
    ``.upgrade.tmp``, ``.retry.tmp``, the journal's ``.tmp``): a file of that name (an audit store,
    a policy) was truncated and renamed onto the output, or removed."""
    out = tmp_path / name
    if before is None:
        _older_csv(out, ROWS[1:], ("signal_log_odds",))
    elif before:
        _write(out, before)
    precious = tmp_path / old_temporary
    precious.write_bytes(b"SQLite format 3\x00 the audit trail")
    then(out)  # type: ignore[operator]
    assert precious.read_bytes() == b"SQLite format 3\x00 the audit trail"
    assert list(iter_rows(out)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, old_temporary])


@pytest.mark.parametrize(
    "name",
    ["a" * 247 + ".parquet", "é" * 120 + ".parquet", "é" * 16 + "x.parquet"],
    ids=["ascii-255-bytes", "non-ascii-248-bytes", "short"],
)
def test_a_parquet_output_is_journalled_under_a_short_hidden_name(tmp_path: Path, name: str) -> None:
    """``OUT.journal.jsonl`` was 14 bytes longer than --out's name: one the file system takes failed
    on the journal ("File name too long"), and only a Parquet output did."""
    out = tmp_path / name
    journal = journal_path(out)
    assert (
        journal.parent == tmp_path
        and journal.name.startswith(".")
        and journal.name.endswith(".journal.jsonl")
    )
    assert len(os.fsencode(journal.name)) <= 60
    assert journal != journal_path(tmp_path / ("b" + name))  # one output's journal each
    writer, _ = open_output(out, resume=False, overwrite=False)
    with writer:
        writer.write(ROWS[0])
    assert journal.exists()  # killed before the conversion
    writer, done = open_output(out, resume=True, overwrite=False, retry_errors=True)
    with writer:
        for row in ROWS[1:]:
            writer.write(row)
    finish_output(out)
    assert _holds(done, ROWS[:1]) and list(iter_rows(out)) == ROWS
    assert [p.name for p in tmp_path.iterdir()] == [name]


def _earlier_journal(out: Path, rows: list[ImageVerdict]) -> Path:
    """The journal of a run an earlier version left unfinished, ``OUT.journal.jsonl``."""
    earlier = out.with_name(out.name + ".journal.jsonl")
    earlier.write_text("".join(row.model_dump_json() + "\n" for row in rows), encoding="utf-8")
    return earlier


def test_a_journal_an_earlier_version_left_is_resumed(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    earlier = _earlier_journal(out, ROWS[:2])
    with pytest.raises(InputError, match="out.parquet.journal.jsonl' already exists; pass --resume"):
        check_output(out, resume=False, overwrite=False)
    writer, done = open_output(out, resume=True, overwrite=False)
    with writer:
        writer.write(ROWS[2])
    finish_output(out)
    assert _holds(done, ROWS[:2]) and list(iter_rows(out)) == ROWS
    assert not earlier.exists() and [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_overwrite_removes_a_journal_an_earlier_version_left(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    earlier = _earlier_journal(out, ROWS[:2])
    _write_over(out, ROWS[2:])
    assert list(iter_rows(out)) == ROWS[2:]
    assert not earlier.exists() and [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def _write_over(out: Path, rows: list[ImageVerdict]) -> None:
    writer, _ = open_output(out, resume=False, overwrite=True)
    with writer:
        for row in rows:
            writer.write(row)
    finish_output(out)


def test_an_output_whose_name_is_too_long_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"its name is 256 bytes long, longer than the file system takes"):
        check_output(tmp_path / ("a" * 248 + ".parquet"), resume=False, overwrite=False)


def test_parquet_resume_from_journal_after_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer, _ = open_output(out, resume=False, overwrite=False)
    with writer:
        writer.write(ROWS[0])
    assert not out.exists() and journal_path(out).exists()  # killed before the conversion
    writer, done = open_output(out, resume=True, overwrite=False)
    with writer:
        writer.write(ROWS[1])
    finish_output(out)
    assert _holds(done, ROWS[:1])
    assert list(iter_rows(out)) == ROWS[:2]


def test_parquet_resume_after_a_finished_run_appends(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    _write(out, ROWS[:1])
    writer, done = open_output(out, resume=True, overwrite=False)
    with writer:
        writer.write(ROWS[2])
    finish_output(out)
    assert _holds(done, ROWS[:1])
    assert list(iter_rows(out)) == [ROWS[0], ROWS[2]]


def test_chunks_are_flushed_to_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer, _ = open_output(out, resume=False, overwrite=False)
    writer.chunk_rows = 2
    writer.flush_seconds = 3600.0
    writer.write(ROWS[0])
    assert out.read_bytes() == b""  # buffered: under a chunk, within the time
    writer.write(ROWS[1])
    assert len(out.read_bytes().splitlines()) == 2
    writer.close()


def test_an_output_folder_that_cannot_be_made_is_named_up_front(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "runs" / "rows.jsonl"
    with pytest.raises(InputError, match=r"cannot make its folder '.*/afile/runs' \(Not a directory\)$"):
        check_output(out, resume=False, overwrite=False)


def test_an_output_folder_that_takes_no_file_is_named_up_front() -> None:
    # os.access says yes to /proc: only making a file there tells; found when the first rows were
    # written, it failed after the models had loaded as an unexpected FileNotFoundError
    out = Path("/proc/clearsight-rows.jsonl")
    with pytest.raises(
        InputError,
        match=r"^output '/proc/clearsight-rows\.jsonl': no file can be made in its folder '/proc' \(",
    ):
        check_output(out, resume=False, overwrite=False)


FORMULAS = [
    ImageVerdict(path='=HYPERLINK("http://x").png', shipment_id="+SHP", cargo_type="bulk_ore", score=0.2),
    ImageVerdict(path="'quoted'.png", shipment_id="@SHP", error="-1 bytes read", model_id="-m"),
]


def test_csv_cells_never_start_a_formula_and_read_back_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "rows.csv"
    _write(out, FORMULAS)
    finish_output(out)
    with out.open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    texts = [row[name] for row in table for name in ("path", "shipment_id", "error", "model_id") if row[name]]
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in texts), texts
    assert table[0]["score"] == "0.2"  # numbers stay numbers
    assert list(iter_rows(out)) == FORMULAS
    writer, done = open_output(out, resume=True, overwrite=False)
    writer.close()
    assert _holds(done, FORMULAS)


def _resume(out: Path, *, retry_errors: bool = False) -> None:
    writer, _ = open_output(out, resume=True, overwrite=False, retry_errors=retry_errors)
    writer.close()
    finish_output(out)


@pytest.mark.parametrize(
    ("name", "before", "then"),
    [
        ("out.parquet", ROWS[:1], _resume),  # back to a journal, converted again
        ("out.jsonl", ROWS, lambda out: _resume(out, retry_errors=True)),
        ("out.csv", ROWS, lambda out: _resume(out, retry_errors=True)),
        ("out.csv", None, _resume),  # an earlier version's CSV, rewritten under today's header
    ],
    ids=["parquet-resumed", "jsonl-retry-errors", "csv-retry-errors", "csv-upgrade"],
)
@pytest.mark.usefixtures("umask_002")
def test_an_output_written_again_keeps_its_mode(
    tmp_path: Path, name: str, before: list[ImageVerdict] | None, then: object
) -> None:
    """Rewritten whole and renamed over, an output made readable by its owner alone (``chmod 600``)
    came back readable by the group (the umask's 0o664) after ``--resume``/``--retry-errors``."""
    out = tmp_path / name
    if before is None:
        _older_csv(out, ROWS, ("signal_log_odds",))
    else:
        _write(out, before)
    out.chmod(0o600)
    then(out)  # type: ignore[operator]
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.usefixtures("umask_002")
def test_the_journal_of_a_resumed_parquet_output_has_its_mode(tmp_path: Path) -> None:
    """The journal holds the output's rows while the resumed run appends to it."""
    out = tmp_path / "out.parquet"
    _write(out, ROWS[:1])
    out.chmod(0o600)
    writer, _ = open_output(out, resume=True, overwrite=False)
    with writer:
        assert oct(journal_path(out).stat().st_mode & 0o777) == oct(0o600)
    finish_output(out)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
@pytest.mark.usefixtures("umask_002")
def test_a_new_output_has_the_mode_the_umask_gives(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    _write(out, ROWS)
    assert oct(out.stat().st_mode & 0o777) == oct(0o664)


NOBODY = 65534
"""The unprivileged user a test runs as where the suite runs as root, which file modes never stop."""


@pytest.fixture
def nobodys_dir() -> Iterator[Path]:
    """A new folder that :func:`_as_unprivileged` may write: pytest's own are root's alone (0700)."""
    folder = Path(tempfile.mkdtemp(prefix="clearsight-nobody-"))
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    yield folder
    shutil.rmtree(folder)


def _as_unprivileged(check: Callable[[], None]) -> None:
    """Run ``check`` as a user whom file modes bind: as is, or, where the suite runs as root (CI
    does), in a forked child that has become :data:`NOBODY`; its failure fails the test."""
    if os.geteuid() != 0:
        check()
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its coverage is not collected
        os.close(read)
        status = 0
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            check()
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            status = 1
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        failure = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, failure


def test_a_read_only_parquet_output_can_be_resumed_by_its_owner(nobodys_dir: Path) -> None:
    """The journal took the output's 0444 and could not be opened to append (``Permission
    denied``); it stayed, and every later ``--resume`` failed the same way."""
    out = nobodys_dir / "out.parquet"

    def resume_twice() -> None:
        _write(out, ROWS[:1])
        out.chmod(0o444)
        _write(out, ROWS[1:2])  # resumed: the finished file back to a journal, converted again
        _write(out, ROWS[2:])
        assert list(iter_rows(out)) == ROWS
        assert oct(out.stat().st_mode & 0o777) == oct(0o444)
        assert [p.name for p in nobodys_dir.iterdir()] == ["out.parquet"]

    _as_unprivileged(resume_twice)


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "plain-run"])
def test_a_parquet_output_with_both_versions_journals_is_refused(tmp_path: Path, resume: bool) -> None:
    """--resume continued this version's journal and removed only it; the next --resume took the
    earlier version's, stale, and wrote the Parquet file over from it: rows lost."""
    out = tmp_path / "out.parquet"
    writer, _ = open_output(out, resume=False, overwrite=False)
    with writer:  # this version's run, killed before the conversion
        writer.write(ROWS[0])
        writer.write(ROWS[1])
    earlier = _earlier_journal(out, ROWS[:1])
    journal = journal_path(out)
    with pytest.raises(InputError) as refused:
        open_output(out, resume=resume, overwrite=False)
    message = str(refused.value)
    assert "two unfinished journals" in message and str(journal) in message and str(earlier) in message
    assert "remove one" in message and "--overwrite" in message
    assert journal.read_bytes().count(b"\n") == 2 and earlier.exists() and not out.exists()
    earlier.unlink()  # as told: the earlier version's removed, the run resumes from this version's
    _write(out, ROWS[2:])
    _write(out, [])
    assert list(iter_rows(out)) == ROWS


def test_overwrite_removes_both_versions_journals(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    journal_path(out).write_text(ROWS[1].model_dump_json() + "\n", encoding="utf-8")
    _earlier_journal(out, ROWS[:1])
    _write_over(out, ROWS[2:])
    assert list(iter_rows(out)) == ROWS[2:]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


@pytest.mark.parametrize(
    ("name", "blamed"),
    [
        (lambda tmp: tmp.joinpath(*["d" * 200] * 21, "rows.parquet"), r"its whole path is \d+ bytes long"),
        (lambda tmp: tmp / ("a" * 248 + ".parquet"), "its name is 256 bytes long"),
        (lambda tmp: tmp / ("f" * 256) / "rows.parquet", r"the folder name 'f+' in it is 256 bytes long"),
    ],
    ids=["whole-path", "name", "folder-name"],
)
def test_an_output_path_too_long_is_refused_naming_what_is_too_long(
    tmp_path: Path, name: Callable[[Path], Path], blamed: str
) -> None:
    with pytest.raises(InputError, match=rf"^output '.*': {blamed}, longer than the file system takes"):
        check_output(name(tmp_path), resume=False, overwrite=False)
