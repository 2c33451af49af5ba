"""`clearsight export`: write a model artifact as a standalone ONNX file plus a sidecar JSON.

The export is refused (``Error: ...``, nothing written) when ONNX Runtime's outputs differ from
PyTorch's beyond the tolerances in :mod:`models.onnx_export`.
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


def _sample_views(predictor: ArtifactPredictor, folder: Path) -> torch.Tensor:
    """Decode the images in ``folder`` and preprocess them exactly as the predictor does."""
    import torch

    from datasets.decode import decode_image
    from models.predictor import ImageScorer
    from models.tiling import TilingConfig

    if not folder.is_dir():
        raise InputError(f"--samples {str(folder)!r} is not a folder; expected a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"--samples {str(folder)!r} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    tiling = TilingConfig(**predictor.card["preprocessing"]["tiling"])
    scorer = ImageScorer(predictor.detector, tiling=tiling)
    views = [scorer.views(decode_image(path).pixels)[0] for path in files]
    batch = torch.cat(views)[:_MAX_SAMPLE_VIEWS]
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
            help="Folder of images for the PyTorch/ONNX parity check (default: synthetic inputs).",
        ),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.", min=13)] = 17,
) -> None:
    """Export the full scoring graph to ONNX with a dynamic batch axis; refuse if it disagrees with PyTorch.

    The check runs PyTorch and ONNX Runtime on sample inputs: scores must agree within 1e-4 (max
    abs); maps and logits within the looser tolerances documented in models.onnx_export.
    """
    from models.artifact import load_model
    from models.onnx_export import FORMATS, export_onnx

    if format.lower() not in FORMATS:
        raise InputError(f"--format {format!r} is not supported; accepted formats: {', '.join(FORMATS)}")
    # Export traces the PyTorch detector itself; tracing the ONNX Runtime runtime on load would be
    # wasted work.
    predictor = load_model(model, runtime="torch")
    checks = _sample_views(predictor, samples) if samples is not None else None
    console = Console(stderr=True)
    with console.status(f"Exporting {predictor.model_id} to ONNX and checking parity ..."):
        report = export_onnx(predictor.detector, out, card=predictor.card, samples=checks, opset=opset)
    p = report.parity
    typer.echo(
        f"Wrote {report.onnx_path} (sha256 {report.sha256[:12]}) and {report.sidecar_path}; "
        f"parity on {p.samples} inputs: max |diff| score {p.score:.2g}, map {p.anomaly_map:.2g}, "
        f"logits {p.type_logits:.2g}"
    )


def register(app: typer.Typer) -> None:
    """Add ``clearsight export`` to the root app."""
    app.command("export")(export)
