"""`clearsight train --out`: a folder the model cannot be written to is refused before training, and
a save that fails (a full disk) is named and leaves nothing of the model behind."""

from __future__ import annotations

import errno
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from train_builders import write_noise_normals  # noqa: E402

from datasets.errors import InputError
from pipeline.cli import app, run
from pipeline.train.model_folder import check_out_dir, save_in_place_of

NO_DETECTOR: Any = None  # the fake saves below write no weights


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("out", "match"),
    [
        # os.access says yes to root on /proc: the save failed there after the whole training
        ("/proc/clearsight-model", r"^--out '/proc/clearsight-model': cannot write under '/proc' \("),
        ("/proc/clearsight/models/m", r"^--out '/proc/clearsight/models/m': cannot write under '/proc' \("),
        ("/dev/null/m", r"^--out '/dev/null/m': cannot write under '/dev/null' \(Not a directory\)"),
    ],
)
def test_an_out_that_cannot_be_written_is_refused(tmp_path: Path, out: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_out_dir(Path(out), tmp_path / "bulk_ore", overwrite=False)


@pytest.mark.parametrize("out", ["model", "a/b/model", "empty"])
def test_trying_the_out_leaves_nothing(tmp_path: Path, out: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".gitkeep").write_text("")
    before = _listing(tmp_path)
    check_out_dir(tmp_path / out, tmp_path / "bulk_ore", overwrite=False)
    assert _listing(tmp_path) == before


def test_train_refuses_an_out_it_cannot_write_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_noise_normals(tmp_path / "bulk_ore", 4)
    args = ["--image-size", "32", "--pad", "0", "--threads", "1"]
    code = run(app, ["train", "--data", str(tmp_path / "bulk_ore"), "--out", "/proc/clearsight-m", *args])
    err = capsys.readouterr().err
    assert code == 2
    # refused before any stage began: no progress, the error alone
    assert err.strip().startswith("Error: --out '/proc/clearsight-m': cannot write under '/proc' (")


def _fills_the_disk(out: Path, detector: Any, card: dict[str, Any]) -> Path:
    """save_artifact on a full disk: the weights' temporary file begun, then ENOSPC."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.safetensors.tmp").write_bytes(b"half of the weights")
    raise OSError(errno.ENOSPC, "No space left on device")


# a new --out, one in folders made for it (they go too), an empty one (it stays, as it was)
@pytest.mark.parametrize("out", ["model", "a/b/model", "empty"])
def test_a_save_that_fails_is_named_and_leaves_nothing(tmp_path: Path, out: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".gitkeep").write_text("")
    said = rf"^--out '{re.escape(str(tmp_path / out))}': cannot write the model there \(No space left on"
    with pytest.raises(InputError, match=said):
        save_in_place_of(tmp_path / out, NO_DETECTOR, {}, save=_fills_the_disk)
    assert _listing(tmp_path) == ["empty", "empty/.gitkeep"]


def test_a_replacing_save_that_fails_keeps_the_model_there(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    with pytest.raises(InputError, match=r"cannot put the new model in place \(No space left on device\)$"):
        save_in_place_of(tmp_path / "model", NO_DETECTOR, {}, save=_fills_the_disk)
    assert _listing(tmp_path) == ["model", "model/model.json"]
