"""Reused pictures: what the perceptual hash finds that the content hash misses, and at what cost.

Usage::

    .venv/bin/python -m bench.bench_near_copies [--seed 0] [--per-cargo 120] [--bits 32] [--rows 100000]
        [--model runs/demo/models/bulk_ore]

Three measurements, each against the content hash (sha256, what the service compared before) in the
same run:

* **Copies caught.** Every picture is copied the ways a trader might send one again (saved as JPEG,
  resized, retouched, mirrored, turned by quarter turns; cropped and turned by 2 degrees too, which
  the hash is not made for) and each copy counts as caught when it is a near-copy of the original:
  coarse hashes within 4 bits (what the store's bands find) and fine hashes within ``--bits`` of
  256, looked up as the service does, with the copy's own hash and those of its mirror images and
  turns; in brackets, with its own hash alone (the lookup before turns). The content hash catches
  none of them: each copy has other bytes.
* **Different pictures mistaken for copies.** Every pair of different pictures of one set: how many
  are near-copies (as sent, and under any mirror image or turn), and how many only the coarse hash
  would call so. Sets: synthetic good images of each cargo type (``--seed``), pictures framed alike
  (a scanner's fixed walls and beam over different textures), and the real ore photographs in
  ``--real`` (all of them, where the folder exists).
* **Lookup time.** An audit store (SQLite) whose indexes hold ``--rows`` random hashes, and one of
  ``--framed-rows`` pictures framed alike: the time to look up one request's 8 pictures by content
  hash alone, by content and perceptual hash as sent, and with the mirror images and turns too.
* **Submission time** (with ``--model``): ``POST /v1/shipments`` of 8 pictures framed alike to the
  service (in this process) over a store of ``--framed-rows`` such pictures, with near-copies looked
  up (``near_copy_bits``) and without (0, the same bytes only), the two apps side by side on one
  store and one loaded model: what the lookup adds to a submission.
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

from datasets.perceptual_hash import (  # noqa: E402
    COARSE_BITS,
    coarse_part,
    fine_distance,
    hamming,
    perceptual_hash,
    perceptual_hashes,
)
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
    ("mirrored", True, lambda i: np.ascontiguousarray(i[:, ::-1])),
    ("upside down, JPEG q70", True, lambda i: _jpeg(np.ascontiguousarray(i[::-1, ::-1]), 70)),
    ("quarter turn, half size", True, lambda i: _scaled(np.ascontiguousarray(np.rot90(i, -1)), 0.5)),
    ("10 % cropped", False, lambda i: _crop(i, 0.1)),
    ("turned 2 deg", False, lambda i: _turned(i, 2)),
]


def _eight_bit_colour(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def _framed(rng: np.random.Generator, size: int) -> np.ndarray:
    """A scanner's view: a faint texture of its own between walls and under a beam that never move."""
    texture = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)), (0, 0), size / 40)
    image = (texture - texture.min()) / np.ptp(texture) * 40 + 60
    wall, beam = size // 12, slice(size * 2 // 5, size // 2)
    image[:, :wall] = image[:, -wall:] = 230
    image[beam, :] = 20
    return cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)


def picture_sets(seed: int, per_cargo: int, size: int, real: Path) -> dict[str, list[np.ndarray]]:
    sets = {}
    for cargo in ("bulk_ore", "vacuum_pack"):
        ss = np.random.SeedSequence(seed).spawn(per_cargo)
        sets[f"synthetic {cargo}"] = [
            _eight_bit_colour(render_sample(cargo, "good", seed=s, size=size).image) for s in ss
        ]
    rng = np.random.default_rng(seed)
    sets["framed alike"] = [_framed(rng, size) for _ in range(per_cargo)]
    photos = sorted(real.rglob("*.png")) if real.is_dir() else []
    if photos:
        sets["real ore photographs"] = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photos]
    else:
        print(f"(no real photographs at {real}: that set is left out)")
    return sets


