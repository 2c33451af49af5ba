"""Plain folders, files and glob patterns: the images to score when there are no labels."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from datasets.errors import DatasetFormatError, InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "SameFile",
    "extensions_text",
    "is_hidden",
    "is_image_file",
    "is_manifest",
    "iter_image_paths",
    "recursive_roots",
    "searched_folders",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".bmp", ".jfif", ".jpe", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
)
"""File extensions taken as images (compared lower-cased), the formats ``decode_image`` reads (which
tells a format by its bytes): ``.jfif`` and ``.jpe`` are JPEG as some scanners and browsers name it,
and a folder's pictures so named were left out."""

LeftOut = Callable[[Path], None]
"""Told each file a folder or glob input leaves out for its extension (not a hidden one)."""

SameFile = Callable[[Path, Path], None]
"""Told each image path an input leaves out because it names a file yielded already (a link to it,
another spelling of its path), with the path yielded for that file: (left out, yielded)."""

MANIFEST_EXTENSIONS: frozenset[str] = frozenset({".csv", ".jsonl", ".ndjson"})
"""File extensions taken as inspection manifests (see ``datasets.manifest``)."""

# Operating-system litter that sits beside images and is never meant as data.
_LITTER = frozenset({"thumbs.db", "desktop.ini"})
_GLOB_CHARS = frozenset("*?[")


def extensions_text() -> str:
    """The accepted image extensions, for error messages."""
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has an image extension (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    """Dot-files (``.DS_Store``, ``._x.png``) and OS litter (``Thumbs.db``): skipped, never reported."""
    return name.startswith(".") or name.lower() in _LITTER


def is_manifest(path: str | Path) -> bool:
    """Whether a scoring input names a manifest (``.csv``, ``.jsonl``, ``.ndjson``) rather than images."""
    return Path(path).suffix.lower() in MANIFEST_EXTENSIONS


def iter_image_paths(
    inputs: Sequence[str | Path], *, left_out: LeftOut | None = None, same_file: SameFile | None = None
) -> Iterator[Path]:
    """Expand files, folders and glob patterns into image paths.

    Args:
        inputs: each a file (must have an image extension), a folder (searched recursively for
            image extensions, case-insensitive; hidden files and folders skipped; linked folders
            followed, each real folder once, so a link loop ends) or a glob pattern (``*``, ``?``,
            ``[...]``; ``**`` recurses; non-image matches are skipped).
        left_out: called with each file a folder or glob leaves out for its extension (a ``.gif``,
            a ``.txt``; hidden files and OS litter never), as the inputs are expanded: skipped
            without a word, they looked scored.
        same_file: called with each path left out because it names a file yielded already, and
            the path yielded for it: dropped without a word, a picture linked under a second name
            had no row and was counted nowhere (3 files, 2 rows).

    Yields:
        Image paths, spelled as found from the input: inputs in the order given, each input's
        matches sorted; a file reached twice (even by different spellings) is yielded once.

    Raises:
        DatasetFormatError: before anything is yielded, for an input that does not exist, a glob
            or folder with no images, or a file that is not an image.
    """
    expanded = [(str(item), _expand(str(item), left_out)) for item in inputs]
    seen: dict[str, Path] = {}  # real path -> the path yielded for it
    for _, paths in expanded:
        for path in paths:
            key = os.path.realpath(path)
            if key not in seen:
                seen[key] = path
                yield path
            elif same_file is not None:
                same_file(path, seen[key])


def _expand(item: str, left_out: LeftOut | None = None) -> list[Path]:
    path = Path(item)
    if path.is_file():
        if not is_image_file(path):
            raise DatasetFormatError(f"{item}: not an image file (accepted extensions: {extensions_text()})")
        return [path]
    if path.is_dir():
        in_folder = _walk_images(path, left_out)
        if not in_folder:
            raise DatasetFormatError(
                f"{item}: folder contains no images (accepted extensions: {extensions_text()})"
            )
        return in_folder
    if _GLOB_CHARS & set(item):
        found: list[Path] = []
        for match in _glob(item, left_out):
            hit = Path(match)
            if hit.is_dir():
                found.extend(_walk_images(hit, left_out))
            elif hit.is_file() and not is_hidden(hit.name):
                if is_image_file(hit):
                    found.append(hit)
                elif left_out is not None:
                    left_out(hit)
        if not found:
            raise DatasetFormatError(
                f"{item}: pattern matches no images (accepted extensions: {extensions_text()})"
            )
        return sorted(set(found))
    raise DatasetFormatError(f"{item}: no such file or folder")


def _glob(pattern: str, left_out: LeftOut | None = None) -> list[str]:
    """``glob(pattern, recursive=True)``, sorted, except that ``**`` is searched by this module's
    walk: glob follows linked folders without end, so a link back to an ancestor never finishes.
    A folder the pattern names stands for the images under it, as glob's folder matches do; a
    pattern ending in a separator names folders only, as in glob. ``left_out`` is told of the other
    files a ``**`` pattern matches (a pattern without ``**`` returns them, as glob does)."""
    if not _recursive(pattern):
        return sorted(glob.glob(pattern))
    folders_only = pattern.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep))  # as glob: "a/**/"
    hits: set[str] = set()
    for base, rest in _recursive_roots(pattern):
        # a hidden folder is searched only where the pattern names one (".cache"), as in glob
        hidden = any(part.startswith(".") for part in rest)
        others: list[Path] = []
        images, _, folders = _walk(
            Path(base), hidden=hidden, left_out=None if left_out is None else others.append
        )
        named = {f for f in folders if _matches(f.relative_to(base).parts, rest)}  # "a/**/" names a too

        hits.update(str(path) for path in images if _named(path, base, rest, named, folders_only))
        for path in others:
            if left_out is not None and _named(path, base, rest, named, folders_only):
                left_out(path)
    return sorted(hits)


