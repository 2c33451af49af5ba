"""Files written whole: to a temporary file beside the target, then renamed onto it.

A reader, or a run resumed after a crash, then finds either the earlier file or the complete new
one, never a half-written one under the final name. The temporary file has a name no file had
(:func:`temporary_beside`): a fixed ``path.tmp`` was truncated and then renamed onto ``path``
whatever already had that name, an audit store or a policy a user happened to call so.

A run killed while writing leaves its temporary file, ``.{start of the name}-{12 hex digits}.tmp``,
beside the target: hidden, and ending in ``.tmp``, so that no folder walk takes it for an image.

A file written again keeps what writing into it would have kept (:func:`keep_mode_and_owner`):
its mode and, where the user may set them, its owner and group.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Literal, overload

__all__ = ["files_written_whole", "keep_mode_and_owner", "name_start", "temporary_beside", "written_whole"]


def temporary_beside(path: Path) -> tuple[Path, int]:
    """A new, empty file in ``path``'s folder under a name no file had, open for writing (its path
    and descriptor), to write ``path`` whole and rename it into place.

    Made with ``O_EXCL``, never an existing file. Mode 0o666 lets the umask decide, as
    ``open(path, "w")`` would; the name keeps the start of ``path``'s (:func:`name_start`) for
    one left by a killed run, and is at most 50 bytes long: cut at 128 characters, a valid
    non-ASCII name of 246 bytes gave one the file system refused ("File name too long").

    Raises:
        OSError: the folder takes no new file.
    """
    kept = name_start(path.name)
    for _ in range(8):
        tmp = path.with_name(f".{kept}-{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits taken already
            continue
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover


_KEPT_BYTES = 32
"""How much of a file's name (in bytes, as the file system takes it) a name made after it keeps."""


def name_start(name: str) -> str:
    """The start of ``name`` that a file named after it keeps: the longest that is
    :data:`_KEPT_BYTES` bytes or fewer as the file system encodes it (:func:`os.fsencode`), whole
    characters only. A name made by adding to the whole of ``name`` can be longer than any the
    file system takes, though ``name`` itself fits."""
    kept = ""
    for char in name:
        if len(os.fsencode(kept + char)) > _KEPT_BYTES:
            break
        kept += char
    return kept


def keep_mode_and_owner(fd: int, path: Path) -> None:
    """Give the new file open at ``fd``, about to be renamed onto ``path``, the mode of the file
    ``path`` names (through a link), and its owner and group where the user may set them; nothing
    where there is no such file, and a new file keeps the mode the umask gives.

    Renamed onto it, a new file otherwise took the umask's mode: an output made readable by its
    owner alone (``chmod 600``) came back readable by the group after ``--resume``. The owner is
    set first: changing it clears the set-user-ID and set-group-ID bits, which the mode then puts
    back.

    Raises:
        OSError: ``path`` cannot be looked at, or the mode cannot be set.
    """
    try:
        earlier = os.stat(path)
    except FileNotFoundError:
        return
    with suppress(PermissionError):  # only root may give a file to another user
        os.fchown(fd, earlier.st_uid, earlier.st_gid)
    os.fchmod(fd, stat.S_IMODE(earlier.st_mode))


@overload
def written_whole(
    path: Path, *, text: Literal[False] = False, fsync: bool = True, like: Path | None = None
) -> AbstractContextManager[IO[bytes]]: ...


@overload
def written_whole(
    path: Path,
    *,
    text: Literal[True],
    fsync: bool = True,
    encoding: str = "utf-8",
    newline: str | None = None,
    like: Path | None = None,
) -> AbstractContextManager[IO[str]]: ...


@overload
def written_whole(
    path: Path,
    *,
    text: bool,
    fsync: bool = True,
    encoding: str = "utf-8",
    newline: str | None = None,
    like: Path | None = None,
) -> AbstractContextManager[IO[Any]]: ...


