"""temporary_beside and written_whole: a file written whole beside its target under a name no file
had, renamed into place only when complete."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from datasets.folder import iter_image_paths
from datasets.whole_files import files_written_whole, temporary_beside, written_whole

PRECIOUS = b"an audit store someone named so"

_TEMPORARY = re.compile(r"\.(?P<kept>.*)-[0-9a-f]{12}\.tmp")


def test_the_temporary_file_is_new_hidden_and_named_after_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    (tmp_path / "out.parquet.tmp").write_bytes(PRECIOUS)
    first, fd1 = temporary_beside(target)
    second, fd2 = temporary_beside(target)
    os.close(fd1)
    os.close(fd2)
    assert first != second and first.parent == second.parent == tmp_path
    match = _TEMPORARY.fullmatch(first.name)
    assert match is not None and match["kept"] == "out.parquet"
    assert first.read_bytes() == second.read_bytes() == b""
    assert (tmp_path / "out.parquet.tmp").read_bytes() == PRECIOUS


def test_the_temporary_file_has_the_mode_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        tmp, fd = temporary_beside(tmp_path / "x.jsonl")
    finally:
        os.umask(old)
    os.close(fd)
    assert tmp.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    ("text", "content"),
    [(False, b"\x89PNG whole"), (True, "décisions\n")],
    ids=["binary", "text"],
)
@pytest.mark.parametrize("earlier", [None, b"the earlier file"], ids=["new", "replacing"])
def test_written_whole_puts_the_file_in_place_and_leaves_its_neighbours(
    tmp_path: Path, text: bool, content: bytes | str, earlier: bytes | None
) -> None:
    target = tmp_path / "out.csv"
    if earlier is not None:
        target.write_bytes(earlier)
    neighbours = dict.fromkeys(("out.csv.tmp", "out.csv.upgrade.tmp", "out.csv.retry.tmp"), PRECIOUS)
    for name, data in neighbours.items():
        (tmp_path / name).write_bytes(data)
    with written_whole(target, text=text) as fh:
        fh.write(content)
        assert not target.exists() or target.read_bytes() == earlier  # not yet in place
    written = target.read_text(encoding="utf-8") if text else target.read_bytes()
    assert written == content
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p != target} == neighbours


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_an_error_while_writing_leaves_the_target_and_no_temporary_file(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"the earlier file")
    with pytest.raises(type(error)), written_whole(target) as fh:
        fh.write(b"half of it")
        raise error
    assert target.read_bytes() == b"the earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_written_whole_without_fsync_still_writes_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "h.png"
    with written_whole(target, fsync=False) as fh:
        fh.write(b"png")
    assert target.read_bytes() == b"png" and sorted(p.name for p in tmp_path.iterdir()) == ["h.png"]


def test_a_temporary_file_a_killed_run_left_is_never_taken_for_an_image(tmp_path: Path) -> None:
    """A run killed mid-write leaves ``.{name}-{hex}.tmp``; scoring the folder again reads only the
    images, whether the folder is named or globbed."""
    (tmp_path / "a.png").write_bytes(b"x")
    for name in ("a.png", "heat.png", "out.jsonl"):
        _, fd = temporary_beside(tmp_path / name)
        os.close(fd)
    assert list(iter_image_paths([tmp_path])) == [tmp_path / "a.png"]
    assert list(iter_image_paths([str(tmp_path / "*")])) == [tmp_path / "a.png"]


@pytest.mark.parametrize(
    ("earlier", "expected"),
    [(None, 0o664), (0o600, 0o600), (0o640, 0o640), (0o444, 0o444)],
    ids=["new", "owner-only", "group-read", "read-only"],
)
@pytest.mark.usefixtures("umask_002")
def test_written_whole_keeps_the_mode_of_the_file_it_replaces(
    tmp_path: Path, earlier: int | None, expected: int
) -> None:
    """Renamed onto the target, the new file took the umask's mode: an output made readable by its
    owner alone came back readable by the group."""
    target = tmp_path / "out.jsonl"
    if earlier is not None:
        target.write_bytes(b"the earlier file")
        target.chmod(earlier)
    with written_whole(target) as fh:
        fh.write(b"the new file")
    assert target.read_bytes() == b"the new file"
    assert oct(target.stat().st_mode & 0o777) == oct(expected)


@pytest.mark.usefixtures("umask_002")
def test_written_whole_over_a_link_keeps_the_mode_of_the_file_it_named(tmp_path: Path) -> None:
    (tmp_path / "private.jsonl").write_bytes(b"earlier")
    (tmp_path / "private.jsonl").chmod(0o600)
    (tmp_path / "link.jsonl").symlink_to("private.jsonl")
    with written_whole(tmp_path / "link.jsonl") as fh:
        fh.write(b"new")
    assert oct((tmp_path / "link.jsonl").lstat().st_mode & 0o777) == oct(0o600)


@pytest.mark.usefixtures("umask_002")
def test_written_whole_like_another_file_takes_its_mode(tmp_path: Path) -> None:
    source = tmp_path / "rows.parquet"
    source.write_bytes(b"rows")
    source.chmod(0o600)
    with written_whole(tmp_path / "journal.jsonl", like=source) as fh:
        fh.write(b"the same rows")
    assert oct((tmp_path / "journal.jsonl").stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another user")
def test_written_whole_keeps_the_owner_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"earlier")
    os.chown(target, 4321, 8765)
    with written_whole(target) as fh:
        fh.write(b"new")
    assert (target.stat().st_uid, target.stat().st_gid) == (4321, 8765)


def test_files_written_whole_puts_every_file_in_place_with_the_mode_it_replaces(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_bytes(b"earlier")
    os.chmod(tmp_path / "metrics.json", 0o600)
    files_written_whole({tmp_path / "metrics.json": b"{}", tmp_path / "report.html": b"<html>"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "report.html"]
    assert (tmp_path / "metrics.json").read_bytes() == b"{}"
    assert (tmp_path / "report.html").read_bytes() == b"<html>"
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("failing", ["missing-folder", "a-folder-by-that-name"])
def test_a_file_that_cannot_be_written_leaves_every_earlier_file_and_no_temporary_one(
    tmp_path: Path, failing: str
) -> None:
    """The last of a report's files failing (its folder gone, a folder under its name) left the
    first ones new beside an earlier run's last one."""
    (tmp_path / "metrics.json").write_bytes(PRECIOUS)
    last = tmp_path / "gone" / "report.html"
    if failing == "a-folder-by-that-name":
        last = tmp_path / "report.html"
        last.mkdir()
    with pytest.raises(OSError):
        files_written_whole({tmp_path / "metrics.json": b"{}", last: b"<html>"})
    assert (tmp_path / "metrics.json").read_bytes() == PRECIOUS
    kept = ["metrics.json", "report.html"] if failing == "a-folder-by-that-name" else ["metrics.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == kept


@pytest.mark.parametrize("earlier", [("metrics.json", "scores.csv"), ("metrics.json",)])
def test_a_rename_failing_part_way_puts_back_the_files_renamed_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, earlier: tuple[str, ...]
) -> None:
    """A report.html made immutable (or on a busy mount) refused its rename after metrics.json and
    scores.csv had been renamed: new figures beside an earlier model's page. A file that was not
    there before goes again."""
    import datasets.whole_files as whole_files

    for name in earlier:
        (tmp_path / name).write_bytes(PRECIOUS)
    real_replace = os.replace
    renamed: list[str] = []

    def refusing_the_page(src: object, dst: object) -> None:
        if Path(str(dst)).name == "report.html":
            raise PermissionError(1, "Operation not permitted", str(dst))
        real_replace(src, dst)  # type: ignore[arg-type]
        renamed.append(Path(str(dst)).name)

    monkeypatch.setattr(whole_files.os, "replace", refusing_the_page)
    files = {tmp_path / n: b"new" for n in ("metrics.json", "scores.csv", "report.html")}
    with pytest.raises(PermissionError):
        files_written_whole(files)
    monkeypatch.undo()
    assert renamed[:2] == ["metrics.json", "scores.csv"]  # the failure came after two renames
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(earlier)
    assert [(tmp_path / n).read_bytes() for n in earlier] == [PRECIOUS] * len(earlier)
