"""`clearsight train`: fit a detector on an MVTec-layout folder and write a model artifact."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from datasets.errors import InputError
from datasets.mvtec import GOOD
from models.threshold import METHOD_FALLBACK
from pipeline.cli.numbers import number
from pipeline.cli.progress import stage_progress
from pipeline.leakage import leakage_warning

__all__ = ["register", "train_command"]


def train_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="MVTec-layout dataset root (train/good, optional train/<type>).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.", show_default=False)],
    backbone: Annotated[
        str, typer.Option("--backbone", help="lite0, lite1, lite2, resnet18 or wide_resnet50.")
    ] = "lite0",
    backbone_weights: Annotated[
        Path | None,
        typer.Option(
            "--backbone-weights", help="Local weights file (required for the ResNets).", show_default=False
        ),
    ] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Model input side in pixels.")] = 256,
    target_miss_rate: Annotated[
        float,
        typer.Option(
            "--target-miss-rate",
            help="Share of anomalous validation images released.",
            parser=number("--target-miss-rate", "in (0, 1)"),
        ),
    ] = 0.01,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            help="Share of the good images (and of each labelled anomaly type, unless "
            "--val-anomaly-fraction says otherwise) held out for validation.",
            parser=number("--val-fraction", "in (0, 1)"),
        ),
    ] = 0.2,
    val_anomaly_fraction: Annotated[
        float | None,
        typer.Option(
            "--val-anomaly-fraction",
            help="Share of each labelled anomaly type held out for validation, if it should differ from "
            "--val-fraction: more validation anomalies strengthen the promise without taking normals "
            "from the memory bank.",
            show_default=False,
            parser=number("--val-anomaly-fraction", "in (0, 1)"),
        ),
    ] = None,
    cargo_type: Annotated[
        str | None,
        typer.Option(
            "--cargo-type",
            help="Cargo type; default: the dataset folder name if bulk_ore/vacuum_pack.",
            show_default=False,
        ),
    ] = None,
    coreset_ratio: Annotated[
        float,
        typer.Option(
            "--coreset-ratio",
            help="Share of training patches kept in the memory bank.",
            parser=number("--coreset-ratio", "in (0, 1]"),
        ),
    ] = 0.1,
    max_bank: Annotated[int, typer.Option("--max-bank", help="Cap on memory-bank rows.")] = 16384,
    pad: Annotated[
        int,
        typer.Option(
            "--pad", help="Reflect padding (px, multiple of 16) around each view; removes border artefacts."
        ),
    ] = 16,
    position_norm: Annotated[
        bool,
        typer.Option(
            "--position-norm/--no-position-norm",
            help="Put every patch position's distances on one scale (fitted on out-of-fold normals).",
        ),
    ] = True,
    patch_head: Annotated[
        bool,
        typer.Option(
            "--patch-head/--no-patch-head",
            help="Train the per-patch defect classifier on the labelled anomalies' masks (ground_truth/).",
        ),
    ] = True,
    fine_scale: Annotated[
        str,
        typer.Option(
            "--fine-scale",
            help="A second memory bank on stride-4 features, for thin and small anomalies: off, "
            "auto (kept when out-of-fold scores rank better with it) or on.",
        ),
    ] = "off",
    fine_tune_steps: Annotated[
        int,
        typer.Option(
            "--fine-tune-steps",
            help="Fine-tune the backbone on the training split's defect masks and "
            "pseudo-anomalies for this many steps before fitting (about 0.5-1 s each on two CPU cores). "
            "0: keep the pretrained weights. A fine-tuned model may differ with --threads (its backward "
            "passes run --threads threads per op), so it may not be retrained bit for bit with another "
            "--threads (which the card does not record).",
        ),
    ] = 0,
    fusion: Annotated[
        str,
        typer.Option(
            "--fusion",
            help="How the calibrated signals combine: sum (of their log-odds) or max (of their "
            "probabilities: a head's confident 'good' never lowers a one-class alarm).",
        ),
    ] = "sum",
    co_located: Annotated[
        bool,
        typer.Option(
            "--co-located/--no-co-located",
            help="When the one-class score and the patch head are both fused under the sum, read them "
            "at the one pixel where their log-odds add up to the most, not each at its own peak.",
        ),
    ] = True,
    patch_mirrors: Annotated[
        bool,
        typer.Option(
            "--patch-mirrors/--no-patch-mirrors",
            help="The patch head also learns from the mirror images of each labelled defect image.",
        ),
    ] = True,
    grey_offsets: Annotated[
        bool,
        typer.Option(
            "--grey-offsets/--no-grey-offsets",
            help="Put grey pictures' signals (X-rays, mono cameras) on the colour pictures' scale, by "
            "offsets measured on the training normals of each kind.",
        ),
    ] = True,
    deep_features: Annotated[
        str,
        typer.Option(
            "--deep-features",
            help="How patch features read the backbone's deeper maps: pooled (3x3 neighbourhood average), "
            "sharp (cell by cell: small and thin defects rank better, large diffuse ones worse) or auto "
            "(sharp for vacuum packs, pooled for other cargo).",
        ),
    ] = "auto",
    tile_size: Annotated[
        int, typer.Option("--tile-size", help="Tile images larger than this many pixels (0: always resize).")
    ] = 0,
    tile_overlap: Annotated[
        int | None,
        typer.Option(
            "--tile-overlap",
            help="Pixels neighbouring tiles share (default: a quarter of --tile-size); their maps are "
            "blended across it. 0 only abuts them, and the anomaly maps then show seams at the tile borders.",
            show_default=False,
        ),
    ] = None,
    sixteen_bit_depth: Annotated[
        str,
        typer.Option(
            "--sixteen-bit-depth",
            help="Bits a 16-bit image's samples are read as holding: auto (measured on the training images' "
            "brightest samples, rounded up to 8, 10, 12, 14 or 16) or one of those. Give the camera's depth "
            "when the training images under-represent its bright exposures: brighter samples are clipped.",
        ),
    ] = "auto",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the split, coreset, pseudo-anomalies, head.")
    ] = 0,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="CPU threads: images embedded (patch heads fitted) at a time, each op on one thread, so "
            "the model is the same for any count (fine-tuning: threads per op) (default: torch's choice).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace a model already in --out (once the new one is written)."),
    ] = False,
) -> None:
    """Train a detector and write its artifact (weights.safetensors + model.json) to --out.

    Holds out --val-fraction (20 %) of train/ for validation, fits the one-class memory bank and the
    supervised head (on pseudo-anomalies when no labelled anomaly is left in training), calibrates
    the score, and picks the release threshold at --target-miss-rate.
    """
    from pipeline.picture_kinds import grey_offsets_words
    from pipeline.report import cut_text
    from pipeline.resolution import card_resolution, describe_resize
    from pipeline.train import TrainConfig, train_model

    if tile_overlap is not None and not tile_size:
        # said here with the flags: the config's words name its fields, and only its first is a flag's
        raise InputError(
            f"--tile-overlap {tile_overlap} is given but tiling is off without --tile-size: give "
            "--tile-size too, or leave --tile-overlap out"
        )
    try:
        config = TrainConfig(
            backbone=backbone,
            backbone_weights=str(backbone_weights) if backbone_weights else None,
            image_size=image_size,
            target_miss_rate=target_miss_rate,
            val_fraction=val_fraction,
            val_anomaly_fraction=val_anomaly_fraction,
            cargo_type=cargo_type,
            coreset_ratio=coreset_ratio,
            max_bank=max_bank,
            pad=pad,
            position_norm=position_norm,
            patch_head=patch_head,
            fine_scale=fine_scale,
            fine_tune_steps=fine_tune_steps,
            fusion=fusion,
            co_located=co_located,
            patch_mirrors=patch_mirrors,
            grey_offsets=grey_offsets,
            deep_features=deep_features,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            sixteen_bit_depth=sixteen_bit_depth_option(sixteen_bit_depth),
            seed=seed,
            threads=threads,
        )
    except InputError as exc:  # the config names its fields; a user typed flags
        raise InputError(flag_words(str(exc))) from None
    err = Console(stderr=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with stage_progress(err, *columns) as progress:  # plain lines where stderr is a log
        result = train_model(data, out, config=config, progress=progress, overwrite=overwrite)
    card = result.card
    val, training = card["validation"], card["training"]
    table = Table(title=f"Trained {result.model_id}", show_header=False)
    counts = training["counts"]
    table.add_row("artifact", str(result.out_dir))
    table.add_row("cargo type", str(card["cargo_type"]))
    table.add_row("train images", ", ".join(f"{k}={v}" for k, v in sorted(counts["train"].items())))
    table.add_row("validation images", ", ".join(f"{k}={v}" for k, v in sorted(counts["validation"].items())))
    table.add_row("pseudo-anomalies", pseudo_words(training, val))
    resolution = card_resolution(card)
    assert resolution is not None  # this version's training always records it
    table.add_row(
        "image resolution",
        f"{resolution['longest_side_px']['median']} px images -> "
        f"{resolution['input_size']} px model input, {describe_resize(resolution['downscale'])}",
    )
    table.add_row("16-bit images", sixteen_bit_words(training.get("sixteen_bit")))
    table.add_row("memory bank", f"{training['bank_size']} of {training['patches_total']} patches")
    fine = training["fine_scale"]
    used = f"{fine['bank_size']} rows of stride-{fine['stride']} features" if fine["used"] else "not used"
    table.add_row("fine-scale bank", f"{used}: {fine['gate']}")
    tuned = training["fine_tune"]
    table.add_row(
        "backbone fine-tuning",
        f"{tuned['steps']} steps on {tuned['normals']} normals and {tuned['masked']} masked anomalies, "
        f"weights averaged over the last {tuned['averaged_steps']}, "
        f"{tuned['transplanted']} defect views transplanted into normals, "
        f"loss {tuned['first_loss']:.3f} -> {tuned['last_loss']:.3f} ({tuned['seconds']:.0f} s)"
        if tuned["steps"]
        else "off (pretrained weights)",
    )
    table.add_row("deeper features", training["deep_features"])
    table.add_row("grey pictures", grey_offsets_words(training["grey_offsets"]))
    fused = "fused" if val["head_in_fusion"] else "not fused"
    table.add_row("supervised head", f"{fused}: {val['head_gate']}")
    fused = "fused" if val["patch_head_in_fusion"] else "not fused"
    table.add_row("patch head", f"{fused}: {val['patch_head_gate']}")
    spot = ", one-class and patch head read at one spot" if val.get("signals_co_located") else ""
    table.add_row("fusion", f"{val['fusion_rule']}{spot}")
    table.add_row("calibration", str(val["calibration"]))
    t = result.thresholds
    how = f"{t.method}: above the clean validation images alone" if t.method == METHOD_FALLBACK else t.method
    table.add_row("thresholds", f"release={cut_text(t.release)} hold={cut_text(t.hold)} ({how})")
    promise, promise_note = promise_words(val, t.target_miss_rate)
    table.add_row("miss-rate promise", promise)
    auroc = val["image_auroc"]
    table.add_row("validation AUROC", "n/a" if auroc is None else f"{auroc:.4f} ({val['anomalies']})")
    tnr = val["tnr_at_target_miss_rate"]
    table.add_row("validation TNR at target", "n/a" if tnr is None else f"{tnr:.4f}")
    table.add_row("fit time", f"{result.fit_seconds:.1f} s (coreset {training['coreset_seconds']:.2f} s)")
    Console().print(table)
    if resolution["warning"]:
        err.print(f"[yellow]Warning:[/yellow] {resolution['warning']}")
    if promise_note:
        err.print(f"[yellow]Note:[/yellow] {promise_note}")
    for warning in (
        fallback_warning(training, val, t.method),
        release_warning(val),
        (val.get("one_class_spread") or {}).get("warning"),
        leakage_warning(training.get("duplicates")),
        seam_warning(card["preprocessing"]["tiling"]),
        clipping_warning(training.get("sixteen_bit")),
        raised_depth_warning(training.get("sixteen_bit")),
        empty_mask_warning(training.get("empty_masks")),
        cargo_warning(str(card["cargo_type"])),
    ):
        if warning:
            err.print(f"[yellow]Warning:[/yellow] {escape(warning)}")


LOW_RELEASE_RATE = 0.1
"""Below this share of clean validation images released, training warns: the model holds nearly all."""


def release_warning(val: dict[str, Any]) -> str | None:
    """A warning when the release threshold releases almost no clean validation image."""
    from pipeline.report import percent, score_text

    rate = val.get("release_rate_at_threshold")
    if rate is None or rate >= LOW_RELEASE_RATE:
        return None
    setter = val.get("release_set_by")
    # validation images appear in no report: name the one that set the cut
    who = (
        f"It sits under validation anomaly {setter['path']} (score {score_text(setter['score'])}; "
        f"{percent(setter['clean_at_or_above'])} of the clean validation images score as high): look at "
        "that image, since a mislabelled clean picture or a defect nobody can see sets the cut for all cargo"
        if isinstance(setter, dict)
        else "The lowest-scoring validation anomalies set it"
    )
    return (
        f"the release threshold releases {percent(rate)} of the clean validation images: at the target "
        f"miss rate this model holds nearly all cargo. {who}. More or cleaner labelled anomalies, or a "
        "higher --target-miss-rate, move it"
    )


def sixteen_bit_depth_option(text: str) -> int | None:
    """``--sixteen-bit-depth``: None for auto (measured), else its whole number of bits (the config
    names what it accepts)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(
            f"--sixteen-bit-depth {text!r} must be auto or one of 8, 10, 12, 14, 16, the depths cameras store"
        ) from None


