"""The batch scorer's runner and local engine, driven with a fake predictor through the public API."""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import POISON, THRESHOLDS, FakePredictor, write_images, write_png  # noqa: E402

from datasets.errors import CargoTypeError, DatasetFormatError, InputError  # noqa: E402
from datasets.manifest import write_manifest  # noqa: E402
from pipeline.score import (  # noqa: E402
    ImageTask,
    LocalEngine,
    ModelRouter,
    heatmap_name,
    iter_rows,
    iter_tasks,
    score_to_file,
)
from pipeline.score.completion import completion_path  # noqa: E402
from pipeline.score.writer import finish_output, open_output  # noqa: E402
from pipeline.verdicts import ImageVerdict  # noqa: E402


def _rows_by_path(out: Path) -> dict[str, ImageVerdict]:
    rows = list(iter_rows(out))
    by_path = {row.path: row for row in rows}
    assert len(by_path) == len(rows), "a path appears twice in the output"
    return by_path


def _overlay_name(path: Path, out: Path, model_id: str = "fake-bulk_ore") -> str:
    """The name of the overlay the fake ``model_id`` draws of the picture at ``path`` now, for ``out``."""
    return heatmap_name(
        str(path), hashlib.sha256(path.read_bytes()).hexdigest(), model_id, str(out.resolve())
    )


def _engine(*predictors: FakePredictor, **kwargs: object) -> LocalEngine:
    return LocalEngine(ModelRouter(list(predictors) or [FakePredictor()]), **kwargs)  # type: ignore[arg-type]


