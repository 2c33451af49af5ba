"""`clearsight data synth` and `clearsight data preview` end to end on a tiny dataset, and their errors."""

from __future__ import annotations

import json
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
    code = run(_app(), ["data", "preview", str(tmp_path), "--out", str(tmp_path / "s.png")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"Error: {tmp_path / 'dataset.json'} is missing or unreadable; expected a folder written by "
        "`clearsight data synth`\n"
    )


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
    # a bad argument beside --overwrite removed the earlier dataset, then stopped
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

    def interrupted(config, progress):  # noqa: ANN001, ANN202 - the generator's signature
        (config.out / "bulk_ore" / "train" / "good").mkdir(parents=True)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(data_cli, "generate_dataset", interrupted)
        assert run(_app(), base) == 130  # Ctrl-C: no dataset.json was written
    assert not (out / "dataset.json").exists()
    assert run(_app(), [*base, "--overwrite"]) == 0, capsys.readouterr().err
    assert (out / "dataset.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # the marker is gone
