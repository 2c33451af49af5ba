"""`clearsight data` commands: render a synthetic labelled dataset and look at it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from datasets.errors import InputError
from datasets.synth import (
    CARGO_TYPES,
    SynthConfig,
    changed_files,
    contact_sheet,
    generate_dataset,
    journaled_files,
    listed_files,
    not_generated,
)
from pipeline.cli.output_paths import check_writable
from pipeline.cli.progress import stage_progress

__all__ = ["register"]

data_app = typer.Typer(
    help="Synthetic inspection data: render a labelled dataset, preview it.", no_args_is_help=True
)


def _clear_output(out: Path, *, overwrite: bool) -> None:
    """An empty or new --out, or an earlier synthetic dataset removed with --overwrite.

    Rendering into a folder that holds an earlier dataset would mix the two runs' images (a smaller
    run leaves the larger one's files behind), and a model would then train on both. What a folder
    holds is removed only when it is recognisably one ``data synth`` wrote (its ``dataset.json``
    names the generator, or the marker of an interrupted run is there) and holds nothing the
    generator did not write: no image or mask but those its ``dataset.json`` lists, or an
    interrupted run's marker (an image named as the generator names them is not its own for that:
    someone may have added it), and each of those holding the bytes whose sha256 was recorded
    there as it was written (someone may have saved a file of their own under its name), as must
    ``manifest.csv`` where ``dataset.json`` records its sha256 (someone may have added a shipment). Other
    tools (nnU-Net) write a ``dataset.json`` too, and files added beside a dataset would go with it.
    The folder itself stays, so an ``--out`` that is a link replaces the dataset in the folder it
    names (as ``train --overwrite`` does), and a mount point can be replaced.
    """
    if not out.exists():
        if out.is_symlink():
            raise InputError(
                f"--out {str(out)!r} is a link to {os.readlink(out)!r}, which does not exist; give a "
                "folder, or make the one the link names"
            )
        return
    if not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise InputError(
            f"--out {str(out)!r} is not empty: rendering into it would mix two datasets; pass --overwrite "
            "to replace an earlier synthetic dataset there, or choose a new folder"
        )
    entries = sorted(out.iterdir())  # what is checked below is what is removed, nothing listed later
    meta = out / "dataset.json"
    marked, listed = _marked_files(out), listed_files(out)
    # a run whose marker is still there did not finish, whatever its dataset.json holds: one killed
    # while writing it (by a version that wrote it in place) left a dataset.json cut short
    interrupted = marked is not None
    own = {**(listed or {}), **(marked or {})}
    other = not_generated(out, files=own, also=(_RENDERING, _RENDERING_NEXT))
    if not (listed is not None or interrupted):
        why = "its dataset.json is another tool's" if meta.exists() else "no dataset.json"
        held = f"; it holds {_listed(other)}" if other else ""
        raise InputError(
            f"--out {str(out)!r} holds files that `clearsight data synth` did not write ({why}{held}); "
            "--overwrite only replaces an earlier synthetic dataset: give a new folder"
        )
    if other:
        raise InputError(
            f"--out {str(out)!r} holds an earlier synthetic dataset and {_listed(other)} besides, which "
            "replacing the dataset would remove; move them out, or give a new folder"
        )
    changed = changed_files(out, own)
    if changed:
        one = len(changed) == 1
        raise InputError(
            f"--out {str(out)!r} holds an earlier synthetic dataset whose {_listed(changed)} "
            f"{'holds' if one else 'hold'} other bytes than `clearsight data synth` wrote there (saved "
            f"over since), which replacing the dataset would remove; move {'it' if one else 'them'} out, "
            "or give a new folder"
        )
    # what it holds goes, the folder stays: through a link, or at a mount point, it is the same
    try:
        # marked first: a removal cut short (Ctrl-C, a file that will not go) leaves a folder the
        # next --overwrite still knows as an interrupted run's, not one to refuse as another tool's,
        # with the files that are its own once dataset.json has gone
        _mark_rendering(out, own)
        for entry in entries:
            if entry.name in (_RENDERING, _RENDERING_NEXT):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as exc:
        raise InputError(
            f"--out {str(out)!r}: cannot remove the earlier synthetic dataset ({exc.strerror or exc}); "
            "check that you may write there, or give a new folder"
        ) from exc


def _listed(paths: list[str]) -> str:
    """The first few of ``paths`` quoted, and how many more."""
    shown = ", ".join(repr(p) for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


_RENDERING = ".clearsight-synth-rendering"
"""Marks a folder `data synth` is writing (its dataset.json comes last): an interrupted run's folder
is still one that --overwrite may replace. It says which images and masks are the run's own there,
with their sha256, as dataset.json does once written: a first line of JSON whose ``files`` maps
those known when it was written to their sha256 (null: known by path alone, from a dataset.json of
a version before 2.2), then the generator's journal, a line per file appended as it is written
(:func:`datasets.synth.journaled_files`)."""
_RENDERING_NEXT = _RENDERING + ".tmp"
"""The marker being written, renamed over :data:`_RENDERING` once whole."""


def _mark_rendering(out: Path, files: Mapping[str, str | None]) -> None:
    """Mark ``out`` as being written, listing ``files`` (relative to it, with their sha256) as the
    run's own; the generator's journal is appended to it.

    Written whole, then renamed into place: a marker cut short would list some of them only."""
    note = "an interrupted `clearsight data synth` if still here; --overwrite removes only these files"
    text = json.dumps({"note": note, "files": dict(sorted(files.items()))}) + "\n"
    (out / _RENDERING_NEXT).write_text(text, encoding="utf-8")
    os.replace(out / _RENDERING_NEXT, out / _RENDERING)


def _marked_files(out: Path) -> dict[str, str | None] | None:
    """The files an interrupted run's marker lists as its own, with their sha256 (None: known by
    path alone); None where ``out`` holds no marker.

    The marker being written counts too: a first marking cut short leaves it, and nothing rendered.
    A marker with no list that can be read (an earlier version's) lists nothing: the images beside
    it are refused, not taken as the generator's by their names, and are for the user to remove."""
    found: dict[str, str | None] | None = None
    for name in (_RENDERING, _RENDERING_NEXT):
        try:
            text = (out / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError):
            text = ""
        found = {**(found or {}), **_marker_files(text)}
    return found


def _marker_files(text: str) -> dict[str, str | None]:
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("files"), list):
        # the version before 2.2 listed the files a run planned, with no sha256: known by path alone
        return dict.fromkeys((f for f in whole["files"] if isinstance(f, str)), None)
    try:
        header = json.loads(text.partition("\n")[0])
    except ValueError:
        header = None
    files = header.get("files") if isinstance(header, dict) else None
    own: dict[str, str | None] = {}
    if isinstance(files, dict):
        own.update((k, v) for k, v in files.items() if v is None or isinstance(v, str))
    own.update(journaled_files(text))
    return own


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (created if missing).")],
    cargo: Annotated[str, typer.Option(help=f"Cargo type: {', '.join(CARGO_TYPES)} or all.")] = "all",
    seed: Annotated[
        int, typer.Option(help="Seed; the same arguments and seed give byte-identical files.")
    ] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels (64-4096).")] = 256,
    train_good: Annotated[int, typer.Option(help="Normal training images per cargo type.")] = 100,
    train_anomalous: Annotated[
        int,
        typer.Option(help="Labelled anomalous training images per anomaly type (held-out types get none)."),
    ] = 0,
    test_good: Annotated[int, typer.Option(help="Normal test images per cargo type.")] = 40,
    test_anomalous: Annotated[int, typer.Option(help="Anomalous test images per anomaly type.")] = 10,
    holdout_types: Annotated[
        str,
        typer.Option(help="Comma-separated anomaly types never shown in training, e.g. puncture,wet_patch."),
    ] = "",
    workers: Annotated[int, typer.Option(help="Worker processes rendering in parallel.")] = 2,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier synthetic dataset in --out.")
    ] = False,
) -> None:
    """Render a synthetic dataset: MVTec layout per cargo type, manifest.csv (test images as shipments)
    and dataset.json (arguments, counts, per-image variant and severity)."""
    if cargo != "all" and cargo not in CARGO_TYPES:
        raise InputError(f"unknown cargo type {cargo!r}; accepted: {', '.join(CARGO_TYPES)}, all")
    config = SynthConfig(
        out=out,
        cargo=CARGO_TYPES if cargo == "all" else (cargo,),
        seed=seed,
        size=size,
        train_good=train_good,
        train_anomalous=train_anomalous,
        test_good=test_good,
        test_anomalous=test_anomalous,
        holdout_types=_split_list(holdout_types),
        workers=workers,
    )
    _clear_output(out, overwrite=overwrite)  # after the arguments are checked: a typo removes nothing
    try:
        out.mkdir(parents=True, exist_ok=True)
        _mark_rendering(out, {})  # the generator's journal adds each file as it is written
    except OSError as exc:
        raise InputError(
            f"--out {str(out)!r} cannot be made or written ({exc.strerror or exc}); give a folder you may "
            "write, under one that exists or can be made"
        ) from exc
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with stage_progress(Console(stderr=True), *columns) as progress:  # plain lines into a log
        summary = generate_dataset(
            config,
            progress=lambda done, total: progress("rendering", done, total),
            journal=out / _RENDERING,
        )
    (out / _RENDERING).unlink()
    typer.echo(f"Wrote {summary.images} images to {summary.root} (manifest.csv, dataset.json)")