def sixteen_bit_words(reading: dict[str, Any] | None) -> str:
    """The summary's line on the bits 16-bit images are read at (the card's ``training.sixteen_bit``)."""
    if reading is None:
        return "not recorded"
    from models.tiling import BRIGHT_SAMPLES

    depth, images = reading["depth"], reading["images"]
    if reading["chosen_by"] == "no 16-bit image":
        return f"none in training: 16-bit inputs are read at {depth} bits, the full range"
    how = (
        f"measured: {reading['bright_level']:,} is their brightest sample (the {BRIGHT_SAMPLES}th from the "
        "top of an image), rounded up to a sensor's depth"
        if reading["chosen_by"] == "measured"
        else "set by --sixteen-bit-depth"
    )
    words = f"{images} read at {depth} bits ({how})"
    if reading["clipped_share"]:
        # two significant digits: one stuck pixel in a set is a share far below 0.001 %
        words += f"; {100 * reading['clipped_share']:.2g} % of their samples lie above it and are clipped"
    return words


def clipping_warning(reading: dict[str, Any] | None) -> str | None:
    """A warning when some of the 16-bit training images' samples lie above the depth they are read
    at: clipped to white, an anomaly in them cannot be seen (the summary's table row alone was missed)."""
    if not reading or not reading.get("clipped_share"):
        return None
    # worded for both causes: stuck pixels, passed over on purpose, fired it as well, and advice to
    # raise the depth alone led back to the full range that lost the 12-bit anomalies
    return (
        f"{100 * reading['clipped_share']:.2g} % of the 16-bit training images' samples lie above "
        f"{reading['depth']} bits, the depth they are read at, and are clipped to white. A few per "
        "image are stuck pixels, passed over on purpose; if they are bright parts of the pictures, an "
        "anomaly in them cannot be seen: if the camera stores more bits, train again with "
        "--sixteen-bit-depth set to them"
    )