def _near(a: str, b: str, bits: int) -> bool:
    return hamming(coarse_part(a), coarse_part(b)) <= COARSE_BITS and fine_distance(a, b) <= bits


def _near_turned(turns: tuple[str, ...], stored: str, bits: int) -> bool:
    """Whether a lookup with a picture's hashes (its own, then its turns) finds ``stored``."""
    return any(_near(t, stored, bits) for t in turns)


def copies_caught(sets: dict[str, list[np.ndarray]], bits: int) -> None:
    print(
        f"\nCopies caught (near-copies at near_copy_bits {bits}, looked up with the copy's turns; "
        "in brackets its own hash alone; the content hash catches 0 % of each)"
    )
    names = list(sets)
    print(f"| copy | made for | {' | '.join(names)} |")
    print(f"|---|---|{'---|' * len(names)}")
    hashes = {name: [perceptual_hash(img) for img in images] for name, images in sets.items()}
    for copy, made_for, make in COPIES:
        cells = []
        for name, images in sets.items():
            pairs = [
                (h, c)
                for img, h in zip(images, hashes[name], strict=True)
                if h is not None and (c := perceptual_hashes(make(img))) is not None
            ]
            caught = sum(_near_turned(c, h, bits) for h, c in pairs)
            as_sent = sum(_near(c[0], h, bits) for h, c in pairs)
            farthest = max(min(fine_distance(t, h) for t in c) for h, c in pairs)
            cells.append(f"{caught / len(pairs):.1%} ({as_sent / len(pairs):.1%}; fine {farthest})")
        print(f"| {copy} | {'yes' if made_for else 'no'} | {' | '.join(cells)} |")


