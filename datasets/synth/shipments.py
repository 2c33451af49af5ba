"""Group the test images of a synthetic dataset into shipments with declarations: the manifest rows.

Declarations are drawn from their own random stream (seeded from the dataset seed and cargo type),
so the same arguments give the same manifest. The rare hard-override flags fire on about 3 % of
shipments and are independent of the images, as document checks and radiation portals are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MANIFEST_COLUMNS", "ManifestImage", "build_shipments"]

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "shipment_id",
    "cargo_type",
    "label",
    "anomaly_type",
    "mask_path",
    "trader_id",
    "aeo_tier",
    "hs_code",
    "origin",
    "declared_goods",
    "radiation_alarm",
    "suspected_solid_waste",
    "document_mismatch",
    "declared_foreign_inclusions",
)
_FLAGS = ("radiation_alarm", "suspected_solid_waste", "document_mismatch", "declared_foreign_inclusions")
_FLAG_RATE = 0.03

_GOODS: dict[str, list[tuple[str, str, list[str]]]] = {
    # (hs_code, declared goods, origins)
    "bulk_ore": [
        ("2601", "iron ore fines", ["AU", "BR", "ZA", "IN", "CA"]),
        ("2601", "iron ore lump", ["AU", "BR", "ZA"]),
        ("2603", "copper concentrate", ["CL", "PE", "MN", "KZ", "AU"]),
    ],
    "vacuum_pack": [
        ("8486", "wafer handling parts, vacuum packed", ["JP", "NL", "DE", "US"]),
        ("8541", "silicon wafers, vacuum packed", ["JP", "KR", "TW", "DE"]),
        ("8541", "semiconductor devices in trays, vacuum packed", ["TW", "KR", "MY", "SG"]),
    ],
}


@dataclass(frozen=True)
class ManifestImage:
    """A test image to place in a shipment (paths relative to the dataset root, POSIX style)."""

    path: str
    anomaly_type: str  # "good" for a normal image
    mask_path: str  # "" for a normal image


_MIN, _MAX, _MOST_BAD = 3, 8, 3
"""A shipment holds 3 to 8 images, at most 3 of them anomalous."""


def _sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Split ``n`` (none, or 3 or more) into shipment sizes of 3 to 8."""
    sizes: list[int] = []
    left = n
    while left:
        k = min(int(rng.integers(_MIN, _MAX + 1)), left)
        if 0 < left - k < _MIN:
            k = left - _MIN if left - _MIN >= _MIN else left
        sizes.append(k)
        left -= k
    return sizes