def test_scores_every_image_with_exact_fields(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", [0, 51, 128, 204, 255])
    tasks = [ImageTask(str(p), shipment_id="S1", declaration={"trader_id": "T9"}) for p in paths]
    out = tmp_path / "out.jsonl"
    summary = score_to_file(tasks, _engine(batch_size=2), out)
    rows = _rows_by_path(out)
    assert sorted(rows) == sorted(str(p) for p in paths)
    row = rows[str(paths[2])]
    assert row.score == pytest.approx(128 / 255)
    assert (row.label, row.anomaly_type, row.cargo_type, row.model_id) == (
        "anomalous",
        "foreign_object",
        "bulk_ore",
        "fake-bulk_ore",
    )
    assert (row.threshold, row.hold_threshold) == (THRESHOLDS.release, THRESHOLDS.hold)
    assert row.type_probabilities == pytest.approx({"good": 1 - 128 / 255, "foreign_object": 128 / 255})
    assert row.declaration == {"trader_id": "T9"}
    assert row.shipment_id == "S1"
    assert row.error is None
    assert len(row.sha256 or "") == 64
    assert rows[str(paths[0])].label == "good"
    assert (summary.scored, summary.errors, dict(summary.by_label)) == (5, 0, {"good": 2, "anomalous": 3})


def test_corrupt_and_missing_files_become_error_rows(tmp_path: Path) -> None:
    good = write_images(tmp_path, [10, 200])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    tasks = [ImageTask(str(p)) for p in (good[0], corrupt, text, missing, good[1])]
    out = tmp_path / "out.jsonl"
    summary = score_to_file(tasks, _engine(), out)
    rows = _rows_by_path(out)
    assert [rows[str(p)].error is None for p in (good[0], corrupt, text, missing, good[1])] == [
        True,
        False,
        False,
        False,
        True,
    ]
    for bad in (corrupt, text, missing):
        row = rows[str(bad)]
        assert row.error is not None and row.error.startswith("ImageDecodeError: ")
        assert str(bad) in row.error
        assert (row.score, row.label, row.model_id) == (None, None, None)
    # the file that would not decode is named by its bytes too (the record of its shipment's hold)
    assert rows[str(corrupt)].sha256 == hashlib.sha256(corrupt.read_bytes()).hexdigest()
    assert rows[str(text)].sha256 == hashlib.sha256(b"not an image").hexdigest()
    assert rows[str(missing)].sha256 is None  # no bytes to name
    assert (summary.scored, summary.errors, dict(summary.error_kinds)) == (2, 3, {"ImageDecodeError": 3})


@pytest.mark.parametrize(
    ("cargo_type", "expected"),
    [
        ("bulk_ore", "fake-bulk_ore"),
        ("vacuum_pack", "fake-vacuum_pack"),
        ("crude_oil", "no model for cargo type 'crude_oil'; loaded: 'bulk_ore', 'vacuum_pack'"),
        (
            None,
            "no cargo type for this image and 2 models loaded ('bulk_ore', 'vacuum_pack'); "
            "give it in the manifest or with --cargo-type",
        ),
    ],
)
def test_multi_model_routing(tmp_path: Path, cargo_type: str | None, expected: str) -> None:
    (path,) = write_images(tmp_path, [90])
    out = tmp_path / "out.jsonl"
    score_to_file(
        [ImageTask(str(path), cargo_type=cargo_type)],
        _engine(FakePredictor("bulk_ore"), FakePredictor("vacuum_pack")),
        out,
    )
    (row,) = iter_rows(out)
    assert row.cargo_type == cargo_type
    assert (row.model_id if row.error is None else row.error) == expected


def test_single_model_takes_images_without_a_cargo_type(tmp_path: Path) -> None:
    (path,) = write_images(tmp_path, [90])
    out = tmp_path / "out.jsonl"
    score_to_file([ImageTask(str(path))], _engine(FakePredictor("vacuum_pack")), out)
    (row,) = iter_rows(out)
    assert (row.cargo_type, row.model_id, row.error) == ("vacuum_pack", "fake-vacuum_pack", None)


def test_two_models_for_one_cargo_type_are_refused() -> None:
    with pytest.raises(CargoTypeError, match="two models for cargo type 'bulk_ore': 'a' and 'b'"):
        ModelRouter([FakePredictor("bulk_ore", "a"), FakePredictor("bulk_ore", "b")])


def test_model_error_retries_one_by_one(tmp_path: Path) -> None:
    paths = write_images(tmp_path, [20, POISON, 40, 60])
    predictor = FakePredictor()
    out = tmp_path / "out.jsonl"
    summary = score_to_file([ImageTask(str(p)) for p in paths], _engine(predictor, batch_size=4), out)
    rows = _rows_by_path(out)
    assert predictor.batch_sizes == [4, 1, 1, 1, 1]
    poisoned = rows[str(paths[1])]
    assert poisoned.error == "model error in 'fake-bulk_ore': ValueError: poisoned image"
    assert poisoned.sha256 is not None and poisoned.score is None
    scores = [rows[str(p)].score for p in (paths[0], paths[2], paths[3])]
    assert scores == pytest.approx([20 / 255, 40 / 255, 60 / 255])
    assert (summary.scored, summary.errors) == (3, 1)


def test_heatmaps_are_written_under_hashed_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_images(tmp_path / "img", [30, 220])
    tricky = write_png(tmp_path / "img" / "..weird name.png", 100)
    monkeypatch.chdir(tmp_path)
    heatmaps = Path("heat")  # given relative: the rows name it absolutely, to be read from anywhere
    out = tmp_path / "out.jsonl"
    score_to_file([ImageTask(str(p)) for p in [*paths, tricky]], _engine(), out, heatmap_dir=heatmaps)
    rows = _rows_by_path(out)
    names = sorted(p.name for p in heatmaps.iterdir())
    assert names == sorted(_overlay_name(p, out) for p in [*paths, tricky])
    for path in [*paths, tricky]:
        heatmap = Path(rows[str(path)].heatmap or "")
        assert heatmap.parent == tmp_path.resolve() / "heat" and heatmap.name == _overlay_name(path, out)
        image = cv2.imread(str(heatmap))
        assert image is not None and image.shape == (8, 8, 3)


def test_a_file_named_like_a_heatmaps_old_temporary_name_is_left_alone(tmp_path: Path) -> None:
    """A heatmap was written to ``<name>.png.tmp`` and renamed: a file of that name in the heatmap
    folder was truncated and became the heatmap."""
    (path,) = write_images(tmp_path / "img", [120])
    heat = tmp_path / "heat"
    heat.mkdir()
    out = tmp_path / "out.jsonl"
    precious = heat / (_overlay_name(path, out) + ".tmp")
    precious.write_bytes(b"an officer's notes")
    score_to_file([ImageTask(str(path))], _engine(), out, heatmap_dir=heat)
    assert precious.read_bytes() == b"an officer's notes"
    image = cv2.imread(str(heat / _overlay_name(path, out)))
    assert image is not None and image.shape == (8, 8, 3)
    assert sorted(p.name for p in heat.iterdir()) == sorted([precious.name, _overlay_name(path, out)])


def test_no_heatmap_for_error_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = tmp_path / "out.jsonl"
    score_to_file([ImageTask(str(bad))], _engine(), out, heatmap_dir=tmp_path / "heat")
    (row,) = iter_rows(out)
    assert row.heatmap is None
    assert list((tmp_path / "heat").iterdir()) == []


def test_generator_input_is_pulled_lazily_with_bounded_memory(tmp_path: Path) -> None:
    """A long generator is never drained ahead of the model: held images stay under the bound."""
    (image,) = write_images(tmp_path, [77])
    pulled = 0
    lag: list[int] = []
    predictor = FakePredictor()
    original = predictor.predict

    def predict(images: list[np.ndarray]) -> list[object]:
        lag.append(pulled - sum(predictor.batch_sizes))  # pulled but not yet predicted
        return original(images)  # type: ignore[return-value]

    predictor.predict = predict  # type: ignore[method-assign]

    engine = _engine(predictor, workers=2, batch_size=4)
    assert engine.memory_bound == 2 * 2 * 4 + 4
    # Unique paths: symlinks to one image, created lazily as the generator is pulled.
    links = tmp_path / "links"
    links.mkdir()

    def linked() -> Iterator[ImageTask]:
        nonlocal pulled
        for i in range(600):
            link = links / f"{i:05d}.png"
            link.symlink_to(image)
            pulled += 1
            yield ImageTask(str(link))

    out = tmp_path / "out.jsonl"
    summary = score_to_file(linked(), engine, out)
    assert summary.scored == 600
    assert summary.peak_in_flight <= engine.memory_bound
    assert max(lag) <= engine.memory_bound
    assert sum(1 for _ in iter_rows(out)) == 600


def test_duplicate_inputs_are_scored_once(tmp_path: Path) -> None:
    paths = write_images(tmp_path, [1, 2])
    tasks = [ImageTask(str(p)) for p in (paths[0], paths[1], paths[0])]
    out = tmp_path / "out.jsonl"
    summary = score_to_file(tasks, _engine(), out)
    assert sorted(_rows_by_path(out)) == sorted(str(p) for p in paths)
    assert (summary.scored, summary.duplicates) == (2, 1)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_existing_output_needs_resume_or_overwrite(tmp_path: Path, suffix: str) -> None:
    paths = write_images(tmp_path, [5, 6, 7])
    out = tmp_path / f"out{suffix}"
    score_to_file([ImageTask(str(paths[0]))], _engine(), out)
    with pytest.raises(InputError, match="already exists; pass --resume to continue it or --overwrite"):
        score_to_file([ImageTask(str(p)) for p in paths], _engine(), out)
    summary = score_to_file([ImageTask(str(p)) for p in paths], _engine(), out, resume=True)
    assert (summary.skipped_done, summary.scored) == (1, 2)
    assert sorted(_rows_by_path(out)) == sorted(str(p) for p in paths)
    summary = score_to_file([ImageTask(str(paths[2]))], _engine(), out, overwrite=True)
    assert sorted(_rows_by_path(out)) == [str(paths[2])]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


class _SecondRunMidway:
    """Scores with the fake, and after the first row is on disk starts a second run into the same
    output (an operator who took a slow run for a dead one and started ``--resume``, or
    ``--overwrite``), noting what it said and whether it changed any file beside the output."""

    def __init__(self, out: Path, tasks: list[ImageTask]) -> None:
        self.out, self.tasks = out, tasks
        self.refused: list[str] = []
        self.untouched: list[bool] = []

    def run(self, tasks: Iterator[ImageTask], *, heatmaps: bool = False) -> Iterator[object]:
        for number, row in enumerate(_engine().run(tasks, heatmaps=heatmaps)):
            yield row
            if number == 1:  # the first row is written (chunk_rows=1) before the second is asked for
                for how in ({"resume": True}, {"overwrite": True}):
                    before = _files(self.out.parent)
                    with pytest.raises(InputError) as refused:
                        score_to_file(self.tasks, _engine(), self.out, **how)  # type: ignore[arg-type]
                    self.refused.append(str(refused.value))
                    self.untouched.append(_files(self.out.parent) == before)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_second_run_into_an_output_being_written_is_refused(tmp_path: Path, suffix: str) -> None:
    """Two runs into one output both appended the images left (rows twice, a Parquet journal
    deleted under the other run) and both exited 0."""
    tasks = [ImageTask(str(p)) for p in write_images(tmp_path / "img", [10, 20, 30, 40])]
    out = tmp_path / "out" / f"rows{suffix}"
    engine = _SecondRunMidway(out, tasks)
    summary = score_to_file(tasks, engine, out, chunk_rows=1)  # type: ignore[arg-type]
    assert summary.scored == 4
    assert engine.untouched == [True, True]
    for message in engine.refused:
        assert message.startswith(
            f"output {str(out)!r} is being written by another run (process {os.getpid()}"
        )
        assert "wait for that run to end, or stop it, then pass --resume" in message
    assert sorted(_rows_by_path(out)) == sorted(t.path for t in tasks)  # each image once
    # no lock file left behind; the run's completion record stands beside its rows
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, completion_path(out).name])
    assert score_to_file(tasks, _engine(), out, resume=True).skipped_done == 4


def test_a_lock_file_a_killed_run_left_blocks_no_later_run(tmp_path: Path) -> None:
    """The kernel drops a dead process's lock: its file is taken over, then removed."""
    from pipeline.score.output_lock import lock_path

    (a,) = write_images(tmp_path / "img", [10])
    out = tmp_path / "rows.jsonl"
    lock_path(out).write_text("4242\n")  # a run killed with -9 leaves its lock file
    assert lock_path(out).name.startswith(".rows.jsonl-") and lock_path(out).name.endswith(".lock")
    assert score_to_file([ImageTask(str(a))], _engine(), out).scored == 1
    assert not lock_path(out).exists()


