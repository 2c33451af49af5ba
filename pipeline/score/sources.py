"""What the batch scorer reads: image tasks from folders, globs and manifests, lazily.

An :class:`ImageTask` is one image to score plus what the manifest says about it (shipment,
cargo type, declaration). Tasks are produced by generators so that a 100k-image archive is never
held in memory as a list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets.folder import MANIFEST_EXTENSIONS, LeftOut, SameFile

__all__ = ["ImageTask", "absolute_path", "count_tasks", "is_manifest", "iter_tasks"]


@dataclass(frozen=True)
class ImageTask:
    """One image to score.

    Attributes:
        path: the image file, absolute (a manifest's paths resolved against its folder first), so
            that a run resumed from another working folder finds its rows; not resolved through
            links, so that rows name files as the inputs do.
        shipment_id: the shipment it belongs to (manifest only).
        cargo_type: the cargo type that picks the model; ``None`` means "not said" and the
            router falls back to the only loaded model, if there is exactly one.
        declaration: the manifest row's declaration columns, carried into the output row.
    """

    path: str
    shipment_id: str | None = None
    cargo_type: str | None = None
    declaration: dict[str, Any] = field(default_factory=dict)


def is_manifest(item: str | Path) -> bool:
    """True when ``item`` is an existing file whose suffix marks a manifest (CSV, JSONL, NDJSON)."""
    path = Path(item)
    return path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file()


def _manifest_tasks(manifest: Path, default_cargo_type: str | None) -> Iterator[ImageTask]:
    from datasets.manifest import iter_manifest

    # check_files=False: a listed image that is missing becomes an error row, not a stopped run.
    for row in iter_manifest(manifest, check_files=False):
        yield ImageTask(
            path=absolute_path(row.path),
            shipment_id=row.shipment_id or None,
            cargo_type=row.cargo_type or default_cargo_type,
            declaration=dict(row.declaration or {}),
        )


def absolute_path(path: str | Path) -> str:
    """``path`` made absolute as the file it names: ``.`` and doubled separators dropped, but a
    ``..`` left to the file system (``link/..`` is the link's target's parent, which a text-only
    normalisation would take for the folder holding the link, and so score another file)."""
    text = os.path.join(os.getcwd(), os.fspath(path))
    if ".." not in Path(text).parts:
        return os.path.normpath(text)
    folder, name = os.path.split(text)
    return os.path.join(os.path.realpath(folder), name)


def iter_tasks(
    inputs: Iterable[str | Path],
    *,
    cargo_type: str | None = None,
    left_out: LeftOut | None = None,
    same_file: SameFile | None = None,
) -> Iterator[ImageTask]:
    """Yield one task per image named by ``inputs``, in input order, lazily.

    Args:
        inputs: folders (walked), globs, image files, and manifests (``.csv``/``.jsonl`` files).
        cargo_type: cargo type of images from folders and globs, and of manifest rows that leave
            it empty; ``None`` leaves it to the model router.
        left_out: told of each file a folder or glob leaves out for its extension
            (:func:`~datasets.folder.iter_image_paths`).
        same_file: told of each path a folder or glob leaves out because it names a file given
            already (a link), with the path given for it (:func:`~datasets.folder.iter_image_paths`).

    Raises:
        InputError: from the folder walker or the manifest reader, naming the bad input.
    """
    from datasets.folder import iter_image_paths

    for item in inputs:
        if is_manifest(item):
            yield from _manifest_tasks(Path(item), cargo_type)
        else:
            for path in iter_image_paths([item], left_out=left_out, same_file=same_file):
                yield ImageTask(path=absolute_path(path), cargo_type=cargo_type)


def count_tasks(inputs: Iterable[str | Path], *, left_out: LeftOut | None = None) -> int:
    """Count the images :func:`iter_tasks` would yield (for the progress bar's ETA), in O(1) memory;
    ``left_out`` is told of the files its folders and globs leave out (:func:`iter_tasks`)."""
    return sum(1 for _ in iter_tasks(inputs, left_out=left_out))