def raised_depth_warning(reading: dict[str, Any] | None) -> str | None:
    """A warning when a few 16-bit training images alone make the measured depth: stuck pixels at
    full scale in one image read a whole 12-bit set at 16 bits, with a sixteenth of its contrast."""
    if not reading or not reading.get("raised_by"):
        return None
    from models.tiling import BRIGHT_SAMPLES

    few, rest = reading["raised_by"], reading["rest_depth"]
    one = len(few) == 1
    which = f"image {few[0]}" if one else f"{len(few)} images ({', '.join(few)})"
    it, holds = ("it", "it holds") if one else ("them", "they hold")
    return (
        f"the 16-bit training images are read at {reading['depth']} bits only because of {which}: the "
        f"other {reading['images'] - len(few)} measure {rest} bits. If {holds} stuck or saturated pixels "
        f"({BRIGHT_SAMPLES} or more samples near full scale), every image is read with less contrast: "
        f"train again with --sixteen-bit-depth {rest}, or without {it}; if the camera stores "
        f"{reading['depth']} bits, this depth is right"
    )


def seam_warning(tiling: dict[str, Any]) -> str | None:
    """A warning when the model's tiles only abut (``--tile-overlap 0``): its maps show the seams."""
    if not tiling["tile_size"] or tiling["overlap"]:
        return None
    return (
        f"the {tiling['tile_size']} px tiles do not overlap (--tile-overlap 0): each tile's map is scored "
        "on its own and they meet edge to edge, so the anomaly maps show a straight seam at every tile "
        "border, often the brightest line of a clean image's map. Leave --tile-overlap out for the "
        "default of a quarter tile, whose maps are blended across the overlap"
    )