def test_bad_output_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"suffix '\.txt'; use \.jsonl, \.csv or \.parquet"):
        score_to_file([], _engine(), tmp_path / "out.txt")


@pytest.mark.parametrize("parallelism", ["threads", "processes"])
def test_threads_and_processes_give_the_same_rows(tmp_path: Path, parallelism: str) -> None:
    paths = write_images(tmp_path, [3, 100, 250])
    out = tmp_path / "out.jsonl"
    score_to_file([ImageTask(str(p)) for p in paths], _engine(parallelism=parallelism), out)
    rows = _rows_by_path(out)
    assert [rows[str(p)].score for p in paths] == pytest.approx([3 / 255, 100 / 255, 250 / 255])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be at least 1, got 0"),
        ({"batch_size": 0}, "batch size must be at least 1, got 0"),
        ({"parallelism": "fibres"}, "parallelism must be 'threads' or 'processes', got 'fibres'"),
    ],
)
def test_engine_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _engine(**kwargs)


def test_summary_counts_and_warns_about_images_off_the_training_scale(tmp_path: Path) -> None:
    same = write_images(tmp_path / "img", [10, 20], prefix="same")  # 8 px, like the training images
    large = [write_png(tmp_path / "img" / "large[1].png", 30, size=32)]  # shrunk 4x more
    tasks = [ImageTask(str(p)) for p in [*same, *large]]
    out = tmp_path / "out.jsonl"
    summary = score_to_file(tasks, _engine(FakePredictor(trained_side=8)), out)
    rows = _rows_by_path(out)
    assert [rows[str(p)].scale_vs_training for p in [*same, *large]] == [1.0, 1.0, 0.25]
    assert (summary.scored, summary.off_scale) == (3, 1)
    (warning,) = summary.warnings()
    assert warning.startswith(
        f"1 of 3 scored images are more than 2x off the scale of their model's training images: "
        f"{large[0]}, for one, was resized for the model 4x smaller than its training images were"
    )
    console = Console(width=120, record=True, file=io.StringIO())
    for table in summary.tables():
        console.print(table)
    (line,) = [ln for ln in console.export_text().splitlines() if "off the training scale" in ln]
    assert [cell.strip() for cell in line.split("│")[1:-1]] == ["scored off the training scale (> 2x)", "1"]


def test_no_warning_when_the_model_does_not_record_its_training_scale(tmp_path: Path) -> None:
    tasks = [ImageTask(str(write_png(tmp_path / "big.png", 30, size=64)))]
    summary = score_to_file(tasks, _engine(FakePredictor()), tmp_path / "out.jsonl")
    assert next(iter_rows(tmp_path / "out.jsonl")).scale_vs_training is None
    assert (summary.off_scale, summary.warnings()) == (0, [])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_file_name_that_is_not_utf8_is_scored_and_resumed(tmp_path: Path, suffix: str) -> None:
    """A CP-1252 / GBK name from a file share: its odd bytes become \\xNN in the row, the run goes on."""
    good = write_images(tmp_path / "share", [10])[0]
    odd = Path(os.fsdecode(bytes(tmp_path / "share") + b"/\xb2\xe2\xca\xd4.png"))
    odd.write_bytes(good.read_bytes())
    out = tmp_path / f"out{suffix}"
    tasks = [ImageTask(str(good)), ImageTask(str(odd))]
    summary = score_to_file(tasks, _engine(), out, heatmap_dir=tmp_path / "heat")
    assert (summary.scored, summary.errors) == (2, 0)
    rows = _rows_by_path(out)
    shown = str(tmp_path / "share") + "/\\xb2\\xe2\\xca\\xd4.png"
    assert sorted(rows) == sorted([str(good), shown])
    assert Path(rows[shown].heatmap or "").is_file()
    again = score_to_file(tasks, _engine(), out, resume=True)
    assert (again.skipped_done, again.scored) == (2, 0)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_name_holding_a_backslash_escape_is_not_taken_for_a_name_that_is_not_utf8(
    tmp_path: Path, suffix: str
) -> None:
    """caf<0xE9>.png (Latin-1 from a Windows share) and a file literally named caf\\xe9.png were
    given one row text: the second was counted as a duplicate input and never scored."""
    share = tmp_path / "share"
    share.mkdir()
    latin = Path(os.fsdecode(bytes(share) + b"/caf\xe9.png"))
    typed = share / "caf\\xe9.png"  # a backslash, then x, e, 9
    both = Path(os.fsdecode(bytes(share) + b"/\\\xe9.png"))  # a backslash byte beside an odd one
    for path, value in ((latin, 10), (typed, 200), (both, 90)):  # cv2 writes no name that is not UTF-8
        path.write_bytes(write_png(tmp_path / "png" / f"{value}.png", value).read_bytes())
    tasks = [ImageTask(str(p)) for p in (latin, typed, both)]
    out = tmp_path / f"out{suffix}"
    summary = score_to_file(tasks, _engine(), out)
    assert (summary.scored, summary.duplicates) == (3, 0)
    rows = _rows_by_path(out)
    assert sorted(rows) == sorted(
        [f"{share}/caf\\xe9.png", f"{share}/caf\\x5cxe9.png", f"{share}/\\x5c\\xe9.png"]
    )
    assert rows[f"{share}/caf\\x5cxe9.png"].score == pytest.approx(200 / 255)
    again = score_to_file(tasks, _engine(), out, resume=True)
    assert (again.skipped_done, again.scored) == (3, 0)


def test_printable_paths_are_one_text_per_file_and_ordinary_names_unchanged() -> None:
    """Every name that is UTF-8 and holds no \\xNN is written as it is (outputs resume as before);
    every other name is written so that its bytes can be read back from the text alone."""
    from pipeline.score.batch import earlier_printable_path, path_of_printable, printable_path

    for ordinary in ["/data/a.png", "/data/ünï code.png", "C:\\share\\a.png", "/d/a\\xE9.png", "/d/\\x9"]:
        assert printable_path(ordinary) == ordinary
    assert printable_path(os.fsdecode(b"/s/\xb2\xe2.png")) == "/s/\\xb2\\xe2.png"  # as before
    names = [
        b"caf\xe9.png",
        b"caf\\xe9.png",
        b"caf\\x5cxe9.png",
        b"\\\xe9",
        b"\\xe9",
        b"\\x5c\xe9",
        b"\xe9\\",
    ]
    texts = [printable_path(os.fsdecode(name)) for name in names]
    assert len(set(texts)) == len(names)
    for name, text in zip(names, texts, strict=True):
        back = text.encode("utf-8")
        if "\\x" in text and text != os.fsdecode(name):  # escaped: every backslash starts \\xNN
            back = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), back)
        assert back == name
        assert path_of_printable(text) == os.fsdecode(name)  # what a resume asks of a row's text
    assert path_of_printable("caf\\x41.png") is None  # no name's text today (an earlier version's)
    assert path_of_printable("\\\\xe9") is None  # a backslash that starts no escape
    # as the earlier version wrote them: odd bytes as \\xNN, backslashes as they are
    assert [earlier_printable_path(os.fsdecode(name)) for name in names] == [
        "caf\\xe9.png",
        "caf\\xe9.png",
        "caf\\x5cxe9.png",
        "\\\\xe9",
        "\\xe9",
        "\\x5c\\xe9",
        "\\xe9\\",
    ]