@data_app.command("preview")
def preview(
    root: Annotated[Path, typer.Argument(help="A folder written by `clearsight data synth`.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write the contact sheet to.")],
    per_type: Annotated[int, typer.Option(help="Images per row (per cargo type x anomaly type).")] = 6,
    cargo: Annotated[
        str, typer.Option(help=f"Only this cargo type ({', '.join(CARGO_TYPES)}); default all.")
    ] = "",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Draw ONE contact sheet of the test images: a row per cargo type x anomaly type (good first),
    anomaly masks outlined in magenta. Use --cargo for a sheet of one cargo type."""
    # Never into the dataset it shows, as train and evaluate refuse their outputs there: written over
    # manifest.csv or dataset.json it broke the dataset, and as a picture in a split it was taken for one
    if out.resolve().is_relative_to(root.resolve()):
        raise InputError(
            f"--out {str(out)!r} lies inside the dataset {str(root)!r}: the contact sheet would replace or "
            "join the dataset's files; give a file outside it"
        )
    check_writable("--out", out)
    if out.exists() and not overwrite:  # an earlier sheet, or any other file, is kept unless told
        raise InputError(f"--out {str(out)!r} already exists; pass --overwrite to replace it")
    path = contact_sheet(root, out, per_type=per_type, cargo=cargo or None)
    typer.echo(f"Wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the `data` command group to the root app."""
    app.add_typer(data_app, name="data")
