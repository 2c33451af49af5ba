"""Contact sheets for the README's figures: captioned cells in rows under a row of column titles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from datasets.decode import decode_image
from models.tiling import to_rgb_float

__all__ = ["caption", "heat_cell", "outline_defect", "score_rank_caption", "write_sheet"]

_BACKGROUND = 24
_GAP = 3


def caption(cell: np.ndarray, text: str, *, bottom: bool = False, bold: bool = False) -> None:
    """Write white ``text`` into an RGB uint8 ``cell`` (in place), top-left or bottom-left."""
    y = cell.shape[0] - 10 if bottom else 18
    scale, thickness = (0.55, 2) if bold else (0.45, 1)
    cv2.putText(cell, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def heat_cell(rgb: np.ndarray, amap: np.ndarray | None = None, *, side: int) -> np.ndarray:
    """An RGB uint8 image resized to a ``side`` x ``side`` cell; with ``amap`` (values in [0, 1]),
    the map in the inferno colours laid over it."""
    base = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    if amap is None:
        return base
    m = cv2.resize(amap, (side, side), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((m.clip(0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    return np.ascontiguousarray((0.55 * heat + 0.45 * base).astype(np.uint8))


def outline_defect(cell: np.ndarray, mask_path: Path | None) -> None:
    """Draw the ground-truth outline of ``mask_path`` (a 0/255 mask PNG) on an RGB uint8 ``cell``
    (in place, magenta), the mask resized to the cell; nothing for a good image (``None``)."""
    if mask_path is None:
        return
    mask = (to_rgb_float(decode_image(mask_path).pixels)[..., 0] > 0.5).astype(np.uint8)
    mask = cv2.resize(mask, (cell.shape[1], cell.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(cell, contours, -1, (255, 0, 255), 1, cv2.LINE_AA)


def score_rank_caption(cell: np.ndarray, scores: np.ndarray, good: np.ndarray, i: int) -> None:
    """Caption ``cell`` with where image ``i``'s score ranks among the good images' scores."""
    rank = float(np.mean(scores[good] < scores[i]))
    caption(cell, f"score above {rank:.0%} of good", bottom=True)


def write_sheet(out: Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str]) -> None:
    """Lay out ``rows`` of equal-size RGB uint8 cells under ``titles`` (one per column); write a PNG."""
    side = rows[0][0].shape[1]
    pad = ((_GAP, _GAP), (_GAP, _GAP), (0, 0))
    lines = [np.concatenate([np.pad(c, pad, constant_values=_BACKGROUND) for c in row], 1) for row in rows]
    head = np.full((34, lines[0].shape[1], 3), _BACKGROUND, np.uint8)
    for j, title in enumerate(titles):
        x = 8 + j * (side + 2 * _GAP)
        cv2.putText(head, title, (x, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate([head, *lines], 0), cv2.COLOR_RGB2BGR))
    print(f"wrote {out}")
