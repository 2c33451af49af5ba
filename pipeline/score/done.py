"""The rows already in a score output, as ``--resume`` needs them, kept small.

A resumed run checks every task against the rows already written: is this image of this shipment
scored, and under the declaration its manifest row gives now? Held as path strings in a dict of
dicts per image, 200,000 rows took 89 MB before the run began and 171 MB at its peak; held as a
16-byte digest of each row's identity and 8 bytes of its declaration's, a fraction of that.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["ERROR", "HEATMAP", "SCORED", "Done", "declaration_digest", "row_state", "same_file"]

ERROR, SCORED, HEATMAP = 1, 2, 4
"""A row's state bits: it holds an error; it holds a score; it names a heatmap."""


def row_state(error: object, score: object, heatmap: object) -> int:
    """The state bits of a row from its error, score and heatmap fields (empty or None: absent)."""
    scored = not error and score not in (None, "")
    return (ERROR if error else 0) | (SCORED if scored else 0) | (HEATMAP if heatmap else 0)


def declaration_digest(declaration: Any) -> bytes:
    """8 bytes of a row's declaration: a resumed run compares the manifest's with the row's."""
    text = json.dumps(declaration or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).digest()[:8]


def same_file(path: str, folders: dict[str, str], cwd: str | None = None) -> str:
    """``path`` absolute (against ``cwd``, the working folder by default), its folder resolved
    through links (``folders`` caches them): a run resumed through /data/link after /data/real must
    not score the archive twice. The file's own name is kept, so that two names linked to one file
    stay two rows, as the inputs list them."""
    folder, name = os.path.split(os.path.join(cwd or os.getcwd(), path))  # realpath below reads any ..
    real = folders.get(folder)
    if real is None:
        real = folders[folder] = os.path.realpath(folder)
    return os.path.join(real, name)


class Done:
    """Rows by identity: an image (:func:`same_file` of its path) under a shipment (None outside a
    manifest), with the digest of the declaration it was scored under. One picture may be listed
    under several shipments (manifests of two days), each its own row."""

    def __init__(self) -> None:
        self._rows: dict[bytes, bytes] = {}
        self._folders: dict[str, str] = {}
        self._cwd = os.getcwd()  # once: a key is asked for each of the rows and each task
        # the cargo type each row was scored as, one byte a row: a folder's images carry no
        # declaration, and a resume under another --cargo-type routed the rest to another model
        self._cargo_ids: dict[str | None, int] = {None: 0}
        self._cargo_names: list[str | None] = [None]
        self.scored = 0  # rows that hold a score

    def key(self, path: str, shipment_id: str | None) -> bytes:
        """The identity of ``path`` (as a row names it) under ``shipment_id``."""
        file = same_file(path, self._folders, self._cwd).encode("utf-8", "surrogateescape")
        shipment = b"\0" if shipment_id is None else b"\1" + shipment_id.encode("utf-8", "surrogateescape")
        return hashlib.blake2b(file + b"\0" + shipment, digest_size=16).digest()

    def add(
        self,
        path: str,
        shipment_id: str | None,
        declaration: Any,
        cargo_type: str | None = None,
        state: int = 0,
    ) -> bytes:
        """Note one row; ``state``: its :data:`ERROR`, :data:`SCORED` and :data:`HEATMAP` bits, which a
        resume reports of the rows it keeps without reading the output again. Returns its identity
        (:meth:`key`)."""
        # kept for a folder's or glob's image alone (no shipment, no declaration), whose cargo type
        # --cargo-type gave: a manifest row's is in its declaration, and manifest rows' free-text
        # types used up the slots before folder rows came
        if shipment_id is not None or declaration:
            cargo_type = None
        cargo = self._cargo_ids.get(cargo_type)
        if cargo is None:
            # beyond 255 cargo types (free text in a manifest), rows keep none: never checked
            cargo = len(self._cargo_names) if len(self._cargo_names) < 256 else 0
            if cargo:
                self._cargo_ids[cargo_type] = cargo
                self._cargo_names.append(cargo_type)
        self.scored += bool(state & SCORED)
        identity = self.key(path, shipment_id)
        self._rows[identity] = declaration_digest(declaration) + bytes([cargo, state])
        return identity

    def get(self, key: bytes) -> tuple[bytes, str | None] | None:
        """(the declaration digest, the cargo type or None where not kept) of the row with identity
        ``key``, or None: not done."""
        value = self._rows.get(key)
        if value is None:
            return None
        return value[:8], self._cargo_names[value[8]]

    def state(self, key: bytes) -> int:
        """The state bits of the row with identity ``key`` (0 when not done)."""
        value = self._rows.get(key)
        return 0 if value is None else value[9]

    def clear(self) -> None:
        """Forget every row (the output is read again after rows were taken out of it)."""
        self._rows.clear()
        self.scored = 0

    def __contains__(self, identity: object) -> bool:
        """``(path, shipment_id) in done``."""
        if not isinstance(identity, tuple) or len(identity) != 2:
            return False
        return self.key(*identity) in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[bytes]:
        """The identities (:meth:`key`) of the rows."""
        return iter(self._rows)
