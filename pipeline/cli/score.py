"""`clearsight score`: score an archive of images, crash-safely, and optionally decide shipments."""

from __future__ import annotations

import contextlib
import enum
import errno
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from datasets.errors import ArtifactError, ConflictError, InputError
from pipeline.cli.output_paths import audit_file, check_name_fits, check_outputs_apart, check_writable
from pipeline.cli.score_progress import score_progress
from pipeline.settings import (
    RuntimeName,
    Settings,
    audit_key,
    audit_seal_key,
    completion_seal_key,
    decode_limits,
    row_seal_key,
)

__all__ = ["register", "score"]


class EngineName(enum.StrEnum):
    local = "local"
    ray = "ray"


def _load_predictors(models: list[Path], *, runtime: str) -> list[Any]:
    try:
        from models.artifact import load_model
    except ImportError as exc:  # the artifact format is another layer's; say so rather than crash
        raise ArtifactError("loading a MODEL_DIR needs models.artifact, which this build lacks") from exc
    return [load_model(path, runtime=runtime) for path in models]


def _check_routing(loaded: list[str], cargo_type: str | None, inputs: list[str], is_manifest: Any) -> None:
    """Refuse, before scoring, a run whose images could reach no model: every row would be an error."""
    accepted = ", ".join(repr(kind) for kind in loaded)
    if cargo_type is not None and cargo_type not in loaded:
        raise InputError(f"--cargo-type {cargo_type!r} has no model; loaded: {accepted}")
    plain = [item for item in inputs if not is_manifest(item)]
    if cargo_type is None and len(loaded) > 1 and plain:
        raise InputError(
            f"{plain[0]!r} is a folder, glob or image, whose images have no cargo type, and "
            f"{len(loaded)} models are loaded ({accepted}): pass --cargo-type, or list the images "
            "in a manifest with a cargo_type column"
        )