def _named(path: Path, base: str, rest: tuple[str, ...], named: set[Path], folders_only: bool) -> bool:
    """Whether a file a walk of ``base`` found is one a ``**`` pattern names: its parts from ``base``
    match ``rest`` (unless the pattern names ``folders_only``), or it lies in a folder it names."""
    return (not folders_only and _matches(path.relative_to(base).parts, rest)) or any(
        parent in named and not _hidden_between(parent, path) for parent in path.parents
    )


def _hidden_between(folder: Path, path: Path) -> bool:
    """Whether a hidden folder lies between ``folder`` and ``path`` (a named folder stands for the
    images a walk of it finds, and a walk skips hidden folders)."""
    return any(is_hidden(part) for part in path.relative_to(folder).parts[:-1])


def _recursive(pattern: str) -> bool:
    """Whether ``pattern`` recurses: glob does only on a part that is ``**`` itself (``a**`` is ``a*``)."""
    return "**" in Path(pattern).parts


def recursive_roots(pattern: str) -> list[str]:
    """The folders a ``**`` pattern is searched from (what comes before its ``**``, globbed); the
    pattern itself for one without ``**``."""
    return [base for base, _ in _recursive_roots(pattern)] if _recursive(pattern) else [pattern]


def _recursive_roots(pattern: str) -> list[tuple[str, tuple[str, ...]]]:
    """(a folder to walk, the pattern's parts from its first ``**`` on) for each folder matching the
    parts before it: a wildcard there is globbed, one level at a time, never through ``**``."""
    parts = Path(pattern).parts
    first = parts.index("**")
    head, rest = parts[:first], parts[first:]
    if not head:
        return [(".", rest)] if Path(".").is_dir() else []
    bases = sorted(glob.glob(str(Path(*head)))) if glob.has_magic(str(Path(*head))) else [str(Path(*head))]
    return [(base, rest) for base in bases if Path(base).is_dir()]


def _matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether path ``parts`` match glob ``pattern`` parts, ``**`` standing for any number of folders.
    As in glob, a hidden name is matched only by a part that starts with a dot, never by ``**``."""
    if not pattern:
        return not parts
    if parts and parts[0].startswith(".") and not pattern[0].startswith("."):
        return pattern[0] == "**" and _matches(parts, pattern[1:])
    if pattern[0] == "**":
        return _matches(parts, pattern[1:]) or (bool(parts) and _matches(parts[1:], pattern))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _walk_images(folder: Path, left_out: LeftOut | None = None) -> list[Path]:
    return _walk(folder, left_out=left_out)[0]


def searched_folders(folder: str | Path) -> set[str]:
    """The real paths of every folder a walk of ``folder`` searches, linked ones included: what an
    output must stay out of to never be read back as input."""
    return _walk(Path(folder))[1]


def _unlisted(exc: OSError) -> None:
    """os.walk skips a folder it cannot list, and its images went unscored without a word (no row,
    no count, exit 0): refused, naming the folder. Not a folder gone since it was seen (a scanner's
    temporary one: nothing left to score), nor a file system's own ``lost+found`` at a mount
    point's root (root's alone on every ext4 volume, never a picture of cargo), which stay skipped."""
    folder = str(exc.filename or "")
    if isinstance(exc, FileNotFoundError) or (
        # the parent as a path that names no link: reached through one (an archive of linked
        # volumes), ismount reads the link itself and said no
        os.path.basename(folder) == "lost+found"
        and os.path.ismount(os.path.realpath(os.path.dirname(folder)))
    ):
        return
    raise InputError(
        f"cannot list the folder {exc.filename!r} ({exc.strerror or exc}): its images would go "
        "unscored; give it read and search permission, or leave it out of the input"
    ) from exc


def _walk(
    folder: Path, *, hidden: bool = False, left_out: LeftOut | None = None
) -> tuple[list[Path], set[str], list[Path]]:
    """(the images under ``folder``, sorted; the real paths of the folders searched; those folders
    as spelled from ``folder``). Hidden folders are skipped unless ``hidden``; hidden files always.
    ``left_out`` is told of each other file found, in the walk's order, each folder's sorted."""
    # An archive assembled from links (a shared drive's day folders linked into one) must be scored
    # whole: skipping its linked folders would drop their images without a word. Each real folder
    # is searched once, spelled without a link where the tree holds it directly, so a link loop ends.
    own: set[str] = set()  # the folders the tree holds directly (hidden ones are not searched)
    for dirpath, dirnames, _ in os.walk(folder, onerror=_unlisted):
        dirnames[:] = [d for d in dirnames if hidden or not is_hidden(d)]
        own.add(os.path.realpath(dirpath))
    searched = {os.path.realpath(folder)}
    found: list[Path] = []
    spelled: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=_unlisted):
        spelled.append(Path(dirpath))
        kept = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            real = os.path.realpath(full)
            if (is_hidden(name) and not hidden) or real in searched or (os.path.islink(full) and real in own):
                continue
            searched.add(real)
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if is_hidden(name):
                continue
            if is_image_file(name):
                found.append(Path(dirpath, name))
            elif left_out is not None:
                left_out(Path(dirpath, name))
    return sorted(found), searched, spelled