def _suspect_plan(rng: np.random.Generator, n_good: int, n_bad: int) -> tuple[list[int], int]:
    """Anomalies per suspect shipment (1-3 each), and how many normal images are kept for clean ones.

    A suspect shipment with ``a`` anomalies needs ``max(3 - a, 1)`` normal images to be a shipment of
    3 or more with a normal image in it, so ``n`` of them need ``n`` plus one for each that holds a
    single anomaly. About half the normal images (at least 3: one clean shipment) are kept for clean
    shipments where the fewest suspect shipments can still have theirs; the number of suspect
    shipments is then drawn from those the rest can fill.
    """
    if not n_bad:
        return [], n_good

    def need(n: int) -> int:  # the fewest normal images n suspect shipments do with
        return n + max(0, 2 * n - n_bad)

    fewest = -(-n_bad // _MOST_BAD)
    spare = n_good - need(fewest)
    clean = min(spare, max(_MIN, n_good // 2)) if spare >= _MIN else 0
    budget = n_good - clean
    most = fewest
    while most < n_bad and need(most + 1) <= budget:
        most += 1
    n = int(rng.integers(fewest, most + 1))
    per = [1] * n
    # a single anomaly needs two normal images beside it: the budget decides how many may be single
    doubled = n - max(0, budget - n)
    for i in rng.permutation(n)[: max(0, min(doubled, n_bad - n))]:
        per[int(i)] += 1
    while sum(per) < n_bad:
        room = [i for i in range(n) if per[i] < _MOST_BAD]
        per[room[int(rng.integers(len(room)))]] += 1
    return per, clean


def _groups(
    rng: np.random.Generator, good: list[ManifestImage], bad: list[ManifestImage]
) -> list[list[ManifestImage]]:
    """Images grouped into shipments of 3-8: suspect ones of 1-3 anomalies among normal images, and
    clean ones, as far as the counts allow (see :func:`build_shipments`)."""
    if len(good) + len(bad) < _MIN:
        return [good + bad] if good or bad else []
    per, clean = _suspect_plan(rng, len(good), len(bad))
    groups: list[list[ManifestImage]] = []
    for a in per:
        groups.append(bad[:a])
        bad = bad[a:]
    pool, kept = good[: len(good) - clean], good[len(good) - clean :]
    # normal images to make each a shipment of 3 first, then one for each still without, then up
    # to a size drawn for each: too few for all fall short in that order
    for least in (
        lambda g: _MIN - len(g),
        lambda g: 0 if any(i.anomaly_type == "good" for i in g) else 1,
        lambda g: int(rng.integers(_MIN, _MAX + 1)) - len(g),
    ):
        for group in groups:
            k = min(max(0, least(group)), len(pool))
            group += pool[:k]
            pool = pool[k:]
    kept += pool
    if len(kept) < _MIN:  # too few for a clean shipment: they join suspect ones with room
        for image in kept:
            room = [g for g in groups if len(g) < _MAX] or groups
            room[int(rng.integers(len(room)))].append(image)
        kept = []
    for k in _sizes(rng, len(kept)):
        groups.append(kept[:k])
        kept = kept[k:]
    return groups


def build_shipments(
    images: Sequence[ManifestImage], *, cargo: str, seed: int, cargo_index: int
) -> list[dict[str, Any]]:
    """Manifest rows for one cargo type, grouped into shipments of 3-8 images.

    Anomalous images go 1-3 to a shipment among normal ones; about half the normal images (at least
    a shipment's worth) form clean shipments, so the archive has both clean and suspect shipments.
    Counts too small for all of that give up, in this order, the clean shipments, a normal image in
    every suspect shipment, then the least size of 3 (fewer than 3 images in all make one shipment);
    a shipment never holds more than 3 anomalies.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(cargo_index, 99)))
    bad = [images[i] for i in rng.permutation(len(images)) if images[i].anomaly_type != "good"]
    good = [images[i] for i in rng.permutation(len(images)) if images[i].anomaly_type == "good"]
    groups = _groups(rng, good, bad)
    order = rng.permutation(len(groups))
    traders = [f"TRD-{cargo_index + 1}{i:03d}" for i in range(12)]
    tiers = {t: str(rng.choice(["", "", "", "AEOF", "AEOS"])) for t in traders}
    rows: list[dict[str, Any]] = []
    for number, gi in enumerate(order):
        hs, goods, origins = _GOODS[cargo][int(rng.integers(len(_GOODS[cargo])))]
        trader = traders[int(rng.integers(len(traders)))]
        flags = dict.fromkeys(_FLAGS, False)
        if rng.uniform() < _FLAG_RATE:
            flags[_FLAGS[int(rng.integers(len(_FLAGS)))]] = True
        declaration = {
            "shipment_id": f"SHP-{cargo}-{number:05d}",
            "cargo_type": cargo,
            "trader_id": trader,
            "aeo_tier": tiers[trader],
            "hs_code": hs,
            "origin": origins[int(rng.integers(len(origins)))],
            "declared_goods": goods,
            **flags,
        }
        for image in sorted(groups[gi], key=lambda im: im.path):
            label = "good" if image.anomaly_type == "good" else "anomalous"
            rows.append(
                {
                    "path": image.path,
                    "label": label,
                    "anomaly_type": image.anomaly_type,
                    "mask_path": image.mask_path,
                    **declaration,
                }
            )
    return [{c: r[c] for c in MANIFEST_COLUMNS} for r in rows]
