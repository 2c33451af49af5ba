"""Fakes shared by the service tests: a deterministic predictor, tiny pictures, keys (imported via
conftest)."""

from __future__ import annotations

import io
import math
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image

from models.inference import GOOD, Prediction, Thresholds

SUBMITTER_KEY = "submitter-key-0001"
OFFICER_KEY = "officer-key-0001"
ADMIN_KEY = "admin-key-0001"
API_KEYS = f"submitter:{SUBMITTER_KEY},officer:{OFFICER_KEY},admin:{ADMIN_KEY}"
THRESHOLDS = Thresholds(release=0.5, hold=0.8, target_miss_rate=0.01, method="fixed_for_tests")


class FakePredictor:
    """Score = mean brightness in [0, 1]; anomaly map = per-pixel brightness. Records every batch size.

    Its one signal's log-odds are the score's logit (none for a score of 0 or 1). With ``trained_side``
    it reports ``scale_vs_training`` as a model trained on images of that longer
    side, not tiled, would: ``trained_side / max(H, W)``.
    """

    def __init__(
        self,
        cargo_type: str = "bulk_ore",
        *,
        delay_s: float = 0.0,
        fail: bool = False,
        trained_side: int | None = None,
        model_id: str | None = None,
    ) -> None:
        self._cargo_type = cargo_type
        self._model_id = model_id or f"{cargo_type}-fake-0001"
        self.delay_s = delay_s
        self.fail = fail
        self.trained_side = trained_side
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def cargo_type(self) -> str:
        return self._cargo_type

    @property
    def thresholds(self) -> Thresholds:
        return THRESHOLDS

    @property
    def card(self) -> Mapping[str, Any]:
        return {
            "name": "fake",
            "backbone": "none",
            "training": {"data_root": "/srv/customs/ore-2026", "images": 3},
        }

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        with self._lock:
            self.batch_sizes.append(len(images))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("fake model exploded")
        out = []
        for image in images:
            gray = np.asarray(image, dtype=np.float32)
            gray = gray.mean(axis=2) if gray.ndim == 3 else gray
            full_scale = 65535.0 if np.asarray(image).dtype == np.uint16 else 255.0
            amap = (gray / full_scale).astype(np.float32)
            score = round(float(amap.mean()), 6)
            anomalous = score >= THRESHOLDS.release
            out.append(
                Prediction(
                    score=score,
                    label="anomalous" if anomalous else GOOD,
                    anomaly_type="foreign_object" if anomalous else None,
                    type_probabilities={GOOD: round(1.0 - score, 6), "foreign_object": score},
                    anomaly_map=amap,
                    thresholds=THRESHOLDS,
                    model_id=self.model_id,
                    scale_vs_training=(
                        None if self.trained_side is None else self.trained_side / max(gray.shape)
                    ),
                    # one signal, whose calibrated log-odds give the score back
                    signal_log_odds={"one_class": math.log(score / (1.0 - score))} if 0 < score < 1 else None,
                )
            )
        return out


def png_bytes(value: int, size: tuple[int, int] = (8, 8), *, ext: str = ".png") -> bytes:
    """A flat grey image of brightness ``value`` (0-255), encoded; its fake score is value / 255."""
    image = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    image[0, 0] = (
        (value + 1) % 256 if ext == ".png" else value
    )  # a distinct hash per size/value, same score-ish
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def batch_hold(shipment: str):  # noqa: ANN201 - a ShipmentDecision
    """A physical-inspection hold as `clearsight score --audit-db` records a manifest's shipment."""
    from pipeline.verdicts import Declaration, ImageVerdict, Reason, ShipmentDecision, Tier

    image = ImageVerdict(
        path=f"/archive/{shipment}.png", sha256="ab" * 32, shipment_id=shipment, cargo_type="bulk_ore",
        score=0.95, threshold=0.5, hold_threshold=0.8, model_id="ore-m1",
    )  # fmt: skip
    return ShipmentDecision(
        shipment_id=shipment, cargo_type="bulk_ore", tier=Tier.PHYSICAL_INSPECTION,
        reasons=[Reason(rule="score.hold", tier=Tier.PHYSICAL_INSPECTION, message="hot", image=image.path)],
        declaration=Declaration(shipment_id=shipment, cargo_type="bulk_ore"), images=[image],
        policy_version="p1", policy_sha256="cd" * 32, model_ids=["ore-m1"],
        decided_at="2026-11-05T10:30:00.000000+00:00",
    )  # fmt: skip


