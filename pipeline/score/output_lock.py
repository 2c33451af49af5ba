"""One run at a time into an output: an exclusive lock on a hidden file beside ``--out``.

Two runs writing one output (a ``--resume`` started beside a slow run, a cron job firing again) both
appended the images left, deleted each other's Parquet journal, and decided shipments on doubled
picture lists. A run takes :func:`lock_output` before it opens, cuts or removes the output, and
holds it until its decisions are written; a second run is refused, naming the holder. Whether a run
holds it is told by :func:`held_by` without taking it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from datasets.errors import InputError
from datasets.whole_files import name_start

__all__ = ["OutputLock", "held_by", "lock_output", "lock_path"]

_F_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
_F_OFD_GETLK: int | None = getattr(fcntl, "F_OFD_GETLK", None)
"""Open file description locks (Linux): None where the system has none."""
_FLOCK = "hhqqi4x"
"""``struct flock``: l_type, l_whence, l_start, l_len, l_pid."""
_OPENED = os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW
"""How the lock file is opened: without blocking, as whoever can write the output's folder can put a
FIFO at its name (opened to be read, it blocked ``clearsight decide`` until a writer came, forever),
never to become the process's terminal, and never through a link (a run cut the file a link there led
to, anyone's the run could write, and wrote its process id into it). Nothing is read or written but
with ``pread``/``pwrite`` of a regular file (:func:`_regular`), which O_NONBLOCK does not change."""
_READ_LOCKED = "ofd"
"""Written after the process id in the lock file by a run that holds its read lock (see
:class:`OutputLock`): ``123 ofd``."""


def _whole_file(kind: int) -> bytes:
    """A ``struct flock`` of ``kind`` over the whole file (l_pid 0, as open file description locks
    require)."""
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0)


def _regular(fd: int) -> bool:
    """Whether the file open at ``fd`` is a regular file, which a run makes its lock: anything else at
    the lock file's name (a FIFO, a link to a device) was put there by hand, and no run holds it."""
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _something_else_at(path: Path) -> bool:
    """Whether something other than a regular file is at ``path`` (a link too, which a run never
    makes): looked at before it is opened, as opening a device has effects of its own (:func:`_regular`
    looks again once it is open, at what was opened)."""
    try:
        return not stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False  # nothing there (a run makes it), or the open says why


def lock_path(out: Path) -> Path:
    """The lock file of a run into ``out``: ``.{start of OUT's name}-{12 hex digits}.lock`` beside it,
    named as :func:`journal_path` names the journal (at most 51 bytes long, whatever ``out``'s name;
    hidden, so that no folder walk takes it for an input)."""
    digest = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:12]
    return out.with_name(f".{name_start(out.name)}-{digest}.lock")


