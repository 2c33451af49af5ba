"""One synthetic inspection image: scene, optional anomaly, nuisance, and its pixel-exact mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.cargo import CARGO_TYPES
from datasets.errors import ClearsightError, InputError
from datasets.synth.anomalies_ore import ORE_ANOMALIES
from datasets.synth.anomalies_pack import PACK_ANOMALIES
from datasets.synth.nuisance import jpeg_roundtrip, photometric, sample_nuisance, to_gray, warp
from datasets.synth.ore import OreScene, render_ore_scene, shade_ore
from datasets.synth.vacuum import compose_photo, compose_xray, render_pack_scene

__all__ = ["ANOMALY_TYPES", "CARGO_TYPES", "GOOD", "MASK_THRESHOLD", "Sample", "render_sample"]

GOOD = "good"
ANOMALY_TYPES: dict[str, tuple[str, ...]] = {
    "bulk_ore": tuple(ORE_ANOMALIES),
    "vacuum_pack": tuple(PACK_ANOMALIES),
}
"""Anomaly types per cargo type, in the order datasets and contact sheets list them."""

MASK_THRESHOLD = 3.0 / 255.0
"""A pixel belongs to the mask when the anomaly changed it by more than this (any channel, [0, 1]),
and, in ore, the anomaly's material lies there."""
_HEIGHT_CHANGE = 0.25
"""Pixels of relief: an ore scene's height changed by more than this is material the anomaly moved."""

# The scene is rendered on a larger canvas and cropped after rotation and scaling, so that no
# image shows a border of padding (which would be a tell if it correlated with anything).
_CANVAS_FACTOR = 1.3
_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Sample:
    """A rendered image and its ground truth.

    Attributes:
        image: uint8 (H, W, 3) RGB, uint8 (H, W) grayscale, or uint16 (H, W) for 16-bit X-ray.
        mask: uint8 (H, W), 255 where the anomaly changed the image, else 0 (all 0 for good images).
            In ore, only where its material lies: the shadow and occlusion an object casts on the
            untouched ore around it are in the image, not in the mask, as a labeller would draw it.
        variant: ``"colour"``, ``"grayscale"`` (mono camera) or ``"xray"``.
        severity: the anomaly's severity in [0, 1], ``None`` for good images.
        detail: what was drawn (e.g. ``"cable"``, ``"open"``), ``""`` for good images.
    """

    image: np.ndarray
    mask: np.ndarray
    cargo: str
    anomaly_type: str
    variant: str
    severity: float | None
    detail: str


def _check(cargo: str, anomaly_type: str, size: int, severity: float | None) -> None:
    if cargo not in ANOMALY_TYPES:
        raise InputError(f"unknown cargo type {cargo!r}; accepted: {', '.join(CARGO_TYPES)}")
    if anomaly_type != GOOD and anomaly_type not in ANOMALY_TYPES[cargo]:
        accepted = ", ".join((GOOD, *ANOMALY_TYPES[cargo]))
        raise InputError(f"unknown anomaly type {anomaly_type!r} for {cargo}; accepted: {accepted}")
    if not 16 <= size <= 4096:
        raise InputError(f"image size {size} is out of range; accepted: 16 to 4096 pixels")
    if severity is not None and not 0.0 <= severity <= 1.0:
        raise InputError(f"severity {severity} is out of range; accepted: 0.0 (subtle) to 1.0 (obvious)")