def _as_an_earlier_version_wrote(out: Path, texts: dict[str, str], *, keep: bool = False) -> None:
    """Write ``out`` again with the path texts ``texts`` maps (today's -> an earlier version's), as
    a version before backslashes were escaped wrote the rows; ``keep``: today's row stays beside
    the earlier one (what a resume by a version that did not know the earlier text left)."""
    rows = list(iter_rows(out))
    earlier = [row.model_copy(update={"path": texts[row.path]}) for row in rows if row.path in texts]
    writer, _ = open_output(out, resume=False, overwrite=True)
    with writer:
        for row in [*(rows if keep else [r for r in rows if r.path not in texts]), *earlier]:
            writer.write(row)
    finish_output(out)


def _typed_names(share: Path) -> tuple[Path, Path, Path]:
    """An ordinary picture, one typed ``caf\\xe9.png`` (a backslash, x, e, 9) and one whose name is a
    backslash byte and the odd byte 0xE9, under ``share``."""
    (plain,) = write_images(share, [10])
    typed = share / "caf\\xe9.png"
    both = Path(os.fsdecode(bytes(share) + b"/\\\xe9.png"))
    for path, value in ((typed, 200), (both, 90)):  # cv2 writes no name that is not UTF-8
        path.write_bytes(write_png(share.parent / "png" / f"{value}.png", value).read_bytes())
    return plain, typed, both


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_output_of_the_version_before_backslashes_were_escaped_resumes_one_row_per_file(
    tmp_path: Path, suffix: str
) -> None:
    """Rows an earlier version wrote of caf\\xe9.png (typed) and of a name that is not UTF-8 and holds
    a backslash were not known by today's text: each picture was scored again (4 rows of 3 files)
    and --policy refused the resume, saying no manifest listed the picture under its shipment."""
    share = tmp_path / "share"
    plain, typed, both = _typed_names(share)
    tasks = [ImageTask(str(p), "S1") for p in (plain, typed, both)]
    out = tmp_path / f"out{suffix}"
    assert score_to_file(tasks, _engine(), out).scored == 3
    earlier = {  # today's text -> the earlier version's: odd bytes as \\xNN, backslashes as they are
        f"{share}/caf\\x5cxe9.png": f"{share}/caf\\xe9.png",
        f"{share}/\\x5c\\xe9.png": f"{share}/\\\\xe9.png",
    }
    _as_an_earlier_version_wrote(out, earlier)
    written = sorted((r.path, r.shipment_id, r.score) for r in iter_rows(out))
    assert sorted(p for p, _, _ in written) == sorted([str(plain), *earlier.values()])
    again = score_to_file(tasks, _engine(), out, resume=True)
    assert (again.skipped_done, again.scored, again.duplicates) == (3, 0, 0)
    listed = score_to_file(tasks, _engine(), out, resume=True, listed_only=True)  # the manifest as it was
    assert (listed.skipped_done, listed.scored) == (3, 0)
    assert sorted((r.path, r.shipment_id, r.score) for r in iter_rows(out)) == written
    assert _rows_by_path(out)[f"{share}/caf\\xe9.png"].score == pytest.approx(200 / 255)


def test_a_row_of_the_earlier_text_a_resume_cannot_keep_is_not_blamed_on_the_manifest(
    tmp_path: Path,
) -> None:
    """--policy refused such a row saying no manifest listed the picture under its shipment, which
    the manifest did: a row of the earlier text is known as the picture's, moved or not."""
    share = tmp_path / "share"
    plain, typed, _ = _typed_names(share)
    now, before = f"{share}/caf\\x5cxe9.png", f"{share}/caf\\xe9.png"
    out = tmp_path / "out.jsonl"
    score_to_file([ImageTask(str(p), "S1") for p in (plain, typed)], _engine(), out)
    _as_an_earlier_version_wrote(out, {now: before})
    moved = [ImageTask(str(plain), "S1"), ImageTask(str(typed), "S2")]
    with pytest.raises(InputError) as refused:
        score_to_file(moved, _engine(), out, resume=True, listed_only=True)
    assert str(refused.value).startswith(
        f"{before}: scored under shipment 'S1', it is listed under shipment 'S2' now"
    )

    # scored again by a resume that did not know the earlier text: two rows of it, one listed
    out = tmp_path / "twice.jsonl"
    tasks = [ImageTask(str(p), "S1") for p in (plain, typed)]
    score_to_file(tasks, _engine(), out)
    _as_an_earlier_version_wrote(out, {now: before}, keep=True)
    with pytest.raises(InputError) as refused:
        score_to_file(tasks, _engine(), out, resume=True, listed_only=True)
    message = str(refused.value)
    assert message.startswith(f"{now}: the output holds two rows of it under shipment 'S1', {before} as")
    assert "would count the picture twice" in message and "no manifest" not in message
    assert score_to_file(tasks, _engine(), out, resume=True).skipped_done == 2  # not asked: as before


