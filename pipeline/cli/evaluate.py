"""`clearsight evaluate`: score a test split with a trained model and write metrics and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from datasets.cargo import folder_cargo_type
from datasets.errors import ArtifactError, CargoTypeError, DatasetFormatError, InputError, ModelError
from pipeline.cli.output_paths import check_writable, output_error
from pipeline.cli.progress import stage_progress
from pipeline.settings import RuntimeName, Settings

__all__ = ["REPORT_FILES", "evaluate_command", "register"]

REPORT_FILES = ("metrics.json", "scores.csv", "report.html")
"""What `clearsight evaluate` writes into --out."""


def _load_predictor(model_dir: Path, *, runtime: str) -> Any:
    if not model_dir.is_dir():
        raise ArtifactError(
            f"model directory {str(model_dir)!r} does not exist or is not a folder; pass the folder "
            "written by `clearsight train --out`"
        )
    try:
        from models.artifact import load_model
    except ImportError as exc:  # the artifact format is another layer's; say so rather than crash
        raise ArtifactError("loading a MODEL_DIR needs models.artifact, which this build lacks") from exc
    return load_model(model_dir, runtime=runtime)


def _read_dataset(root: Path) -> Any:
    if not root.is_dir():
        raise DatasetFormatError(
            f"data root {str(root)!r} does not exist or is not a folder; pass an MVTec-layout folder "
            "with test/good/ and test/<anomaly_type>/"
        )
    from datasets.mvtec import read_mvtec

    # only test/ is evaluated: a new held-out batch comes without training images
    return read_mvtec(root, train_required=False)


def evaluate_command(
    model: Annotated[
        Path,
        typer.Option("--model", help="Model directory written by `clearsight train`.", show_default=False),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="MVTec-layout dataset root; its test/ split is evaluated (ground_truth/ masks if present, "
            "train/ not needed).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Report folder: metrics.json, scores.csv and report.html go here.",
            show_default=False,
        ),
    ],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per model call.")] = 16,
    runtime: Annotated[
        RuntimeName | None,
        typer.Option(
            "--runtime", help="What runs the model.", show_default="CLEARSIGHT_RUNTIME or onnxruntime"
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier report's files in --out.")
    ] = False,
) -> None:
    """Evaluate a model on a dataset's test split: operating point, AUROC/PRO, per-type table, report.

    Writes REPORT_DIR/metrics.json (every figure, overall, per anomaly type and per picture kind),
    REPORT_DIR/scores.csv (one row per image) and REPORT_DIR/report.html (a self-contained page to
    read or mail).
    """
    from models.threshold import METHOD_FALLBACK, METHOD_NORMAL_BOUND
    from pipeline.evaluate import evaluate, write_outputs
    from pipeline.intervals import trials_to_show, unshown_upper
    from pipeline.report import cut_text, number, number_span, percent, percent_span, render_report
    from pipeline.signal_evidence import SIGNAL_NAMES

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder for the report (made if missing)")
    if out.resolve().is_relative_to(data.resolve()):  # as train refuses a model folder there
        raise InputError(
            f"--out {str(out)!r} lies inside --data {str(data)!r}: the report's files would become part "
            "of the dataset (every later run over it fails on them); give a folder outside it"
        )
    check_writable("--out", out, folder=True)  # found when written, it failed after the whole evaluation
    # another run's scores.csv (a batch's rows, an earlier report) is kept unless told: before any work
    taken = [name for name in REPORT_FILES if (out / name).exists()]
    if taken and not overwrite:
        raise InputError(
            f"--out {str(out)!r} already holds {', '.join(taken)}; pass --overwrite to replace "
            f"{'them' if len(taken) > 1 else 'it'}, or give another folder"
        )
    predictor = _load_predictor(model, runtime=runtime or Settings.load().runtime)
    dataset = _read_dataset(data)
    named = folder_cargo_type(data)
    if named is not None and named != predictor.cargo_type:
        raise CargoTypeError(
            f"model {predictor.model_id} is for {predictor.cargo_type} but --data {str(data)!r} holds "
            f"{named}: its figures would say nothing about either; evaluate the {named} model"
        )
    err = Console(stderr=True)
    stage = f"evaluating {predictor.model_id}"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with stage_progress(err, *columns, transient=True) as progress:  # plain lines where stderr is a log
        result = evaluate(
            predictor,
            dataset,
            batch_size=batch_size,
            progress=lambda done, total: progress(stage, done, total),
        )
    try:
        # the page is drawn before any file is written, and the three are replaced together
        page = render_report(result).encode("utf-8")
        metrics_path, scores_path = write_outputs(result, out, also={"report.html": page})
        report_path = out / "report.html"
    except OSError as exc:  # the folder changed since it was checked, or the disk filled
        raise output_error("--out", out, exc, folder=True) from exc

    mt, th, counts = result.metrics, result.thresholds, result.metrics["counts"]
    console = Console(highlight=False, soft_wrap=True)
    if th.method == METHOD_FALLBACK:
        err.print(
            f"[yellow]Note:[/yellow] the model's release threshold came from clean images only "
            f"({th.method}); it promises nothing about misses."
        )
    elif th.method == METHOD_NORMAL_BOUND:
        err.print(
            f"[yellow]Note:[/yellow] the model's release threshold was capped just above the clean "
            f"validation images ({th.method}): too few anomalous ones to measure the target miss rate."
        )
    if result.empty_masks:
        err.print(
            f"[yellow]Warning:[/yellow] {len(result.empty_masks)} ground-truth mask(s) mark no defect "
            f"pixel ({escape(result.empty_masks[0])}, for one): left out of pixel AUROC and PRO."
        )
    copies = mt["duplicates"]
    if copies["training_and_test"]:
        train_path, test_path = copies["examples"][0]
        without = copies["without_copies"]
        err.print(
            f"[yellow]Warning:[/yellow] {copies['training_and_test']} test image(s) are exact copies of "
            f"training images ({escape(test_path)} = {escape(train_path)}, for one): the test figures on "
            f"them are optimistic; without them image AUROC {number(without['image_auroc'])}, TNR at 1 % "
            f"FNR {percent(without['tnr_at_fnr_1pct'])} (on {without['counts']['good']} clean, "
            f"{without['counts']['anomalous']} anomalous images)."
        )
    # the images left out are not among those the metrics count: said apart, not inside their count
    unreadable, non_finite = counts["failed"] - counts["non_finite"], counts["non_finite"]
    left_out = [f"{unreadable} unreadable"] if unreadable else []
    if non_finite:
        left_out.append(f"{non_finite} given a non-finite score or map by the model")
    said = ", ".join(left_out)
    console.print(
        f"Model {result.model_id} on {counts['images']} test images "
        f"({counts['good']} clean, {counts['anomalous']} anomalous)" + (f"; left out: {said}" if said else "")
    )
    ci = mt["intervals"]
    console.print(
        f"  at release threshold {cut_text(th.release)}: {percent(mt['release_rate'])} of clean cargo "
        f"released ({percent_span(ci['release_rate'])}), {percent(mt['miss_rate'])} of anomalous cargo "
        f"released ({percent_span(ci['miss_rate'])}; target <= {percent(th.target_miss_rate)})"
    )
    tnr_span = (
        "no interval under 200 anomalous images"  # the cut is the lowest one: a bootstrap misleads
        if ci["tnr_at_fnr_1pct"] is None and mt["tnr_at_fnr_1pct"] is not None
        else percent_span(ci["tnr_at_fnr_1pct"])
    )
    console.print(
        f"  image AUROC {number(mt['image_auroc'])} ({number_span(ci['image_auroc'])}), "
        f"TNR at 1 % FNR {percent(mt['tnr_at_fnr_1pct'])} ({tnr_span}), "
        f"pixel AUROC {number(mt['pixel_auroc'])}, PRO {number(mt['pro'])}"
    )
    kinds = mt["per_image_kind"]
    if len(kinds) > 1:  # an X-ray view can rank worse than a photograph: say so where it shows
        console.print(
            "  "
            + "; ".join(
                f"{name} pictures ({block['counts']['good']} clean, {block['counts']['anomalous']} "
                f"anomalous): image AUROC {number(block['image_auroc'])} "
                f"({number_span(block['intervals']['image_auroc'])})"
                for name, block in kinds.items()
            )
        )
    signals = mt.get("per_signal", {})
    if len(signals) > 1:  # the fusion against each of its signals alone
        console.print(
            "  each signal alone: "
            + ", ".join(
                f"{SIGNAL_NAMES[name]} {number(block['image_auroc'])} "
                f"({number_span(block['image_auroc_interval'])})"
                for name, block in signals.items()
            )
        )
    console.print("  (in brackets: 95 % confidence intervals)")
    if not copies["checked"]:  # a held-out batch without train/: the copies check could not be made
        console.print("  not compared with training images for exact copies: --data has no train/ folder")
    unshown = unshown_upper(mt["miss_rate"], ci["miss_rate"], th.target_miss_rate)
    if unshown is not None:
        needed = trials_to_show(th.target_miss_rate)
        console.print(
            f"  {counts['anomalous']} anomalous images cannot show a miss rate of at most "
            f"{percent(th.target_miss_rate)}: its interval reaches {percent(unshown)}"
            + (f" ({needed} with none missed would)" if needed else "")
        )
    promise = result.promise or {}
    if promise.get("miss_rate_bound") is not None:
        console.print(
            f"  the release threshold, set on {promise['validation_anomalies']} anomalous validation images, "
            f"promises at most {percent(promise['miss_rate_bound'])} of new anomalies like them released"
        )
    console.print(f"Wrote {metrics_path}, {scores_path} and {report_path}")
    if counts["non_finite"]:  # a model fault: the run must not read as a pass
        raise ModelError(
            f"model {result.model_id} gave {counts['non_finite']} of {counts['images'] + counts['failed']} "
            "test images a NaN or infinite score or map (named in scores.csv and the report); it is not "
            "fit to use"
        )


def register(app: typer.Typer) -> None:
    """Add ``clearsight evaluate`` to the root app."""
    app.command("evaluate")(evaluate_command)