def flag_words(message: str) -> str:
    """``message`` with a leading TrainConfig field (``fusion 'avg' not in ...``) named as the flag
    that sets it (``--fusion 'avg' not in ...``)."""
    field, sep, rest = message.partition(" ")
    if sep and field in inspect.signature(train_command).parameters:  # each option is its parameter's name
        return f"--{field.replace('_', '-')} {rest}"
    return message


def cargo_warning(cargo_type: str) -> str | None:
    """A warning when the packaged policy has no rules for ``cargo_type`` (a typo, or a new cargo)."""
    from pipeline.policy import default_policy_path, load_policy

    known = load_policy(default_policy_path()).cargo_types
    if cargo_type in known:
        return None
    return (
        f"cargo type {cargo_type!r} is not one the packaged policy decides ({', '.join(sorted(known))}): "
        "its shipments are never released under it; give a policy with rules for it (--policy), or "
        "retrain with the right --cargo-type"
    )


def empty_mask_warning(paths: list[str] | None) -> str | None:
    """A warning naming the labelled anomalies' masks that mark no defect pixel, or None."""
    if not paths:
        return None
    return (
        f"{len(paths)} ground-truth mask(s) mark no defect pixel ({paths[0]}, for one): such an image "
        "trains the image-level heads but not the patch head. An all-black mask is usually a labelling "
        "or export slip; mark the defect, or remove the mask if there is none to mark"
    )


