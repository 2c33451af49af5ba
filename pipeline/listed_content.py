"""Whether a picture the manifest lists is still the one its row was scored on: the file's sha256 now.

Scanners reuse file names: a listed file overwritten with a new scan after it was scored kept its
path, and ``clearsight decide --manifest`` matched the row to it by that path alone, so the shipment
was decided (released) on the old picture's score. :func:`hash_files` reads each listed file now;
:func:`pipeline.redeclare.redeclare` compares it with the row's ``sha256`` (the scorer's hash of the
encoded bytes it decoded, :func:`datasets.decode.decoding.decode_image`) and makes a row that does
not match an error row, never released.

``clearsight score --resume`` asks the same of each scored row it would keep
(:mod:`pipeline.score.kept_content`): a row :func:`compare` finds of another picture than the file at
its path is taken out of the output and its picture scored again.

The errors below go into the audit record and the decision's idempotency key, so, as
:data:`pipeline.redeclare.NEVER_SCORED`, they name no file.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from datasets.regular_files import open_regular
from pipeline.settings import Settings

__all__ = [
    "CHANGED",
    "MAX_BYTES",
    "NO_SHA256",
    "UNREADABLE_NOW",
    "WORKERS",
    "Standing",
    "compare",
    "hash_files",
]

_SCORE_AGAIN = (
    "score the manifest again with clearsight score MANIFEST --model M --out NEW_ROWS and decide those rows"
)

# Each is read inside pipeline.decide's "image could not be scored (...); never released": one
# clause, no parentheses of its own, and the hold is that wrapper's to say.

CHANGED = (
    "the file listed at this path holds other bytes now than the picture scored under this name, as "
    f"a new scan written over it would, so that score is another picture's; {_SCORE_AGAIN}"
)
"""The error of a row whose listed file holds other bytes now (a new scan written over the name)."""

UNREADABLE_NOW = (
    "the file listed at this path is there but cannot be read now, so whether it is the picture "
    f"scored under this name cannot be told; make it readable and decide again, or {_SCORE_AGAIN}"
)
"""The error of a row whose listed file is there but cannot be read (permissions, a folder, a FIFO or
a device, an I/O error, a file larger than any picture the scorer reads): something is at the listed
path that may be a new scan, so the old score is not used."""

ABSENT_UNVOUCHED = (
    "no file is at the path listed now, and no completion record vouches for this row, its run "
    "unfinished or its record removed, so whether it is this picture's row and not an earlier run's "
    f"of the same name cannot be told; {_SCORE_AGAIN}"
)
"""The error of a row whose listed file is gone, in rows no completion record vouches for: a row of
an earlier run of the same name, sealed and genuine, replayed over today's (its record removed, the
pictures archived), was decided on its low score and released."""

NO_SHA256 = (
    "its row, an older one, was scored without a sha256, so whether the file listed at this path now "
    f"is the picture scored cannot be told; {_SCORE_AGAIN}"
)
"""The error of a scored row without a sha256 whose listed file is there now: nothing to compare."""


Standing = Literal["same", "absent", "changed", "unreadable", "unhashed"]
"""How a scored row stands against its file now (:func:`compare`)."""

_GONE = (errno.ENOENT, errno.ENOTDIR)
"""Why a file cannot be opened that says nothing is at its path (a folder of it missing, too)."""


def compare(sha256: str | None, now: str | OSError) -> Standing:
    """How a scored row whose ``sha256`` is given stands against its file as read now (``now``: its
    sha256 from :func:`hash_files`, or why it could not be read):

    - ``same``: the bytes scored;
    - ``absent``: nothing is at the path (ENOENT, ENOTDIR: archived away since scoring), so no other
      picture lies there to be confused with the one scored: the row is the record of it;
    - ``unreadable``: something is there but cannot be read (permissions, a folder, an I/O error):
      it may be a new scan;
    - ``unhashed``: the row has no sha256 (an older version's) while a file is there;
    - ``changed``: other bytes (a new scan written over the name)."""
    if isinstance(now, OSError):
        return "absent" if now.errno in _GONE else "unreadable"
    if not sha256:
        return "unhashed"
    return "same" if sha256.strip().lower() == now else "changed"


_BUFFER = 1 << 18
"""Bytes read at a time (hashlib.file_digest's buffer): one held per reading thread."""


def _too_big(path: str, max_bytes: int) -> OSError:
    return OSError(
        errno.EFBIG,
        f"larger than the largest image accepted ({max_bytes} bytes, CLEARSIGHT_MAX_IMAGE_BYTES), so not "
        "a picture the scorer read; if pictures that large were scored, raise it to their size",
        path,
    )


def _file_sha256(path: str, max_bytes: int) -> str:
    """The hex sha256 of the regular file at ``path``, read in chunks (one buffer held, whatever the
    file's size).

    Rows name the paths, and whoever can write the rows chooses them: only a regular file is opened
    (:func:`datasets.regular_files.open_regular`: a FIFO blocked open() until a writer came, forever,
    in a worker thread that SIGTERM does not stop). No more than ``max_bytes`` is read: the scorer
    refuses a larger picture, so a larger file is not the one scored, and reading a huge file, or one
    a writer keeps appending to (a size says nothing of a file still growing, nor of a ``/proc``
    file), never ended.

    Raises:
        OSError: it cannot be opened or read (FileNotFoundError where nothing is there), it is not a
            regular file, or it holds more than ``max_bytes`` (EFBIG).
    """
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(_BUFFER))
    left = max_bytes + 1  # one byte over the limit tells a file that grew past it
    with open_regular(path) as fh:
        if os.fstat(fh.fileno()).st_size > max_bytes:
            raise _too_big(path, max_bytes)
        while n := fh.readinto(buffer[: min(_BUFFER, left)]):
            digest.update(buffer[:n])
            left -= n
            if not left:
                raise _too_big(path, max_bytes)
    return digest.hexdigest()


def _read(path: str, max_bytes: int) -> str | OSError:
    if "\0" in path:
        # no file name holds one, and the system calls raise ValueError for it, which ended decide
        # with a traceback; no file to compare the row with is none that vouches for it: not read,
        # and not taken for a file archived away either
        return OSError(errno.EINVAL, "the path holds a NUL byte, which no file name can", path)
    try:
        return _file_sha256(path, max_bytes)
    except OSError as exc:
        # without its traceback: that held the pool worker's frame, and so the future holding this
        # error, in a cycle only the cyclic collector frees (200,000 missing files piled up a few MB
        # of them between collections)
        return exc.with_traceback(None)


WORKERS = min(4, os.cpu_count() or 1)
"""Files read at once: hashlib and the reads let go of the GIL, so threads overlap them (an archive
on a share answers each read late); each holds one read buffer."""


MAX_BYTES: int = Settings.model_fields["max_image_bytes"].default
"""The largest file :func:`hash_files` reads where it is not told: the settings' default, not read
from the environment here (a command reads its settings once and passes ``max_image_bytes`` on)."""


def hash_files(
    paths: Iterable[str],
    *,
    advance: Callable[[], None] | None = None,
    workers: int = WORKERS,
    max_bytes: int = MAX_BYTES,
) -> dict[str, str | OSError]:
    """Each of ``paths``' sha256 now, or the OSError reading it raised (FileNotFoundError: none
    there; EFBIG: over ``max_bytes``, the largest picture the scorer reads: the commands pass their
    settings' ``max_image_bytes``), read by ``workers`` threads; ``advance`` is called after each file
    (a progress bar)."""
    read = functools.partial(_read, max_bytes=max_bytes)
    found: dict[str, str | OSError] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, now in zip(paths := list(paths), pool.map(read, paths), strict=True):
            found[path] = now
            if advance is not None:
                advance()
    return found