def score(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Folders, globs (quote them), image files, or manifests (.csv/.jsonl with path, "
            "shipment_id, cargo_type and declaration columns).",
            show_default=False,
        ),
    ],
    model: Annotated[
        list[Path],
        typer.Option("--model", help="A trained MODEL_DIR; repeat: one per cargo type.", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output: .jsonl, .csv or .parquet.", show_default=False)],
    heatmaps: Annotated[
        Path | None, typer.Option("--heatmaps", help="Write an overlay PNG per scored image in this folder.")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="After scoring, decide shipments under this policy YAML."),
    ] = None,
    decisions: Annotated[
        Path | None,
        typer.Option(
            "--decisions",
            help="Decisions file.",
            show_default="OUT.decisions.jsonl, X.decisions.jsonl for X.jsonl unless X ends in "
            ".jsonl, .csv or .parquet",
        ),
    ] = None,
    audit_db: Annotated[
        str | None,
        typer.Option("--audit-db", help="Record each decision in this audit store (SQLAlchemy URL)."),
    ] = None,
    trader_register: Annotated[
        Path | None,
        typer.Option(
            "--trader-register",
            help="With --policy: CSV of trusted traders (trader_id, aeo_tier) as the customs authority "
            "keeps it; each trader's AEO tier comes from it, not from the manifest.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run: keep OUT's rows, score the rest. Each kept row's picture is "
            "read again: a row whose file holds other bytes now (a new scan under the old name) is taken "
            "out and its picture scored again.",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")] = False,
    retry_errors: Annotated[
        bool,
        typer.Option(
            "--retry-errors", help="With --resume: score again the images whose rows hold an error."
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Parallel decoders (or Ray actors), 1 to 64.")
    ] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per model call.")] = 8,
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels-in-flight",
            min=1,
            help="Most pixels decoded and waiting at once, a 16-bit pixel counted twice (bounds memory "
            "with large images; local engine).",
        ),
    ] = 400_000_000,
    engine: Annotated[
        EngineName, typer.Option("--engine", help="local: this process; ray: Ray Data (optional extra).")
    ] = EngineName.local,
    runtime: Annotated[
        RuntimeName | None,
        typer.Option(
            "--runtime", help="What runs the models.", show_default="CLEARSIGHT_RUNTIME or onnxruntime"
        ),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Join this Ray cluster instead of a local Ray.")
    ] = None,
    cargo_type: Annotated[
        str | None,
        typer.Option(
            "--cargo-type", help="Cargo type of folder/glob images (a manifest gives each row's own)."
        ),
    ] = None,
) -> None:
    """Score images with trained models; write one row per image, resumable after a crash.

    Each image goes to the model of its cargo type; images that cannot be decoded or have no model
    become rows with `error` set. With --policy, shipments are decided after scoring.
    """
    from pipeline.score import (
        LocalEngine,
        ModelDirs,
        ModelRouter,
        RayEngine,
        count_tasks,
        decide_output,
        decisions_path,
        is_manifest,
        iter_tasks,
        score_to_file,
    )
    from pipeline.score.batch import printable_path
    from pipeline.score.completion import (
        forget_decisions,
        record_decisions,
        vouched_decisions,
        vouched_for_another,
    )
    from pipeline.score.decisions import load_policy_file, made_by_this_run
    from pipeline.score.output_lock import lock_output
    from pipeline.score.sources import absolute_path
    from pipeline.score.writer import check_output, refuse_other_models

    settings = Settings.load()
    if runtime is not None:
        settings.runtime = runtime
    # A link --out is written where it points: a Parquet output and --retry-errors write a file beside
    # --out and rename it over --out, which replaced the link with a file and left its target as it was
    check_name_fits("--out", out)  # is_symlink() raised OSError on a name too long
    out = Path(os.path.realpath(out)) if out.is_symlink() else out
    if decisions is not None:  # the decisions file too: written beside it, renamed over it
        check_name_fits("--decisions", decisions)
        decisions = Path(os.path.realpath(decisions)) if decisions.is_symlink() else decisions
    written = (decisions or decisions_path(out)) if policy else None
    # OUT's decisions file, which an --overwrite or --resume removes (below): never an input's
    earlier = decisions_path(out) if (overwrite or resume) else None
    if earlier is not None and written is not None and earlier.resolve() == written.resolve():
        earlier = None  # checked as --decisions
    check_outputs_apart(
        files={"--out": out, "--decisions": written, "--out's decisions file": earlier},
        folders={"--heatmaps": heatmaps},
        inputs=[*inputs, *(model or []), *(p for p in (policy, trader_register) if p)],
        kept=audit_file(audit_db),
    )
    # every output can be made, now: found when written, one failed after the models had loaded
    # or the whole archive had been scored
    check_writable("--out", out)
    if heatmaps is not None:
        check_writable("--heatmaps", heatmaps, folder=True)
    if policy is not None and decisions is None:  # named after --out, and longer than it
        check_name_fits(
            "--out",
            decisions_path(out),
            hint="the decisions file is named after --out: give a shorter --out, or pass --decisions",
        )
    if policy is not None:
        check_writable("--decisions", decisions or decisions_path(out))
    check_output(out, resume=resume, overwrite=overwrite)  # before any slow work
    # one run at a time into OUT, from before it is opened until its decisions are written: a second
    # run (a --resume started beside a slow run) appended the same images again
    with lock_output(out) as lock:
        if (decisions is not None or audit_db is not None or trader_register is not None) and policy is None:
            given = " and ".join(
                n
                for n, v in (
                    ("--decisions", decisions),
                    ("--audit-db", audit_db),
                    ("--trader-register", trader_register),
                )
                if v is not None
            )
            raise InputError(
                f"{given} need{'s' if ' and ' not in given else ''} --policy POLICY to decide shipments"
            )
        if retry_errors and not resume:
            raise InputError("--retry-errors needs --resume")
        if ray_address is not None and engine is not EngineName.ray:
            raise InputError("--ray-address needs --engine ray")
        # the decisions the run that last finished OUT wrote on its rows, named by OUT's completion
        # record and still as written: removed below, as the rows are about to change (rows deleted by
        # hand too: a fresh run left the earlier RELEASE beside the new rows); never an input
        # a record copied with OUT's folder names another output's decisions: left, said below
        unvouched: list[tuple[Path, str]] = []
        vouched = vouched_decisions(out, unvouched=lambda path, why: unvouched.append((path, why)))
        if vouched is not None:
            check_outputs_apart(files={"--out's decisions file": vouched}, inputs=inputs)
        loaded_policy = None
        traders = None
        summary_warnings_extra: list[str] = []
        key = b""
        if policy is not None:
            plain = [item for item in inputs if not is_manifest(item)]
            if plain:
                raise InputError(
                    f"--policy decides shipments, so every INPUT must be a manifest with shipment ids; "
                    f"{plain[0]!r} is not a .csv/.jsonl manifest"
                )
            loaded_policy = load_policy_file(policy)
            target = decisions or decisions_path(out)
            # another output's decisions, which its record vouches for: an older version named
            # rows.csv's rows.decisions.jsonl, rows.jsonl's default, and a run into rows.jsonl
            # removed or replaced them, though rows.csv's rows never changed
            other = vouched_for_another(target, out) if os.path.lexists(target) else None
            if other is not None:
                raise InputError(
                    f"--decisions {str(target)!r} holds the decisions of {str(other[0])!r}, whose "
                    f"completion record {str(other[1])!r} vouches for them: left as they are; pass "
                    "--decisions PATH to write this run's decisions to another file"
                )
            # a resume writes again the decisions of the run it continues; any other file is kept
            if target.exists() and not (
                overwrite or (resume and made_by_this_run(target, out, loaded_policy))
            ):
                raise InputError(
                    f"--decisions {str(target)!r} already exists"
                    + (" and is not this run's (another policy's, or of other shipments)" if resume else "")
                    + "; pass --decisions to write another file"
                    + ("" if resume else ", or --overwrite to replace it")
                )
            summary_warnings_extra.extend(loaded_policy.warnings())
            if trader_register is not None:  # before any slow work
                from pipeline.trader_register import check_tiers, read_trader_register

                traders = read_trader_register(trader_register)
                check_tiers(traders, loaded_policy)
            key, key_warning = audit_key(settings, recording=audit_db is not None)  # before any slow work
            if key_warning:
                summary_warnings_extra.append(key_warning)
            # the cards name each model and its cargo type: an unapproved one is refused before the
            # store is made and the models load (and again on the models loaded, below)
            from models.artifact import read_card
            from pipeline.score.routing import two_models

            seen: dict[str, str] = {}
            for card in (read_card(directory) for directory in model):
                cargo, model_id = str(card["cargo_type"]), str(card["model_id"])
                if cargo in seen:
                    raise two_models(cargo, seen[cargo], model_id)
                seen[cargo] = model_id
            loaded_policy.check_models(seen)
            if audit_db is not None:  # a URL that is none, or a store out of reach, failed after scoring
                from pipeline.audit import AuditStore

                # a policy_version the trail holds under other rules is refused before scoring, not after
                with AuditStore.open(
                    audit_db, seal_key=audit_seal_key(settings), option="--audit-db"
                ) as store:
                    store.check_policy(loaded_policy.version, loaded_policy.sha256)
        limits = decode_limits(settings)

        console = Console(stderr=True)
        # the files the folders and globs leave out for their extension, by real path (a folder given
        # twice counts its files once), said in the summary: skipped without a word, they looked
        # scored. The run's own outputs (an --out kept in the input folder) are not among them
        left_out: dict[str, str] = {}
        own = {os.path.realpath(p) for p in (out, decisions or decisions_path(out))}

        def leave_out(path: Path) -> None:
            real = os.path.realpath(path)
            if real not in own:
                left_out.setdefault(real, printable_path(absolute_path(path)))

        total = count_tasks(inputs, left_out=leave_out)
        # the paths a folder or glob leaves out for naming a file it gave already (a link to it),
        # each with the path scored for it: counted among the duplicates, and one named
        same_files: list[tuple[str, str]] = []  # the first of them (O(1) memory), and how many
        same_count = [0]

        def same_file(dropped: Path, kept: Path) -> None:
            same_count[0] += 1
            if not same_files:
                same_files.append(
                    (printable_path(absolute_path(dropped)), printable_path(absolute_path(kept)))
                )

        runner_engine: Any
        model_ids: list[str] | None = None
        if engine is EngineName.ray:
            from models.artifact import read_card

            for directory in model:
                if not directory.is_dir():
                    raise ArtifactError(
                        f"--model {str(directory)!r} is not a folder; give a trained MODEL_DIR"
                    )
            # the actors load the models; their cards, read here, route and guard a resume alike
            cards = [read_card(directory) for directory in model]
            _check_routing(sorted(str(c.get("cargo_type")) for c in cards), cargo_type, inputs, is_manifest)
            model_ids = [str(c["model_id"]) for c in cards]  # a policy's approval: checked above
            runner_engine = RayEngine(
                ModelDirs(tuple(str(d) for d in model), runtime=settings.runtime),
                address=ray_address,
                actors=workers,
                batch_size=batch_size,
                limits=limits,
            )
        else:
            router = ModelRouter(_load_predictors(model, runtime=settings.runtime))
            _check_routing(router.cargo_types, cargo_type, inputs, is_manifest)
            runner_engine = LocalEngine(
                router, workers=workers, batch_size=batch_size, limits=limits, max_pixels_in_flight=max_pixels
            )
            model_ids = [predictor.model_id for predictor in router.predictors]
            if loaded_policy is not None:  # the models loaded, not only their cards: a folder replaced since
                loaded_policy.check_models({p.cargo_type: p.model_id for p in router.predictors})

        # another model's rows refused before the decisions file and the completion record are removed
        if resume and model_ids is not None:
            refuse_other_models(out, model_ids)
        progress = score_progress(console, total=total, resume=resume)
        # OUT's own decisions (vouched for by its completion record), and an --overwrite's or a
        # --resume's decisions file (a --resume's is this run's: made_by_this_run, above), gone under
        # the lock, as the completion record is, before OUT is touched: a run killed before its own
        # decisions, or one without --policy, left the earlier run's (a RELEASE) beside rows that
        # contradict it. A file found by its name alone is left: it may be another output's (its
        # --decisions), or one an older version wrote, when rows.jsonl, rows.csv and rows.parquet
        # shared rows.decisions.jsonl, for another of them
        stale = [vouched, written if (overwrite or resume) else None]
        gone = {os.path.realpath(p) for p in stale if p is not None}
        for path in dict.fromkeys(p for p in stale if p is not None):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:  # OUT's name near the limit: no such file
                    continue
                raise InputError(
                    f"--decisions {str(path)!r}: cannot remove the decisions made on the rows this run "
                    f"changes ({exc.strerror or exc})"
                ) from exc
        # said now, not in the summary: a run killed or stopped partway prints none; each file once
        said_of = set(gone)
        for path, said in unvouched:
            if os.path.realpath(path) not in said_of:
                said_of.add(os.path.realpath(path))
                console.print(f"[yellow]Warning:[/yellow] {escape(said)}", highlight=False)
        default = decisions_path(out)
        # OUT's default decisions file, and the one an older version named after it (rows.csv's was
        # rows.decisions.jsonl, rows.csv.jsonl's rows.csv.decisions.jsonl), which a run of that
        # version (before decisions were recorded) left unvouched; unless another output's record
        # here vouches for it (rows.jsonl's own, rows.csv's own)
        shared = out.with_suffix(".decisions.jsonl")
        for path in dict.fromkeys([default, shared]):
            if not os.path.exists(path) or os.path.realpath(path) in said_of:  # False on a name too long
                continue
            if path != default and vouched_for_another(path, out) is not None:
                continue
            said_of.add(os.path.realpath(path))
            whose = (
                f"not written for the rows of {str(out)!r}"
                if path == default
                else f"the decisions file an older version named after {str(out)!r}, not written for its rows"
            )
            said = f"{str(path)!r}: {whose} by a finished run: left as it is; it may not match the new rows"
            console.print(f"[yellow]Warning:[/yellow] {escape(said)}", highlight=False)
        with progress:
            summary = score_to_file(
                iter_tasks(inputs, cargo_type=cargo_type, same_file=same_file),
                runner_engine,
                out,
                heatmap_dir=heatmaps,
                resume=resume,
                overwrite=overwrite,
                advance=progress.scored,
                model_ids=model_ids,
                retry_errors=retry_errors,
                lock=lock,
                listed_only=loaded_policy is not None,
                checked=progress.checked if resume else None,
                checked_all=progress.checked_all,
                # sealed where the audit secret is set: decide refuses rows edited, record rewritten
                completion_key=completion_seal_key(settings),
                # each row sealed too: decide holds a row edited since, --resume scores it again
                row_key=row_seal_key(settings),
                max_image_bytes=settings.max_image_bytes,
            )
            # the bar counts inputs: 5/5 read as five images scored where three named one given already;
            # a link a folder leaves out is not among them, but is among the table's duplicates
            counted = [f"{summary.duplicates} duplicate input(s), scored once"] if summary.duplicates else []
            if summary.skipped_done:
                counted.append(f"{summary.skipped_done} already in the output")
            if same_count[0]:
                counted.append(f"{same_count[0]} link(s) to a file given already, not counted")
            if counted:
                progress.counted(counted)
        summary.left_out = len(left_out)
        summary.duplicates += same_count[0]
        summary.duplicate_example = same_files[0] if same_files else None
        summary.left_out_example = next(iter(left_out.values()), None)
        if loaded_policy is not None:
            target = decisions or decisions_path(out)
            declared: list[str] = []  # shipments decided under a tier their manifest rows declare
            # named in the record, as the staged file it is, before it is renamed into place: a run
            # killed once the file is in place, before its sha256 is recorded, leaves it vouched for all
            # the same (the next run removes it); one killed before the rename vouches for no file
            # that comes to that path later (another output's decisions)
            try:
                shipments = decide_output(
                    out,
                    loaded_policy,
                    audit_key=key,
                    decisions=target,
                    audit_url=audit_db,
                    seal_key=audit_seal_key(settings),
                    row_key=row_seal_key(settings),
                    # the rows read are those of the file this run wrote, as its record vouches for them
                    completion_key=completion_seal_key(settings),
                    summary=summary,
                    near_copy_bits=settings.near_copy_bits,
                    register=traders,
                    on_decision=lambda d: declared.extend([d.shipment_id] if d.declaration.aeo_tier else []),
                    on_staged=lambda staged: record_decisions(out, target, staged=staged),
                )
            except BaseException:
                # stopped (Ctrl-C, an error): decisions in place are this run's, named with their
                # bytes; none yet, the pending name goes with the staged file (removed: its inode may
                # come back as another file's at that path)
                with contextlib.suppress(OSError):
                    if os.path.lexists(target):
                        record_decisions(out, target)
                    else:
                        forget_decisions(out)
                raise
            # as written, now: the next run into OUT removes these decisions (its rows change) while
            # they hold these bytes
            record_decisions(out, target)
            console.print(f"decided {shipments} shipments -> {target}")
            if traders is None and declared:
                summary_warnings_extra.append(
                    f"{len(declared)} shipment(s) decided under the AEO tier their manifest rows declare; "
                    "pass --trader-register to take each trader's tier from the authority's register"
                )
        report = Console()  # the summary goes to stdout; the progress bar stays on stderr
        for table in summary.tables():
            report.print(table)
        report.print(f"rows -> {out}")
        for warning in [*summary.warnings(), *summary_warnings_extra]:
            # escape: a file name such as "hold[3].png" must print as itself, not as rich markup
            console.print(f"[yellow]Warning:[/yellow] {escape(warning)}", highlight=False)
        if summary.unrecorded:
            more = f" (and {len(summary.unrecorded) - 1} more)" if len(summary.unrecorded) > 1 else ""
            raise ConflictError(
                f"{len(summary.unrecorded)} decisions were not recorded in the audit store{more}: "
                f"{summary.unrecorded[0]}"
            )
        failed = summary.errors + summary.kept_errors
        held = summary.scored if summary.rows_scored_in_output is None else summary.rows_scored_in_output
        if failed and not held:
            # no row of the output, kept or new, holds a score: the run failed, resumed or not
            raise InputError(
                f"none of the {failed} images could be scored; each row of {str(out)!r} says why"
            )


def register(app: typer.Typer) -> None:
    """Add ``clearsight score`` to the root app."""
    app.command("score", no_args_is_help=True)(score)