def mistaken(sets: dict[str, list[np.ndarray]], bits: int) -> None:
    print("\nDifferent pictures taken for near-copies (content hash: 0 of every set)")
    print(
        "| set | pictures | pairs | near-copies | under a turn | coarse within 4 | nearest fine "
        "| nearest under a turn | median fine | no hash |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, images in sets.items():
        hashes = [perceptual_hashes(img) for img in images]
        kept = [h for h in hashes if h is not None]
        pairs = list(itertools.combinations(kept, 2))
        fine = [fine_distance(a[0], b[0]) for a, b in pairs]
        # either may be the one sent later: a lookup brings the later one's turns
        turned = [
            min(min(fine_distance(t, b[0]) for t in a[1:]), min(fine_distance(t, a[0]) for t in b[1:]))
            for a, b in pairs
        ]
        near = sum(_near(a[0], b[0], bits) for a, b in pairs)
        near_turned = sum(_near_turned(a, b[0], bits) or _near_turned(b, a[0], bits) for a, b in pairs)
        coarse = sum(hamming(coarse_part(a[0]), coarse_part(b[0])) <= COARSE_BITS for a, b in pairs)
        print(
            f"| {name} | {len(images)} | {len(pairs):,} | {near} | {near_turned} | {coarse} | {min(fine)} "
            f"| {min(turned)} | {statistics.median(fine):.0f} | {len(hashes) - len(kept)} |"
        )


def _filled_store(url: str, phashes: list[str]) -> None:
    """An audit store whose indexes hold one decision per hash, and whose head says so (the chain
    itself is not needed to look up or to append)."""
    from sqlalchemy import create_engine

    from pipeline.audit import AuditStore
    from pipeline.audit.image_indexes import add_decision
    from pipeline.audit.schema import audit_head

    rng = random.Random(1)
    AuditStore.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        for n, phash in enumerate(phashes):
            image = {"sha256": f"{rng.getrandbits(256):064x}", "phash": phash}
            add_decision(conn, {"images": [image]}, f"S{n}", n + 1)
        conn.execute(audit_head.update().values(seq=len(phashes)))
    engine.dispose()


def _timed_lookups(
    url: str, probes: list[tuple[str, ...]], bits: int, repeats: int = 30
) -> tuple[float, float, float]:
    """(ms by content hash alone, with the perceptual hash as sent, with its turns too) to look up
    ``probes`` (each picture's hashes, its own first), medians of interleaved runs."""
    from pipeline.audit import AuditStore
    from pipeline.audit.image_indexes import Picture

    rng = random.Random(2)
    shas = [f"{rng.getrandbits(256):064x}" for _ in probes]
    arms = {
        "exact": ([Picture(sha, p[0]) for sha, p in zip(shas, probes, strict=True)], 0),
        "as sent": ([Picture(sha, p[0]) for sha, p in zip(shas, probes, strict=True)], bits),
        "turns": ([Picture(sha, p[0], p[1:]) for sha, p in zip(shas, probes, strict=True)], bits),
    }
    with AuditStore.open(url) as store:
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(repeats):  # interleaved, so that a busy machine slows them alike
            for arm, (wanted, b) in arms.items():
                t = time.perf_counter()
                store.sightings(wanted, other_than="none", near_copy_bits=b)
                times[arm].append(time.perf_counter() - t)
    exact, as_sent, turns = (statistics.median(times[arm]) * 1000 for arm in arms)
    return exact, as_sent, turns


def _timed_records(
    url: str, pictures: list[tuple[str, ...]], bits: int, repeats: int = 20
) -> tuple[float, float, float]:
    """ms to record a decision of 8 pictures, what the write lock is held for: without the re-check;
    with it and nothing decided since the lookup (the common case: skipped); and with one decision
    written since, the re-check reading it through the (band, seq) indexes, with each picture's
    turns. Medians; the order of the three arms turns each round."""
    from pipeline.audit import AuditStore
    from pipeline.verdicts import Declaration, ImageVerdict, ShipmentDecision, Tier

    rng = random.Random(3)

    def decision(n: int) -> ShipmentDecision:
        images = [
            ImageVerdict(
                path=f"{k}.png", sha256=f"{rng.getrandbits(256):064x}", phash=p[0], phash_turns=p[1:]
            )
            for k, p in enumerate(pictures[(8 * n) % len(pictures) :][:8])
        ]
        declaration = Declaration(shipment_id=f"NEW-{n}", cargo_type="bulk_ore")
        return ShipmentDecision(
            shipment_id=declaration.shipment_id, cargo_type="bulk_ore", tier=Tier.RELEASE, reasons=[],
            images=images, declaration=declaration, policy_version="bench", policy_sha256="0" * 64,
            decided_at="2026-12-06T00:00:00+00:00", model_ids=[],
        )  # fmt: skip

    arms = ("plain", "nothing since", "one since")
    with AuditStore.open(url) as store:
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        n = 0
        for r in range(repeats):
            for arm in arms[r % 3 :] + arms[: r % 3]:
                head = store.sightings([], other_than="none", near_copy_bits=bits).as_of
                as_of = {"plain": None, "nothing since": head, "one since": head - 1}[arm]
                t = time.perf_counter()
                store.record(decision(n), images_seen_as_of=as_of, near_copy_bits=bits)
                times[arm].append(time.perf_counter() - t)
                n += 1
    plain, nothing, one = (statistics.median(times[arm]) * 1000 for arm in arms)
    return plain, nothing, one


def lookup_time(rows: int, framed: int, bits: int) -> None:
    """Uniform random hashes (a varied store), and pictures framed alike (one scanner's store,
    whose coarse hashes crowd into the same bands): the second is the harder case."""
    rng = random.Random(2)

    def random_picture() -> tuple[str, ...]:  # its hash and 7 turns', all random
        return tuple(f"{rng.getrandbits(320):080x}" for _ in range(8))

    uniform = [random_picture() for _ in range(rows + 8)]
    pictures = np.random.default_rng(3)
    alike = [perceptual_hashes(_framed(pictures, 128)) for _ in range(framed + 8 + 320)]
    print("\nLookup of one request's 8 pictures, and recording its decision (SQLite)")
    print(
        "| index | images | lookup: content hash alone | perceptual hash as sent | with its turns "
        "| record: no re-check | nothing since | one decision since |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, hashes, extra in (
        ("uniform random hashes", uniform, []),
        ("pictures framed alike", alike, alike[-320:]),
    ):
        stored, probes = hashes[: len(hashes) - 8 - len(extra)], hashes[len(hashes) - 8 - len(extra) :][:8]
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            _filled_store(url, [h[0] for h in stored])
            exact, as_sent, turns = _timed_lookups(url, probes, bits)
            plain, nothing, one = _timed_records(url, extra or [random_picture() for _ in range(320)], bits)
        print(
            f"| {name} | {len(stored):,} | {exact:.2f} ms | {as_sent:.2f} ms ({as_sent / exact:.1f}x) "
            f"| {turns:.2f} ms ({turns / exact:.1f}x) | {plain:.2f} ms | {nothing:.2f} ms | {one:.2f} ms |"
        )


def submission_time(model: Path, framed: int, bits: int, repeats: int = 15) -> None:
    """Median ms per submission of 8 framed pictures, with and without the near-copy lookup."""
    from fastapi.testclient import TestClient

    from models.artifact import load_model
    from pipeline.audit import AuditStore
    from serve.app import create_app
    from serve.settings import ServeSettings

    key = "bench-near-copies-submitter"
    predictor = load_model(model)
    pictures = np.random.default_rng(4)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'audit.db'}"
        _filled_store(url, [perceptual_hash(_framed(pictures, 128)) for _ in range(framed)])
        store = AuditStore.open(url)
        clients = {}
        for b in (0, bits):
            settings = ServeSettings(
                _env_file=None,
                api_keys=f"submitter:{key}",
                audit_secret="bench-near-copies-audit-secret",
                data_dir=Path(tmp) / f"data{b}",
                near_copy_bits=b,
            )  # type: ignore[call-arg]
            app = create_app(settings, predictors={predictor.cargo_type: predictor}, audit=store)
            clients[b] = TestClient(app, headers={"X-API-Key": key}).__enter__()
        times: dict[int, list[float]] = {b: [] for b in clients}
        for n in range(repeats + 1):
            for b, client in clients.items():
                files = [
                    (
                        "images",
                        (f"{k}.png", cv2.imencode(".png", _framed(pictures, 256))[1].tobytes(), "image/png"),
                    )
                    for k in range(8)
                ]
                declaration = f'{{"shipment_id": "NEW-{b}-{n}", "cargo_type": "{predictor.cargo_type}"}}'
                t = time.perf_counter()
                response = client.post("/v1/shipments", files=files, data={"declaration": declaration})
                if n:  # the first round warms up
                    times[b].append(time.perf_counter() - t)
                assert response.status_code == 200, response.text
        for client in clients.values():
            client.__exit__(None, None, None)
        store.close()
    plain, near = (statistics.median(times[b]) * 1000 for b in (0, bits))
    print(f"\nSubmission of 8 pictures framed alike over {framed:,} such pictures ({model.name} model)")
    print(f"| near_copy_bits 0 (same bytes only) | near_copy_bits {bits} (with turns) | ratio |")
    print("|---|---|---|")
    print(f"| {plain:.1f} ms | {near:.1f} ms | {near / plain:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-cargo", type=int, default=120)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--framed-rows", type=int, default=20_000)
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--model", type=Path, help="a model directory: time submissions to the service too")
    parser.add_argument(
        "--only-submissions", action="store_true", help="with --model: that measurement alone"
    )
    args = parser.parse_args(argv)
    if not args.only_submissions:
        sets = picture_sets(args.seed, args.per_cargo, args.size, args.real)
        copies_caught(sets, args.bits)
        mistaken(sets, args.bits)
        lookup_time(args.rows, args.framed_rows, args.bits)
    if args.model is not None:
        submission_time(args.model, args.framed_rows, args.bits)


if __name__ == "__main__":
    main()
