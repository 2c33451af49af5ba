"""The model folder, ``--out``: refused before any training where the model cannot or must not be
written there, and the new model swapped in only once it is complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from models.artifact import CARD_FILE, WEIGHTS_FILE, save_artifact
from models.detector import Detector


def check_out_dir(out: Path, data_root: Path, *, overwrite: bool) -> None:
    """Refuse, before any training, an ``--out`` the model cannot or must not be written to.

    Nothing is left here (a folder is made and removed where the model will go, to try that it
    can be): a run that fails leaves no empty folder behind.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder for the model (made if missing)")
    real = out.resolve()
    if real.is_relative_to(data_root.resolve()):
        raise InputError(
            f"--out {str(out)!r} lies inside --data {str(data_root)!r}: the model's files would become part "
            "of the dataset; give a folder outside it"
        )
    if data_root.resolve().is_relative_to(real):
        raise InputError(
            f"--data {str(data_root)!r} lies inside --out {str(out)!r}: replacing the model there would "
            "remove the dataset; give a folder for the model outside it"
        )
    if _holds_files(real):
        # the whole folder is swapped for the new model's: anything else in it would go with the old
        others = sorted(p.name for p in real.iterdir() if not _model_file(p) and not _placeholder(p))
        complete = (real / CARD_FILE).is_file()
        if not complete and others:
            raise InputError(
                f"--out {str(out)!r} holds files that are not a Clearsight model (no {CARD_FILE}); give an "
                "empty or new folder"
            )
        if not overwrite:
            # model files but no card: what a save cut short leaves (save_artifact writes the card last)
            left = ", ".join(sorted(p.name for p in real.iterdir() if _model_file(p)))
            held = (
                "a model already" if complete else f"a model save that was cut short ({left}; no {CARD_FILE})"
            )
            raise InputError(
                f"--out {str(out)!r} holds {held}; pass --overwrite to replace it (the new one takes its "
                "place only once it is written), or give a new folder"
            )
        if others:
            raise InputError(
                f"--out {str(out)!r} holds {len(others)} file(s) besides the model ({others[0]!r} first), "
                "which replacing the model would remove; move them, or give a new folder"
            )
        if os.path.ismount(real):
            raise InputError(
                f"--out {str(out)!r} is a mount point: a model there cannot be swapped; use a folder in it"
            )
    _probe(out, real)


def _probe(out: Path, real: Path) -> None:
    """Make and remove a folder where the model will be written: in ``--out`` when it is empty,
    else beside it (where a new model is written, then swapped in, or the folders made down to it).

    Tried for real, not asked of ``os.access``: that says yes to root on ``/proc`` and on a
    read-only mount, and the save failed there only after the whole training."""
    where = real if real.is_dir() and not _holds_files(real) else real.parent
    where = next(p for p in (where, *where.parents) if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{real.name}.probe-", dir=where))
    except OSError as exc:
        raise InputError(
            f"--out {str(out)!r}: cannot write under {str(where)!r} ({exc.strerror or exc}); give a folder "
            "you may write, under one that exists or can be made"
        ) from exc


_MODEL_FILES = frozenset({CARD_FILE, WEIGHTS_FILE, CARD_FILE + ".tmp", WEIGHTS_FILE + ".tmp"})
"""What a model folder holds (the last two left by a save cut short): --overwrite replaces a folder
holding these alone (and placeholders), with or without its card."""


def _model_file(path: Path) -> bool:
    """One of :data:`_MODEL_FILES`, as a file (a folder of that name is no part of a model)."""
    return path.name in _MODEL_FILES and path.is_file()


def _placeholder(path: Path) -> bool:
    """An empty hidden file (a ``.gitkeep``): nothing lost when the folder is replaced."""
    return path.name.startswith(".") and path.is_file() and not path.is_symlink() and path.stat().st_size == 0


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything but hidden files (a ``.gitkeep``)."""
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


Save = Callable[[Path, Detector, dict[str, Any]], Path]
"""How a model is written to a folder: :func:`models.artifact.save_artifact`."""


def save_in_place_of(
    out: Path, detector: Detector, card: dict[str, Any], *, save: Save = save_artifact
) -> Path:
    """Write the artifact to ``out``; a model already there is replaced only once the new one is
    complete (written beside it, then swapped in), so a failure never leaves half of each. ``out``
    through a link replaces the folder the link names.

    Raises:
        InputError: the model cannot be written (a full disk), naming ``out`` and why; what was
            written of it is removed, and the folders made for it.
    """
    given, out = out, out.resolve()
    if not _holds_files(out):
        return _save_new(given, out, detector, card, save)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    os.chmod(staging, stat.S_IMODE(out.stat().st_mode))  # mkdtemp's 0700 would lock a service out
    retired = staging.with_name(staging.name.replace(".new-", ".old-", 1))
    try:
        save(staging, detector, card)
        os.replace(out, retired)
        try:
            os.replace(staging, out)
        except OSError:
            os.replace(retired, out)  # the earlier model back where it was
            raise
    except OSError as exc:
        raise InputError(
            f"--out {str(given)!r}: cannot put the new model in place ({exc.strerror or exc})"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    return out


def _save_new(given: Path, out: Path, detector: Detector, card: dict[str, Any], save: Save) -> Path:
    """Write the artifact into ``out``, new or empty (placeholders aside). A save that fails (a full
    disk) leaves nothing: its partial files, left as they were, read as a save cut short, which the
    next run refused without --overwrite."""
    made = [p for p in (out, *out.parents) if not p.exists()]  # deepest first: removed in this order
    try:
        return save(out, detector, card)
    except OSError as exc:
        for name in _MODEL_FILES:  # none of them was there: a folder holding one is not saved into here
            with contextlib.suppress(OSError):
                (out / name).unlink()
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise InputError(
            f"--out {str(given)!r}: cannot write the model there ({exc.strerror or exc})"
        ) from exc