@pytest.mark.parametrize("latin_first", [True, False])
def test_a_row_the_earlier_version_wrote_alike_for_two_files_is_kept_for_the_one_it_names_today(
    tmp_path: Path, latin_first: bool
) -> None:
    """The earlier version wrote caf<0xE9>.png and caf\\xe9.png (typed) alike, one row for both: it is
    the first one's today, and the typed one is scored, in whichever order the two are given."""
    share = tmp_path / "share"
    _, typed, _ = _typed_names(share)
    latin = Path(os.fsdecode(bytes(share) + b"/caf\xe9.png"))
    latin.write_bytes(write_png(tmp_path / "png" / "30.png", 30).read_bytes())
    text = f"{share}/caf\\xe9.png"  # the earlier version's of both, today's of caf<0xE9>.png
    out = tmp_path / "out.jsonl"
    score_to_file([ImageTask(str(latin), "S1")], _engine(), out)
    assert [r.path for r in iter_rows(out)] == [text]
    with pytest.raises(InputError) as refused:  # caf<0xE9>.png not listed: whose row it is is unknown
        score_to_file([ImageTask(str(typed), "S1")], _engine(), out, resume=True, listed_only=True)
    message = str(refused.value)
    assert message.startswith(f"{text}: a row of shipment 'S1' that an earlier version wrote alike for ")
    assert "cannot be told" in message and "no manifest" not in message
    out.unlink()
    score_to_file([ImageTask(str(latin), "S1")], _engine(), out)
    pair = [ImageTask(str(latin), "S1"), ImageTask(str(typed), "S1")]
    summary = score_to_file(
        pair if latin_first else pair[::-1], _engine(), out, resume=True, listed_only=True
    )
    assert (summary.skipped_done, summary.scored, summary.duplicates) == (1, 1, 0)
    rows = _rows_by_path(out)
    assert rows[text].score == pytest.approx(30 / 255)
    assert rows[f"{share}/caf\\x5cxe9.png"].score == pytest.approx(200 / 255)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_corrupt_file_whose_name_is_not_utf8_becomes_an_error_row(tmp_path: Path, suffix: str) -> None:
    """Its decoder message quotes the name: held as it came, it stopped the run and every resume."""
    good = write_images(tmp_path / "share", [10])[0]
    odd = Path(os.fsdecode(bytes(tmp_path / "share") + b"/\xb2\xe2\xca\xd4.png"))
    odd.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / f"out{suffix}"
    tasks = [ImageTask(str(good)), ImageTask(str(odd))]
    summary = score_to_file(tasks, _engine(), out)
    assert (summary.scored, summary.errors) == (1, 1)
    shown = str(tmp_path / "share") + "/\\xb2\\xe2\\xca\\xd4.png"
    error = _rows_by_path(out)[shown].error or ""
    assert "\\xb2\\xe2\\xca\\xd4.png" in error
    assert score_to_file(tasks, _engine(), out, resume=True).skipped_done == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_picture_listed_under_two_shipments_is_a_row_of_each(tmp_path: Path, suffix: str) -> None:
    """Two days' manifests list one photograph under two shipments: the second one vanished (no row,
    no decision), counted as a duplicate input."""
    a, b = write_images(tmp_path / "img", [10, 20])
    day1 = [ImageTask(str(a), shipment_id="S1", cargo_type="bulk_ore")]
    day2 = [ImageTask(str(a), shipment_id="S2", cargo_type="bulk_ore"), ImageTask(str(b), shipment_id="S3")]
    out = tmp_path / f"out{suffix}"
    summary = score_to_file(day1 + day2, _engine(), out)
    assert (summary.scored, summary.duplicates) == (3, 0)
    assert sorted(r.shipment_id or "" for r in iter_rows(out)) == ["S1", "S2", "S3"]
    again = score_to_file(day1 + day2 + day1, _engine(), out, resume=True)
    assert (again.skipped_done, again.duplicates, again.scored) == (3, 1, 0)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_refuses_a_manifest_row_whose_declaration_changed(tmp_path: Path, suffix: str) -> None:
    """A radiation alarm raised after a crash: the kept row would decide the shipment without it."""
    a, b = write_images(tmp_path / "img", [10, 20])
    quiet = {"cargo_type": "bulk_ore", "radiation_alarm": False}
    tasks = [ImageTask(str(p), shipment_id="S1", cargo_type="bulk_ore", declaration=quiet) for p in (a, b)]
    out = tmp_path / f"out{suffix}"
    score_to_file(tasks[:1], _engine(), out)
    assert score_to_file(tasks, _engine(), out, resume=True).skipped_done == 1  # unchanged: resumed
    alarm = [ImageTask(t.path, t.shipment_id, t.cargo_type, quiet | {"radiation_alarm": True}) for t in tasks]
    with pytest.raises(InputError, match=r"of shipment 'S1': its manifest row's declaration changed"):
        score_to_file(alarm, _engine(), out, resume=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_listed_only_refuses_a_kept_row_the_manifest_no_longer_lists(
    tmp_path: Path, suffix: str
) -> None:
    """A manifest corrected after the first run moved a picture from S1 to S2: `--resume --policy`
    kept its (picture, S1) row and decided S1 on a picture no longer S1's, without a word."""
    a, b, c = (str(p) for p in write_images(tmp_path / "img", [10, 20, 30]))
    out = tmp_path / f"out{suffix}"
    score_to_file([ImageTask(a, "S1"), ImageTask(b, "S1"), ImageTask(c, "S2")], _engine(), out)
    moved = [ImageTask(a, "S1"), ImageTask(b, "S2"), ImageTask(c, "S2")]
    with pytest.raises(InputError) as refused:
        score_to_file(moved, _engine(), out, resume=True, listed_only=True)
    assert str(refused.value).startswith(
        f"{b}: scored under shipment 'S1', it is listed under shipment 'S2' now (a manifest corrected since?)"
    )
    assert "score into a new --out, or pass --overwrite" in str(refused.value)
    assert sorted((r.path, r.shipment_id) for r in iter_rows(out)) == sorted(
        [(a, "S1"), (b, "S1"), (b, "S2"), (c, "S2")]  # the new row is kept: a rescore needs it not
    )
    with pytest.raises(InputError, match=f"{b}: scored under shipment 'S1', no manifest given lists it"):
        score_to_file([ImageTask(a, "S1"), ImageTask(c, "S2")], _engine(), out, resume=True, listed_only=True)
    assert score_to_file(moved, _engine(), out, resume=True).skipped_done == 3  # not asked: as before
    fixed = score_to_file(moved, _engine(), out, overwrite=True, listed_only=True)
    assert fixed.scored == 3
    assert score_to_file(moved, _engine(), out, resume=True, listed_only=True).skipped_done == 3


def test_one_image_of_one_shipment_listed_with_two_declarations_is_refused(tmp_path: Path) -> None:
    """Two manifests, the second raising a radiation alarm: the second row was dropped as a duplicate."""
    (a,) = write_images(tmp_path / "img", [10])
    quiet = ImageTask(str(a), shipment_id="S1", cargo_type="bulk_ore", declaration={"radiation_alarm": False})
    alarm = ImageTask(str(a), shipment_id="S1", cargo_type="bulk_ore", declaration={"radiation_alarm": True})
    with pytest.raises(InputError, match="is listed twice with two declarations"):
        score_to_file([quiet, alarm], _engine(), tmp_path / "out.jsonl")
    assert score_to_file([quiet, quiet], _engine(), tmp_path / "again.jsonl").duplicates == 1


def test_a_resume_counts_the_errors_of_the_rows_it_keeps(tmp_path: Path) -> None:
    """An output of nothing but errors, resumed, said nothing of them (and the CLI exited 0)."""
    paths = write_images(tmp_path / "img", [5, 6])
    out = tmp_path / "out.jsonl"
    engine = _engine(FakePredictor("bulk_ore"), FakePredictor("vacuum_pack"))
    score_to_file([ImageTask(str(p), cargo_type="bulk-ore") for p in paths], engine, out)  # no model
    summary = score_to_file(
        [ImageTask(str(p), cargo_type="bulk-ore") for p in paths], engine, out, resume=True
    )
    assert (summary.skipped_done, summary.scored, summary.errors, summary.kept_errors) == (2, 0, 0, 2)
    assert any("2 rows kept from the earlier run hold an error" in w for w in summary.warnings())
    retried = score_to_file(
        [ImageTask(str(p), cargo_type="bulk_ore") for p in paths], engine, out, resume=True, retry_errors=True
    )
    assert (retried.scored, retried.kept_errors) == (2, 0)


def test_a_resume_after_an_image_was_taken_out_counts_only_the_rows_it_keeps(tmp_path: Path) -> None:
    # a corrupt image quarantined (deleted), then resumed: its error row was counted as kept (and
    # the CLI failed a run whose output holds a score); the other way, it passed one that holds none
    good, bad = write_images(tmp_path / "img", [5, 6])
    out = tmp_path / "out.jsonl"
    engine = _engine(FakePredictor("bulk_ore"), FakePredictor("vacuum_pack"))
    score_to_file(
        [ImageTask(str(good), cargo_type="bulk_ore"), ImageTask(str(bad), cargo_type="bulk-ore")], engine, out
    )
    summary = score_to_file([ImageTask(str(good), cargo_type="bulk_ore")], engine, out, resume=True)
    assert (summary.skipped_done, summary.kept_errors, summary.rows_scored_in_output) == (1, 0, 1)
    # the quarantined image's row stays, listed by no input now: said, and no completion record
    assert summary.kept_unlisted == 1
    assert [w.split(" are ")[0] for w in summary.warnings()] == ["1 rows kept from the earlier run"]


def test_a_resume_reads_whether_the_output_holds_a_score_kept_rows_or_not(tmp_path: Path) -> None:
    # the exit code followed whether the resume happened to keep a row: the same output, exit 0 or 2
    a, b = write_images(tmp_path / "img", [5, 6])
    out = tmp_path / "out.jsonl"
    engine = _engine(FakePredictor("bulk_ore"), FakePredictor("vacuum_pack"))
    score_to_file([ImageTask(str(a), cargo_type="bulk_ore")], engine, out)
    summary = score_to_file([ImageTask(str(b), cargo_type="bulk-ore")], engine, out, resume=True)
    assert (summary.skipped_done, summary.errors, summary.rows_scored_in_output) == (0, 1, 1)


def test_heatmaps_asked_for_on_resume_warn_of_the_rows_kept_without(tmp_path: Path) -> None:
    """The kept rows got no heatmap, silently: officers found every image scored before the
    interruption without one."""
    paths = write_images(tmp_path / "img", [5, 6, 7])
    out = tmp_path / "out.jsonl"
    tasks = [ImageTask(str(p)) for p in paths]
    score_to_file(tasks[:2], _engine(), out)
    summary = score_to_file(tasks, _engine(), out, resume=True, heatmap_dir=tmp_path / "heat")
    assert (summary.skipped_done, summary.kept_without_heatmap) == (2, 2)
    assert any("2 scored rows kept from the earlier run have no heatmap" in w for w in summary.warnings())
    again = score_to_file(tasks, _engine(), tmp_path / "whole.jsonl", heatmap_dir=tmp_path / "heat2")
    assert again.kept_without_heatmap == 0 and not again.warnings()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_refuses_a_folder_given_another_cargo_type(tmp_path: Path, suffix: str) -> None:
    """A folder's images carry no declaration: resumed under another --cargo-type with both models
    loaded, 8 rows stayed ore and 12 went to the packs' model, exit 0."""
    paths = write_images(tmp_path / "img", [5, 6])
    out = tmp_path / f"out{suffix}"
    engine = _engine(FakePredictor("bulk_ore"), FakePredictor("vacuum_pack"))
    score_to_file([ImageTask(str(paths[0]), cargo_type="bulk_ore")], engine, out)
    packs = [ImageTask(str(p), cargo_type="vacuum_pack") for p in paths]
    with pytest.raises(InputError, match=r"was scored as cargo type 'bulk_ore', and is 'vacuum_pack' now"):
        score_to_file(packs, engine, out, resume=True)
    ore = [ImageTask(str(p), cargo_type="bulk_ore") for p in paths]
    assert score_to_file(ore, engine, out, resume=True).skipped_done == 1
    assert {row.cargo_type for row in iter_rows(out)} == {"bulk_ore"}


def test_rows_of_hundreds_of_cargo_types_read_back_as_scored() -> None:
    # the 256th read back as none and the 257th as the first: a resume of the same tasks refused
    from pipeline.score.done import Done

    done = Done()
    for n in range(300):
        done.add(f"/a/{n}.png", None, {}, f"type_{n:03d}")
    got = [done.get(done.key(f"/a/{n}.png", None)) for n in range(300)]
    assert all(g is not None and g[1] in (f"type_{n:03d}", None) for n, g in enumerate(got))
    assert [g[1] for g in got[:255] if g is not None] == [f"type_{n:03d}" for n in range(255)]


def test_manifest_rows_leave_the_cargo_slots_to_folder_rows() -> None:
    # 255 manifest cargo types spent every slot, and a folder's rows then kept none: a resume under
    # another --cargo-type went unrefused again
    from pipeline.score.done import Done

    done = Done()
    for n in range(300):
        done.add(f"/m/{n}.png", f"S{n}", {"cargo_type": f"type_{n:03d}"}, f"type_{n:03d}")
    done.add("/f/a.png", None, {}, "bulk_ore")
    done.add("/f/b.png", None, {}, None)
    assert done.get(done.key("/f/a.png", None)) is not None
    assert done.get(done.key("/f/a.png", None))[1] == "bulk_ore"  # type: ignore[index]
    assert done.get(done.key("/m/7.png", "S7"))[1] is None  # type: ignore[index]


def test_a_folder_scored_under_a_cargo_typo_resumes_under_the_right_one(tmp_path: Path) -> None:
    """The typo's rows hold an error (no model): the resume was refused, told to use the typo."""
    paths = write_images(tmp_path / "img", [5, 6])
    out = tmp_path / "out.jsonl"
    engine = _engine(FakePredictor("bulk_ore"), FakePredictor("vacuum_pack"))
    score_to_file([ImageTask(str(paths[0]), cargo_type="bulk-ore")], engine, out)
    fixed = [ImageTask(str(p), cargo_type="bulk_ore") for p in paths]
    summary = score_to_file(fixed, engine, out, resume=True)  # the typo's error row is kept
    assert (summary.skipped_done, summary.scored) == (1, 1)
    again = score_to_file(fixed, engine, out, resume=True, retry_errors=True)
    assert again.scored == 1
    assert {row.cargo_type for row in iter_rows(out) if row.error is None} == {"bulk_ore"}


def test_resume_takes_a_manifest_rows_corrected_cargo_type(tmp_path: Path) -> None:
    """A typo (no model, an error row) corrected in the manifest: the resume was refused, told to
    pass --cargo-type with the typo, which has no model and never overrides a manifest row."""
    (a,) = write_images(tmp_path / "img", [5])
    out = tmp_path / "out.jsonl"
    engine = _engine(FakePredictor("bulk_ore"), FakePredictor("vacuum_pack"))
    score_to_file([ImageTask(str(a), shipment_id="S1", cargo_type="bulk-ore")], engine, out)
    summary = score_to_file(
        [ImageTask(str(a), shipment_id="S1", cargo_type="bulk_ore")], engine, out, resume=True
    )
    assert summary.skipped_done == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_refuses_rows_of_another_model(tmp_path: Path, suffix: str) -> None:
    paths = write_images(tmp_path / "img", [5, 6])
    out = tmp_path / f"out{suffix}"
    old = FakePredictor(model_id="bulk_ore-lite0-aaaa")
    score_to_file([ImageTask(str(paths[0]))], _engine(old), out, model_ids=[old.model_id])
    new = FakePredictor(model_id="bulk_ore-lite0-bbbb")
    tasks = [ImageTask(str(p)) for p in paths]
    with pytest.raises(
        InputError, match=r"holds rows scored by bulk_ore-lite0-aaaa, not by the models loaded now"
    ):
        score_to_file(tasks, _engine(new), out, resume=True, model_ids=[new.model_id])
    # the rows are as they were, and so is the record that vouches for them (it was removed first)
    assert completion_path(out).exists()
    summary = score_to_file(tasks, _engine(old), out, resume=True, model_ids=[old.model_id])
    assert (summary.skipped_done, summary.scored) == (1, 1)
    assert {row.model_id for row in iter_rows(out)} == {"bulk_ore-lite0-aaaa"}


@pytest.mark.parametrize("cut", [False, True], ids=["garbage", "cut-short"])
def test_a_parquet_output_that_cannot_be_read_is_refused_as_no_score_output(
    tmp_path: Path, cut: bool
) -> None:
    """pyarrow's own error reached the CLI as an unexpected one (exit 1); and the refusal came after
    the completion record vouching for the file was removed."""
    paths = write_images(tmp_path / "img", [5])
    out = tmp_path / "out.parquet"
    model = FakePredictor(model_id="bulk_ore-lite0-aaaa")
    tasks = [ImageTask(str(paths[0]))]
    score_to_file(tasks, _engine(model), out, model_ids=[model.model_id])
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2] if cut else b"not parquet at all" * 8)
    with pytest.raises(DatasetFormatError, match=r"not a readable Parquet score output.*--overwrite"):
        score_to_file(tasks, _engine(model), out, resume=True, model_ids=[model.model_id])
    assert completion_path(out).exists()  # nothing was changed before the refusal


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("retry_errors", [False, True], ids=["resume", "retry-errors"])
def test_a_resume_refused_for_another_model_leaves_the_output_as_it_was(
    tmp_path: Path, suffix: str, retry_errors: bool
) -> None:
    """The output was rewritten before the refusal: the row of a picture written over since taken
    out (and, with --retry-errors, the error rows), a torn last row cut."""
    a, b = write_images(tmp_path / "img", [5, 6])
    bad = tmp_path / "img" / "bad.png"
    bad.write_bytes(b"not a picture")
    tasks = [ImageTask(str(p)) for p in (a, b, bad)]
    out = tmp_path / f"out{suffix}"
    old = FakePredictor(model_id="bulk_ore-lite0-aaaa")
    score_to_file(tasks, _engine(old), out, model_ids=[old.model_id])
    write_png(a, 200)  # a new scan under its name: its row would be taken out
    with out.open("ab") as fh:
        fh.write(b'{"path": "torn' if suffix == ".jsonl" else b'"torn')  # a kill mid-row
    before = out.read_bytes()
    new = FakePredictor(model_id="bulk_ore-lite0-bbbb")
    with pytest.raises(InputError, match=r"holds rows scored by bulk_ore-lite0-aaaa, not by the models"):
        score_to_file(
            tasks, _engine(new), out, resume=True, retry_errors=retry_errors, model_ids=[new.model_id]
        )
    assert out.read_bytes() == before


