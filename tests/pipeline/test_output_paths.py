"""Output paths that would overwrite an input, each other, or be scored as input are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.errors import InputError
from pipeline.cli.output_paths import check_name_fits, check_outputs_apart, check_writable


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "images" / "belt").mkdir(parents=True)
    (tmp_path / "images" / "belt" / "a.png").write_bytes(b"png")
    (tmp_path / "m.csv").write_text("path\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


CASES = [
    # (files, folders, inputs, the message's start or None when accepted)
    ({"--out": "rows.jsonl"}, {"--heatmaps": "heat"}, ["images", "m.csv"], None),
    ({"--out": "m.csv"}, {}, ["m.csv"], "--out '{root}/m.csv' is also an input ('m.csv')"),
    ({"--out": "./sub/../m.csv"}, {}, ["m.csv"], "--out '{root}/m.csv' is also an input"),
    (
        {"--out": "rows.jsonl", "--decisions": "rows.jsonl"},
        {},
        ["images"],
        "--out and --decisions are the same file '{root}/rows.jsonl'",
    ),
    (
        {"--out": "rows.jsonl"},
        {"--heatmaps": "images/heat"},
        ["images"],
        "--heatmaps '{root}/images/heat' lies inside",
    ),
    ({"--out": "rows.jsonl"}, {"--heatmaps": "images"}, ["images"], "--heatmaps '{root}/images' lies inside"),
    (
        {"--out": "rows.jsonl"},
        {"--heatmaps": "images/x"},
        ["images/*/*.png"],
        "--heatmaps '{root}/images/x' lies inside",
    ),
    ({"--out": "rows.jsonl"}, {"--heatmaps": "heat"}, ["images/*/*.png"], None),
    ({"--out": "rows.jsonl"}, {"--heatmaps": "images/heat"}, ["images/*.png"], None),  # one depth only
    # a folder a glob matches is walked whole: "images/*" would read images/heat next time
    (
        {"--out": "rows.jsonl"},
        {"--heatmaps": "images/heat"},
        ["images/*"],
        "--heatmaps '{root}/images/heat' lies inside",
    ),
    (
        {"--out": "rows.jsonl"},
        {"--heatmaps": "images/heat.png"},
        ["images/*.png"],
        "--heatmaps '{root}/images/heat.png' lies inside",
    ),
    (
        {"--out": "rows.jsonl"},
        {"--heatmaps": "images/belt/deep/heat"},
        ["images/*"],
        "--heatmaps '{root}/images/belt/deep/heat' lies inside",
    ),
    (
        {"--out": "rows.jsonl"},
        {"--heatmaps": "images/heat"},
        ["images/**/*.png"],
        "--heatmaps '{root}/images/heat' lies inside",
    ),
    ({"--out": "images/rows.jsonl"}, {}, ["images"], None),  # a rows file in a folder is not an image
    # the run made a folder at --out, then failed "already exists; pass --resume", leaving it
    (
        {"--out": "out"},
        {"--heatmaps": "out"},
        ["images"],
        "--heatmaps and --out are the same path '{root}/out': one is a folder, the other a file",
    ),
    ({"--out": "rows.jsonl", "--decisions": None}, {"--heatmaps": None}, ["rows.jsonl.bak"], None),
]


@pytest.mark.parametrize(("files", "folders", "inputs", "message"), CASES)
def test_outputs_apart(tree: Path, files, folders, inputs, message) -> None:
    paths = {k: Path(v) if v else None for k, v in files.items()}
    dirs = {k: Path(v) if v else None for k, v in folders.items()}
    if message is None:
        check_outputs_apart(files=paths, folders=dirs, inputs=inputs)
        return
    with pytest.raises(InputError) as info:
        check_outputs_apart(files=paths, folders=dirs, inputs=inputs)
    assert str(info.value).startswith(message.format(root=tree.resolve()))


def test_heatmaps_reached_through_a_linked_folder_of_an_input_are_refused(tree: Path) -> None:
    (tree / "heat").mkdir()
    (tree / "images" / "latest_heatmaps").symlink_to(tree / "heat", target_is_directory=True)
    with pytest.raises(InputError, match="--heatmaps '.*/heat' lies inside the input 'images'"):
        check_outputs_apart(
            files={"--out": Path("rows.jsonl")}, folders={"--heatmaps": Path("heat")}, inputs=["images"]
        )


@pytest.mark.parametrize("pattern", ["images/**/*.png", "images/*", "images/**"])
def test_heatmaps_reached_through_a_link_under_a_glob_are_refused(tree: Path, pattern: str) -> None:
    (tree / "heat").mkdir()
    (tree / "images" / "belt" / "latest_heatmaps").symlink_to(tree / "heat", target_is_directory=True)
    with pytest.raises(InputError, match="--heatmaps '.*/heat' lies inside the input"):
        check_outputs_apart(
            files={"--out": Path("rows.jsonl")}, folders={"--heatmaps": Path("heat")}, inputs=[pattern]
        )


WRITABLE = [
    # (path, a folder, the message or None when accepted)
    ("rows.jsonl", False, None),
    ("new/deeper/rows.jsonl", False, None),
    ("heat", True, None),
    ("images", True, None),
    # a folder where the file must go: found when written, after the models had loaded
    ("images", False, "--out 'images' is a folder; give a file"),
    ("folder_link", False, "--out 'folder_link' is a folder; give a file"),
    ("s_file/rows.jsonl", False, "--out 's_file/rows.jsonl': cannot make its folder: 's_file' is a file"),
    ("s_file/a/rows.jsonl", False, "--out 's_file/a/rows.jsonl': cannot make its folder: 's_file' is a file"),
    ("s_file", True, "--out 's_file': cannot make it: 's_file' is a file"),
    ("s_file/heat", True, "--out 's_file/heat': cannot make its folder: 's_file' is a file"),
    # os.access says yes to /proc: only making a file there tells
    (
        "/proc/clearsight-rows.jsonl",
        False,
        "--out '/proc/clearsight-rows.jsonl': no file can be made in '/proc' (",
    ),
    ("/proc/clearsight-heat/x", True, "--out '/proc/clearsight-heat/x': no file can be made in '/proc' ("),
    # a link that leads nowhere does not exist(): it passed, and making the output failed after the work
    ("hm_link", True, "--out 'hm_link': 'hm_link' is a link to a missing folder 'nowhere/hm'; make the"),
    ("hm_link/x", True, "--out 'hm_link/x': 'hm_link' is a link to a missing folder 'nowhere/hm'; make"),
    (
        "hm_link/d.jsonl",
        False,
        "--out 'hm_link/d.jsonl': 'hm_link' is a link to a missing folder 'nowhere/hm'",
    ),
    # a file output written through its link (a results file pointed into an archive): as before
    ("file_link", False, None),
    (
        "deep_file_link",
        False,
        "--out 'deep_file_link': 'deep_file_link' is a link to 'nowhere/gone.jsonl', which is in no "
        "existing folder",
    ),
    ("self_link", False, "--out 'self_link': 'self_link' is a link to 'self_link', which is in no existing"),
    ("loop/d.jsonl", False, "--out 'loop/d.jsonl': 'loop' is a link to a missing folder 'loop'"),
    ("folder_link/deeper/d.jsonl", False, None),  # links that lead somewhere are followed
    ("folder_link/heat", True, None),
    # a name longer than the file system takes: any look at it raised OSError ("File name too long")
    (
        "x" * 250 + ".jsonl",
        False,
        f"--out '{'x' * 250}.jsonl': its name is 256 bytes long, over the 255 the file system takes; give",
    ),
    ("é" * 128, True, f"--out '{'é' * 128}': its name is 256 bytes long, over the 255"),
    (
        "é" * 128 + "/rows.jsonl",
        False,
        f"--out '{'é' * 128}/rows.jsonl': the folder name '{'é' * 128}' in it is 256 bytes long",
    ),
    ("é" * 126 + ".ab", False, None),  # 255 bytes: taken
]


@pytest.mark.parametrize(("path", "folder", "message"), WRITABLE)
def test_an_output_that_cannot_be_made_is_refused_and_nothing_is_left(
    tree: Path, path: str, folder: bool, message: str | None
) -> None:
    from pipeline.cli.output_paths import check_writable

    (tree / "s_file").write_text("a file where a folder must go\n")
    links = [
        ("hm_link", "nowhere/hm"),
        ("file_link", "gone.jsonl"),
        ("deep_file_link", "nowhere/gone.jsonl"),
        ("self_link", "self_link"),
        ("loop", "loop"),
    ]
    for link, target in links:
        (tree / link).symlink_to(target)
    (tree / "folder_link").symlink_to("images")
    before = sorted(tree.rglob("*"))
    if message is None:
        check_writable("--out", Path(path), folder=folder)
    else:
        with pytest.raises(InputError) as info:
            check_writable("--out", Path(path), folder=folder)
        assert str(info.value).startswith(message)
    assert sorted(tree.rglob("*")) == before  # checked, not made


def _over_path_max(folder: Path) -> Path:
    """An output whose every name is short (200 bytes) but whose whole path is over PATH_MAX."""
    return folder.joinpath(*["d" * 200] * 21, "rows.parquet")


def test_check_name_fits_refuses_a_whole_path_over_path_max(tmp_path: Path) -> None:
    """Every name short, check_name_fits passed it, and the run ended in ``unexpected OSError``."""
    out = _over_path_max(tmp_path)
    with pytest.raises(
        InputError, match=r"^--out '.*/rows\.parquet': its whole path is \d+ bytes long, over"
    ):
        check_name_fits("--out", out)
    with pytest.raises(InputError, match="its whole path is"):
        check_writable("--out", out)
    check_name_fits("--out", tmp_path.joinpath(*["d" * 200] * 3, "rows.parquet"))  # fits
