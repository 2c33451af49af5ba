"""`clearsight data synth` and `clearsight data preview` end to end on a tiny dataset, and their errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import typer

from pipeline.cli import data
from pipeline.cli._app import run


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root(debug: bool = typer.Option(False, "--debug")) -> None:
        pass

    data.register(app)
    return app


TINY = [
    "--seed",
    "2",
    "--size",
    "64",
    "--train-good",
    "1",
    "--test-good",
    "2",
    "--test-anomalous",
    "1",
    "--workers",
    "1",
]


def test_synth_then_preview_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    code = run(
        _app(),
        ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", "--holdout-types", "wet_patch", *TINY],
    )
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["counts"] == {
        "bulk_ore": {
            "train": {"good": 1},
            "test": {"good": 2, "foreign_object": 1, "wet_patch": 1, "wrong_material": 1, "oversize_lump": 1},
        }
    }
    assert meta["holdout_types"] == ["wet_patch"]
    assert (out / "manifest.csv").read_text().count("\n") == 1 + 6
    sheet = tmp_path / "sheet.png"
    assert run(_app(), ["data", "preview", str(out), "--out", str(sheet), "--per-type", "2"]) == 0
    img = cv2.imread(str(sheet))
    # One row per type (good + 4 anomaly types) of 128 px thumbnails, a 190 px label column.
    assert img.shape == (5 * 128, 190 + 2 * 128, 3)
    assert capsys.readouterr().out.endswith(f"Wrote {sheet}\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cargo", "coal"], "Error: unknown cargo type 'coal'; accepted: bulk_ore, vacuum_pack, all\n"),
        (["--size", "32"], "Error: --size 32 is out of range; accepted: 64 to 4096 pixels\n"),
        (["--test-good", "-3"], "Error: --test-good -3 is negative; accepted: 0 or more images\n"),
        (["--workers", "65"], "Error: --workers 65 is out of range; accepted: 1 to 64\n"),  # each a process
        (
            ["--cargo", "vacuum_pack", "--holdout-types", "wet_patch"],
            "Error: unknown holdout type 'wet_patch'; accepted for vacuum_pack: air_pocket, foreign_object, "
            "puncture, seal_defect\n",
        ),
    ],
)
def test_synth_argument_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(_app(), ["data", "synth", "--out", str(tmp_path / "x"), *args])
    assert code == 2
    assert capsys.readouterr().err == message
    assert not (tmp_path / "x").exists()


def test_preview_of_a_folder_that_is_not_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ds").mkdir()
    code = run(_app(), ["data", "preview", str(tmp_path / "ds"), "--out", str(tmp_path / "s.png")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"Error: {tmp_path / 'ds' / 'dataset.json'} is missing or unreadable; expected a folder written by "
        "`clearsight data synth`\n"
    )


def test_preview_never_writes_into_the_dataset_nor_over_a_file_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ds"
    assert run(_app(), ["data", "synth", "--out", str(root), "--cargo", "bulk_ore", *TINY]) == 0
    picture = next((root / "bulk_ore" / "train" / "good").iterdir())
    kept = {p: p.read_bytes() for p in (root / "manifest.csv", root / "dataset.json", picture)}
    capsys.readouterr()
    # over its manifest it broke the dataset; as a "good" training picture a model trained on it
    for out in (*kept, root / "bulk_ore" / "test" / "sheet.png"):
        assert run(_app(), ["data", "preview", str(root), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"Error: --out {str(out)!r} lies inside the dataset {str(root)!r}: the contact sheet would "
            "replace or join the dataset's files; give a file outside it\n"
        )
    assert {p: p.read_bytes() for p in kept} == kept
    assert not (root / "bulk_ore" / "test" / "sheet.png").exists()
    # any file outside it is kept unless told
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"mine")
    assert run(_app(), ["data", "preview", str(root), "--out", str(notes)]) == 2
    assert capsys.readouterr().err == (
        f"Error: --out {str(notes)!r} already exists; pass --overwrite to replace it\n"
    )
    assert notes.read_bytes() == b"mine"
    assert run(_app(), ["data", "preview", str(root), "--out", str(notes), "--overwrite"]) == 0
    assert cv2.imread(str(notes)) is not None


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("synth", "preview"):
        assert run(_app(), ["data", command, "--help"]) == 0
    assert "Draw ONE contact sheet" in capsys.readouterr().out


def test_synth_never_mixes_two_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY]
    assert run(_app(), [*base, "--test-good", "3"]) == 0
    capsys.readouterr()
    assert run(_app(), base) == 2
    assert (
        "is not empty: rendering into it would mix two datasets; pass --overwrite" in capsys.readouterr().err
    )
    assert run(_app(), [*base, "--overwrite"]) == 0  # the smaller run leaves nothing of the larger
    assert len(list((out / "bulk_ore" / "test" / "good").iterdir())) == 2
    capsys.readouterr()
    # a bad argument beside --overwrite stops before the earlier dataset is removed
    assert run(_app(), [*base, "--overwrite", "--holdout-types", "punture"]) == 2
    assert "punture" in capsys.readouterr().err and (out / "dataset.json").is_file()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not ours")
    assert (
        run(_app(), ["data", "synth", "--out", str(other), "--cargo", "bulk_ore", *TINY, "--overwrite"]) == 2
    )
    assert "holds files that `clearsight data synth` did not write" in capsys.readouterr().err
    assert (other / "holiday.jpg").exists()


def test_an_interrupted_synth_can_be_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.cli.data as data_cli

    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY]

    def interrupted(config, progress, journal):  # noqa: ANN001, ANN202 - the generator's signature
        (config.out / "bulk_ore" / "train" / "good").mkdir(parents=True)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(data_cli, "generate_dataset", interrupted)
        assert run(_app(), base) == 130  # Ctrl-C: no dataset.json was written
    assert not (out / "dataset.json").exists()
    assert run(_app(), [*base, "--overwrite"]) == 0, capsys.readouterr().err
    assert (out / "dataset.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # the marker is gone


def test_overwrite_keeps_images_it_did_not_write_under_names_it_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the check matched names (NNNNNN.png in a type's folder), not the images dataset.json lists: images
    # added under such names, in a folder of a type the run never rendered too, went with the dataset
    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--test-anomalous", "0"]
    assert run(_app(), base) == 0
    added = [
        "bulk_ore/ground_truth/foreign_object/000000_mask.png",
        "bulk_ore/test/foreign_object/000000.png",
        "bulk_ore/train/good/000999.png",
    ]
    for rel in added:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"precious")
    capsys.readouterr()
    assert run(_app(), [*base, "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"Error: --out {str(out)!r} holds an earlier synthetic dataset and {', '.join(map(repr, added))} "
        "besides, which replacing the dataset would remove; move them out, or give a new folder\n"
    )
    assert [(out / rel).read_bytes() for rel in added] == [b"precious"] * 3


def test_an_interrupted_synth_is_replaced_only_with_the_files_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.cli.data as data_cli

    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--train-good", "2"]

    def interrupted(config, progress, journal):  # noqa: ANN001, ANN202 - the generator's signature
        first = "bulk_ore/train/good/000000.png"  # the run's first file
        (config.out / first).parent.mkdir(parents=True)
        with journal.open("a") as fh:  # as the generator journals a file, before writing it
            fh.write(json.dumps({"path": first, "sha256": hashlib.sha256(b"rendered").hexdigest()}) + "\n")
        (config.out / first).write_bytes(b"rendered")
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(data_cli, "generate_dataset", interrupted)
        assert run(_app(), base) == 130
    added = out / "bulk_ore" / "train" / "good" / "000999.png"  # no dataset.json: the run wrote 000000 only
    added.write_bytes(b"precious")
    capsys.readouterr()
    assert run(_app(), [*base, "--overwrite"]) == 2
    assert "and 'bulk_ore/train/good/000999.png' besides" in capsys.readouterr().err
    assert added.read_bytes() == b"precious"
    added.unlink()
    # planned (000001), but not written by the run: its journal does not name it
    unwritten = out / "bulk_ore" / "train" / "good" / "000001.png"
    unwritten.write_bytes(b"precious")
    assert run(_app(), [*base, "--overwrite"]) == 2
    assert "and 'bulk_ore/train/good/000001.png' besides" in capsys.readouterr().err
    unwritten.unlink()
    # written by the run, then saved over
    (out / "bulk_ore" / "train" / "good" / "000000.png").write_bytes(b"precious")
    assert run(_app(), [*base, "--overwrite"]) == 2
    assert "whose 'bulk_ore/train/good/000000.png' holds other bytes" in capsys.readouterr().err
    (out / "bulk_ore" / "train" / "good" / "000000.png").write_bytes(b"rendered")
    assert run(_app(), [*base, "--overwrite"]) == 0, capsys.readouterr().err
    # a marker that lists no files (an earlier version's) vouches for no image
    shutil.rmtree(out)
    (out / "bulk_ore" / "train" / "good").mkdir(parents=True)
    (out / ".clearsight-synth-rendering").write_text("an interrupted `clearsight data synth` if still here\n")
    (out / "bulk_ore" / "train" / "good" / "000000.png").write_bytes(b"precious")
    assert run(_app(), [*base, "--overwrite"]) == 2
    assert "and 'bulk_ore/train/good/000000.png' besides" in capsys.readouterr().err


def test_overwrite_keeps_a_file_saved_under_a_name_the_dataset_lists(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ownership was by path alone: a file of the user's saved over one of the dataset's went with it
    out = tmp_path / "ds"
    shutil.copytree(earlier, out)
    saved = ["bulk_ore/ground_truth/foreign_object/000000_mask.png", "bulk_ore/train/good/000000.png"]
    for rel in saved:
        (out / rel).write_bytes(b"USER PRECIOUS")
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"]
    assert run(_app(), base) == 2
    assert capsys.readouterr().err == (
        f"Error: --out {str(out)!r} holds an earlier synthetic dataset whose {', '.join(map(repr, saved))} "
        "hold other bytes than `clearsight data synth` wrote there (saved over since), which replacing the "
        "dataset would remove; move them out, or give a new folder\n"
    )
    assert [(out / rel).read_bytes() for rel in saved] == [b"USER PRECIOUS"] * 2
    (out / saved[0]).unlink()
    assert run(_app(), base) == 2
    assert f"whose {saved[1]!r} holds other bytes" in capsys.readouterr().err
    (out / saved[1]).write_bytes((earlier / saved[1]).read_bytes())  # the generator's bytes again
    assert run(_app(), base) == 0, capsys.readouterr().err


def test_overwrite_keeps_a_manifest_the_user_edited(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # manifest.csv was the generator's by its name alone: a line the user appended went with the dataset
    out = tmp_path / "ds"
    shutil.copytree(earlier, out)
    written = (out / "manifest.csv").read_bytes()
    edited = written + b"bulk_ore/test/good/000001.png,SHP-USER,bulk_ore\n"
    (out / "manifest.csv").write_bytes(edited)
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"]
    assert run(_app(), base) == 2
    assert capsys.readouterr().err == (
        f"Error: --out {str(out)!r} holds an earlier synthetic dataset whose 'manifest.csv' holds other "
        "bytes than `clearsight data synth` wrote there (saved over since), which replacing the dataset "
        "would remove; move it out, or give a new folder\n"
    )
    assert (out / "manifest.csv").read_bytes() == edited
    # a dataset.json that records no manifest sha256 (an earlier one's) keeps the rule by name
    meta = json.loads((out / "dataset.json").read_text())
    del meta["manifest_sha256"]
    (out / "dataset.json").write_text(json.dumps(meta))
    assert run(_app(), base) == 0, capsys.readouterr().err
    assert (out / "manifest.csv").read_bytes() == written


def test_a_dataset_of_an_earlier_version_keeps_the_path_rule(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a dataset.json before 2.2, or a marker of its run, records no sha256: its files are its own
    # by their paths, as they were
    out = tmp_path / "ds"
    shutil.copytree(earlier, out)
    meta = json.loads((out / "dataset.json").read_text())
    for entry in meta["images"]:
        del entry["sha256"], entry["mask_sha256"]
    (out / "dataset.json").write_text(json.dumps(meta))
    (out / "bulk_ore" / "train" / "good" / "000000.png").write_bytes(b"changed")
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"]
    assert run(_app(), base) == 0, capsys.readouterr().err
    files = sorted(str(p.relative_to(out)) for p in out.glob("bulk_ore/*/*/*.png"))
    (out / "dataset.json").unlink()
    (out / ".clearsight-synth-rendering").write_text(json.dumps({"note": "", "files": files}, indent=0))
    (out / "bulk_ore" / "train" / "good" / "000000.png").write_bytes(b"changed")
    assert run(_app(), base) == 0, capsys.readouterr().err


def test_a_synth_killed_while_rendering_can_be_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the generator's journal in the marker vouches for what it wrote before it was stopped
    import pipeline.cli.data as data_cli

    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY]
    generate = data_cli.generate_dataset

    def stopped(config, progress, journal):  # noqa: ANN001, ANN202 - the generator's signature
        def stop(done: int, total: int) -> None:
            if done == 4:
                raise KeyboardInterrupt

        return generate(config, progress=stop, journal=journal)

    with monkeypatch.context() as patched:
        patched.setattr(data_cli, "generate_dataset", stopped)
        assert run(_app(), base) == 130
    assert not (out / "dataset.json").exists()
    assert len(list(out.glob("bulk_ore/*/*/*.png"))) == 5  # four images, the last with its mask
    assert run(_app(), [*base, "--overwrite"]) == 0, capsys.readouterr().err


def test_a_synth_killed_while_writing_an_image_can_be_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # an image was written in place after its journal line: cut short, it held other bytes than the
    # line vouched for, and the next --overwrite refused it as saved over by the user
    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY]
    write_bytes = Path.write_bytes
    written: list[Path] = []

    def cut_short(path: Path, data: bytes) -> int:
        written.append(path)
        if len(written) < 3:
            return write_bytes(path, data)
        write_bytes(path, data[: len(data) // 2])
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_bytes", cut_short)
        assert run(_app(), base) == 130
    assert len(list(out.glob("bulk_ore/*/*/*.png"))) == 2  # the one cut short is not under its name
    capsys.readouterr()
    assert run(_app(), [*base, "--overwrite"]) == 0, capsys.readouterr().err
    assert not list(out.glob("bulk_ore/*/*/.*"))


def test_a_synth_killed_while_writing_its_dataset_json_can_be_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # dataset.json was written in place: cut short, it named no generator, and the next --overwrite
    # refused the folder as another tool's
    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY]
    write_text = Path.write_text

    def cut_short(path: Path, text: str, *args: object, **kwargs: object) -> int:
        if '"generator_version"' not in text:
            return write_text(path, text, *args, **kwargs)
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_text", cut_short)
        assert run(_app(), base) == 130
    assert run(_app(), [*base, "--overwrite"]) == 0, capsys.readouterr().err
    assert json.loads((out / "dataset.json").read_text())["generator"] == "clearsight.datasets.synth"
    assert sorted(p.name for p in out.iterdir()) == ["bulk_ore", "dataset.json", "manifest.csv"]


def test_an_overwrite_cut_short_can_be_replaced_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, earlier: Path
) -> None:
    # Ctrl-C while the earlier dataset was being removed, after its dataset.json went: the next
    # --overwrite refused the folder as another tool's, and it had to be removed by hand
    out = tmp_path / "ds"
    shutil.copytree(earlier, out)
    base = ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"]
    with monkeypatch.context() as patched:
        patched.setattr(Path, "unlink", lambda path, missing_ok=False: _unlink_then_stop(path, out))
        assert run(_app(), base) == 130
    assert not (out / "dataset.json").exists() and (out / "manifest.csv").exists()
    assert run(_app(), base) == 0, capsys.readouterr().err
    assert (out / "dataset.json").is_file()


def _unlink_then_stop(path: Path, out: Path) -> None:
    """Path.unlink that stops (as Ctrl-C) right after dataset.json is removed."""
    os.unlink(path)
    if path == out / "dataset.json":
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset as `data synth` writes it, copied by the tests that add to it."""
    out = tmp_path_factory.mktemp("earlier") / "ds"
    assert run(_app(), ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY]) == 0
    return out


