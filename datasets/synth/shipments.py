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


def _sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Split ``n`` into shipment sizes of 3 to 8 (a remainder under 3 joins earlier shipments)."""
    sizes: list[int] = []
    left = n
    while left >= 3:
        k = min(int(rng.integers(3, 9)), left)
        if 0 < left - k < 3:
            k = left - 3 if left - 3 >= 3 else left
        sizes.append(k)
        left -= k
    if left:
        sizes.append(left)  # fewer than 3 images in all
    return sizes


def build_shipments(
    images: Sequence[ManifestImage], *, cargo: str, seed: int, cargo_index: int
) -> list[dict[str, Any]]:
    """Manifest rows for one cargo type, grouped into shipments of 3-8 images.

    Anomalous images go 1-3 to a shipment among normal ones; the rest of the normal images form
    clean shipments, so the archive has both clean and suspect shipments.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(cargo_index, 99)))
    bad = [images[i] for i in rng.permutation(len(images)) if images[i].anomaly_type != "good"]
    good = [images[i] for i in rng.permutation(len(images)) if images[i].anomaly_type == "good"]
    groups: list[list[ManifestImage]] = []
    while bad:
        take = min(int(rng.integers(1, 4)), len(bad))
        group, bad = bad[:take], bad[take:]
        fill = max(0, int(rng.integers(max(3, take), 9)) - take)
        group, good = group + good[:fill], good[fill:]
        groups.append(group)
    for k in _sizes(rng, len(good)):
        groups.append(good[:k])
        good = good[k:]
    # Small leftovers (a clean remainder under 3) are merged into the shipment before them.
    while len(groups) > 1 and len(groups[-1]) < 3 and len(groups[-2]) + len(groups[-1]) <= 8:
        tail = groups.pop()
        groups[-1] += tail
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