# Pictures of every kind the review page shows, each as a PNG of its decoded pixels (serve.display),
# with those a browser drew as they came with other pixels than scored. Wider than tall, a bright mark
# at the top left: a turn or a mirror shows.
_RGB = np.zeros((24, 40, 3), np.uint8)
_RGB[:, :, 0] = np.arange(40, dtype=np.uint8)[None, :] * 5
_RGB[:, :, 1] = np.arange(24, dtype=np.uint8)[:, None] * 9
_RGB[2:8, 2:12] = (250, 240, 30)
_GREY = _RGB.mean(axis=2).astype(np.uint8)


def _pillow(array: np.ndarray, fmt: str, *, orientation: int = 1, **options) -> bytes:
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return out.getvalue()


def _png16(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def _late_exif_png(array: np.ndarray, orientation: int) -> bytes:
    """A PNG whose eXIf chunk comes after its image data (legal; decoding applies it, browsers not)."""
    plain = _pillow(array, "PNG")
    exif = Image.Exif()
    exif[0x0112] = orientation
    chunk = _png_chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\x00\x00"))
    end = plain.index(b"IEND") - 4
    return plain[:end] + chunk + plain[end:]


def _late_xmp_png(array: np.ndarray, orientation: int) -> bytes:
    """A PNG whose XMP packet, with a tiff:Orientation, comes after its image data: decoding turns
    the picture by it, Chromium does not."""
    plain = _pillow(array, "PNG")
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="%d"/>'
        b"</rdf:RDF></x:xmpmeta>" % orientation
    )
    chunk = _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
    end = plain.index(b"IEND") - 4
    return plain[:end] + chunk + plain[end:]


def _gamma_png(array: np.ndarray, gamma: float) -> bytes:
    """A PNG with a gAMA chunk: Chromium corrects by it (grey 100 at gamma 1.0 drawn 168), decoding not."""
    plain = _pillow(array, "PNG")
    header_end = 8 + 25  # the signature and the IHDR chunk, which gAMA must follow
    return (
        plain[:header_end]
        + _png_chunk(b"gAMA", round(gamma * 100_000).to_bytes(4, "big"))
        + plain[header_end:]
    )


# The bright mark hidden by transparency: decoding keeps the colours stored under alpha 0, as scored,
# where a browser shows the page through them.
_RGBA = np.dstack([_RGB, np.full(_RGB.shape[:2], 255, np.uint8)])
_RGBA[:, :20, 3] = 0
_PALETTE_INDEX = (_GREY > 60).astype(np.uint8)  # index 0 (black) transparent, index 1 grey 100


def _palette_png(indices: np.ndarray) -> bytes:
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 100, 100, 100])
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)
    return out.getvalue()


PICTURES = {  # file name: bytes
    "xray12.tif": _pillow(_GREY.astype(np.uint16) * 16, "TIFF"),  # a 12-bit detector's values
    "colour.tif": _pillow(_RGB, "TIFF"),
    # a 16-bit PNG: browsers show its top 8 bits
    "xray12.png": _png16(_GREY.astype(np.uint16) * 16),
    "colour16.png": _png16(_RGB.astype(np.uint16) * 257),
    # stored turned: Chromium applies a WebP's EXIF orientation, and a PNG's after its pixels, not at all
    "turned.webp": _pillow(_RGB, "WEBP", orientation=6, lossless=True),
    "late-turned.png": _late_exif_png(_RGB, 6),
    "late-xmp.png": _late_xmp_png(_RGB, 6),
    "turned.png": _pillow(_RGB, "PNG", orientation=3),
    "turned.jpg": _pillow(_RGB, "JPEG", orientation=8, quality=95),
    # drawn by Chromium with other pixels than decoded: transparency, a gamma correction
    "alpha.png": _pillow(_RGBA, "PNG"),
    "alpha.webp": _pillow(_RGBA, "WEBP", lossless=True, exact=True),
    "transparent-index.png": _palette_png(_PALETTE_INDEX),
    "gamma.png": _gamma_png(_GREY, 1.0),
    "plain.png": _pillow(_RGB, "PNG"),
    "plain.jpg": _pillow(_RGB, "JPEG", quality=95),
    "plain.bmp": _pillow(_RGB, "BMP"),
    "plain.webp": _pillow(_RGB, "WEBP", lossless=True),
}
MEDIA_TYPES = {
    "tif": "image/tiff",
    "png": "image/png",
    "jpg": "image/jpeg",
    "bmp": "image/bmp",
    "webp": "image/webp",
}
"""The media type of each of :data:`PICTURES`, by its file name's extension."""
