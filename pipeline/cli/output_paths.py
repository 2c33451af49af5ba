"""Output paths checked against the inputs and each other before any slow work.

Scoring and deciding write files that must never replace what they read: a manifest, a verdicts
file, or a folder of cargo images. A heatmap folder inside an input folder is refused too, because
the next run over that folder would score the heatmaps as cargo pictures.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from datasets.errors import InputError
from datasets.folder import recursive_roots, searched_folders

__all__ = ["audit_file", "check_name_fits", "check_outputs_apart", "check_writable", "output_error"]


def _literal_depth(text: str) -> int:
    """How many leading parts of ``text`` hold no wildcard (all of them for a plain path)."""
    parts = Path(text).parts
    depth = 0
    while depth < len(parts) and not glob.has_magic(parts[depth]):
        depth += 1
    return depth


def _input_paths(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(as given, resolved path) of each input; a glob stands for the folder before its first wildcard."""
    out = []
    for item in inputs:
        text = str(item)
        literal = Path(text).parts[: _literal_depth(text)]
        out.append((text, (Path(*literal) if literal else Path(".")).resolve()))
    return out


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _reaches(text: str, base: Path, folder: Path) -> bool:
    """Whether the input ``text`` (a folder, walked recursively, or a glob from ``base``, its literal
    leading folders) would read files inside ``folder``: a glob without ``**`` reads the files its
    parts match, and walks every folder they match (``arc/*`` walks ``arc/heat``)."""
    if not glob.has_magic(text) or "**" in text:
        return True
    wild = Path(text).parts[_literal_depth(text) :]
    parts = folder.relative_to(base).parts
    if len(parts) + 1 == len(wild):  # files directly inside the folder
        return all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wild, strict=False))
    # inside a folder the glob matches, walked whole
    return len(parts) >= len(wild) and all(
        fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wild, strict=False)
    )


def _walked(text: str) -> list[str]:
    """The folders an input walks: itself, a ``**`` glob's roots, or the folders a glob matches."""
    if not glob.has_magic(text):
        return [text] if Path(text).is_dir() else []
    if "**" in Path(text).parts:
        return recursive_roots(text)
    return [match for match in glob.glob(text) if Path(match).is_dir()]


def _in_the_way(path: Path) -> Path | None:
    """The nearest of ``path`` and the folders above it that exists, where it is not a folder: a
    file standing where a folder must be made."""
    for where in (path, *path.parents):
        if where.exists():
            return None if where.is_dir() else where
    return None


def output_error(option: str, path: Path, exc: OSError, *, folder: bool = False) -> InputError:
    """What went wrong making or writing the output ``path`` (a ``folder`` or a file) that ``option``
    names, in words: ``NotADirectoryError: 's_file/.d.jsonl-3f9c0a1b2d4e.tmp'`` said neither."""
    blocker = _in_the_way(path if folder else path.parent)
    if blocker is not None:
        made = "it" if blocker == path else "its folder"
        return InputError(f"{option} {str(path)!r}: cannot make {made}: {str(blocker)!r} is a file")
    return InputError(f"{option} {str(path)!r}: cannot write there ({exc.strerror or exc})")


def check_name_fits(option: str, path: Path, *, hint: str | None = None) -> None:
    """Refuse an output whose name, or the name of a folder above it still to be made, or its whole
    (absolute) path, is longer than the file system takes: any look at such a path (``exists()``,
    ``is_symlink()``) raised ``OSError`` ("File name too long"), reported as ``unexpected OSError``,
    after the slow work where the name was made from another output's. A path over ``PATH_MAX``
    whose every name is short passed, and failed so.

    Args:
        option: the option that names the output (or it is named after), for the message.
        path: the output, a file or a folder.
        hint: what to do instead, for the message (default: give a shorter name, or path).

    Raises:
        InputError: naming ``option``, the path and the name that is too long, or the path's
            length where the whole path is too long (each name short).
    """
    missing = []
    longest, whole = 255, 4096  # no limit told: the common ones
    for where in (path, *path.parents):
        try:
            os.lstat(where)
        except OSError:
            missing.append(where.name)
            continue
        folder = where if where.is_dir() else where.parent
        with contextlib.suppress(OSError, ValueError):
            longest = os.pathconf(folder, "PC_NAME_MAX")
        with contextlib.suppress(OSError, ValueError):
            whole = os.pathconf(folder, "PC_PATH_MAX")
        break
    for name in missing:
        size = len(os.fsencode(name))
        if size > longest:
            which = "its name" if name == path.name else f"the folder name {name!r} in it"
            raise InputError(
                f"{option} {str(path)!r}: {which} is {size} bytes long, over the {longest} the file "
                f"system takes; {hint or 'give a shorter name'}"
            )
    # every name short, the whole path can still be too long: PATH_MAX counts the closing NUL byte
    size = len(os.fsencode(os.path.abspath(path)))
    if size >= whole:
        raise InputError(
            f"{option} {str(path)!r}: its whole path is {size} bytes long, over the {whole - 1} the "
            f"file system takes; {hint or 'give a shorter path'}"
        )