def render_sample(
    cargo: str, anomaly_type: str, *, seed: np.random.SeedSequence, size: int, severity: float | None = None
) -> Sample:
    """Render one image of ``cargo`` (``anomaly_type`` ``"good"`` for a normal one).

    The same ``seed`` gives the same pixels. ``severity`` defaults to a draw from U(0, 1); it is
    ignored for good images. Raises :class:`InputError` for an unknown cargo or anomaly type.
    """
    _check(cargo, anomaly_type, size, severity)
    # Children are derived without ``seed.spawn`` (which advances the caller's sequence), so that the
    # same seed always gives the same image, and a good and an anomalous render of one seed share
    # their scene, variant and nuisance: they differ only in the anomaly.
    scene_ss, anomaly_ss, nuisance_ss, variant_ss = (
        np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, k)) for k in range(4)
    )
    vrng = np.random.default_rng(variant_ss)
    special = vrng.uniform() < 0.25
    variant = ("grayscale" if cargo == "bulk_ore" else "xray") if special else "colour"
    sixteen_bit = variant == "xray" and vrng.uniform() < 0.5
    canvas = int(round(size * _CANVAS_FACTOR))
    nrng = np.random.default_rng(nuisance_ss)
    nuisance = sample_nuisance(nrng, size, canvas, lit=variant != "xray")
    srng = np.random.default_rng(scene_ss)

    if cargo == "bulk_ore":
        scene = render_ore_scene(srng, canvas)
        shade = shade_ore
    else:
        scene = render_pack_scene(srng, canvas)
        shade = compose_xray if variant == "xray" else compose_photo  # type: ignore[assignment]

    def finish(raw: np.ndarray) -> np.ndarray:
        out = warp(raw, nuisance, size)
        return to_gray(out) if variant == "grayscale" else out

    clean = finish(shade(scene))  # type: ignore[arg-type]
    image, mask, detail, sev = clean, np.zeros((size, size), np.uint8), "", None
    if anomaly_type != GOOD:
        arng = np.random.default_rng(anomaly_ss)
        sev = float(arng.uniform()) if severity is None else float(severity)
        for _ in range(_MAX_ATTEMPTS):
            edited = scene.copy()
            if cargo == "bulk_ore":
                detail = ORE_ANOMALIES[anomaly_type](
                    edited, arng, sev, _ore_centre(arng, edited.ore, canvas, size)
                )  # type: ignore[arg-type]
            else:
                detail = PACK_ANOMALIES[anomaly_type](edited, arng, sev)  # type: ignore[arg-type]
            candidate = finish(shade(edited))  # type: ignore[arg-type]
            diff = np.abs(candidate - clean)
            changed = (diff.max(axis=-1) if diff.ndim == 3 else diff) > MASK_THRESHOLD
            marked = changed
            if cargo == "bulk_ore":
                # shading reaches past the object (ambient occlusion, cast shadow): the mask is the
                # object, where the material maps changed, seen through the same warp as the image
                marked = changed & (warp(_ore_footprint(scene, edited), nuisance, size) >= 0.5)
            if marked.any():
                # Below-threshold changes (the far tails of blurred shading) are dropped, so the image
                # differs from the good one only where the anomaly visibly changed it.
                keep = changed[..., None] if candidate.ndim == 3 else changed
                image, mask = np.where(keep, candidate, clean), marked.astype(np.uint8) * 255
                break
        else:
            raise ClearsightError(
                f"{cargo}/{anomaly_type}: the anomaly changed no visible pixel in {_MAX_ATTEMPTS} attempts "
                f"(size {size}, severity {sev:.2f}); try another seed"
            )

    out = photometric(image, nuisance, nrng)
    if sixteen_bit:
        pixels = np.round(out * 65535).astype(np.uint16)
    else:
        pixels = np.round(out * 255).astype(np.uint8)
        if nuisance.jpeg_quality and variant != "xray":
            pixels = jpeg_roundtrip(pixels, nuisance.jpeg_quality)
    return Sample(pixels, mask, cargo, anomaly_type, variant, sev, detail)


def _ore_centre(rng: np.random.Generator, ore: np.ndarray, canvas: int, size: int) -> tuple[float, float]:
    """A point on the ore within the part of the canvas that every crop keeps in view."""
    yy, xx = np.mgrid[0:canvas, 0:canvas]
    disk = (xx - canvas / 2) ** 2 + (yy - canvas / 2) ** 2 < (0.3 * size) ** 2
    where = disk & ore if (disk & ore).any() else disk
    ys, xs = np.nonzero(where)
    k = int(rng.integers(len(xs)))
    return float(xs[k]), float(ys[k])


def _ore_footprint(before: OreScene, after: OreScene) -> np.ndarray:
    """float32 (H, W) 1 where an anomaly changed an ore scene's material (albedo or gloss by more
    than ``MASK_THRESHOLD``, height by more than ``_HEIGHT_CHANGE`` pixels), else 0."""
    changed = np.abs(after.albedo - before.albedo).max(axis=-1) > MASK_THRESHOLD
    changed |= np.abs(after.gloss - before.gloss) > MASK_THRESHOLD
    changed |= np.abs(after.height - before.height) > _HEIGHT_CHANGE
    return changed.astype(np.float32)
