"""Whether each scored row a ``--resume`` would keep is still of the picture at its path.

A resumed run skipped every picture that had a row. Scanners reuse file names: a picture written over
with a new scan between the killed run and the resume kept its old row, the new picture was never
scored, and its shipment could be released on the old picture's score. So, as the output is read
back, each scored row's file is read again and its sha256 compared with the row's
(:func:`pipeline.listed_content.compare`, the rule ``clearsight decide --manifest`` applies):

- the same bytes: the row is kept, as before;
- other bytes, something there that cannot be read, or no sha256 to compare while a file is there:
  the row is taken out of the output (:func:`pipeline.score.writer.open_output` rewrites it, as
  ``--retry-errors`` does its error rows) before anything is appended, and the picture, having no
  row, is scored again where the run lists it. The output never holds the old row beside the new
  one: deciding takes the strictest tier over two rows of one picture, and ``decide --manifest``
  would hold the shipment for ever on the old row's content;
- nothing at the path (archived or moved away since scoring): the row is taken out too, and
  counted: the resume's new completion record would vouch for a row it never checked against its
  picture. An earlier run's genuine sealed row of the name put in its place (a first scan's score,
  the new scan written over it archived away) was kept, and its shipment released on the old score
  under the new record. The picture, where the run lists it, is scored again: an error row for a
  file not there, which holds its shipment until it is scored from where it lies now;
- a row that holds an error is not read again: it is never released as it is;
- with a row seal key (:mod:`pipeline.row_seal`), a row whose seal is missing or does not verify
  (its scores edited since they were written, or a row written without the key) is taken out too,
  whatever its picture: the resume's new record and rows would otherwise vouch for an edited row;
- an output holds one run's rows (:attr:`KeptContent.run_id`): the resume adopts the run id of the
  latest run among the (sealed) rows it keeps, and a row of another run, or without a run id where
  rows have one, is taken out too: an earlier run's genuine sealed rows of the same pictures put
  among them (an older model's lower scores) would otherwise stand in the resumed output, under a
  new completion record. Where none of that run's rows is left the run takes a fresh id
  (:attr:`KeptContent.goes_on`).

So the resume's new record vouches only for rows this run scored, scored rows whose picture it read
again and found the same, and error rows (never released as they are).

The file read is the one the resume keeps the row for (:func:`files_of`): a row an earlier version
wrote of a name holding a typed ``\\xNN`` names no file today, and reading its text back as bytes
read a file that is not there, so the row was kept as archived away, and released on the old
picture's score after a new scan was written over the real one.

Rows are checked a chunk at a time as the output is read (a few hundred paths held), and only the
row numbers and identities of the rows taken out are kept, so the resume's index
(:class:`~pipeline.score.done.Done`) holds no digest of the pictures.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Mapping

from pipeline.listed_content import Standing, compare, hash_files
from pipeline.score.batch import ESCAPE, earlier_paths_of, path_of_printable, present_path_of_printable
from pipeline.score.done import SCORED
from pipeline.verdicts import ImageVerdict

__all__ = ["KeptContent", "files_of", "standing_at"]

_CHUNK = 256
"""Rows whose files are read in one go: enough for the reading threads to overlap."""


_PATH_DIGEST = 12
"""Bytes of a path's digest (:func:`_path_digest`)."""


