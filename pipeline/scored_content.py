"""Whether each scored row ``clearsight decide`` is given is still of the picture at its path.

Neither the completion record nor the row seals say which run or day wrote the rows: whoever could
write the verdicts folder copied yesterday's whole genuine output, and its genuine sealed record, over
today's, and ``decide`` released today's shipments, whose new scans lay at the file names yesterday's
rows give, on yesterday's scores of other pictures. ``decide --manifest`` read each listed picture
again, and ``score --resume`` each kept one; without a manifest nothing was read. So each scored
row's file is read now (:func:`~pipeline.listed_content.hash_files`, bounded: regular files only, at
most ``max_image_bytes``) and compared with the row's ``sha256`` by the rule those two apply
(:func:`~pipeline.listed_content.compare`, through the files a resume reads for a row's text,
``\\xNN`` escapes included: :mod:`pipeline.score.kept_content`):

- the same bytes: the row is decided as it is;
- other bytes, something there that cannot be read, or no sha256 to compare while a file is there:
  the row becomes an error row, its scores and picture hashes cleared (they may be another
  picture's, and the audit store indexes a decided row's hashes as the picture judged), so that its
  shipment is held while the file's other shipments are decided;
- nothing at the path (archived away since scoring): the row is decided as it is, the record of what
  was scored (no other picture lies there to be confused with it), and counted, said;
- a row that holds an error is not read: it is never released as it is.

With ``--manifest`` too: :func:`pipeline.redeclare.redeclare` compares only the rows of pictures the
manifest lists, and a manifest that lists some shipments (an alarm raised on one since scoring) or
some pictures of a shipment is an ordinary one; so a replayed earlier output decided with it
released the shipments and pictures it leaves out on yesterday's scores of other pictures. Each row
redeclare did not compare is compared here (``compared``: the ones it did, each file read once).

Only the digest is compared: nothing read is shown or kept. A replay whose rows' pictures were all
archived away since, today's scans lying under other names, is not caught here: those scans have no
row, and only a manifest (``--manifest``) lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from pipeline.listed_content import compare, hash_files
from pipeline.score.kept_content import files_of, standing_at  # the resume's rule, shared
from pipeline.verdicts import ImageVerdict, as_error_row

__all__ = ["AtTheirPaths", "changed_error", "check_at_paths"]

_AGAIN = "score the picture again and decide the new rows"


def changed_error(path: str, how: str) -> str:
    """The error of a scored row of ``path`` (as the row names it) whose file stands ``how``
    (:func:`~pipeline.listed_content.compare`: changed, unreadable, unhashed) now: one clause, no
    parentheses, read inside :mod:`pipeline.decide`'s "image could not be scored (...); never
    released"."""
    if how == "changed":
        return (
            f"the picture at {path!r} changed since it was scored: the file there holds other bytes now "
            "than the ones its row was scored on, as a new scan written over the name or an earlier "
            f"run's rows copied over this run's would, so that score is another picture's; {_AGAIN}"
        )
    if how == "unreadable":
        return (
            f"the picture at {path!r} may have changed since it was scored: a file is there that cannot "
            "be read now, so whether it is the picture scored cannot be told; make it readable and "
            f"decide again, or {_AGAIN}"
        )
    return (
        f"the picture at {path!r} may have changed since it was scored: its row, an older one, has no "
        f"sha256 to compare the file there now with; {_AGAIN}"
    )


@dataclass
class AtTheirPaths:
    """What reading each scored row's picture found (:func:`check_at_paths`): the rows by how their
    file stands, each as the row names its path (``unreadable``: and why), in the rows' order."""

    same: int = 0
    changed: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    unhashed: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    held_shipments: set[str] = field(default_factory=set)
    """The shipments a row of which was made an error row here."""

    @property
    def held(self) -> int:
        return len(self.changed) + len(self.unreadable) + len(self.unhashed)

    def summary(self) -> str:
        """The counts, for decide's output."""
        compared = self.same + self.held
        return (
            f"{compared} scored picture(s) compared with the file at their path: {self.held} held, their "
            f"shipments not released ({len(self.changed)} changed since scoring, {len(self.unreadable)} "
            f"unreadable, {len(self.unhashed)} without a sha256); {len(self.absent)} pictures no longer "
            "at their path: not compared"
        )

    def warnings(self) -> list[str]:
        """What an officer should know, first row named."""
        said = []
        if self.held:
            if self.changed:
                first = f"{self.changed[0]!r} (changed since scoring)"
            elif self.unreadable:
                first = f"{self.unreadable[0][0]!r} (cannot be read: {self.unreadable[0][1]})"
            else:
                first = f"{self.unhashed[0]!r} (its row has no sha256)"
            said.append(
                f"{self.held} scored row(s) of --verdicts are not of the picture at their path now, or "
                f"cannot be compared with it, so {len(self.held_shipments)} shipment(s) holding them are "
                f"not released: {first} first; a new scan written over the name, or an earlier run's "
                "output copied over this one: score the pictures again and decide the new rows"
            )
        if self.absent:
            said.append(
                f"{len(self.absent)} scored row(s) of --verdicts were decided on their scores as "
                "recorded without comparing their picture: no file is at their path now (archived or "
                f"moved away since scoring?): {self.absent[0]!r} first"
            )
        return said


def _why(now: Mapping[str, str | OSError], files: list[str]) -> str:
    """Why the first of ``files`` that is there could not be read."""
    for f in files:
        error = now[f]
        if isinstance(error, OSError) and compare(None, error) == "unreadable":
            return error.strerror or str(error)
    return "cannot be read"


def check_at_paths(
    rows: list[ImageVerdict],
    *,
    content: Callable[[list[str]], Mapping[str, str | OSError]] = hash_files,
    compared: Collection[int] = (),
) -> tuple[list[ImageVerdict], AtTheirPaths]:
    """``rows``, each scored one whose file holds other bytes now than its ``sha256``, cannot be
    read, or is there while the row has no sha256 made an error row (:func:`changed_error`), and
    what was found. ``content``: each file's sha256 now, or the OSError reading it raised
    (:func:`~pipeline.listed_content.hash_files`), called once with every file to read (a picture
    under two shipments is read once). ``compared``: the numbers of the rows compared with their
    file already (:attr:`pipeline.redeclare.Redeclared.compared`), passed as they are, not read
    again nor counted here."""
    found = AtTheirPaths()
    skip = set(compared)
    to_read = [row for n, row in enumerate(rows) if row.error is None and n not in skip]
    files = {row.path: files_of(row.path) for row in to_read}
    # nothing left to read (a manifest listing every picture): no progress shown for none
    now = content(sorted({f for named in files.values() for f in named})) if files else {}
    out = []
    for n, row in enumerate(rows):
        if row.error is not None or n in skip:
            out.append(row)
            continue
        how = standing_at(row.sha256, now, files[row.path])
        if how == "same":
            found.same += 1
        elif how == "absent":
            found.absent.append(row.path)
        else:
            if how == "unreadable":
                found.unreadable.append((row.path, _why(now, files[row.path])))
            else:
                getattr(found, how).append(row.path)
            shipment = row.shipment_id or row.declaration.get("shipment_id")
            found.held_shipments.add(str(shipment))
            row = as_error_row(row, changed_error(row.path, how))
        out.append(row)
    return out, found