def test_resume_knows_an_image_by_any_spelling_of_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "img", [5, 6])
    out = tmp_path / "out.jsonl"
    score_to_file([ImageTask("img/img0000.png")], _engine(), out)
    spelled = [ImageTask(str(tmp_path / "img" / "img0000.png")), ImageTask("img/./img0001.png")]
    summary = score_to_file(spelled, _engine(), out, resume=True)
    assert (summary.skipped_done, summary.scored) == (1, 1)
    assert len(list(iter_rows(out))) == 2


def test_resume_from_another_folder_or_through_a_link_scores_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows kept the relative paths a run was started with, so a run resumed from another working
    folder, or through a linked folder, scored the whole archive again."""

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_images(tmp_path / "a" / "img", [5, 6])
    write_manifest(
        tmp_path / "a" / "m.csv",
        [{"path": "img/img0000.png", "shipment_id": "S1", "cargo_type": "bulk_ore"}],
    )
    (tmp_path / "link").symlink_to(tmp_path / "a", target_is_directory=True)
    out = tmp_path / "out.jsonl"
    monkeypatch.chdir(tmp_path / "a")
    first = score_to_file(iter_tasks(["img", "m.csv"]), _engine(), out)
    assert (first.scored, first.skipped_done) == (3, 0)
    assert {row.path for row in iter_rows(out)} == {
        str(tmp_path / "a" / "img" / f"img000{i}.png") for i in (0, 1)
    }
    monkeypatch.chdir(tmp_path / "b")
    for inputs in (["../a/img", "../a/m.csv"], ["../link/img", "../link/m.csv"]):
        again = score_to_file(iter_tasks(inputs), _engine(), out, resume=True)
        assert (again.scored, again.skipped_done) == (0, 3), inputs
    assert len(list(iter_rows(out))) == 3


def test_a_path_through_a_link_and_back_names_the_file_the_system_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``link/../a.png`` is the a.png beside the link's target; made absolute as text, it was the
    a.png beside the link, another picture, scored in its place."""

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "w").mkdir()
    there = write_png(tmp_path / "real" / "a.png", 10)
    write_png(tmp_path / "w" / "a.png", 200)
    (tmp_path / "w" / "link").symlink_to(tmp_path / "real" / "sub", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "w")
    assert [t.path for t in iter_tasks(["link/../a.png", "./a.png"])] == [
        str(there),
        str(tmp_path / "w" / "a.png"),
    ]
    out = tmp_path / "out.jsonl"
    summary = score_to_file(iter_tasks(["link/../a.png", "a.png"]), _engine(), out)
    assert (summary.scored, summary.duplicates) == (2, 0)  # two files, not one listed twice
    again = score_to_file(iter_tasks(["link/../a.png", "a.png"]), _engine(), out, resume=True)
    assert (again.scored, again.skipped_done) == (0, 2)