def _path_digest(text: str) -> bytes:
    """A short digest of a row's path, kept for each row of the run a resume adopts so far."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=_PATH_DIGEST).digest()


def files_of(text: str) -> list[str]:
    """The files a row naming ``text`` may be kept for, by the rule the resume keeps it by
    (``runner._earlier_row``): the file today's version names so, while something is there
    (:func:`~pipeline.score.batch.present_path_of_printable`); else that name and each an earlier
    version wrote so (:func:`~pipeline.score.batch.earlier_paths_of`: ``caf\\xe9.png`` typed, a
    ``\\xNN`` of its own never read back as a byte), whichever of them the run lists keeping it."""
    if not ESCAPE.search(text):  # written as it is, today as before: no other name's text
        return [text]
    today = present_path_of_printable(text)
    if today is not None:
        return [today]
    path = path_of_printable(text)
    return [*([path] if path is not None else []), *earlier_paths_of(text)]


def standing_at(sha256: str | None, found: Mapping[str, str | OSError], files: list[str]) -> Standing:
    """How a row stands against every file it may be kept for: absent only where none is there, the
    same only where each there is the picture scored; else how the first other one stands."""
    there = [how for how in (compare(sha256, found[f]) for f in files) if how != "absent"]
    if not there:
        return "absent"
    return next((how for how in there if how != "same"), "same")


class KeptContent:
    """Fed every complete row of an output as it is read (:meth:`note`, in order), says which scored
    rows to take out: their picture's file is another picture now (:attr:`stale`).

    Attributes:
        stale: the row numbers (0-based, in the output's order) to take out, each to its identity
            (:meth:`~pipeline.score.done.Done.key`).
        changed, unreadable, unhashed: how many rows were taken out for each reason
            (:func:`~pipeline.listed_content.compare`); unsealed: for their row seal
            (:attr:`seal_key`); other_run: for their run id (:attr:`run_id`).
        run_id: the run id the resume adopts, once every row is noted: the latest (ids sort as the
            runs started) among the rows not taken out for their seal; None where those have none
            (an output of a version before run ids: its rows are kept, and the resume writes none);
            gone on with only where a row of it is kept (:attr:`goes_on`).
        runs_seen: whether any row was noted that its seal did not take out (none: the run takes a
            fresh id).
        absent: of :attr:`stale`, scored rows of the run adopted whose file is not there now (their
            content cannot be compared); a row of a run taken out later counts in other_run.
        first_stale: the first row taken out (its path as the row names it), and why.
        overlays: each row taken out that named an overlay PNG, as the rows are taken out
            (:func:`~pipeline.score.writer.open_output`): the runner removes the overlays it wrote,
            by the name it derives from the row's path, sha256 and model (or, for a row an earlier
            version wrote, its path alone).
        kept_overlays: the heatmaps named by rows left in the output of a path a row taken out names
            (a picture under two shipments has one overlay name per model, and had one per path as
            earlier versions named them): never removed, a row names them.
    """

    def __init__(
        self,
        *,
        content: Callable[[Iterable[str]], Mapping[str, str | OSError]] = hash_files,
        chunk: int = _CHUNK,
        advance: Callable[[], None] | None = None,
        seal_key: bytes | None = None,
    ) -> None:
        # the row seal key (pipeline.row_seal), whose rows the output's reader checks for it
        self.seal_key = seal_key
        self._content = content
        self._chunk = max(1, chunk)
        self._advance = advance
        self._rows = 0
        self._waiting: list[tuple[int, bytes, str, str | None]] = []  # number, identity, text, sha256
        self.stale: dict[int, bytes] = {}
        self.changed = self.unreadable = self.unhashed = self.unsealed = self.absent = self.other_run = 0
        self.run_id: str | None = None
        self.runs_seen = False
        # the rows of run_id noted so far, packed: their numbers, identities (16 bytes each) and path
        # digests (_PATH_DIGEST bytes each), and the first one's path: taken out if a later run's row
        # comes, where their paths are no longer at hand
        self._run_numbers = array("q")
        self._run_identities = bytearray()
        self._run_paths = bytearray()
        self._run_first = ""
        self._stale_path_digests: set[bytes] = set()  # of the rows so taken out
        self._run_absent = array("q")  # the rows of run_id taken out for their picture absent
        self.first_stale: tuple[str, str] | None = None
        self.overlays: list[ImageVerdict] = []
        self.kept_overlays: set[str] = set()
        self.stale_paths: set[str] = set()  # the paths the rows taken out name

    def note(
        self,
        identity: bytes,
        text: str,
        sha256: str | None,
        state: int,
        *,
        unsealed: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """One complete row of the output, the next in order: its identity, its path as it names
        it, its sha256 and its state bits (:func:`~pipeline.score.done.row_state`); ``unsealed``:
        why its row seal does not vouch for it (:func:`pipeline.row_seal.fault`), None where it
        does or none is checked; ``run_id``: the run that wrote it, as the row says."""
        number = self._rows
        self._rows += 1
        if unsealed is not None:  # an edited row, an error row too: taken out, its picture read or not
            self.unsealed += 1
            self._take_out(number, identity, text, "unsealed")
            return
        # its run id counts only once its seal vouches for it: an edited one adopts nothing
        if not self._of_the_run(number, identity, text, run_id):
            return
        if state & SCORED:  # an error row is never released as it is: not read again
            self._waiting.append((number, identity, text, sha256))
            if len(self._waiting) >= self._chunk:
                self.finish()

    def _take_out(self, number: int, identity: bytes, text: str, why: str) -> None:
        self.stale[number] = identity
        self.stale_paths.add(text)
        if self.first_stale is None:
            self.first_stale = (text, why)

    def _of_the_run(self, number: int, identity: bytes, text: str, run_id: str | None) -> bool:
        """Whether the row ``number`` is of the latest run noted so far; a row of an earlier one is
        taken out, and so are the rows noted of the run it was while a later one comes (a row
        without a run id is earlier than any with one)."""
        mine = run_id or ""
        if not self.runs_seen or mine > (self.run_id or ""):
            for at, kept in enumerate(self._run_numbers):
                if kept in self.stale:  # taken out for its content already: counted there
                    continue
                self.other_run += 1
                self.stale[kept] = bytes(self._run_identities[16 * at : 16 * (at + 1)])
                digest = self._run_paths[_PATH_DIGEST * at : _PATH_DIGEST * (at + 1)]
                self._stale_path_digests.add(bytes(digest))
                if self.first_stale is None:
                    self.first_stale = (self._run_first, "other run")
            self._run_numbers, self._run_identities, self._run_paths = array("q"), bytearray(), bytearray()
            self.runs_seen, self.run_id, self._run_first = True, run_id, text
            # the rows of the run just taken out whose picture was absent count as of another run,
            # as those not read yet do: a count that does not hang on where a chunk ended
            self.absent -= len(self._run_absent)
            self.other_run += len(self._run_absent)
            self._run_absent = array("q")
        elif mine < (self.run_id or ""):
            self.other_run += 1
            self._take_out(number, identity, text, "other run")
            return False
        self._run_numbers.append(number)
        self._run_identities += identity
        self._run_paths += _path_digest(text)
        return True

    def took_out(self, text: str) -> bool:
        """Whether a row taken out names the path ``text``."""
        return text in self.stale_paths or _path_digest(text) in self._stale_path_digests

    def finish(self) -> None:
        """Read the files of the rows noted and not read yet."""
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        files = {text: files_of(text) for _, _, text, _ in waiting}
        # a picture listed under several shipments has a row of each: read once
        found = self._content(sorted({f for named in files.values() for f in named}))
        for number, identity, text, sha256 in waiting:
            how = standing_at(sha256, found, files[text])
            if self._advance is not None:
                self._advance()
            if how == "same" or number in self.stale:  # or taken out for its run already
                continue
            if how == "absent":
                self._run_absent.append(number)
            setattr(self, how, getattr(self, how) + 1)
            self._take_out(number, identity, text, how)

    @property
    def goes_on(self) -> bool:
        """Whether the resume goes on with :attr:`run_id`, once every row is noted and read
        (:meth:`finish`): only where a row of that run is kept. A run none of whose rows is left (all
        taken out, their pictures archived away, say) was adopted from rows this run neither scored
        nor checked, and its id written into every row scored now and into the new record: the rows
        it scored could not be told from that run's by their run id (a splice of them taken for one
        run's rows); the run takes a fresh id."""
        return self.runs_seen and any(number not in self.stale for number in self._run_numbers)

    @property
    def taken_out(self) -> int:
        """Rows taken out of the output (their pictures scored again where listed)."""
        return len(self.stale)
