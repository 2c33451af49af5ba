"""iter_image_paths: files, folders and globs expanded in a fixed order, bad inputs named."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.errors import DatasetFormatError
from datasets.folder import IMAGE_EXTENSIONS, is_image_file, is_manifest, iter_image_paths

FILES = [
    "a/2.png",
    "a/1.JPG",
    "a/sub/3.tiff",
    "a/.hidden/4.png",
    "a/.DS_Store",
    "a/Thumbs.db",
    "a/notes.txt",
    "b/5.webp",
    "b/6.bmp",
    "c/readme.md",
]


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (["a"], ["a/1.JPG", "a/2.png", "a/sub/3.tiff"]),
        (["b", "a/2.png"], ["b/5.webp", "b/6.bmp", "a/2.png"]),
        (["a/2.png", "a", "a/2.png"], ["a/2.png", "a/1.JPG", "a/sub/3.tiff"]),
        (["*/*.png"], ["a/2.png"]),
        (["**/*.png"], ["a/2.png"]),
        (["a/*"], ["a/1.JPG", "a/2.png", "a/sub/3.tiff"]),
        (["b/[5]*"], ["b/5.webp"]),
        (["b/?.bmp", "b"], ["b/6.bmp", "b/5.webp"]),
    ],
    ids=[
        "folder",
        "order-of-inputs",
        "duplicates",
        "glob",
        "recursive-glob",
        "glob-dirs",
        "glob-set",
        "glob-then-folder",
    ],
)
def test_expansion(tree: Path, inputs: list[str], expected: list[str]) -> None:
    assert [p.as_posix() for p in iter_image_paths(inputs)] == expected


def test_same_file_by_two_spellings_is_yielded_once(tree: Path) -> None:
    assert list(iter_image_paths([tree / "b" / "6.bmp", "b/6.bmp", "b/../b/6.bmp"])) == [tree / "b" / "6.bmp"]


def test_a_linked_folder_is_searched(tree: Path) -> None:
    (tree / "a" / "linked").symlink_to(tree / "b", target_is_directory=True)
    assert [p.as_posix() for p in iter_image_paths(["a"])] == [
        "a/1.JPG",
        "a/2.png",
        "a/linked/5.webp",
        "a/linked/6.bmp",
        "a/sub/3.tiff",
    ]


def test_a_link_loop_ends_and_each_real_folder_is_searched_once(tree: Path) -> None:
    (tree / "a" / "sub" / "up").symlink_to(tree / "a", target_is_directory=True)
    (tree / "a" / "again").symlink_to(tree / "a" / "sub", target_is_directory=True)
    assert [p.as_posix() for p in iter_image_paths(["a"])] == ["a/1.JPG", "a/2.png", "a/sub/3.tiff"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["missing"], "missing: no such file or folder"),
        (["a", "missing"], "missing: no such file or folder"),
        (
            ["*.gif"],
            "*.gif: pattern matches no images (accepted extensions: "
            ".bmp, .jfif, .jpe, .jpeg, .jpg, .png, .tif, .tiff, .webp)",
        ),
        (
            ["c"],
            "c: folder contains no images (accepted extensions: "
            ".bmp, .jfif, .jpe, .jpeg, .jpg, .png, .tif, .tiff, .webp)",
        ),
        (
            ["a/notes.txt"],
            "a/notes.txt: not an image file (accepted extensions: "
            ".bmp, .jfif, .jpe, .jpeg, .jpg, .png, .tif, .tiff, .webp)",
        ),
    ],
    ids=["missing", "missing-after-good", "empty-glob", "no-images", "not-image"],
)
def test_bad_inputs_fail_before_anything_is_yielded(tree: Path, inputs: list[str], message: str) -> None:
    paths = iter_image_paths(inputs)
    with pytest.raises(DatasetFormatError) as info:
        next(paths)
    assert str(info.value) == message


@pytest.mark.parametrize("inputs", [["a"], ["**/*.png"]], ids=["folder", "recursive-glob"])
def test_a_folder_that_cannot_be_listed_is_refused_not_skipped(
    tree: Path, monkeypatch: pytest.MonkeyPatch, inputs: list[str]
) -> None:
    # os.walk skipped it: a day's folder with wrong permissions lost all its images, exit 0
    import os

    from datasets.errors import InputError

    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str] = ".") -> object:
        if Path(path).name == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError, match=r"cannot list the folder '.*sub' \(Permission denied\)"):
        list(iter_image_paths(inputs))


@pytest.mark.parametrize(
    ("folder", "error", "mount"),
    [
        # root's alone at an ext4 volume's root: never cargo
        ("lost+found", PermissionError(13, "Permission denied"), True),
        ("tmp-upload", FileNotFoundError(2, "No such file or directory"), False),  # gone since seen
    ],
)
def test_a_volumes_lost_and_found_and_a_folder_gone_mid_walk_are_skipped(
    tree: Path, monkeypatch: pytest.MonkeyPatch, folder: str, error: OSError, mount: bool
) -> None:
    import os

    (tree / "a" / folder).mkdir()
    real_scandir, real_ismount = os.scandir, os.path.ismount

    def scandir(path: str | os.PathLike[str] = ".") -> object:
        if Path(path).name == folder:
            error.filename = str(path)
            raise error
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os.path, "ismount", lambda p: (mount and Path(p).name == "a") or real_ismount(p))
    assert [p.as_posix() for p in iter_image_paths(["a"])] == ["a/1.JPG", "a/2.png", "a/sub/3.tiff"]


def test_a_volumes_lost_and_found_reached_through_a_link_is_skipped(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an archive of linked volumes: ismount of the link's spelling said no, and the run stopped
    import os

    volume = tree / "volume"
    (volume / "lost+found").mkdir(parents=True)
    (volume / "x.png").write_bytes(b"x")
    (tree / "a" / "day2").symlink_to(volume)
    real_scandir, real_ismount = os.scandir, os.path.ismount

    def scandir(path: str | os.PathLike[str] = ".") -> object:
        if Path(path).name == "lost+found":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    # the volume's root is a mount point, as lstat sees it only at its real path
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(volume) or real_ismount(p))
    assert "a/day2/x.png" in [p.as_posix() for p in iter_image_paths(["a"])]


def test_an_unreadable_cargo_folder_named_lost_and_found_is_refused(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only a volume's own, at a mount point's root, is the file system's: a cargo folder of that
    # name deeper in an archive lost its images silently again
    import os

    from datasets.errors import InputError

    (tree / "a" / "sub" / "lost+found").mkdir()
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str] = ".") -> object:
        if Path(path).name == "lost+found":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError, match=r"cannot list the folder '.*sub/lost\+found'"):
        list(iter_image_paths(["a"]))


@pytest.mark.parametrize(
    ("name", "image", "manifest"),
    [
        ("x.PNG", True, False),
        ("x.jpeg", True, False),
        ("x.tif", True, False),
        ("x.jfif", True, False),
        ("x.JPE", True, False),
        ("x.gif", False, False),
        ("m.csv", False, True),
        ("m.JSONL", False, True),
        ("m.ndjson", False, True),
        ("m.json", False, False),
    ],
)
def test_classifiers(name: str, image: bool, manifest: bool) -> None:
    assert (is_image_file(name), is_manifest(name)) == (image, manifest)


def test_extensions_match_the_decoder_formats() -> None:
    assert {".bmp", ".jfif", ".jpe", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"} == IMAGE_EXTENSIONS


@pytest.mark.parametrize("name", ["scan.jfif", "scan.JPE"])
def test_a_jpeg_named_as_some_scanners_name_it_is_found_and_decoded(tmp_path: Path, name: str) -> None:
    """A folder's .jfif and .jpe pictures (JPEG, as some scanners and browsers name it) were left out
    without a word, and one given by name was refused as no image."""
    import cv2
    import numpy as np

    from datasets.decode import decode_image

    ok, data = cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))
    (tmp_path / name).write_bytes(data.tobytes())
    assert list(iter_image_paths([tmp_path])) == [tmp_path / name]
    assert list(iter_image_paths([tmp_path / name])) == [tmp_path / name]
    assert decode_image(tmp_path / name).pixels.shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (["a"], ["a/notes.txt"]),
        (["a", "c", "b"], ["a/notes.txt", "c/readme.md"]),
        (["*"], ["a/notes.txt", "c/readme.md"]),
        (["c/*"], ["c/readme.md"]),
        (["**"], ["a/notes.txt", "c/readme.md"]),
        (["a/**", "c/**"], ["a/notes.txt", "c/readme.md"]),
        (["*/*.png", "**/*.png"], []),  # asked for by extension: none left out
    ],
)
def test_the_files_a_walk_leaves_out_are_told(tree: Path, inputs: list[str], expected: list[str]) -> None:
    """Files of another extension were skipped without a word (no row, no count, exit 0); hidden
    files and OS litter (.DS_Store, Thumbs.db) stay unsaid."""
    (tree / "c" / "x.png").write_bytes(b"x")  # a glob or folder of c has images, as a walk needs
    told: list[str] = []
    list(iter_image_paths(inputs, left_out=lambda path: told.append(path.as_posix())))
    assert told == expected


def test_a_link_to_a_hidden_folder_is_searched(tree: Path) -> None:
    (tree / "a" / ".cache").mkdir()
    (tree / "a" / ".cache" / "7.png").write_bytes(b"x")
    (tree / "a" / "visible").symlink_to(tree / "a" / ".cache", target_is_directory=True)
    assert "a/visible/7.png" in [p.as_posix() for p in iter_image_paths(["a"])]


def test_a_recursive_glob_ends_on_a_link_loop(tree: Path) -> None:
    # two links per level: glob itself would walk 2**depth paths before the names grow too long
    (tree / "a" / "sub" / "up").symlink_to(tree / "a", target_is_directory=True)
    (tree / "a" / "sub" / "again").symlink_to(tree / "a" / "sub", target_is_directory=True)
    assert [p.as_posix() for p in iter_image_paths(["a/**/*.png", "a/**/*.tiff"])] == [
        "a/2.png",
        "a/sub/3.tiff",
    ]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("**/sub", ["a/sub/3.tiff"]),  # a folder the pattern names stands for the images under it
        ("[ab]/**/*.png", ["a/2.png"]),  # a wildcard before ** is globbed, not the whole tree walked
        ("b/**", ["b/5.webp", "b/6.bmp"]),
        ("a/**/*/", ["a/sub/3.tiff"]),  # ending in a separator: folders only, not a's own images
        ("a/**/*", ["a/1.JPG", "a/2.png", "a/sub/3.tiff"]),  # a wildcard never matches a hidden name
        ("a/**/.hidden/*.png", ["a/.hidden/4.png"]),  # a hidden folder the pattern names is searched
        ("**/.hidden", ["a/.hidden/4.png"]),
        ("**/.h*/*", ["a/.hidden/4.png"]),
    ],
)
def test_recursive_globs_match_as_glob_does(tree: Path, pattern: str, expected: list[str]) -> None:
    assert [p.as_posix() for p in iter_image_paths([pattern])] == expected


def test_recursive_globs_agree_with_glob_on_a_tree_without_links(tree: Path) -> None:
    """glob itself is the reference where it ends (no link loops): a folder it matches stands for the
    images a walk of it finds."""
    import glob as reference

    from datasets.folder import is_hidden

    (tree / "a" / "sub" / ".deep").mkdir()
    (tree / "a" / "sub" / ".deep" / "8.png").write_bytes(b"x")
    (tree / "a" / ".hidden" / "in").mkdir()
    (tree / "a" / ".hidden" / "in" / "9.png").write_bytes(b"x")
    patterns = ["**", "**/*", "a/**", "a/**/", "**/*.png", "**/sub", "**/sub/", "a/**/.hidden",
                "a/**/.hidden/**", "**/.deep/*", "**/.*", "**/in/*.png", "a/**/s*/**/*.png"]  # fmt: skip
    for pattern in patterns:
        expected: set[str] = set()
        for hit in map(Path, reference.glob(pattern, recursive=True)):
            if hit.is_dir():  # what a walk of it finds: hidden folders and files skipped
                expected |= {
                    p.as_posix()
                    for p in hit.rglob("*")
                    if is_image_file(p) and not any(is_hidden(x) for x in p.relative_to(hit).parts)
                }
            elif is_image_file(hit) and not is_hidden(hit.name):
                expected.add(hit.as_posix())
        try:
            got = {p.as_posix() for p in iter_image_paths([pattern])}
        except DatasetFormatError:
            got = set()
        assert got == expected, pattern


def test_a_double_star_inside_a_name_is_a_single_star(tree: Path) -> None:
    # glob recurses only on a part that is ** itself; "a**" is "a*", read at one depth
    assert [p.as_posix() for p in iter_image_paths(["*/2**"])] == ["a/2.png"]


def test_a_file_reached_under_a_second_name_is_told(tmp_path: Path) -> None:
    """Dropped without a word, a picture linked under a second name had no row and was counted
    nowhere (3 files, 2 rows)."""
    arc = tmp_path / "arc"
    for name in ("day1/a.png", "day1/b.png"):
        (arc / name).parent.mkdir(parents=True, exist_ok=True)
        (arc / name).write_bytes(b"x")
    (arc / "day2").mkdir()
    (arc / "day2" / "container_77.png").symlink_to(Path("..") / "day1" / "a.png")
    told: list[tuple[Path, Path]] = []
    found = list(iter_image_paths([arc], same_file=lambda dropped, kept: told.append((dropped, kept))))
    assert found == [arc / "day1" / "a.png", arc / "day1" / "b.png"]
    assert told == [(arc / "day2" / "container_77.png", arc / "day1" / "a.png")]
    assert list(iter_image_paths([arc])) == found  # told nothing where nobody asks
