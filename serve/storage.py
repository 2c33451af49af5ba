"""Uploaded images and their heatmaps, kept for the review page under the configured data dir.

Files are named by content (``images/<sha256>.<ext>``, ``heatmaps/<sha256>.png``): a client-supplied
name never becomes a path, identical uploads are stored once, and writes are atomic (temp file +
rename) so that a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from serve.errors import NotFoundError

__all__ = ["ImageStore"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "tiff": "tif", "bmp": "bmp", "webp": "webp"}
_MEDIA_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "tif": "image/tiff",
    "bmp": "image/bmp",
    "webp": "image/webp",
}


class ImageStore:
    """Content-addressed files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "heatmaps").mkdir(parents=True, exist_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        if path.exists():
            return  # content-addressed: the same name always holds the same bytes
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_image(self, sha256: str, data: bytes, image_format: str) -> str:
        """Store an upload's bytes; returns the path relative to ``root``."""
        self._check(sha256)
        rel = f"images/{sha256}.{_EXTENSIONS.get(image_format.lower(), 'bin')}"
        self._write(self.root / rel, data)
        return rel

    def save_heatmap(self, sha256: str, png: bytes) -> str:
        """Store the heatmap overlay of the image with this hash; returns the relative path."""
        self._check(sha256)
        rel = f"heatmaps/{sha256}.png"
        self._write(self.root / rel, png)
        return rel

    def find(self, kind: str, sha256: str) -> tuple[Path, str]:
        """(path, media type) of a stored image (``kind="images"``) or heatmap (``"heatmaps"``).

        Raises:
            NotFoundError: an unknown kind, a malformed hash, or no such file.
        """
        if kind not in ("images", "heatmaps"):
            raise NotFoundError(f"unknown file kind {kind!r}; accepted: images, heatmaps")
        self._check(sha256)
        for path in sorted((self.root / kind).glob(f"{sha256}.*")):
            return path, _MEDIA_TYPES.get(path.suffix.lstrip("."), "application/octet-stream")
        raise NotFoundError(f"no stored {kind[:-1]} with sha256 {sha256}")

    @staticmethod
    def _check(sha256: str) -> None:
        if not _SHA256.match(sha256):
            raise NotFoundError(f"{sha256[:80]!r} is not a lowercase hex sha256 (64 characters)")
