"""Contact sheet of a synthetic dataset: a row per cargo type x anomaly type, mask outlines drawn.

It reads the dataset's ``dataset.json`` (written by :func:`generate_dataset`), decodes images with
:func:`datasets.decode.decode_image` (a 16-bit one stretched as the heatmaps and the review page show
it) and reads masks as training and evaluation do (:func:`datasets.mvtec.read_defect_mask`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets.decode import decode_image
from datasets.errors import DatasetFormatError, InputError
from datasets.mvtec import read_defect_mask
from datasets.synth.sample import ANOMALY_TYPES, GOOD

__all__ = ["contact_sheet"]

_OUTLINE = (255, 0, 255)  # magenta: absent from ore and pack scenes, visible on both
_LABEL_W = 190
MAX_PER_TYPE = 100
"""The most thumbnails a row holds: 100 of 128 px make a sheet 12,990 px wide (about 5 MB a row)."""
_DISPLAY_PERCENTILE = 99.9  # pipeline.heatmap.DISPLAY_PERCENTILE


def _stretch16(pixels: np.ndarray) -> np.ndarray:
    """A 16-bit image as 8-bit, from 0 to its 99.9th percentile, as ``pipeline.heatmap`` shows one
    (repeated here: datasets may not import pipeline). Detectors write 12 or 14 bits into 16-bit
    files, and the top byte of a 12-bit X-ray is nearly black (0-15)."""
    # never stretched beyond 8-bit values shown as they are: a dark picture's noise stays dark
    top = max(float(np.percentile(pixels, _DISPLAY_PERCENTILE)), 255.0) if pixels.size else 255.0
    return np.clip(pixels * (255.0 / top), 0.0, 255.0).round().astype(np.uint8)


def _thumb(path: Path, thumb: int) -> np.ndarray:
    pixels = decode_image(path).pixels
    if pixels.dtype == np.uint16:
        pixels = _stretch16(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] < 3:  # grayscale (and gray + alpha) shown as RGB
        pixels = np.repeat(pixels[..., :1], 3, axis=-1)
    return cv2.resize(np.ascontiguousarray(pixels[..., :3]), (thumb, thumb), interpolation=cv2.INTER_AREA)


def _outline(img: np.ndarray, mask_path: Path, thumb: int) -> np.ndarray:
    # any nonzero sample at any bit depth, as training reads it: read as 8-bit and cut at 127, a 0/1
    # label map or a 16-bit mask outlined nothing
    mask = read_defect_mask(mask_path).astype(np.uint8)
    small = cv2.resize(mask, (thumb, thumb), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = img.copy()
    cv2.drawContours(out, contours, -1, _OUTLINE, 1)
    return out


def contact_sheet(
    root: Path,
    out: Path,
    *,
    per_type: int = 6,
    cargo: str | None = None,
    split: str = "test",
    thumb: int = 128,
) -> Path:
    """Draw a contact sheet of ``root`` to the PNG ``out``; returns ``out``.

    Rows are cargo type x anomaly type, ``good`` first; each row holds the first ``per_type`` images
    of that type in ``split``, with the anomaly masks outlined in magenta. ``cargo`` limits the sheet
    to one cargo type.

    Raises:
        DatasetFormatError: ``root`` has no readable ``dataset.json``, or nothing to show.
        ImageDecodeError: an image or mask it lists cannot be decoded (named).
    """
    if not 1 <= per_type <= MAX_PER_TYPE:  # the sheet is drawn whole in memory: a row per type
        raise InputError(f"--per-type {per_type} is out of range; accepted: 1 to {MAX_PER_TYPE}")
    meta_path = root / "dataset.json"
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        images = meta["images"]
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetFormatError(
            f"{meta_path} is missing or unreadable; expected a folder written by `clearsight data synth`"
        ) from exc
    cargos = [c for c in ANOMALY_TYPES if any(e["cargo_type"] == c for e in images)]
    if cargo is not None:
        if cargo not in cargos:
            raise InputError(f"cargo type {cargo!r} is not in {root}; accepted: {', '.join(cargos)}")
        cargos = [cargo]
    rows: list[np.ndarray] = []
    for c in cargos:
        for t in (GOOD, *ANOMALY_TYPES[c]):
            picked = [
                e for e in images if e["cargo_type"] == c and e["split"] == split and e["anomaly_type"] == t
            ]
            if not picked:
                continue
            tiles = []
            for e in picked[:per_type]:
                img = _thumb(root / e["path"], thumb)
                if e["mask_path"]:
                    img = _outline(img, root / e["mask_path"], thumb)
                tiles.append(img)
            tiles += [np.full((thumb, thumb, 3), 32, np.uint8)] * (per_type - len(tiles))
            label = np.full((thumb, _LABEL_W, 3), 24, np.uint8)
            cv2.putText(
                label, c, (8, thumb // 2 - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 200), 1, cv2.LINE_AA
            )
            cv2.putText(
                label, t, (8, thumb // 2 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA
            )
            rows.append(np.hstack([label, *tiles]))
    if not rows:
        raise DatasetFormatError(
            f"{root} has no {split} images to show; generate some with `clearsight data synth`"
        )
    sheet = np.vstack(rows)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(sheet[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise DatasetFormatError(f"OpenCV could not encode the contact sheet ({sheet.shape})")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buf.tobytes())
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror}") from exc
    return out