def _nnunet(out: Path) -> None:
    (out / "imagesTr").mkdir(parents=True)
    (out / "imagesTr" / "case_0001.nii.gz").write_bytes(b"scan")
    (out / "dataset.json").write_text('{"name": "Task01_BrainTumour", "labels": {"0": "background"}}')


def _synth_plus(rel: str, *, folder: bool = False) -> Callable[[Path, Path], None]:
    def make(earlier: Path, out: Path) -> None:
        shutil.copytree(earlier, out)
        if folder:
            (out / rel).mkdir()
        else:
            (out / rel).write_bytes(b"precious")

    return make


@pytest.mark.parametrize(
    ("make", "kept", "message"),
    [
        (
            lambda earlier, out: _nnunet(out),
            "imagesTr/case_0001.nii.gz",
            "holds files that `clearsight data synth` did not write (its dataset.json is another tool's; "
            "it holds 'imagesTr/'); --overwrite only replaces an earlier synthetic dataset: give a new "
            "folder",
        ),
        (
            _synth_plus("notes.txt"),
            "notes.txt",
            "holds an earlier synthetic dataset and 'notes.txt' besides, which replacing the dataset would "
            "remove; move them out, or give a new folder",
        ),
        (
            _synth_plus("bulk_ore/test/good/scan.jpg"),
            "bulk_ore/test/good/scan.jpg",
            "holds an earlier synthetic dataset and 'bulk_ore/test/good/scan.jpg' besides",
        ),
        (
            _synth_plus("bulk_ore/labels", folder=True),
            "bulk_ore/labels",
            "holds an earlier synthetic dataset and 'bulk_ore/labels/' besides",
        ),
        (
            _synth_plus("vacuum_pack", folder=True),  # a cargo's name, but empty: not what it writes there
            "vacuum_pack",
            None,
        ),
    ],
    ids=["nnunet_dataset_json", "file_beside", "file_among_images", "folder_in_cargo", "empty_cargo_folder"],
)
def test_overwrite_replaces_only_a_folder_holding_nothing_but_a_synthetic_dataset(
    make: Callable[[Path, Path], None],
    kept: str,
    message: str | None,
    earlier: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    make(earlier, out)
    code = run(_app(), ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"])
    err = capsys.readouterr().err
    if message is None:  # an empty folder of a cargo's name is one the generator makes: replaced
        assert code == 0, err
        assert not (out / kept).exists()
        return
    assert code == 2
    assert err.startswith(f"Error: --out {str(out)!r} {message}")
    assert (out / kept).exists()


def test_a_link_inside_a_synthetic_dataset_is_not_its_own(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    (out / "bulk_ore" / "test" / "foreign_object").rename(tmp_path / "fo")
    (out / "bulk_ore" / "test" / "foreign_object").symlink_to(tmp_path / "fo")
    code = run(_app(), ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"])
    assert code == 2
    assert "and 'bulk_ore/test/foreign_object/' besides" in capsys.readouterr().err


def test_overwrite_through_a_link_replaces_the_dataset_in_the_folder_it_names(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real"
    shutil.copytree(earlier, real)
    link = tmp_path / "link"
    link.symlink_to(real)
    base = ["data", "synth", "--out", str(link), "--cargo", "bulk_ore", *TINY]
    assert run(_app(), [*base, "--test-good", "1", "--overwrite"]) == 0, capsys.readouterr().err
    assert link.is_symlink()
    assert sorted(p.name for p in (real / "bulk_ore" / "test" / "good").iterdir()) == ["000001.png"]


@pytest.mark.parametrize(
    ("make", "given", "message"),
    [
        (
            lambda tmp: (tmp / "file").write_text("x"),
            "file/ds",
            "cannot be made or written (Not a directory); give a folder you may write, under one that "
            "exists or can be made\n",
        ),
        (
            lambda tmp: (tmp / "dangling").symlink_to(tmp / "gone"),
            "dangling",
            "is a link to '{tmp}/gone', which does not exist; give a folder, or make the one the link "
            "names\n",
        ),
    ],
    ids=["parent_is_a_file", "dangling_link"],
)
def test_an_out_that_cannot_be_made_is_named(
    make: Callable[[Path], object],
    given: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make(tmp_path)
    out = tmp_path / given
    code = run(_app(), ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"])
    assert code == 2
    assert capsys.readouterr().err == f"Error: --out {str(out)!r} " + message.format(tmp=tmp_path)


def test_an_earlier_dataset_that_cannot_be_removed_is_named(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    shutil.copytree(earlier, out)

    def refused(path: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refused)  # running as root, chmod would not stop it
    code = run(_app(), ["data", "synth", "--out", str(out), "--cargo", "bulk_ore", *TINY, "--overwrite"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"Error: --out {str(out)!r}: cannot remove the earlier synthetic dataset (Permission denied); "
        "check that you may write there, or give a new folder\n"
    )
