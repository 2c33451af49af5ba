"""`clearsight export`: write a model artifact as a standalone ONNX file plus a sidecar JSON.

The export is refused (``Error: ...``, nothing written) when ONNX Runtime's outputs differ from
PyTorch's beyond the tolerances in :mod:`models.onnx_export`, and when ``--out`` or its sidecar
exists already, unless ``--overwrite``; a failed export leaves an earlier pair as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from datasets.errors import InputError

if TYPE_CHECKING:  # torch and the models load only when the command runs: `clearsight --help` stays fast
    import torch

    from models.predictor import ArtifactPredictor

__all__ = ["register"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_MAX_SAMPLE_VIEWS = 16  # enough to exercise the graph; more only slows the export down


def _sample_views(predictor: ArtifactPredictor, folder: Path, console: Console) -> torch.Tensor:
    """Decode images of ``folder``, in name order, and preprocess them exactly as the predictor does,
    until :data:`_MAX_SAMPLE_VIEWS` views are made; an image that cannot be read is skipped, named on
    ``console`` (stderr)."""
    import torch
    from rich.markup import escape

    from datasets.decode import decode_image
    from datasets.errors import ClearsightError

    if not folder.is_dir():
        raise InputError(f"--samples {str(folder)!r} is not a folder; expected a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"--samples {str(folder)!r} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    views: list[torch.Tensor] = []
    count = 0
    # one image at a time, stopping at the views needed: decoding and tiling the whole folder first
    # took 16.8 s and 3 GB for 400 large images, of which 16 views were kept
    for path in files:
        try:
            batch = predictor.scorer.views(decode_image(path).pixels)[0]
        except ClearsightError as exc:  # a corrupt or oversized file, or one of too many views
            console.print(  # unwrapped: a path broken across lines cannot be copied
                f"[yellow]Warning:[/yellow] --samples: skipped {escape(str(path))}: {escape(str(exc))}",
                soft_wrap=True,
            )
            continue
        views.append(batch[: _MAX_SAMPLE_VIEWS - count])
        count += views[-1].shape[0]
        if count >= _MAX_SAMPLE_VIEWS:
            break
    if not views:
        raise InputError(
            f"--samples {str(folder)!r}: none of its {len(files)} images could be read (each named above)"
        )
    batch = torch.cat(views)
    if batch.shape[0] == 2:
        # Two is the traced batch size; a third view makes the check exercise the dynamic axis.
        batch = torch.cat([batch, batch[:1]])
    return batch


def export(
    model: Annotated[Path, typer.Option("--model", help="Model directory written by `clearsight train`.")],
    out: Annotated[
        Path, typer.Option("--out", help="Output file, e.g. model.onnx (a .json sidecar goes beside it).")
    ],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",  # noqa: A002
    samples: Annotated[
        Path | None,
        typer.Option(
            "--samples",
            help="Folder of images for the PyTorch/ONNX parity check: its first 16 views, in name order, "
            "unreadable files skipped (default: synthetic inputs).",
        ),
    ] = None,
    # models.onnx_export's MIN_OPSET and MAX_OPSET (not imported here: that would load torch for --help)
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.", min=13, max=20)] = 17,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file and its .json sidecar.")
    ] = False,
) -> None:
    """Export the full scoring graph to ONNX with a dynamic batch axis; refuse if it disagrees with PyTorch.

    The check runs PyTorch and ONNX Runtime on sample inputs: scores must agree within 1e-4 (max
    abs), and their log-odds (which still differ where scores are pinned at 1.0) within 1e-3 relative;
    maps and logits within the looser tolerances documented in models.onnx_export.
    """
    from models.artifact import load_model
    from models.onnx_export import FORMATS, export_onnx

    if format.lower() not in FORMATS:
        raise InputError(f"--format {format!r} is not supported; accepted formats: {', '.join(FORMATS)}")
    # Export traces the PyTorch detector itself; tracing the ONNX Runtime runtime on load would be
    # wasted work.
    predictor = load_model(model, runtime="torch")
    console = Console(stderr=True)
    checks = _sample_views(predictor, samples, console) if samples is not None else None
    with console.status(f"Exporting {predictor.model_id} to ONNX and checking parity ..."):
        report = export_onnx(
            predictor.detector, out, card=predictor.card, samples=checks, opset=opset, overwrite=overwrite
        )
    p = report.parity
    typer.echo(
        f"Wrote {report.onnx_path} (sha256 {report.sha256[:12]}) and {report.sidecar_path}; "
        f"parity on {p.samples} inputs: max |diff| score {p.score:.2g}, score log-odds {p.log_odds:.2g} "
        f"(relative), map {p.anomaly_map:.2g}, "
        f"logits {p.type_logits:.2g}"
    )


def register(app: typer.Typer) -> None:
    """Add ``clearsight export`` to the root app."""
    app.command("export")(export)