def check_writable(option: str, path: Path, *, folder: bool = False) -> None:
    """Refuse, before any model loads or image is read, an output that cannot be made: a file where
    its folder must go, a folder that takes no new file (``/proc``, a read-only mount). Found only
    when the output was written, such a path failed after the slow work as ``unexpected OSError``.
    Nothing is left behind: the check makes a file in the nearest existing folder and removes it.
    A link that leads nowhere, at the path or at a folder above it, is refused too: ``exists()`` is
    False for it, so it passed, and making the output failed on it (``FileExistsError``) after the
    slow work. A file output that is a link to a file not yet made, in a folder that exists, is
    written through the link, as before. A name longer than the file system takes is refused too
    (:func:`check_name_fits`).

    Args:
        option: the option that names the output, for the message.
        path: the output: a file, or with ``folder`` a folder (the command makes it if missing).

    Raises:
        InputError: naming ``option``, the path and what stands in the way.
    """
    check_name_fits(option, path)
    if not folder and path.is_dir():
        raise InputError(f"{option} {str(path)!r} is a folder; give a file")
    nearest = None
    for where in (path, *path.parents):
        if where.exists():
            break
        if where.is_symlink():
            target = where.parent / os.readlink(where)
            if where == path and not folder:
                # a new file is written through the link, where it points: its folder must exist
                if target.parent.is_dir() and not target.is_symlink():
                    nearest = target.parent
                    break
                raise InputError(
                    f"{option} {str(path)!r}: {str(where)!r} is a link to {os.readlink(where)!r}, which "
                    "is in no existing folder (or is a link again); make its folder, or give another path"
                )
            raise InputError(
                f"{option} {str(path)!r}: {str(where)!r} is a link to a missing folder "
                f"{os.readlink(where)!r}; make the folder it links to, or give another path"
            )
    if nearest is None:
        nearest = next(where for where in (path if folder else path.parent, *path.parents) if where.exists())
    if not nearest.is_dir():
        raise output_error(option, path, NotADirectoryError(), folder=folder)
    try:  # os.access says yes to /proc and to a read-only mount for root: only making a file tells
        with tempfile.NamedTemporaryFile(dir=nearest, prefix=".clearsight-check-"):
            pass
    except OSError as exc:
        raise InputError(
            f"{option} {str(path)!r}: no file can be made in {str(nearest)!r} ({exc.strerror or exc})"
        ) from exc


def audit_file(url: str | None) -> dict[str, Path]:
    """The file of a SQLite ``--audit-db`` by its option (none: no file), for ``kept``."""
    if url is None:
        return {}
    from pipeline.audit.store import sqlite_file

    file = sqlite_file(url)
    return {"--audit-db": file} if file is not None else {}


def check_outputs_apart(
    *,
    files: Mapping[str, Path | None],
    inputs: Sequence[str | Path],
    folders: Mapping[str, Path | None] | None = None,
    kept: Mapping[str, Path] | None = None,
) -> None:
    """Refuse outputs that would overwrite an input, each other, or be read back as input.

    Args:
        files: output files by option name (``{"--out": ..., "--decisions": ...}``); None = unused.
        inputs: what the command reads: files, folders or globs.
        folders: output folders by option name (``{"--heatmaps": ...}``); None = unused.
        kept: files no output may replace, by option name, taken as named (never as globs): the
            audit store's (:func:`audit_file`).

    Raises:
        InputError: naming the option, the path and what it clashes with.
    """
    given = {name: Path(p).resolve() for name, p in files.items() if p is not None}
    where = {name: Path(p).resolve() for name, p in (folders or {}).items() if p is not None}
    names = list(given)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if given[a] == given[b]:
                raise InputError(f"{a} and {b} are the same file {str(given[a])!r}; give each its own path")
    for name, folder in where.items():
        for other, path in given.items():
            if folder == path:
                raise InputError(
                    f"{name} and {other} are the same path {str(folder)!r}: one is a folder, the other a "
                    "file; give each its own path"
                )
    for keeper, file in (kept or {}).items():
        for name, path in given.items():
            if path == file.resolve():
                raise InputError(
                    f"{name} {str(path)!r} is the {keeper} file: writing it would destroy the audit "
                    "trail; write the output elsewhere"
                )
    for text, source in _input_paths(inputs):
        for name, path in given.items():
            if path == source:
                raise InputError(
                    f"{name} {str(path)!r} is also an input ({text!r}): writing it would destroy what is "
                    "being read; write the output elsewhere"
                )
        if source.is_dir() or glob.has_magic(text):
            # what an input walks is searched through its linked folders too
            linked = [Path(p) for root in _walked(text) for p in searched_folders(root)] if where else []
            for name, folder in where.items():
                if (_inside(folder, source) and _reaches(text, source, folder)) or any(
                    _inside(folder, real) for real in linked
                ):
                    raise InputError(
                        f"{name} {str(folder)!r} lies inside the input {text!r}: a later run over it would "
                        "score the heatmaps as cargo pictures; write them outside the inputs"
                    )