@contextmanager
def written_whole(
    path: Path,
    *,
    text: bool = False,
    fsync: bool = True,
    encoding: str = "utf-8",
    newline: str | None = None,
    like: Path | None = None,
) -> Iterator[IO[Any]]:
    """A file object (binary, or with ``text`` text in ``encoding``) on a new temporary file beside
    ``path`` (:func:`temporary_beside`), renamed onto ``path`` when the block ends without an error;
    flushed and, with ``fsync``, on disk first, so that the name never points at a file cut short
    by a power cut. Any error (Ctrl-C too) removes the temporary file and leaves ``path`` as it was.

    A ``path`` that is a link is replaced by the new file, as :func:`os.replace` does. The new file
    keeps the mode and owner of the file it replaces (:func:`keep_mode_and_owner`), or of ``like``
    where given: a file written from another, which it stands for until the run ends.

    Raises:
        OSError: the file cannot be made, written or renamed.
    """
    opened: dict[str, Any] = (
        {"mode": "w", "encoding": encoding, "newline": newline} if text else {"mode": "wb"}
    )
    tmp, fd = temporary_beside(path)
    try:
        with os.fdopen(fd, **opened) as fh:
            keep_mode_and_owner(fh.fileno(), path if like is None else like)
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def files_written_whole(files: Mapping[Path, bytes], *, fsync: bool = True) -> None:
    """Write several files that stand together (a report's figures, table and page) whole: each to
    a temporary file beside it, all of them on disk, and only then each renamed onto its name.

    A full disk or a file that cannot be made leaves every earlier file as it was and no
    temporary file: written one after another, a failure on the last left the first ones new
    beside an earlier run's last one, a page describing another model. A rename that fails part
    way (a file made immutable, a busy mount) puts back the files renamed before it: each earlier
    file is kept under a hard link until all are in place. Only a crash between the renames, which
    take no space, can leave a mix, or, on a file system without hard links, which keeps no earlier
    file, a failed rename.

    Raises:
        OSError: a file cannot be made, written or renamed.
    """
    for path in files:
        # the one rename that fails on a name that exists: checked before any file changes
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    made: list[tuple[Path, Path]] = []
    kept: dict[Path, Path] = {}  # each earlier file's hard link, to put back if a rename fails
    fresh: set[Path] = set()  # the names no file had: a rename that fails takes them away again
    done: list[Path] = []
    try:
        for path, data in files.items():
            tmp, fd = temporary_beside(path)
            made.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                keep_mode_and_owner(fh.fileno(), path)
                fh.write(data)
                fh.flush()
                if fsync:
                    os.fsync(fh.fileno())
        for _, path in made:
            if path.exists() and not path.is_symlink():
                try:
                    kept[path] = _linked_beside(path)
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS:
                        raise  # an immutable file refuses the link as it would the rename: nothing changed
        fresh = {path for _, path in made if not os.path.lexists(path)}
        for tmp, path in made:
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for path in done:  # put back what was replaced; a file that was new goes
            with suppress(OSError):
                if path in kept:
                    os.replace(kept.pop(path), path)
                elif path in fresh:
                    path.unlink()
        for tmp, _ in made:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        for link in kept.values():
            with suppress(OSError):
                link.unlink()


_NO_HARD_LINKS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""What ``os.link`` raises on a file system without hard links."""


def _linked_beside(path: Path) -> Path:
    """A hard link to ``path`` beside it, under a hidden name no file had.

    Raises:
        OSError: the link cannot be made (a file made immutable refuses it: so would its rename).
    """
    for _ in range(8):
        link = path.with_name(f".{name_start(path.name)}-{secrets.token_hex(6)}.kept")
        try:
            os.link(path, link)
            return link
        except FileExistsError:  # pragma: no cover - 48 random bits taken already
            continue
    raise FileExistsError(f"no free name beside {path}")  # pragma: no cover