def test_large_images_are_held_within_the_pixel_budget(tmp_path: Path) -> None:
    """Pixels, not only images, bound what is held: batches are scored early rather than pass it."""
    sizes = [8, 40, 8, 40, 40, 8, 64, 8, 40, 8, 8, 8]  # 64 x 64 alone is over the budget of 4,000
    paths = [write_png(tmp_path / f"{i:02d}.png", 20 + 3 * i, size=s) for i, s in enumerate(sizes)]
    predictor = FakePredictor()
    engine = _engine(predictor, workers=2, batch_size=4, max_pixels_in_flight=4000)
    out = tmp_path / "out.jsonl"
    summary = score_to_file([ImageTask(str(p)) for p in paths], engine, out)
    assert summary.scored == len(paths) and summary.errors == 0
    assert engine.peak_pixels_in_flight == 64 * 64  # the oversized image, scored alone
    assert sum(predictor.batch_sizes) == len(paths) and max(predictor.batch_sizes) <= 4
    unbounded = _engine(FakePredictor(), workers=2, batch_size=4)
    score_to_file([ImageTask(str(p)) for p in paths], unbounded, tmp_path / "all.jsonl")
    assert unbounded.peak_pixels_in_flight > 4000  # without the budget the same run held more
    assert {r.path: r.score for r in iter_rows(out)} == {
        r.path: r.score for r in iter_rows(tmp_path / "all.jsonl")
    }


