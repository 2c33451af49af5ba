"""Reused pictures: what the perceptual hash finds that the content hash misses, and at what cost.

Usage::

    .venv/bin/python -m bench.bench_near_copies [--seed 0] [--per-cargo 120] [--bits 4] [--rows 100000]

Three measurements, each against the content hash (sha256, what the service compared before) in the
same run:

* **Copies caught.** Every picture is copied the ways a trader might send one again (saved as JPEG,
  resized, retouched; cropped, turned and mirrored too, which the hash is not made for) and each copy
  counts as caught when its hash is within ``--bits`` of the original's. The content hash catches
  none of them: each copy has other bytes.
* **Different pictures mistaken for copies.** Every pair of different pictures of one set: how many
  are within ``--bits``, and the nearest pair's distance. Sets: synthetic good images of each cargo
  type (``--seed``), and the real ore photographs in ``--real`` (all of them, where the folder exists).
* **Lookup time.** An audit store (SQLite) whose indexes hold ``--rows`` images: the time to look up
  one request's 8 pictures by content hash alone, and by content and perceptual hash.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datasets.perceptual_hash import hamming, perceptual_hash  # noqa: E402
from datasets.synth import render_sample  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real" / "ore_conveyor"


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(
        cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED
    )


def _turned(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, turn, (w, h), borderMode=cv2.BORDER_REFLECT)


def _scaled(img: np.ndarray, factor: float) -> np.ndarray:
    size = (max(1, round(img.shape[1] * factor)), max(1, round(img.shape[0] * factor)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def _shifted(img: np.ndarray, add: float, gain: float = 1.0) -> np.ndarray:
    return np.clip((img.astype(np.float32) - 128) * gain + 128 + add, 0, 255).astype(np.uint8)


def _noisy(img: np.ndarray) -> np.ndarray:
    return np.clip(img + np.random.default_rng(0).normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _crop(img: np.ndarray, share: float) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = int(h * share / 2), int(w * share / 2)
    return img[dy : h - dy, dx : w - dx]


# (name, made for: the hash should find it)
COPIES: list[tuple[str, bool, Callable[[np.ndarray], np.ndarray]]] = [
    ("JPEG q90", True, lambda i: _jpeg(i, 90)),
    ("JPEG q70", True, lambda i: _jpeg(i, 70)),
    ("JPEG q40", True, lambda i: _jpeg(i, 40)),
    ("half size", True, lambda i: _scaled(i, 0.5)),
    ("1.5x size", True, lambda i: _scaled(i, 1.5)),
    ("brighter +15", True, lambda i: _shifted(i, 15)),
    ("contrast 0.8", True, lambda i: _shifted(i, 0, 0.8)),
    ("noise sd 6", True, _noisy),
    ("10 % cropped", False, lambda i: _crop(i, 0.1)),
    ("turned 2 deg", False, lambda i: _turned(i, 2)),
    ("mirrored", False, lambda i: np.ascontiguousarray(i[:, ::-1])),
]


def _eight_bit_colour(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def picture_sets(seed: int, per_cargo: int, size: int, real: Path) -> dict[str, list[np.ndarray]]:
    sets = {}
    for cargo in ("bulk_ore", "vacuum_pack"):
        ss = np.random.SeedSequence(seed).spawn(per_cargo)
        sets[f"synthetic {cargo}"] = [
            _eight_bit_colour(render_sample(cargo, "good", seed=s, size=size).image) for s in ss
        ]
    photos = sorted(real.rglob("*.png")) if real.is_dir() else []
    if photos:
        sets["real ore photographs"] = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photos]
    else:
        print(f"(no real photographs at {real}: that set is left out)")
    return sets


def copies_caught(sets: dict[str, list[np.ndarray]], bits: int) -> None:
    print(f"\nCopies caught (perceptual hash within {bits} bits; the content hash catches 0 % of each)")
    names = list(sets)
    print(f"| copy | made for | {' | '.join(names)} |")
    print(f"|---|---|{'---|' * len(names)}")
    hashes = {name: [perceptual_hash(img) for img in images] for name, images in sets.items()}
    for copy, made_for, make in COPIES:
        cells = []
        for name, images in sets.items():
            distances = [
                hamming(h, c)
                for img, h in zip(images, hashes[name], strict=True)
                if h is not None and (c := perceptual_hash(make(img))) is not None
            ]
            caught = sum(d <= bits for d in distances)
            cells.append(f"{caught / len(distances):.1%} (max {max(distances)})")
        print(f"| {copy} | {'yes' if made_for else 'no'} | {' | '.join(cells)} |")


def mistaken(sets: dict[str, list[np.ndarray]], bits: int) -> None:
    print(f"\nDifferent pictures within {bits} bits of each other (content hash: 0 of every set)")
    print("| set | pictures | pairs | within reach | nearest pair | median pair | flat (no hash) |")
    print("|---|---|---|---|---|---|---|")
    for name, images in sets.items():
        hashes = [perceptual_hash(img) for img in images]
        kept = [h for h in hashes if h is not None]
        d = [hamming(a, b) for a, b in itertools.combinations(kept, 2)]
        print(
            f"| {name} | {len(images)} | {len(d):,} | {sum(x <= bits for x in d)} | {min(d)} | "
            f"{statistics.median(d):.0f} | {len(hashes) - len(kept)} |"
        )


def lookup_time(rows: int, bits: int, repeats: int = 30) -> None:
    from sqlalchemy import create_engine

    from pipeline.audit import AuditStore
    from pipeline.audit.image_indexes import add_decision

    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'audit.db'}"
        AuditStore.open(url).close()
        engine = create_engine(url)
        start = time.perf_counter()
        with engine.begin() as conn:
            for n in range(rows):
                image = {"sha256": f"{rng.getrandbits(256):064x}", "phash": f"{rng.getrandbits(64):016x}"}
                add_decision(conn, {"images": [image]}, f"S{n}", n + 1)
        engine.dispose()
        filled = time.perf_counter() - start
        probes = [(f"{rng.getrandbits(256):064x}", f"{rng.getrandbits(64):016x}") for _ in range(8)]
        with AuditStore.open(url) as store:
            times = {0: [], bits: []}
            for _ in range(repeats):  # interleaved, so that a busy machine slows both alike
                for b in times:
                    t = time.perf_counter()
                    store.sightings(probes, other_than="none", near_copy_bits=b)
                    times[b].append(time.perf_counter() - t)
    exact, near = (statistics.median(times[b]) * 1000 for b in (0, bits))
    print(f"\nLookup of 8 pictures in an index of {rows:,} images (SQLite; filled in {filled:.0f} s)")
    print(f"content hash alone {exact:.2f} ms, with the perceptual hash {near:.2f} ms: {near / exact:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-cargo", type=int, default=120)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--real", type=Path, default=REAL)
    args = parser.parse_args(argv)
    sets = picture_sets(args.seed, args.per_cargo, args.size, args.real)
    copies_caught(sets, args.bits)
    mistaken(sets, args.bits)
    lookup_time(args.rows, args.bits)


if __name__ == "__main__":
    main()