def pseudo_words(training: dict[str, Any], val: dict[str, Any]) -> str:
    """Where the card's run used pseudo-anomalies in place of labelled ones (training, validation,
    both or neither), and why. "no" alone read as if validation used none either, where one image
    of each type kept them all in training and the threshold fell back to the clean images."""
    in_training, on_validation = training["pseudo_anomalies"], _pseudo_validation(val)
    if not in_training and not on_validation:
        return "no: labelled anomalies in training and in validation"
    if in_training and on_validation:
        return "in training and validation (no labelled anomalies in train/)"
    if on_validation:
        return f"in validation only: {_none_held_out(training)}"
    counts = training["counts"]
    held_out = sum(n for label, n in counts["validation"].items() if label != GOOD)
    share = training["validation_share"]["anomalous"]
    # the card keeps the share, not which flag set it: --val-fraction stands in for an unset one
    return (
        f"in training only: all {held_out} labelled anomalies went to validation ({share:g} of each type "
        "held out: --val-anomaly-fraction, or --val-fraction without it)"
    )


def _pseudo_validation(val: dict[str, Any]) -> bool:
    """Whether the card's validation anomalies were pseudo-anomalies (``validation.anomalies``)."""
    return str(val.get("anomalies", "")).startswith("pseudo")


def _none_held_out(training: dict[str, Any]) -> str:
    """Why labelled anomalies in training left none for validation: one image of each type."""
    kinds = {label: n for label, n in training["counts"]["train"].items() if label != GOOD}
    return (
        f"no labelled anomaly was held out, as each of the {len(kinds)} type(s) has one image (a type "
        f"needs 2 or more for one to be held out); training learned from {', '.join(sorted(kinds))}"
    )


def fallback_warning(training: dict[str, Any], val: dict[str, Any], method: str) -> str | None:
    """A warning when the release threshold fell back to the clean validation images' scores
    (``normal_quantile_fallback``): it promises no miss rate, and a table cell alone was missed."""
    from pipeline.report import percent

    if method != METHOD_FALLBACK:
        return None
    labelled = any(label != GOOD for label in training["counts"]["train"])
    why, fix = (
        (_none_held_out(training), "give a labelled type a second image, or more")
        if labelled
        else ("there are no labelled anomalies (train/<type>)", "add labelled anomalies, 2 or more of a type")
    )
    return (
        f"the release threshold fell back to the clean validation images' scores alone "
        f"({METHOD_FALLBACK}): {why}. It promises no miss rate: it releases "
        f"{percent(val.get('miss_rate_at_threshold'))} of the {val.get('n_anomalous')} pseudo-anomalies made "
        "from validation normals, which stand in for no real defect. For a threshold set on anomalies, "
        f"{fix}, so that validation holds some"
    )


def promise_words(val: dict[str, Any], target: float) -> tuple[str, str | None]:
    """The card's miss-rate bound in words: the summary row, and a note when it falls short of target."""
    from pipeline.report import percent

    bound = val["miss_rate_bound"]
    if bound is None:
        return "none: the release threshold came from clean images only", None
    n, needed = val["n_anomalous"], val["anomalies_for_target_bound"]
    verdict = (
        "meets the target" if bound <= target else f"target {percent(target)}: {needed} would promise it"
    )
    row = (
        f"a new anomaly like the {n} validation ones is released with probability <= {percent(bound)} "
        f"({verdict})"
    )
    if bound <= target:
        return row, None
    return row, (
        f"the release threshold rests on {n} anomalous validation images, so it promises a miss rate of at "
        f"most {percent(bound)}, not the {percent(target)} target; {needed} would promise the target. Add "
        "labelled anomalies or hold more of them out (--val-anomaly-fraction), and judge the model by "
        "`clearsight evaluate` on more of them."
    )


def register(app: typer.Typer) -> None:
    """Add ``train`` to the root app."""
    app.command("train")(train_command)