def test_the_pixel_budget_must_be_positive() -> None:
    with pytest.raises(InputError, match="max_pixels_in_flight must be at least 1, got 0"):
        _engine(max_pixels_in_flight=0)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_can_retry_the_images_that_failed(tmp_path: Path, suffix: str) -> None:
    paths = write_images(tmp_path / "img", [20, 40])
    broken = tmp_path / "img" / "late.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\ncopy not finished")
    out = tmp_path / f"out{suffix}"
    tasks = [ImageTask(str(p)) for p in [*paths, broken]]
    first = score_to_file(tasks, _engine(), out)
    assert (first.scored, first.errors) == (2, 1)
    write_png(broken, 60)  # the file share finished copying it
    plain = score_to_file(tasks, _engine(), out, resume=True)
    assert (plain.skipped_done, plain.scored) == (3, 0)  # an error row counts as done
    again = score_to_file(tasks, _engine(), out, resume=True, retry_errors=True)
    assert (again.skipped_done, again.scored, again.errors) == (2, 1, 0)
    rows = _rows_by_path(out)
    assert len(rows) == 3 and rows[str(broken)].error is None
    assert rows[str(broken)].score == pytest.approx(60 / 255)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_rows_carry_each_pictures_perceptual_hash_into_the_audit_store(tmp_path: Path, suffix: str) -> None:
    """So that a picture decided in a batch is found when a near-copy of it is sent to the service."""
    from datasets.perceptual_hash import perceptual_hash
    from pipeline.audit import AuditStore
    from pipeline.decide import decide_shipment
    from pipeline.policy import load_policy
    from pipeline.verdicts import Declaration

    fixture = Path(__file__).parents[1] / "fixtures" / "real_ore" / "full_ore" / "images0003.png"
    photo = cv2.resize(cv2.imread(str(fixture)), (96, 64), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    (flat,) = write_images(tmp_path, [40])
    out = tmp_path / f"rows{suffix}"
    score_to_file([ImageTask(str(tmp_path / "photo.png")), ImageTask(str(flat))], _engine(), out)
    rows = _rows_by_path(out)
    assert rows[str(tmp_path / "photo.png")].phash == perceptual_hash(photo)
    assert rows[str(flat)].phash is None  # no layout to tell: looked up by its bytes only

    policy = load_policy(Path(__file__).parents[2] / "pipeline" / "policies" / "example.yaml")
    decision = decide_shipment(
        policy, Declaration(shipment_id="BATCH-1", cargo_type="bulk_ore"), list(rows.values()), audit_key=b"k"
    )
    jpeg = cv2.imdecode(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_COLOR)
    with AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        store.record(decision)
        found = store.sightings([("ab" * 32, perceptual_hash(jpeg))], other_than="HTTP-1", near_copy_bits=32)
    assert found.found["ab" * 32].similar_in == ["BATCH-1"]


def _photo_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    fixture = Path(__file__).parents[1] / "fixtures" / "real_ore" / "full_ore" / "images0005.png"
    photo = cv2.resize(cv2.imread(str(fixture)), (96, 64), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    return tmp_path / "photo.png", photo


class _Broken(FakePredictor):
    def predict(self, images):  # type: ignore[no-untyped-def]
        raise RuntimeError("model exploded")


def test_a_picture_its_model_failed_on_keeps_its_perceptual_hash(tmp_path: Path) -> None:
    from datasets.perceptual_hash import perceptual_hash

    path, photo = _photo_file(tmp_path)
    out = tmp_path / "rows.jsonl"
    score_to_file([ImageTask(str(path))], _engine(_Broken()), out)
    (row,) = _rows_by_path(out).values()
    assert row.error is not None and row.phash == perceptual_hash(photo)


def test_a_perceptual_hash_that_fails_costs_the_picture_nothing_but_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import datasets.perceptual_hash

    def fails(pixels: np.ndarray) -> str:
        raise ValueError("no hash today")

    monkeypatch.setattr(datasets.perceptual_hash, "perceptual_hash", fails)
    path, _ = _photo_file(tmp_path)
    out = tmp_path / "rows.jsonl"
    summary = score_to_file([ImageTask(str(path))], _engine(), out)
    (row,) = _rows_by_path(out).values()
    assert (summary.scored, row.error, row.phash) == (1, None, None) and row.score is not None
    assert "no perceptual hash (ValueError: no hash today)" in caplog.text


def test_a_manifest_path_with_a_space_at_its_end_scores_its_own_file_or_none(tmp_path: Path) -> None:
    """The manifest reader stripped ``"photo.png "`` to ``photo.png``: that other picture (clean) was
    scored for the listed one (a defect), and the shipment released."""
    arc = tmp_path / "arc"
    write_png(arc / "photo.png", 10)
    write_png(arc / "photo.png ", 250)
    manifest = arc / "m.csv"
    manifest.write_text('path,shipment_id,cargo_type\n"photo.png ",SHIP-B,bulk_ore\n')
    out = tmp_path / "out.jsonl"
    score_to_file(iter_tasks([str(manifest)]), _engine(), out)
    (row,) = iter_rows(out)
    assert row.path == str(arc / "photo.png ") and row.score == pytest.approx(250 / 255)
    assert row.sha256 == hashlib.sha256((arc / "photo.png ").read_bytes()).hexdigest()
    # the listed file gone: an error row, which says what the stripped spelling names
    (arc / "photo.png ").unlink()
    score_to_file(iter_tasks([str(manifest)]), _engine(), out, overwrite=True)
    (row,) = iter_rows(out)
    assert row.score is None and row.error is not None
    assert "file not found (the path has spaces at its ends; without them it names " in row.error
    assert row.error.endswith(f"{arc / 'photo.png'})")


def test_a_picture_a_manifest_lists_that_is_not_there_is_the_manifests_error(tmp_path: Path) -> None:
    """It read "ImageDecodeError: ...: file not found", as a picture that failed to decode would; a
    file given otherwise that is gone (a folder's dangling link) still is one."""
    arc = tmp_path / "arc"
    write_png(arc / "a.png", 10)
    (arc / "gone.png").symlink_to(arc / "nowhere.png")
    manifest = arc / "m.csv"
    manifest.write_text("path,shipment_id,cargo_type\na.png,S1,bulk_ore\nmissing.png,S1,bulk_ore\n")
    out = tmp_path / "out.jsonl"
    score_to_file([*iter_tasks([str(manifest)]), ImageTask(str(arc / "gone.png"))], _engine(), out)
    rows = _rows_by_path(out)
    assert rows[str(arc / "missing.png")].error == (
        f"DatasetFormatError: {arc / 'missing.png'}: listed in the manifest under shipment 'S1', but file "
        "not found"
    )
    assert rows[str(arc / "gone.png")].error.startswith("ImageDecodeError: ")
    assert rows[str(arc / "a.png")].error is None
