"""Uploaded images and their heatmaps, kept for the review page under the configured data dir.

Files are named by content (``images/<sha256>.<ext>``, ``heatmaps/<sha256>.png``, and
``display/<sha256>.png``, the PNG of its decoded pixels the review page shows of an image, made on
its first view): a client-supplied name never becomes a path, identical uploads are stored
once, and writes are atomic (temp file + rename) so that a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from serve.errors import NotFoundError

__all__ = ["ImageStore", "heatmap_key", "heatmap_name"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEATMAP_PATH = re.compile(r"heatmaps/([0-9a-f]{64})\.png")
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "tiff": "tif", "bmp": "bmp", "webp": "webp"}
_MEDIA_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "tif": "image/tiff",
    "bmp": "image/bmp",
    "webp": "image/webp",
}


def heatmap_key(image_sha256: str, model_id: str) -> str:
    """The name of one model's heatmap of one image: sha256 of the image's hash and the model id."""
    return hashlib.sha256(f"{image_sha256}\n{model_id}".encode()).hexdigest()


def heatmap_name(relative_path: str | None, image_sha256: str) -> str:
    """The stored heatmap's key from a verdict's ``heatmap`` path (``heatmaps/<key>.png``); the
    image's own hash for verdicts recorded before heatmaps were keyed by model too."""
    match = _HEATMAP_PATH.fullmatch(relative_path or "")
    return match.group(1) if match else image_sha256


class ImageStore:
    """Content-addressed files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "heatmaps").mkdir(parents=True, exist_ok=True)
        (self.root / "display").mkdir(parents=True, exist_ok=True)

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

    def save_heatmap(self, image_sha256: str, model_id: str, png: bytes) -> str:
        """Store one model's heatmap overlay of the image with this hash; returns the relative path,
        ``heatmaps/<heatmap_key(image_sha256, model_id)>.png``. Keyed by the model too: the same
        image scored by another model has another heatmap, and an officer must see the one behind
        the decision."""
        rel = self.heatmap_path(image_sha256, model_id)
        self._write(self.root / rel, png)
        return rel

    def save_display(self, image_sha256: str, png: bytes) -> str:
        """Store the display PNG of the image with this hash (``serve.display``); returns the path
        relative to ``root``, ``display/<image_sha256>.png``. Keyed by the image alone: it is the
        image's pixels, drawn as every model's heatmap draws them."""
        self._check(image_sha256)
        rel = f"display/{image_sha256}.png"
        self._write(self.root / rel, png)
        return rel

    def heatmap_path(self, image_sha256: str, model_id: str) -> str:
        """Where :meth:`save_heatmap` keeps this heatmap, relative to ``root`` (nothing is written)."""
        self._check(image_sha256)
        return f"heatmaps/{heatmap_key(image_sha256, model_id)}.png"

    def has(self, kind: str, sha256: str) -> bool:
        """Whether a file of this kind and hash is stored (a batch-decided image is not)."""
        try:
            self.find(kind, sha256)
        except NotFoundError:
            return False
        return True

    def find(self, kind: str, sha256: str) -> tuple[Path, str]:
        """(path, media type) of a stored image (``kind="images"``), heatmap (``"heatmaps"``) or
        display PNG (``"display"``).

        Raises:
            NotFoundError: an unknown kind, a malformed hash, or no such file.
        """
        if kind not in ("images", "heatmaps", "display"):
            raise NotFoundError(f"unknown file kind {kind!r}; accepted: images, heatmaps, display")
        self._check(sha256)
        for path in sorted((self.root / kind).glob(f"{sha256}.*")):
            return path, _MEDIA_TYPES.get(path.suffix.lstrip("."), "application/octet-stream")
        raise NotFoundError(f"no stored {kind[:-1]} with sha256 {sha256}")

    @staticmethod
    def _check(sha256: str) -> None:
        if not _SHA256.fullmatch(sha256):
            raise NotFoundError(f"{sha256[:80]!r} is not a lowercase hex sha256 (64 characters)")