class OutputLock:
    """An exclusive ``flock`` on :func:`lock_path` of a score output, held by the one run writing it.

    Two runs into one output (an operator who took a slow run for a dead one and started
    ``--resume``, a cron job that fired again) each appended the images left: the output held two
    rows of half the archive, a Parquet run's end deleted the journal the other appended to, and
    shipments were decided on doubled picture lists; both exited 0. The lock is taken before the
    output is opened (or cut, or removed by ``--overwrite``) and held until its decisions are
    written. The file holds the holder's process id, for the message of the run refused (``123``; a
    file of a Clearsight before read locks holds that alone), then ``ofd`` where it holds the read
    lock below (``123 ofd``).

    The kernel drops the lock when its process dies, so a killed run's file (left behind) blocks no
    later run and is taken over. A run ending removes the file while it still holds the lock: a run
    that opened it just before then finds it gone once it gets the lock, and opens it anew.

    Beside the ``flock`` the run holds a read lock of the open file (an open file description lock,
    where the system has them: Linux), for :func:`held_by` to test for without taking any lock: a
    shared ``flock`` taken to test refused a run starting in that instant. The two kinds of lock do not
    meet: runs keep each other out with the ``flock`` alone. A run may hold no read lock (a run of a
    Clearsight before them, still going through an upgrade; a file system that refused it), so the
    file says whether it holds one: held_by trusts the lack of one only where it does.
    """

    def __init__(self, out: Path, path: Path, fd: int) -> None:
        self.out = out
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, out: Path) -> OutputLock:
        """Lock ``out`` for this run; its folder must exist (:func:`check_output` makes it).

        Raises:
            InputError: another run holds the lock (naming ``out`` and its process id), or the lock
                file cannot be made or locked.
        """
        path = lock_path(out)
        for _ in range(8):
            fd = None if _something_else_at(path) else cls._open(out, path)
            if fd is None or not _regular(fd):
                if fd is not None:
                    os.close(fd)
                raise InputError(
                    f"output {str(out)!r}: its lock file {str(path)!r} is not a regular file (a link, a "
                    "FIFO, a device: put there by hand, as a run makes a regular file), so no run could be "
                    "kept out with it; remove it"
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = cls._holder(fd)
                os.close(fd)
                raise InputError(
                    f"output {str(out)!r} is being written by another run ({holder}, which holds "
                    f"{str(path)!r}); two runs into one output duplicate its rows: wait for that run to "
                    "end, or stop it, then pass --resume to continue the output"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise InputError(
                    f"output {str(out)!r}: cannot lock {str(path)!r} ({exc.strerror or exc}), so another "
                    "run into it could not be kept out; write the output on a file system that takes locks"
                ) from exc
            if cls._still_there(fd, path):
                # the read lock first, then the word that it is held: held_by, finding the word, trusts
                # a read lock's absence (none written where the file is read-only; the id only helps
                # the message of a run refused)
                shown = f" {_READ_LOCKED}" if cls._show_held(fd) else ""
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}{shown}\n".encode("ascii"), 0)
                return cls(out, path, fd)
            os.close(fd)  # locked as the run before us removed it: lock the file there now
        raise InputError(
            f"output {str(out)!r}: cannot lock {str(path)!r}: it is made and removed again and again"
        )

    @staticmethod
    def _open(out: Path, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | _OPENED, 0o666)
        except PermissionError:
            try:  # another user's file a killed run left: a read-only descriptor locks it as well
                return os.open(path, os.O_RDONLY | _OPENED)
            except OSError as exc:
                raise InputError(
                    f"output {str(out)!r}: cannot open its lock file {str(path)!r} ({exc.strerror or exc})"
                ) from exc
        except OSError as exc:
            raise InputError(
                f"output {str(out)!r}: cannot make its lock file {str(path)!r} ({exc.strerror or exc})"
            ) from exc

    @staticmethod
    def _show_held(fd: int) -> bool:
        """Hold the read lock :func:`held_by` tests for (see the class); dropped with ``fd``'s last
        descriptor, as the ``flock`` is. Returns whether it is held: where the system or the file system
        takes none, the run goes on (the ``flock`` keeps runs apart), and held_by tests with a shared
        ``flock`` instead, or finds no run (the completion record, which the run removes before it
        touches the output, still keeps its rows from being decided)."""
        if _F_OFD_SETLK is None:
            return False
        try:
            fcntl.fcntl(fd, _F_OFD_SETLK, _whole_file(fcntl.F_RDLCK))
        except OSError:
            return False
        return True

    @staticmethod
    def _holder(fd: int) -> str:
        words = _written(fd)
        return (
            f"process {words[0]}"
            if words and words[0].isdigit()
            else "a process that has not written its id yet"
        )

    @staticmethod
    def _still_there(fd: int, path: Path) -> bool:
        """Whether ``path`` is still the file open at ``fd`` (not removed by the run that held it)."""
        try:
            named, held = os.stat(path), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order: see the class); idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._still_there(fd, self.path):
                with contextlib.suppress(OSError):  # a file left behind blocks nothing
                    self.path.unlink()
        finally:
            os.close(fd)

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_output(out: Path) -> OutputLock:
    """:meth:`OutputLock.take`: the lock of the one run writing ``out``."""
    return OutputLock.take(out)


def held_by(out: Path, *, looking: Callable[[], None] | None = None) -> str | None:
    """The run writing ``out`` now (``"process 123"``), where one holds its lock; None where none does.

    Told, where the system has open file description locks (Linux), by asking whether a write lock of
    the lock file could be taken, which takes none: a run holds a read lock of it beside its ``flock``
    (:class:`OutputLock`). A shared ``flock``, taken to test and dropped at once, refused a run
    starting in that instant as if another run held the output. Elsewhere it is still tried so (a run
    refused then says so, and can be started again), and so it is where no read lock is found and the
    lock file does not say its run took one: a run of a Clearsight before read locks, still going
    through an upgrade, or one whose file system refused it the read lock, holds the ``flock`` alone,
    and was taken for none (decide said its rows had no completion record, not that it wrote them).

    ``looking`` is called while it looks, the lock file open (for tests: a run starting then).
    """
    path = lock_path(out)
    if _something_else_at(path):
        return None  # a FIFO, a device put there by hand: no run takes such a file
    try:
        fd = os.open(path, os.O_RDONLY | _OPENED)  # never made here: no lock file, no run
    except OSError:
        return None
    try:
        if not _regular(fd):  # put there between the look and the open
            return None
        held = _held_open(fd)
        if not held and (held is None or _written(fd)[1:2] != [_READ_LOCKED]):
            # the run's read lock cannot be told here, or the run may hold none: the flock is tried
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # dropped as fd is closed, below
            except BlockingIOError:
                held = True
            except OSError:
                return None
            else:
                held = False
        if looking is not None:
            looking()
        return OutputLock._holder(fd) if held else None
    finally:
        os.close(fd)


def _written(fd: int) -> list[str]:
    """The words of the lock file open at ``fd``: a run's process id, then ``ofd`` where it holds its
    read lock (:class:`OutputLock`); none where it cannot be read."""
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").split()
    except OSError:
        return []


def _held_open(fd: int) -> bool | None:
    """Whether another open file holds a lock of the lock file open at ``fd`` (a run's read lock),
    asked without taking one; None where that cannot be asked (no open file description locks, or a
    file system that takes none)."""
    if _F_OFD_GETLK is None:
        return None
    try:
        found = fcntl.fcntl(fd, _F_OFD_GETLK, _whole_file(fcntl.F_WRLCK))
    except OSError:
        return None
    return bool(struct.unpack(_FLOCK, found)[0] != fcntl.F_UNLCK)
